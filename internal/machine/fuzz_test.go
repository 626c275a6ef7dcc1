package machine

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/torpor-dev/torpor/internal/model"
)

// decoderFixture is a Manager that validates configs against a small images
// directory: "base" and "tagged_v1" images, "nested/app", a symlink "inner"
// to base and a symlink "escape" to "/" that must never be accepted.
// "$IMAGES" and "$DATA" in a fuzzed body stand for its images and data
// directories, so that seeds can name absolute paths.
type decoderFixture struct {
	m              *Manager
	images, data   string
	escapeResolved string
}

func newDecoderFixture(tb testing.TB) *decoderFixture {
	tb.Helper()
	dir := tb.TempDir()
	images := filepath.Join(dir, "images")
	for _, d := range []string{"base", "tagged_v1", "nested/app"} {
		if err := os.MkdirAll(filepath.Join(images, d), 0o755); err != nil {
			tb.Fatal(err)
		}
	}
	for name, target := range map[string]string{"inner": "base", "escape": "/", "up": ".."} {
		if err := os.Symlink(target, filepath.Join(images, name)); err != nil {
			tb.Fatal(err)
		}
	}
	data := filepath.Join(dir, "data")
	m, err := New(Config{DataDir: data, ImagesDir: images, RunDir: filepath.Join(dir, "run")}, nil, nil)
	if err != nil {
		tb.Fatal(err)
	}
	return &decoderFixture{m: m, images: images, data: data}
}

// decoderSeeds are realistic bodies of create and update requests, valid
// and not.
var decoderSeeds = []string{
	`{"config":{"image":"base","init":{"exec":["/app"]}}}`,
	`{"name":"web-1","region":"local","config":{"image":"tagged:v1","init":{"entrypoint":["python3"],"cmd":["-m","http.server"],"workdir":"/srv"},` +
		`"env":{"PORT":"8080","_X":""},"guest":{"cpu_kind":"performance","cpus":2,"memory_mb":512},` +
		`"services":[{"protocol":"tcp","internal_port":8080,"ports":[{"port":80,"handlers":["http"]},{"port":443,"handlers":["tls","http"]}],` +
		`"autostop":"suspend","autostart":true,"min_machines_running":0,"concurrency":{"type":"requests","soft_limit":20,"hard_limit":25}}],` +
		`"restart":{"policy":"on-failure","max_retries":3},"metadata":{"k":"v"},"stop_config":{"timeout":"30s","signal":"term"},` +
		`"hooks":{"pre_suspend":{"cmd":["/bin/true"],"timeout":5},"post_resume":{"cmd":["/bin/true"]},"resume_signal":"usr2"}},"skip_launch":true}`,
	`{"config":{"image":"$IMAGES/base","init":{"exec":["/app"]},"guest":{"gpus":1,"gpu_suspend":"host-memory"},` +
		`"hooks":{"pre_suspend":{"cmd":["a"]},"post_resume":{"cmd":["b"]}}}}`,
	`{"config":{"image":"nested/app","init":{"exec":["/app"]},"schedule":"daily","swap_size_mb":0,"auto_destroy":true}}`,
	`{"config":{"image":"inner","init":{"exec":["/app"]},"services":[{"internal_port":1,"autostop":false},{"internal_port":65535,"autostop":true}]}}`,
	`{"config":{"image":"escape","init":{"exec":["/app"]}}}`,
	`{"config":{"image":"up/etc","init":{"exec":["/app"]}}}`,
	`{"config":{"image":"../../etc","init":{"exec":["/app"]}}}`,
	`{"config":{"image":"/","init":{"exec":["/app"]}}}`,
	`{"config":{"image":"$DATA","init":{"exec":["/app"]}}}`,
	`{"config":{"image":"$IMAGES/../data","init":{"exec":["/app"]}}}`,
	`{"config":{"image":"base","init":{"exec":["/app"]},"guest":{"cpus":65,"memory_mb":1}}}`,
	`{"config":{"image":"base","init":{"exec":["/app"]},"guest":{"memory_mb":"512"}}}`,
	`{"config":{"image":"base","init":{"exec":["/app"]},"services":[{"internal_port":0}]}}`,
	`{"config":{"image":"base","init":{"exec":["/app"]},"services":[{"internal_port":80,"ports":[{"port":70000}]}]}}`,
	`{"config":{"image":"base","init":{"exec":["/app"]},"services":[{"internal_port":80,"concurrency":{"soft_limit":30,"hard_limit":20}}]}}`,
	`{"config":{"image":"base","init":{"exec":["/app"]},"stop_config":{"timeout":1e300}}}`,
	`{"config":{"image":"base","init":{"exec":["/app"]},"stop_config":{"signal":"SIGNOPE"}}}`,
	`{"config":{"image":"base","init":{"exec":["/app\u0000"]},"env":{"1BAD":"x"}}}`,
	`{"config":{"image":"base","init":{"exec":["/app"]},"restart":{"policy":"sometimes","max_retries":-1}}}`,
	`{"config":{"image":"base","init":{"exec":["/app"]},"hooks":{"pre_suspend":{"cmd":[],"timeout":"1h"},"resume_signal":"KILL"}}}`,
	`{"config":{"image":"base","init":{"exec":["/app"]}},"unknown":1}`,
	`{"config":{"image":"base","init":{"exec":["/app"]}}} trailing`,
	`{"config":{"image":"base","init":{"exec":[]},"env":{},"metadata":{},"services":[]}}`,
	`{"config":{"image":"base","init":{"exec":["/app"]},"services":[{"internal_port":80,"autostop":"suspend"}],"swap_size_mb":1}}`,
	`[]`, `null`, `"x"`, `{`, ``,
}

