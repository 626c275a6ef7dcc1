package client

import (
	"context"
	"net/http"
	"net/url"

	"github.com/torpor-dev/torpor/internal/model"
)

// CreateVolume creates a volume in app.
func (c *Client) CreateVolume(ctx context.Context, app string, req model.CreateVolumeRequest) (model.Volume, error) {
	var v model.Volume
	err := c.do(ctx, http.MethodPost, appPath(app)+"/volumes", nil, req, &v)
	return v, err
}

// ListVolumes returns the volumes of app.
func (c *Client) ListVolumes(ctx context.Context, app string) ([]model.Volume, error) {
	var vs []model.Volume
	err := c.do(ctx, http.MethodGet, appPath(app)+"/volumes", nil, nil, &vs)
	return vs, err
}

// GetVolume returns a volume with its usage.
func (c *Client) GetVolume(ctx context.Context, app, id string) (model.Volume, error) {
	var v model.Volume
	err := c.do(ctx, http.MethodGet, volumePath(app, id), nil, nil, &v)
	return v, err
}

// UpdateVolume changes a volume's settings.
func (c *Client) UpdateVolume(ctx context.Context, app, id string, req model.UpdateVolumeRequest) (model.Volume, error) {
	var v model.Volume
	err := c.do(ctx, http.MethodPut, volumePath(app, id), nil, req, &v)
	return v, err
}

// ExtendVolume grows a volume to sizeGB.
func (c *Client) ExtendVolume(ctx context.Context, app, id string, sizeGB int) (model.ExtendVolumeResponse, error) {
	var resp model.ExtendVolumeResponse
	err := c.do(ctx, http.MethodPost, volumePath(app, id)+"/extend", nil, model.ExtendVolumeRequest{SizeGB: sizeGB}, &resp)
	return resp, err
}

// DestroyVolume destroys a volume that no machine is attached to.
func (c *Client) DestroyVolume(ctx context.Context, app, id string) (model.Volume, error) {
	var v model.Volume
	err := c.do(ctx, http.MethodDelete, volumePath(app, id), nil, nil, &v)
	return v, err
}

func volumePath(app, id string) string { return appPath(app) + "/volumes/" + url.PathEscape(id) }
