package client

import (
	"context"
	"net/http"
	"net/url"

	"github.com/torpor-dev/torpor/internal/model"
)

// NewHTTP returns a client of the API at base ("https://host:port"), sending
// its requests with hc (for instance over a cluster's mutual TLS).
func NewHTTP(base string, hc *http.Client) *Client {
	return &Client{addr: base, base: base, http: hc}
}

// ListHosts returns the hosts of the daemon's cluster.
func (c *Client) ListHosts(ctx context.Context) ([]model.Host, error) {
	var list struct {
		Hosts []model.Host `json:"hosts"`
	}
	err := c.do(ctx, http.MethodGet, "/v1/hosts", nil, nil, &list)
	return list.Hosts, err
}

// CordonHost marks a host as (not) taking new machines.
func (c *Client) CordonHost(ctx context.Context, host string, cordoned bool) error {
	op := "/uncordon"
	if cordoned {
		op = "/cordon"
	}
	return c.do(ctx, http.MethodPost, "/v1/hosts/"+url.PathEscape(host)+op, nil, nil, &okAnswer{})
}

// DrainHost cordons a host and moves every machine off it.
func (c *Client) DrainHost(ctx context.Context, host string) (model.DrainReport, error) {
	var r model.DrainReport
	err := c.do(ctx, http.MethodPost, "/v1/hosts/"+url.PathEscape(host)+"/drain", nil, nil, &r)
	return r, err
}
