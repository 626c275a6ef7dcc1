// Package image owns OCI images on the daemon's host: the content-addressed
// blob cache, references and the digests they resolve to (per app, or
// public by the admin's choice), pulls from registries (single-flight,
// credentials from the Docker config file), imports of `docker save` and
// OCI layout tarballs, the read-only root filesystem unpacked once per
// manifest digest, safe unpacking, and garbage collection by references.
//
// It does not own machines, their configs or snapshots: package machine
// pins a digest in a machine's config version and asks here for the root
// filesystem and the image config; the references that keep an image from
// garbage collection (config versions, snapshot records) are read from the
// store, in the same transaction that decides what to delete.
//
// # Layout
//
// Under Config.Dir (DATA_DIR/oci, mode 0700):
//
//	blobs/sha256/HEX       manifests, configs and compressed layers, each
//	                       written to tmp/ and renamed here once its digest
//	                       and size are verified
//	rootfs/sha256-HEX/     the unpacked root filesystem of one manifest,
//	                       built in tmp/, flushed (syncfs) and renamed here;
//	                       never written again
//	tmp/                   work in progress, emptied at start-up
//
// A daemon killed mid-pull or mid-unpack leaves only files under tmp/
// (deleted at the next start) and verified blobs; a root filesystem is
// either complete under rootfs/ or absent. Image records live in the store;
// a root filesystem with no record is garbage.
//
// # Unpacking
//
// Layers are applied lowest first by this package's own tar applier
// (unpack.go), which resolves every path inside the image root with
// openat2(RESOLVE_IN_ROOT): ".." at the root stays there and symlinks,
// whatever a layer put where (also a directory swapped for a symlink in a
// later layer), resolve inside the image. The policy:
//   - names that climb above the root with ".." are refused; absolute names
//     are taken relative to the root (as tar and Docker do);
//   - hard links must name an entry of the image (resolved inside the
//     root) that is not a directory;
//   - whiteouts (".wh.NAME") and opaque directories (".wh..wh..opq") are
//     applied as the OCI layer spec says and never written;
//   - character and block devices are skipped and counted (a machine's
//     /dev is its sandbox's own); FIFOs are created; other entry types
//     are refused;
//   - owners, modes (setuid, setgid and sticky bits included) and times
//     are kept: the sandbox runs the image's user, and the bits only mean
//     something inside the sandbox, since Config.Dir is 0700 (no other
//     host user reaches those files); extended attributes are not applied;
//   - Limits bound the layers, the uncompressed bytes and the entries;
//     each layer's uncompressed digest must match the image config's.
package image
