package machine

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/torpor-dev/torpor/internal/image"
	"github.com/torpor-dev/torpor/internal/model"
	"github.com/torpor-dev/torpor/internal/runtime"
)

// Images resolves OCI image references and serves their root filesystems;
// package image implements it.
type Images interface {
	// Resolve resolves a reference for a machine of scope's app, pulling
	// it if needed; the caller pins the digest, then calls release.
	Resolve(ctx context.Context, scope image.Scope, reference string) (image.Resolved, func(), error)
	// RootFS is the unpacked root filesystem of a manifest digest.
	RootFS(ctx context.Context, digest string) (string, error)
	// Content is what the store has of a manifest digest (its config).
	Content(digest string) (model.ImageContent, error)
	// Fetch brings a pinned image that is not on this host from its
	// registry, by digest.
	Fetch(ctx context.Context, scope image.Scope, ref model.ImageRef) error
	// Prune deletes the image content nothing refers to (all: and the
	// references of scope no machine uses).
	Prune(ctx context.Context, scope image.Scope, all bool) (model.PruneImagesResult, error)
}

// pinnedImage is what config.image resolved to when a config version was
// made: an OCI image pinned by digest, or a root filesystem directory.
type pinnedImage struct {
	ref     model.ImageRef
	content *model.ImageContent // nil for a directory
	rootfs  string
	note    string // how it was resolved, when worth an event (e.g. the registry was unreachable)
	release func()
}

// isDirImage reports whether image names a root filesystem directory: an
// absolute path, or a name that exists under ImagesDir. Anything else is an
// OCI image reference.
func (m *Manager) isDirImage(name string) bool {
	if filepath.IsAbs(name) {
		return true
	}
	if !imageNameRe.MatchString(name) || slices.Contains(strings.Split(name, "/"), "..") {
		return false
	}
	_, err := os.Lstat(filepath.Join(m.cfg.ImagesDir, strings.ReplaceAll(name, ":", "_")))
	return err == nil
}

// checkImage checks config.image without resolving an OCI reference
// (resolveImage does, once the rest of the config is known to be valid).
func (m *Manager) checkImage(cfg *model.MachineConfig) error {
	if m.cfg.Images == nil || cfg.Image == "" || m.isDirImage(cfg.Image) {
		_, err := m.rootfs(cfg.Image)
		return err
	}
	if _, err := image.ParseReference(cfg.Image); err != nil {
		return invalid("config.image %q is neither a root filesystem directory nor a valid image reference: %v", cfg.Image,
			strings.TrimPrefix(err.Error(), image.ErrBadReference.Error()+" "))
	}
	return nil
}

// resolveImage resolves cfg.Image for a new config version of a machine of
// app, and checks what depends on the image (the command, the user). A
// directory is only for the admin: a tenant's config must name an OCI
// image, which it sees only if its app pulled or imported it or the admin
// made it public (else it is pulled, anonymously unless the daemon shares
// its credentials). Errors name config.image.
func (m *Manager) resolveImage(ctx context.Context, app string, cfg *model.MachineConfig) (pinnedImage, error) {
	if m.cfg.Images == nil || m.isDirImage(cfg.Image) {
		if err := m.checkTenantImage(ctx, cfg); err != nil {
			return pinnedImage{}, err
		}
		dir, err := m.rootfs(cfg.Image)
		if err != nil {
			return pinnedImage{}, err
		}
		if err := checkCommand(cfg, nil); err != nil {
			return pinnedImage{}, err
		}
		return pinnedImage{ref: model.ImageRef{Repository: cfg.Image}, rootfs: dir, release: func() {}}, nil
	}
	res, release, err := m.cfg.Images.Resolve(ctx, image.Scope{App: app, Admin: !model.IsTenant(ctx)}, cfg.Image)
	if err != nil {
		return pinnedImage{}, imageError(cfg.Image, err)
	}
	p := pinnedImage{ref: res.Image.Ref, content: &res.Image.ImageContent, note: res.Note, release: release}
	p.ref.Digest = res.Image.Digest
	fail := func(err error) (pinnedImage, error) {
		release()
		return pinnedImage{}, err
	}
	if p.rootfs, err = m.cfg.Images.RootFS(ctx, p.ref.Digest); err != nil {
		return fail(imageError(cfg.Image, err))
	}
	if err := checkCommand(cfg, &p.content.Config); err != nil {
		return fail(err)
	}
	if _, err := image.LookupUser(p.rootfs, p.content.Config.User); err != nil {
		return fail(invalid("config.image %q: %v", cfg.Image, err))
	}
	return p, nil
}

