package store

import (
	"encoding/json"
	"fmt"

	"github.com/torpor-dev/torpor/internal/model"
)

// CreateApp stores a new app; it fails with KindConflict if the name is taken.
func (t *Tx) CreateApp(app model.App) error {
	b := t.tx.Bucket(bucketApps)
	if b.Get([]byte(app.Name)) != nil {
		return &model.Error{Kind: model.KindConflict, Msg: fmt.Sprintf("app %q already exists", app.Name), Err: model.ErrNameTaken}
	}
	return put(b, []byte(app.Name), app)
}

// App returns the named app or a KindNotFound error.
func (t *Tx) App(name string) (model.App, error) {
	var app model.App
	ok, err := get(t.tx.Bucket(bucketApps), []byte(name), &app)
	if err == nil && !ok {
		err = model.Errorf(model.KindNotFound, "app %q not found", name)
	}
	return app, err
}

// Apps lists every app, ordered by name.
func (t *Tx) Apps() ([]model.App, error) {
	var apps []model.App
	err := t.tx.Bucket(bucketApps).ForEach(func(_, v []byte) error {
		var app model.App
		if err := unmarshal(v, &app); err != nil {
			return err
		}
		apps = append(apps, app)
		return nil
	})
	return apps, err
}

// DeleteApp removes an app record.
func (t *Tx) DeleteApp(name string) error {
	return t.tx.Bucket(bucketApps).Delete([]byte(name))
}

// PutMachine stores the machine record (its Events, Checks and the other
// fields that only answers carry are not stored). A destroyed machine's
// history is trimmed, and the app's oldest destroyed machines beyond
// MaxDestroyedPerApp deleted (limits.go).
func (t *Tx) PutMachine(m model.Machine) error {
	m.Events, m.Checks, m.Nonce, m.Lease, m.Warnings = nil, nil, "", nil, nil
	if err := put(t.tx.Bucket(bucketMachines), []byte(m.ID), m); err != nil {
		return err
	}
	if m.State == model.StateDestroyed {
		return t.pruneDestroyed(m)
	}
	return nil
}

// Machine returns the machine with this ID or a KindNotFound error.
func (t *Tx) Machine(id string) (model.Machine, error) {
	var m model.Machine
	ok, err := get(t.tx.Bucket(bucketMachines), []byte(id), &m)
	if err == nil && !ok {
		err = model.Errorf(model.KindNotFound, "machine %q not found", id)
	}
	return m, err
}

// Machines lists the machines of app ("" for every app), ordered by ID.
func (t *Tx) Machines(app string) ([]model.Machine, error) {
	var ms []model.Machine
	err := t.tx.Bucket(bucketMachines).ForEach(func(_, v []byte) error {
		var m model.Machine
		if err := unmarshal(v, &m); err != nil {
			return err
		}
		if app == "" || m.App == app {
			ms = append(ms, m)
		}
		return nil
	})
	return ms, err
}

// DeleteMachine removes a machine with its configs, events, snapshot record and lease.
func (t *Tx) DeleteMachine(id string) error {
	key := []byte(id)
	for _, name := range [][]byte{bucketConfigs, bucketEvents} {
		if t.tx.Bucket(name).Bucket(key) != nil {
			if err := t.tx.Bucket(name).DeleteBucket(key); err != nil {
				return err
			}
		}
	}
	if err := t.tx.Bucket(bucketSnapshots).Delete(key); err != nil {
		return err
	}
	if err := t.tx.Bucket(bucketLeases).Delete(key); err != nil {
		return err
	}
	return t.tx.Bucket(bucketMachines).Delete(key)
}

// PutConfig records a config version of a machine with the image it
// pinned (the digest that every start of this version runs). The machine
// keeps its newest MaxConfigVersions versions.
func (t *Tx) PutConfig(machineID, version string, cfg model.MachineConfig, image model.ImageRef) error {
	b, err := t.tx.Bucket(bucketConfigs).CreateBucketIfNotExists([]byte(machineID))
	if err != nil {
		return err
	}
	if err := put(b, []byte(version), configRecord{MachineConfig: cfg, Image: image}); err != nil {
		return err
	}
	return pruneConfigs(b, []byte(version), MaxConfigVersions)
}

// configRecord is a stored config version: the config as given, and the
// image it resolved to (older records have none).
type configRecord struct {
	model.MachineConfig
	Image model.ImageRef `json:"torpor_image_ref,omitzero"`
}