// FuzzConfigDecoder decodes a create or update request body and validates
// its config: it must never panic, and must either refuse the body with a
// KindInvalid error or give a config that validates again unchanged and
// round-trips through JSON (encode, decode, equal).
func FuzzConfigDecoder(f *testing.F) {
	for _, s := range decoderSeeds {
		f.Add([]byte(s))
	}
	fx := newDecoderFixture(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		body = bytes.ReplaceAll(body, []byte("$IMAGES"), []byte(fx.images))
		body = bytes.ReplaceAll(body, []byte("$DATA"), []byte(fx.data))
		var req model.CreateMachineRequest
		if err := model.DecodeJSON(bytes.NewReader(body), &req); err != nil {
			if !errors.Is(err, model.ErrEmptyBody) {
				wantInvalid(t, "decode", err)
			}
			return
		}
		if err := checkCreate(&req); err != nil {
			wantInvalid(t, "check request", err)
			return
		}
		cfg := req.Config
		if err := fx.m.normalize(&cfg); err != nil {
			wantInvalid(t, "validate", err)
			return
		}
		fx.checkAccepted(t, cfg)
		fx.checkRoundTrip(t, cfg)
	})
}

func wantInvalid(t *testing.T, step string, err error) {
	t.Helper()
	if k := model.KindOf(err); k != model.KindInvalid {
		t.Fatalf("%s: error of kind %s, want KindInvalid: %v", step, k, err)
	}
	if err.Error() == "" {
		t.Fatalf("%s: empty error message", step)
	}
}

// checkAccepted checks that an accepted config's image is a directory
// inside the images directory or outside the daemon's own directories.
func (fx *decoderFixture) checkAccepted(t *testing.T, cfg model.MachineConfig) {
	t.Helper()
	dir, err := fx.m.rootfs(cfg.Image)
	if err != nil {
		t.Fatalf("accepted image %q does not resolve: %v", cfg.Image, err)
	}
	images := realPath(fx.images)
	if !filepath.IsAbs(cfg.Image) && !within(dir, images) {
		t.Fatalf("image name %q resolved to %s, outside %s", cfg.Image, dir, images)
	}
	if dir == "/" || within(realPath(fx.data), dir) || (within(dir, realPath(fx.data)) && !within(dir, images)) {
		t.Fatalf("image %q resolved to %s, which exposes the data directory", cfg.Image, dir)
	}
}

// checkRoundTrip encodes cfg, decodes it strictly and validates it again:
// both must give cfg back.
func (fx *decoderFixture) checkRoundTrip(t *testing.T, cfg model.MachineConfig) {
	t.Helper()
	data, err := json.Marshal(cfg)
	if err != nil {
		t.Fatalf("encode accepted config: %v", err)
	}
	var back model.MachineConfig
	if err := model.DecodeJSON(bytes.NewReader(data), &back); err != nil {
		t.Fatalf("decode encoded config %s: %v", data, err)
	}
	if !reflect.DeepEqual(back, cfg) {
		t.Fatalf("round trip changed the config:\n got %#v\nwant %#v\njson %s", back, cfg, data)
	}
	if err := fx.m.normalize(&back); err != nil {
		t.Fatalf("accepted config %s fails validation once stored: %v", data, err)
	}
	if !reflect.DeepEqual(back, cfg) {
		t.Fatalf("validating twice changed the config:\n got %#v\nwant %#v", back, cfg)
	}
}
