package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/torpor-dev/torpor/internal/guestapi"
	"github.com/torpor-dev/torpor/internal/network"
	"github.com/torpor-dev/torpor/internal/snapshot"
)

// rawRestore measures, beside torpor's resume and on the same snapshot, a
// restore done with runsc alone: what torpor's own steps (claim, checks,
// network, clock check, thaw, events) add to runsc. While the machine is
// suspended it hard-links the snapshot's files into a directory of its
// own (the daemon's later claim and delete do not touch those links),
// restores them with the runsc flags the daemon uses (--platform=systrap,
// --overlay2=root:memory, --host-uds=open, --network=sandbox, the machine's own config.json
// and network namespace, under a runsc root and a sandbox ID of its own),
// sends SIGCONT to every process (torpor freezes the app before the
// checkpoint, so a restore alone leaves it stopped) and polls the app for
// its first byte as the resume's probe does. Then it kills the sandbox.
//
// It also times a read of the snapshot's files from the page cache (they
// were just written): the bandwidth a restore could read pages at.
type rawRestore struct {
	runsc   string
	dataDir string
	dir     string // the raw restores' runsc root, bundles and images live here
	seq     int
}

// newRawRestore prepares raw restores for a daemon whose data dir is
// dataDir; nil (and no error) when they cannot be done: runsc or the data
// dir unknown.
func newRawRestore(cfg Config) (*rawRestore, error) {
	if !cfg.dataDirSet() || cfg.RunscPath == "" {
		return nil, nil
	}
	if _, err := os.Stat(cfg.RunscPath); err != nil {
		return nil, nil
	}
	dir, err := os.MkdirTemp(cfg.DataDir, "bench-raw-")
	if err != nil {
		return nil, err
	}
	return &rawRestore{runsc: cfg.RunscPath, dataDir: cfg.DataDir, dir: dir}, nil
}

// close removes what the raw restores left (sandboxes are deleted after
// each): runsc's root, where it bind-mounts an empty network namespace
// (null-netns, maybe several times) and never removes it.
func (rr *rawRestore) close() error {
	if rr == nil {
		return nil
	}
	for unix.Unmount(filepath.Join(rr.dir, "runsc", "null-netns"), unix.MNT_DETACH) == nil {
	}
	return os.RemoveAll(rr.dir)
}

// rawResult is one raw restore.
type rawResult struct {
	firstByteMS float64 // runsc restore → SIGCONT → first byte
	restoreMS   float64 // the runsc restore command alone
	cacheGBs    float64 // page-cache read of the snapshot's files, GB/s
}

// measure restores the suspended machine id's snapshot with runsc alone and
// polls ip:appPort until the app answers; want is the app's answer before
// the suspend (the restored app must be the same process).
func (rr *rawRestore) measure(ctx context.Context, id, ip string, want appState, poll time.Duration) (res rawResult, err error) {
	rr.seq++
	sid := fmt.Sprintf("bench-raw-%s-%d", id, rr.seq)
	work := filepath.Join(rr.dir, sid)
	image, bundle, root := filepath.Join(work, "image"), filepath.Join(work, "bundle"), filepath.Join(rr.dir, "runsc")
	for _, d := range []string{image, bundle, root} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return res, err
		}
	}
	defer os.RemoveAll(work)
	n, err := linkSnapshot(filepath.Join(rr.dataDir, "machines", id, "snapshots"), image)
	if err != nil {
		return res, err
	}
	if res.cacheGBs, err = pageCacheRead(image, n); err != nil {
		return res, err
	}
	nsPath, err := rawBundle(filepath.Join(rr.dataDir, "machines", id, "bundle", "config.json"), bundle, sid)
	if err != nil {
		return res, err
	}
	if err := reconfigure(nsPath, ip); err != nil {
		return res, err
	}
	flags := []string{"--root=" + root, "--platform=systrap", "--overlay2=root:memory", guestapi.RunscFlag, "--network=sandbox",
		"--log=" + filepath.Join(bundle, "runsc.log"), "--panic-log=" + filepath.Join(bundle, "runsc-panic.log")}
	runsc := func(args ...string) error {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(cctx, rr.runsc, append(append([]string{}, flags...), args...)...)
		devnull, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
		if err != nil {
			return err
		}
		defer devnull.Close()
		// Never a pipe: the sandbox inherits runsc's stdio (DESIGN.md).
		stderr, err := os.Create(filepath.Join(bundle, "stderr"))
		if err != nil {
			return err
		}
		defer stderr.Close()
		cmd.Stdin, cmd.Stdout, cmd.Stderr = devnull, devnull, stderr
		cmd.WaitDelay = 5 * time.Second
		if err := cmd.Run(); err != nil {
			out, _ := os.ReadFile(stderr.Name())
			return fmt.Errorf("runsc %s: %w: %s %s", args[0], err, bytes.TrimSpace(out),
				logTail(filepath.Join(bundle, "runsc.log")))
		}
		return nil
	}
	defer func() {
		if derr := runsc("delete", "--force", sid); derr != nil {
			err = errors.Join(err, derr)
		}
	}()
	begin := time.Now()
	if err := runsc("restore", "--detach", "--bundle="+bundle, "--image-path="+image, sid); err != nil {
		return res, err
	}
	res.restoreMS = millis(time.Since(begin))
	if err := runsc("kill", "--all", sid, "SIGCONT"); err != nil {
		return res, err
	}
	p, err := firstByte(ctx, net.JoinHostPort(ip, appPort), "/", poll)
	if err != nil {
		return res, fmt.Errorf("raw restore: %w", err)
	}
	res.firstByteMS = millis(p.firstByte.Sub(begin))
	if !p.state.sameProcess(want) {
		return res, errors.New("raw restore: the app answered from a new process")
	}
	return res, nil
}

