package daemon_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/torpor-dev/torpor/internal/client"
	"github.com/torpor-dev/torpor/internal/image"
	"github.com/torpor-dev/torpor/internal/image/imagetest"
	"github.com/torpor-dev/torpor/internal/model"
)

// imageApp reports what the image's config made of its process.
const imageApp = `import http.server, json, os
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"uid": os.getuid(), "gid": os.getgid(), "cwd": os.getcwd(),
            "from_image": os.environ.get("FROM_IMAGE"), "override": os.environ.get("OVERRIDE"),
            "image_ref": os.environ.get("FLY_IMAGE_REF")}).encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("0.0.0.0", 8080), H).serve_forever()
`

type imageAppState struct {
	UID       int    `json:"uid"`
	GID       int    `json:"gid"`
	Cwd       string `json:"cwd"`
	FromImage string `json:"from_image"`
	Override  string `json:"override"`
	ImageRef  string `json:"image_ref"`
}

// appImage is the python image with imageApp on top: its own command,
// workdir, environment and (unprivileged) user.
func appImage(t *testing.T) v1.Image {
	t.Helper()
	app, err := imagetest.LayerFromFiles(map[string]string{"app/": "", "app/app.py": imageApp})
	if err != nil {
		t.Fatal(err)
	}
	img, err := imagetest.FromRootFS(rootfs, imagetest.DefaultCacheDir, imagetest.Config{
		Cmd: []string{"python3", "/app/app.py"}, WorkingDir: "/app", User: "nobody",
		Env:    []string{"PATH=/usr/local/bin:/usr/bin:/bin", "FROM_IMAGE=yes", "OVERRIDE=image"},
		Labels: map[string]string{"org.opencontainers.image.source": "torpor-test"}}, app)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// TestImagePullRunSuspendResume runs a machine from an OCI image pulled
// from the real registry, through an index, by tag: the image's command,
// workdir, env and user apply, image_ref is in the machine JSON; suspend
// and resume work as from a directory; a second machine by digest and a
// pull with the registry stopped come from the cache, while an image not
// cached is refused as 503 naming config.image and creates nothing;
// garbage collection keeps the image while machines use it.
func TestImagePullRunSuspendResume(t *testing.T) {
	d := newDaemon(t)
	c := ctx(t)
	img := appImage(t)
	digest, _ := img.Digest()
	other, _ := mutate.ConfigFile(img, mustConfig(t, img, "arm64"))
	idx := mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: other, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}},
		mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}})
	ref := registry.Ref(fmt.Sprintf("%s/app:v1", d.app))
	if err := registry.Push(c, ref, idx); err != nil {
		t.Fatal(err)
	}

	var phases []string
	pulled, err := d.c.PullImage(c, model.PullImageRequest{Image: ref, App: d.app}, func(p model.PullProgress) { phases = append(phases, p.Phase) })
	if err != nil {
		t.Fatal(err)
	}
	if pulled.Digest != digest.String() || pulled.IndexDigest == "" || !contains(phases, "layer") || !contains(phases, "unpack") {
		t.Fatalf("pull: digest %s (want %s), index %q, phases %v", pulled.Digest, digest, pulled.IndexDigest, phases)
	}

	cfg := model.MachineConfig{Image: ref, Env: map[string]string{"OVERRIDE": "config"}, Guest: model.Guest{CPUs: 1, MemoryMB: 256}}
	m := d.create(cfg)
	if r := m.ImageRef; r.Digest != digest.String() || r.Tag != "v1" || r.Registry != registry.Host || r.Repository != d.app+"/app" ||
		r.Labels["org.opencontainers.image.source"] != "torpor-test" {
		t.Fatalf("image_ref %+v", r)
	}
	var st imageAppState
	d.getJSON(m, &st)
	if st.UID != 65534 || st.GID != 65534 || st.Cwd != "/app" || st.FromImage != "yes" || st.Override != "config" ||
		!strings.HasSuffix(st.ImageRef, "@"+digest.String()) {
		t.Fatalf("the image's config did not apply: %+v", st)
	}
	d.suspend(m.ID)
	if resp := d.start(m.ID); !resp.FromSnapshot {
		t.Fatalf("resume from the snapshot failed: %+v", d.event(m.ID, model.EventResume).Request)
	}
	d.getJSON(m, &st)

	// With the registry stopped: the cache serves a pull of the tag and a
	// machine by digest; an image not cached is a clear 503.
	registry.Stop()
	defer func() {
		if err := registry.Start(); err != nil {
			t.Fatal(err)
		}
	}()
	if again, err := d.c.PullImage(c, model.PullImageRequest{Image: ref, App: d.app}, nil); err != nil || again.Digest != digest.String() {
		t.Fatalf("pull from the cache with the registry stopped: %v", err)
	}
	byDigest := d.create(model.MachineConfig{Image: registry.Ref(d.app + "/app@" + digest.String()), Guest: cfg.Guest})
	if byDigest.ImageRef.Digest != digest.String() {
		t.Fatalf("machine by digest: %+v", byDigest.ImageRef)
	}
	before, _ := d.c.ListMachines(c, d.app)
	_, err = d.c.CreateMachine(c, d.app, model.CreateMachineRequest{Config: model.MachineConfig{Image: registry.Ref("never/pulled:v1")}})
	var apiErr *client.APIError
	if !errors.As(err, &apiErr) || apiErr.Status != http.StatusServiceUnavailable || !strings.Contains(apiErr.Message, "config.image") {
		t.Fatalf("create from an unreachable registry: %v", err)
	}
	if after, _ := d.c.ListMachines(c, d.app); len(after) != len(before) {
		t.Fatalf("a failed pull created a machine: %d → %d", len(before), len(after))
	}

	// Garbage collection goes by references: in use, the image stays.
	_, err = d.c.RemoveImage(c, ref, d.app, false)
	if !errors.As(err, &apiErr) || apiErr.Status != http.StatusConflict {
		t.Fatalf("removing an image in use: %v", err)
	}
	if _, err := d.c.RemoveImage(c, ref, d.app, true); err != nil {
		t.Fatal(err)
	}
	if res, err := d.c.PruneImages(c, "", true); err != nil || len(res.Digests) != 0 {
		t.Fatalf("prune with machines on the image: %+v %v", res, err)
	}
	if err := d.c.Stop(c, d.app, m.ID, model.StopRequest{}); err != nil {
		t.Fatal(err)
	}
	if resp := d.start(m.ID); resp.FromSnapshot {
		t.Fatal("a stopped machine resumed")
	}
	d.getJSON(m, &st)
	for _, id := range []string{m.ID, byDigest.ID} {
		if err := d.c.Destroy(c, d.app, id, true); err != nil {
			t.Fatal(err)
		}
	}
	res, err := d.c.PruneImages(c, "", true)
	if err != nil || len(res.Digests) != 1 || res.Digests[0] != digest.String() {
		t.Fatalf("prune once no machine uses it: %+v %v", res, err)
	}
	if entries, _ := os.ReadDir(filepath.Join(d.dataDir, "oci", "rootfs")); len(entries) != 0 {
		t.Fatalf("root filesystems left after prune: %v", entries)
	}
}

