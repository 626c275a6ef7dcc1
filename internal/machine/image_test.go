package machine

import (
	"context"
	"io"
	"log"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/torpor-dev/torpor/internal/image"
	"github.com/torpor-dev/torpor/internal/image/imagetest"
	"github.com/torpor-dev/torpor/internal/model"
	"github.com/torpor-dev/torpor/internal/store"
)

// ociEnv is an env whose manager resolves OCI images from an in-process
// registry, through the real image manager.
type ociEnv struct {
	*env
	host   string
	srv    *httptest.Server
	images *image.Manager
	oci    string // the image manager's directory
}

func newOCIEnv(t *testing.T) *ociEnv {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("unpacking images keeps their owners, which needs root")
	}
	e := newEnv(t)
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")
	oci := filepath.Join(t.TempDir(), "oci")
	images, err := image.New(image.Config{Dir: oci, Store: e.st,
		InsecureRegistries: []string{host}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	e.cfg.Images = images
	e.cfg.ImagesDir = filepath.Join(t.TempDir(), "images")
	e.restart()
	return &ociEnv{env: e, host: host, srv: srv, images: images, oci: oci}
}

// push uploads an image with files and cfg as repoTag and returns its
// reference and digest.
func (e *ociEnv) push(repoTag string, files map[string]string, cfg v1.Config) (string, string) {
	e.t.Helper()
	l, err := imagetest.LayerFromFiles(files)
	e.must(err)
	img, err := imagetest.WithLayers(cfg, l)
	e.must(err)
	ref := e.host + "/" + repoTag
	parsed, err := name.ParseReference(ref, name.Insecure)
	e.must(err)
	e.must(remote.Write(parsed, img))
	d, err := img.Digest()
	e.must(err)
	return ref, d.String()
}

var passwd = map[string]string{
	"etc/":       "",
	"etc/passwd": "root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
	"etc/group":  "root:x:0:\napp:x:1000:\nextra:x:2000:app\n",
}

func with(files map[string]string, more ...string) map[string]string {
	out := map[string]string{}
	for k, v := range files {
		out[k] = v
	}
	for i := 0; i+1 < len(more); i += 2 {
		out[more[i]] = more[i+1]
	}
	return out
}

// TestImageConfigAppliesWithFlyPrecedence: without init the image's
// entrypoint and cmd run; init.cmd replaces the cmd, init.entrypoint the
// entrypoint (dropping the image's cmd), init.exec everything; env merges
// over the image's; the workdir and user come from the image; the
// machine JSON carries image_ref with the digest.
func TestImageConfigAppliesWithFlyPrecedence(t *testing.T) {
	e := newOCIEnv(t)
	ref, digest := e.push("team/app:v1", passwd, v1.Config{
		Entrypoint: []string{"/entry"}, Cmd: []string{"serve", "--port=80"}, WorkingDir: "/srv", User: "app",
		Env: []string{"PATH=/opt/bin:/usr/bin", "FROM_IMAGE=1", "OVERRIDE=image"}, Labels: map[string]string{"team": "web"}})
	for _, c := range []struct {
		name string
		init model.InitConfig
		want []string
	}{
		{"image only", model.InitConfig{}, []string{"/entry", "serve", "--port=80"}},
		{"cmd", model.InitConfig{Cmd: []string{"worker"}}, []string{"/entry", "worker"}},
		{"entrypoint", model.InitConfig{Entrypoint: []string{"/other"}}, []string{"/other"}},
		{"entrypoint and cmd", model.InitConfig{Entrypoint: []string{"/other"}, Cmd: []string{"x"}}, []string{"/other", "x"}},
		{"exec", model.InitConfig{Exec: []string{"/bin/sh", "-c", "true"}, Cmd: []string{"ignored"}}, []string{"/bin/sh", "-c", "true"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			mc, err := e.m.Create(context.Background(), "app", model.CreateMachineRequest{Config: model.MachineConfig{
				Image: ref, Init: c.init, Env: map[string]string{"OVERRIDE": "config"}}})
			if err != nil {
				t.Fatal(err)
			}
			spec, ok := e.rt.Spec(sandboxID(mc.ID))
			if !ok {
				t.Fatal("no sandbox booted")
			}
			if !slices.Equal(spec.Args, c.want) {
				t.Errorf("args %q, want %q", spec.Args, c.want)
			}
			env := strings.Join(spec.Env, "\n")
			for _, want := range []string{"PATH=/opt/bin:/usr/bin", "FROM_IMAGE=1", "OVERRIDE=config", "FLY_IMAGE_REF=" + e.host + "/team/app:v1@" + digest} {
				if !slices.Contains(spec.Env, want) {
					t.Errorf("env lacks %s:\n%s", want, env)
				}
			}
			if strings.Count(env, "OVERRIDE=") != 1 || strings.Count(env, "PATH=") != 1 {
				t.Errorf("duplicate variables:\n%s", env)
			}
			if spec.Cwd != "/srv" || spec.User.UID != 1000 || spec.User.GID != 1000 || !slices.Equal(spec.User.AdditionalGIDs, []uint32{2000}) {
				t.Errorf("cwd %q user %+v", spec.Cwd, spec.User)
			}
			if data, _ := os.ReadFile(filepath.Join(spec.RootFS, "etc/passwd")); !strings.Contains(string(data), "app:x:1000") {
				t.Errorf("rootfs %s is not the image's", spec.RootFS)
			}
			r := mc.ImageRef
			if r.Digest != digest || r.Registry != e.host || r.Repository != "team/app" || r.Tag != "v1" || r.Labels["team"] != "web" {
				t.Errorf("image_ref %+v", r)
			}
		})
	}
}

// TestImageWithoutCommandNeedsInit: an image with no entrypoint or cmd
// still needs init, and the error names it; so does a directory.
func TestImageWithoutCommandNeedsInit(t *testing.T) {
	e := newOCIEnv(t)
	ref, _ := e.push("nocmd:v1", passwd, v1.Config{})
	_, err := e.m.Create(context.Background(), "app", model.CreateMachineRequest{Config: model.MachineConfig{Image: ref}})
	if model.KindOf(err) != model.KindInvalid || !strings.Contains(err.Error(), "has no entrypoint or cmd") {
		t.Fatalf("create from an image without a command: %v", err)
	}
	_, err = e.m.Create(context.Background(), "app", model.CreateMachineRequest{Config: model.MachineConfig{Image: e.image}})
	if model.KindOf(err) != model.KindInvalid || !strings.Contains(err.Error(), "root filesystem directory has no default command") {
		t.Fatalf("create from a directory without a command: %v", err)
	}
	ref, _ = e.push("baduser:v1", passwd, v1.Config{Cmd: []string{"/x"}, User: "ghost"})
	_, err = e.m.Create(context.Background(), "app", model.CreateMachineRequest{Config: model.MachineConfig{Image: ref}})
	if model.KindOf(err) != model.KindInvalid || !strings.Contains(err.Error(), `config.image`) || !strings.Contains(err.Error(), `"ghost"`) {
		t.Fatalf("create with an unknown image user: %v", err)
	}
	if ms, _ := e.m.List(context.Background(), "app"); len(ms) != 0 {
		t.Fatalf("failed creates left machines: %+v", ms)
	}
}

// TestImageErrorsNameConfigImage: a bad reference, a missing image and an
// unreachable registry are refused with the field named, and create
// nothing.
func TestImageErrorsNameConfigImage(t *testing.T) {
	e := newOCIEnv(t)
	for _, c := range []struct {
		image string
		kind  model.Kind
		msg   string
	}{
		{"Not A Reference", model.KindInvalid, "neither a root filesystem directory nor a valid image reference"},
		{e.host + "/missing:v1", model.KindInvalid, "image not found"},
		{"127.0.0.1:9/down:v1", model.KindUnavailable, "registry unreachable"},
	} {
		_, err := e.m.Create(context.Background(), "app", model.CreateMachineRequest{Config: model.MachineConfig{
			Image: c.image, Init: model.InitConfig{Exec: []string{"/x"}}}})
		if model.KindOf(err) != c.kind || !strings.Contains(err.Error(), "config.image") || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("create with image %q: %v (kind %v), want %v mentioning %q", c.image, err, model.KindOf(err), c.kind, c.msg)
		}
	}
	if ms, _ := e.m.List(context.Background(), "app"); len(ms) != 0 {
		t.Fatalf("failed creates left machines: %+v", ms)
	}
}

