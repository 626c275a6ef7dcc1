package api_test

import (
	"os"
	"strings"
	"testing"

	"github.com/torpor-dev/torpor/internal/model"
)

// flyNameRow is the row of docs/api.md that documents n.
func flyNameRow(n model.FlyName) string {
	name := "`" + n.Path + "`"
	switch n.Scope {
	case "app":
		name += " (app create)"
	case "exec":
		name += " (exec)"
	}
	reason := n.Reason
	if n.Quiet {
		reason += " (no warning)"
	}
	return "| " + name + " | " + reason + " |"
}

// TestDocsListFlyNames keeps docs/api.md's table of the names torpor
// accepts without acting on them in step with model.FlyNames.
func TestDocsListFlyNames(t *testing.T) {
	doc, err := os.ReadFile("../../docs/api.md")
	if err != nil {
		t.Fatal(err)
	}
	var rows []string
	for _, n := range model.FlyNames() {
		rows = append(rows, flyNameRow(n))
		if !strings.Contains(string(doc), flyNameRow(n)+"\n") {
			t.Errorf("docs/api.md lacks the row %s", flyNameRow(n))
		}
	}
	if t.Failed() {
		t.Logf("the table:\n%s", strings.Join(rows, "\n"))
	}
}
