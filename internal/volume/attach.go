package volume

import (
	"fmt"
	"slices"

	"github.com/torpor-dev/torpor/internal/model"
	"github.com/torpor-dev/torpor/internal/store"
)

// Attach makes machine machineID of app the holder of the volumes its
// config's mounts name, and releases the volumes it held that they no
// longer name. It runs inside the store transaction that commits the
// machine's config, so that the config and the attachments change
// together or not at all. A volume another machine holds is a
// KindConflict error naming the volume and the machine. The mounts'
// name, size_gb and encrypted are filled in from their volumes.
func Attach(tx *store.Tx, app, machineID string, mounts []model.Mount) error {
	return attach(tx, app, machineID, mounts, true)
}

// CanAttach reports, as Attach would, why machine machineID could not take
// the volumes mounts name, without taking them: an update checks it before
// it stops the machine, so that a refused update leaves the machine as it
// was.
func CanAttach(tx *store.Tx, app, machineID string, mounts []model.Mount) error {
	return attach(tx, app, machineID, append([]model.Mount(nil), mounts...), false)
}

func attach(tx *store.Tx, app, machineID string, mounts []model.Mount, write bool) error {
	vs, err := tx.Volumes(app)
	if err != nil {
		return err
	}
	want := make([]string, len(mounts))
	for i := range mounts {
		mt := &mounts[i]
		want[i] = mt.Volume
		field := fmt.Sprintf("config.mounts[%d].volume", i)
		k := slices.IndexFunc(vs, func(v model.Volume) bool { return v.ID == mt.Volume })
		if k < 0 {
			return invalid("%s: volume %s not found in app %q (create it with POST /v1/apps/%s/volumes)", field, mt.Volume, app, app)
		}
		v := vs[k]
		switch {
		case v.State != model.VolumeCreated && v.State != model.VolumeExtending:
			return model.Errorf(model.KindConflict, "%s: volume %s is %s", field, v.ID, v.State)
		case v.Attached() && *v.AttachedMachineID != machineID:
			return model.Errorf(model.KindConflict, "%s: volume %s (%s) is already attached to machine %s; a volume is attached to one machine at a time",
				field, v.ID, v.Name, *v.AttachedMachineID)
		case mt.Name != "" && mt.Name != v.Name:
			return invalid("config.mounts[%d].name %q does not match the name of volume %s (%q)", i, mt.Name, v.ID, v.Name)
		}
		mt.Name, mt.SizeGB, mt.Encrypted = v.Name, v.SizeGB, v.Encrypted
		if write && !v.Attached() {
			id := machineID
			v.AttachedMachineID = &id
			if err := tx.PutVolume(v); err != nil {
				return err
			}
		}
	}
	for _, v := range vs {
		if write && v.Attached() && *v.AttachedMachineID == machineID && !slices.Contains(want, v.ID) {
			v.AttachedMachineID = nil
			if err := tx.PutVolume(v); err != nil {
				return err
			}
		}
	}
	return nil
}

// Detach releases every volume machine machineID of app holds (its data
// stays). It runs inside the transaction that commits the machine's
// destruction.
func Detach(tx *store.Tx, app, machineID string) error {
	return Attach(tx, app, machineID, nil)
}

// AttachedTo returns the IDs of app's volumes that machine machineID holds.
func AttachedTo(tx *store.Tx, app, machineID string) ([]string, error) {
	vs, err := tx.Volumes(app)
	var ids []string
	for _, v := range vs {
		if v.Attached() && *v.AttachedMachineID == machineID {
			ids = append(ids, v.ID)
		}
	}
	return ids, err
}

// HasVolumes returns a KindConflict error when app still has volumes (an
// app is deleted only once its volumes are destroyed).
func HasVolumes(tx *store.Tx, app string) error {
	vs, err := tx.Volumes(app)
	if err != nil || len(vs) == 0 {
		return err
	}
	return model.Errorf(model.KindConflict, "app %q still has volume %s (%s); destroy its volumes first", app, vs[0].ID, vs[0].Name)
}
