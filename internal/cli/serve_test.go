package cli_test

import (
	"testing"

	"github.com/torpor-dev/torpor/internal/cli"
)

func TestParseMiB(t *testing.T) {
	for in, want := range map[string]int{"0": 0, "256": 256, "256MiB": 256, "256mb": 256, "1GiB": 1024, "2G": 2048, " 64 MiB ": 64, "1024KiB": 1} {
		got, err := cli.ParseMiB(in)
		if err != nil || got != want {
			t.Errorf("ParseMiB(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "-1", "lots", "1.5GiB", "100KiB", "256TiB"} {
		if got, err := cli.ParseMiB(in); err == nil {
			t.Errorf("ParseMiB(%q) = %d, want an error", in, got)
		}
	}
}
