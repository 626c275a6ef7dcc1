package proxy

import (
	"strings"

	"github.com/torpor-dev/torpor/internal/model"
)

// defaultSoftLimit is Fly's soft_limit when a service sets none; Fly's
// hard_limit default is none.
const defaultSoftLimit = 20

// limits are a service's concurrency limits; hard 0 means none.
type limits struct{ soft, hard int }

func serviceLimits(s *model.Service) limits {
	l := limits{soft: defaultSoftLimit}
	if c := s.Concurrency; c != nil {
		if c.SoftLimit > 0 {
			l.soft = c.SoftLimit
		}
		if c.HardLimit > 0 {
			l.hard = c.HardLimit
		}
	}
	if l.hard > 0 && l.soft > l.hard {
		l.soft = l.hard
	}
	return l
}

// autostart reports whether the proxy may start machines for s (default true,
// as on Fly).
func autostart(s *model.Service) bool { return s.Autostart == nil || *s.Autostart }

// autostop returns what to do with machine m when idle: "off" if any of its
// services says off (the default), else "suspend" if any says suspend, else
// "stop".
func autostop(m model.Machine) model.Autostop {
	mode := model.AutostopOff
	for _, s := range m.Config.Services {
		switch {
		case s.Autostop == nil || *s.Autostop == model.AutostopOff:
			return model.AutostopOff
		case *s.Autostop == model.AutostopSuspend:
			mode = model.AutostopSuspend
		case mode == model.AutostopOff:
			mode = model.AutostopStop
		}
	}
	return mode
}

// minRunning is the largest min_machines_running among m's services.
func minRunning(m model.Machine) int {
	n := 0
	for _, s := range m.Config.Services {
		if s.MinMachinesRunning != nil && *s.MinMachinesRunning > n {
			n = *s.MinMachinesRunning
		}
	}
	return n
}

// isHTTP reports whether port p of service s is served by the HTTP proxy.
func isHTTP(s model.Service, p model.Port) bool {
	if strings.EqualFold(s.Protocol, "http") {
		return true
	}
	return hasHandler(p, "http")
}

func hasHandler(p model.Port, name string) bool {
	for _, h := range p.Handlers {
		if strings.EqualFold(h, name) {
			return true
		}
	}
	return false
}
