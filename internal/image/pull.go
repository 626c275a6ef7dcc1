package image

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sys/unix"

	"github.com/torpor-dev/torpor/internal/model"
	"github.com/torpor-dev/torpor/internal/store"
)

// Progress receives a pull's progress; it may be nil.
type Progress func(model.PullProgress)

// PullOptions are the options of Pull.
type PullOptions struct {
	// Public (admin only) makes the admin's reference usable by every app.
	Public   bool
	Progress Progress
}

// Pull fetches reference from its registry for scope (registry
// credentials: see Config.ShareCredentials), unpacks it unless this host
// has its manifest already, and records the reference as scope's (the
// admin's, public if opts.Public, when scope has no app). When the registry
// cannot be reached and scope already has the reference, the cached image
// is returned (Message says so).
func (m *Manager) Pull(ctx context.Context, scope Scope, reference string, opts PullOptions) (model.Image, error) {
	img, err := m.pullRef(ctx, scope, reference, opts)
	return img, classed(err)
}

func (m *Manager) pullRef(ctx context.Context, scope Scope, reference string, opts PullOptions) (model.Image, error) {
	ref, err := ParseReference(reference)
	if err != nil {
		return model.Image{}, err
	}
	if opts.Public && (!scope.Admin || scope.App != "") {
		return model.Image{}, fmt.Errorf("%w: only the admin's own images (no app) can be made public", ErrForbidden)
	}
	img, release, err := m.pull(ctx, scope, ref, opts)
	if err != nil {
		var cached model.Image
		if errors.Is(err, ErrUnreachable) && m.cached(scope, ref, &cached) {
			emit(opts.Progress, model.PullProgress{Phase: "resolve",
				Message: fmt.Sprintf("%v; using the cached image %s", err, cached.Digest)})
			return cached, nil
		}
		return img, err
	}
	release()
	return img, nil
}

// cached finds scope's own record of ref (the one a pull would replace)
// and its content.
func (m *Manager) cached(scope Scope, ref Reference, img *model.Image) bool {
	found := false
	m.cfg.Store.View(func(tx *store.Tx) error {
		tag, ok, err := tx.ImageTag(scope.App, ref.String())
		if err != nil || !ok {
			return err
		}
		c, ok, err := tx.ImageContent(tag.Digest)
		if err == nil && ok {
			*img, found = view(tag, c), true
		}
		return err
	})
	return found
}

// pull fetches ref and records it for scope; release lets garbage
// collection have the content again.
func (m *Manager) pull(ctx context.Context, scope Scope, ref Reference, opts PullOptions) (model.Image, func(), error) {
	c, release, err := m.fetch(ctx, scope, ref, opts.Progress)
	if err != nil {
		return model.Image{}, nil, err
	}
	tag := model.ImageTag{Reference: ref.String(), App: scope.App, Public: opts.Public, Source: model.ImageSourcePull,
		Ref: ref.imageRef(c.Digest, c.Config.Labels), Digest: c.Digest, PulledAt: time.Now().UTC()}
	if c.IndexDigest != "" && ref.Digest() == c.IndexDigest {
		tag.Ref.Digest = c.Digest
	}
	if err := m.putTag(tag); err != nil {
		release()
		return model.Image{}, nil, err
	}
	img := view(tag, c)
	emit(opts.Progress, model.PullProgress{Phase: "done", Image: &img, Message: "pulled " + ref.String() + " as " + c.Digest})
	return img, release, nil
}

func (m *Manager) putTag(tag model.ImageTag) error {
	return m.cfg.Store.Update(func(tx *store.Tx) error {
		if tag.App != "" {
			if _, err := tx.App(tag.App); err != nil {
				return err
			}
		}
		return tx.PutImageTag(tag)
	})
}

// Resolved is what Resolve found.
type Resolved struct {
	Image model.Image
	// Note says how the reference was resolved when it is worth an event:
	// from the cache because the registry was unreachable, or pulled.
	Note string
}

// Resolve resolves reference for a machine of scope: a reference by
// digest or an imported one is taken from this host when scope sees it; a
// tag is looked up in its registry (a new digest is pulled: an update with
// the same tag is a deploy), falling back to the cached digest when the
// registry cannot be reached or refuses scope's credentials; an image
// scope does not have yet is pulled.
// The caller pins Image.Digest and then calls release.
func (m *Manager) Resolve(ctx context.Context, scope Scope, reference string) (Resolved, func(), error) {
	res, release, err := m.resolve(ctx, scope, reference)
	return res, release, classed(err)
}

