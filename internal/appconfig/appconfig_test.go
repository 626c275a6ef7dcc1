package appconfig

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/torpor-dev/torpor/internal/model"
)

const full = `app = "shop"
primary_region = "local"
kill_signal = "SIGINT"
kill_timeout = 5
swap_size_mb = 128

[build]
  image = "registry.local/shop:v2"

[env]
  PORT = 8080
  MODE = "prod"

[processes]
  web = "python3 -m http.server 8080"
  worker = ["python3", "worker.py", "--queue", "a b"]

[http_service]
  internal_port = 8080
  port = 18080
  auto_stop_machines = "suspend"
  auto_start_machines = true
  min_machines_running = 1
  processes = ["web"]
  [http_service.concurrency]
    type = "requests"
    soft_limit = 20
    hard_limit = 25
  [[http_service.checks]]
    interval = "10s"
    timeout = "2s"
    grace_period = 5
    method = "get"
    path = "/health"

[[services]]
  protocol = "tcp"
  internal_port = 9000
  processes = ["worker"]
  auto_stop_machines = false
  [[services.ports]]
    port = 19000
    handlers = ["http"]
  [[services.tcp_checks]]
    interval = "15s"

[checks.alive]
  type = "tcp"
  port = 8080
  processes = ["web"]

[checks.page]
  type = "http"
  port = 8080
  path = "/p"
  interval = "5s"
  processes = ["web"]
  [checks.page.headers]
    X-Probe = "1"

[[mounts]]
  source = "data"
  destination = "/data/"
  initial_size = "2gb"
  processes = ["worker"]

[[vm]]
  memory = "1gb"
  cpus = 2
  processes = ["worker"]

[[vm]]
  size = "shared-cpu-1x"
  memory = 512

[[restart]]
  policy = "never"

[deploy]
  strategy = "canary"
  max_unavailable = 2
  wait_timeout = "2m"

[hooks]
  resume_signal = "SIGUSR2"
  [hooks.pre_suspend]
    cmd = ["sync"]
    timeout = "5s"
`

func TestParseFull(t *testing.T) {
	a, warns, err := Parse([]byte(full))
	if err != nil {
		t.Fatal(err)
	}
	if len(warns) != 0 {
		t.Fatalf("warnings: %v", warns)
	}
	if a.Name != "shop" || a.Image != "registry.local/shop:v2" || a.Env["PORT"] != "8080" {
		t.Fatalf("app: %+v", a)
	}
	if got := a.Groups(); len(got) != 2 || got[0] != "web" || got[1] != "worker" {
		t.Fatalf("groups: %v", got)
	}
	if d := a.Deploy; d.Strategy != StrategyCanary || d.MaxUnavailable != 2 || d.WaitTimeout != 2*time.Minute {
		t.Fatalf("deploy: %+v", d)
	}
	web, err := a.MachineConfig("web")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(web.Init.Cmd, "|") != "python3|-m|http.server|8080" || web.Metadata[MetaProcessGroup] != "web" {
		t.Fatalf("web init/metadata: %+v %v", web.Init, web.Metadata)
	}
	if len(web.Services) != 1 || *web.Services[0].Ports[0].Port != 18080 || *web.Services[0].Autostop != model.AutostopSuspend ||
		*web.Services[0].MinMachinesRunning != 1 || web.Services[0].Concurrency.SoftLimit != 20 {
		t.Fatalf("web services: %+v", web.Services)
	}
	ck := web.Services[0].Checks[0]
	if ck.Type != "http" || ck.Method != "GET" || ck.Path != "/health" || ck.GracePeriod.Duration != 5*time.Second || ck.Interval.Duration != 10*time.Second {
		t.Fatalf("web check: %+v", ck)
	}
	if pg := web.Checks["page"]; pg.Path != "/p" || pg.Port != 8080 || pg.Interval.Duration != 5*time.Second || pg.Headers[0].Name != "X-Probe" {
		t.Fatalf("page check: %+v", pg)
	}
	if _, ok := web.Checks["alive"]; !ok || web.Size != "shared-cpu-1x" || web.Guest.MemoryMB != 512 {
		t.Fatalf("web checks/guest: %+v %q %+v", web.Checks, web.Size, web.Guest)
	}
	if !AutostopSuspend(web) || web.Restart.Policy != "no" || *web.StopConfig.Signal != "SIGINT" || web.StopConfig.Timeout.Duration != 5*time.Second {
		t.Fatalf("web restart/stop: %+v %+v", web.Restart, web.StopConfig)
	}
	if web.Hooks.PreSuspend.Timeout.Duration != 5*time.Second || web.SwapSizeMB != 128 {
		t.Fatalf("hooks/swap: %+v %d", web.Hooks, web.SwapSizeMB)
	}
	worker, _ := a.MachineConfig("worker")
	if strings.Join(worker.Init.Cmd, "|") != "python3|worker.py|--queue|a b" || worker.Guest.MemoryMB != 1024 || worker.Guest.CPUs != 2 {
		t.Fatalf("worker: %+v %+v", worker.Init, worker.Guest)
	}
	if len(worker.Services) != 1 || *worker.Services[0].Autostop != model.AutostopOff || worker.Services[0].Checks[0].Type != "tcp" || AutostopSuspend(worker) {
		t.Fatalf("worker services: %+v", worker.Services)
	}
	if len(worker.Checks) != 0 {
		t.Fatalf("worker has web's check: %+v", worker.Checks)
	}
	if m := a.MountsFor("worker"); len(m) != 1 || m[0].Destination != "/data" || m[0].InitialSizeGB != 2 || len(a.MountsFor("web")) != 0 {
		t.Fatalf("mounts: %+v", a.Mounts)
	}
	if _, err := a.MachineConfig("nope"); model.KindOf(err) != model.KindInvalid {
		t.Fatalf("unknown group: %v", err)
	}
}

