package image

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/torpor-dev/torpor/internal/image/imagetest"
	"github.com/torpor-dev/torpor/internal/model"
	"github.com/torpor-dev/torpor/internal/store"
)

// testRegistry is go-containerregistry's in-process registry on a
// loopback port, counting the blob downloads.
type testRegistry struct {
	srv       *httptest.Server
	host      string
	blobGets  atomic.Int64
	stallBlob chan struct{} // when set, blob downloads wait for it
}

func newTestRegistry(t *testing.T) *testRegistry {
	t.Helper()
	r := &testRegistry{}
	reg := registry.New(registry.Logger(nopLogger()))
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Method == http.MethodGet && strings.Contains(req.URL.Path, "/blobs/") {
			r.blobGets.Add(1)
			if r.stallBlob != nil {
				<-r.stallBlob
			}
		}
		reg.ServeHTTP(w, req)
	}))
	t.Cleanup(r.srv.Close)
	r.host = strings.TrimPrefix(r.srv.URL, "http://")
	return r
}

func (r *testRegistry) push(t *testing.T, repoTag string, img any) string {
	t.Helper()
	ref, err := name.ParseReference(r.host+"/"+repoTag, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	switch v := img.(type) {
	case v1.Image:
		err = remote.Write(ref, v)
	case v1.ImageIndex:
		err = remote.WriteIndex(ref, v)
	}
	if err != nil {
		t.Fatal(err)
	}
	return r.host + "/" + repoTag
}

func testImage(t *testing.T, files map[string]string, cfg v1.Config) v1.Image {
	t.Helper()
	l, err := imagetest.LayerFromFiles(files)
	if err != nil {
		t.Fatal(err)
	}
	img, err := imagetest.WithLayers(cfg, l)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func digestOf(t *testing.T, img interface{ Digest() (v1.Hash, error) }) string {
	t.Helper()
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d.String()
}

type env struct {
	t     *testing.T
	dir   string
	store *store.Store
	m     *Manager
	reg   *testRegistry
}

func newEnv(t *testing.T) *env {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("unpacking preserves ownership, which needs root")
	}
	dir := t.TempDir()
	st, err := store.Open(filepath.Join(dir, "torpor.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	e := &env{t: t, dir: dir, store: st, reg: newTestRegistry(t)}
	for _, app := range []string{"web", "other"} {
		if err := st.Update(func(tx *store.Tx) error { return tx.CreateApp(model.App{Name: app}) }); err != nil {
			t.Fatal(err)
		}
	}
	e.m = e.open()
	return e
}

func (e *env) open() *Manager {
	e.t.Helper()
	m, err := New(Config{Dir: filepath.Join(e.dir, "oci"), Store: e.store, InsecureRegistries: []string{e.reg.host},
		Logger: nopSlog()})
	if err != nil {
		e.t.Fatal(err)
	}
	return m
}

var web = Scope{App: "web"}
var admin = Scope{Admin: true}

func TestPullByTagThenDigestAndUnpack(t *testing.T) {
	e := newEnv(t)
	img := testImage(t, map[string]string{"etc/": "", "etc/hello": "world"}, v1.Config{Cmd: []string{"/bin/app"}, User: "1000"})
	ref := e.reg.push(t, "team/app:v1", img)
	var phases []string
	got, err := e.m.Pull(context.Background(), web, ref, PullOptions{Progress: func(p model.PullProgress) { phases = append(phases, p.Phase) }})
	if err != nil {
		t.Fatal(err)
	}
	want := digestOf(t, img)
	if got.Digest != want || got.App != "web" || got.Ref.Tag != "v1" || got.Ref.Repository != "team/app" || got.Ref.Registry != e.reg.host {
		t.Fatalf("pulled %+v, want digest %s", got, want)
	}
	if strings.Join(phases, " ") != "resolve layer layer unpack done" {
		t.Errorf("progress phases %v", phases)
	}
	if got.Config.User != "1000" || got.Config.Cmd[0] != "/bin/app" {
		t.Errorf("config %+v", got.Config)
	}
	root, err := e.m.RootFS(context.Background(), want)
	if err != nil {
		t.Fatal(err)
	}
	if data, _ := os.ReadFile(filepath.Join(root, "etc/hello")); string(data) != "world" {
		t.Fatalf("rootfs content %q", data)
	}
	if fi, _ := os.Stat(filepath.Join(e.dir, "oci")); fi.Mode().Perm() != 0o700 {
		t.Errorf("image dir mode %v, want 0700", fi.Mode())
	}
	// By digest: no second download, the same content.
	before := e.reg.blobGets.Load()
	byDigest, err := e.m.Pull(context.Background(), web, e.reg.host+"/team/app@"+want, PullOptions{})
	if err != nil || byDigest.Digest != want {
		t.Fatalf("pull by digest: %+v %v", byDigest, err)
	}
	if n := e.reg.blobGets.Load() - before; n != 0 {
		t.Errorf("a pull of a cached digest downloaded %d blobs", n)
	}
	list, _ := e.m.List(context.Background(), web)
	if len(list) != 2 {
		t.Errorf("list %+v, want the tag and the digest reference", list)
	}
}

func TestPullIndexPicksLinuxAmd64(t *testing.T) {
	e := newEnv(t)
	amd := testImage(t, map[string]string{"arch": "amd64"}, v1.Config{Cmd: []string{"x"}})
	arm := testImage(t, map[string]string{"arch": "arm64"}, v1.Config{Cmd: []string{"x"}})
	armCfg, _ := arm.ConfigFile()
	armCfg = armCfg.DeepCopy()
	armCfg.Architecture = "arm64"
	arm, _ = mutate.ConfigFile(arm, armCfg)
	idx := mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: arm, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}},
		mutate.IndexAddendum{Add: amd, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}})
	ref := e.reg.push(t, "multi:latest", idx)
	got, err := e.m.Pull(context.Background(), web, ref, PullOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got.Digest != digestOf(t, amd) || got.IndexDigest != digestOf(t, idx) {
		t.Fatalf("got %s (index %s), want the amd64 manifest %s", got.Digest, got.IndexDigest, digestOf(t, amd))
	}
	root, _ := e.m.RootFS(context.Background(), got.Digest)
	if data, _ := os.ReadFile(filepath.Join(root, "arch")); string(data) != "amd64" {
		t.Fatalf("unpacked %q", data)
	}
	armOnly := mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: arm, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}})
	_, err = e.m.Pull(context.Background(), web, e.reg.push(t, "armonly:latest", armOnly), PullOptions{})
	if !errors.Is(err, ErrUnsupported) || model.KindOf(err) != model.KindInvalid || !strings.Contains(err.Error(), "has no linux/amd64 image (it has: linux/arm64)") {
		t.Fatalf("arm-only index: %v", err)
	}
}