func (m *Manager) resolve(ctx context.Context, scope Scope, reference string) (Resolved, func(), error) {
	ref, err := ParseReference(reference)
	if err != nil {
		return Resolved{}, nil, err
	}
	var tag model.ImageTag
	var content model.ImageContent
	var found bool
	err = m.cfg.Store.View(func(tx *store.Tx) error {
		t, ok, err := visible(tx, ref, scope)
		if err != nil || !ok {
			return err
		}
		c, ok, err := tx.ImageContent(t.Digest)
		tag, content, found = t, c, ok
		return err
	})
	if err != nil {
		return Resolved{}, nil, err
	}
	// A public image of the admin's is looked up, and pulled again when its
	// tag moved, with the admin's credentials, for the admin's reference:
	// the admin made the reference, not one digest, public.
	pullScope, opts := scope, PullOptions{}
	if found && tag.App == "" && !scope.Admin {
		pullScope, opts = Scope{Admin: true}, PullOptions{Public: tag.Public}
	}
	if found {
		release := m.lease(tag.Digest)
		if ref.Digest() != "" || tag.Source == model.ImageSourceImport {
			return Resolved{Image: view(tag, content)}, release, nil
		}
		current, herr := m.head(ctx, pullScope, ref)
		switch {
		case herr == nil && (current == tag.Digest || current == content.IndexDigest):
			return Resolved{Image: view(tag, content)}, release, nil
		case errors.Is(herr, ErrUnreachable), errors.Is(herr, ErrDenied):
			// The registry cannot tell now, or will not tell this caller
			// (an app whose image the admin pulled for it with the
			// daemon's credentials): the digest already granted stands.
			return Resolved{Image: view(tag, content),
				Note: fmt.Sprintf("%v; using the cached digest %s", herr, tag.Digest)}, release, nil
		case herr != nil:
			release()
			return Resolved{}, nil, herr
		}
		release()
	}
	img, release, err := m.pull(ctx, pullScope, ref, opts)
	if err != nil {
		return Resolved{}, nil, err
	}
	return Resolved{Image: img, Note: "pulled " + img.Digest}, release, nil
}

// keychain is the credentials a pull of scope uses.
func (m *Manager) keychain(scope Scope) (authn.Keychain, string) {
	if scope.Admin || m.cfg.ShareCredentials {
		return m.cfg.Keychain, "daemon"
	}
	return authn.NewMultiKeychain(), "anonymous"
}

func (m *Manager) remoteOptions(ctx context.Context, scope Scope) []remote.Option {
	kc, _ := m.keychain(scope)
	return []remote.Option{remote.WithContext(ctx), remote.WithTransport(m.transport), remote.WithAuthFromKeychain(kc),
		remote.WithPlatform(v1.Platform{OS: PlatformOS, Architecture: PlatformArch}), remote.WithUserAgent("torpor")}
}

// head asks the registry which digest ref names now.
func (m *Manager) head(ctx context.Context, scope Scope, ref Reference) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	desc, err := remote.Head(ref.ref, m.remoteOptions(ctx, scope)...)
	if err != nil {
		return "", classify(ref, err)
	}
	return desc.Digest.String(), nil
}

// flight is one pull in progress that callers with the same credentials
// and reference share. Its context ends when the last of them has gone.
// Its fields are guarded by Manager.mu.
type flight struct {
	m        *Manager
	done     chan struct{}
	cancel   context.CancelFunc
	waiters  int
	subs     []Progress
	finished bool
	content  model.ImageContent
	err      error
	leased   bool // the flight holds a lease on content until its last waiter has its own
}

func (f *flight) emit(p model.PullProgress) {
	f.m.mu.Lock()
	subs := slices.Clone(f.subs)
	f.m.mu.Unlock()
	for _, s := range subs {
		emit(s, p)
	}
}

func emit(p Progress, ev model.PullProgress) {
	if p != nil {
		p(ev)
	}
}

