package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/torpor-dev/torpor/internal/model"
)

// okJSON is the JSON printed by operations that return nothing else.
type okJSON struct {
	OK bool `json:"ok"`
}

// say prints a line of human output.
func say(cmd *cobra.Command, format string, args ...any) {
	fmt.Fprintf(cmd.OutOrStdout(), format, args...)
}

// warn prints the warnings of an answer (what of a config the daemon
// accepted without acting on it) to stderr.
func warn(cmd *cobra.Command, warnings []string) {
	for _, w := range warnings {
		fmt.Fprintf(cmd.ErrOrStderr(), "Warning: %s\n", w)
	}
}

// printJSON prints v as indented JSON.
func printJSON(cmd *cobra.Command, v any) error {
	enc := json.NewEncoder(cmd.OutOrStdout())
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// nonNil returns list, or an empty slice if it is nil, so JSON shows [].
func nonNil[T any](list []T) []T {
	if list == nil {
		return []T{}
	}
	return list
}

// writeMachines prints machines as a table.
func writeMachines(cmd *cobra.Command, machines []model.Machine) error {
	return writeMachineTable(cmd.OutOrStdout(), machines, false)
}

// writeMachineTable prints machines as a table, with the states in color
// for a terminal.
func writeMachineTable(w io.Writer, machines []model.Machine, color bool) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "ID\tNAME\t%s\tIMAGE\tCREATED\n", colored("STATE", "39", color))
	for _, m := range machines {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", m.ID, dash(m.Name), colored(string(m.State), stateColors[m.State], color),
			dash(m.Config.Image), formatTime(m.CreatedAt))
	}
	return tw.Flush()
}

// stateColors are the ANSI colors of the states on a terminal, as the
// dashboard's dots: suspended blue, started green, in-between yellow.
var stateColors = map[model.State]string{
	model.StateStarted: "32", model.StateSuspended: "34", model.StateStopped: "90", model.StateCreated: "37",
	model.StateStarting: "33", model.StateStopping: "33", model.StateSuspending: "36",
	model.StateDestroying: "31", model.StateDestroyed: "31",
}

// colored wraps s in an ANSI color (a two-digit code) when color is on.
// Every colored cell of a column then has the same nine invisible bytes,
// so tabwriter still aligns the column.
func colored(s, code string, color bool) string {
	if !color || len(code) != 2 {
		return s
	}
	return "\033[" + code + "m" + s + "\033[0m"
}

// writeEvents prints events as a table, oldest first.
func writeEvents(cmd *cobra.Command, events []model.Event) error {
	tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tTYPE\tSTATUS\tSOURCE\tDETAILS")
	for _, e := range chronological(events) {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", formatMillis(e.Timestamp), e.Type, e.Status, dash(e.Source), eventDetails(e))
	}
	return tw.Flush()
}

// chronological returns a copy of events sorted oldest first.
func chronological(events []model.Event) []model.Event {
	sorted := append([]model.Event(nil), events...)
	sort.SliceStable(sorted, func(i, j int) bool { return sorted[i].Timestamp < sorted[j].Timestamp })
	return sorted
}

// leadingKeys are shown first in event details, in this order.
var leadingKeys = []string{"from_snapshot", "reason"}

// maxDetails bounds the DETAILS column, in runes.
const maxDetails = 100

// eventDetails renders an event's request as key=value pairs: from_snapshot
// and reason first, then the other keys sorted; nested objects are flattened
// with dotted keys and arrays are left out.
func eventDetails(e model.Event) string {
	flat := map[string]string{}
	flatten("", e.Fields(), flat)
	var parts []string
	for _, k := range leadingKeys {
		if v, ok := flat[k]; ok {
			parts = append(parts, k+"="+v)
			delete(flat, k)
		}
	}
	keys := make([]string, 0, len(flat))
	for k := range flat {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		parts = append(parts, k+"="+flat[k])
	}
	return truncate(strings.Join(parts, " "), maxDetails)
}