// checkTenantImage refuses a host directory as a tenant's config.image,
// before anything looks at the directory (so a tenant learns nothing of
// the host's files from the error).
func (m *Manager) checkTenantImage(ctx context.Context, cfg *model.MachineConfig) error {
	if !model.IsTenant(ctx) || (m.cfg.Images != nil && !m.isDirImage(cfg.Image)) {
		return nil
	}
	return model.Errorf(model.KindForbidden,
		"config.image %q is a root filesystem directory on the daemon's host, which only the admin may run; "+
			"an app token runs OCI images (name[:tag][@digest]) its app pulled or imported, or public ones", cfg.Image)
}

// imageError names config.image in an error of package image, keeping its
// class: a bad reference, a missing or unusable image are bad input (400),
// a registry that refused access is 403, one that could not be reached
// 503 (retry later), an image over the daemon's limits 422.
func imageError(ref string, err error) error {
	kind := model.KindOf(err)
	switch kind {
	case model.KindNotFound, model.KindInternal:
		if errors.Is(err, context.Canceled) {
			return err
		}
		if kind == model.KindNotFound {
			kind = model.KindInvalid
		}
	}
	return model.Errorf(kind, "config.image %q: %w", ref, err)
}

// checkCommand checks that the machine has a command: init.exec or
// init.entrypoint/cmd, else the image's entrypoint or cmd (img is nil for a
// root filesystem directory, which has none).
func checkCommand(cfg *model.MachineConfig, img *model.ImageConfig) error {
	cmd := processArgs(cfg, img)
	if len(cmd) == 0 {
		if img == nil {
			return invalid("config.init: set exec, or entrypoint and/or cmd (a root filesystem directory has no default command)")
		}
		return invalid("config.init: set exec, or entrypoint and/or cmd: the image %q has no entrypoint or cmd", cfg.Image)
	}
	if cmd[0] == "" {
		return invalid("config.init: the command's first word (the program) must not be empty")
	}
	return nil
}

// processArgs is the process a config runs, with Fly's precedence:
// init.exec replaces everything; otherwise init.entrypoint replaces the
// image's entrypoint and init.cmd its cmd, and (as in Docker) a new
// entrypoint drops the image's cmd.
func processArgs(cfg *model.MachineConfig, img *model.ImageConfig) []string {
	if len(cfg.Init.Exec) > 0 {
		return cfg.Init.Exec
	}
	if img == nil {
		img = &model.ImageConfig{}
	}
	entrypoint, cmd := img.Entrypoint, img.Cmd
	if len(cfg.Init.Entrypoint) > 0 {
		entrypoint, cmd = cfg.Init.Entrypoint, nil
	}
	if len(cfg.Init.Cmd) > 0 {
		cmd = cfg.Init.Cmd
	}
	return append(append([]string{}, entrypoint...), cmd...)
}

// bootImage is what a boot or restore of mc runs on.
type bootImage struct {
	rootfs   string
	identity string // for the snapshot seal: "oci:DIGEST" or "dir:PATH"
	config   *model.ImageConfig
	user     runtime.User
}