// fetch brings ref's linux/amd64 manifest, config and layers into the
// cache and unpacks them, once for all callers asking at the same time
// with the same credentials. The content is leased to the caller.
func (m *Manager) fetch(ctx context.Context, scope Scope, ref Reference, progress Progress) (model.ImageContent, func(), error) {
	_, creds := m.keychain(scope)
	key := creds + " " + ref.String()
	m.mu.Lock()
	f, joined := m.flights[key]
	if !joined {
		fctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		f = &flight{m: m, done: make(chan struct{}), cancel: cancel}
		m.flights[key] = f
		go m.fly(fctx, f, key, scope, ref)
	}
	f.waiters++
	if progress != nil {
		f.subs = append(f.subs, progress)
	}
	m.mu.Unlock()
	if joined {
		emit(progress, model.PullProgress{Phase: "resolve", Message: "waiting for a pull of " + ref.String() + " in progress"})
	}
	select {
	case <-f.done:
	case <-ctx.Done():
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	f.waiters--
	if !f.finished {
		if f.waiters == 0 {
			f.cancel()
		}
		return model.ImageContent{}, nil, ctx.Err()
	}
	if f.err != nil {
		return model.ImageContent{}, nil, f.err
	}
	release := m.leaseLocked(f.content.Digest)
	if f.waiters == 0 && f.leased {
		m.unleaseLocked(f.content.Digest)
		f.leased = false
	}
	return f.content, release, nil
}

// fly runs a flight.
func (m *Manager) fly(ctx context.Context, f *flight, key string, scope Scope, ref Reference) {
	begin := time.Now()
	var downloaded int64
	content, err := m.doFetch(ctx, scope, ref, f.emit, &downloaded)
	if m.cfg.OnPull != nil {
		m.cfg.OnPull(time.Since(begin), downloaded, err)
	}
	m.mu.Lock()
	delete(m.flights, key)
	f.finished, f.content, f.err = true, content, err
	if err == nil && f.waiters > 0 {
		m.leaseLocked(content.Digest)
		f.leased = true
	}
	m.mu.Unlock()
	close(f.done)
	f.cancel()
}

// doFetch does the work of fetch.
// downloaded adds up the compressed bytes of the layers it downloaded.
func (m *Manager) doFetch(ctx context.Context, scope Scope, ref Reference, progress Progress, downloaded *int64) (model.ImageContent, error) {
	emit(progress, model.PullProgress{Phase: "resolve", Message: "resolving " + ref.String()})
	opts := m.remoteOptions(ctx, scope)
	desc, err := remote.Get(ref.ref, opts...)
	if err != nil {
		return model.ImageContent{}, classify(ref, err)
	}
	img, indexDigest, err := chooseImage(ref, desc)
	if err != nil {
		return model.ImageContent{}, err
	}
	digest, err := img.Digest()
	if err != nil {
		return model.ImageContent{}, classify(ref, err)
	}
	return m.store(ctx, img, digest.String(), indexDigest, progress, downloaded)
}

// chooseImage picks the linux/amd64 image of what desc describes.
func chooseImage(ref Reference, desc *remote.Descriptor) (v1.Image, string, error) {
	switch desc.MediaType {
	case types.DockerManifestSchema1, types.DockerManifestSchema1Signed:
		return nil, "", fmt.Errorf("%w: %s is a Docker schema 1 image (deprecated since 2017); push it again with a current Docker", ErrUnsupported, ref)
	case types.OCIImageIndex, types.DockerManifestList:
	default:
		img, err := desc.Image()
		if err != nil {
			return nil, "", classify(ref, err)
		}
		return img, "", nil
	}
	idx, err := desc.ImageIndex()
	if err != nil {
		return nil, "", classify(ref, err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, "", classify(ref, err)
	}
	var have []string
	for _, child := range im.Manifests {
		p := child.Platform
		if p == nil {
			continue
		}
		if p.OS == PlatformOS && p.Architecture == PlatformArch && !child.MediaType.IsIndex() {
			img, err := idx.Image(child.Digest)
			if err != nil {
				return nil, "", classify(ref, err)
			}
			return img, desc.Digest.String(), nil
		}
		if p.OS != "unknown" {
			have = append(have, p.String())
		}
	}
	return nil, "", fmt.Errorf("%w: the index %s has no %s/%s image (it has: %s)", ErrUnsupported, ref, PlatformOS, PlatformArch,
		strings.Join(have, ", "))
}

// layerTypes are the layer media types torpor unpacks.
var layerTypes = []types.MediaType{types.DockerLayer, types.OCILayer, types.OCILayerZStd, types.OCIUncompressedLayer,
	types.DockerUncompressedLayer, "application/vnd.oci.image.layer.v1.tar"}

// store brings img's blobs into the cache (those not there yet), unpacks
// its root filesystem unless it exists and records its content. It holds
// the digest's lock, so one manifest is stored once at a time however it
// was named.
func (m *Manager) store(ctx context.Context, img v1.Image, digest, indexDigest string, progress Progress, downloaded *int64) (model.ImageContent, error) {
	unlock := m.digestLock(digest)
	defer unlock()
	if c, err := m.content(digest); err == nil {
		if _, err := os.Stat(m.rootfsPath(digest)); err == nil {
			if indexDigest != "" && c.IndexDigest == "" {
				c.IndexDigest = indexDigest
			}
			emit(progress, model.PullProgress{Phase: "resolve", Cached: true, Message: digest + " is already on this host"})
			return c, nil
		}
	}
	manifest, err := img.Manifest()
	if err != nil {
		return model.ImageContent{}, fmt.Errorf("%w: manifest: %v", ErrUnsupported, err)
	}
	limits := m.cfg.Limits
	if n := len(manifest.Layers); n > limits.MaxLayers {
		return model.ImageContent{}, fmt.Errorf("%w: %d layers, more than %d (the daemon's --image-max-layers)", ErrTooLarge, n, limits.MaxLayers)
	}
	c := model.ImageContent{Digest: digest, IndexDigest: indexDigest, Layers: len(manifest.Layers),
		Blobs: []string{manifest.Config.Digest.String()}}
	var total int64
	for _, l := range manifest.Layers {
		if !slices.Contains(layerTypes, l.MediaType) {
			return c, fmt.Errorf("%w: layer %s has media type %q", ErrUnsupported, l.Digest, l.MediaType)
		}
		total += l.Size
		c.Blobs = append(c.Blobs, l.Digest.String())
	}
	if total > limits.MaxBytes {
		return c, fmt.Errorf("%w: the layers are %d bytes compressed, more than %d (the daemon's --image-max-size)", ErrTooLarge, total, limits.MaxBytes)
	}
	defer m.lease(append([]string{digest}, c.Blobs...)...)()
	rawManifest, err := img.RawManifest()
	if err != nil {
		return c, err
	}
	rawConfig, err := img.RawConfigFile()
	if err != nil {
		return c, fmt.Errorf("%w: config: %v", ErrUnreachable, err)
	}
	for _, b := range []struct {
		digest string
		data   []byte
	}{{digest, rawManifest}, {manifest.Config.Digest.String(), rawConfig}} {
		if err := m.writeBlob(b.digest, int64(len(b.data)), strings.NewReader(string(b.data))); err != nil {
			return c, err
		}
	}
	cfg, err := parseConfig(rawConfig)
	if err != nil {
		return c, err
	}
	if len(cfg.RootFS.DiffIDs) != len(manifest.Layers) {
		return c, fmt.Errorf("%w: the config lists %d layers, the manifest %d", ErrCorruptLayer, len(cfg.RootFS.DiffIDs), len(manifest.Layers))
	}
	for i, l := range manifest.Layers {
		c.SizeBytes += l.Size
		p := model.PullProgress{Phase: "layer", Layer: l.Digest.String(), Index: i + 1, Layers: len(manifest.Layers), Total: l.Size}
		if m.haveBlob(l.Digest.String()) {
			p.Bytes, p.Cached, p.Message = l.Size, true, "already on this host"
			emit(progress, p)
			continue
		}
		layer, err := img.LayerByDigest(l.Digest)
		if err != nil {
			return c, classify(Reference{}, err)
		}
		rc, err := layer.Compressed()
		if err != nil {
			return c, classify(Reference{}, err)
		}
		emit(progress, p)
		err = m.writeBlob(l.Digest.String(), l.Size, &progressReader{r: rc, p: p, emit: progress})
		rc.Close()
		if err != nil {
			return c, err
		}
		if downloaded != nil {
			*downloaded += l.Size
		}
		p.Bytes = l.Size
		emit(progress, p)
	}
	c.SizeBytes += int64(len(rawManifest) + len(rawConfig))
	m.fault("image/after-blobs")
	return m.finishContent(ctx, c, cfg, progress)
}

// finishContent unpacks c's layers (its blobs are cached) and records it.
func (m *Manager) finishContent(ctx context.Context, c model.ImageContent, cfg *v1.ConfigFile, progress Progress) (model.ImageContent, error) {
	c.Config = imageConfig(cfg)
	c.Created = cfg.Created.UTC()
	emit(progress, model.PullProgress{Phase: "unpack", Layers: c.Layers, Message: fmt.Sprintf("unpacking %d layers", c.Layers)})
	stats, err := m.unpackBlobs(ctx, c, cfg.RootFS.DiffIDs, progress)
	if err != nil {
		return c, err
	}
	c.UnpackedBytes, c.SkippedDevices = stats.Bytes, stats.SkippedDevices
	err = m.cfg.Store.Update(func(tx *store.Tx) error { return tx.PutImageContent(c) })
	return c, err
}

// unpackBlobs unpacks c's layers from the cache into a new directory under
// tmp/, flushes it to disk and renames it into place.
func (m *Manager) unpackBlobs(ctx context.Context, c model.ImageContent, diffIDs []v1.Hash, progress Progress) (UnpackStats, error) {
	work, err := os.MkdirTemp(m.tmpDir(), "unpack-")
	if err != nil {
		return UnpackStats{}, err
	}
	defer os.RemoveAll(work)
	root := filepath.Join(work, "rootfs")
	if err := os.Mkdir(root, 0o755); err != nil {
		return UnpackStats{}, err
	}
	var layers []Layer
	for i, b := range c.Blobs[1:] {
		path, err := m.blobPath(b)
		if err != nil {
			return UnpackStats{}, err
		}
		diffID := ""
		if i < len(diffIDs) {
			diffID = diffIDs[i].String()
		}
		layers = append(layers, Layer{DiffID: diffID, Open: func() (io.ReadCloser, error) {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			return os.Open(path)
		}})
	}
	stats, err := Unpack(root, layers, m.cfg.Limits)
	if err != nil {
		return stats, err
	}
	if err := syncFS(root); err != nil {
		return stats, err
	}
	m.fault("image/after-unpack")
	dest := m.rootfsPath(c.Digest)
	if err := os.Rename(root, dest); err != nil {
		if _, serr := os.Stat(dest); serr != nil {
			return stats, err
		}
	}
	if err := syncDir(m.rootfsParent()); err != nil {
		return stats, err
	}
	m.fault("image/after-rename")
	return stats, nil
}

// syncFS flushes the file system holding dir: one syncfs(2) instead of an
// fsync per file of the image.
func syncFS(dir string) error {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.Syncfs(fd)
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

func (m *Manager) haveBlob(digest string) bool {
	path, err := m.blobPath(digest)
	if err != nil {
		return false
	}
	_, err = os.Stat(path)
	return err == nil
}

// writeBlob stores a blob read from r, which must hold size bytes with
// digest: it is written under tmp/, checked, flushed and renamed into
// place, so a blob in the cache is always whole and verified.
func (m *Manager) writeBlob(digest string, size int64, r io.Reader) error {
	dest, err := m.blobPath(digest)
	if err != nil {
		return err
	}
	if _, err := os.Stat(dest); err == nil {
		return nil
	}
	f, err := os.CreateTemp(m.tmpDir(), "blob-")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), io.LimitReader(r, size+1))
	if err != nil {
		return fmt.Errorf("%w: download %s: %v", ErrUnreachable, digest, err)
	}
	got := "sha256:" + hex.EncodeToString(h.Sum(nil))
	if n != size || got != digest {
		return fmt.Errorf("%w: blob %s: got %d bytes with digest %s, want %d bytes", ErrCorruptLayer, digest, n, got, size)
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), dest); err != nil {
		return err
	}
	return syncDir(m.blobDir())
}

