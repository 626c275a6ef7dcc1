package image

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"

	"github.com/torpor-dev/torpor/internal/model"
	"github.com/torpor-dev/torpor/internal/store"
)

// Error classes. Every error of this package wraps one of them (or one of
// the unpacking errors, or a context error).
var (
	ErrBadReference = errors.New("invalid image reference")
	// ErrNotFound: the registry has no such image, or no visible image has
	// that reference here.
	ErrNotFound = errors.New("image not found")
	// ErrDenied: the registry refused the credentials (or wants some).
	ErrDenied = errors.New("registry denied access")
	// ErrUnreachable: the registry could not be reached or failed.
	ErrUnreachable = errors.New("registry unreachable")
	// ErrUnsupported: the image is not one torpor can run (no linux/amd64
	// manifest, Docker schema 1, an unknown layer type).
	ErrUnsupported = errors.New("unsupported image")
	// ErrInUse: a machine runs the image.
	ErrInUse = errors.New("image in use")
	// ErrForbidden: the caller may not do this (e.g. an app making an
	// image public).
	ErrForbidden = errors.New("forbidden")
)

// Platform is the only platform torpor runs.
const (
	PlatformOS   = "linux"
	PlatformArch = "amd64"
)

// Scope says who asks. An app's scope sees the app's own references and
// the public ones; the admin's sees every reference and uses the daemon's
// registry credentials.
type Scope struct {
	// App is the app the references belong to ("" for the admin's own).
	App string
	// Admin is set for the admin (the local socket or an admin token).
	Admin bool
}

// Config configures a Manager.
type Config struct {
	// Dir holds the blobs and root filesystems (DATA_DIR/oci).
	Dir   string
	Store *store.Store
	// InsecureRegistries are HOST:PORT on loopback spoken to over plain
	// HTTP (see CheckInsecureRegistry); every other registry needs HTTPS.
	InsecureRegistries []string
	// Keychain finds the daemon's registry credentials; default
	// authn.DefaultKeychain (the Docker config file: $DOCKER_CONFIG or
	// ~/.docker/config.json, and its credential helpers).
	Keychain authn.Keychain
	// ShareCredentials lets pulls by app tokens use the daemon's
	// credentials too. Off, an app's pulls are anonymous, so that no app
	// can pull a private image through credentials meant for another.
	ShareCredentials bool
	// Limits bound each image (defaults: DefaultLimits).
	Limits Limits
	// Transport is the HTTP transport under the registry client (default:
	// a clone of http.DefaultTransport with bounded dial and handshake
	// times). Plain HTTP is refused on it except to InsecureRegistries.
	Transport http.RoundTripper
	// OnPull, if set, is told of every fetch from a registry that this
	// host ran (one per single-flight pull): how long it took, the
	// compressed bytes it downloaded (cached layers not counted) and how
	// it ended. The metrics count pulls with it.
	OnPull func(took time.Duration, downloaded int64, err error)
	Logger *slog.Logger
}

// Manager keeps the images of one daemon. It is safe for concurrent use.
type Manager struct {
	cfg       Config
	log       *slog.Logger
	transport http.RoundTripper

	mu      sync.Mutex
	leases  map[string]int         // digests (blobs, manifests) held by work in progress
	flights map[string]*flight     // pulls in progress, by credentials and reference
	digests map[string]*sync.Mutex // one fetch+unpack per manifest digest at a time

	// faultFn is the armed fault function of a test build (SetFault).
	faultFn atomic.Pointer[func(point string)]
}

