package gvisor

import (
	"context"
	"os"
	"path/filepath"
	"strings"

	"github.com/torpor-dev/torpor/internal/diskusage"
	"github.com/torpor-dev/torpor/internal/runtime"
)

// A sandbox's next checkpoint writes its memory over the pages file of the
// image it was restored from, in place, instead of into a new file.
//
// Why: a checkpoint writes the sandbox's memory into the page cache of the
// new pages file, so it needs as much new memory as the sandbox has. Where
// the host's spare memory is not backed yet (a VM whose guest kernel returns
// free memory to the hypervisor), each new page costs a hypervisor fault:
// writing 1 GiB into a new file took 4.3-4.8 s on such a host, and 0.24 s over
// an existing file whose page cache was still there (docs/benchmarks.md,
// "The host's memory"). On other hosts it saves allocating and zeroing pages.
//
// How: once a Restore has returned, the image's pages file is hard-linked
// to <RootDir>/reuse/<id>.pages (the image itself is the caller's: the
// manager deletes it once claimed, which leaves this link). Checkpoint moves
// the link into the new image directory as pages.img.reuse, where runsc,
// built with scripts/runsc-patches/reuse-pages-file.patch, takes it as its
// pages file and truncates it to what it wrote. A runsc without the patch
// leaves it there, and Checkpoint removes it. Kill removes the link: a
// sandbox that is stopped, destroyed or replaced keeps nothing of its
// memory on disk.
//
// The cost: until the sandbox is checkpointed again or killed, the link
// holds disk space (and, while the kernel keeps it, page cache) the size of
// the restored image (DiskBytes reports it). Config.NoPagesReuse turns it
// off. New deletes the kept files of sandboxes that ended without a Kill
// (sweepPagesFiles).

// pagesFile is runsc's name for the memory pages file of an image.
const pagesFile = "pages.img"

// reuseSuffix marks a pages file offered to a checkpoint for reuse; the
// patched runsc looks for pagesFile+reuseSuffix.
const reuseSuffix = ".reuse"

// keptSuffix ends the name of a kept pages file: <id>.pages.
const keptSuffix = ".pages"

func (r *Runtime) reuseDir() string { return filepath.Join(r.cfg.RootDir, "reuse") }

func (r *Runtime) reusePath(id string) string {
	return filepath.Join(r.reuseDir(), id+keptSuffix)
}

// keepPagesFile links the pages file of imageDir, which sandbox id has just
// been restored from, for id's next checkpoint. Best effort: with no pages
// file (a compressed image), or the image on another file system than
// RootDir, there is nothing to reuse.
func (r *Runtime) keepPagesFile(id, imageDir string) {
	if r.cfg.NoPagesReuse {
		return
	}
	dst := r.reusePath(id)
	_ = os.Remove(dst)
	if os.MkdirAll(filepath.Dir(dst), 0o700) != nil {
		return
	}
	_ = os.Link(filepath.Join(imageDir, pagesFile), dst)
}

// offerPagesFile moves id's kept pages file, if any, into the empty image
// directory a checkpoint of id is about to write.
func (r *Runtime) offerPagesFile(id, imageDir string) {
	src := r.reusePath(id)
	if err := os.Rename(src, filepath.Join(imageDir, pagesFile+reuseSuffix)); err != nil {
		_ = os.Remove(src) // e.g. imageDir on another file system
	}
}

// withdrawPagesFile removes an offered pages file that the checkpoint did
// not take: a runsc without the patch, or one that failed before it opened
// its files.
func withdrawPagesFile(imageDir string) {
	_ = os.Remove(filepath.Join(imageDir, pagesFile+reuseSuffix))
}

// dropPagesFile deletes id's kept pages file, if any.
func (r *Runtime) dropPagesFile(id string) {
	_ = os.Remove(r.reusePath(id))
}

var _ runtime.DiskUser = (*Runtime)(nil)

// DiskBytes is the disk space of the pages files kept for the next
// checkpoints (runtime.DiskUser). A file deleted while it counts is
// skipped.
func (r *Runtime) DiskBytes() (int64, error) {
	u, err := diskusage.Of(r.reuseDir())
	return u.Allocated, err
}

// sweepPagesFiles deletes the kept pages files of sandboxes that are gone
// or stopped: what a sandbox that ended without a Kill leaves (a daemon
// that died between the two, a sandbox deleted with runsc by hand, a store
// restored from an older backup that no longer knows the machine). It
// keeps the file of a sandbox whose state runsc cannot tell. New runs it
// before the driver restores anything, so that it races with no Restore.
// It reads runsc's state files, and spawns `runsc state` only for a
// sandbox whose file does not say plainly that it is gone or running: a
// daemon restarting on a host of many resumed machines spawns nothing.
func (r *Runtime) sweepPagesFiles(ctx context.Context) {
	entries, err := os.ReadDir(r.reuseDir())
	if err != nil {
		return
	}
	for _, e := range entries {
		id, ok := strings.CutSuffix(e.Name(), keptSuffix)
		if !ok {
			continue
		}
		st, err := r.runningState(ctx, id)
		if err != nil {
			continue
		}
		if st == nil || st.Status == string(runtime.StatusStopped) {
			r.dropPagesFile(id)
		}
	}
}