func TestParseWarnsWithLines(t *testing.T) {
	doc := `app = "a"
colour = "blue"
console_command = "/bin/sh"

[build]
  image = "img"
  dockerfile = "Dockerfile"

[http_service]
  internal_port = 8080
  force_https = true
  speed = 3

[deploy]
  release_command = "migrate"

[[mounts]]
  source = "d"
  destination = "/d"
  snapshot_retention = 5

[[files]]
  guest_path = "/etc/x"
  raw_value = "eA=="

[metrics]
  port = 9091
`
	a, warns, err := Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if a.Image != "img" {
		t.Fatalf("image %q", a.Image)
	}
	want := map[string]int{"colour": 2, "console_command": 3, "build": 5, "http_service.force_https": 11,
		"http_service.speed": 12, "deploy.release_command": 15, "mounts[0].snapshot_retention": 20, "files[0]": 22, "metrics": 26}
	got := map[string]int{}
	for _, w := range warns {
		got[w.Key] = w.Line
		if !strings.Contains(w.String(), "line ") {
			t.Errorf("warning without a line: %s", w)
		}
	}
	for k, l := range want {
		if got[k] != l {
			t.Errorf("warning for %s: line %d, want %d (all: %v)", k, got[k], l, warns)
		}
	}
	if len(warns) != len(want) {
		t.Errorf("%d warnings, want %d: %v", len(warns), len(want), warns)
	}
}

// TestParseWarnsOnEscapedKeysWithLines: a quoted key with escapes is
// unescaped by the parser into a buffer of its own; its line still comes
// from the document (a fuzzed fly.toml once panicked here).
func TestParseWarnsOnEscapedKeysWithLines(t *testing.T) {
	doc := "app = \"a\"\n\n\"col\\u006Fur\" = \"blue\"\n[\"http_\\u0073ervice\"]\n  internal_port = 8080\n  \"sp\\u0065ed\" = 3\n" +
		strings.Repeat("# padding so the document outgrows the unescaped keys\n", 50)
	_, warns, err := Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for _, w := range warns {
		got[w.Key] = w.Line
	}
	want := map[string]int{"colour": 3, "http_service.speed": 6}
	for k, l := range want {
		if got[k] != l {
			t.Errorf("warning for %s: line %d, want %d (all: %v)", k, got[k], l, warns)
		}
	}
}

