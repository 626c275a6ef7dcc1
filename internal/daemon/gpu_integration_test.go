package daemon_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/torpor-dev/torpor/internal/client"
	"github.com/torpor-dev/torpor/internal/model"
)

// The GPU host-memory pattern (docs/gpu.md) on the real runtime, with the
// example app of examples/gpu-host-memory: its weights live in host RAM,
// its Device (a CPU stand-in for a GPU) holds a separate copy that the
// pre_suspend hook frees and the post_resume hook rebuilds from host RAM.

const gpuExampleDir = "../../examples/gpu-host-memory"

// gpuInput is the input the tests ask the model about.
const gpuInput = "0.5,-1,2,0.25"

// gpuStatus is what the example app answers on GET /status.
type gpuStatus struct {
	Loaded          bool     `json:"loaded"`
	Loads           int      `json:"loads"`
	Offloads        int      `json:"offloads"`
	WeightsChecksum string   `json:"weights_checksum"`
	DeviceChecksum  *string  `json:"device_checksum"`
	DiskLoadMS      float64  `json:"disk_load_ms"`
	LastLoadMS      *float64 `json:"last_load_ms"`
	PID             int      `json:"pid"`
	Started         float64  `json:"started"`
	Instance        string   `json:"instance"`
	BootGeneration  string   `json:"boot_generation"`
}