func mustConfig(t *testing.T, img v1.Image, arch string) *v1.ConfigFile {
	t.Helper()
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.Architecture = arch
	return cf
}

// TestImageAuthAndTenants pulls from a registry with htpasswd auth, with
// the credentials of the daemon's Docker config file (DOCKER_CONFIG): the
// admin's pull works with the right ones and is refused with wrong ones;
// an app token's machine create neither borrows them nor sees another
// app's image, and (issue 17, F5) cannot boot a host directory.
func TestImageAuthAndTenants(t *testing.T) {
	reg, err := imagetest.StartRegistry(t.TempDir(), true)
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Stop()
	c := ctx(t)
	small, err := imagetest.LayerFromFiles(map[string]string{"hello": "private"})
	if err != nil {
		t.Fatal(err)
	}
	img, _ := imagetest.WithLayers(imagetest.Config{Cmd: []string{"/hello"}}, small)
	ref := reg.Ref("team/private:v1")
	if err := reg.Push(c, ref, img); err != nil {
		t.Fatal(err)
	}
	dockerConfig := t.TempDir()
	if err := reg.DockerConfig(dockerConfig, true); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	d := newDaemon(t, "--listen", fmt.Sprintf("127.0.0.1:%d", port), "--insecure-registry", reg.Host)
	d.stop()
	d.run("DOCKER_CONFIG=" + dockerConfig)

	var apiErr *client.APIError
	// A bad reference, as a pull and as a machine's image.
	_, err = d.c.PullImage(c, model.PullImageRequest{Image: "Not a/Reference!", App: d.app}, nil)
	if !errors.As(err, &apiErr) || apiErr.Status != http.StatusBadRequest || !strings.HasPrefix(apiErr.Message, "image: ") {
		t.Fatalf("pull of a bad reference: %v", err)
	}
	_, err = d.c.CreateMachine(c, d.app, model.CreateMachineRequest{Config: model.MachineConfig{Image: "Not a/Reference!"}})
	if !errors.As(err, &apiErr) || apiErr.Status != http.StatusBadRequest || !strings.Contains(apiErr.Message, "config.image") {
		t.Fatalf("create with a bad reference: %v", err)
	}
	_, err = d.c.PullImage(c, model.PullImageRequest{Image: ref, App: d.app}, nil)
	if !errors.As(err, &apiErr) || apiErr.Status != http.StatusForbidden || !strings.Contains(apiErr.Message, "refused access") {
		t.Fatalf("pull with wrong credentials: %v", err)
	}
	if err := reg.DockerConfig(dockerConfig, false); err != nil { // read at every pull
		t.Fatal(err)
	}
	if _, err := d.c.PullImage(c, model.PullImageRequest{Image: ref, App: d.app}, nil); err != nil {
		t.Fatalf("pull with the right credentials: %v", err)
	}

	// Another app's token: the private image is not its to run, and its
	// own pull is anonymous.
	if _, err := d.c.CreateApp(c, "other-"+d.app, ""); err != nil {
		t.Fatal(err)
	}
	tok, err := d.c.CreateToken(c, model.CreateTokenRequest{Apps: []string{"other-" + d.app}})
	if err != nil {
		t.Fatal(err)
	}
	tenant, err := client.New(fmt.Sprintf("127.0.0.1:%d", port), tok.Secret)
	if err != nil {
		t.Fatal(err)
	}
	_, err = tenant.CreateMachine(c, "other-"+d.app, model.CreateMachineRequest{Config: model.MachineConfig{Image: ref}})
	if !errors.As(err, &apiErr) || apiErr.Status != http.StatusForbidden || !strings.Contains(apiErr.Message, "config.image") {
		t.Fatalf("another app ran a private image it never pulled: %v", err)
	}
	if list, err := tenant.ListImages(c, ""); err != nil || len(list) != 0 {
		t.Fatalf("another app lists %+v, %v", list, err)
	}
	if _, err := tenant.GetImage(c, ref, ""); !errors.As(err, &apiErr) || apiErr.Status != http.StatusNotFound {
		t.Fatalf("another app inspects web's image: %v", err)
	}
	_, err = tenant.PullImage(c, model.PullImageRequest{Image: ref, Public: true}, nil)
	if !errors.As(err, &apiErr) || apiErr.Status != http.StatusForbidden {
		t.Fatalf("an app token made an image public: %v", err)
	}
	// F5: a host directory (or a name under --images-dir) is the admin's option.
	for _, dir := range []string{"/usr", rootfs} {
		_, err = tenant.CreateMachine(c, "other-"+d.app, model.CreateMachineRequest{Config: model.MachineConfig{
			Image: dir, Init: model.InitConfig{Exec: []string{"/bin/sh", "-c", "cat /etc/shadow"}}}})
		if !errors.As(err, &apiErr) || apiErr.Status != http.StatusForbidden || !strings.Contains(apiErr.Message, "config.image") {
			t.Fatalf("a tenant's config booted the host directory %s: %v", dir, err)
		}
	}
	if ms, _ := d.c.ListMachines(c, "other-"+d.app); len(ms) != 0 {
		t.Fatalf("refused creates left machines: %+v", ms)
	}
	// An import through the API (a `docker save` tarball) is the app's own
	// (its content is already on the host, from the pull above: it is not
	// unpacked again).
	var archive bytes.Buffer
	tag, _ := name.NewTag("example.com/own/app:v1")
	if err := tarball.Write(tag, img, &archive); err != nil {
		t.Fatal(err)
	}
	var phases []string
	imported, err := tenant.ImportImage(c, &archive, "", "", false, func(p model.PullProgress) { phases = append(phases, p.Phase) })
	if err != nil || len(imported) != 1 || imported[0].App != "other-"+d.app || imported[0].Reference != "example.com/own/app:v1" ||
		!contains(phases, "done") || !contains(phases, "end") {
		t.Fatalf("import: %+v %v (phases %v)", imported, err, phases)
	}
	if list, err := d.c.ListImages(c, d.app); err != nil || len(list) != 1 {
		t.Fatalf("app %s sees %+v, %v (want only its own pull)", d.app, list, err)
	}
	d.c.DeleteApp(c, "other-"+d.app)
}

