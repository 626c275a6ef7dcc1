package image

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/torpor-dev/torpor/internal/model"
)

// ImportOptions are the options of Import.
type ImportOptions struct {
	// Name names the archive's image (it must hold exactly one); without
	// it, the names recorded in the archive are used.
	Name string
	// Public (admin only) makes the admin's references usable by every app.
	Public   bool
	Progress Progress
}

// Import loads the images of a `docker save` tarball or of an OCI image
// layout in a tarball, read from r, for scope. Their references never
// resolve against a registry: they name what was imported until pulled or
// imported again.
func (m *Manager) Import(ctx context.Context, scope Scope, r io.Reader, opts ImportOptions) ([]model.Image, error) {
	out, err := m.importArchive(ctx, scope, r, opts)
	return out, classed(err)
}

func (m *Manager) importArchive(ctx context.Context, scope Scope, r io.Reader, opts ImportOptions) ([]model.Image, error) {
	if opts.Public && (!scope.Admin || scope.App != "") {
		return nil, fmt.Errorf("%w: only the admin's own images (no app) can be made public", ErrForbidden)
	}
	var named *Reference
	if opts.Name != "" {
		ref, err := ParseReference(opts.Name)
		if err != nil {
			return nil, err
		}
		named = &ref
	}
	work, err := os.MkdirTemp(m.tmpDir(), "import-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	archive := filepath.Join(work, "archive.tar")
	names, err := m.spool(r, archive)
	if err != nil {
		return nil, err
	}
	var images []namedImage
	switch {
	case names["index.json"] && names["oci-layout"]:
		images, err = ociLayoutImages(archive, filepath.Join(work, "layout"))
	case names["manifest.json"]:
		images, err = dockerSaveImages(archive)
	default:
		err = fmt.Errorf("%w: the archive is neither a `docker save` tarball (manifest.json) nor an OCI layout (oci-layout, index.json)", ErrUnsupported)
	}
	if err != nil {
		return nil, err
	}
	if len(images) == 0 {
		return nil, fmt.Errorf("%w: the archive holds no image", ErrUnsupported)
	}
	if named != nil {
		if len(images) > 1 {
			return nil, fmt.Errorf("%w: the archive holds %d images; a name can only be given to one", ErrBadReference, len(images))
		}
		images[0].ref = named
	}
	var out []model.Image
	for _, ni := range images {
		if ni.ref == nil {
			return out, fmt.Errorf("%w: an image of the archive has no name; give one (torpor image import --name)", ErrBadReference)
		}
		digest, err := ni.img.Digest()
		if err != nil {
			return out, fmt.Errorf("%w: %v", ErrUnsupported, err)
		}
		c, err := m.store(ctx, ni.img, digest.String(), "", opts.Progress, nil)
		if err != nil {
			return out, err
		}
		tag := model.ImageTag{Reference: ni.ref.String(), App: scope.App, Public: opts.Public, Source: model.ImageSourceImport,
			Ref: ni.ref.imageRef(c.Digest, c.Config.Labels), Digest: c.Digest, PulledAt: time.Now().UTC()}
		err = m.putTag(tag)
		if err != nil {
			return out, err
		}
		img := view(tag, c)
		emit(opts.Progress, model.PullProgress{Phase: "done", Image: &img, Message: "imported " + tag.Reference + " as " + c.Digest})
		out = append(out, img)
	}
	return out, nil
}

type namedImage struct {
	img v1.Image
	ref *Reference
}

// spool copies r to dest (at most the size limit) and returns the names
// of the tar's regular files.
func (m *Manager) spool(r io.Reader, dest string) (map[string]bool, error) {
	f, err := os.Create(dest)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	limit := m.cfg.Limits.MaxBytes
	n, err := io.Copy(f, io.LimitReader(r, limit+1))
	if err != nil {
		return nil, fmt.Errorf("reading the archive: %w", err)
	}
	if n > limit {
		return nil, fmt.Errorf("%w: the archive is larger than %d bytes (the daemon's --image-max-size)", ErrTooLarge, limit)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	names := map[string]bool{}
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return names, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%w: the archive is not a tar file: %v", ErrUnsupported, err)
		}
		if hdr.Typeflag == tar.TypeReg {
			names[path.Clean(hdr.Name)] = true
		}
	}
}

