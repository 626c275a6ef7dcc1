// Package proxy owns the traffic path from clients to machines: it publishes
// the services of every app's machines on host ports, balances requests and
// connections over the app's started machines, wakes sleeping machines when
// traffic arrives (auto-start) and stops or suspends idle ones (auto-stop),
// the way Fly Proxy does.
//
// # Listeners
//
// For every app, the union of its machines' config.services is published:
// each services[].ports[].port becomes a listener on Config.ListenHost. A
// port whose handlers include "http" (or a service whose protocol is "http")
// is served by an HTTP reverse proxy (net/http/httputil.ReverseProxy); any
// other port is spliced as raw TCP. Listeners follow config changes at every
// reconcile (every Config.RefreshInterval, or at once after Refresh). A host
// port is published for the app the machine layer records as its owner
// (Machines.PortOwners: the first app to publish it, durably), whatever the
// other apps' configs say; a port without a recorded owner goes to its
// current listener, else to the first app in name order. Conflicts are
// logged, never fatal. Config.Reserved ports (the daemon's own) are never
// bound. The "tls" handler is not implemented (no certificates): such a port
// is served without TLS and a warning is logged.
//
// # Limits
//
// Listeners admit connections through package connlimit: at most
// Config.MaxConnsPerClient per client address (all ports), at most
// Config.MaxConnsPerApp per app (all its ports), and client and machine
// connections together within Config.Budget. Over a limit an HTTP port
// answers 503, a TCP port closes. Slow headers, idle kept-alive HTTP
// connections and raw TCP connections idle both ways are closed after their
// timeouts. Raw TCP is copied through a buffer, two descriptors per
// connection.
//
// # Machines taken out of service
//
// Connections to machines are kept per machine. When a machine list shows a
// machine suspended with traffic in flight (by someone else than the
// proxy), the proxy resumes it if that traffic's services have autostart
// and it is not cordoned, so that the frozen requests finish; otherwise, and
// when the machine stopped or is gone, every connection to it is closed, so
// that requests in flight get a 502 at once.
//
// # Load balancing and concurrency
//
// A request (HTTP) or connection (TCP) goes to the least loaded started,
// uncordoned machine that serves its internal_port. The load of a machine is
// its number of in-flight HTTP requests on an HTTP port and of open
// connections on a TCP port, whatever concurrency.type says: a reverse proxy
// holds one backend connection per in-flight request, so both measures agree
// where it matters. Like Fly: soft_limit defaults to 20 and hard_limit to
// none. A machine at its soft_limit only gets traffic when every machine is;
// when all are and auto-start may wake another machine, one is woken. A
// machine never gets more than hard_limit: when all are there, the request
// waits in the app's queue until one frees up or Config.WakeTimeout passes
// (then 503).
//
// # Health checks
//
// A machine whose service has checks (services[].checks) gets traffic for
// that service's port only while all of them pass (Config.Health, package
// checks); a machine without checks always counts as passing. When no
// started machine passes, requests wait as for a wake (and a sleeping
// machine is woken if one can be) until one does or Config.WakeTimeout
// passes; the 503 then names the failing check. Checks run from the host
// straight to the machine, not through the proxy: they are no traffic and
// never keep a machine from being auto-stopped.
//
// # Auto-start
//
// autostart defaults to true, as Fly documents ("the default settings for
// apps that don't specify any auto start and stop settings are
// auto_start_machines = true and auto_stop_machines = false"). A request for
// an app with no started machine (or with every machine over soft_limit)
// wakes one machine that has autostart on: a suspended machine first (resume
// is fast), else a stopped one, else a created one. Wakes are single-flight
// per app: one Start at a time, whatever the number of requests waiting.
// Requests wait in a bounded per-app queue (Config.QueueLimit; beyond it 503
// at once); a wake that fails or does not finish within Config.WakeTimeout
// answers 503 with {"error": "..."} naming the app, the machine and why. A
// TCP connection waits the same way and is closed if the wake fails. Right
// after a machine starts, refused (and timed-out) connections to it are
// retried until WakeTimeout, because its app may still be opening its
// socket, but only while the proxy sees it started. The proxy learns a
// machine's new state from the machine layer before the operation that
// changed it returns (MachineChanged), so a request sent right after a
// stop through the API wakes the machine rather than dialing it.
//
// # Auto-stop
//
// autostop is "off" (the default), "stop" or "suspend" per service; a machine
// is stopped only if all its services allow it, and suspended if any asks
// for it. The reaper runs every Config.CheckInterval and stops or suspends a
// machine that has had no in-flight request and no open connection
// (including upgraded connections and streaming responses, which count for
// their whole life) for Config.IdleTimeout, never bringing the app's number
// of started, uncordoned machines below min_machines_running (the largest
// value among the app's services, default 0). A suspend refused because the
// machine is not eligible (KindPrecondition) falls back to a stop, as Fly
// does "if possible"; other failures leave the machine running and are
// retried after another idle period. Only machines the proxy sees as started
// are touched; cordoned machines are left alone.
package proxy
