package cli

import (
	"bytes"
	"strings"
	"testing"

	"github.com/torpor-dev/torpor/internal/model"
)

// TestProgressPlainLines: off a terminal, a pull prints one line per step
// and per layer start and end, never the in-between updates or escapes.
func TestProgressPlainLines(t *testing.T) {
	var out bytes.Buffer
	p := newProgressPrinter(&out)
	for _, ev := range []model.PullProgress{
		{Phase: "resolve", Message: "resolving r"},
		{Phase: "layer", Layer: "sha256:0123456789abcdef0123", Index: 1, Layers: 2, Total: 2e6},
		{Phase: "layer", Layer: "sha256:0123456789abcdef0123", Index: 1, Layers: 2, Bytes: 1e6, Total: 2e6},
		{Phase: "layer", Layer: "sha256:0123456789abcdef0123", Index: 1, Layers: 2, Bytes: 2e6, Total: 2e6},
		{Phase: "layer", Layer: "sha256:fedcba", Index: 2, Layers: 2, Bytes: 5, Total: 5, Cached: true},
		{Phase: "unpack", Message: "unpacking 2 layers"},
		{Phase: "end"},
	} {
		p.show(ev)
	}
	p.finish()
	want := "resolving r\n" +
		"layer 1/2 sha256:0123456789ab [........................] 0 B / 2.0 MB\n" +
		"layer 1/2 sha256:0123456789ab [########################] 2.0 MB / 2.0 MB\n" +
		"layer 2/2 sha256:fedcba [########################] already here\n" +
		"unpacking 2 layers\n"
	if got := out.String(); got != want || strings.Contains(got, "\033") {
		t.Errorf("progress:\n%s\nwant:\n%s", got, want)
	}
}
