package image

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/torpor-dev/torpor/internal/model"
	"github.com/torpor-dev/torpor/internal/store"
)

// collect deletes every image content that nothing refers to: no
// reference (image tag), no machine's config version, no snapshot record,
// no work in progress (leases). The decision is taken in one store
// transaction, holding the lease table so that no new work starts on a
// digest being deleted; then the files go: root filesystems and blobs of
// no remaining content (including those a crashed daemon left behind).
func (m *Manager) collect() (model.PruneImagesResult, error) {
	var res model.PruneImagesResult
	var trash []string
	defer func() {
		for _, t := range trash {
			os.RemoveAll(t)
		}
	}()
	m.mu.Lock()
	defer m.mu.Unlock()
	keepBlobs := map[string]bool{}
	keepRoots := map[string]bool{}
	err := m.cfg.Store.Update(func(tx *store.Tx) error {
		refs, err := tx.ImageUsers()
		if err != nil {
			return err
		}
		tags, err := tx.ImageTags("", true)
		if err != nil {
			return err
		}
		for _, t := range tags {
			refs[t.Digest] = append(refs[t.Digest], "tag")
		}
		contents, err := tx.ImageContents()
		if err != nil {
			return err
		}
		for _, c := range contents {
			if len(refs[c.Digest]) > 0 || m.leases[c.Digest] > 0 {
				keepRoots[c.Digest] = true
				for _, b := range c.Blobs {
					keepBlobs[b] = true
				}
				keepBlobs[c.Digest] = true
				continue
			}
			if err := tx.DeleteImageContent(c.Digest); err != nil {
				return err
			}
			res.Digests = append(res.Digests, c.Digest)
			res.FreedBytes += c.SizeBytes + c.UnpackedBytes
		}
		return nil
	})
	if err != nil {
		return res, err
	}
	for d := range m.leases {
		keepBlobs[d], keepRoots[d] = true, true
	}
	trash, err = m.removeUnkept(keepBlobs, keepRoots)
	return res, err
}

// removeUnkept deletes the blobs and root filesystems not kept. A root
// filesystem is first renamed into tmp/ (so that it is gone from rootfs/
// at once, and a crash mid-delete leaves it where start-up cleans); the
// caller deletes the returned trash directories.
func (m *Manager) removeUnkept(keepBlobs, keepRoots map[string]bool) ([]string, error) {
	var errs, trash []string
	blobs, err := os.ReadDir(m.blobDir())
	if err != nil {
		return nil, err
	}
	for _, e := range blobs {
		if !keepBlobs["sha256:"+e.Name()] {
			if err := os.Remove(filepath.Join(m.blobDir(), e.Name())); err != nil {
				errs = append(errs, err.Error())
			}
		}
	}
	roots, err := os.ReadDir(m.rootfsParent())
	if err != nil {
		return nil, err
	}
	for _, e := range roots {
		if keepRoots[strings.Replace(e.Name(), "-", ":", 1)] {
			continue
		}
		dir, err := os.MkdirTemp(m.tmpDir(), "gc-")
		if err == nil {
			err = os.Rename(filepath.Join(m.rootfsParent(), e.Name()), filepath.Join(dir, "rootfs"))
		}
		if err != nil {
			errs = append(errs, err.Error())
			continue
		}
		trash = append(trash, dir)
	}
	if len(errs) > 0 {
		return trash, fmt.Errorf("images: garbage collection: %s", strings.Join(errs, "; "))
	}
	return trash, nil
}