// gpuExampleConfig is examples/gpu-host-memory/machine.json, run from the
// test root filesystem: the app's source is passed to python3 -c instead of
// being installed at /app/app.py in an image.
func gpuExampleConfig(t *testing.T, env map[string]string) model.MachineConfig {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(gpuExampleDir, "machine.json"))
	if err != nil {
		t.Fatal(err)
	}
	var cfg model.MachineConfig
	if err := json.Unmarshal(data, &cfg); err != nil {
		t.Fatalf("machine.json: %v", err)
	}
	src, err := os.ReadFile(filepath.Join(gpuExampleDir, "app.py"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Guest.GPUSuspend != model.GPUSuspendHostMemory || cfg.Hooks == nil || cfg.Hooks.PreSuspend == nil || cfg.Hooks.PostResume == nil {
		t.Fatalf("machine.json does not opt into host-memory mode with both hooks: %+v", cfg)
	}
	cfg.Image = rootfs
	cfg.Init = model.InitConfig{Exec: []string{"python3", "-c", string(src)}}
	// gpus stays 0: this host has no GPU and torpor's runtime attaches none
	// (no runsc --nvproxy), so the app's Device is its CPU stand-in. What
	// gpus > 0 changes is only eligibility for suspend, which
	// internal/machine/gpu_test.go covers; the opt-in and its hooks are
	// validated the same with gpus = 0.
	cfg.Guest.GPUs = 0
	// No service: the proxy's idle autosuspend would race with the test's
	// own suspends, and its public port could collide with other daemons.
	cfg.Services = nil
	cfg.Env = env
	return cfg
}

// gpuCall sends one request to the example app over the machine network,
// retrying only while the app cannot be reached (still booting).
func (d *daemon) gpuCall(m model.Machine, method, path string) (int, []byte) {
	d.t.Helper()
	cl := http.Client{Timeout: 10 * time.Second}
	deadline := time.Now().Add(30 * time.Second)
	for {
		req, err := http.NewRequest(method, "http://"+m.PrivateIP+":8080"+path, nil)
		if err != nil {
			d.t.Fatal(err)
		}
		resp, err := cl.Do(req)
		if err == nil {
			body, rerr := io.ReadAll(resp.Body)
			resp.Body.Close()
			if rerr == nil {
				return resp.StatusCode, body
			}
			err = rerr
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("%s %s on machine %s: %v", method, path, m.ID, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (d *daemon) gpuStatus(m model.Machine) gpuStatus {
	d.t.Helper()
	code, body := d.gpuCall(m, "GET", "/status")
	var st gpuStatus
	if err := json.Unmarshal(body, &st); code != 200 || err != nil {
		d.t.Fatalf("GET /status: %d %s (%v)", code, body, err)
	}
	return st
}

// gpuInfer asks the model about gpuInput and returns its output; the app
// must answer 200.
func (d *daemon) gpuInfer(m model.Machine) []float64 {
	d.t.Helper()
	code, body := d.gpuCall(m, "GET", "/infer?x="+gpuInput)
	var out struct {
		Y []float64 `json:"y"`
	}
	if err := json.Unmarshal(body, &out); code != 200 || err != nil || len(out.Y) == 0 {
		d.t.Fatalf("GET /infer: %d %s (%v)", code, body, err)
	}
	return out.Y
}

// sameProcess fails unless after is the process of before: a resume, not a
// cold start (the pid alone is no proof: the app is PID 1 of every boot).
func sameProcess(t *testing.T, before, after gpuStatus) {
	t.Helper()
	if after.Instance != before.Instance || after.Started != before.Started || after.PID != before.PID ||
		after.BootGeneration != before.BootGeneration {
		t.Fatalf("not the same process: before %+v, after %+v", before, after)
	}
}

func TestGPUHostMemorySuspendResume(t *testing.T) {
	d := newDaemon(t)
	m := d.create(gpuExampleConfig(t, nil))
	st0 := d.gpuStatus(m)
	if !st0.Loaded || st0.Loads != 1 || st0.Offloads != 0 || st0.DeviceChecksum == nil || *st0.DeviceChecksum != st0.WeightsChecksum {
		t.Fatalf("app after boot: %+v", st0)
	}
	y0 := d.gpuInfer(m)

	for i := 1; i <= 2; i++ {
		d.suspend(m.ID)
		sev := d.event(m.ID, "suspend")
		if out, _ := detail(sev, "pre_suspend.output").(string); detail(sev, "pre_suspend.status") != "ok" ||
			!strings.Contains(out, `"offloaded": true`) || strings.Contains(out, `"freed_bytes": 0`) {
			t.Fatalf("suspend %d: the pre_suspend hook did not offload the model: %+v", i, sev)
		}

		if resp := d.start(m.ID); !resp.FromSnapshot {
			t.Fatalf("resume %d: cold start instead", i)
		}
		// start returned after post_resume: the very first request finds the
		// model back on the device (no 503).
		y := d.gpuInfer(m)
		rev := d.event(m.ID, "resume")
		if out, _ := detail(rev, "post_resume.output").(string); detail(rev, "post_resume.status") != "ok" ||
			!strings.Contains(out, `"reloaded": true`) {
			t.Fatalf("resume %d: the post_resume hook did not reload the model: %+v", i, rev)
		}

		st := d.gpuStatus(m)
		sameProcess(t, st0, st)
		if !st.Loaded || st.Loads != st0.Loads+i || st.Offloads != i {
			t.Fatalf("resume %d: device loaded %v after %d loads and %d offloads, want loaded after %d and %d",
				i, st.Loaded, st.Loads, st.Offloads, st0.Loads+i, i)
		}
		if st.WeightsChecksum != st0.WeightsChecksum || st.DeviceChecksum == nil || *st.DeviceChecksum != st0.WeightsChecksum {
			t.Fatalf("resume %d: weights %s, device %v, want both %s", i, st.WeightsChecksum, deref(st.DeviceChecksum), st0.WeightsChecksum)
		}
		if !slices.Equal(y, y0) {
			t.Fatalf("resume %d: /infer = %v, want exactly %v as before the suspend", i, y, y0)
		}
		t.Logf("resume %d: restore %vms, post_resume hook %vms (device reload from host RAM %.3fms inside the app; "+
			"reading the weights from disk at boot took %.3fms), resume total %vms",
			i, rev.Field("restore_ms"), detail(rev, "post_resume.duration_ms"), deref64(st.LastLoadMS), st0.DiskLoadMS,
			rev.Field("duration_ms"))
	}
}

func deref64(f *float64) float64 {
	if f == nil {
		return -1
	}
	return *f
}

func TestGPUOffloadFailureAbortsSuspend(t *testing.T) {
	d := newDaemon(t)
	m := d.create(gpuExampleConfig(t, map[string]string{"FAIL_OFFLOAD": "1"}))
	st0 := d.gpuStatus(m)
	y0 := d.gpuInfer(m)

	err := d.c.Suspend(ctx(t), d.app, m.ID)
	var apiErr *client.APIError
	if !errors.As(err, &apiErr) || apiErr.Status != http.StatusConflict ||
		!strings.Contains(apiErr.Message, "pre_suspend hook exited with status 1") ||
		!strings.Contains(apiErr.Message, "POST /offload failed: HTTP Error 500") {
		t.Fatalf("suspend = %v, want 409 with the hook's message", err)
	}
	t.Logf("suspend answered %d: %s", apiErr.Status, apiErr.Message)
	d.wantState(m.ID, model.StateStarted)
	ev := d.event(m.ID, "suspend")
	if ev.Status != "failed" || detail(ev, "pre_suspend.status") != "failed" ||
		!strings.Contains(fmt.Sprint(detail(ev, "pre_suspend.output")), "FAIL_OFFLOAD=1") {
		t.Fatalf("suspend event = %+v", ev)
	}
	if dirs := d.snapshotDirs(m.ID); len(dirs) != 0 {
		t.Fatalf("aborted suspend left images: %v", dirs)
	}

	// The app kept running with its model on the device.
	st := d.gpuStatus(m)
	sameProcess(t, st0, st)
	if !st.Loaded || st.Loads != st0.Loads || st.Offloads != 0 {
		t.Fatalf("app after the aborted suspend: %+v", st)
	}
	if y := d.gpuInfer(m); !slices.Equal(y, y0) {
		t.Fatalf("/infer = %v, want %v", y, y0)
	}
}
