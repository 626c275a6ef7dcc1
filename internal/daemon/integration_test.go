package daemon_test

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/torpor-dev/torpor/internal/client"
	"github.com/torpor-dev/torpor/internal/model"
)

func TestColdStartSuspendResumeKeepsMemory(t *testing.T) {
	d := newDaemon(t)
	m := d.create(counterConfig(nil))
	if m.BootGeneration != 1 {
		t.Fatalf("boot generation = %d", m.BootGeneration)
	}
	d.waitCount(m.ID, 10)
	before := d.httpGet(d.get(m.ID))

	d.suspend(m.ID)
	if dirs := d.snapshotDirs(m.ID); len(dirs) != 1 {
		t.Fatalf("snapshot dirs = %v", dirs)
	}
	last := d.counts(m.ID)
	time.Sleep(300 * time.Millisecond)
	if now := d.counts(m.ID); len(now) != len(last) {
		t.Fatalf("a suspended machine kept counting: %d -> %d lines", len(last), len(now))
	}

	resp := d.start(m.ID)
	if !resp.FromSnapshot || resp.PreviousState != model.StateSuspended {
		t.Fatalf("start = %+v", resp)
	}
	counts := d.waitCount(m.ID, len(last)+10)
	consecutive(t, counts) // the counter went on from where it was: no reset, no lost line
	after := d.httpGet(d.get(m.ID))
	if after.Started != before.Started || after.Count <= before.Count {
		t.Fatalf("app state not preserved: before %+v after %+v", before, after)
	}
	if dirs := d.snapshotDirs(m.ID); len(dirs) != 0 {
		t.Fatalf("snapshot kept after resume: %v", dirs)
	}
	ev := d.event(m.ID, "resume")
	if ev.Field("from_snapshot") != true {
		t.Fatalf("resume event = %+v", ev)
	}
	if got := d.get(m.ID).BootGeneration; got != 1 {
		t.Fatalf("resume changed boot generation to %d", got)
	}
}

func TestResumeAtMostOnce(t *testing.T) {
	d := newDaemon(t)
	m := d.create(counterConfig(nil))
	d.waitCount(m.ID, 5)
	d.suspend(m.ID)

	// Two starts race for the one snapshot: exactly one resumes it.
	var wg sync.WaitGroup
	results := make([]error, 2)
	resumed := make([]bool, 2)
	for i := range results {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			resp, err := d.c.Start(ctx(t), d.app, m.ID)
			results[i], resumed[i] = err, resp.FromSnapshot
		}(i)
	}
	wg.Wait()
	ok := 0
	for i, err := range results {
		var apiErr *client.APIError
		switch {
		case err == nil && resumed[i]:
			ok++
		case errors.As(err, &apiErr) && apiErr.Status == 409:
		default:
			t.Fatalf("start %d: resumed=%v err=%v", i, resumed[i], err)
		}
	}
	if ok != 1 {
		t.Fatalf("%d starts resumed the snapshot, want exactly 1", ok)
	}
	consecutive(t, d.waitCount(m.ID, len(d.counts(m.ID))+5))
}

func TestCrashBetweenClaimAndRestoreNeverRestores(t *testing.T) {
	d := newDaemon(t)
	m := d.create(counterConfig(nil))
	d.waitCount(m.ID, 5)
	d.suspend(m.ID)
	printed := len(d.counts(m.ID))

	d.stop()
	d.run("TORPOR_FAULT=resume/after-claim")
	if _, err := d.c.Start(ctx(t), d.app, m.ID); err == nil {
		t.Fatal("start succeeded although the daemon was to die after the claim")
	}
	if code := d.waitExit(); code != 75 {
		t.Fatalf("daemon exit code = %d, want the fault exit 75", code)
	}
	d.run()
	d.wantState(m.ID, model.StateStopped)
	if dirs := d.snapshotDirs(m.ID); len(dirs) != 0 {
		t.Fatalf("claimed snapshot survives recovery: %v", dirs)
	}
	resp := d.start(m.ID)
	if resp.FromSnapshot {
		t.Fatal("a claimed snapshot was restored after a crash")
	}
	if g := d.get(m.ID).BootGeneration; g != 2 {
		t.Fatalf("boot generation = %d, want 2 after the cold start", g)
	}
	// The cold-started app counts from 1 again.
	d.waitCount(m.ID, 1)
	counts := d.counts(m.ID)
	consecutive(t, counts[printed:])
}

