package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/torpor-dev/torpor/internal/model"
)

// imagePath is the path of an image reference (references hold "/", ":"
// and "@", which stay as they are in the path).
func imagePath(ref string) string { return "/v1/images/" + (&url.URL{Path: ref}).EscapedPath() }

// PullImage pulls an image. With progress set, the daemon streams the
// pull's progress and progress is called for each step; the last step
// (phase "done") carries the image.
func (c *Client) PullImage(ctx context.Context, req model.PullImageRequest, progress func(model.PullProgress)) (model.Image, error) {
	if progress == nil {
		var img model.Image
		err := c.do(ctx, http.MethodPost, "/v1/images/pull", nil, req, &img)
		return img, err
	}
	return c.stream(ctx, http.MethodPost, "/v1/images/pull", url.Values{"progress": {"true"}}, req, nil, progress)
}

// ImportImage loads a `docker save` or OCI layout tarball read from r; a
// non-empty name names its (only) image, app owns the references.
func (c *Client) ImportImage(ctx context.Context, r io.Reader, name, app string, public bool, progress func(model.PullProgress)) ([]model.Image, error) {
	q := url.Values{"progress": {"true"}}
	if name != "" {
		q.Set("name", name)
	}
	if app != "" {
		q.Set("app", app)
	}
	if public {
		q.Set("public", "true")
	}
	var out []model.Image
	_, err := c.stream(ctx, http.MethodPost, "/v1/images/import", q, nil, r, func(p model.PullProgress) {
		if p.Phase == "done" && p.Image != nil {
			out = append(out, *p.Image)
		}
		if progress != nil {
			progress(p)
		}
	})
	return out, err
}

// ListImages lists the images the caller sees (app: only that app's and
// the public ones).
func (c *Client) ListImages(ctx context.Context, app string) ([]model.Image, error) {
	var list struct {
		Images []model.Image `json:"images"`
	}
	var q url.Values
	if app != "" {
		q = url.Values{"app": {app}}
	}
	err := c.do(ctx, http.MethodGet, "/v1/images", q, nil, &list)
	return list.Images, err
}

// GetImage returns an image by reference.
func (c *Client) GetImage(ctx context.Context, ref, app string) (model.Image, error) {
	var img model.Image
	var q url.Values
	if app != "" {
		q = url.Values{"app": {app}}
	}
	err := c.do(ctx, http.MethodGet, imagePath(ref), q, nil, &img)
	return img, err
}

// RemoveImage deletes a reference (force: even if a machine uses it).
func (c *Client) RemoveImage(ctx context.Context, ref, app string, force bool) (model.PruneImagesResult, error) {
	q := url.Values{}
	if app != "" {
		q.Set("app", app)
	}
	if force {
		q.Set("force", "true")
	}
	var res model.PruneImagesResult
	err := c.do(ctx, http.MethodDelete, imagePath(ref), q, nil, &res)
	return res, err
}

// PruneImages deletes the image content nothing refers to; with all, the
// references no machine uses first.
func (c *Client) PruneImages(ctx context.Context, app string, all bool) (model.PruneImagesResult, error) {
	var res model.PruneImagesResult
	body := map[string]any{"app": app, "all": all}
	err := c.do(ctx, http.MethodPost, "/v1/images/prune", nil, body, &res)
	return res, err
}

// stream sends a request (a JSON body, or raw when raw is set) whose 200
// answer is a stream of progress lines, calling fn for each. A line of
// phase "error" ends the stream as an *APIError.
func (c *Client) stream(ctx context.Context, method, path string, q url.Values, body any, raw io.Reader, fn func(model.PullProgress)) (model.Image, error) {
	req, err := c.request(ctx, method, path, q, body)
	if err != nil {
		return model.Image{}, err
	}
	if raw != nil {
		req.Body = io.NopCloser(raw)
		req.ContentLength = -1
		req.Header.Set("Content-Type", "application/x-tar")
	}
	req.Header.Set("Accept", "application/x-ndjson")
	resp, err := c.http.Do(req)
	if err != nil {
		return model.Image{}, fmt.Errorf("cannot reach the torpor API at %s: %w", c.addr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		data, _ := io.ReadAll(resp.Body)
		return model.Image{}, apiError(resp.StatusCode, data)
	}
	dec := json.NewDecoder(resp.Body)
	var last model.Image
	for {
		var p model.PullProgress
		err := dec.Decode(&p)
		if errors.Is(err, io.EOF) {
			return last, fmt.Errorf("%s %s: the stream ended before the operation did", method, path)
		}
		if err != nil {
			return last, fmt.Errorf("%s %s: reading the stream: %w", method, path, err)
		}
		fn(p)
		switch p.Phase {
		case "error":
			return last, &APIError{Status: p.Status, Message: p.Error}
		case "end":
			return last, nil
		case "done":
			if p.Image != nil {
				last = *p.Image
			}
		}
	}
}
