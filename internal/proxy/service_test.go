package proxy

import (
	"testing"

	"github.com/torpor-dev/torpor/internal/model"
)

func TestAutostopMode(t *testing.T) {
	stop, suspend, off := model.AutostopStop, model.AutostopSuspend, model.AutostopOff
	for _, c := range []struct {
		modes []*model.Autostop
		want  model.Autostop
	}{
		{nil, off},
		{[]*model.Autostop{nil}, off},
		{[]*model.Autostop{&stop}, stop},
		{[]*model.Autostop{&suspend}, suspend},
		{[]*model.Autostop{&stop, &suspend}, suspend},
		{[]*model.Autostop{&suspend, &off}, off},
		{[]*model.Autostop{&stop, nil}, off},
	} {
		var m model.Machine
		for _, mode := range c.modes {
			m.Config.Services = append(m.Config.Services, model.Service{Autostop: mode})
		}
		if got := autostop(m); got != c.want {
			t.Errorf("%d services: got %s, want %s", len(c.modes), got, c.want)
		}
	}
}

func TestServiceLimits(t *testing.T) {
	for _, c := range []struct {
		conc *model.Concurrency
		want limits
	}{
		{nil, limits{soft: 20}},
		{&model.Concurrency{HardLimit: 10}, limits{soft: 10, hard: 10}},
		{&model.Concurrency{SoftLimit: 5, HardLimit: 10}, limits{soft: 5, hard: 10}},
		{&model.Concurrency{SoftLimit: 50}, limits{soft: 50}},
	} {
		if got := serviceLimits(&model.Service{Concurrency: c.conc}); got != c.want {
			t.Errorf("%+v: got %+v, want %+v", c.conc, got, c.want)
		}
	}
}

func TestDefaultBackend(t *testing.T) {
	if got := privateAddr(model.Machine{PrivateIP: "10.213.7.2"}, 8080); got != "10.213.7.2:8080" {
		t.Errorf("got %q", got)
	}
	if got := privateAddr(model.Machine{}, 8080); got != "" {
		t.Errorf("a machine without an IP got address %q", got)
	}
}
