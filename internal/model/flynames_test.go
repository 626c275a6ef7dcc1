package model

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

func TestDecodeRequestFlyNames(t *testing.T) {
	body := `{"name":"m","skip_secrets":true,"lsvd":false,"min_secrets_version":2,"config":{"image":"x","Init":{"exec":["/a"],"tty":true},` +
		`"dns":{"nameservers":["1.1.1.1"]},"files":[],"services":[{"internal_port":80,"force_instance_key":null,` +
		`"ports":[{"port":80,"tls_options":{"alpn":["h2"]}}]}]}}`
	var req CreateMachineRequest
	d, err := DecodeRequest(strings.NewReader(body), &req)
	if err != nil {
		t.Fatal(err)
	}
	got := Warnings(d.NotActedOn)
	want := []string{
		"config.dns: accepted, not acted on: " + flyIndex[scopeMachine]["config.dns"].reason,
		"config.init.tty: accepted, not acted on: " + flyIndex[scopeMachine]["config.init.tty"].reason,
		"config.services[0].ports[0].tls_options: accepted, not acted on: " + flyIndex[scopeMachine]["config.services[].ports[].tls_options"].reason,
		"min_secrets_version: accepted, not acted on: torpor has no app secrets",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("warnings\n got %q\nwant %q", got, want)
	}
	if !reflect.DeepEqual(req.NotActedOn, d.NotActedOn) || req.Config.Init.Exec[0] != "/a" {
		t.Errorf("request %+v", req)
	}
	// Fly-only values are kept where they were, zero values (files: [],
	// lsvd: false, null) are not.
	if len(req.Config.FlyOnly) != 3 || string(req.Config.FlyOnly["/dns"]) != `{"nameservers":["1.1.1.1"]}` ||
		string(req.Config.FlyOnly["/services/0/ports/0/tls_options"]) != `{"alpn":["h2"]}` || req.Config.FlyOnly["/init/tty"] == nil {
		t.Errorf("FlyOnly %q", req.Config.FlyOnly)
	}

	bad := []struct{ body, want string }{
		{`{"config":{"image":"x","dnz":{}}}`, `unknown field "config.dnz": neither torpor nor Fly's Machines API has it`},
		{`{"config":{"image":"x","services":[{"internal_port":1},{"internal_port":2,"chekcs":[]}]}}`, `unknown field "config.services[1].chekcs"`},
		{`{"config":{"image":"x","env":{"A":"1"},"hooks":{"pre_suspend":{"cmd":["a"],"timout":1}}}}`, `unknown field "config.hooks.pre_suspend.timout"`},
		{`{"config":{"image":"x","dns":[]}}`, "config.dns: expected an object"},
		{`{"config":{"image":"x","init":{"tty":"yes"}}}`, "config.init.tty: expected a boolean"},
		{`{"lsvd":1}`, "lsvd: expected a boolean"},
		{`{"network":"n"}`, `unknown field "network"`}, // an app's name, not a machine's
	}
	for _, c := range bad {
		var req CreateMachineRequest
		if err := DecodeJSON(strings.NewReader(c.body), &req); err == nil || KindOf(err) != KindInvalid || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.body, err, c.want)
		}
	}
	var app CreateAppRequest
	if d, err := DecodeRequest(strings.NewReader(`{"name":"a","network":"shared"}`), &app); err != nil || len(d.NotActedOn) != 1 || app.Name != "a" {
		t.Errorf("app create: %+v, %v", d, err)
	}
	var exec ExecRequest
	if d, err := DecodeRequest(strings.NewReader(`{"cmd":"ls","machine":true}`), &exec); err != nil || len(d.NotActedOn) != 0 {
		t.Errorf("exec with a quiet name: %+v, %v", d, err)
	}
}

func TestDecodeRequestRecordsGivenExtensions(t *testing.T) {
	var req UpdateMachineRequest
	body := `{"config":{"image":"x","hooks":null,"init":{"workdir":"/w"},"services":[{"internal_port":1}]}}`
	d, err := DecodeRequest(strings.NewReader(body), &req)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{"/hooks": true, "/init/workdir": true}
	if !reflect.DeepEqual(d.Given, want) || !reflect.DeepEqual(req.Given, want) {
		t.Errorf("given %v, want %v", d.Given, want)
	}
}