// readConfigBlob reads and parses c's config from the cache.
func (m *Manager) readConfigBlob(c model.ImageContent) (*v1.ConfigFile, error) {
	path, err := m.blobPath(c.Blobs[0])
	if err != nil {
		return nil, err
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: the cached config of %s: %v (pull the image again)", ErrNotFound, c.Digest, err)
	}
	return parseConfig(data)
}

func parseConfig(data []byte) (*v1.ConfigFile, error) {
	var cfg v1.ConfigFile
	if err := json.Unmarshal(data, &cfg); err != nil {
		return nil, fmt.Errorf("%w: unreadable image config: %v", ErrUnsupported, err)
	}
	if (cfg.OS != "" && cfg.OS != PlatformOS) || (cfg.Architecture != "" && cfg.Architecture != PlatformArch) {
		return nil, fmt.Errorf("%w: the image is for %s/%s; torpor runs %s/%s", ErrUnsupported, cfg.OS, cfg.Architecture, PlatformOS, PlatformArch)
	}
	return &cfg, nil
}

// imageConfig keeps what running the image needs of its config.
func imageConfig(cfg *v1.ConfigFile) model.ImageConfig {
	c := cfg.Config
	out := model.ImageConfig{Entrypoint: c.Entrypoint, Cmd: c.Cmd, Env: c.Env, WorkingDir: c.WorkingDir, User: c.User,
		Labels: c.Labels, StopSignal: c.StopSignal}
	for p := range c.ExposedPorts {
		out.ExposedPorts = append(out.ExposedPorts, p)
	}
	sort.Strings(out.ExposedPorts)
	return out
}

