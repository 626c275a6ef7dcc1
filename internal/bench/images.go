package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/torpor-dev/torpor/internal/client"
	"github.com/torpor-dev/torpor/internal/image/imagetest"
	"github.com/torpor-dev/torpor/internal/model"
)

// ImageSample is one round of the image measurements, in milliseconds.
type ImageSample struct {
	// PullMS is a pull of the image when nothing of it is on the host:
	// download, digest checks and unpacking.
	PullMS float64 `json:"pull_ms"`
	// FreshColdMS is machine create → first HTTP byte when the image is
	// not on the host (the create pulls it); CachedColdMS the same once it
	// is; DirColdMS the same from the root filesystem directory.
	FreshColdMS  float64 `json:"fresh_cold_ms"`
	CachedColdMS float64 `json:"cached_cold_ms"`
	DirColdMS    float64 `json:"dir_cold_ms"`
	// OCIResumeMS and DirResumeMS are start → first byte of a suspended
	// machine of the image and of the directory.
	OCIResumeMS float64 `json:"oci_resume_ms"`
	DirResumeMS float64 `json:"dir_resume_ms"`
}

// ImageResult is the image benchmark's samples and what was measured.
type ImageResult struct {
	Reference     string        `json:"reference"`
	Digest        string        `json:"digest"`
	Layers        int           `json:"layers"`
	SizeBytes     int64         `json:"size_bytes"`     // compressed
	UnpackedBytes int64         `json:"unpacked_bytes"` // the layers' tar streams
	RootFS        string        `json:"rootfs"`         // the directory it was built from
	Samples       []ImageSample `json:"samples"`
}

// benchRegistry is the local registry an in-process benchmark pushes its
// image to: Debian's docker-registry on a loopback port.
type benchRegistry struct {
	reg *imagetest.Registry
	dir string
}

// startRegistry starts the registry the in-process daemon will pull from.
func startRegistry() (*benchRegistry, error) {
	dir, err := os.MkdirTemp("", "torpor-bench-registry-")
	if err != nil {
		return nil, err
	}
	reg, err := imagetest.StartRegistry(dir, false)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return &benchRegistry{reg: reg, dir: dir}, nil
}

func (r *benchRegistry) stop() {
	r.reg.Stop()
	os.RemoveAll(r.dir)
}

// pushRootFS builds the OCI image of the root filesystem directory (its
// layer is cached beside the rootfs cache) and pushes it.
func (r *benchRegistry) pushRootFS(ctx context.Context, cfg Config, rootfs string) (string, error) {
	progress(cfg, "building an OCI image of %s and pushing it to %s", rootfs, r.reg.Host)
	img, err := imagetest.FromRootFS(rootfs, imagetest.DefaultCacheDir, imagetest.Config{Cmd: []string{"python3"}})
	if err != nil {
		return "", err
	}
	ref := r.reg.Ref("torpor/bench-python:bookworm")
	return ref, r.reg.Push(ctx, ref, img)
}

// runImages measures pulls and cold starts of the image fresh and cached,
// against the root filesystem directory it was built from, and resumes of
// both, alternately in each round so that they meet the same host load.
func runImages(ctx context.Context, c *client.Client, cfg Config) (*ImageResult, error) {
	res := &ImageResult{Reference: cfg.Image, RootFS: cfg.RootFS}
	s := Scenario{Init: Init{Name: "light", Target: "~0.1 s"}, ResidentMB: 64, GuestMB: 64 + cfg.GuestSlackMB}
	for i := 1; i <= cfg.Runs; i++ {
		var smp ImageSample
		if err := forget(ctx, c, cfg); err != nil {
			return res, err
		}
		begin := time.Now()
		img, err := c.PullImage(ctx, model.PullImageRequest{Image: cfg.Image, App: cfg.App}, nil)
		if err != nil {
			return res, fmt.Errorf("pull: %w", err)
		}
		smp.PullMS = millis(time.Since(begin))
		res.Digest, res.Layers, res.SizeBytes, res.UnpackedBytes = img.Digest, img.Layers, img.SizeBytes, img.UnpackedBytes
		if err := forget(ctx, c, cfg); err != nil {
			return res, err
		}
		if smp.FreshColdMS, _, err = coldCreate(ctx, c, cfg, s, cfg.Image, false); err != nil {
			return res, fmt.Errorf("cold start, fresh image: %w", err)
		}
		if smp.CachedColdMS, smp.OCIResumeMS, err = coldCreate(ctx, c, cfg, s, cfg.Image, true); err != nil {
			return res, fmt.Errorf("cold start, cached image: %w", err)
		}
		if smp.DirColdMS, smp.DirResumeMS, err = coldCreate(ctx, c, cfg, s, cfg.RootFS, true); err != nil {
			return res, fmt.Errorf("cold start, directory: %w", err)
		}
		res.Samples = append(res.Samples, smp)
		progress(cfg, "images: run %d/%d: pull %.0f ms; cold fresh %.0f, cached %.0f, directory %.0f ms; resume image %.0f, directory %.0f ms",
			i, cfg.Runs, smp.PullMS, smp.FreshColdMS, smp.CachedColdMS, smp.DirColdMS, smp.OCIResumeMS, smp.DirResumeMS)
	}
	return res, nil
}

