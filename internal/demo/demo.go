// Package demo runs torpor's demonstration against a running daemon: it
// creates a machine running a small Python HTTP app that builds in-memory
// state, suspends and resumes it several times, shows that the state
// survived, and prints cold-start versus resume timings, measured from the
// API call to the app's first HTTP 200.
package demo

import (
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"sort"
	"text/tabwriter"
	"time"

	"github.com/torpor-dev/torpor/internal/client"
	"github.com/torpor-dev/torpor/internal/image/imagetest"
	"github.com/torpor-dev/torpor/internal/model"
)

// AppSource is the demo app, app.py beside this file.
//
//go:embed app.py
var AppSource string

// Config says what the demo runs.
type Config struct {
	// Image is an OCI image reference with python3 (or, for the admin, a
	// root filesystem directory).
	Image     string
	App       string
	Rounds    int
	TableSize int // entries of the app's in-memory table (its "warm state")
	WarmupMS  int // CPU time the app spends on start-up work
	MemoryMB  int
}

// appState is what the demo app answers on GET /.
type appState struct {
	Count       int     `json:"count"`
	Started     float64 `json:"started"`
	InitSeconds float64 `json:"init_seconds"`
	TableSum    int64   `json:"table_sum"`
}

// timing is one measured operation.
type timing struct {
	op string
	d  time.Duration
}

// Run runs the demo and writes its report to out.
func Run(ctx context.Context, c *client.Client, cfg Config, out io.Writer) error {
	if _, err := c.CreateApp(ctx, cfg.App, ""); err != nil {
		return fmt.Errorf("create app %s: %w", cfg.App, err)
	}
	defer c.DeleteApp(context.Background(), cfg.App)
	var timings []timing
	if !filepath.IsAbs(cfg.Image) {
		fmt.Fprintf(out, "pulling %s for app %s...\n", cfg.Image, cfg.App)
		begin := time.Now()
		img, err := c.PullImage(ctx, model.PullImageRequest{Image: cfg.Image, App: cfg.App}, nil)
		if err != nil {
			return fmt.Errorf("pull %s: %w", cfg.Image, err)
		}
		timings = append(timings, timing{"pull + unpack the image", time.Since(begin)})
		fmt.Fprintf(out, "image %s: %d layers, %.0f MB compressed, %.0f MB unpacked\n", img.Digest, img.Layers,
			float64(img.SizeBytes)/1e6, float64(img.UnpackedBytes)/1e6)
	}

	fmt.Fprintf(out, "creating a machine running a Python HTTP app that builds a %d-entry table in memory\n"+
		"and spends %d ms of CPU on start-up work (as imports or a cache warm-up would)...\n", cfg.TableSize, cfg.WarmupMS)
	begin := time.Now()
	m, err := c.CreateMachine(ctx, cfg.App, model.CreateMachineRequest{Config: machineConfig(cfg)})
	if err != nil {
		return err
	}
	defer c.Destroy(context.Background(), cfg.App, m.ID, true)
	first, err := firstOK(ctx, m.PrivateIP)
	if err != nil {
		return err
	}
	timings = append(timings, timing{"cold start (create → first HTTP 200)", time.Since(begin)})
	fmt.Fprintf(out, "machine %s at %s: counter %d, app init took %.0f ms\n", m.ID, m.PrivateIP, first.Count, first.InitSeconds*1000)

	for i := 0; i < cfg.Rounds; i++ {
		t, err := suspendResume(ctx, c, cfg.App, m, first, out)
		if err != nil {
			return err
		}
		timings = append(timings, t...)
	}
	t, err := coldRestart(ctx, c, cfg.App, m)
	if err != nil {
		return err
	}
	timings = append(timings, t)
	report(out, timings)
	return nil
}

func machineConfig(cfg Config) model.MachineConfig {
	return model.MachineConfig{
		Image: cfg.Image,
		Init:  model.InitConfig{Exec: []string{"python3", "-c", AppSource}},
		Env: map[string]string{"TABLE_SIZE": fmt.Sprint(cfg.TableSize), "WARMUP_MS": fmt.Sprint(cfg.WarmupMS),
			"TICK": "1"},
		Guest: model.Guest{CPUs: 1, MemoryMB: cfg.MemoryMB},
	}
}