// blobNameRe is the only kind of blob path an OCI layout may hold.
var blobNameRe = regexp.MustCompile(`^blobs/sha256/[0-9a-f]{64}$`)

// ociLayoutImages extracts the OCI layout in archive to dir (only its
// index, marker and blobs, by their well-formed names) and returns its
// linux/amd64 images with the names their annotations give.
func ociLayoutImages(archive, dir string) ([]namedImage, error) {
	f, err := os.Open(archive)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrUnsupported, err)
		}
		name := path.Clean(hdr.Name)
		if hdr.Typeflag != tar.TypeReg || (name != "index.json" && name != "oci-layout" && !blobNameRe.MatchString(name)) {
			continue
		}
		dest := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(dest), 0o700); err != nil {
			return nil, err
		}
		out, err := os.OpenFile(dest, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			return nil, err
		}
		_, err = io.Copy(out, tr)
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return nil, err
		}
	}
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		return nil, fmt.Errorf("%w: OCI layout: %v", ErrUnsupported, err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("%w: OCI layout index: %v", ErrUnsupported, err)
	}
	var out []namedImage
	for _, desc := range im.Manifests {
		img, err := layoutImage(idx, desc)
		if err != nil {
			return nil, err
		}
		if img == nil {
			continue
		}
		ni := namedImage{img: img}
		for _, key := range []string{"io.containerd.image.name", "org.opencontainers.image.ref.name"} {
			if n := desc.Annotations[key]; n != "" {
				if ref, err := ParseReference(n); err == nil {
					ni.ref = &ref
					break
				}
			}
		}
		out = append(out, ni)
	}
	return out, nil
}

// layoutImage is the linux/amd64 image desc names in idx: itself, or its
// child of that platform when it is an index (nil when there is none).
func layoutImage(idx v1.ImageIndex, desc v1.Descriptor) (v1.Image, error) {
	if !desc.MediaType.IsIndex() {
		if p := desc.Platform; p != nil && (p.OS != PlatformOS || p.Architecture != PlatformArch) {
			return nil, nil
		}
		img, err := idx.Image(desc.Digest)
		if err != nil {
			return nil, fmt.Errorf("%w: OCI layout image %s: %v", ErrUnsupported, desc.Digest, err)
		}
		return img, nil
	}
	child, err := idx.ImageIndex(desc.Digest)
	if err != nil {
		return nil, fmt.Errorf("%w: OCI layout index %s: %v", ErrUnsupported, desc.Digest, err)
	}
	cm, err := child.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnsupported, err)
	}
	for _, d := range cm.Manifests {
		if p := d.Platform; p != nil && p.OS == PlatformOS && p.Architecture == PlatformArch && !d.MediaType.IsIndex() {
			return layoutImage(child, d)
		}
	}
	return nil, fmt.Errorf("%w: the OCI layout's index %s has no %s/%s image", ErrUnsupported, desc.Digest, PlatformOS, PlatformArch)
}

// dockerSaveImages reads the images of a `docker save` tarball (the
// format before Docker 25, which has no OCI layout).
func dockerSaveImages(archive string) ([]namedImage, error) {
	opener := func() (io.ReadCloser, error) { return os.Open(archive) }
	manifest, err := tarball.LoadManifest(opener)
	if err != nil {
		return nil, fmt.Errorf("%w: manifest.json: %v", ErrUnsupported, err)
	}
	var out []namedImage
	for _, d := range manifest {
		var tag *name.Tag
		var ref *Reference
		for _, t := range d.RepoTags {
			if r, err := ParseReference(t); err == nil {
				if nt, err := name.NewTag(t); err == nil {
					tag, ref = &nt, &r
					break
				}
			}
		}
		if tag == nil && len(manifest) > 1 {
			return nil, fmt.Errorf("%w: an image of the archive (config %s) has no tag", ErrBadReference, d.Config)
		}
		img, err := tarball.Image(opener, tag)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrUnsupported, err)
		}
		out = append(out, namedImage{img: img, ref: ref})
	}
	return out, nil
}
