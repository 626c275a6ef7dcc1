package machine

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/torpor-dev/torpor/internal/identifiers"
	"github.com/torpor-dev/torpor/internal/store"
)

// ForgetUnknown stops every machine the store does not know and sets its
// directory aside in DATA_DIR/forgotten/: after the store was restored
// from an older backup (docs/reliability.md, "Recovering a damaged
// store"), machines created since then have a directory and maybe a
// running sandbox, but no record, no owner and no port claims. Their
// sandboxes are killed (nothing would supervise them, and their ports may
// now belong to others), their network let go; their files (snapshots,
// logs) stay for the operator. It returns the IDs it forgot.
func (m *Manager) ForgetUnknown(ctx context.Context) ([]string, error) {
	entries, err := os.ReadDir(filepath.Join(m.cfg.DataDir, "machines"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	known := map[string]bool{}
	err = m.store.View(func(tx *store.Tx) error {
		ms, err := tx.Machines("")
		for _, mc := range ms {
			known[mc.ID] = true
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	var forgot []string
	var errs []error
	for _, e := range entries {
		id := e.Name()
		if known[id] || !e.IsDir() || !identifiers.IsMachineID(id) {
			continue
		}
		if err := m.setAside(ctx, id); err != nil {
			errs = append(errs, fmt.Errorf("machine %s: %w", id, err))
			continue
		}
		forgot = append(forgot, id)
		m.log.Warn("stopped a machine the store does not know and set its files aside",
			"machine", id, "dir", filepath.Join(m.forgottenDir(), id))
	}
	return forgot, errors.Join(errs...)
}

func (m *Manager) forgottenDir() string { return filepath.Join(m.cfg.DataDir, "forgotten") }

func (m *Manager) setAside(ctx context.Context, id string) error {
	if err := m.rt.Kill(ctx, sandboxID(id)); err != nil {
		return err
	}
	if m.cfg.GuestAPI != nil {
		m.cfg.GuestAPI.Close(id)
		os.RemoveAll(m.guestAPIDir(id))
	}
	if m.cfg.Network != nil {
		if err := m.cfg.Network.Detach(ctx, id); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(m.forgottenDir(), 0o700); err != nil {
		return err
	}
	dst := filepath.Join(m.forgottenDir(), id)
	if _, err := os.Stat(dst); err == nil {
		dst += "-" + time.Now().UTC().Format("20060102T150405Z")
	}
	return os.Rename(m.machineDir(id), dst)
}
