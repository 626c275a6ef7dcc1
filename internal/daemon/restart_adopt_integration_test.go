package daemon_test

import (
	"encoding/json"
	"testing"

	"github.com/torpor-dev/torpor/internal/model"
)

// TestRestartRightAfterStartAdoptsTheMachine restarts the daemon cleanly
// right after each of a few machine starts: every machine must be adopted,
// started. Under load (8 busy loops on this 2-core host) 2 of 3 runs
// stopped a machine with "its network could not be adopted: veth pair ...
// is broken", one side of the pair not found: the daemon had taken the
// gofers' empty network namespace for the host's (fixed in pinNullNetns),
// so it looked for the host side of the pair in the wrong namespace.
func TestRestartRightAfterStartAdoptsTheMachine(t *testing.T) {
	d := newDaemon(t)
	for i := range 3 {
		m := d.create(counterConfig(nil))
		d.stop()
		d.run()
		if st := d.get(m.ID).State; st != model.StateStarted {
			evs, _ := d.c.Events(ctx(t), d.app, m.ID)
			b, _ := json.MarshalIndent(evs, "", " ")
			t.Fatalf("round %d: %s after a clean restart; events %s", i, st, b)
		}
		d.httpGet(d.get(m.ID))
	}
}
