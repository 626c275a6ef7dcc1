// Package client owns torpor's Go client for its REST API: typed calls for
// apps and machines over a Unix socket or TCP, with API errors returned as
// *APIError. The CLI and the integration tests use it.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/torpor-dev/torpor/internal/model"
)

// Client calls a torpor daemon's API. It is safe for concurrent use.
type Client struct {
	addr  string // as given to New, for error messages
	base  string // scheme://host, no trailing slash
	token string
	http  *http.Client
}

// APIError is a non-2xx answer of the API.
type APIError struct {
	Status  int    // HTTP status
	Message string // the server's "error" text
}

func (e *APIError) Error() string { return e.Message }

// New returns a client of the API at addr: "unix:///path/to.sock", a socket
// path starting with "/", "http://host:port" (or https) or "host:port". A
// non-empty token is sent as a bearer token to TCP addresses; the Unix socket
// is the daemon's local admin socket, which needs none, so the token is not
// sent there. Calls have no timeout of their own: bound them with their
// context.
func New(addr, token string) (*Client, error) {
	c := &Client{addr: addr, token: token}
	switch {
	case addr == "":
		return nil, fmt.Errorf("API address is empty: want unix:///path, /path, http://host:port or host:port")
	case strings.HasPrefix(addr, "unix://"):
		return c.unix(strings.TrimPrefix(addr, "unix://"))
	case strings.HasPrefix(addr, "/"):
		return c.unix(addr)
	case strings.HasPrefix(addr, "http://"), strings.HasPrefix(addr, "https://"):
		u, err := url.Parse(addr)
		if err != nil || u.Host == "" || (u.Path != "" && u.Path != "/") {
			return nil, fmt.Errorf("invalid API address %q: want scheme://host:port with no path", addr)
		}
		c.base = u.Scheme + "://" + u.Host
	case strings.Contains(addr, "://"):
		return nil, fmt.Errorf("invalid API address %q: scheme must be unix, http or https", addr)
	default:
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return nil, fmt.Errorf("invalid API address %q: want host:port: %v", addr, err)
		}
		c.base = "http://" + addr
	}
	c.http = &http.Client{}
	return c, nil
}

// unix sets c up to talk HTTP over the Unix socket at path.
func (c *Client) unix(path string) (*Client, error) {
	if !strings.HasPrefix(path, "/") {
		return nil, fmt.Errorf("invalid API address: unix socket path %q must be absolute", path)
	}
	var d net.Dialer
	transport := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.DialContext(ctx, "unix", path)
		},
	}
	c.base = "http://torpor"
	c.http = &http.Client{Transport: transport}
	c.token = "" // the admin socket trusts its peers; keep the secret to ourselves
	return c, nil
}

// CloseIdleConnections closes the client's kept-alive connections to the
// daemon that no request is using.
func (c *Client) CloseIdleConnections() { c.http.CloseIdleConnections() }

// okAnswer is the answer of operations that return nothing else.
type okAnswer struct {
	OK bool `json:"ok"`
}

// CreateApp creates an app in org (which may be empty).
func (c *Client) CreateApp(ctx context.Context, name, org string) (model.App, error) {
	var app model.App
	body := map[string]string{"app_name": name, "org_slug": org}
	err := c.do(ctx, http.MethodPost, "/v1/apps", nil, body, &app)
	return app, err
}

// GetApp returns an app.
func (c *Client) GetApp(ctx context.Context, name string) (model.App, error) {
	var app model.App
	err := c.do(ctx, http.MethodGet, appPath(name), nil, nil, &app)
	return app, err
}

// ListApps returns every app.
func (c *Client) ListApps(ctx context.Context) ([]model.App, error) {
	var list struct {
		Apps []model.App `json:"apps"`
	}
	err := c.do(ctx, http.MethodGet, "/v1/apps", nil, nil, &list)
	return list.Apps, err
}

// DeleteApp deletes an app.
func (c *Client) DeleteApp(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, appPath(name), nil, nil, &okAnswer{})
}

// CreateMachine creates (and, unless req.SkipLaunch, starts) a machine.
func (c *Client) CreateMachine(ctx context.Context, app string, req model.CreateMachineRequest) (model.Machine, error) {
	var m model.Machine
	err := c.do(ctx, http.MethodPost, appPath(app)+"/machines", nil, req, &m)
	return m, err
}

// GetMachine returns a machine.
func (c *Client) GetMachine(ctx context.Context, app, id string) (model.Machine, error) {
	var m model.Machine
	err := c.do(ctx, http.MethodGet, machinePath(app, id), nil, nil, &m)
	return m, err
}

// ListMachines returns the machines of an app.
func (c *Client) ListMachines(ctx context.Context, app string) ([]model.Machine, error) {
	var list []model.Machine
	err := c.do(ctx, http.MethodGet, appPath(app)+"/machines", nil, nil, &list)
	return list, err
}

// UpdateMachine replaces a machine's config.
func (c *Client) UpdateMachine(ctx context.Context, app, id string, req model.UpdateMachineRequest) (model.Machine, error) {
	var m model.Machine
	err := c.do(ctx, http.MethodPost, machinePath(app, id), nil, req, &m)
	return m, err
}

// Start starts or resumes a machine.
func (c *Client) Start(ctx context.Context, app, id string) (model.StartResponse, error) {
	var resp model.StartResponse
	err := c.do(ctx, http.MethodPost, machinePath(app, id)+"/start", nil, nil, &resp)
	return resp, err
}

