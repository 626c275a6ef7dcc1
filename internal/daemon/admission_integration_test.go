package daemon_test

import (
	"testing"

	"github.com/torpor-dev/torpor/internal/model"
)

// TestSizesAndAdmissionThroughTheAPI is issue 17's F5 (sizes) on the real
// daemon: a config asking for more than the host gives machines is refused
// at submit with a 422 naming the field and the limit, and a start the
// host cannot hold beside the running machines is refused with a 409 that
// says why and leaves the machine as it was. Before the fix `memory_mb:
// 65536, cpus: 64` was accepted on a 23 GiB, 2-CPU host.
func TestSizesAndAdmissionThroughTheAPI(t *testing.T) {
	d := newParallelDaemon(t, "--host-memory-mb", "1024", "--host-cpus", "2")
	huge := counterConfig(nil)
	huge.Guest = model.Guest{CPUs: 64, MemoryMB: 65536}
	_, err := d.c.CreateMachine(ctx(t), d.app, model.CreateMachineRequest{Config: huge})
	wantAPIError(t, "create with cpus 64", err, 422, "config.guest.cpus is 64, more than this host's 2 CPUs")
	huge.Guest.CPUs = 1
	_, err = d.c.CreateMachine(ctx(t), d.app, model.CreateMachineRequest{Config: huge})
	wantAPIError(t, "create with memory_mb 65536", err, 422, "config.guest.memory_mb is 65536, more than this host can give machines: 1024 MB")

	a := d.create(counterConfig(nil)) // 512 MB each
	b := d.create(counterConfig(nil))
	third, err := d.c.CreateMachine(ctx(t), d.app, model.CreateMachineRequest{Config: counterConfig(nil)})
	wantAPIError(t, "a third 512 MB machine on 1024 MB", err, 409, "the host has 0 of its 1024 MB for machines free")
	ms, err := d.c.ListMachines(ctx(t), d.app)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if m.ID != a.ID && m.ID != b.ID {
			third = m
		}
	}
	d.wantState(third.ID, model.StateCreated)
	// A suspended machine gives its memory back; its resume then waits for room.
	d.suspend(a.ID)
	d.start(third.ID)
	_, err = d.c.Start(ctx(t), d.app, a.ID)
	wantAPIError(t, "resume past the host's memory", err, 409, "cannot start now")
	d.wantState(a.ID, model.StateSuspended)
	if err := d.c.Stop(ctx(t), d.app, b.ID, model.StopRequest{}); err != nil {
		t.Fatal(err)
	}
	if resp := d.start(a.ID); !resp.FromSnapshot {
		t.Fatalf("resume once there was room: %+v, want from the snapshot", resp)
	}
	d.httpGet(d.get(a.ID))
}