// progressReader reports a layer's download every 512 KiB.
type progressReader struct {
	r    io.Reader
	p    model.PullProgress
	emit Progress
	last int64
}

func (pr *progressReader) Read(b []byte) (int, error) {
	n, err := pr.r.Read(b)
	pr.p.Bytes += int64(n)
	if pr.p.Bytes-pr.last >= 512<<10 {
		pr.last = pr.p.Bytes
		emit(pr.emit, pr.p)
	}
	return n, err
}

// classify wraps a registry client error in this package's error classes.
func classify(ref Reference, err error) error {
	if err == nil || errors.Is(err, context.Canceled) {
		return err
	}
	what := "the registry"
	if ref.ref != nil {
		what = ref.Registry()
	}
	var terr *transport.Error
	if errors.As(err, &terr) {
		for _, d := range terr.Errors {
			switch d.Code {
			case transport.ManifestUnknownErrorCode, transport.NameUnknownErrorCode, transport.BlobUnknownErrorCode:
				return fmt.Errorf("%w: %s has no %s (%v)", ErrNotFound, what, ref, err)
			case transport.UnauthorizedErrorCode, transport.DeniedErrorCode:
				return fmt.Errorf("%w: %s refused access to %s: %v (check the credentials in the daemon's Docker config file)", ErrDenied, what, ref, err)
			}
		}
		switch terr.StatusCode {
		case http.StatusNotFound:
			return fmt.Errorf("%w: %s has no %s (%v)", ErrNotFound, what, ref, err)
		case http.StatusUnauthorized, http.StatusForbidden:
			return fmt.Errorf("%w: %s refused access to %s: %v (check the credentials in the daemon's Docker config file)", ErrDenied, what, ref, err)
		}
		return fmt.Errorf("%w: %s answered %v", ErrUnreachable, what, err)
	}
	// Everything else (refused connections, DNS, timeouts, TLS, plain HTTP
	// refused, a connection cut mid-download) means the registry could
	// not be used now.
	return fmt.Errorf("%w: %s: %v", ErrUnreachable, what, err)
}

