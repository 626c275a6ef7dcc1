package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"time"

	"github.com/torpor-dev/torpor/internal/logs"
)

// LogQuery selects the log records to read.
type LogQuery struct {
	FromSeq uint64    // first sequence number (0: the oldest kept)
	Since   time.Time // records from this time on (zero: no bound)
	Limit   int       // at most this many (0: the server's default); ignored when following
	Follow  bool      // keep streaming new records until ctx ends
}

// Logs reads a machine's log and calls fn for each record in order. With
// q.Follow it returns only when ctx ends (nil), fn fails, or the stream breaks.
func (c *Client) Logs(ctx context.Context, app, id string, q LogQuery, fn func(logs.Record) error) error {
	path := machinePath(app, id) + "/logs"
	req, err := c.request(ctx, "GET", path, logValues(q), nil)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("cannot reach the torpor API at %s: %w", c.addr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		data, _ := io.ReadAll(resp.Body)
		return apiError(resp.StatusCode, data)
	}
	dec := json.NewDecoder(resp.Body)
	for {
		var rec logs.Record
		err := dec.Decode(&rec)
		switch {
		case errors.Is(err, io.EOF), err != nil && ctx.Err() != nil:
			return nil
		case err != nil:
			return fmt.Errorf("GET %s: reading the stream: %w", path, err)
		}
		if err := fn(rec); err != nil {
			return err
		}
	}
}

func logValues(q LogQuery) url.Values {
	v := url.Values{}
	if q.FromSeq > 0 {
		v.Set("from_seq", strconv.FormatUint(q.FromSeq, 10))
	}
	if !q.Since.IsZero() {
		v.Set("since", q.Since.UTC().Format(time.RFC3339Nano))
	}
	if q.Limit > 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	if q.Follow {
		v.Set("follow", "true")
	}
	return v
}