func TestMachineConfigJSON(t *testing.T) {
	in := `{"image":"x","init":{"exec":["/a"]},"dns":{"skip_registration":true},` +
		`"services":[{"internal_port":80,"autostop":"stop","force_instance_key":"k"},{"internal_port":81,"autostop":false}],"statics":[{"guest_path":"/s","url_prefix":"/"}]}`
	var cfg MachineConfig
	if err := json.Unmarshal([]byte(in), &cfg); err != nil {
		t.Fatal(err)
	}
	if len(cfg.FlyOnly) != 3 {
		t.Fatalf("FlyOnly %q", cfg.FlyOnly)
	}
	out, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var tree map[string]any
	json.Unmarshal(out, &tree)
	// Extensions are always written; Fly-only values where they were;
	// autostop as Fly answers it.
	if _, ok := tree["hooks"]; !ok || tree["hooks"] != nil || tree["init"].(map[string]any)["workdir"] != "" {
		t.Errorf("extensions not written out: %s", out)
	}
	svc := tree["services"].([]any)
	if svc[0].(map[string]any)["force_instance_key"] != "k" || svc[0].(map[string]any)["autostop"] != true || svc[1].(map[string]any)["autostop"] != false {
		t.Errorf("services %s", out)
	}
	var back MachineConfig
	if err := json.Unmarshal(out, &back); err != nil || !reflect.DeepEqual(back, cfg) {
		t.Fatalf("round trip: %v\n got %+v\nwant %+v", err, back, cfg)
	}
	// Reading is lenient (what a newer torpor wrote), requests are not.
	if err := json.Unmarshal([]byte(`{"image":"x","from_the_future":1}`), &back); err != nil {
		t.Errorf("lenient read: %v", err)
	}
	if err := DecodeJSON(strings.NewReader(`{"image":"x","from_the_future":1}`), &back); err == nil || !strings.Contains(err.Error(), `unknown field "from_the_future"`) {
		t.Errorf("DecodeJSON of an unknown name in a config: %v", err)
	}
	if d, err := DecodeRequest(strings.NewReader(`{"image":"x","dns":{"searches":["a"]}}`), &back); err != nil || len(d.NotActedOn) != 1 || back.FlyOnly["/dns"] == nil {
		t.Errorf("a config alone with a Fly-only name: %+v, %v", d, err)
	}
	// Type errors name the field through the config's own decoding.
	var req CreateMachineRequest
	if err := DecodeJSON(strings.NewReader(`{"config":{"image":"x","guest":{"cpus":"two"}}}`), &req); err == nil ||
		!strings.Contains(err.Error(), "config.guest.cpus: expected an integer in range, got string") {
		t.Errorf("type error: %v", err)
	}
}

func TestKeepExtensions(t *testing.T) {
	prev := MachineConfig{Image: "old", Init: InitConfig{Workdir: "/srv", Cmd: []string{"a"}}, Hooks: &Hooks{ResumeSignal: "SIGUSR1"},
		Guest: Guest{GPUSuspend: GPUSuspendHostMemory}}
	next := MachineConfig{Image: "new", Init: InitConfig{Cmd: []string{"b"}}}
	c := next
	c.KeepExtensions(prev, nil)
	if !reflect.DeepEqual(c, next) {
		t.Errorf("a nil given kept something: %+v", c)
	}
	c = next
	c.KeepExtensions(prev, map[string]bool{})
	if c.Init.Workdir != "/srv" || c.Hooks == nil || c.Guest.GPUSuspend != GPUSuspendHostMemory || c.Image != "new" || c.Init.Cmd[0] != "b" {
		t.Errorf("kept %+v", c)
	}
	c = next
	c.KeepExtensions(prev, map[string]bool{"/hooks": true, "/guest/gpu_suspend": true})
	if c.Hooks != nil || c.Guest.GPUSuspend != "" || c.Init.Workdir != "/srv" {
		t.Errorf("given extensions were kept: %+v", c)
	}
}

func TestSignalAndAutostopJSON(t *testing.T) {
	for in, want := range map[string]Signal{`"SIGTERM"`: "SIGTERM", `9`: "9", `"term"`: "term"} {
		var s Signal
		if err := json.Unmarshal([]byte(in), &s); err != nil || s != want {
			t.Errorf("%s: %q, %v", in, s, err)
		}
	}
	var r SignalRequest
	for _, bad := range []string{`{"signal":0}`, `{"signal":99}`, `{"signal":true}`} {
		if err := DecodeJSON(strings.NewReader(bad), &r); err == nil || !strings.Contains(err.Error(), "signal: signal must be") {
			t.Errorf("%s: %v", bad, err)
		}
	}
	for a, want := range map[Autostop]string{AutostopOff: "false", AutostopStop: "true", AutostopSuspend: `"suspend"`} {
		if b, _ := json.Marshal(a); string(b) != want {
			t.Errorf("autostop %s marshals as %s, want %s", a, b, want)
		}
	}
}
