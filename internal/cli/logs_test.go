package cli_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestMachineLogsPagesThroughEverything(t *testing.T) {
	e := newEnv(t)
	e.fake.SetLogDir(t.TempDir())
	m := e.createMachine()
	lg, err := e.fake.Logs(context.Background(), "web", m.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer lg.Close()
	const n = 2500 // more than one page
	for i := 1; i <= n; i++ {
		lg.Append([]byte(fmt.Sprintf("line %d", i)), time.Now())
	}
	out := e.ok("machine", "logs", "--app", "web", m.ID)
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != n || lines[0] != "line 1" || lines[n-1] != fmt.Sprintf("line %d", n) {
		t.Fatalf("got %d lines, first %q last %q", len(lines), lines[0], lines[len(lines)-1])
	}
	out = e.ok("machine", "logs", "--app", "web", "--from-seq", "2499", "--json", m.ID)
	if !strings.Contains(out, `"seq":2499`) || !strings.Contains(out, `"message":"line 2500"`) {
		t.Fatalf("json output = %s", out)
	}
	e.fails("machine", "logs", "--app", "web", "--since", "yesterday", m.ID)
}
