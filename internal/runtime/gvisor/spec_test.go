package gvisor

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/torpor-dev/torpor/internal/runtime"
)

func testSpec(t *testing.T) runtime.Spec {
	return runtime.Spec{
		ID:       "m-123",
		Bundle:   filepath.Join(t.TempDir(), "bundle"),
		RootFS:   "/var/lib/rootfs/app",
		Args:     []string{"/usr/bin/python3", "app.py"},
		Env:      []string{"FOO=bar"},
		Cwd:      "/srv",
		Hostname: "web-1",
		CPUs:     2,
		MemoryMB: 512,
		Console:  "/run/torpor/m-123.console",
	}
}

// readConfig writes spec's config.json and decodes it back.
func readConfig(t *testing.T, spec runtime.Spec) specs.Spec {
	t.Helper()
	if err := writeConfig(spec); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(spec.Bundle, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	var got specs.Spec
	if err := json.Unmarshal(data, &got); err != nil {
		t.Fatalf("config.json is not valid: %v\n%s", err, data)
	}
	return got
}

func TestConfigProcessAndRoot(t *testing.T) {
	spec := testSpec(t)
	got := readConfig(t, spec)

	if got.Version != specs.Version {
		t.Errorf("ociVersion = %q, want %q", got.Version, specs.Version)
	}
	if got.Root == nil || got.Root.Path != spec.RootFS {
		t.Fatalf("root = %+v, want path %s", got.Root, spec.RootFS)
	}
	// Read-only roots disable gVisor's overlay; the overlay flag keeps the
	// host directory read-only instead.
	if got.Root.Readonly {
		t.Error("root.readonly = true, want false (the memory overlay protects the host dir)")
	}
	p := got.Process
	if p == nil {
		t.Fatal("no process")
	}
	if !reflect.DeepEqual(p.Args, spec.Args) {
		t.Errorf("args = %q, want %q", p.Args, spec.Args)
	}
	if p.Cwd != "/srv" || p.Terminal || p.User.UID != 0 {
		t.Errorf("process = cwd %q terminal %v uid %d", p.Cwd, p.Terminal, p.User.UID)
	}
	if !reflect.DeepEqual(p.Env, []string{"FOO=bar", defaultPath}) {
		t.Errorf("env = %q, want FOO=bar plus a default PATH", p.Env)
	}
	if got.Hostname != "web-1" {
		t.Errorf("hostname = %q", got.Hostname)
	}
}

func TestConfigDefaults(t *testing.T) {
	spec := testSpec(t)
	spec.Cwd, spec.Hostname, spec.CPUs, spec.MemoryMB = "", "", 0, 0
	spec.Env = []string{"PATH=/bin"}
	got := readConfig(t, spec)
	if got.Process.Cwd != "/" {
		t.Errorf("cwd = %q, want /", got.Process.Cwd)
	}
	if got.Hostname != spec.ID {
		t.Errorf("hostname = %q, want the ID", got.Hostname)
	}
	if !reflect.DeepEqual(got.Process.Env, []string{"PATH=/bin"}) {
		t.Errorf("env = %q: the spec's PATH must be kept", got.Process.Env)
	}
	if r := got.Linux.Resources; r == nil || r.Memory != nil || r.CPU != nil {
		t.Errorf("resources = %+v, want no limits", r)
	}
}

func TestConfigResources(t *testing.T) {
	got := readConfig(t, testSpec(t))
	res := got.Linux.Resources
	if res == nil || res.Memory == nil || res.Memory.Limit == nil || *res.Memory.Limit != 512<<20 {
		t.Fatalf("memory = %+v, want limit 512 MiB", res)
	}
	if res.CPU == nil || res.CPU.Quota == nil || res.CPU.Period == nil ||
		*res.CPU.Quota != 2*cpuPeriodUS || *res.CPU.Period != cpuPeriodUS {
		t.Fatalf("cpu = %+v, want 2 CPUs of quota", res.CPU)
	}
	if got.Linux.CgroupsPath != "/torpor/m-123" {
		t.Errorf("cgroupsPath = %q", got.Linux.CgroupsPath)
	}
}

func TestConfigNetworkNamespace(t *testing.T) {
	for _, netns := range []string{"", "/run/netns/torpor-m-123"} {
		spec := testSpec(t)
		spec.NetNS = netns
		got := readConfig(t, spec)
		var found bool
		for _, ns := range got.Linux.Namespaces {
			if ns.Type == specs.NetworkNamespace {
				found = true
				if ns.Path != netns {
					t.Errorf("netns %q: network namespace path = %q", netns, ns.Path)
				}
			}
		}
		if !found {
			t.Errorf("netns %q: no network namespace in config.json (the sandbox would share the host's)", netns)
		}
	}
	if networkFlag("") != "--network=none" || networkFlag("/run/netns/x") != "--network=sandbox" {
		t.Errorf("networkFlag: %q, %q", networkFlag(""), networkFlag("/run/netns/x"))
	}
}

func TestConfigDeterministic(t *testing.T) {
	spec := testSpec(t)
	a, _ := json.Marshal(ociSpec(spec))
	b, _ := json.Marshal(ociSpec(spec))
	if string(a) != string(b) {
		t.Error("ociSpec is not deterministic: restore would present another spec than boot")
	}
}

func TestValidateSpec(t *testing.T) {
	bad := map[string]func(*runtime.Spec){
		"empty id":         func(s *runtime.Spec) { s.ID = "" },
		"id with slash":    func(s *runtime.Spec) { s.ID = "a/b" },
		"relative bundle":  func(s *runtime.Spec) { s.Bundle = "bundle" },
		"relative rootfs":  func(s *runtime.Spec) { s.RootFS = "rootfs" },
		"no args":          func(s *runtime.Spec) { s.Args = nil },
		"relative netns":   func(s *runtime.Spec) { s.NetNS = "netns" },
		"negative memory":  func(s *runtime.Spec) { s.MemoryMB = -1 },
		"negative cpu cnt": func(s *runtime.Spec) { s.CPUs = -1 },
	}
	for name, mutate := range bad {
		spec := testSpec(t)
		mutate(&spec)
		if err := validateSpec(spec); err == nil {
			t.Errorf("%s: validateSpec accepted it", name)
		}
	}
	if err := validateSpec(testSpec(t)); err != nil {
		t.Errorf("valid spec rejected: %v", err)
	}
}

func TestExitStatus(t *testing.T) {
	cases := map[int]runtime.ExitStatus{
		0:   {Code: 0},
		3:   {Code: 3},
		137: {Code: 137, Signal: "SIGKILL"},
		143: {Code: 143, Signal: "SIGTERM"},
	}
	for in, want := range cases {
		if got := exitStatus(in); got != want {
			t.Errorf("exitStatus(%d) = %+v, want %+v", in, got, want)
		}
	}
}

func TestErrorNamesSubcommand(t *testing.T) {
	err := &Error{Subcommand: "restore", Args: []string{"m-1"}, Err: os.ErrNotExist, Detail: "boom"}
	if msg := err.Error(); !strings.Contains(msg, "runsc restore m-1") || !strings.Contains(msg, "boom") {
		t.Errorf("error = %q", msg)
	}
	if !isNotExist(&Error{Subcommand: "state", Err: os.ErrNotExist, Detail: "loading container: file does not exist"}) {
		t.Error("isNotExist does not recognize runsc's message")
	}
}

func TestLogTail(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	var b strings.Builder
	for i := 0; i < 500; i++ {
		b.WriteString("line ")
		b.WriteString(strings.Repeat("x", i%7))
		b.WriteString("\n")
	}
	b.WriteString("the end\n")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	got := logTail(path)
	if !strings.HasSuffix(got, "the end") || strings.Count(got, "\n") > 14 || len(got) > 2048 {
		t.Errorf("logTail = %q", got)
	}
	if logTail(filepath.Join(t.TempDir(), "missing")) != "" {
		t.Error("logTail of a missing file is not empty")
	}
}

func TestCgroupCounter(t *testing.T) {
	v1 := []byte("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")
	v2 := []byte("low 0\nhigh 0\nmax 5\noom 1\noom_kill 1\noom_group_kill 0\n")
	for _, c := range []struct {
		data []byte
		want int64
	}{{v1, 2}, {v2, 1}} {
		if n, ok := counter(c.data, "oom_kill"); !ok || n != c.want {
			t.Errorf("oom_kill in %q = %d %v, want %d", c.data, n, ok, c.want)
		}
	}
	if _, ok := counter([]byte("oom_kill_disable 0\n"), "oom_kill"); ok {
		t.Error("oom_kill_disable read as oom_kill")
	}
}