// imageOf finds the root filesystem of mc's config version: its pinned
// digest's (unpacked again if it went missing), or its directory, resolved
// again at every boot (the admin may point a name at another one).
func (m *Manager) imageOf(ctx context.Context, mc model.Machine) (bootImage, error) {
	if mc.ImageRef.Digest == "" {
		dir, err := m.rootfs(mc.Config.Image)
		return bootImage{rootfs: dir, identity: "dir:" + dir}, err
	}
	if m.cfg.Images == nil {
		return bootImage{}, fmt.Errorf("machine %s runs the OCI image %s, but this daemon has no image store", mc.ID, mc.ImageRef.Digest)
	}
	c, err := m.cfg.Images.Content(mc.ImageRef.Digest)
	if errors.Is(err, image.ErrNotFound) && mc.ImageRef.Registry != "" {
		// Not on this host (the machine moved here from another cluster
		// host, or the image was removed): fetch the pinned digest, which
		// this machine's app was granted when the config version was made.
		if ferr := m.cfg.Images.Fetch(ctx, image.Scope{App: mc.App, Admin: true}, mc.ImageRef); ferr != nil {
			return bootImage{}, fmt.Errorf("image %s is not on this host and fetching it from %s failed: %w",
				mc.ImageRef.Digest, mc.ImageRef.Registry, ferr)
		}
		c, err = m.cfg.Images.Content(mc.ImageRef.Digest)
	}
	if err != nil {
		return bootImage{}, fmt.Errorf("image %s: %w", mc.ImageRef.Digest, err)
	}
	dir, err := m.cfg.Images.RootFS(ctx, mc.ImageRef.Digest)
	if err != nil {
		return bootImage{}, fmt.Errorf("image %s: %w", mc.ImageRef.Digest, err)
	}
	u, err := image.LookupUser(dir, c.Config.User)
	if err != nil {
		return bootImage{}, fmt.Errorf("image %s: %w", mc.ImageRef.Digest, err)
	}
	return bootImage{rootfs: dir, identity: "oci:" + mc.ImageRef.Digest, config: &c.Config,
		user: runtime.User{UID: u.UID, GID: u.GID, AdditionalGIDs: u.AdditionalGIDs}}, nil
}

// imageIdentity is the identity of the root filesystem mc would boot on
// now (see bootImage.identity); "" when it cannot be found.
func (m *Manager) imageIdentity(mc model.Machine) string {
	if mc.ImageRef.Digest != "" {
		return "oci:" + mc.ImageRef.Digest
	}
	dir, err := m.rootfs(mc.Config.Image)
	if err != nil {
		return "dir-missing:" + mc.Config.Image
	}
	return "dir:" + dir
}

// bootedImageFile records the identity of the root filesystem the machine's
// sandbox was last booted or restored on, for the seal of its next snapshot.
func (m *Manager) bootedImageFile(id string) string { return filepath.Join(m.machineDir(id), "image") }

func (m *Manager) recordBootedImage(id, identity string) error {
	path := m.bootedImageFile(id)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(identity), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// bootedImage is the identity recordBootedImage last wrote for the
// machine; without one (a sandbox booted before images were sealed) the
// identity its config resolves to now.
func (m *Manager) bootedImage(mc model.Machine) string {
	if data, err := os.ReadFile(m.bootedImageFile(mc.ID)); err == nil && len(data) > 0 {
		return string(data)
	}
	return m.imageIdentity(mc)
}

// imageEnv is the environment of the machine's process: the image's
// variables, then Fly's, then config.env, each overriding the ones before
// it; PATH defaults to the usual one when the image sets none.
func imageEnv(img *model.ImageConfig, fly []string, env map[string]string) []string {
	out := []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	at := map[string]int{"PATH": 0}
	set := func(kv string) {
		k, _, _ := strings.Cut(kv, "=")
		if i, ok := at[k]; ok {
			out[i] = kv
			return
		}
		at[k] = len(out)
		out = append(out, kv)
	}
	if img != nil {
		for _, kv := range img.Env {
			if strings.Contains(kv, "=") {
				set(kv)
			}
		}
	}
	for _, kv := range fly {
		set(kv)
	}
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		set(k + "=" + env[k])
	}
	return out
}

// imageRefEnv is FLY_IMAGE_REF: the reference the machine runs, pinned.
func imageRefEnv(mc model.Machine) string {
	r := mc.ImageRef
	if r.Digest == "" {
		return mc.Config.Image
	}
	s := r.Registry + "/" + r.Repository
	if r.Tag != "" {
		s += ":" + r.Tag
	}
	return s + "@" + r.Digest
}