func TestPullErrors(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	for _, c := range []struct {
		ref  string
		err  error
		kind model.Kind
		msg  string
	}{
		{"Bad Ref", ErrBadReference, model.KindInvalid, "invalid image reference"},
		{"UPPER/case:1", ErrBadReference, model.KindInvalid, "invalid image reference"},
		{e.reg.host + "/missing:v1", ErrNotFound, model.KindNotFound, "has no"},
		{"127.0.0.1:1/nothing-listens:v1", ErrUnreachable, model.KindUnavailable, "registry unreachable"},
	} {
		_, err := e.m.Pull(ctx, web, c.ref, PullOptions{})
		if !errors.Is(err, c.err) || model.KindOf(err) != c.kind || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("pull %q: %v (kind %v), want %v", c.ref, err, model.KindOf(err), c.err)
		}
	}
	// Plain HTTP only to --insecure-registry hosts, even on loopback.
	other := newTestRegistry(t)
	ref := other.push(t, "app:v1", testImage(t, map[string]string{"a": "b"}, v1.Config{}))
	_, err := e.m.Pull(ctx, web, ref, PullOptions{})
	if !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), "plain HTTP refused") {
		t.Errorf("pull from a registry not listed as insecure: %v", err)
	}
	if err := CheckInsecureRegistry("10.0.0.1:5000"); err == nil {
		t.Error("a non-loopback insecure registry was accepted")
	}
	if err := CheckInsecureRegistry("localhost:5000"); err != nil {
		t.Error(err)
	}
}

func TestConcurrentPullsAreSingleFlight(t *testing.T) {
	e := newEnv(t)
	img := testImage(t, map[string]string{"f": strings.Repeat("x", 1<<20)}, v1.Config{})
	ref := e.reg.push(t, "app:v1", img)
	e.reg.stallBlob = make(chan struct{})
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = e.m.Pull(context.Background(), web, ref, PullOptions{})
		}()
	}
	time.Sleep(200 * time.Millisecond)
	close(e.reg.stallBlob)
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	// Each blob (config and layer) fetched once for eight pulls.
	if n := e.reg.blobGets.Load(); n != 2 {
		t.Errorf("%d blob downloads for 8 concurrent pulls, want 2", n)
	}
}