// New opens the image cache in cfg.Dir, deleting what a previous daemon
// left unfinished (tmp/) and content nothing refers to.
func New(cfg Config) (*Manager, error) {
	if cfg.Keychain == nil {
		cfg.Keychain = authn.DefaultKeychain
	}
	cfg.Limits = cfg.Limits.withDefaults()
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	for _, r := range cfg.InsecureRegistries {
		if err := CheckInsecureRegistry(r); err != nil {
			return nil, err
		}
	}
	m := &Manager{cfg: cfg, log: cfg.Logger, leases: map[string]int{}, flights: map[string]*flight{},
		digests: map[string]*sync.Mutex{}}
	m.transport = &schemeGuard{next: cfg.Transport, insecure: cfg.InsecureRegistries}
	if cfg.Transport == nil {
		m.transport.(*schemeGuard).next = defaultTransport()
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, err
	}
	if err := os.Chmod(cfg.Dir, 0o700); err != nil {
		return nil, err
	}
	if err := os.RemoveAll(m.tmpDir()); err != nil {
		return nil, fmt.Errorf("images: clean %s: %w", m.tmpDir(), err)
	}
	for _, d := range []string{m.tmpDir(), m.blobDir(), m.rootfsParent()} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
	}
	if _, err := m.collect(); err != nil {
		return nil, fmt.Errorf("images: garbage collection at start-up: %w", err)
	}
	return m, nil
}

func (m *Manager) tmpDir() string       { return filepath.Join(m.cfg.Dir, "tmp") }
func (m *Manager) blobDir() string      { return filepath.Join(m.cfg.Dir, "blobs", "sha256") }
func (m *Manager) rootfsParent() string { return filepath.Join(m.cfg.Dir, "rootfs") }

// blobPath is where the blob with digest ("sha256:HEX") is kept.
func (m *Manager) blobPath(digest string) (string, error) {
	hex, ok := strings.CutPrefix(digest, "sha256:")
	if !ok || len(hex) != 64 || strings.Trim(hex, "0123456789abcdef") != "" {
		return "", fmt.Errorf("%w: digest %q is not sha256:<64 hex digits>", ErrUnsupported, digest)
	}
	return filepath.Join(m.blobDir(), hex), nil
}

// rootfsPath is where the root filesystem of the manifest digest is kept.
func (m *Manager) rootfsPath(digest string) string {
	return filepath.Join(m.rootfsParent(), strings.Replace(digest, ":", "-", 1))
}

// lease keeps digests from garbage collection until release is called.
func (m *Manager) lease(digests ...string) (release func()) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.leaseLocked(digests...)
}

// leaseLocked is lease with m.mu held.
func (m *Manager) leaseLocked(digests ...string) (release func()) {
	for _, d := range digests {
		m.leases[d]++
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			m.mu.Lock()
			defer m.mu.Unlock()
			m.unleaseLocked(digests...)
		})
	}
}

// unleaseLocked drops one lease on each of digests, with m.mu held.
func (m *Manager) unleaseLocked(digests ...string) {
	for _, d := range digests {
		if m.leases[d]--; m.leases[d] <= 0 {
			delete(m.leases, d)
		}
	}
}

// digestLock serializes fetching and unpacking one manifest digest.
func (m *Manager) digestLock(digest string) func() {
	m.mu.Lock()
	l, ok := m.digests[digest]
	if !ok {
		l = &sync.Mutex{}
		m.digests[digest] = l
	}
	m.mu.Unlock()
	l.Lock()
	return l.Unlock
}

// visible finds the record reference resolves to for scope: the app's
// own, else an admin's one (public ones only, unless scope is the admin's).
// A reference pinned by digest also matches any visible record of the same
// repository that resolved to that digest.
func visible(tx *store.Tx, ref Reference, scope Scope) (model.ImageTag, bool, error) {
	owners := []string{scope.App}
	if scope.App != "" {
		owners = append(owners, "")
	}
	for _, owner := range owners {
		tag, ok, err := tx.ImageTag(owner, ref.String())
		if err != nil || (ok && canSee(tag, scope)) {
			return tag, ok, err
		}
	}
	if ref.Digest() == "" {
		return model.ImageTag{}, false, nil
	}
	for _, owner := range owners {
		tags, err := tx.ImageTags(owner, false)
		if err != nil {
			return model.ImageTag{}, false, err
		}
		for _, tag := range tags {
			if canSee(tag, scope) && (tag.Digest == ref.Digest() || tag.Ref.Digest == ref.Digest()) &&
				tag.Ref.Registry == ref.Registry() && tag.Ref.Repository == ref.ref.Context().RepositoryStr() {
				return tag, true, nil
			}
		}
	}
	return model.ImageTag{}, false, nil
}