// linkSnapshot hard-links the files of the one snapshot under dir into
// image and returns their total size.
func linkSnapshot(dir, image string) (int64, error) {
	snaps, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	var snap string
	for _, s := range snaps {
		if s.IsDir() && !strings.HasSuffix(s.Name(), ".claimed") {
			snap = filepath.Join(dir, s.Name())
		}
	}
	if snap == "" {
		return 0, fmt.Errorf("no snapshot in %s", dir)
	}
	files, err := os.ReadDir(snap)
	if err != nil {
		return 0, err
	}
	var total int64
	for _, f := range files {
		if !f.Type().IsRegular() || f.Name() == snapshot.SealFile {
			continue
		}
		info, err := f.Info()
		if err != nil {
			return 0, err
		}
		total += info.Size()
		if err := os.Link(filepath.Join(snap, f.Name()), filepath.Join(image, f.Name())); err != nil {
			return 0, err
		}
	}
	return total, nil
}

// pageCacheRead reads every file in dir twice and returns the second
// read's bandwidth in GB/s (the first brings back whatever the page cache
// had dropped).
func pageCacheRead(dir string, total int64) (float64, error) {
	files, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	buf := make([]byte, 1<<20)
	readAll := func() error {
		for _, f := range files {
			fh, err := os.Open(filepath.Join(dir, f.Name()))
			if err != nil {
				return err
			}
			_, err = io.CopyBuffer(io.Discard, struct{ io.Reader }{fh}, buf)
			fh.Close()
			if err != nil {
				return err
			}
		}
		return nil
	}
	if err := readAll(); err != nil {
		return 0, err
	}
	begin := time.Now()
	if err := readAll(); err != nil {
		return 0, err
	}
	return float64(total) / time.Since(begin).Seconds() / 1e9, nil
}

// rawBundle writes bundle/config.json: the machine's own, with a cgroup
// of the raw sandbox's own. It returns the network namespace the config
// names.
func rawBundle(machineConfig, bundle, sid string) (string, error) {
	data, err := os.ReadFile(machineConfig)
	if err != nil {
		return "", err
	}
	var spec map[string]any
	if err := json.Unmarshal(data, &spec); err != nil {
		return "", fmt.Errorf("%s: %w", machineConfig, err)
	}
	linux, _ := spec["linux"].(map[string]any)
	if linux == nil {
		return "", fmt.Errorf("%s: no linux section", machineConfig)
	}
	linux["cgroupsPath"] = "/torpor/" + sid
	var nsPath string
	nss, _ := linux["namespaces"].([]any)
	for _, ns := range nss {
		if m, _ := ns.(map[string]any); m["type"] == "network" {
			nsPath, _ = m["path"].(string)
		}
	}
	if nsPath == "" {
		return "", fmt.Errorf("%s: the machine has no network namespace", machineConfig)
	}
	if data, err = json.Marshal(spec); err != nil {
		return "", err
	}
	return nsPath, os.WriteFile(filepath.Join(bundle, "config.json"), data, 0o600)
}

// reconfigure puts the machine's address back on eth0 in its namespace
// (a sandbox that ran there moved it into gVisor's netstack), as the
// daemon does before a restore. The prefix length and the gateway are
// those of the host's bridge address whose subnet holds ip.
func reconfigure(nsPath, ip string) error {
	addr, err := netip.ParseAddr(ip)
	if err != nil {
		return err
	}
	ifaces, err := net.Interfaces()
	if err != nil {
		return err
	}
	for _, iface := range ifaces {
		addrs, _ := iface.Addrs()
		for _, a := range addrs {
			n, ok := a.(*net.IPNet)
			if !ok {
				continue
			}
			gw, _ := netip.AddrFromSlice(n.IP)
			bits, _ := n.Mask.Size()
			if p := netip.PrefixFrom(gw.Unmap(), bits); p.Contains(addr) && gw.Unmap() != addr {
				return network.Reconfigure(nsPath, netip.PrefixFrom(addr, bits), gw.Unmap())
			}
		}
	}
	return fmt.Errorf("no host address on the subnet of %s", ip)
}

// logTail is the last line of a runsc log, for errors.
func logTail(path string) string {
	data, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	return lines[len(lines)-1]
}
