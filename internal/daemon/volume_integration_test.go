package daemon_test

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/torpor-dev/torpor/internal/client"
	"github.com/torpor-dev/torpor/internal/model"
)

//go:embed testdata/volapp.py
var volApp string

// rangeSeq hands parallel tests their own part of the test network range.
var rangeSeq atomic.Int64

// newParallelDaemon runs the test in parallel with the others that call it,
// with a daemon whose machines take addresses from a /20 of
// TORPOR_TEST_NETWORK_RANGE of their own.
func newParallelDaemon(t *testing.T, flags ...string) *daemon {
	t.Helper()
	return newDaemon(t, append(parallelRange(t), flags...)...)
}

// parallelRange runs the test in parallel with the others that call it and
// returns the daemon flag that gives its machines a /20 of
// TORPOR_TEST_NETWORK_RANGE of their own (none when the range is too small
// to split).
func parallelRange(t *testing.T) []string {
	t.Helper()
	if skipReason != "" {
		t.Skip(skipReason)
	}
	t.Parallel()
	base := netip.MustParsePrefix(envOr("TORPOR_TEST_NETWORK_RANGE", "10.213.0.0/16")).Masked()
	if base.Bits() > 16 {
		return nil
	}
	a := base.Addr().As4()
	a[2] = byte(16 * (rangeSeq.Add(1) % 16))
	return []string{"--network-range", netip.PrefixFrom(netip.AddrFrom4(a), 20).String()}
}

// volConfig is the volume test app (testdata/volapp.py) with the volume
// mounted at /data.
func volConfig(volumeID string) model.MachineConfig {
	cfg := model.MachineConfig{
		Image: rootfs,
		Init:  model.InitConfig{Exec: []string{"python3", "-u", "-c", volApp}},
		Guest: model.Guest{CPUs: 1, MemoryMB: 256},
	}
	if volumeID != "" {
		cfg.Mounts = []model.Mount{{Volume: volumeID, Path: "/data"}}
	}
	return cfg
}

func (d *daemon) newVolume(name string, sizeGB int) model.Volume {
	d.t.Helper()
	v, err := d.c.CreateVolume(ctx(d.t), d.app, model.CreateVolumeRequest{Name: name, SizeGB: &sizeGB})
	if err != nil {
		d.t.Fatalf("create volume: %v", err)
	}
	return v
}

func (d *daemon) volume(id string) model.Volume {
	d.t.Helper()
	v, err := d.c.GetVolume(ctx(d.t), d.app, id)
	if err != nil {
		d.t.Fatal(err)
	}
	return v
}

var appClient = &http.Client{Timeout: 10 * time.Second}

// call sends method path to the machine's app on port 8080 and decodes the
// JSON answer into out, retrying for up to 30 s while the app comes up.
func (d *daemon) call(m model.Machine, method, path string, out any) {
	d.t.Helper()
	if err := d.tryCall(m, method, path, out, 30*time.Second); err != nil {
		d.t.Fatalf("%s %s on machine %s: %v", method, path, m.ID, err)
	}
}