// TestDaemonCrashMidPull kills the daemon while a layer is half
// downloaded: after the restart nothing of the pull is left or listed,
// and the next pull (and a machine from it) works.
func TestDaemonCrashMidPull(t *testing.T) {
	c := ctx(t)
	stall := newStallingProxy(t, registry.Host)
	d := newDaemon(t, "--insecure-registry", stall.host)
	ref := stall.host + "/torpor/python:bookworm"
	errc := make(chan error, 1)
	go func() {
		_, err := d.c.PullImage(context.Background(), model.PullImageRequest{Image: ref, App: d.app}, nil)
		errc <- err
	}()
	select {
	case <-stall.stalled:
	case err := <-errc:
		t.Fatalf("pull ended before the stall: %v", err)
	case <-time.After(time.Minute):
		t.Fatal("no layer download reached the proxy")
	}
	// The half-downloaded layer is being written under tmp/ when the daemon dies.
	tmp := filepath.Join(d.dataDir, "oci", "tmp")
	deadline := time.Now().Add(20 * time.Second)
	for {
		if half, _ := filepath.Glob(filepath.Join(tmp, "blob-*")); len(half) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no partial blob under tmp/ while the layer downloads")
		}
		time.Sleep(20 * time.Millisecond)
	}
	d.crash()
	<-errc
	stall.release()
	d.run()
	if entries, _ := os.ReadDir(tmp); len(entries) != 0 {
		t.Fatalf("tmp/ not emptied at start-up: %v", entries)
	}
	if list, err := d.c.ListImages(c, ""); err != nil || len(list) != 0 {
		t.Fatalf("a crashed pull left images: %+v %v", list, err)
	}
	if entries, _ := os.ReadDir(filepath.Join(d.dataDir, "oci", "rootfs")); len(entries) != 0 {
		t.Fatalf("a crashed pull left root filesystems: %v", entries)
	}
	cfg := counterConfig(nil)
	cfg.Image = ref
	m := d.create(cfg)
	if m.ImageRef.Digest == "" {
		t.Fatalf("machine after the crashed pull: %+v", m.ImageRef)
	}
}