// TestParseErrors: each bad input is refused with the key and its line.
func TestParseErrors(t *testing.T) {
	for _, tc := range []struct{ name, doc, want string }{
		{"syntax", "app = \n", "line 1"},
		{"app name", "app = \"Bad_Name\"", "line 1: app: \"Bad_Name\" is not an app name"},
		{"port type", "[http_service]\ninternal_port = \"x\"", "line 2: http_service.internal_port: must be an integer, not a TOML string"},
		{"port range", "[http_service]\ninternal_port = 70000", "line 2: http_service.internal_port: must be a port between 1 and 65535"},
		{"port missing", "[http_service]\nauto_start_machines = true", "http_service.internal_port: is required"},
		{"autostop", "[http_service]\ninternal_port = 80\nauto_stop_machines = \"sleep\"", "line 3: http_service.auto_stop_machines: \"sleep\" is not one of"},
		{"autostop type", "[http_service]\ninternal_port = 80\nauto_stop_machines = 3", "line 3: http_service.auto_stop_machines: must be"},
		{"min running", "[http_service]\ninternal_port = 80\nmin_machines_running = -1", "line 3: http_service.min_machines_running: must be 0 or more"},
		{"concurrency", "[http_service]\ninternal_port = 80\n[http_service.concurrency]\ntype = \"x\"", "line 4: http_service.concurrency.type"},
		{"soft over hard", "[http_service]\ninternal_port = 80\n[http_service.concurrency]\nsoft_limit = 9\nhard_limit = 3", "line 4: http_service.concurrency.soft_limit: must not exceed"},
		{"check interval", "[http_service]\ninternal_port = 80\n[[http_service.checks]]\ninterval = \"soon\"", "line 4: http_service.checks[0].interval: \"soon\" is not a duration"},
		{"check path", "[http_service]\ninternal_port = 80\n[[http_service.checks]]\npath = \"health\"", "line 4: http_service.checks[0].path: must start with '/'"},
		{"services protocol", "[[services]]\ninternal_port = 1\n[[services]]\ninternal_port = 2\nprotocol = \"sctp\"", "line 5: services[1].protocol"},
		{"services port", "[[services]]\ninternal_port = 1\n[[services.ports]]\nport = 0", "line 4: services[0].ports[0].port: must be a port"},
		{"handler", "[[services]]\ninternal_port = 1\n[[services.ports]]\nport = 5\nhandlers = [\"gopher\"]", "line 5: services[0].ports[0].handlers[0]: \"gopher\" is not a handler"},
		{"check type", "[checks.a]\ntype = \"icmp\"\nport = 1", "line 2: checks.a.type: \"icmp\" is not"},
		{"check port", "[checks.a]\ntype = \"tcp\"", "checks.a.port: is required"},
		{"strategy", "[deploy]\nstrategy = \"yolo\"", "line 2: deploy.strategy: \"yolo\" is not a strategy"},
		{"max unavailable", "[deploy]\nmax_unavailable = 1.5", "line 2: deploy.max_unavailable: must be a count"},
		{"wait timeout", "[deploy]\nwait_timeout = \"-1s\"", "line 2: deploy.wait_timeout: must be more than 0"},
		{"memory", "[[vm]]\nmemory = \"lots\"", "line 2: vm[0].memory: \"lots\" is not a size"},
		{"cpus", "[[vm]]\ncpus = 0", "line 2: vm[0].cpus: must be between 1 and 1024"},
		{"cpu kind", "[[vm]]\ncpu_kind = \"quantum\"", "line 2: vm[0].cpu_kind"},
		{"mount dest", "[[mounts]]\nsource = \"data\"\ndestination = \"data\"", "line 3: mounts[0].destination: must be an absolute path"},
		{"mount source", "[mounts]\nsource = \"\"\ndestination = \"/d\"", "line 2: mounts.source: \"\" is not a volume name"},
		{"mount size", "[[mounts]]\nsource = \"d\"\ndestination = \"/d\"\ninitial_size = \"500mb\"", "line 4: mounts[0].initial_size: must be a whole number of GB"},
		{"unknown group", "[processes]\nweb = \"x\"\n[http_service]\ninternal_port = 80\nprocesses = [\"wbe\"]", "line 5: http_service.processes[0]: process group \"wbe\" is not defined"},
		{"empty command", "[processes]\nweb = \"  \"", "line 2: processes.web: the command is empty"},
		{"quote", "[processes]\nweb = \"sh -c 'x\"", "line 2: processes.web: the command has an unterminated single quote"},
		{"group name", "[processes]\nWeb = \"x\"", "line 2: processes.Web: a process group's name"},
		{"restart", "[[restart]]\npolicy = \"sometimes\"", "line 2: restart[0].policy"},
		{"kill signal", "kill_signal = \"stop\"", "line 1: kill_signal: \"stop\" is not a signal name"},
		{"kill timeout", "kill_timeout = \"forever\"", "line 1: kill_timeout: \"forever\" is not a duration"},
		{"env table", "[env]\n[env.X]\ny = 1", "env.X: must be a string, a number or a boolean"},
		{"hook cmd", "[hooks.pre_suspend]\ntimeout = \"5s\"", "line 1: hooks.pre_suspend.cmd: is required"},
		{"hook timeout", "[hooks.post_resume]\ncmd = [\"x\"]\ntimeout = \"1h\"", "line 3: hooks.post_resume.timeout: must be between 1s and 5m"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := Parse([]byte(tc.doc))
			if err == nil {
				t.Fatalf("no error, want %q", tc.want)
			}
			if model.KindOf(err) != model.KindInvalid {
				t.Errorf("kind %v, want invalid", model.KindOf(err))
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestStarterParses(t *testing.T) {
	doc, err := Starter("myapp", "registry.local:5000/app:v1", 8080, 18080)
	if err != nil {
		t.Fatal(err)
	}
	a, warns, err := Parse(doc)
	if err != nil || len(warns) != 0 {
		t.Fatalf("starter: %v %v\n%s", err, warns, doc)
	}
	cfg, _ := a.MachineConfig(DefaultProcessGroup)
	if a.Name != "myapp" || cfg.Image != "registry.local:5000/app:v1" || !AutostopSuspend(cfg) || *cfg.Services[0].Ports[0].Port != 18080 {
		t.Fatalf("starter app: %+v %+v", a, cfg)
	}
}

// FuzzParse: no input panics, and whatever parses converts to machine
// configs for every group.
func FuzzParse(f *testing.F) {
	f.Add([]byte(full))
	f.Add([]byte("[http_service]\ninternal_port = 8080\nauto_stop_machines = true\n[[http_service.checks]]\npath=\"/\""))
	f.Add([]byte("[[mounts]]\nsource='a'\ndestination='/a'\n[mounts.x]\n"))
	f.Add([]byte("[processes]\na = ['x']\n[[vm]]\nmemory='1gb'\nprocesses=['a']"))
	f.Fuzz(func(t *testing.T, doc []byte) {
		a, warns, err := Parse(doc)
		if err != nil {
			if a != nil || warns != nil {
				t.Fatal("an error with a result")
			}
			if model.KindOf(err) != model.KindInvalid || !strings.HasPrefix(err.Error(), "fly.toml") {
				t.Fatalf("error of kind %v: %v", model.KindOf(err), err)
			}
			return
		}
		lines := bytes.Count(doc, []byte("\n")) + 1
		for _, w := range warns {
			if w.Line < 0 || w.Line > lines || w.Key == "" {
				t.Fatalf("warning %+v: line out of the document's %d", w, lines)
			}
		}
		for _, g := range a.Groups() {
			if _, err := a.MachineConfig(g); err != nil {
				t.Fatalf("group %s: %v", g, err)
			}
		}
	})
}