// flatten adds the scalar values of m to out under dotted keys.
func flatten(prefix string, m map[string]any, out map[string]string) {
	for k, v := range m {
		key := prefix + k
		switch v := v.(type) {
		case map[string]any:
			flatten(key+".", v, out)
		case []any:
			// arrays do not fit a table cell
		default:
			out[key] = scalar(v)
		}
	}
}

// scalar formats a JSON scalar, quoting strings that need it.
func scalar(v any) string {
	switch v := v.(type) {
	case nil:
		return "null"
	case string:
		if v == "" || strings.ContainsAny(v, " \t\n\"=") {
			return strconv.Quote(v)
		}
		return v
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64)
	}
	return fmt.Sprint(v)
}

// truncate shortens s to at most n runes, marking the cut with "…".
func truncate(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

// formatTime formats t in UTC, "-" when zero.
func formatTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// formatMillis formats a Unix time in milliseconds in UTC.
func formatMillis(ms int64) string {
	if ms == 0 {
		return "-"
	}
	return time.UnixMilli(ms).UTC().Format("2006-01-02T15:04:05.000Z")
}

// dash returns s, or "-" when it is empty.
func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// writeStatus prints a machine's state, boot generation, config summary,
// checks, where its last resume and suspend spent their time, and its last
// few events.
func writeStatus(cmd *cobra.Command, m model.Machine, events []model.Event) error {
	tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(tw, "%s:\t%s\n", k, v) }
	row("ID", m.ID)
	row("Name", dash(m.Name))
	row("App", m.App)
	row("State", string(m.State))
	row("Boot generation", strconv.FormatUint(m.BootGeneration, 10))
	if m.Cordoned {
		row("Cordoned", "yes")
	}
	row("Image", dash(m.Config.Image))
	row("Command", dash(truncate(commandLine(m.Config.Init), maxDetails)))
	row("Guest", guestSummary(m.Config.Guest))
	if len(m.Config.Env) > 0 {
		row("Env", envKeys(m.Config.Env))
	}
	for _, s := range m.Config.Services {
		row("Service", serviceSummary(s))
	}
	for _, mt := range m.Config.Mounts {
		row("Volume", fmt.Sprintf("%s (%s) at %s", mt.Volume, dash(mt.Name), mt.Path))
	}
	for _, c := range m.Checks {
		row("Check "+c.Name, fmt.Sprintf("%s since %s: %s", c.Status, formatTime(c.UpdatedAt), truncate(c.Output, maxDetails)))
	}
	if m.Config.Restart != nil && m.Config.Restart.Policy != "" {
		row("Restart", m.Config.Restart.Policy)
	}
	if m.PrivateIP != "" {
		row("Private IP", m.PrivateIP)
	}
	if m.Version != "" {
		row("Version", m.Version)
	}
	row("Created", formatTime(m.CreatedAt))
	row("Updated", formatTime(m.UpdatedAt))
	for _, c := range m.Checks {
		row("Check "+c.Name, checkSummary(c))
	}
	if ev, ok := model.Newest(events, model.EventResume, "started"); ok {
		row("Last resume", resumeSummary(ev))
	}
	if ev, ok := model.Newest(events, model.EventSuspend, "suspended"); ok {
		row("Last suspend", suspendSummary(ev))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(events) == 0 {
		return nil
	}
	say(cmd, "\nRecent events:\n")
	return writeEvents(cmd, lastEvents(events, recentEvents))
}

// recentEvents is how many events status shows.
const recentEvents = 5

// lastEvents returns the n most recent events, oldest first.
func lastEvents(events []model.Event, n int) []model.Event {
	sorted := chronological(events)
	if len(sorted) > n {
		sorted = sorted[len(sorted)-n:]
	}
	return sorted
}

// commandLine renders what the machine runs.
func commandLine(init model.InitConfig) string {
	args := init.Exec
	if len(args) == 0 {
		args = append(append([]string(nil), init.Entrypoint...), init.Cmd...)
	}
	quoted := make([]string, len(args))
	for i, a := range args {
		quoted[i] = a
		if a == "" || strings.ContainsAny(a, " \t\n\"'") {
			quoted[i] = strconv.Quote(a)
		}
	}
	return strings.Join(quoted, " ")
}

// guestSummary renders a machine's size.
func guestSummary(g model.Guest) string {
	var parts []string
	if g.CPUs > 0 {
		parts = append(parts, fmt.Sprintf("%d cpu", g.CPUs))
	}
	if g.CPUKind != "" {
		parts = append(parts, g.CPUKind)
	}
	if g.MemoryMB > 0 {
		parts = append(parts, fmt.Sprintf("%d MB", g.MemoryMB))
	}
	if len(parts) == 0 {
		return "default"
	}
	return strings.Join(parts, ", ")
}

// envKeys lists the names of the environment variables (not their values,
// which may be secrets; --json shows everything).
func envKeys(env map[string]string) string {
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return strings.Join(keys, ", ")
}

// serviceSummary renders a service as "tcp 8080 <- 80,443 autostop=suspend".
func serviceSummary(s model.Service) string {
	proto := s.Protocol
	if proto == "" {
		proto = "tcp"
	}
	var ports []string
	for _, p := range s.Ports {
		if p.Port != nil {
			ports = append(ports, strconv.Itoa(*p.Port))
		}
	}
	out := fmt.Sprintf("%s %d", proto, s.InternalPort)
	if len(ports) > 0 {
		out += " <- " + strings.Join(ports, ",")
	}
	if s.Autostop != nil {
		out += " autostop=" + string(*s.Autostop)
	}
	if s.Autostart != nil {
		out += " autostart=" + strconv.FormatBool(*s.Autostart)
	}
	return out
}

// checkSummary renders a check's result: "passing (200 OK, 3s ago)".
func checkSummary(c model.CheckStatus) string {
	out := dash(c.Status)
	var more []string
	if o := strings.TrimSpace(c.Output); o != "" {
		more = append(more, truncate(strings.ReplaceAll(o, "\n", " "), 60))
	}
	if !c.UpdatedAt.IsZero() {
		more = append(more, formatDuration(time.Since(c.UpdatedAt).Truncate(time.Second))+" ago")
	}
	if len(more) > 0 {
		out += " (" + strings.Join(more, ", ") + ")"
	}
	return out
}

// resumeSummary says how the last resume went and where its time went:
// "from snapshot in 190ms at ... (claim 3ms, prepare 21ms, runtime restore
// 150ms, verify 12ms beside it (waited 0ms), app told 6ms)", or the
// fallback's reason.
func resumeSummary(ev model.Event) string {
	d := ev.Start()
	if d == nil {
		return formatMillis(ev.Timestamp)
	}
	took := formatDuration(time.Duration(d.DurationMS) * time.Millisecond)
	if !d.FromSnapshot {
		why := d.Reason
		if d.Fallback != "" {
			why = string(d.Fallback) + ": " + why
		}
		return fmt.Sprintf("cold start in %s at %s, the snapshot could not be used (%s)", took, formatMillis(ev.Timestamp), why)
	}
	out := fmt.Sprintf("from snapshot in %s at %s", took, formatMillis(ev.Timestamp))
	if p := d.ResumePhases; p != nil {
		ms := func(n int64) string { return formatDuration(time.Duration(n) * time.Millisecond) }
		out += fmt.Sprintf(" (claim %s, prepare %s, runtime restore %s, verify %s beside it (waited %s), app told %s)",
			ms(p.ClaimMS), ms(p.PrepareMS), ms(p.RuntimeRestoreMS), ms(p.VerifyMS), ms(p.VerifyWaitMS), ms(d.DurationMS-p.RestoreMS))
	}
	return out
}

// suspendSummary says how the last suspend went.
func suspendSummary(ev model.Event) string {
	d := ev.Suspend()
	if d == nil {
		return formatMillis(ev.Timestamp)
	}
	ms := func(n int64) string { return formatDuration(time.Duration(n) * time.Millisecond) }
	return fmt.Sprintf("in %s at %s, snapshot %.1f MiB (checkpoint %s, seal %s)", ms(d.DurationMS), formatMillis(ev.Timestamp),
		float64(d.SizeBytes)/(1<<20), ms(d.CheckpointMS), ms(d.SealMS))
}