func TestCrashLeftoversAreCleanedAndNeverUsed(t *testing.T) {
	e := newEnv(t)
	img := testImage(t, map[string]string{"f": "1"}, v1.Config{})
	ref := e.reg.push(t, "app:v1", img)
	digest := digestOf(t, img)
	// What a daemon killed mid-pull leaves: a half-written blob and a half
	// unpacked tree under tmp/, and (killed between the rename and the
	// record) a root filesystem nothing records.
	oci := filepath.Join(e.dir, "oci")
	os.WriteFile(filepath.Join(oci, "tmp", "blob-123"), []byte("half"), 0o600)
	os.MkdirAll(filepath.Join(oci, "tmp", "unpack-1", "rootfs", "etc"), 0o755)
	orphan := filepath.Join(oci, "rootfs", strings.Replace(digest, ":", "-", 1))
	os.MkdirAll(orphan, 0o755)
	os.WriteFile(filepath.Join(orphan, "partial"), []byte("?"), 0o600)
	m := e.open()
	if entries, _ := os.ReadDir(filepath.Join(oci, "tmp")); len(entries) != 0 {
		t.Fatalf("tmp/ not emptied at start-up: %v", entries)
	}
	if _, err := os.Stat(orphan); !os.IsNotExist(err) {
		t.Fatal("a root filesystem without a record survived start-up")
	}
	if _, err := m.RootFS(context.Background(), digest); !errors.Is(err, ErrNotFound) {
		t.Fatalf("RootFS of an unrecorded digest: %v", err)
	}
	got, err := m.Pull(context.Background(), web, ref, PullOptions{})
	if err != nil {
		t.Fatal(err)
	}
	root, _ := m.RootFS(context.Background(), got.Digest)
	if _, err := os.Stat(filepath.Join(root, "partial")); !os.IsNotExist(err) {
		t.Fatal("the pull used the leftover tree")
	}
}

func TestCancelledPullLeavesNothing(t *testing.T) {
	e := newEnv(t)
	ref := e.reg.push(t, "app:v1", testImage(t, map[string]string{"f": "1"}, v1.Config{}))
	e.reg.stallBlob = make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() {
		_, err := e.m.Pull(ctx, web, ref, PullOptions{})
		done <- err
	}()
	time.Sleep(100 * time.Millisecond)
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled pull: %v", err)
	}
	close(e.reg.stallBlob)
	time.Sleep(100 * time.Millisecond)
	if list, _ := e.m.List(context.Background(), admin); len(list) != 0 {
		t.Fatalf("a cancelled pull recorded %+v", list)
	}
}

func TestRegistryDownServesTheCache(t *testing.T) {
	e := newEnv(t)
	img := testImage(t, map[string]string{"f": "1"}, v1.Config{})
	ref := e.reg.push(t, "app:v1", img)
	if _, err := e.m.Pull(context.Background(), web, ref, PullOptions{}); err != nil {
		t.Fatal(err)
	}
	e.reg.srv.Close()
	var msgs []string
	got, err := e.m.Pull(context.Background(), web, ref, PullOptions{Progress: func(p model.PullProgress) { msgs = append(msgs, p.Message) }})
	if err != nil || got.Digest != digestOf(t, img) || !strings.Contains(strings.Join(msgs, "\n"), "using the cached image") {
		t.Fatalf("pull with the registry down: %+v %v %v", got, err, msgs)
	}
	res, release, err := e.m.Resolve(context.Background(), web, ref)
	if err != nil || res.Image.Digest != got.Digest || !strings.Contains(res.Note, "using the cached digest") {
		t.Fatalf("resolve with the registry down: %+v %v", res, err)
	}
	release()
	// Another app has no cache of it: a clear error.
	_, _, err = e.m.Resolve(context.Background(), Scope{App: "other"}, ref)
	if model.KindOf(err) != model.KindUnavailable {
		t.Fatalf("resolve of an uncached image with the registry down: %v", err)
	}
}