func (d *daemon) tryCall(m model.Machine, method, path string, out any, patience time.Duration) error {
	if m.PrivateIP == "" {
		m = d.get(m.ID)
	}
	deadline := time.Now().Add(patience)
	for {
		if err := machineRoute(m.PrivateIP); err != nil {
			return err
		}
		err := callApp(m.PrivateIP, method, path, out)
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// machineRoute makes sure the host reaches ip through a machine bridge,
// never through its default route (a request must not leave the host when
// the machine's network is missing).
func machineRoute(ip string) error {
	out, err := exec.Command("ip", "route", "get", ip).CombinedOutput()
	if err != nil || !strings.Contains(string(out), " dev tpb-") {
		return fmt.Errorf("no route to machine address %s through a machine bridge (%v): %s", ip, err, out)
	}
	return nil
}

// callApp makes one request to the app at ip.
func callApp(ip, method, path string, out any) error {
	return callAppAt(ip+":8080", method, path, out)
}

// doJSON sends req and decodes a 200 answer's JSON into out.
func doJSON(req *http.Request, out any) error {
	resp, err := appClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	buf.ReadFrom(resp.Body)
	if resp.StatusCode != 200 {
		return fmt.Errorf("%s (server %q): %s", resp.Status, resp.Header.Get("Server"), buf.String())
	}
	return json.Unmarshal(buf.Bytes(), out)
}

// write has the app append lines to its volume (fsync'ed each when sync).
func (d *daemon) write(m model.Machine, sync bool, lines ...string) {
	d.t.Helper()
	q := url.Values{"line": lines}
	if sync {
		q.Set("sync", "1")
	}
	var ans struct{ Written int }
	d.call(m, "POST", "/write?"+q.Encode(), &ans)
	if ans.Written != len(lines) {
		d.t.Fatalf("app wrote %d lines of %d", ans.Written, len(lines))
	}
}

// read returns the lines of the app's volume log.
func (d *daemon) read(m model.Machine) []string {
	d.t.Helper()
	var ans struct{ Lines []string }
	d.call(m, "GET", "/read", &ans)
	return ans.Lines
}

// wantLines checks that the machine's volume holds exactly want.
func (d *daemon) wantLines(m model.Machine, after string, want []string) {
	d.t.Helper()
	got := d.read(d.get(m.ID))
	if !slices.Equal(got, want) {
		d.t.Fatalf("after %s the volume holds %q, want %q", after, got, want)
	}
	d.t.Logf("after %s: %d writes acknowledged, %d found", after, len(want), len(got))
}

// TestVolumeKeepsWritesThroughTheMachineLifecycle writes to a volume
// (write(2), no fsync) before each of suspend/resume, suspend then stop and
// a cold start (the snapshot discarded), stop/start, update, and a restart
// by the restart policy, and reads everything back after each.
func TestVolumeKeepsWritesThroughTheMachineLifecycle(t *testing.T) {
	d := newParallelDaemon(t)
	v := d.newVolume("data", 1)
	cfg := volConfig(v.ID)
	cfg.Restart = &model.RestartPolicy{Policy: "always"}
	m := d.create(cfg)
	if got := d.volume(v.ID).AttachedMachineID; got == nil || *got != m.ID {
		t.Fatalf("volume attached to %v, want %s", got, m.ID)
	}
	if mt := m.Config.Mounts; len(mt) != 1 || mt[0].Name != "data" || mt[0].SizeGB != 1 {
		t.Fatalf("config.mounts as stored: %+v", mt)
	}
	var want []string
	step := func(line string, op func()) {
		t.Helper()
		want = append(want, line)
		d.write(d.get(m.ID), false, line)
		op()
		d.wantLines(m, line, want)
	}
	step("suspend-resume", func() {
		d.suspend(m.ID)
		if dirs := d.snapshotDirs(m.ID); len(dirs) != 1 || strings.HasPrefix(dirs[0], filepath.Join(d.dataDir, "volumes")) {
			t.Fatalf("snapshot dirs %v, want one outside the volumes", dirs)
		}
		if ev := d.event(m.ID, model.EventSuspend); ev.Suspend() != nil {
			t.Logf("suspend: checkpoint %d ms, seal %d ms, volumes synced beside it in %d ms",
				ev.Suspend().CheckpointMS, ev.Suspend().SealMS, ev.Suspend().VolumesSyncMS)
		}
		if resp := d.start(m.ID); !resp.FromSnapshot {
			t.Fatal("the start did not resume the snapshot")
		}
	})
	step("suspend-stop-coldstart", func() {
		d.suspend(m.ID)
		if err := d.c.Stop(ctx(t), d.app, m.ID, model.StopRequest{}); err != nil {
			t.Fatal(err)
		}
		if resp := d.start(m.ID); resp.FromSnapshot {
			t.Fatal("the start after a stop resumed a snapshot")
		}
	})
	step("stop-start", func() {
		if err := d.c.Stop(ctx(t), d.app, m.ID, model.StopRequest{}); err != nil {
			t.Fatal(err)
		}
		d.start(m.ID)
	})
	step("update", func() {
		up := cfg
		up.Env = map[string]string{"DEPLOY": "2"}
		if _, err := d.c.UpdateMachine(ctx(t), d.app, m.ID, model.UpdateMachineRequest{Config: up}); err != nil {
			t.Fatal(err)
		}
		d.wantState(m.ID, model.StateStarted)
	})
	step("restart-policy", func() {
		gen := d.get(m.ID).BootGeneration
		var ans any
		callApp(d.get(m.ID).PrivateIP, "POST", "/exit?code=3", &ans) // the app exits; the machine restarts
		deadline := time.Now().Add(60 * time.Second)
		for mc := d.get(m.ID); mc.BootGeneration == gen || mc.State != model.StateStarted; mc = d.get(m.ID) {
			if time.Now().After(deadline) {
				t.Fatalf("machine not restarted: %s, generation %d", mc.State, mc.BootGeneration)
			}
			time.Sleep(50 * time.Millisecond)
		}
	})
	// On the host: the volume's filesystem holds the log, nothing else of torpor's.
	entries, err := os.ReadDir(filepath.Join(d.dataDir, "volumes", v.ID, "fs"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if !slices.Equal(names, []string{"log", "lost+found"}) {
		t.Fatalf("volume holds %v", names)
	}
}

// TestVolumeKeepsAcknowledgedWritesThroughCrashes has four writers append
// fsync'ed lines to the app's volume, each acknowledged by the app, while
// the daemon is killed (-9) and then, with the daemon still dead, the
// machine's sandbox too; every line the app acknowledged must be on the
// volume once a restarted daemon has cold-started the machine.
func TestVolumeKeepsAcknowledgedWritesThroughCrashes(t *testing.T) {
	d := newParallelDaemon(t)
	v := d.newVolume("burst", 1)
	m := d.create(volConfig(v.ID))
	d.write(m, true, "first")
	if err := machineRoute(m.PrivateIP); err != nil {
		t.Fatal(err)
	}
	const writers, daemonKill, sandboxKill = 4, 100, 200
	var mu sync.Mutex
	acked := []string{"first"}
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(acked) }
	burstClient := &http.Client{Timeout: 2 * time.Second}
	var wg sync.WaitGroup
	failures := make([]error, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				line := fmt.Sprintf("w%d-%05d", w, i)
				resp, err := burstClient.Post("http://"+m.PrivateIP+":8080/write?sync=1&line="+line, "", nil)
				if err == nil {
					resp.Body.Close()
					if resp.StatusCode != 200 {
						err = fmt.Errorf("%s", resp.Status)
					}
				}
				if err != nil {
					failures[w] = err // the sandbox is gone: this writer is done
					return
				}
				mu.Lock()
				acked = append(acked, line)
				mu.Unlock()
			}
		}()
	}
	waitAcks := func(n int) {
		deadline := time.Now().Add(60 * time.Second)
		for count() < n {
			if time.Now().After(deadline) {
				t.Fatalf("only %d writes acknowledged, waiting for %d", count(), n)
			}
			time.Sleep(time.Millisecond)
		}
	}
	waitAcks(daemonKill)
	d.crash() // the sandbox keeps running, and acknowledging
	waitAcks(sandboxKill)
	atKill := count()
	d.killSandbox(m.ID)
	wg.Wait()
	d.run()
	d.wantState(m.ID, model.StateStopped) // recovery found the sandbox gone
	d.start(m.ID)
	found := d.read(d.get(m.ID))
	have := map[string]bool{}
	for _, l := range found {
		have[l] = true
	}
	var lost []string
	for _, l := range acked {
		if !have[l] {
			lost = append(lost, l)
		}
	}
	t.Logf("daemon killed after %d acknowledged writes, sandbox after %d (%d writers): %d writes acknowledged, %d found on the volume, %d lost; "+
		"writers stopped by: %v", daemonKill, atKill, writers, len(acked), len(found), len(lost), failures[0])
	if len(lost) > 0 {
		t.Fatalf("acknowledged writes lost: %v", lost)
	}
	// A write in flight when the sandbox died may be on the volume without
	// its acknowledgment; no more than one per writer.
	if extra := len(found) - len(acked); extra < 0 || extra > writers {
		t.Fatalf("%d lines on the volume that no writer sent", extra)
	}
}

// TestVolumeFullIsENOSPCInsideOnly fills a volume from inside its machine:
// the app gets ENOSPC at the volume's size, the host's disk loses nothing,
// and another machine (with a volume of its own) and the daemon carry on.
func TestVolumeFullIsENOSPCInsideOnly(t *testing.T) {
	d := newParallelDaemon(t)
	full, other := d.newVolume("full", 1), d.newVolume("other", 1)
	a, b := d.create(volConfig(full.ID)), d.create(volConfig(other.ID))
	hostFree := func() int64 {
		var st syscall.Statfs_t
		if err := syscall.Statfs(d.dataDir, &st); err != nil {
			t.Fatal(err)
		}
		return int64(st.Bavail) * st.Bsize
	}
	// What the volume's backing file holds on the host's disk: the test
	// host's free space moves with every other test and tenant, so it is
	// only logged.
	img := filepath.Join(d.dataDir, "volumes", full.ID, "ext4.img")
	allocated := func() int64 {
		var st syscall.Stat_t
		if err := syscall.Stat(img, &st); err != nil {
			t.Fatal(err)
		}
		return st.Blocks * 512
	}
	before, allocBefore := hostFree(), allocated()
	var fill struct {
		Bytes int64
		Errno int
	}
	begin := time.Now()
	d.call(a, "POST", "/fill", &fill)
	took := time.Since(begin)
	after, allocAfter := hostFree(), allocated()
	t.Logf("filled a 1 GB volume with %d MiB in %s: errno %d; its file holds %d MiB of the host's disk before, %d MiB after; host free space %d MiB before, %d MiB after",
		fill.Bytes>>20, took.Round(time.Millisecond), fill.Errno, allocBefore>>20, allocAfter>>20, before>>20, after>>20)
	if fill.Errno != int(syscall.ENOSPC) {
		t.Fatalf("filling the volume ended with errno %d, want ENOSPC", fill.Errno)
	}
	if fill.Bytes < 900<<20 || fill.Bytes > 1<<30 {
		t.Fatalf("the volume took %d bytes, want about 1 GiB", fill.Bytes)
	}
	// The volume's space was reserved when it was made: filling it takes
	// none of the host's more, and the file never holds more than its size.
	if grew := allocAfter - allocBefore; grew > 1<<20 || allocAfter > int64(full.SizeGB)<<30+16<<20 {
		t.Fatalf("filling the volume grew its file on the host's disk by %d MiB (to %d MiB)", grew>>20, allocAfter>>20)
	}
	if v := d.volume(full.ID); v.BlocksAvail*uint64(v.BlockSize) >= 1<<20 {
		t.Errorf("full volume reports %d blocks of %d bytes available", v.BlocksAvail, v.BlockSize)
	}
	// The full machine still works on its root filesystem; the other one
	// writes to its volume; the daemon still writes snapshots.
	var ok struct{ OK bool }
	d.call(a, "POST", "/rootwrite", &ok)
	d.write(b, true, "still fine")
	d.suspend(b.ID)
	d.start(b.ID)
	d.wantLines(b, "the other volume filled up", []string{"still fine"})
}

// TestVolumeAttachRules: a volume is attached to one machine at a time;
// an attached volume is not destroyed; destroying the machine detaches it
// and keeps its data for the next machine.
func TestVolumeAttachRules(t *testing.T) {
	d := newParallelDaemon(t)
	v := d.newVolume("shared", 1)
	first := d.create(volConfig(v.ID))
	d.write(first, true, "from the first machine")

	_, err := d.c.CreateMachine(ctx(t), d.app, model.CreateMachineRequest{Config: volConfig(v.ID)})
	wantAPIError(t, "second machine claiming the volume", err, http.StatusConflict, v.ID, first.ID)
	other := d.create(volConfig(""))
	_, err = d.c.UpdateMachine(ctx(t), d.app, other.ID, model.UpdateMachineRequest{Config: volConfig(v.ID)})
	wantAPIError(t, "update claiming the volume", err, http.StatusConflict, v.ID, first.ID)
	d.wantState(other.ID, model.StateStarted) // the refused update left it running
	ms, _ := d.c.ListMachines(ctx(t), d.app)
	if len(ms) != 2 {
		t.Fatalf("%d machines after the refused create, want 2", len(ms))
	}

	_, err = d.c.DestroyVolume(ctx(t), d.app, v.ID)
	wantAPIError(t, "destroy of an attached volume", err, http.StatusConflict, "attached", first.ID)
	err = d.c.DeleteApp(ctx(t), d.app)
	wantAPIError(t, "delete of an app with machines", err, http.StatusConflict, "machine")

	if err := d.c.Destroy(ctx(t), d.app, first.ID, true); err != nil {
		t.Fatal(err)
	}
	if got := d.volume(v.ID); got.Attached() {
		t.Fatalf("volume still attached to %s after its machine was destroyed", *got.AttachedMachineID)
	}
	if _, err := d.c.UpdateMachine(ctx(t), d.app, other.ID, model.UpdateMachineRequest{Config: volConfig(v.ID)}); err != nil {
		t.Fatalf("the other machine takes the freed volume: %v", err)
	}
	d.wantLines(other, "the volume moved to another machine", []string{"from the first machine"})
}

// TestVolumeExtend grows a detached volume and an attached one whose
// machine runs, and checks the size the machine sees.
func TestVolumeExtend(t *testing.T) {
	d := newParallelDaemon(t)
	free := d.newVolume("free", 1)
	resp, err := d.c.ExtendVolume(ctx(t), d.app, free.ID, 2)
	if err != nil || resp.NeedsRestart || resp.Volume.SizeGB != 2 || resp.Volume.FSSizeGB != 2 || blocksGiB(resp.Volume) < 1.9 {
		t.Fatalf("extend of a detached volume: %+v, %v", resp, err)
	}
	_, err = d.c.ExtendVolume(ctx(t), d.app, free.ID, 1)
	wantAPIError(t, "shrink", err, http.StatusBadRequest, "size_gb")

	v := d.newVolume("used", 1)
	m := d.create(volConfig(v.ID))
	d.write(m, true, "before the extend")
	resp, err = d.c.ExtendVolume(ctx(t), d.app, v.ID, 2)
	if err != nil || resp.Volume.SizeGB != 2 {
		t.Fatalf("extend of an attached volume: %+v, %v", resp, err)
	}
	inside := func() float64 {
		var df struct{ Bsize, Blocks, Bavail int64 }
		d.call(d.get(m.ID), "GET", "/df", &df)
		return float64(df.Blocks*df.Bsize) / (1 << 30)
	}
	t.Logf("extend of an attached volume whose machine runs: needs_restart %v; the machine sees %.2f GiB", resp.NeedsRestart, inside())
	if resp.NeedsRestart {
		// The host cannot grow a mounted filesystem (no CAP_SYS_RESOURCE):
		// it grows when the machine next starts.
		if inside() > 1.01 {
			t.Fatal("needs_restart, but the machine already sees the new size")
		}
		d.suspend(m.ID)
		d.start(m.ID)
	}
	if got := inside(); got < 1.9 {
		t.Fatalf("the machine sees %.2f GiB after the extend", got)
	}
	if got := d.volume(v.ID); got.FSSizeGB != 2 {
		t.Fatalf("volume after the extend: %+v", got)
	}
	// The extra space is usable, and the data is intact.
	var fill struct {
		Bytes int64
		Errno int
	}
	d.call(d.get(m.ID), "POST", "/fill", &fill)
	if fill.Bytes < 1800<<20 {
		t.Fatalf("the extended volume took only %d MiB", fill.Bytes>>20)
	}
	d.wantLines(m, "the extend", []string{"before the extend"})
}

func blocksGiB(v model.Volume) float64 { return float64(v.Blocks) * float64(v.BlockSize) / (1 << 30) }

// TestVolumeMissingOrCorruptIsAClearError: after a "reboot" (the daemon
// stopped, the volumes unmounted), one volume's backing file is gone and
// another's superblock is overwritten. The daemon says so, and their
// machines are not started.
func TestVolumeMissingOrCorruptIsAClearError(t *testing.T) {
	d := newParallelDaemon(t)
	gone, corrupt, fine := d.newVolume("gone", 1), d.newVolume("corrupt", 1), d.newVolume("fine", 1)
	var ms []model.Machine
	for _, v := range []model.Volume{gone, corrupt, fine} {
		m := d.create(volConfig(v.ID))
		d.write(m, true, "kept on "+v.Name)
		ms = append(ms, m)
	}
	suspended := ms[1]
	d.suspend(suspended.ID)
	for _, m := range []model.Machine{ms[0], ms[2]} {
		if err := d.c.Stop(ctx(t), d.app, m.ID, model.StopRequest{}); err != nil {
			t.Fatal(err)
		}
	}
	d.stop()
	for _, v := range []model.Volume{gone, corrupt, fine} {
		if err := syscall.Unmount(filepath.Join(d.dataDir, "volumes", v.ID, "fs"), 0); err != nil {
			t.Fatalf("unmount %s: %v", v.Name, err)
		}
		// A sandbox starting meanwhile (another test's) may hold a copy of
		// the host's mounts for a moment; the filesystem is gone once its
		// loop device is (which a reboot would guarantee).
		waitLoopGone(t, filepath.Join(d.dataDir, "volumes", v.ID, "ext4.img"))
	}
	if err := os.Remove(filepath.Join(d.dataDir, "volumes", gone.ID, "ext4.img")); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(filepath.Join(d.dataDir, "volumes", corrupt.ID, "ext4.img"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt(bytes.Repeat([]byte{0xff}, 4096), 0)
	f.Close()
	d.run()

	for _, c := range []struct {
		v     model.Volume
		m     model.Machine
		state model.State
		why   string
	}{{gone, ms[0], model.StateStopped, "backing file"}, {corrupt, ms[1], model.StateSuspended, "no ext4 filesystem"}} {
		v := d.volume(c.v.ID)
		if v.HostStatus != "error" || !strings.Contains(v.Error, c.why) {
			t.Errorf("volume %s: host_status %q, error %q; want one about %q", c.v.Name, v.HostStatus, v.Error, c.why)
		}
		_, err := d.c.Start(ctx(t), d.app, c.m.ID)
		wantAPIError(t, "start with volume "+c.v.Name, err, http.StatusServiceUnavailable, c.v.ID, c.why)
		d.wantState(c.m.ID, c.state)
		if ev := d.event(c.m.ID, model.EventStart); ev.Status != "failed" || !strings.Contains(ev.Start().Error, c.v.ID) {
			t.Errorf("start event of machine with volume %s: %+v", c.v.Name, ev)
		}
		t.Logf("volume %s: start refused: %v", c.v.Name, err)
	}
	if len(d.snapshotDirs(suspended.ID)) != 1 {
		t.Error("the suspended machine lost its snapshot to a start refused for its volume")
	}
	d.start(ms[2].ID)
	d.wantLines(ms[2], "a reboot, mounted again", []string{"kept on fine"})
}

// waitLoopGone waits until no loop device is bound to the file at path.
func waitLoopGone(t *testing.T, path string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		files, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
		bound := false
		for _, f := range files {
			if b, err := os.ReadFile(f); err == nil && strings.TrimSpace(string(b)) == path {
				bound = true
			}
		}
		if !bound {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("a loop device is still bound to %s 30s after its unmount", path)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// wantAPIError checks that err is an API error with status whose message
// mentions every one of texts.
func wantAPIError(t *testing.T, what string, err error, status int, texts ...string) {
	t.Helper()
	var ae *client.APIError
	if !errors.As(err, &ae) || ae.Status != status {
		t.Fatalf("%s: %v, want HTTP %d", what, err, status)
	}
	for _, text := range texts {
		if !strings.Contains(ae.Message, text) {
			t.Fatalf("%s: %q does not mention %q", what, ae.Message, text)
		}
	}
}
