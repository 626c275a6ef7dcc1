// Package checks owns running machines' health checks and their latest
// results: config.checks and config.services[].checks (Fly's shape), each
// a TCP connect or an HTTP request from the host to the machine's private
// address on its interval. Results are Fly's: "passing", "warning" (not
// checked yet, inside the grace period after a start, or HTTP 429) and
// "critical".
//
// Checks run only while a machine is started: they pause when it stops or
// suspends (a check in flight is abandoned, and a failure is recorded only
// if the machine is still started in the same boot), so that they never
// see a frozen app, never keep a machine awake and never count as traffic
// for auto-stop (they do not pass through the proxy). A resumed machine
// keeps its last results and is checked again at once; a cold-started or
// reconfigured one starts over ("warning") and is retried every
// StartupInterval until each check has passed once.
//
// It does not route traffic: package proxy asks ServicePassing before it
// sends a request or connection to a machine, and hears from OnChange when
// a result changes. Nor does it change machines.
package checks
