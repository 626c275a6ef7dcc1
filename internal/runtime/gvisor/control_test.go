package gvisor

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/torpor-dev/torpor/internal/runtime"
)

// fakeControl is a control server that answers one call per connection
// with answer, after handing the received call and files to check.
func fakeControl(t *testing.T, answer string, check func(call map[string]json.RawMessage, files []*os.File)) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ctl.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.AcceptUnix()
			if err != nil {
				return
			}
			buf, oob := make([]byte, 1<<16), make([]byte, 1024)
			n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
			if err != nil {
				c.Close()
				continue
			}
			var files []*os.File
			if msgs, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
				for _, m := range msgs {
					fds, _ := unix.ParseUnixRights(&m)
					for _, fd := range fds {
						files = append(files, os.NewFile(uintptr(fd), "passed"))
					}
				}
			}
			var call map[string]json.RawMessage
			if err := json.Unmarshal(buf[:n], &call); err != nil {
				t.Errorf("call is not one JSON object: %q", buf[:n])
			}
			check(call, files)
			for _, f := range files {
				f.Close()
			}
			c.Write([]byte(answer))
			c.Close()
		}
	}()
	return path
}

// The call goes as runsc's uRPC server reads it: {"method", "arg"} with
// the files as SCM_RIGHTS, and the answer's result is decoded.
func TestControlCallWire(t *testing.T) {
	var method string
	var arg ctlExecArgs
	path := fakeControl(t, `{"success":true,"err":"","result":42}`, func(call map[string]json.RawMessage, files []*os.File) {
		json.Unmarshal(call["method"], &method)
		json.Unmarshal(call["arg"], &arg)
		if len(files) != 3 {
			t.Errorf("got %d files, want 3", len(files))
			return
		}
		files[1].Write([]byte("from the server"))
	})
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	caps, err := capSets(&specs.LinuxCapabilities{Bounding: []string{"CAP_KILL", "CAP_NET_RAW"}}, false)
	if err != nil {
		t.Fatal(err)
	}
	var pid int32
	err = controlCall(context.Background(), path, ctlExecuteAsync,
		&ctlExecArgs{Argv: []string{"date"}, Envv: []string{"A=1"}, WorkingDirectory: "/w", KUID: 7, GuestFDs: []int{0, 1, 2}, ContainerID: "c", Capabilities: caps},
		[]*os.File{pw, pw, pw}, &pid)
	pw.Close()
	if err != nil || pid != 42 {
		t.Fatalf("call = %d, %v; want 42", pid, err)
	}
	if method != ctlExecuteAsync || arg.Argv[0] != "date" || arg.Envv[0] != "A=1" || arg.WorkingDirectory != "/w" ||
		arg.KUID != 7 || len(arg.GuestFDs) != 3 || arg.ContainerID != "c" {
		t.Fatalf("the server read %s %+v", method, arg)
	}
	if arg.Capabilities == nil || arg.Capabilities.BoundingCaps != 1<<unix.CAP_KILL {
		t.Fatalf("capabilities %+v, want CAP_KILL alone (CAP_NET_RAW filtered out)", arg.Capabilities)
	}
	pr.SetReadDeadline(time.Now().Add(time.Second))
	buf := make([]byte, 64)
	if n, _ := pr.Read(buf); string(buf[:n]) != "from the server" {
		t.Fatalf("passed file carried %q", buf[:n])
	}
}

// A server's error is a *controlError (final: no fallback); a socket that
// cannot be reached is errNoControl (the caller spawns runsc instead).
func TestControlCallErrors(t *testing.T) {
	path := fakeControl(t, `{"success":false,"err":"no such process"}`, func(map[string]json.RawMessage, []*os.File) {})
	err := controlCall(context.Background(), path, ctlSignal, ctlSignalArgs{CID: "c", Signo: 18, Mode: deliverToAllProcesses}, nil, nil)
	var ce *controlError
	if !errors.As(err, &ce) || ce.Msg != "no such process" || errors.Is(err, errNoControl) {
		t.Fatalf("server error = %v, want a controlError", err)
	}
	err = controlCall(context.Background(), filepath.Join(t.TempDir(), "none.sock"), ctlSignal, ctlSignalArgs{}, nil, nil)
	if !errors.Is(err, errNoControl) {
		t.Fatalf("missing socket = %v, want errNoControl", err)
	}
	if _, err := capSets(&specs.LinuxCapabilities{Effective: []string{"CAP_NOPE"}}, false); !errors.Is(err, errNoControl) {
		t.Fatalf("unknown capability = %v, want errNoControl", err)
	}
}

// A state file that is missing means the sandbox is gone; one without the
// socket's path cannot be used.
func TestControlState(t *testing.T) {
	rt := &Runtime{cfg: Config{RootDir: t.TempDir()}}
	if _, err := rt.controlState("abc"); !errors.Is(err, runtime.ErrNotFound) {
		t.Fatalf("missing state file = %v, want not found", err)
	}
	os.WriteFile(filepath.Join(rt.cfg.RootDir, "abc_sandbox:abc.state"), []byte(`{"status":"running","spec":{"process":{"args":["x"]}},"sandbox":{}}`), 0o600)
	if _, err := rt.controlState("abc"); !errors.Is(err, errNoControl) {
		t.Fatalf("state without a socket = %v, want errNoControl", err)
	}
	os.WriteFile(filepath.Join(rt.cfg.RootDir, "abc_sandbox:abc.state"), []byte(`{"status":"running","spec":{"process":{"args":["x"],"cwd":"/"}},"sandbox":{"controlSocketPath":"/s"}}`), 0o600)
	st, err := rt.controlState("abc")
	if err != nil || st.Sandbox.ControlSocketPath != "/s" || st.Spec.Process.Cwd != "/" {
		t.Fatalf("state = %+v, %v", st, err)
	}
}

func TestMergeEnvReplacesByKey(t *testing.T) {
	got := mergeEnv([]string{"PATH=/bin", "LANG=C.UTF-8", "LANGUAGE=en", "EMPTY="}, []string{"LANG=C", "TZ=UTC0"})
	want := []string{"PATH=/bin", "LANGUAGE=en", "EMPTY=", "LANG=C", "TZ=UTC0"}
	if !slices.Equal(got, want) {
		t.Fatalf("mergeEnv = %q, want %q", got, want)
	}
	if base := []string{"A=1"}; !slices.Equal(mergeEnv(base, nil), base) {
		t.Fatal("mergeEnv with no env changed the base")
	}
}