// errPlainHTTP is what schemeGuard answers for plain HTTP to a registry
// not listed as insecure.
var errPlainHTTP = errors.New("plain HTTP refused")

// schemeGuard refuses plain HTTP except to the insecure registries (the
// registry client otherwise falls back to HTTP for private and loopback
// addresses on its own).
type schemeGuard struct {
	next     http.RoundTripper
	insecure []string
}

func (g *schemeGuard) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme == "http" && !slices.Contains(g.insecure, req.URL.Host) {
		return nil, fmt.Errorf("%w to %s: only registries given with --insecure-registry are spoken to without TLS", errPlainHTTP, req.URL.Host)
	}
	return g.next.RoundTrip(req)
}

func defaultTransport() http.RoundTripper {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.DialContext = (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	t.TLSHandshakeTimeout = 10 * time.Second
	t.ResponseHeaderTimeout = time.Minute
	t.Proxy = http.ProxyFromEnvironment
	return t
}

// Fetch brings the content of a pinned image (ref.Digest set, from
// ref.Registry) to this host when it is not here, by digest, so that what
// arrives is what the config version pinned: a machine that moved from
// another cluster host, or whose image was removed by hand. It records no
// reference: the machine's config version is what keeps the content from
// garbage collection. scope's credentials are used (see Config.ShareCredentials).
func (m *Manager) Fetch(ctx context.Context, scope Scope, ref model.ImageRef) error {
	if ref.Digest == "" || ref.Registry == "" {
		return fmt.Errorf("%w: no registry to fetch image %q from", ErrNotFound, ref.Digest)
	}
	if _, err := m.content(ref.Digest); err == nil {
		return nil
	}
	r, err := ParseReference(ref.Registry + "/" + ref.Repository + "@" + ref.Digest)
	if err != nil {
		return classed(err)
	}
	_, release, err := m.fetch(ctx, scope, r, nil)
	if err != nil {
		return classed(err)
	}
	release()
	return nil
}