func TestResolveFollowsTheTag(t *testing.T) {
	e := newEnv(t)
	v1img := testImage(t, map[string]string{"v": "1"}, v1.Config{})
	ref := e.reg.push(t, "app:latest", v1img)
	res, release, err := e.m.Resolve(context.Background(), web, ref)
	if err != nil || res.Image.Digest != digestOf(t, v1img) {
		t.Fatal(res, err)
	}
	release()
	v2img := testImage(t, map[string]string{"v": "2"}, v1.Config{})
	e.reg.push(t, "app:latest", v2img)
	res, release, err = e.m.Resolve(context.Background(), web, ref)
	if err != nil || res.Image.Digest != digestOf(t, v2img) {
		t.Fatalf("resolve after the tag moved: %s, %v; want %s", res.Image.Digest, err, digestOf(t, v2img))
	}
	release()
}

func TestImagesAreScopedPerApp(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	img := testImage(t, map[string]string{"secret": "web's"}, v1.Config{})
	ref := e.reg.push(t, "private:v1", img)
	// imported: another app cannot reach it through the registry either
	imported := bytes.Buffer{}
	tag, _ := name.NewTag("web/own:v1")
	if err := tarball.Write(tag, img, &imported); err != nil {
		t.Fatal(err)
	}
	if _, err := e.m.Import(ctx, web, &imported, ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	other := Scope{App: "other"}
	if _, err := e.m.Get(ctx, other, "web/own:v1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("another app sees web's imported image: %v", err)
	}
	if _, err := e.m.Get(ctx, web, "web/own:v1"); err != nil {
		t.Fatal(err)
	}
	// By digest: another app's cache is never a shortcut past the registry.
	_, _, err := e.m.Resolve(ctx, other, "index.docker.io/web/own@"+digestOf(t, img))
	if err == nil {
		t.Fatal("another app resolved web's imported image by digest")
	}
	if list, _ := e.m.List(ctx, other); len(list) != 0 {
		t.Fatalf("other lists %+v", list)
	}
	// Public by the admin's choice only.
	if _, err := e.m.Pull(ctx, web, ref, PullOptions{Public: true}); model.KindOf(err) != model.KindForbidden {
		t.Fatalf("an app made an image public: %v", err)
	}
	if _, err := e.m.Pull(ctx, admin, ref, PullOptions{Public: true}); err != nil {
		t.Fatal(err)
	}
	if got, err := e.m.Get(ctx, other, ref); err != nil || !got.Public {
		t.Fatalf("public image for another app: %+v %v", got, err)
	}
}

func TestRemovePruneAndGCByReferences(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	img := testImage(t, map[string]string{"f": "1"}, v1.Config{})
	ref := e.reg.push(t, "app:v1", img)
	got, err := e.m.Pull(ctx, web, ref, PullOptions{})
	if err != nil {
		t.Fatal(err)
	}
	unused := testImage(t, map[string]string{"g": "2"}, v1.Config{})
	unusedRef := e.reg.push(t, "unused:v1", unused)
	if _, err := e.m.Pull(ctx, web, unusedRef, PullOptions{}); err != nil {
		t.Fatal(err)
	}
	machine := model.Machine{ID: "m1", App: "web", State: model.StateStopped, ImageRef: model.ImageRef{Digest: got.Digest}}
	e.store.Update(func(tx *store.Tx) error { return tx.PutMachine(machine) })
	if _, err := e.m.Remove(ctx, web, ref, false); !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), "machine m1") {
		t.Fatalf("remove of an image in use: %v", err)
	}
	// prune --all drops the unused reference and its content only.
	res, err := e.m.Prune(ctx, web, true)
	if err != nil || len(res.References) != 1 || len(res.Digests) != 1 || res.Digests[0] != digestOf(t, unused) {
		t.Fatalf("prune: %+v %v", res, err)
	}
	// A forced remove drops the reference; the machine keeps the content.
	if _, err := e.m.Remove(ctx, web, ref, true); err != nil {
		t.Fatal(err)
	}
	if _, err := e.m.RootFS(ctx, got.Digest); err != nil {
		t.Fatalf("content a machine pins was collected: %v", err)
	}
	// A snapshot taken on it keeps it too, once the machine's config moved on.
	machine.ImageRef.Digest = ""
	e.store.Update(func(tx *store.Tx) error {
		tx.PutMachine(machine)
		return tx.PutSnapshot(model.Snapshot{ID: "s1", MachineID: "m1", State: model.SnapshotSealed, ImageDigest: got.Digest})
	})
	if res, _ := e.m.Prune(ctx, admin, false); len(res.Digests) != 0 {
		t.Fatalf("prune collected what a snapshot refers to: %+v", res)
	}
	e.store.Update(func(tx *store.Tx) error { return tx.DeleteSnapshot("m1") })
	res, err = e.m.Prune(ctx, admin, false)
	if err != nil || len(res.Digests) != 1 {
		t.Fatalf("prune after the last reference went: %+v %v", res, err)
	}
	for _, sub := range []string{"rootfs", "blobs/sha256"} {
		if entries, _ := os.ReadDir(filepath.Join(e.dir, "oci", sub)); len(entries) != 0 {
			t.Errorf("%s still holds %d entries", sub, len(entries))
		}
	}
}

