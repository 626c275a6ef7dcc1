// Package imagetest provides what tests and benchmarks need to exercise
// images on the real thing: a local registry (Debian's docker-registry, the
// CNCF distribution server, on a loopback port, optionally with htpasswd
// auth), OCI images built from a root filesystem directory (such as the
// cached Debian rootfs with python3), and pushing them. It owns no state
// of the daemon.
package imagetest

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/torpor-dev/torpor/internal/freeport"
)

// RegistryBinary is Debian's docker-registry (package docker-registry).
const RegistryBinary = "/usr/bin/docker-registry"

// Registry is a docker-registry process serving plain HTTP on a loopback
// port, with its storage in a directory of its own.
type Registry struct {
	// Host is HOST:PORT (give it to the daemon's --insecure-registry).
	Host string
	// User and Password are the htpasswd credentials, when auth is on.
	User, Password string
	dir            string
	cmd            *exec.Cmd
	exited         chan struct{} // closed once the process has been waited for
	logFile        *os.File
}

// StartRegistry starts a registry storing under dir (created if needed).
// With auth, it wants the basic credentials User/Password (htpasswd, made
// with Debian's htpasswd from apache2-utils).
func StartRegistry(dir string, auth bool) (*Registry, error) {
	if _, err := os.Stat(RegistryBinary); err != nil {
		return nil, fmt.Errorf("imagetest: %s missing (apt-get install docker-registry; scripts/deps.sh does): %w", RegistryBinary, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	port, err := freeport.Pick()
	if err != nil {
		return nil, err
	}
	r := &Registry{Host: fmt.Sprintf("127.0.0.1:%d", port), dir: dir}
	authConf := ""
	if auth {
		r.User, r.Password = "torpor", "s3cret-"+randomHex(6)
		out, err := exec.Command("htpasswd", "-Bbn", r.User, r.Password).Output()
		if err != nil {
			return nil, fmt.Errorf("imagetest: htpasswd (apt-get install apache2-utils): %w", err)
		}
		if err := os.WriteFile(filepath.Join(dir, "htpasswd"), out, 0o600); err != nil {
			return nil, err
		}
		authConf = fmt.Sprintf("auth:\n  htpasswd:\n    realm: torpor-test\n    path: %s\n", filepath.Join(dir, "htpasswd"))
	}
	conf := fmt.Sprintf(`version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
http:
  addr: %s
  secret: %s
%s`, filepath.Join(dir, "data"), r.Host, randomHex(16), authConf)
	if err := os.WriteFile(filepath.Join(dir, "config.yml"), []byte(conf), 0o600); err != nil {
		return nil, err
	}
	return r, r.Start()
}

// Start (re)starts the registry process on its port and storage, and
// waits until it answers.
func (r *Registry) Start() error {
	if r.cmd != nil {
		return errors.New("imagetest: registry already running")
	}
	logf, err := os.OpenFile(filepath.Join(r.dir, "registry.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	cmd := exec.Command(RegistryBinary, "serve", filepath.Join(r.dir, "config.yml"))
	cmd.Stdout, cmd.Stderr = logf, logf
	// The registry dies with us (Pdeathsig). The signal comes when the
	// thread that started it ends, not the process, and Go ends threads
	// that a goroutine left locked (as network namespace code does): the
	// registry is started from a goroutine that keeps its thread until the
	// registry exits.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	started, exited := make(chan error, 1), make(chan struct{})
	go func() {
		runtime.LockOSThread()
		err := cmd.Start()
		started <- err
		if err == nil {
			cmd.Wait()
		}
		close(exited)
	}()
	if err := <-started; err != nil {
		logf.Close()
		return fmt.Errorf("imagetest: start registry: %w", err)
	}
	r.cmd, r.exited, r.logFile = cmd, exited, logf
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get("http://" + r.Host + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusUnauthorized {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	r.Stop()
	log, _ := os.ReadFile(filepath.Join(r.dir, "registry.log"))
	return fmt.Errorf("imagetest: registry on %s did not answer within 15s; its log:\n%s", r.Host, tail(log, 2000))
}

// Stop stops the registry process (its storage stays, for Start).
func (r *Registry) Stop() error {
	if r.cmd == nil {
		return nil
	}
	r.cmd.Process.Kill()
	<-r.exited
	r.logFile.Close()
	r.cmd = nil
	return nil
}

// Auth is the authenticator for the registry's credentials (anonymous
// without auth).
func (r *Registry) Auth() authn.Authenticator {
	if r.User == "" {
		return authn.Anonymous
	}
	return &authn.Basic{Username: r.User, Password: r.Password}
}

// DockerConfig writes a Docker config file with the registry's
// credentials (or wrong ones, with wrong) in dir, for DOCKER_CONFIG.
func (r *Registry) DockerConfig(dir string, wrong bool) error {
	pass := r.Password
	if wrong {
		pass = "wrong-password"
	}
	auth := base64.StdEncoding.EncodeToString([]byte(r.User + ":" + pass))
	data := fmt.Sprintf(`{"auths": {%q: {"auth": %q}}}`, r.Host, auth)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "config.json"), []byte(data), 0o600)
}

// Ref is the registry's reference for repository:tag.
func (r *Registry) Ref(repoTag string) string { return r.Host + "/" + repoTag }

// Push uploads img (a v1.Image or v1.ImageIndex) as ref.
func (r *Registry) Push(ctx context.Context, ref string, img any) error {
	parsed, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		return err
	}
	opts := []remote.Option{remote.WithContext(ctx), remote.WithAuth(r.Auth())}
	switch v := img.(type) {
	case v1.Image:
		return remote.Write(parsed, v, opts...)
	case v1.ImageIndex:
		return remote.WriteIndex(parsed, v, opts...)
	}
	return fmt.Errorf("imagetest: cannot push a %T", img)
}

// Delete deletes ref's manifest from the registry.
func (r *Registry) Delete(ctx context.Context, ref string) error {
	parsed, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		return err
	}
	desc, err := remote.Head(parsed, remote.WithContext(ctx), remote.WithAuth(r.Auth()))
	if err != nil {
		return err
	}
	return remote.Delete(parsed.Context().Digest(desc.Digest.String()), remote.WithContext(ctx), remote.WithAuth(r.Auth()))
}

// Config is the runtime part of a built image's config.
type Config = v1.Config

// DefaultCacheDir is where FromRootFS keeps the layers it builds (next to
// the cached test root filesystem).
const DefaultCacheDir = "/var/cache/torpor/image-layers"

// Excluded are the paths of a root filesystem that FromRootFS leaves out,
// as a Dockerfile's clean-up would: apt's package lists, documentation,
// man and info pages, locales. The Debian+python rootfs then makes a
// layer of about 50 MB compressed.
var Excluded = []string{"var/lib/apt/lists", "var/cache/apt", "usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale"}

// FromRootFS builds a linux/amd64 image of the directory dir (less
// Excluded) with cfg: a layer of dir, then the extra layers. The gzipped layer of dir is cached
// in cacheDir (keyed by dir and the modification time of its marker file,
// if any) so that a second build only reads it.
func FromRootFS(dir, cacheDir string, cfg v1.Config, extra ...v1.Layer) (v1.Image, error) {
	layer, err := rootfsLayer(dir, cacheDir)
	if err != nil {
		return nil, err
	}
	return WithLayers(cfg, append([]v1.Layer{layer}, extra...)...)
}

// WithLayers is a linux/amd64 image of layers (lowest first) with cfg.
func WithLayers(cfg v1.Config, layers ...v1.Layer) (v1.Image, error) {
	img, err := mutate.AppendLayers(empty.Image, layers...)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Config = "linux", "amd64", cfg
	cf.Created = v1.Time{Time: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	return mutate.ConfigFile(img, cf)
}

// LayerFromFiles is a gzipped layer holding files (path → content, mode
// 0644; a path ending in "/" is a directory), in name order.
func LayerFromFiles(files map[string]string) (v1.Layer, error) {
	pr, pw := io.Pipe()
	go func() {
		tw := tar.NewWriter(pw)
		names := make([]string, 0, len(files))
		for n := range files {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			hdr := &tar.Header{Name: n, Mode: 0o644, Size: int64(len(files[n])), Typeflag: tar.TypeReg, ModTime: time.Unix(1700000000, 0)}
			if strings.HasSuffix(n, "/") {
				hdr.Typeflag, hdr.Mode, hdr.Size = tar.TypeDir, 0o755, 0
			}
			if err := tw.WriteHeader(hdr); err != nil {
				pw.CloseWithError(err)
				return
			}
			io.WriteString(tw, files[n])
		}
		pw.CloseWithError(tw.Close())
	}()
	data, err := io.ReadAll(pr)
	if err != nil {
		return nil, err
	}
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(strings.NewReader(string(data))), nil
	})
}

// rootfsLayer is the gzipped tar of dir, from the cache when it is there.
func rootfsLayer(dir, cacheDir string) (v1.Layer, error) {
	if cacheDir == "" {
		return nil, errors.New("imagetest: FromRootFS needs a cache directory for the layer it builds")
	}
	key := dir
	if fi, err := os.Stat(filepath.Join(dir, ".torpor-complete")); err == nil {
		key += fi.ModTime().String()
	}
	sum := sha256.Sum256([]byte("v2 " + key + " " + strings.Join(Excluded, ",")))
	path := filepath.Join(cacheDir, "layer-"+hex.EncodeToString(sum[:8])+".tar.gz")
	if _, err := os.Stat(path); err != nil {
		if err := os.MkdirAll(cacheDir, 0o755); err != nil {
			return nil, err
		}
		f, err := os.CreateTemp(cacheDir, "layer-*.tmp")
		if err != nil {
			return nil, err
		}
		defer os.Remove(f.Name())
		if err := writeTarGz(dir, f); err != nil {
			f.Close()
			return nil, err
		}
		if err := f.Close(); err != nil {
			return nil, err
		}
		if err := os.Rename(f.Name(), path); err != nil {
			return nil, err
		}
	}
	return tarball.LayerFromFile(path)
}

// writeTarGz writes dir (less Excluded) as a gzipped tar stream (fastest compression), its
// entries in a stable order, owners and modes kept; device nodes are left
// out (no image needs them: a machine's /dev is its sandbox's).
func writeTarGz(dir string, w io.Writer) error {
	bw := bufio.NewWriterSize(w, 1<<20)
	zw, err := gzip.NewWriterLevel(bw, gzip.BestSpeed)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(zw)
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil || rel == "." {
			return err
		}
		if slices.Contains(Excluded, filepath.ToSlash(rel)) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if info.Mode()&(fs.ModeDevice|fs.ModeCharDevice|fs.ModeSocket) != 0 {
			return nil
		}
		link := ""
		if info.Mode()&fs.ModeSymlink != 0 {
			if link, err = os.Readlink(path); err != nil {
				return err
			}
		}
		hdr, err := tar.FileInfoHeader(info, link)
		if err != nil {
			return err
		}
		hdr.Name = filepath.ToSlash(rel)
		if info.IsDir() {
			hdr.Name += "/"
		}
		hdr.Uname, hdr.Gname = "", ""
		hdr.Format = tar.FormatPAX
		hdr.AccessTime, hdr.ChangeTime = time.Time{}, time.Time{}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if info.Mode().IsRegular() {
			f, err := os.Open(path)
			if err != nil {
				return err
			}
			_, err = io.Copy(tw, f)
			f.Close()
			return err
		}
		return nil
	})
	if err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	return bw.Flush()
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}
