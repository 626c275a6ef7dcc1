package proxy

import (
	"sync/atomic"

	"github.com/torpor-dev/torpor/internal/model"
)

// AppStats is a snapshot of what the proxy did for one app since it started.
type AppStats struct {
	Requests     int64 // HTTP requests received
	Connections  int64 // TCP connections accepted on raw TCP services
	Wakes        int64 // Start calls made to wake a machine
	WakeFailures int64 // wakes that failed or timed out
	QueuedTotal  int64 // requests and connections that had to wait
	Unavailable  int64 // answered 503, or TCP connections closed unserved
	BadGateway   int64 // the machine could not be reached or failed (502)
	Stops        int64 // machines auto-stopped
	Suspends     int64 // machines auto-suspended

	Queued  int // requests and connections waiting now
	Started int // machines the proxy sees as started now
	Active  int // requests in flight and connections open now
}

// counters are the running totals behind AppStats.
type counters struct {
	Requests, Connections, Wakes, WakeFailures, QueuedTotal atomic.Int64
	Unavailable, BadGateway, Stops, Suspends                atomic.Int64
}

func (a *app) snapshot() AppStats {
	c := &a.stats
	s := AppStats{
		Requests:     c.Requests.Load(),
		Connections:  c.Connections.Load(),
		Wakes:        c.Wakes.Load(),
		WakeFailures: c.WakeFailures.Load(),
		QueuedTotal:  c.QueuedTotal.Load(),
		Unavailable:  c.Unavailable.Load(),
		BadGateway:   c.BadGateway.Load(),
		Stops:        c.Stops.Load(),
		Suspends:     c.Suspends.Load(),
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	s.Queued = a.waiting
	for _, b := range a.machines {
		if b.m.State == model.StateStarted && !b.busy {
			s.Started++
		}
		s.Active += b.active
	}
	return s
}