// forget removes the benchmark app's reference to the image and prunes,
// so that nothing of the image is left on the host.
func forget(ctx context.Context, c *client.Client, cfg Config) error {
	_, err := c.RemoveImage(ctx, cfg.Image, cfg.App, true)
	var apiErr *client.APIError
	if err != nil && !(errors.As(err, &apiErr) && apiErr.Status == 404) {
		return fmt.Errorf("remove the image: %w", err)
	}
	res, err := c.PruneImages(ctx, cfg.App, false)
	if err != nil {
		return fmt.Errorf("prune: %w", err)
	}
	if len(res.Digests) == 0 {
		if _, err := c.GetImage(ctx, cfg.Image, cfg.App); err == nil {
			return errors.New("the image is still on the host after remove and prune")
		}
	}
	return nil
}

// coldCreate creates a machine of the light 64 MiB app from image and
// times it to the first HTTP byte; with resume it then suspends it and
// times the resume to the first byte. The machine is destroyed after.
func coldCreate(ctx context.Context, c *client.Client, cfg Config, s Scenario, image string, resume bool) (coldMS, resumeMS float64, err error) {
	mcfg := machineConfig(cfg, s)
	mcfg.Image = image
	begin := time.Now()
	m, err := c.CreateMachine(ctx, cfg.App, model.CreateMachineRequest{Config: mcfg})
	if err != nil {
		return 0, 0, err
	}
	defer func() {
		if derr := c.Destroy(context.Background(), cfg.App, m.ID, true); derr != nil {
			err = errors.Join(err, derr)
		}
	}()
	addr := net.JoinHostPort(m.PrivateIP, appPort)
	p, err := firstByte(ctx, addr, "/", cfg.PollInterval)
	if err != nil {
		return 0, 0, err
	}
	coldMS = millis(p.firstByte.Sub(begin))
	if !resume {
		return coldMS, 0, nil
	}
	r := run{c: c, cfg: cfg, app: cfg.App, id: m.ID, addr: addr, last: p.state}
	var smp Sample
	if err := r.suspend(ctx, &smp); err != nil {
		return coldMS, 0, err
	}
	if err := r.resume(ctx, &smp); err != nil {
		return coldMS, 0, err
	}
	return coldMS, smp.ResumeMS, nil
}

// imagesTable renders the image benchmark.
func imagesTable(b *strings.Builder, res *Result) {
	ir := res.Images
	if ir == nil || len(ir.Samples) == 0 {
		return
	}
	ss := ir.Samples
	col := func(f func(ImageSample) float64) Summary {
		xs := make([]float64, 0, len(ss))
		for _, s := range ss {
			xs = append(xs, f(s))
		}
		return Summarize(xs)
	}
	fmt.Fprintf(b, "### Images\n\nThe light app (64 MiB) from an OCI image of %s (%d layer(s), %.0f MB compressed, %.0f MB unpacked), "+
		"pulled from a local registry (docker-registry on loopback), against the directory itself; %d rounds, each measuring every row "+
		"in turn (nothing of the image is on the host before the fresh rows).\n\n",
		ir.RootFS, ir.Layers, float64(ir.SizeBytes)/1e6, float64(ir.UnpackedBytes)/1e6, len(ss))
	b.WriteString("| what | ms, p50 / p95 |\n|---|---|\n")
	rows := []struct {
		what string
		f    func(ImageSample) float64
	}{
		{"pull + unpack, fresh (image pull)", func(s ImageSample) float64 { return s.PullMS }},
		{"cold start (create → first byte), fresh image: the create pulls it", func(s ImageSample) float64 { return s.FreshColdMS }},
		{"cold start, cached image", func(s ImageSample) float64 { return s.CachedColdMS }},
		{"cold start, root filesystem directory", func(s ImageSample) float64 { return s.DirColdMS }},
		{"resume (start → first byte), image", func(s ImageSample) float64 { return s.OCIResumeMS }},
		{"resume, root filesystem directory", func(s ImageSample) float64 { return s.DirResumeMS }},
	}
	for _, r := range rows {
		fmt.Fprintf(b, "| %s | %s |\n", r.what, pair(col(r.f), "%.0f"))
	}
	b.WriteString("\n")
}

// isDir reports whether path is a directory on this host.
func isDir(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.IsDir() && filepath.IsAbs(path)
}