// TestDaemonCrashDuringUnpack kills the daemon (SIGKILL, at the image
// fault points) once the blobs are in, once the root filesystem is
// complete under tmp/, and once it is renamed into place but not recorded:
// after each restart nothing of the pull is listed or left under rootfs/
// or tmp/, and the next pull unpacks afresh.
func TestDaemonCrashDuringUnpack(t *testing.T) {
	d := newDaemon(t)
	c := ctx(t)
	files := map[string]string{"etc/": "", "etc/motd": "crash test"}
	for i := range 500 {
		files[fmt.Sprintf("data/f%03d", i)] = strings.Repeat("x", 2000)
	}
	layer, err := imagetest.LayerFromFiles(files)
	if err != nil {
		t.Fatal(err)
	}
	img, _ := imagetest.WithLayers(imagetest.Config{Cmd: []string{"/bin/true"}}, layer)
	ref := registry.Ref(d.app + "/crash:v1")
	if err := registry.Push(c, ref, img); err != nil {
		t.Fatal(err)
	}
	oci := filepath.Join(d.dataDir, "oci")
	for _, point := range image.FaultPoints {
		d.stop()
		d.run("TORPOR_FAULT=" + point + ":kill")
		_, err := d.c.PullImage(c, model.PullImageRequest{Image: ref, App: d.app}, nil)
		select {
		case <-d.exited:
		case <-time.After(2 * time.Minute):
			t.Fatalf("%s: the daemon did not die at the fault point (pull: %v)\n%s", point, err, d.log())
		}
		d.run()
		if list, err := d.c.ListImages(c, ""); err != nil || len(list) != 0 {
			t.Fatalf("%s: a crashed pull left images: %+v %v", point, list, err)
		}
		for _, sub := range []string{"rootfs", "tmp"} {
			if entries, _ := os.ReadDir(filepath.Join(oci, sub)); len(entries) != 0 {
				t.Fatalf("%s: %s/ holds %v after the restart", point, sub, entries)
			}
		}
	}
	got, err := d.c.PullImage(c, model.PullImageRequest{Image: ref, App: d.app}, nil)
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(oci, "rootfs", strings.Replace(got.Digest, ":", "-", 1), "etc/motd"))
	if err != nil || string(data) != "crash test" {
		t.Fatalf("the pull after the crashes: %q %v", data, err)
	}
}

// stallingProxy forwards to a registry but holds the first layer download
// after half of it, until released.
type stallingProxy struct {
	host    string
	stalled chan struct{}
	hold    chan struct{}
	once    sync.Once
}

