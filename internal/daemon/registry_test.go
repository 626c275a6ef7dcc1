package daemon_test

import (
	"context"
	"path/filepath"
	"time"

	"github.com/torpor-dev/torpor/internal/image/imagetest"
)

// The integration tests' machines run the Debian+python root filesystem as
// an OCI image that each daemon pulls from a real registry (Debian's
// docker-registry on loopback), started once for the test binary.
var (
	registry    *imagetest.Registry
	pythonImage string // registry/torpor/python:bookworm
)

// startTestRegistry starts the registry under dir and pushes the python
// image to it (its layer is built once and cached with the rootfs).
func startTestRegistry(dir string) (stop func(), err error) {
	registry, err = imagetest.StartRegistry(filepath.Join(dir, "registry"), false)
	if err != nil {
		return nil, err
	}
	img, err := imagetest.FromRootFS(rootfs, imagetest.DefaultCacheDir, imagetest.Config{
		Cmd: []string{"python3"}, Env: []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}})
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		pythonImage = registry.Ref("torpor/python:bookworm")
		err = registry.Push(ctx, pythonImage, img)
	}
	if err != nil {
		registry.Stop()
		return nil, err
	}
	return func() { registry.Stop() }, nil
}
