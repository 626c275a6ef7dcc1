package machine

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/torpor-dev/torpor/internal/model"
	"github.com/torpor-dev/torpor/internal/runtime"
)

// etcFiles writes the machine's /etc/hosts, /etc/hostname and
// /etc/resolv.conf into its bundle and returns the mounts that put them in
// place, as container runtimes do. Machines have no DNS server yet (they have
// no outbound network), so resolv.conf points at loopback, where a lookup
// fails at once instead of waiting seconds for a server that cannot answer
// (Python's HTTPServer, for one, looks its own name up before listening).
func (m *Manager) etcFiles(mc model.Machine) ([]runtime.Mount, error) {
	hosts := "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
	if mc.PrivateIP != "" {
		hosts += fmt.Sprintf("%s\t%s %s.vm.%s.internal\n", mc.PrivateIP, mc.ID, mc.ID, mc.App)
	} else {
		hosts += fmt.Sprintf("127.0.1.1\t%s\n", mc.ID)
	}
	files := []struct{ name, dest, content string }{
		{"hosts", "/etc/hosts", hosts},
		{"hostname", "/etc/hostname", mc.ID + "\n"},
		{"resolv.conf", "/etc/resolv.conf", "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n"},
	}
	dir := filepath.Join(m.bundleDir(mc.ID), "etc")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var mounts []runtime.Mount
	for _, f := range files {
		path := filepath.Join(dir, f.name)
		if err := os.WriteFile(path, []byte(f.content), 0o644); err != nil {
			return nil, err
		}
		mounts = append(mounts, runtime.Mount{Source: path, Destination: f.dest, ReadOnly: true})
	}
	return mounts, nil
}

// listenGuestAPI serves the machine's in-machine API socket and returns its
// mounts. The mounts must be the same at restore as at boot: they are, since
// both come through prepare.
func (m *Manager) listenGuestAPI(mc model.Machine) ([]runtime.Mount, error) {
	if m.cfg.GuestAPI == nil {
		return nil, nil
	}
	mounts, err := m.cfg.GuestAPI.Listen(mc.App, mc.ID, m.guestAPIDir(mc.ID))
	if err != nil {
		return nil, fmt.Errorf("in-machine API: %w", err)
	}
	return mounts, nil
}

// guestAPIDir is where the machine's in-machine API socket lives.
func (m *Manager) guestAPIDir(id string) string { return filepath.Join(m.cfg.RunDir, "machines", id) }