// TestTenantCannotBootHostDirectories is the regression test of issue 17's
// F5 (image part): an app token's config may not name a host directory
// (absolute, such as /usr, or under --images-dir), while the admin's may.
func TestTenantCannotBootHostDirectories(t *testing.T) {
	e := newOCIEnv(t)
	os.MkdirAll(filepath.Join(e.cfg.ImagesDir, "base"), 0o755)
	tenant := model.AsTenant(context.Background())
	for _, dir := range []string{"/usr", e.image, "base"} {
		_, err := e.m.Create(tenant, "app", model.CreateMachineRequest{Config: model.MachineConfig{
			Image: dir, Init: model.InitConfig{Exec: []string{"/bin/sh"}}}})
		if model.KindOf(err) != model.KindForbidden || !strings.Contains(err.Error(), "config.image") {
			t.Errorf("a tenant booted %s: %v", dir, err)
		}
	}
	if _, err := e.m.Create(context.Background(), "app", model.CreateMachineRequest{Config: e.config()}); err != nil {
		t.Fatalf("the admin's directory image: %v", err)
	}
	// A tenant's update cannot switch to one either.
	ref, _ := e.push("app:v1", passwd, v1.Config{Cmd: []string{"/x"}})
	mc, err := e.m.Create(tenant, "app", model.CreateMachineRequest{Config: model.MachineConfig{Image: ref}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.m.Update(tenant, "app", mc.ID, model.UpdateMachineRequest{Config: model.MachineConfig{Image: "/usr", Init: model.InitConfig{Exec: []string{"/x"}}}})
	if model.KindOf(err) != model.KindForbidden {
		t.Fatalf("a tenant updated to /usr: %v", err)
	}
	if got := e.get(mc.ID); got.Config.Image != ref || got.State != model.StateStarted {
		t.Fatalf("a refused update changed the machine: %+v", got)
	}
}

// TestImageDigestIsPinnedUntilUpdate: the tag moving on changes nothing
// for a restart or cold start; an update with the same tag deploys the new
// digest; a suspended machine resumes on its image.
func TestImageDigestIsPinnedUntilUpdate(t *testing.T) {
	e := newOCIEnv(t)
	ref, d1 := e.push("app:latest", with(passwd, "v", "1"), v1.Config{Cmd: []string{"/x"}})
	mc, err := e.m.Create(context.Background(), "app", model.CreateMachineRequest{Config: model.MachineConfig{Image: ref}})
	e.must(err)
	_, d2 := e.push("app:latest", with(passwd, "v", "2"), v1.Config{Cmd: []string{"/x"}})
	e.must(e.m.Stop(context.Background(), "app", mc.ID, model.StopRequest{}))
	e.start(mc.ID)
	spec, _ := e.rt.Spec(sandboxID(mc.ID))
	if data, _ := os.ReadFile(filepath.Join(spec.RootFS, "v")); string(data) != "1" || e.get(mc.ID).ImageRef.Digest != d1 {
		t.Fatalf("a cold start ran another image: %q", data)
	}
	e.must(e.m.Suspend(context.Background(), "app", mc.ID))
	snap, _ := e.snapshotRecord(mc.ID)
	if snap.ImageDigest != d1 || snap.Image != "oci:"+d1 {
		t.Fatalf("snapshot record image %q %q", snap.Image, snap.ImageDigest)
	}
	if resp := e.start(mc.ID); !resp.FromSnapshot {
		t.Fatal("resume on the same image did not restore")
	}
	up, err := e.m.Update(context.Background(), "app", mc.ID, model.UpdateMachineRequest{Config: model.MachineConfig{Image: ref}})
	e.must(err)
	if up.ImageRef.Digest != d2 {
		t.Fatalf("update with the same tag pinned %s, want the new %s", up.ImageRef.Digest, d2)
	}
	ev := e.lastEvent(mc.ID, model.EventUpdate)
	if ev.Field("image_digest") != d2 {
		t.Errorf("update event %+v", ev.Request)
	}
	// The registry gone, an update of the same tag keeps the cached digest and says so.
	e.srv.Close()
	up, err = e.m.Update(context.Background(), "app", mc.ID, model.UpdateMachineRequest{Config: model.MachineConfig{Image: ref}})
	e.must(err)
	if up.ImageRef.Digest != d2 || !strings.Contains(e.lastEvent(mc.ID, model.EventUpdate).Field("image_note").(string), "cached digest") {
		t.Fatalf("update with the registry down: %+v", up.ImageRef)
	}
}

// TestResumeOnAnotherImageColdStarts: when the root filesystem a snapshot
// was taken on is no longer the machine's (a directory name the admin
// pointed elsewhere, or a changed pin), the resume cold-starts and says
// "image changed".
func TestResumeOnAnotherImageColdStarts(t *testing.T) {
	e := newOCIEnv(t)
	v1dir, v2dir := filepath.Join(e.cfg.ImagesDir, "v1"), filepath.Join(e.cfg.ImagesDir, "v2")
	os.MkdirAll(v1dir, 0o755)
	os.MkdirAll(v2dir, 0o755)
	link := filepath.Join(e.cfg.ImagesDir, "current")
	e.must(os.Symlink("v1", link))
	mc, err := e.m.Create(context.Background(), "app", model.CreateMachineRequest{Config: model.MachineConfig{
		Image: "current", Init: model.InitConfig{Exec: []string{"/app"}}}})
	e.must(err)
	e.must(e.m.Suspend(context.Background(), "app", mc.ID))
	os.Remove(link)
	e.must(os.Symlink("v2", link))
	if resp := e.start(mc.ID); resp.FromSnapshot {
		t.Fatal("resumed a snapshot onto another root filesystem")
	}
	ev := e.lastEvent(mc.ID, model.EventResume)
	if reason, _ := ev.Field("reason").(string); !strings.HasPrefix(reason, "image changed") || !strings.Contains(reason, v2dir) {
		t.Fatalf("resume reason %q", reason)
	}
	if spec, _ := e.rt.Spec(sandboxID(mc.ID)); spec.RootFS != v2dir {
		t.Fatalf("cold start on %s, want %s", spec.RootFS, v2dir)
	}

	// A pin that differs from the snapshot's (a record changed outside the
	// update path) is caught the same way.
	ref, _ := e.push("app:v1", passwd, v1.Config{Cmd: []string{"/x"}})
	mc, err = e.m.Create(context.Background(), "app", model.CreateMachineRequest{Config: model.MachineConfig{Image: ref}})
	e.must(err)
	e.must(e.m.Suspend(context.Background(), "app", mc.ID))
	_, other := e.push("app:v2", with(passwd, "x", "y"), v1.Config{Cmd: []string{"/x"}})
	if _, err := e.images.Pull(context.Background(), image.Scope{App: "app"}, e.host+"/app:v2", image.PullOptions{}); err != nil {
		t.Fatal(err)
	}
	e.st.Update(func(tx *store.Tx) error {
		rec, _ := tx.Machine(mc.ID)
		rec.ImageRef.Digest = other
		return tx.PutMachine(rec)
	})
	if resp := e.start(mc.ID); resp.FromSnapshot {
		t.Fatal("resumed onto another digest")
	}
	if reason, _ := e.lastEvent(mc.ID, model.EventResume).Field("reason").(string); !strings.HasPrefix(reason, "image changed") {
		t.Fatalf("reason %q", reason)
	}
}

// TestImageKeptWhileReferenced: garbage collection keeps what a machine's
// config or snapshot uses, even once the reference is removed.
func TestImageKeptWhileReferenced(t *testing.T) {
	e := newOCIEnv(t)
	ctx := context.Background()
	ref, digest := e.push("app:v1", passwd, v1.Config{Cmd: []string{"/x"}})
	mc, err := e.m.Create(ctx, "app", model.CreateMachineRequest{Config: model.MachineConfig{Image: ref}})
	e.must(err)
	if _, err := e.images.Remove(ctx, image.Scope{App: "app"}, ref, false); model.KindOf(err) != model.KindConflict {
		t.Fatalf("removing an image a machine uses: %v", err)
	}
	_, err = e.images.Remove(ctx, image.Scope{App: "app"}, ref, true)
	e.must(err)
	e.must(e.m.Suspend(ctx, "app", mc.ID))
	if res, _ := e.images.Prune(ctx, image.Scope{Admin: true}, true); len(res.Digests) != 0 {
		t.Fatalf("prune collected a used image: %+v", res)
	}
	if resp := e.start(mc.ID); !resp.FromSnapshot {
		t.Fatal("resume failed after prune")
	}
	e.must(e.m.Destroy(ctx, "app", mc.ID, true))
	res, err := e.images.Prune(ctx, image.Scope{Admin: true}, false)
	if err != nil || len(res.Digests) != 1 || res.Digests[0] != digest {
		t.Fatalf("prune after the machine went: %+v %v", res, err)
	}
}

// TestDeleteAppForgetsItsImages: an app's image references go with it,
// and the content no one else uses is deleted; an app made again under the
// name starts with none.
func TestDeleteAppForgetsItsImages(t *testing.T) {
	e := newOCIEnv(t)
	ctx := context.Background()
	ref, _ := e.push("app:v1", passwd, v1.Config{Cmd: []string{"/x"}})
	mc, err := e.m.Create(ctx, "app", model.CreateMachineRequest{Config: model.MachineConfig{Image: ref}})
	e.must(err)
	e.must(e.m.Destroy(ctx, "app", mc.ID, true))
	e.must(e.m.DeleteApp(ctx, "app"))
	_, err = e.m.CreateApp(ctx, model.App{Name: "app"})
	e.must(err)
	if list, _ := e.images.List(ctx, image.Scope{Admin: true}); len(list) != 0 {
		t.Fatalf("images of the deleted app: %+v", list)
	}
	for _, sub := range []string{"rootfs", "blobs/sha256"} {
		if entries, _ := os.ReadDir(filepath.Join(e.oci, sub)); len(entries) != 0 {
			t.Errorf("%s left after the app was deleted: %v", sub, entries)
		}
	}
}
