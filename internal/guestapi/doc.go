// Package guestapi serves the in-machine API: an HTTP API that a process
// inside a machine reaches over a Unix socket, like Fly's /.fly/api, to read
// what the machine is and to suspend or stop the machine it runs in. It
// cannot name or touch any other machine.
//
// # API
//
// Inside the machine the socket is /.torpor/api.sock, and the same API is
// also at /.fly/api. Bodies are JSON; errors are {"error": "..."}; an unknown
// path is 404 and a wrong method 405 (with Allow).
//
//	GET  /v1/machine   200 Info: id, name, app, state, region, boot_generation,
//	                   private_ip, metadata (config.metadata)
//	POST /v1/suspend   202 {"ok":true}, then the machine is suspended
//	POST /v1/stop      202 {"ok":true}, then the machine is stopped; optional
//	                   body {"signal": "SIGTERM", "timeout": "10s"}
//
// For scripts written against Fly, the Machines API paths of the machine
// itself work too: GET /v1/apps/{app}/machines/{id} (the machine as the
// Machines API shows it), POST .../suspend and POST .../stop. Any other app
// or machine in such a path is refused with 403. (Fly's socket lets a
// machine manage every machine of its app; this one deliberately does not.)
//
// Suspend and stop answer 409 unless the machine is started, and while an
// operation the machine asked for is still under way: a machine cannot queue
// operations on itself. A 202 means accepted, not done: if the operation
// fails afterwards (e.g. the machine is not eligible for suspend), the
// failure is logged and recorded in the machine's events by the lifecycle;
// the machine finds itself still started.
//
// # Transport: one Unix socket per machine
//
// Each machine gets its own listening socket on the host; Listen binds it to
// the machine's app and ID, and the handlers only ever act on that pair
// (nothing in a request names the machine acted on). The caller's identity
// is therefore implicit in which socket it could reach, and a machine can
// only reach the socket mounted into it. This was preferred to HTTP on the
// app bridge's gateway address identifying callers by source IP: machines of
// an app share a layer-2 bridge, so without anti-spoofing rules (which the
// network package does not install) a machine could forge a neighbour's
// address; that transport would also need the machine to have a network at
// all, and a host port on every bridge.
//
// How it works with gVisor:
//
//   - runsc must run with RunscFlag (--host-uds=open): the sandbox can then
//     connect(2) to host Unix sockets found in its mounts. The gofer makes
//     the connection on the sandbox's behalf. Without the flag, connect fails
//     (the application sees ECONNREFUSED).
//   - Mounts(dir) binds two host directories (dir/torpor, dir/fly), not the
//     socket files: runsc bind-mounts sources when the sandbox starts, so a
//     file mount would keep pointing at a socket that a restarted daemon has
//     since replaced; a directory shows whatever socket is in it now. The
//     mounts are read-only (writing fails with EROFS; connect still works),
//     so a machine cannot write to the host through them.
//   - The gofer connects with the credentials of the calling process, so the
//     directories are 0755 and the sockets 0666: any user inside the machine
//     may use the API. dir must lie inside a directory that other host users
//     cannot enter (the daemon's data directory is 0700).
//   - Checkpoint and restore work with the mounts in place (measured by
//     TestIntegrationSuspendItself, with runsc on these hosts: the machine
//     asks for its own suspend over the socket, the checkpoint takes about
//     60 ms and the restore about 110 ms, as without the API; the API works
//     again after restore, after a second cycle, and after the server is
//     closed and listens again). gVisor closes sandbox connections to host
//     sockets when it saves: a connection open at checkpoint time fails after
//     restore (EPIPE, or EOF on read); new connections work. The image
//     records the sandbox's mounts, and runsc refuses to restore it with
//     different ones (measured both ways): boot and restore must be given the
//     same Mounts, and an image taken without them cannot be restored with
//     them (the lifecycle must treat it as incompatible and cold start).
//
// # Answer first, then suspend
//
// The 202 must be in the application's memory before the checkpoint
// freezes it, or the application wakes up from its restore to a broken
// connection instead of an answer. Closing the connection on our side is
// not enough: the answer would sit unread in the host socket buffer of the
// sandbox's connection, which gVisor closes (and so discards) when it saves.
// So the handler:
//
//  1. writes the 202 with Content-Length and "Connection: close" and
//     flushes it, so the answer is complete on the wire;
//  2. waits until the application has read it: on a Unix stream socket,
//     SIOCOUTQ counts the bytes sent that the peer has not consumed, and
//     gVisor reads the host socket only when the application reads its own,
//     so 0 means the answer is in the application's memory (at most
//     deliveryTimeout, 2 s; a machine that does not read its answer by then
//     is suspended anyway and may find the connection broken after resume);
//  3. returns (the connection closes), and the operation starts
//     settleDelay (50 ms) later, in the background, with a context that
//     carries Source ("machine") for the machine's event (model.WithSource).
//
// The integration test reads the 202 only after half a second: with step 2
// it gets the answer before the checkpoint; without it (measured) the
// application gets "Remote end closed connection without response" after
// the restore.
//
// # Lifecycle
//
// Listen before every boot and restore (it is idempotent) and, after a
// daemon restart, for every machine whose sandbox runs or whose snapshot may
// be restored; put the returned mounts in the runtime spec; Close on
// destroy; CloseAll when the daemon stops. While nobody listens the
// application gets ECONNREFUSED or ENOENT.
package guestapi