// canSee reports whether scope may use tag.
func canSee(tag model.ImageTag, scope Scope) bool {
	return scope.Admin || tag.App == scope.App || (tag.App == "" && tag.Public)
}

// view turns a tag and its content into the API's image.
func view(tag model.ImageTag, c model.ImageContent) model.Image {
	return model.Image{Reference: tag.Reference, App: tag.App, Public: tag.Public, Source: tag.Source,
		Ref: tag.Ref, PulledAt: tag.PulledAt, ImageContent: c}
}

// List returns the images scope sees: with an app, the app's and the
// public ones; the admin without an app sees all.
func (m *Manager) List(ctx context.Context, scope Scope) ([]model.Image, error) {
	out, err := m.list(scope)
	return out, classed(err)
}

func (m *Manager) list(scope Scope) ([]model.Image, error) {
	var out []model.Image
	err := m.cfg.Store.View(func(tx *store.Tx) error {
		all := scope.Admin && scope.App == ""
		tags, err := tx.ImageTags(scope.App, all)
		if err != nil {
			return err
		}
		if !all {
			admin, err := tx.ImageTags("", false)
			if err != nil {
				return err
			}
			tags = append(tags, admin...)
		}
		for _, tag := range tags {
			if !all && !canSee(tag, Scope{App: scope.App}) {
				continue
			}
			c, _, err := tx.ImageContent(tag.Digest)
			if err != nil {
				return err
			}
			out = append(out, view(tag, c))
		}
		return nil
	})
	sort.Slice(out, func(i, j int) bool {
		if out[i].App != out[j].App {
			return out[i].App < out[j].App
		}
		return out[i].Reference < out[j].Reference
	})
	return out, err
}

// Get returns the image reference resolves to for scope, with the machines
// that use it.
func (m *Manager) Get(ctx context.Context, scope Scope, reference string) (model.Image, error) {
	img, err := m.get(scope, reference)
	return img, classed(err)
}

func (m *Manager) get(scope Scope, reference string) (model.Image, error) {
	ref, err := ParseReference(reference)
	if err != nil {
		return model.Image{}, err
	}
	var img model.Image
	err = m.cfg.Store.View(func(tx *store.Tx) error {
		tag, ok, err := visible(tx, ref, scope)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("%w: no image %s here (pull or import it first)", ErrNotFound, ref)
		}
		c, _, err := tx.ImageContent(tag.Digest)
		if err != nil {
			return err
		}
		img = view(tag, c)
		users, err := tx.ImageUsers()
		img.UsedBy = users[tag.Digest]
		return err
	})
	return img, err
}

// Content returns the stored content of a manifest digest.
func (m *Manager) Content(digest string) (model.ImageContent, error) {
	c, err := m.content(digest)
	return c, classed(err)
}

func (m *Manager) content(digest string) (model.ImageContent, error) {
	var c model.ImageContent
	var ok bool
	err := m.cfg.Store.View(func(tx *store.Tx) (err error) {
		c, ok, err = tx.ImageContent(digest)
		return err
	})
	if err == nil && !ok {
		err = fmt.Errorf("%w: no image content %s on this host", ErrNotFound, digest)
	}
	return c, err
}

// RootFS returns the root filesystem directory of the manifest digest,
// unpacking it again from the cached blobs if it went missing.
func (m *Manager) RootFS(ctx context.Context, digest string) (string, error) {
	dir, err := m.rootFS(ctx, digest)
	return dir, classed(err)
}

func (m *Manager) rootFS(ctx context.Context, digest string) (string, error) {
	c, err := m.content(digest)
	if err != nil {
		return "", err
	}
	dir := m.rootfsPath(digest)
	if fi, err := os.Stat(dir); err == nil && fi.IsDir() {
		return dir, nil
	}
	defer m.lease(append([]string{digest}, c.Blobs...)...)()
	unlock := m.digestLock(digest)
	defer unlock()
	if _, err := os.Stat(dir); err == nil {
		return dir, nil
	}
	m.log.Warn("image root filesystem missing; unpacking it again from the cached blobs", "digest", digest)
	cfg, err := m.readConfigBlob(c)
	if err != nil {
		return "", err
	}
	if _, err := m.unpackBlobs(ctx, c, cfg.RootFS.DiffIDs, nil); err != nil {
		return "", err
	}
	return dir, nil
}