func TestColdStartInvalidatesOlderSnapshots(t *testing.T) {
	d := newDaemon(t)
	m := d.create(counterConfig(nil))
	d.waitCount(m.ID, 3)
	d.suspend(m.ID)
	gen1 := d.snapshotDirs(m.ID)[0]
	saved := filepath.Join(t.TempDir(), "gen1")
	copyTree(t, gen1, saved)

	d.start(m.ID) // resume, generation 1
	if err := d.c.Stop(ctx(t), d.app, m.ID, model.StopRequest{}); err != nil {
		t.Fatal(err)
	}
	d.start(m.ID) // cold start, generation 2
	d.waitCount(m.ID, 1)
	d.suspend(m.ID)
	gen2 := d.snapshotDirs(m.ID)[0]

	// Behind the daemon's back, put the generation-1 image where the
	// generation-2 snapshot lives.
	d.stop()
	os.RemoveAll(gen2)
	copyTree(t, saved, gen2)
	d.run()

	if resp := d.start(m.ID); resp.FromSnapshot {
		t.Fatal("restored a snapshot from an older boot generation")
	}
	ev := d.event(m.ID, "resume")
	reason, _ := ev.Field("reason").(string)
	if ev.Field("from_snapshot") != false || !strings.Contains(reason, "older boot generation") {
		t.Fatalf("resume event = %+v", ev)
	}
	if g := d.get(m.ID).BootGeneration; g != 3 {
		t.Fatalf("boot generation = %d, want 3", g)
	}
}

func copyTree(t *testing.T, from, to string) {
	t.Helper()
	if err := os.MkdirAll(to, 0o700); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(from)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(from, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(to, e.Name()), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

func TestStopOnSuspendedDiscardsSnapshot(t *testing.T) {
	d := newDaemon(t)
	m := d.create(counterConfig(nil))
	d.waitCount(m.ID, 3)
	d.suspend(m.ID)
	if err := d.c.Stop(ctx(t), d.app, m.ID, model.StopRequest{}); err != nil {
		t.Fatal(err)
	}
	d.wantState(m.ID, model.StateStopped)
	if dirs := d.snapshotDirs(m.ID); len(dirs) != 0 {
		t.Fatalf("stop kept the snapshot: %v", dirs)
	}
	if ev := d.event(m.ID, "stop"); ev.Field("snapshot_discarded") != true {
		t.Fatalf("stop event = %+v", ev)
	}
	if resp := d.start(m.ID); resp.FromSnapshot {
		t.Fatal("start after stop resumed")
	}
}

func TestUpdateOnSuspendedColdStartsNewConfig(t *testing.T) {
	d := newDaemon(t)
	m := d.create(counterConfig(map[string]string{"VERSION": "1"}))
	d.waitCount(m.ID, 3)
	d.suspend(m.ID)
	upd, err := d.c.UpdateMachine(ctx(t), d.app, m.ID, model.UpdateMachineRequest{
		Config: counterConfig(map[string]string{"VERSION": "2"})})
	if err != nil {
		t.Fatal(err)
	}
	if upd.State != model.StateStarted || upd.BootGeneration != 2 {
		t.Fatalf("updated machine = %s gen %d", upd.State, upd.BootGeneration)
	}
	if dirs := d.snapshotDirs(m.ID); len(dirs) != 0 {
		t.Fatalf("update kept the snapshot: %v", dirs)
	}
	if st := d.httpGet(d.get(m.ID)); st.Version != "2" {
		t.Fatalf("running version %q, want the new config's 2", st.Version)
	}
}

func TestUnusableSnapshotColdStartsWithReason(t *testing.T) {
	cases := []struct {
		name   string
		spoil  func(t *testing.T, dir string)
		reason string
	}{
		{"corrupt", func(t *testing.T, dir string) { flipByte(t, largestFile(t, dir)) }, "corrupt"},
		{"truncated", func(t *testing.T, dir string) {
			f := largestFile(t, dir)
			info, err := os.Stat(f)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(f, info.Size()/2); err != nil {
				t.Fatal(err)
			}
		}, "does not match its checksum"},
		{"missing", func(t *testing.T, dir string) { os.RemoveAll(dir) }, "missing"},
	}
	d := newDaemon(t)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := d.create(counterConfig(nil))
			d.waitCount(m.ID, 3)
			d.suspend(m.ID)
			c.spoil(t, d.snapshotDirs(m.ID)[0])
			if resp := d.start(m.ID); resp.FromSnapshot {
				t.Fatal("resumed from an unusable snapshot")
			}
			ev := d.event(m.ID, "resume")
			reason, _ := ev.Field("reason").(string)
			if ev.Field("from_snapshot") != false || !strings.Contains(reason, c.reason) {
				t.Fatalf("resume event = %+v, want reason with %q", ev, c.reason)
			}
			d.waitCount(m.ID, 1) // the cold-started app runs
		})
	}
}

func largestFile(t *testing.T, dir string) string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var best string
	var size int64 = -1
	for _, e := range entries {
		if info, err := e.Info(); err == nil && info.Size() > size {
			best, size = filepath.Join(dir, e.Name()), info.Size()
		}
	}
	return best
}

func flipByte(t *testing.T, path string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	info, _ := f.Stat()
	b := make([]byte, 1)
	off := info.Size() / 2
	f.ReadAt(b, off)
	b[0] ^= 0xff
	f.WriteAt(b, off)
}