// Configs returns every recorded config version of a machine, by version.
func (t *Tx) Configs(machineID string) (map[string]model.MachineConfig, error) {
	out := map[string]model.MachineConfig{}
	b := t.tx.Bucket(bucketConfigs).Bucket([]byte(machineID))
	if b == nil {
		return out, nil
	}
	err := b.ForEach(func(k, v []byte) error {
		var cfg model.MachineConfig
		if err := unmarshal(v, &cfg); err != nil {
			return err
		}
		out[string(k)] = cfg
		return nil
	})
	return out, err
}

// AppendEvent adds an event to a machine's history, keeping at most
// maxEvents; it fills in ev.ID when empty.
func (t *Tx) AppendEvent(machineID string, ev model.Event) (model.Event, error) {
	b, err := t.tx.Bucket(bucketEvents).CreateBucketIfNotExists([]byte(machineID))
	if err != nil {
		return ev, err
	}
	seq, err := b.NextSequence()
	if err != nil {
		return ev, err
	}
	if ev.ID == "" {
		ev.ID = eventID(machineID, seq)
	}
	if err := put(b, seqKey(seq), ev); err != nil {
		return ev, err
	}
	if seq > maxEvents {
		// Keys are consecutive sequence numbers: dropping the one maxEvents
		// behind keeps the history bounded.
		if err := b.Delete(seqKey(seq - maxEvents)); err != nil {
			return ev, err
		}
	}
	return ev, nil
}

// maxEvents bounds each machine's stored history.
const maxEvents = 500

func eventID(machineID string, seq uint64) string {
	return fmt.Sprintf("%s-%d", machineID, seq)
}

// Events returns a machine's events, newest first, at most limit (0: all).
func (t *Tx) Events(machineID string, limit int) ([]model.Event, error) {
	var evs []model.Event
	b := t.tx.Bucket(bucketEvents).Bucket([]byte(machineID))
	if b == nil {
		return evs, nil
	}
	c := b.Cursor()
	for k, v := c.Last(); k != nil && (limit <= 0 || len(evs) < limit); k, v = c.Prev() {
		var ev model.Event
		if err := unmarshal(v, &ev); err != nil {
			return nil, err
		}
		evs = append(evs, ev)
	}
	return evs, nil
}

// PutSnapshot stores the machine's current snapshot record.
func (t *Tx) PutSnapshot(s model.Snapshot) error {
	return put(t.tx.Bucket(bucketSnapshots), []byte(s.MachineID), s)
}

// Snapshot returns the machine's current snapshot record, if any.
func (t *Tx) Snapshot(machineID string) (model.Snapshot, bool, error) {
	var s model.Snapshot
	ok, err := get(t.tx.Bucket(bucketSnapshots), []byte(machineID), &s)
	return s, ok, err
}

// DeleteSnapshot forgets the machine's snapshot record.
func (t *Tx) DeleteSnapshot(machineID string) error {
	return t.tx.Bucket(bucketSnapshots).Delete([]byte(machineID))
}

func unmarshal(data []byte, v any) error { return json.Unmarshal(data, v) }

// PutPortClaim records which app owns a host port.
func (t *Tx) PutPortClaim(c model.PortClaim) error {
	return put(t.tx.Bucket(bucketPorts), portKey(c.Port), c)
}

// PortClaim returns the claim on a host port, if any.
func (t *Tx) PortClaim(port int) (model.PortClaim, bool, error) {
	var c model.PortClaim
	ok, err := get(t.tx.Bucket(bucketPorts), portKey(port), &c)
	return c, ok, err
}

// PortClaims returns every claim, by port.
func (t *Tx) PortClaims() ([]model.PortClaim, error) {
	var out []model.PortClaim
	err := t.tx.Bucket(bucketPorts).ForEach(func(_, v []byte) error {
		var c model.PortClaim
		if err := unmarshal(v, &c); err != nil {
			return err
		}
		out = append(out, c)
		return nil
	})
	return out, err
}

// DeletePortClaim frees a host port.
func (t *Tx) DeletePortClaim(port int) error {
	return t.tx.Bucket(bucketPorts).Delete(portKey(port))
}

// portKey orders claims by port number.
func portKey(port int) []byte { return seqKey(uint64(port)) }