// Stop stops a machine; a zero req uses the machine's defaults.
func (c *Client) Stop(ctx context.Context, app, id string, req model.StopRequest) error {
	var body any
	if req != (model.StopRequest{}) {
		body = req
	}
	return c.do(ctx, http.MethodPost, machinePath(app, id)+"/stop", nil, body, &okAnswer{})
}

// Suspend suspends a started machine.
func (c *Client) Suspend(ctx context.Context, app, id string) error {
	return c.do(ctx, http.MethodPost, machinePath(app, id)+"/suspend", nil, nil, &okAnswer{})
}

// Destroy destroys a machine; force destroys it even when it runs.
func (c *Client) Destroy(ctx context.Context, app, id string, force bool) error {
	var q url.Values
	if force {
		q = url.Values{"force": {"true"}}
	}
	return c.do(ctx, http.MethodDelete, machinePath(app, id), q, nil, &okAnswer{})
}

// Wait blocks until the machine is in one of states (started when empty) and
// returns that state. The server gives up after timeout, rounded up to whole
// seconds (0 means the server's default of 60 s, at most 600 s), and answers
// an *APIError with Status 408.
func (c *Client) Wait(ctx context.Context, app, id string, states []model.State, timeout time.Duration) (model.State, error) {
	q := url.Values{}
	for _, s := range states {
		q.Add("state", string(s))
	}
	if timeout > 0 {
		secs := (timeout + time.Second - 1) / time.Second
		q.Set("timeout", strconv.Itoa(int(secs)))
	}
	var answer struct {
		State model.State `json:"state"`
	}
	err := c.do(ctx, http.MethodGet, machinePath(app, id)+"/wait", q, nil, &answer)
	return answer.State, err
}

// Events returns a machine's events.
func (c *Client) Events(ctx context.Context, app, id string) ([]model.Event, error) {
	var events []model.Event
	err := c.do(ctx, http.MethodGet, machinePath(app, id)+"/events", nil, nil, &events)
	return events, err
}

// Cordon marks a machine so the proxy skips it (cordoned false clears it).
func (c *Client) Cordon(ctx context.Context, app, id string, cordoned bool) error {
	op := "/cordon"
	if !cordoned {
		op = "/uncordon"
	}
	return c.do(ctx, http.MethodPost, machinePath(app, id)+op, nil, nil, &okAnswer{})
}

// CreateToken creates an API token; the answer carries its secret, which the
// daemon does not keep.
func (c *Client) CreateToken(ctx context.Context, req model.CreateTokenRequest) (model.CreatedToken, error) {
	var tok model.CreatedToken
	err := c.do(ctx, http.MethodPost, "/v1/tokens", nil, req, &tok)
	return tok, err
}

// ListTokens returns every API token (without secrets).
func (c *Client) ListTokens(ctx context.Context) ([]model.Token, error) {
	var list struct {
		Tokens []model.Token `json:"tokens"`
	}
	err := c.do(ctx, http.MethodGet, "/v1/tokens", nil, nil, &list)
	return list.Tokens, err
}

// RevokeToken deletes an API token; it stops working at once.
func (c *Client) RevokeToken(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, "/v1/tokens/"+url.PathEscape(id), nil, nil, &okAnswer{})
}

// DashboardLink asks the daemon (over its admin socket) for a one-time
// link to the web dashboard on a loopback port.
func (c *Client) DashboardLink(ctx context.Context) (model.DashboardLink, error) {
	var link model.DashboardLink
	err := c.do(ctx, http.MethodPost, "/v1/dashboard", nil, nil, &link)
	return link, err
}

// Health checks that the daemon answers.
func (c *Client) Health(ctx context.Context) error {
	return c.do(ctx, http.MethodGet, "/healthz", nil, nil, &okAnswer{})
}

func appPath(app string) string { return "/v1/apps/" + url.PathEscape(app) }

func machinePath(app, id string) string {
	return appPath(app) + "/machines/" + url.PathEscape(id)
}

// do sends a request with body (if non-nil) as JSON and decodes a 2xx answer
// into out; other answers become *APIError.
func (c *Client) do(ctx context.Context, method, path string, query url.Values, body, out any) error {
	req, err := c.request(ctx, method, path, query, body)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		var urlErr *url.Error
		if errors.As(err, &urlErr) {
			err = urlErr.Err // its message repeats the method and URL
		}
		return fmt.Errorf("cannot reach the torpor API at %s: %w", c.addr, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("%s %s: reading the answer: %w", method, path, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return apiError(resp.StatusCode, data)
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("%s %s: decoding the answer: %w", method, path, err)
	}
	return nil
}

// request builds an API request.
func (c *Client) request(ctx context.Context, method, path string, query url.Values, body any) (*http.Request, error) {
	u := c.base + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	var r io.Reader
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			return nil, fmt.Errorf("encoding the request: %w", err)
		}
		r = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, r)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if nonce := model.LeaseNonceOf(ctx); nonce != "" {
		req.Header.Set(LeaseNonceHeader, nonce)
	}
	return req, nil
}

// apiError builds the *APIError of a non-2xx answer.
func apiError(status int, data []byte) *APIError {
	var body struct {
		Error string `json:"error"`
	}
	msg := ""
	if json.Unmarshal(data, &body) == nil {
		msg = body.Error
	}
	if msg == "" {
		msg = strings.TrimSpace(string(data))
	}
	if msg == "" || len(msg) > 500 {
		msg = fmt.Sprintf("%d %s", status, http.StatusText(status))
	}
	return &APIError{Status: status, Message: msg}
}