func TestSuspendEligibilityErrors(t *testing.T) {
	d := newDaemon(t)
	cases := map[string]func(*model.MachineConfig){
		"memory_mb": func(c *model.MachineConfig) { c.Guest.MemoryMB = 4096 },
		"swap":      func(c *model.MachineConfig) { c.SwapSizeMB = 256 },
		"schedule":  func(c *model.MachineConfig) { c.Schedule = "daily" },
		"gpus":      func(c *model.MachineConfig) { c.Guest.GPUs = 1 },
	}
	for field, change := range cases {
		t.Run(field, func(t *testing.T) {
			cfg := counterConfig(nil)
			change(&cfg)
			m, err := d.c.CreateMachine(ctx(t), d.app, model.CreateMachineRequest{Config: cfg, SkipLaunch: field == "gpus"})
			if err != nil {
				t.Fatal(err)
			}
			err = d.c.Suspend(ctx(t), d.app, m.ID)
			var apiErr *client.APIError
			if !errors.As(err, &apiErr) || apiErr.Status/100 != 4 || !strings.Contains(apiErr.Message, field) {
				t.Fatalf("suspend = %v, want a 4xx naming %s", err, field)
			}
			if field != "gpus" {
				d.wantState(m.ID, model.StateStarted)
			}

			auto := model.AutostopSuspend
			cfg.Services = []model.Service{{InternalPort: 8080, Autostop: &auto}}
			_, err = d.c.CreateMachine(ctx(t), d.app, model.CreateMachineRequest{Config: cfg})
			if !errors.As(err, &apiErr) || apiErr.Status != 400 || !strings.Contains(apiErr.Message, "autostop") {
				t.Fatalf("create with autostop=suspend = %v, want 400", err)
			}
		})
	}
}

func TestWaitForSuspended(t *testing.T) {
	d := newDaemon(t)
	m := d.create(counterConfig(nil))
	done := make(chan error, 1)
	go func() {
		state, err := d.c.Wait(ctx(t), d.app, m.ID, []model.State{model.StateSuspended}, 60*time.Second)
		if err == nil && state != model.StateSuspended {
			err = errors.New("wait returned state " + string(state))
		}
		done <- err
	}()
	time.Sleep(200 * time.Millisecond)
	d.suspend(m.ID)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	_, err := d.c.Wait(ctx(t), d.app, m.ID, []model.State{model.StateStarted}, time.Second)
	var apiErr *client.APIError
	if !errors.As(err, &apiErr) || apiErr.Status != 408 {
		t.Fatalf("wait for started on a suspended machine = %v, want 408", err)
	}
}

func TestDaemonRestartKeepsSuspendedAndAdoptsRunning(t *testing.T) {
	d := newDaemon(t)
	running := d.create(counterConfig(nil))
	suspended := d.create(counterConfig(nil))
	d.waitCount(running.ID, 3)
	d.waitCount(suspended.ID, 3)
	d.suspend(suspended.ID)

	d.crash()
	d.run()
	d.wantState(running.ID, model.StateStarted)
	d.wantState(suspended.ID, model.StateSuspended)

	// The adopted machine never stopped counting, and its console is drained again.
	consecutive(t, d.waitCount(running.ID, len(d.counts(running.ID))+10))
	if resp := d.start(suspended.ID); !resp.FromSnapshot {
		t.Fatal("suspended machine not resumed after a daemon restart")
	}
	consecutive(t, d.waitCount(suspended.ID, len(d.counts(suspended.ID))+10))

	// The adopted machine is still supervised: suspend and resume it too.
	d.suspend(running.ID)
	if resp := d.start(running.ID); !resp.FromSnapshot {
		t.Fatal("adopted machine not resumed")
	}
	consecutive(t, d.waitCount(running.ID, len(d.counts(running.ID))+5))
}

func TestDestroyRemovesEverything(t *testing.T) {
	d := newDaemon(t)
	m := d.create(counterConfig(nil))
	d.suspend(m.ID)
	if err := d.c.Destroy(ctx(t), d.app, m.ID, false); err != nil {
		t.Fatal(err)
	}
	d.wantState(m.ID, model.StateDestroyed)
	if _, err := os.Stat(filepath.Join(d.dataDir, "machines", m.ID)); !os.IsNotExist(err) {
		t.Fatalf("machine directory survives destroy: %v", err)
	}
	if _, err := os.Stat("/run/netns/torpor-" + m.ID); !os.IsNotExist(err) {
		t.Fatalf("network namespace survives destroy: %v", err)
	}
	bridge := bridgeOf(netip.MustParseAddr(m.PrivateIP))
	if _, err := net.InterfaceByName(bridge); err != nil {
		t.Fatalf("app bridge %s missing while the app exists: %v", bridge, err)
	}
	if err := d.c.DeleteApp(ctx(t), d.app); err != nil {
		t.Fatal(err)
	}
	if _, err := net.InterfaceByName(bridge); err == nil {
		t.Fatalf("app bridge %s survives the app", bridge)
	}
}