func TestImportDockerSaveAndOCILayout(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	img := testImage(t, map[string]string{"hello": "imported"}, v1.Config{Entrypoint: []string{"/hello"}})
	var docker bytes.Buffer
	tag, _ := name.NewTag("example.com/team/app:v1")
	if err := tarball.Write(tag, img, &docker); err != nil {
		t.Fatal(err)
	}
	got, err := e.m.Import(ctx, web, &docker, ImportOptions{})
	if err != nil || len(got) != 1 || got[0].Reference != "example.com/team/app:v1" || got[0].Source != "import" {
		t.Fatalf("docker import: %+v %v", got, err)
	}
	// An imported reference resolves here, never against its registry.
	res, release, err := e.m.Resolve(ctx, web, "example.com/team/app:v1")
	if err != nil || res.Image.Digest != got[0].Digest {
		t.Fatalf("resolve imported: %+v %v", res, err)
	}
	release()

	dir := t.TempDir()
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	img2 := testImage(t, map[string]string{"hello": "oci"}, v1.Config{})
	if err := p.AppendImage(img2, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": "oci/app:v2"})); err != nil {
		t.Fatal(err)
	}
	got, err = e.m.Import(ctx, admin, tarDir(t, dir), ImportOptions{})
	if err != nil || len(got) != 1 || got[0].Reference != "index.docker.io/oci/app:v2" || got[0].Digest != digestOf(t, img2) {
		t.Fatalf("oci import: %+v %v", got, err)
	}
	root, _ := e.m.RootFS(ctx, got[0].Digest)
	if data, _ := os.ReadFile(filepath.Join(root, "hello")); string(data) != "oci" {
		t.Fatalf("content %q", data)
	}
	_, err = e.m.Import(ctx, web, strings.NewReader("not a tar"), ImportOptions{})
	if model.KindOf(err) != model.KindInvalid {
		t.Fatalf("garbage import: %v", err)
	}
}

func TestImageLimits(t *testing.T) {
	e := newEnv(t)
	var layers []v1.Layer
	for i := range 5 {
		l, _ := imagetest.LayerFromFiles(map[string]string{"f": strings.Repeat("x", i)})
		layers = append(layers, l)
	}
	img, _ := imagetest.WithLayers(v1.Config{}, layers...)
	ref := e.reg.push(t, "many:v1", img)
	m, err := New(Config{Dir: filepath.Join(e.dir, "oci"), Store: e.store, InsecureRegistries: []string{e.reg.host},
		Limits: Limits{MaxLayers: 4}, Logger: nopSlog()})
	if err != nil {
		t.Fatal(err)
	}
	_, err = m.Pull(context.Background(), web, ref, PullOptions{})
	if !errors.Is(err, ErrTooLarge) || model.KindOf(err) != model.KindQuota || !strings.Contains(err.Error(), "--image-max-layers") {
		t.Fatalf("too many layers: %v", err)
	}
	if e.reg.blobGets.Load() != 0 {
		t.Error("layers downloaded before the limit was checked")
	}
}

