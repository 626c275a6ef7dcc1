package gvisor

import (
	"os"
	"path/filepath"
	"testing"
)

func TestEnableShmemHugePages(t *testing.T) {
	for _, tc := range []struct{ in, before, after string }{
		{"always within_size advise [never] deny force", "never", "advise"},
		{"always within_size [advise] never deny force", "advise", "advise"},
		{"always within_size advise never [deny] force", "deny", "deny"},
		{"[always] within_size advise never deny force", "always", "always"},
	} {
		path := filepath.Join(t.TempDir(), "shmem_enabled")
		if err := os.WriteFile(path, []byte(tc.in+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		// A regular file takes the word written as its content, where
		// sysfs moves the brackets: make it look like sysfs afterwards.
		before, _, err := EnableShmemHugePages(path)
		if err != nil && before != "never" {
			t.Fatalf("%q: %v", tc.in, err)
		}
		if before != tc.before {
			t.Errorf("%q: before %q, want %q", tc.in, before, tc.before)
		}
		got, _ := os.ReadFile(path)
		if wrote := tc.before == "never"; wrote != (string(got) == "advise") {
			t.Errorf("%q: file now %q", tc.in, got)
		}
		if HugePagesGranted(tc.after) != (tc.after != "deny") {
			t.Errorf("HugePagesGranted(%q)", tc.after)
		}
	}
	if _, err := ShmemHugePages(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("no error for a missing file")
	}
}

// TestEnableShmemHugePagesOnTheHost sets the real policy (root): from
// "never" to "advise", as the daemon does at start, then back.
func TestEnableShmemHugePagesOnTheHost(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	orig, err := ShmemHugePages(ShmemEnabledPath)
	if err != nil {
		t.Skip(err)
	}
	defer os.WriteFile(ShmemEnabledPath, []byte(orig), 0o644)
	if err := os.WriteFile(ShmemEnabledPath, []byte("never"), 0o644); err != nil {
		t.Fatal(err)
	}
	before, after, err := EnableShmemHugePages(ShmemEnabledPath)
	if err != nil || before != "never" || after != "advise" {
		t.Fatalf("EnableShmemHugePages: %q → %q, %v", before, after, err)
	}
}
