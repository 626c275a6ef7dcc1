package shellwords

import (
	"strings"
	"testing"
)

func TestSplit(t *testing.T) {
	for in, want := range map[string]string{
		`a b  c`:               "a|b|c",
		`sh -c 'echo "hi" x'`:  `sh|-c|echo "hi" x`,
		`say "a \"b\" c" d\ e`: `say|a "b" c|d e`,
		`''`:                   "",
		`"$x \$y"`:             `$x $y`,
	} {
		got, err := Split(in)
		if err != nil || strings.Join(got, "|") != want {
			t.Errorf("Split(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{`'open`, `"open`, `end\`} {
		if _, err := Split(in); err == nil {
			t.Errorf("Split(%q) accepted", in)
		}
	}
}
