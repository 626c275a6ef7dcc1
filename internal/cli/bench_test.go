package cli_test

import (
	"bytes"
	"strings"
	"testing"

	"github.com/torpor-dev/torpor/internal/cli"
)

// TestBenchRejectsBadFlags checks that bad flags fail before the benchmark
// starts a daemon, with a message naming the flag.
func TestBenchRejectsBadFlags(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--init", "medium"}, `--init: unknown init cost "medium"`},
		{[]string{"--runs", "0"}, "--runs must be at least 1"},
		{[]string{"--heavy-init", "0s"}, "--heavy-init must be at least 100ms"},
		{[]string{"--memory", "16"}, "--memory sizes must be at least 32 MiB"},
		{[]string{"--poll-interval", "0s"}, "--poll-interval must be positive"},
	} {
		root := cli.NewRoot(nil)
		var out bytes.Buffer
		root.SetOut(&out)
		root.SetErr(&out)
		root.SetArgs(append([]string{"bench", "--out", t.TempDir(), "--runsc", "/nonexistent/runsc"}, c.args...))
		err := root.Execute()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("bench %v: error %v, want %q", c.args, err, c.want)
		}
	}
}
