package store

import (
	"sort"

	"github.com/torpor-dev/torpor/internal/model"
)

// PutVolume stores a volume record (its usage fields are not stored: they
// are read from the filesystem when the volume is served).
func (t *Tx) PutVolume(v model.Volume) error {
	v.BlockSize, v.Blocks, v.BlocksFree, v.BlocksAvail = 0, 0, 0, 0
	return put(t.tx.Bucket(bucketVolumes), []byte(v.ID), v)
}

// Volume returns the volume with this ID or a KindNotFound error.
func (t *Tx) Volume(id string) (model.Volume, error) {
	var v model.Volume
	ok, err := get(t.tx.Bucket(bucketVolumes), []byte(id), &v)
	if err == nil && !ok {
		err = model.Errorf(model.KindNotFound, "volume %q not found", id)
	}
	return v, err
}

// Volumes lists the volumes of app ("" for every app), ordered by creation
// time, then ID.
func (t *Tx) Volumes(app string) ([]model.Volume, error) {
	var vs []model.Volume
	err := t.tx.Bucket(bucketVolumes).ForEach(func(_, data []byte) error {
		var v model.Volume
		if err := unmarshal(data, &v); err != nil {
			return err
		}
		if app == "" || v.App == app {
			vs = append(vs, v)
		}
		return nil
	})
	sort.SliceStable(vs, func(i, j int) bool {
		if !vs[i].CreatedAt.Equal(vs[j].CreatedAt) {
			return vs[i].CreatedAt.Before(vs[j].CreatedAt)
		}
		return vs[i].ID < vs[j].ID
	})
	return vs, err
}

// DeleteVolume removes a volume record.
func (t *Tx) DeleteVolume(id string) error {
	return t.tx.Bucket(bucketVolumes).Delete([]byte(id))
}
