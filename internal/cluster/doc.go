// Package cluster owns what makes several torpor hosts one platform, on
// etcd: membership (each host registered under a lease, with its capacity,
// runsc build and CPU features, and fenced when it loses the lease),
// ownership (which host owns each machine, changed only by compare-and-swap
// transactions), placement of new machines on a host with room, the
// cluster-wide apps and tokens, the cluster-wide claim of each sealed
// snapshot (so that a snapshot is restored at most once across the
// cluster), forwarding of API calls and proxied traffic to a machine's
// host over mutual TLS, and moving machines between hosts (drain, dead
// hosts), with their snapshots copied from the origin host or an
// S3-compatible snapshot store.
//
// It does not own the machine lifecycle: each host's machine.Manager and
// bbolt store stay the source of truth for the machines it owns, and this
// package only asks them to adopt, release, forget or fence machines, and
// publishes what they commit to a directory in etcd that every host reads
// (eventually consistent, for listings and proxy routes).
//
// Keys, all under /torpor/:
//
//	cluster-id                the cluster's random ID (a data dir joins one cluster only)
//	hosts/<host>              the host's registration, attached to its lease (present = alive)
//	hostcfg/<host>            its last registration and whether it is cordoned (permanent)
//	place/<host>              bumped by every placement onto the host (capacity CAS)
//	owners/<machine>          the host that owns the machine (strong: CAS only)
//	machines/<machine>        the owner's last published record of it (eventual)
//	names/<app>/<name>        machine names, unique per app across the cluster
//	apps/<app>, appgen/<app>  apps; appgen is bumped by each machine admitted to the app
//	tokens/<id>               API tokens (hashed secrets)
//	snapshots/<machine>/<id>  a snapshot's cluster-wide claim and its copy in the store
//
// docs/cluster.md describes the design, its consistency and its failure modes.
package cluster
