package freeport

import (
	"net"
	"strconv"
	"testing"
)

// TestPickIsFreeUniqueAndNotEphemeral: ports come from below the ephemeral
// range, a server can listen on each, and none comes twice.
func TestPickIsFreeUniqueAndNotEphemeral(t *testing.T) {
	seen := map[int]bool{}
	eph := ephemeralStart()
	for range 500 {
		p, err := Pick()
		if err != nil {
			t.Fatal(err)
		}
		if p < lowest || p >= eph {
			t.Fatalf("port %d outside %d-%d", p, lowest, eph-1)
		}
		if seen[p] {
			t.Fatalf("port %d picked twice", p)
		}
		seen[p] = true
	}
	addr, err := Addr()
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen on a picked address: %v", err)
	}
	l.Close()
}

// TestPickSkipsAPortInUse: a port something listens on is never picked.
func TestPickSkipsAPortInUse(t *testing.T) {
	var held []net.Listener
	busy := map[int]bool{}
	// Hold a few hundred ports of the range, then pick many.
	for p := lowest; p < lowest+300; p++ {
		l, err := net.Listen("tcp", ":"+strconv.Itoa(p))
		if err != nil {
			continue
		}
		held = append(held, l)
		busy[p] = true
	}
	defer func() {
		for _, l := range held {
			l.Close()
		}
	}()
	for range 300 {
		p, err := Pick()
		if err != nil {
			t.Fatal(err)
		}
		if busy[p] {
			t.Fatalf("picked port %d, which is in use", p)
		}
	}
}
