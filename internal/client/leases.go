package client

import (
	"context"
	"net/http"
	"net/url"
	"strconv"

	"github.com/torpor-dev/torpor/internal/model"
)

// LeaseNonceHeader carries the nonce of a held lease. Every call whose
// context carries a nonce (model.WithLeaseNonce) sends it.
const LeaseNonceHeader = "fly-machine-lease-nonce"

type leaseAnswer struct {
	Data model.Lease `json:"data"`
}

func leaseQuery(ttlSeconds int) url.Values {
	return url.Values{"ttl": {strconv.Itoa(ttlSeconds)}}
}

// AcquireLease takes a lease on a machine for ttlSeconds, or refreshes the
// one whose nonce ctx carries.
func (c *Client) AcquireLease(ctx context.Context, app, id string, ttlSeconds int, description string) (model.Lease, error) {
	var out leaseAnswer
	err := c.do(ctx, http.MethodPost, machinePath(app, id)+"/lease", leaseQuery(ttlSeconds), model.LeaseRequest{Description: description}, &out)
	return out.Data, err
}

// ReleaseLease releases the machine lease whose nonce ctx carries.
func (c *Client) ReleaseLease(ctx context.Context, app, id string) error {
	return c.do(ctx, http.MethodDelete, machinePath(app, id)+"/lease", nil, nil, &okAnswer{})
}

// AcquireAppLease takes the app's lease (which serializes deploys) for
// ttlSeconds, or refreshes the one whose nonce ctx carries.
func (c *Client) AcquireAppLease(ctx context.Context, app string, ttlSeconds int, description string) (model.Lease, error) {
	var out leaseAnswer
	err := c.do(ctx, http.MethodPost, appPath(app)+"/lease", leaseQuery(ttlSeconds), model.LeaseRequest{Description: description}, &out)
	return out.Data, err
}

// ReleaseAppLease releases the app lease whose nonce ctx carries.
func (c *Client) ReleaseAppLease(ctx context.Context, app string) error {
	return c.do(ctx, http.MethodDelete, appPath(app)+"/lease", nil, nil, &okAnswer{})
}

// GetAppLease returns the app's lease (a 404 *APIError when none is held).
func (c *Client) GetAppLease(ctx context.Context, app string) (model.Lease, error) {
	var out leaseAnswer
	err := c.do(ctx, http.MethodGet, appPath(app)+"/lease", nil, nil, &out)
	return out.Data, err
}

// GetLease returns the machine's lease (a 404 *APIError when none is held).
func (c *Client) GetLease(ctx context.Context, app, id string) (model.Lease, error) {
	var out leaseAnswer
	err := c.do(ctx, http.MethodGet, machinePath(app, id)+"/lease", nil, nil, &out)
	return out.Data, err
}