func TestLookupUser(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "etc"), 0o755)
	os.WriteFile(filepath.Join(root, "etc/passwd"), []byte("root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n"), 0o644)
	os.WriteFile(filepath.Join(root, "etc/group"), []byte("root:x:0:\napp:x:1001:\nstaff:x:50:app,bob\naudio:x:29:app\n"), 0o644)
	for spec, want := range map[string]User{
		"":          {},
		"app":       {UID: 1000, GID: 1001, AdditionalGIDs: []uint32{50, 29}},
		"1000":      {UID: 1000, GID: 1001, AdditionalGIDs: []uint32{50, 29}},
		"4242":      {UID: 4242},
		"app:staff": {UID: 1000, GID: 50},
		"app:7":     {UID: 1000, GID: 7},
		"0:0":       {},
	} {
		got, err := LookupUser(root, spec)
		if err != nil || got.UID != want.UID || got.GID != want.GID || len(got.AdditionalGIDs) != len(want.AdditionalGIDs) {
			t.Errorf("LookupUser(%q) = %+v, %v; want %+v", spec, got, err, want)
		}
	}
	for _, spec := range []string{"nobody", "app:nogroup"} {
		if _, err := LookupUser(root, spec); !errors.Is(err, ErrUnknownUser) {
			t.Errorf("LookupUser(%q): %v", spec, err)
		}
	}
	// /etc/passwd as a symlink to the host's is read inside the root.
	os.Remove(filepath.Join(root, "etc/passwd"))
	os.Symlink("/etc/passwd", filepath.Join(root, "etc/passwd"))
	if _, err := LookupUser(root, "root"); !errors.Is(err, ErrUnknownUser) {
		t.Errorf("a symlinked /etc/passwd was read from the host: %v", err)
	}
}

// tarDir tars dir's regular files.
func tarDir(t *testing.T, dir string) io.Reader {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil || !fi.Mode().IsRegular() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		data, _ := os.ReadFile(p)
		tw.WriteHeader(&tar.Header{Name: rel, Mode: 0o644, Size: int64(len(data)), Typeflag: tar.TypeReg})
		tw.Write(data)
		return nil
	})
	tw.Close()
	return &buf
}

func nopLogger() *log.Logger { return log.New(io.Discard, "", 0) }
func nopSlog() *slog.Logger  { return slog.New(slog.DiscardHandler) }

// TestFetchPinnedDigestOnAnotherHost: a host that never pulled an image
// (a machine moved to it) fetches the pinned digest, not what the tag
// names now, records no reference for it, and says so when the registry
// cannot give it.
func TestFetchPinnedDigestOnAnotherHost(t *testing.T) {
	origin, target := newEnv(t), newEnv(t)
	target.reg = origin.reg
	target.m = target.open()
	v1img := testImage(t, map[string]string{"v": "1"}, v1.Config{Cmd: []string{"x"}})
	ref := origin.reg.push(t, "team/app:v1", v1img)
	got, err := origin.m.Pull(context.Background(), web, ref, PullOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// The tag moves on; the machine pinned the first digest.
	origin.reg.push(t, "team/app:v1", testImage(t, map[string]string{"v": "2"}, v1.Config{Cmd: []string{"x"}}))
	var pulls []int64
	target.m.cfg.OnPull = func(_ time.Duration, n int64, err error) {
		if err == nil {
			pulls = append(pulls, n)
		}
	}
	if err := target.m.Fetch(context.Background(), web, got.Ref); err != nil {
		t.Fatal(err)
	}
	root, err := target.m.RootFS(context.Background(), got.Digest)
	if err != nil {
		t.Fatal(err)
	}
	if data, _ := os.ReadFile(filepath.Join(root, "v")); string(data) != "1" {
		t.Fatalf("fetched content %q, want the pinned digest's", data)
	}
	if len(pulls) != 1 || pulls[0] == 0 {
		t.Errorf("pulls seen by OnPull: %v, want one that downloaded bytes", pulls)
	}
	if list, _ := target.m.List(context.Background(), web); len(list) != 0 {
		t.Errorf("a fetch recorded references: %+v", list)
	}
	// Again: nothing to do, no registry needed.
	if err := target.m.Fetch(context.Background(), web, got.Ref); err != nil || len(pulls) != 1 {
		t.Fatalf("second fetch: %v, pulls %v", err, pulls)
	}
	missing := got.Ref
	missing.Digest = "sha256:" + strings.Repeat("0", 64)
	if err := target.m.Fetch(context.Background(), web, missing); model.KindOf(err) != model.KindNotFound {
		t.Fatalf("fetch of a digest the registry lacks: %v (kind %v), want not found", err, model.KindOf(err))
	}
	if err := target.m.Fetch(context.Background(), web, model.ImageRef{Digest: got.Digest + "x"}); err == nil {
		t.Fatal("fetch without a registry succeeded")
	}
}