// suspendResume suspends the machine, resumes it, and checks its memory survived.
func suspendResume(ctx context.Context, c *client.Client, app string, m model.Machine, first appState, out io.Writer) ([]timing, error) {
	before, err := get(ctx, m.PrivateIP)
	if err != nil {
		return nil, err
	}
	begin := time.Now()
	if err := c.Suspend(ctx, app, m.ID); err != nil {
		return nil, fmt.Errorf("suspend: %w", err)
	}
	suspended := time.Since(begin)
	size := snapshotSize(ctx, c, app, m.ID)
	begin = time.Now()
	resp, err := c.Start(ctx, app, m.ID)
	if err != nil {
		return nil, fmt.Errorf("resume: %w", err)
	}
	after, err := firstOK(ctx, m.PrivateIP)
	if err != nil {
		return nil, err
	}
	resumed := time.Since(begin)
	if !resp.FromSnapshot || after.Started != first.Started || after.TableSum != first.TableSum || after.Count < before.Count {
		return nil, fmt.Errorf("state did not survive: before %+v, after %+v (from_snapshot=%v)", before, after, resp.FromSnapshot)
	}
	fmt.Fprintf(out, "suspended (snapshot %.1f MB) and resumed: same process (started %.3f), counter %d → %d, table intact\n",
		float64(size)/1e6, after.Started, before.Count, after.Count)
	return []timing{{"suspend (API call)", suspended}, {"resume (start → first HTTP 200)", resumed}}, nil
}

// coldRestart stops the machine and cold-starts it, for comparison.
func coldRestart(ctx context.Context, c *client.Client, app string, m model.Machine) (timing, error) {
	if err := c.Stop(ctx, app, m.ID, model.StopRequest{}); err != nil {
		return timing{}, err
	}
	begin := time.Now()
	if _, err := c.Start(ctx, app, m.ID); err != nil {
		return timing{}, err
	}
	if _, err := firstOK(ctx, m.PrivateIP); err != nil {
		return timing{}, err
	}
	return timing{"cold start (stopped: start → first HTTP 200)", time.Since(begin)}, nil
}

func snapshotSize(ctx context.Context, c *client.Client, app, id string) float64 {
	evs, err := c.Events(ctx, app, id)
	if err != nil {
		return 0
	}
	for _, ev := range evs {
		if d := ev.Suspend(); d != nil && ev.Status == "suspended" {
			return float64(d.SizeBytes)
		}
	}
	return 0
}

var httpClient = &http.Client{Timeout: 2 * time.Second}

func get(ctx context.Context, ip string) (appState, error) {
	var st appState
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+ip+":8080/", nil)
	if err != nil {
		return st, err
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("app answered %s", resp.Status)
	}
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

// firstOK polls the app every 2 ms until it answers 200.
func firstOK(ctx context.Context, ip string) (appState, error) {
	deadline := time.Now().Add(60 * time.Second)
	for {
		st, err := get(ctx, ip)
		if err == nil {
			return st, nil
		}
		if time.Now().After(deadline) {
			return st, fmt.Errorf("app at %s never answered: %w", ip, err)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// report prints each operation's median, min and max.
func report(out io.Writer, ts []timing) {
	byOp := map[string][]time.Duration{}
	var order []string
	for _, t := range ts {
		if _, ok := byOp[t.op]; !ok {
			order = append(order, t.op)
		}
		byOp[t.op] = append(byOp[t.op], t.d)
	}
	fmt.Fprintln(out)
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "operation\truns\tmedian ms\tmin ms\tmax ms\t")
	for _, op := range order {
		ds := byOp[op]
		sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
		fmt.Fprintf(w, "%s\t%d\t%.0f\t%.0f\t%.0f\t\n", op, len(ds), ms(ds[len(ds)/2]), ms(ds[0]), ms(ds[len(ds)-1]))
	}
	w.Flush()
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// PushRootFS builds an OCI image of the root filesystem directory rootfs
// (one layer, cached beside the rootfs cache) and pushes it to the
// registry at host (HOST:PORT, plain HTTP on loopback) as
// torpor/demo-python:bookworm, whose reference it returns.
func PushRootFS(ctx context.Context, rootfs, host string) (string, error) {
	img, err := imagetest.FromRootFS(rootfs, imagetest.DefaultCacheDir, imagetest.Config{Cmd: []string{"python3"}})
	if err != nil {
		return "", fmt.Errorf("build an image of %s: %w", rootfs, err)
	}
	ref := host + "/torpor/demo-python:bookworm"
	reg := &imagetest.Registry{Host: host}
	if err := reg.Push(ctx, ref, img); err != nil {
		return "", fmt.Errorf("push %s: %w", ref, err)
	}
	return ref, nil
}
