package image

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/torpor-dev/torpor/internal/image/imagetest"
	"github.com/torpor-dev/torpor/internal/model"
)

// startRealRegistry starts Debian's docker-registry for a test.
func startRealRegistry(t *testing.T, auth bool) *imagetest.Registry {
	t.Helper()
	if os.Getenv("TORPOR_INTEGRATION") != "1" {
		t.Skip("set TORPOR_INTEGRATION=1 to run against the real docker-registry")
	}
	r, err := imagetest.StartRegistry(t.TempDir(), auth)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Stop() })
	return r
}

func (e *env) openWith(insecure string) *Manager {
	e.t.Helper()
	m, err := New(Config{Dir: filepath.Join(e.dir, "oci"), Store: e.store, InsecureRegistries: []string{insecure}, Logger: nopSlog()})
	if err != nil {
		e.t.Fatal(err)
	}
	return m
}

// TestRealRegistryAuth pulls from docker-registry with htpasswd auth, the
// credentials coming from the Docker config file the daemon reads
// (DOCKER_CONFIG): right ones work, wrong ones and none (an app's pull) are
// refused with a clear error, and nothing is recorded.
func TestRealRegistryAuth(t *testing.T) {
	reg := startRealRegistry(t, true)
	e := newEnv(t)
	ctx := context.Background()
	img := testImage(t, map[string]string{"private": "yes"}, v1.Config{Cmd: []string{"/bin/true"}})
	ref := reg.Ref("team/private:v1")
	if err := reg.Push(ctx, ref, img); err != nil {
		t.Fatal(err)
	}
	m := e.openWith(reg.Host)
	cfgDir := t.TempDir()
	t.Setenv("DOCKER_CONFIG", cfgDir)

	if err := reg.DockerConfig(cfgDir, true); err != nil {
		t.Fatal(err)
	}
	_, err := m.Pull(ctx, admin, ref, PullOptions{})
	if !errors.Is(err, ErrDenied) || model.KindOf(err) != model.KindForbidden || !strings.Contains(err.Error(), "refused access") {
		t.Fatalf("pull with wrong credentials: %v", err)
	}
	if err := reg.DockerConfig(cfgDir, false); err != nil {
		t.Fatal(err)
	}
	got, err := m.Pull(ctx, Scope{App: "web", Admin: true}, ref, PullOptions{})
	if err != nil || got.Digest != digestOf(t, img) {
		t.Fatalf("pull with the right credentials: %+v %v", got, err)
	}
	// The app the admin pulled it for runs it, although its own lookup of
	// the tag is anonymous (and refused): the digest granted stands.
	res, release, err := m.Resolve(ctx, Scope{App: "web"}, ref)
	if err != nil || res.Image.Digest != got.Digest || !strings.Contains(res.Note, "using the cached digest") {
		t.Fatalf("the app resolving the image the admin pulled for it: %+v %v", res, err)
	}
	release()
	// An app's own pull does not borrow the daemon's credentials.
	if _, err := m.Pull(ctx, Scope{App: "other"}, ref, PullOptions{}); !errors.Is(err, ErrDenied) {
		t.Fatalf("an app's anonymous pull of a private image: %v", err)
	}
	if _, _, err := m.Resolve(ctx, Scope{App: "other"}, ref); !errors.Is(err, ErrDenied) {
		t.Fatalf("another app resolved web's private image: %v", err)
	}
	if list, _ := m.List(ctx, Scope{App: "other"}); len(list) != 0 {
		t.Fatalf("failed pulls recorded %+v", list)
	}
	// Made public by the admin, it runs for every app: its tag is looked up
	// with the admin's credentials.
	if _, err := m.Pull(ctx, admin, ref, PullOptions{Public: true}); err != nil {
		t.Fatal(err)
	}
	res, release, err = m.Resolve(ctx, Scope{App: "other"}, ref)
	if err != nil || res.Image.Digest != digestOf(t, img) || !res.Image.Public {
		t.Fatalf("another app resolving the public image: %+v %v", res.Image, err)
	}
	release()
}

// TestRealRegistryDownThenBack stops docker-registry: what is cached is
// still served (a pull, a resolve), what is not gives a clear error and
// records nothing; started again, pulls work again.
func TestRealRegistryDownThenBack(t *testing.T) {
	reg := startRealRegistry(t, false)
	e := newEnv(t)
	ctx := context.Background()
	a := testImage(t, map[string]string{"a": "1"}, v1.Config{})
	b := testImage(t, map[string]string{"b": "2"}, v1.Config{})
	reg.Push(ctx, reg.Ref("app:a"), a)
	reg.Push(ctx, reg.Ref("app:b"), b)
	m := e.openWith(reg.Host)
	if _, err := m.Pull(ctx, web, reg.Ref("app:a"), PullOptions{}); err != nil {
		t.Fatal(err)
	}
	reg.Stop()
	if got, err := m.Pull(ctx, web, reg.Ref("app:a"), PullOptions{}); err != nil || got.Digest != digestOf(t, a) {
		t.Fatalf("cached pull with the registry down: %v", err)
	}
	_, err := m.Pull(ctx, web, reg.Ref("app:b"), PullOptions{})
	if !errors.Is(err, ErrUnreachable) || model.KindOf(err) != model.KindUnavailable || !strings.Contains(err.Error(), reg.Host) {
		t.Fatalf("uncached pull with the registry down: %v", err)
	}
	if _, err := m.Get(ctx, web, reg.Ref("app:b")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a failed pull recorded something: %v", err)
	}
	if err := reg.Start(); err != nil {
		t.Fatal(err)
	}
	if got, err := m.Pull(ctx, web, reg.Ref("app:b"), PullOptions{}); err != nil || got.Digest != digestOf(t, b) {
		t.Fatalf("pull once the registry is back: %v", err)
	}
}
