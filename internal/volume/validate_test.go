package volume

import (
	"strings"
	"testing"

	"github.com/torpor-dev/torpor/internal/model"
)

func TestCheckCreateNamesTheField(t *testing.T) {
	m := &Manager{cfg: Config{MaxSizeGB: DefaultMaxSizeGB}}
	n := func(v int) *int { return &v }
	cases := []struct {
		req  model.CreateVolumeRequest
		want string
	}{
		{model.CreateVolumeRequest{Name: "data"}, ""},
		{model.CreateVolumeRequest{Name: "pg_data_1", SizeGB: n(500), FSType: "ext4", SnapshotRetention: n(60)}, ""},
		{model.CreateVolumeRequest{}, "name"},
		{model.CreateVolumeRequest{Name: "Data"}, "name"},
		{model.CreateVolumeRequest{Name: "my-data"}, "name"},
		{model.CreateVolumeRequest{Name: strings.Repeat("a", 31)}, "name"},
		{model.CreateVolumeRequest{Name: "d", SizeGB: n(0)}, "size_gb"},
		{model.CreateVolumeRequest{Name: "d", SizeGB: n(501)}, "size_gb"},
		{model.CreateVolumeRequest{Name: "d", SizeGB: n(-1)}, "size_gb"},
		{model.CreateVolumeRequest{Name: "d", FSType: "raw"}, "fstype"},
		{model.CreateVolumeRequest{Name: "d", FSType: "xfs"}, "fstype"},
		{model.CreateVolumeRequest{Name: "d", Region: "Not A Region"}, "region"},
		{model.CreateVolumeRequest{Name: "d", SnapshotRetention: n(0)}, "snapshot_retention"},
		{model.CreateVolumeRequest{Name: "d", SnapshotRetention: n(61)}, "snapshot_retention"},
		{model.CreateVolumeRequest{Name: "d", SnapshotID: "vs_1"}, "snapshot_id"},
		{model.CreateVolumeRequest{Name: "d", SourceVolumeID: "../x"}, "source_volume_id"},
		{model.CreateVolumeRequest{Name: "d", ComputeImage: "a\x00b"}, "compute_image"},
		{model.CreateVolumeRequest{Name: "d", HostDedicationID: "\n"}, "host_dedication_id"},
		{model.CreateVolumeRequest{Name: "d", Compute: &model.Guest{CPUs: -1}}, "compute"},
	}
	for _, c := range cases {
		err := m.checkCreate(&c.req)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%+v: %v", c.req, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want) || model.KindOf(err) != model.KindInvalid):
			t.Errorf("%+v: error %v, want a KindInvalid one naming %q", c.req, err, c.want)
		}
	}
	if err := checkUpdate(&model.UpdateVolumeRequest{SnapshotRetention: n(0)}); err == nil || !strings.HasPrefix(err.Error(), "snapshot_retention") {
		t.Errorf("update with snapshot_retention 0: %v", err)
	}
}

func TestCheckMountsNamesTheField(t *testing.T) {
	const id, id2 = "vol_0123456789abcdef", "vol_fedcba9876543210"
	cases := []struct {
		mounts []model.Mount
		want   string
	}{
		{[]model.Mount{{Volume: id, Path: "/data"}}, ""},
		{[]model.Mount{{Volume: id, Path: "/data", Name: "data"}, {Volume: id2, Path: "/var/lib/pg"}}, ""},
		{[]model.Mount{{Path: "/data"}}, "config.mounts[0].volume is required"},
		{[]model.Mount{{Volume: "data", Path: "/data"}}, "config.mounts[0].volume"},
		{[]model.Mount{{Volume: id}}, "config.mounts[0].path is required"},
		{[]model.Mount{{Volume: id, Path: "data"}}, "config.mounts[0].path"},
		{[]model.Mount{{Volume: id, Path: "/"}}, "config.mounts[0].path"},
		{[]model.Mount{{Volume: id, Path: "/data/"}}, "config.mounts[0].path"},
		{[]model.Mount{{Volume: id, Path: "/a/../b"}}, "config.mounts[0].path"},
		{[]model.Mount{{Volume: id, Path: "/proc/x"}}, "config.mounts[0].path"},
		{[]model.Mount{{Volume: id, Path: "/etc"}}, "config.mounts[0].path"},
		{[]model.Mount{{Volume: id, Path: "/.fly"}}, "config.mounts[0].path"},
		{[]model.Mount{{Volume: id, Path: "/d\x00"}}, "config.mounts[0].path"},
		{[]model.Mount{{Volume: id, Path: "/data", Name: "Bad"}}, "config.mounts[0].name"},
		{[]model.Mount{{Volume: id, Path: "/data", ExtendThresholdPercent: 80}}, "config.mounts[0]: automatic extension"},
		{[]model.Mount{{Volume: id, Path: "/data"}, {Volume: id, Path: "/other"}}, "config.mounts[1].volume"},
		{[]model.Mount{{Volume: id, Path: "/data"}, {Volume: id2, Path: "/data/sub"}}, "config.mounts[1].path"},
		{make([]model.Mount, maxMounts+1), "config.mounts: at most"},
	}
	for _, c := range cases {
		err := CheckMounts(c.mounts)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%+v: %v", c.mounts, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want) || model.KindOf(err) != model.KindInvalid):
			t.Errorf("%+v: error %v, want a KindInvalid one naming %q", c.mounts, err, c.want)
		}
	}
}
