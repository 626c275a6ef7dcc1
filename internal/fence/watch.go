package fence

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Config configures a watchdog.
type Config struct {
	DataDir string
	// LockHeld reports whether a daemon other than the watched one holds
	// the data directory's lock (the watched daemon is replaced).
	LockHeld func() bool
	TTL      time.Duration
	// In is the pipe from the daemon.
	In io.Reader
	// List names the sandboxes to freeze; Freeze freezes one.
	List   func(ctx context.Context) ([]string, error)
	Freeze func(ctx context.Context, id string) error
	Log    io.Writer
	Now    func() time.Time // nil: time.Now
}

// Marker is what the watchdog froze, in MarkerFile.
type Marker struct {
	At        time.Time `json:"at"`
	Reason    string    `json:"reason"`
	Sandboxes []string  `json:"sandboxes"`
	// FrozenAt is when the last of them was frozen (zero: the freeze did
	// not finish).
	FrozenAt time.Time `json:"frozen_at,omitempty"`
}

// ReadMarker reads the marker a watchdog left in dataDir (ok false: none).
func ReadMarker(dataDir string) (Marker, bool, error) {
	var m Marker
	data, err := os.ReadFile(filepath.Join(dataDir, MarkerFile))
	if errors.Is(err, os.ErrNotExist) {
		return m, false, nil
	}
	if err != nil {
		return m, false, err
	}
	if err := json.Unmarshal(data, &m); err != nil {
		return m, false, fmt.Errorf("%s: %w", MarkerFile, err)
	}
	return m, true, nil
}

// HasMarker reports whether a watchdog left a marker in dataDir.
func HasMarker(dataDir string) bool {
	_, err := os.Stat(filepath.Join(dataDir, MarkerFile))
	return err == nil
}

// RemoveMarker removes the marker once the daemon took its machines in hand.
func RemoveMarker(dataDir string) error {
	err := os.Remove(filepath.Join(dataDir, MarkerFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

func writeMarker(dataDir string, m Marker) error {
	if old, ok, _ := ReadMarker(dataDir); ok { // not thawed yet: keep what it names
		seen := map[string]bool{}
		for _, id := range m.Sandboxes {
			seen[id] = true
		}
		for _, id := range old.Sandboxes {
			if !seen[id] {
				m.Sandboxes = append(m.Sandboxes, id)
			}
		}
	}
	path := filepath.Join(dataDir, MarkerFile)
	b, _ := json.Marshal(m)
	f, err := os.OpenFile(path+".tmp", os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err = errors.Join(err, f.Sync(), f.Close()); err != nil {
		return err
	}
	return os.Rename(path+".tmp", path)
}

// message is one line from the daemon (or the end of the pipe).
type message struct {
	renewed time.Time
	stop    bool
	eof     bool
}

func readMessages(in io.Reader, ch chan<- message) {
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) == 1 && f[0] == "stop":
			ch <- message{stop: true}
		case len(f) == 2 && f[0] == "renewed":
			if ns, err := strconv.ParseInt(f[1], 10, 64); err == nil {
				ch <- message{renewed: time.Unix(0, ns)}
			}
		}
	}
	ch <- message{eof: true}
}

// Watch runs the watchdog until there is nothing left to guard (the daemon
// stopped, was replaced, or died and its sandboxes are frozen) or ctx ends.
func Watch(ctx context.Context, cfg Config) error {
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	logf := func(format string, args ...any) {
		fmt.Fprintf(cfg.Log, "%s %s\n", now().UTC().Format(time.RFC3339Nano), fmt.Sprintf(format, args...))
	}
	ch := make(chan message, 16)
	go readMessages(cfg.In, ch)
	v := View{Heard: now()}
	var fencedFor time.Time // the renewal the last fence was for
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case m := <-ch:
			v.Heard = now()
			switch {
			case m.eof:
				v.Gone = true
				logf("the daemon is gone (its pipe closed)")
			case m.stop:
				v.Stopped = true
			default:
				v.Renewed = m.renewed
			}
		case <-timer.C:
		}
		if v.Gone || !v.Renewed.IsZero() && now().After(v.Renewed.Add(cfg.TTL-Margin(cfg.TTL))) {
			v.Replaced = cfg.LockHeld != nil && cfg.LockHeld()
		}
		act, until := Decide(now(), v, cfg.TTL)
		if act == Fence && v.Renewed.Equal(fencedFor) && !v.Gone {
			act, until = Wait, now().Add(cfg.TTL/4) // done for this renewal: wait for a new one
		}
		switch act {
		case Exit:
			switch {
			case v.Stopped:
				logf("the daemon stopped cleanly: exiting")
			case v.Replaced:
				logf("another daemon holds the data directory: exiting")
			default:
				logf("the daemon never held a lease: exiting")
			}
			return nil
		case Fence:
			why := "the daemon died"
			if !v.Gone {
				why = fmt.Sprintf("the daemon is silent since %s", v.Heard.UTC().Format(time.RFC3339Nano))
			}
			why += fmt.Sprintf(" and its lease, last renewed at %s, expires within %s", v.Renewed.UTC().Format(time.RFC3339Nano),
				v.Renewed.Add(cfg.TTL).Sub(now()).Round(time.Millisecond))
			fencedFor = v.Renewed
			froze, err := fenceAll(ctx, cfg, why)
			logf("fenced: froze %d sandboxes %v (%s)", len(froze), froze, why)
			if err != nil {
				logf("fence: %v", err)
			}
			if v.Gone {
				return err
			}
			until = now().Add(cfg.TTL / 4)
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(max(until.Sub(now()), 10*time.Millisecond))
	}
}

// fenceAll writes the marker, then freezes every sandbox.
func fenceAll(ctx context.Context, cfg Config, why string) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, cfg.TTL)
	defer cancel()
	ids, err := cfg.List(ctx)
	if err != nil {
		return nil, fmt.Errorf("list sandboxes: %w", err)
	}
	mk := Marker{At: time.Now().UTC(), Reason: "the fencing watchdog: " + why, Sandboxes: ids}
	if err := writeMarker(cfg.DataDir, mk); err != nil {
		return nil, fmt.Errorf("write %s: %w", MarkerFile, err)
	}
	var errs []error
	var froze []string
	for _, id := range ids {
		if err := cfg.Freeze(ctx, id); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", id, err))
			continue
		}
		froze = append(froze, id)
	}
	mk.FrozenAt = time.Now().UTC()
	if err := writeMarker(cfg.DataDir, mk); err != nil {
		errs = append(errs, fmt.Errorf("write %s: %w", MarkerFile, err))
	}
	return froze, errors.Join(errs...)
}