// Remove deletes a reference owned by scope (an app's, or with the admin's
// scope an admin one). A reference whose image a machine of the owner
// uses is only removed with force; the content itself stays while anything
// refers to it (see Prune).
func (m *Manager) Remove(ctx context.Context, scope Scope, reference string, force bool) (model.PruneImagesResult, error) {
	res, err := m.remove(scope, reference, force)
	return res, classed(err)
}

func (m *Manager) remove(scope Scope, reference string, force bool) (model.PruneImagesResult, error) {
	ref, err := ParseReference(reference)
	if err != nil {
		return model.PruneImagesResult{}, err
	}
	err = m.cfg.Store.Update(func(tx *store.Tx) error {
		tag, ok, err := tx.ImageTag(scope.App, ref.String())
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("%w: no image %s owned by %s", ErrNotFound, ref, ownerName(scope.App))
		}
		if !force {
			users, err := tagUsers(tx, tag)
			if err != nil {
				return err
			}
			if len(users) > 0 {
				return fmt.Errorf("%w: %s is used by %s; remove with force to delete the reference anyway "+
					"(the content stays until nothing uses it)", ErrInUse, ref, strings.Join(users, ", "))
			}
		}
		return tx.DeleteImageTag(tag.App, tag.Reference)
	})
	if err != nil {
		return model.PruneImagesResult{}, err
	}
	res, err := m.collect()
	res.References = append([]string{ref.String()}, res.References...)
	return res, err
}

func ownerName(app string) string {
	if app == "" {
		return "the admin"
	}
	return "app " + app
}

// tagUsers lists what uses tag's image among the machines that may have
// resolved through tag: the owner app's (any app's for an admin record).
func tagUsers(tx *store.Tx, tag model.ImageTag) ([]string, error) {
	users, err := tx.ImageUsers()
	if err != nil || tag.App == "" {
		return users[tag.Digest], err
	}
	var out []string
	for _, u := range users[tag.Digest] {
		id := u[strings.LastIndexByte(u, ' ')+1:]
		mc, err := tx.Machine(id)
		if err != nil {
			return nil, err
		}
		if mc.App == tag.App {
			out = append(out, u)
		}
	}
	return out, nil
}

// Prune deletes the content that nothing refers to. With all, it first
// removes scope's references that no machine uses (the admin's scope
// without an app: every owner's).
func (m *Manager) Prune(ctx context.Context, scope Scope, all bool) (model.PruneImagesResult, error) {
	res, err := m.prune(scope, all)
	return res, classed(err)
}

func (m *Manager) prune(scope Scope, all bool) (model.PruneImagesResult, error) {
	var removed []string
	if all {
		err := m.cfg.Store.Update(func(tx *store.Tx) error {
			tags, err := tx.ImageTags(scope.App, scope.Admin && scope.App == "")
			if err != nil {
				return err
			}
			for _, tag := range tags {
				users, err := tagUsers(tx, tag)
				if err != nil {
					return err
				}
				if len(users) > 0 {
					continue
				}
				if err := tx.DeleteImageTag(tag.App, tag.Reference); err != nil {
					return err
				}
				removed = append(removed, tag.Reference)
			}
			return nil
		})
		if err != nil {
			return model.PruneImagesResult{}, err
		}
	}
	res, err := m.collect()
	res.References = removed
	return res, err
}

// Usage is the image content this host keeps: how many manifests, and
// about the disk space they take: their compressed blobs plus their
// unpacked layers (the tar streams' size, close to the root filesystem's).
func (m *Manager) Usage() (images int, bytes int64, err error) {
	err = m.cfg.Store.View(func(tx *store.Tx) error {
		cs, err := tx.ImageContents()
		for _, c := range cs {
			images++
			bytes += c.SizeBytes + c.UnpackedBytes
		}
		return err
	})
	return images, bytes, err
}
