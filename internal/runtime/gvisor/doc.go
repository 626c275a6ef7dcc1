// Package gvisor is the gVisor implementation of runtime.Runtime. It drives
// the runsc binary (one pinned build, see scripts/install-runsc.sh) through
// its command line, and a running sandbox's control socket for exec and
// signals (control.go: what runsc exec and runsc kill --all send, without
// spawning runsc), and owns everything runsc needs on the host:
//
//   - the runsc state directory (Config.RootDir, passed as runsc --root),
//     and in it reuse/: the pages file of the image each running sandbox was
//     restored from, which its next checkpoint writes over in place
//     (reuse.go; the runsc build carries scripts/runsc-patches/);
//   - each sandbox's bundle directory: config.json (written here from a
//     runtime.Spec with the OCI specs-go types), runsc's own logs
//     (runsc.log, runsc-panic.log, optionally debug/) and a checkpoint marker;
//   - the wiring of the container's stdio to the sandbox's console FIFO or file.
//
// It knows nothing about machines, the store or snapshot invariants (package
// machine owns those); in particular it never decides whether an image may be
// restored, it only restores what it is given.
//
// Choices that matter (details at the code that implements them):
//
//   - Root filesystem: the host directory is served read-only by the gofer and
//     covered with a gVisor overlay whose upper layer lives in sandbox memory
//     (--overlay2=root:memory), so writes work inside the sandbox, never reach
//     the shared rootfs, and are saved in (and restored from) the checkpoint
//     image along with the rest of the sandbox memory.
//   - Network: with a prepared namespace (Spec.NetNS) the sandbox joins it
//     (--network=sandbox); without one it runs with --network=none: runsc puts
//     the sandbox in a fresh, empty network namespace and gVisor's netstack has
//     only loopback. Both modes checkpoint and restore.
//   - Restores are not --background: see restoreArgs.
//   - Huge pages: runsc backs sandbox memory with them only under certain
//     host-wide transparent huge page policies (hugepages.go says which, and
//     sets them when asked: the daemon does at start, --host-huge-pages);
//     the driver itself never changes a host setting.
package gvisor
