package api_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/torpor-dev/torpor/internal/api"
	"github.com/torpor-dev/torpor/internal/model"
)

// metricsStub writes down what each caller of /metrics may see.
type metricsStub struct{ allow func(string) bool }

func (m *metricsStub) ServeMetrics(w http.ResponseWriter, r *http.Request, allow func(string) bool) {
	m.allow = allow
	w.Write([]byte("torpor_up 1\n"))
}

type dashboardStub struct{ opened int }

func (d *dashboardStub) OpenLocal(context.Context) (model.DashboardLink, error) {
	d.opened++
	return model.DashboardLink{URL: "http://127.0.0.1:1/ui/login?code=x", ExpiresAt: time.Now().Add(time.Minute)}, nil
}

// scrape GETs /metrics (which answers the Prometheus text format, not JSON).
func (e *env) scrape() (int, string) {
	rec := e.serve("GET", "/metrics", "")
	return rec.Code, rec.Body.String()
}

// TestMetricsRouteScopes checks who may read /metrics, and what scope the
// metrics are served for: all to the admin socket and admin tokens, its
// apps to an app token, nothing without a token.
func TestMetricsRouteScopes(t *testing.T) {
	a := newAuthEnv(t)
	stub := &metricsStub{}
	a.h = api.New(a.mgr, api.Config{Tokens: a.tokens, Metrics: stub}, nil)
	if code, _ := a.as("", false).scrape(); code != http.StatusUnauthorized {
		t.Fatalf("no token: %d", code)
	}
	if code, body := a.as("", true).scrape(); code != 200 || !strings.Contains(body, "torpor_up") || stub.allow != nil {
		t.Fatalf("admin socket: %d %q, scoped %v", code, body, stub.allow != nil)
	}
	a.as(a.newToken(model.CreateTokenRequest{Admin: true}), false).scrape()
	if stub.allow != nil {
		t.Fatal("an admin token's metrics are scoped")
	}
	a.as(a.newToken(model.CreateTokenRequest{Apps: []string{"web"}}), false).scrape()
	if stub.allow == nil || !stub.allow("web") || stub.allow("other") {
		t.Fatal("an app token's metrics are not scoped to its app")
	}
	// Without a metrics server, the route says so.
	a.h = api.New(a.mgr, api.Config{Tokens: a.tokens}, nil)
	a.as("", true).wantError("GET", "/metrics", "", http.StatusNotFound, "no metrics")
}

// TestDashboardLinkOnlyOnAdminSocket checks that POST /v1/dashboard answers
// a link on the admin socket only, never over TCP, even to an admin token.
func TestDashboardLinkOnlyOnAdminSocket(t *testing.T) {
	a := newAuthEnv(t)
	stub := &dashboardStub{}
	a.h = api.New(a.mgr, api.Config{Tokens: a.tokens, Dashboard: stub}, nil)
	a.as(a.newToken(model.CreateTokenRequest{Admin: true}), false).wantError("POST", "/v1/dashboard", "", http.StatusForbidden, "local admin socket")
	a.as(a.newToken(model.CreateTokenRequest{Apps: []string{"web"}}), false).wantError("POST", "/v1/dashboard", "", http.StatusForbidden, "admin")
	var link model.DashboardLink
	a.as("", true).must("POST", "/v1/dashboard", "", http.StatusOK, &link)
	if stub.opened != 1 || !strings.Contains(link.URL, "code=") {
		t.Fatalf("opened %d, link %+v", stub.opened, link)
	}
}
