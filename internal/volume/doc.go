// Package volume owns volumes on the host: their backing files, their
// filesystems, their mounts, their size and usage, and their records in the
// store. A volume is a file under the data directory
// (volumes/<id>/ext4.img) whose blocks are reserved when it is created,
// formatted ext4 and loop-mounted on the host at volumes/<id>/fs, where
// a machine's sandbox binds it. The filesystem's own size is the limit: a
// machine that fills it gets ENOSPC, and nothing else on the host loses a
// byte. Volumes grow online (extend) and never shrink.
//
// The package keeps each volume mounted whether or not a machine uses it,
// mounts them again when the daemon starts (after a host reboot), checks
// an unmounted filesystem (e2fsck -p) before mounting it, and reports a
// volume whose backing file is missing or corrupt as such, so that no
// machine starts without its data.
//
// It does not decide which machine runs where, nor start or stop
// machines: package machine records a machine's mounts with Attach and
// Detach inside its own store transactions (so that the one-machine-at-a-
// time rule and the machine's config change commit together) and asks
// Prepare for a volume's host path before every boot or restore.
package volume
