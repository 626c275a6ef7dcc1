package connlimit

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// Plan splits the daemon's file descriptor limit between those who may ask
// for connections:
//
//   - Tenant is the budget of everything tenants and the internet can make
//     the daemon hold: proxied client connections and their backend
//     connections, and connections to the in-machine API sockets;
//   - API is the cap on connections to the TCP API (authenticated or not),
//     which is not in Tenant, so that the proxy's clients cannot lock the
//     API out;
//   - Admin is the cap on connections to the admin socket, in neither;
//   - the rest (at least MinReserve, or an eighth of the limit) stays free
//     for the daemon itself: the store, logs, consoles, runsc invocations,
//     refusing connections over a limit.
type Plan struct {
	Limit   int // RLIMIT_NOFILE (soft, raised to the hard limit)
	Tenant  *Budget
	API     int
	Admin   int
	Reserve int
}

// MinReserve is the least number of descriptors a Plan keeps for the daemon.
const MinReserve = 512

// PlanFor splits limit descriptors (see Plan).
func PlanFor(limit int) Plan {
	p := Plan{Limit: limit, Admin: 64, API: max(64, min(4096, limit/8)), Reserve: max(MinReserve, limit/8)}
	tenant := limit - p.Reserve - p.API - p.Admin
	if tenant < 64 {
		tenant = 64 // a tiny limit: keep the proxy usable, and say so in the log
	}
	p.Tenant = NewBudget("tenant connections", tenant)
	return p
}

// String says how the limit is split, for the daemon's start-up log.
func (p Plan) String() string {
	return fmt.Sprintf("file descriptors: limit %d; tenant connections (proxy, in-machine API) %d, TCP API %d, admin socket %d, kept for the daemon %d",
		p.Limit, p.Tenant.Limit(), p.API, p.Admin, p.Reserve)
}

// RaiseNoFile raises the soft RLIMIT_NOFILE to the hard limit (the Go runtime
// does it at start-up too; this makes it explicit and reports it) and
// returns the soft limit now in force.
func RaiseNoFile() (int, error) {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		return 0, fmt.Errorf("getrlimit(RLIMIT_NOFILE): %w", err)
	}
	if rl.Cur < rl.Max {
		rl.Cur = rl.Max
		if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
			return 0, fmt.Errorf("setrlimit(RLIMIT_NOFILE, %d): %w", rl.Max, err)
		}
	}
	return int(min(rl.Cur, 1<<30)), nil
}
