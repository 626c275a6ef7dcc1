// Package freeport picks TCP ports on loopback for a server that another
// process will start later: the tests' daemons, registries, etcd members
// and fake machines, and the benchmark's proxied service.
//
// A port picked by listening on port 0 and closing comes from the kernel's
// ephemeral range, which is also where every outgoing connection on the host
// takes its source port. On a CI host running many test processes side by
// side (one held 1,200 client connections at a time) such a port was often
// taken by a connection before its server bound it: "bind: address already
// in use" (TestClusterCreateAndRoute, 2026-12-07). Pick draws ports from
// below the ephemeral range instead, which the kernel hands to no one, at
// random (two processes rarely draw the same one), checks that nothing
// listens on one, and never returns a port twice in one process.
//
// What it does not own: keeping the port free until it is used (nobody can;
// a server that starts much later should listen on port 0 and report its
// address instead) and any listener.
package freeport

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
)

var (
	mu    sync.Mutex
	given = map[int]bool{}
)

// Lowest port Pick draws, and how many it draws from at most: it stays
// below the ephemeral range (ephemeralStart).
const (
	lowest   = 10000
	maxSpan  = 22000
	attempts = 200
)

// Pick returns a TCP port that nothing listened on, on any address, just
// now, that is outside the kernel's ephemeral range and that no earlier
// Pick of this process returned.
func Pick() (int, error) {
	mu.Lock()
	defer mu.Unlock()
	hi := min(ephemeralStart(), lowest+maxSpan)
	if hi-lowest < 1000 {
		return 0, fmt.Errorf("freeport: the ephemeral range starts at %d, leaving too few ports below it", hi)
	}
	var last error
	for range attempts {
		port := lowest + rand.IntN(hi-lowest)
		if given[port] {
			continue
		}
		l, err := net.Listen("tcp", fmt.Sprintf(":%d", port))
		if err != nil {
			last = err
			continue
		}
		l.Close()
		given[port] = true
		return port, nil
	}
	return 0, fmt.Errorf("freeport: no free port in %d-%d after %d tries (the last: %v)", lowest, hi-1, attempts, last)
}

// Addr is Pick as "127.0.0.1:PORT".
func Addr() (string, error) {
	port, err := Pick()
	if err != nil {
		return "", err
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), nil
}

// ephemeralStart is the first port of the kernel's ephemeral range (32768
// if it cannot be read).
func ephemeralStart() int {
	data, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	f := strings.Fields(string(data))
	if len(f) != 2 {
		return 32768
	}
	n, err := strconv.Atoi(f[0])
	if err != nil || n <= 0 {
		return 32768
	}
	return n
}