func newStallingProxy(t *testing.T, target string) *stallingProxy {
	t.Helper()
	p := &stallingProxy{stalled: make(chan struct{}), hold: make(chan struct{})}
	rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: target})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.host = l.Addr().String()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet || !strings.Contains(r.URL.Path, "/blobs/") {
			rp.ServeHTTP(w, r)
			return
		}
		rec := &stallWriter{ResponseWriter: w, p: p}
		rp.ServeHTTP(rec, r)
	})}
	go srv.Serve(l)
	t.Cleanup(func() { p.release(); srv.Close() })
	return p
}

func (p *stallingProxy) release() {
	select {
	case <-p.hold:
	default:
		close(p.hold)
	}
}

// stallWriter passes a blob through until it has written 1 MiB of a
// large one, then blocks (once per proxy).
type stallWriter struct {
	http.ResponseWriter
	p       *stallingProxy
	written int
}

func (w *stallWriter) Write(b []byte) (int, error) {
	n, err := w.ResponseWriter.Write(b)
	w.written += n
	if w.written > 1<<20 {
		stalled := false
		w.p.once.Do(func() { stalled = true })
		if stalled {
			if f, ok := w.ResponseWriter.(http.Flusher); ok {
				f.Flush()
			}
			close(w.p.stalled)
			<-w.p.hold
			return n, io.ErrUnexpectedEOF
		}
	}
	return n, err
}

// TestImageTagMovesOnlyOnUpdate is the image-changed path on the real
// runsc: a machine created from a tag keeps its digest when the tag moves
// on. A stop and a cold start run the pinned image, a suspend resumes on
// it, and only an update with the same tag deploys the new digest (a cold
// start that discards the snapshot, the event naming the digest).
func TestImageTagMovesOnlyOnUpdate(t *testing.T) {
	d := newParallelDaemon(t)
	c := ctx(t)
	v1img := appImage(t)
	cf := mustConfig(t, v1img, "amd64")
	for i, e := range cf.Config.Env {
		if strings.HasPrefix(e, "FROM_IMAGE=") {
			cf.Config.Env[i] = "FROM_IMAGE=v2"
		}
	}
	v2img, err := mutate.ConfigFile(v1img, cf)
	if err != nil {
		t.Fatal(err)
	}
	d1, _ := v1img.Digest()
	d2, _ := v2img.Digest()
	ref := registry.Ref(fmt.Sprintf("%s/moving:latest", d.app))
	if err := registry.Push(c, ref, v1img); err != nil {
		t.Fatal(err)
	}
	cfg := model.MachineConfig{Image: ref, Guest: model.Guest{CPUs: 1, MemoryMB: 256}}
	m := d.create(cfg)
	if err := registry.Push(c, ref, v2img); err != nil {
		t.Fatal(err)
	}
	var st imageAppState
	check := func(step, want, digest string) {
		t.Helper()
		d.getJSON(m, &st)
		if st.FromImage != want || !strings.HasSuffix(st.ImageRef, "@"+digest) || d.get(m.ID).ImageRef.Digest != digest {
			t.Fatalf("%s: the app runs %q (FLY_IMAGE_REF %s), the machine pins %s; want %s on %s",
				step, st.FromImage, st.ImageRef, d.get(m.ID).ImageRef.Digest, want, digest)
		}
	}
	check("created", "yes", d1.String())
	if err := d.c.Stop(c, d.app, m.ID, model.StopRequest{}); err != nil {
		t.Fatal(err)
	}
	if resp := d.start(m.ID); resp.FromSnapshot {
		t.Fatal("a stopped machine resumed")
	}
	check("cold start after the tag moved", "yes", d1.String())
	d.suspend(m.ID)
	if resp := d.start(m.ID); !resp.FromSnapshot {
		t.Fatalf("resume on the pinned image cold-started: %+v", d.event(m.ID, model.EventResume).Request)
	}
	check("resume", "yes", d1.String())

	d.suspend(m.ID)
	up, err := d.c.UpdateMachine(c, d.app, m.ID, model.UpdateMachineRequest{Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	if up.ImageRef.Digest != d2.String() {
		t.Fatalf("update with the same tag pinned %s, want the new %s", up.ImageRef.Digest, d2)
	}
	if got := d.event(m.ID, model.EventUpdate).Field("image_digest"); got != d2.String() {
		t.Errorf("update event image_digest %v, want %s", got, d2)
	}
	if up.State != model.StateStarted {
		if resp := d.start(m.ID); resp.FromSnapshot {
			t.Fatal("the update's machine resumed the old image's snapshot")
		}
	}
	check("after the update", "v2", d2.String())
	if dirs := d.snapshotDirs(m.ID); len(dirs) != 0 {
		t.Errorf("snapshots left after the update: %v", dirs)
	}
}
