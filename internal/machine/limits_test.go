package machine

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/torpor-dev/torpor/internal/model"
)

// Issue 17, F12: the sizes a config makes the store hold are bounded, in
// a create, an update and a metadata key set one at a time, each refusal
// naming the field and the limit.
func TestConfigSizeLimits(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	withMetadata := func(md map[string]string) model.MachineConfig {
		cfg := e.config()
		cfg.Metadata = md
		return cfg
	}
	many := map[string]string{}
	for i := 0; i <= maxMetadataKeys; i++ {
		many[fmt.Sprintf("k%d", i)] = "v"
	}
	heavy := map[string]string{}
	for i := 0; i < 20; i++ {
		heavy[fmt.Sprintf("k%d", i)] = strings.Repeat("v", maxMetadataValue)
	}
	for _, c := range []struct {
		name    string
		cfg     model.MachineConfig
		mention string
	}{
		{"too many keys", withMetadata(many), "config.metadata has 65 keys: at most 64"},
		{"a long value", withMetadata(map[string]string{"k": strings.Repeat("v", maxMetadataValue+1)}), "config.metadata.k is 4097 bytes: at most 4096"},
		{"too much in all", withMetadata(heavy), "at most 65536"},
		{"a huge env", func() model.MachineConfig {
			cfg := e.config()
			cfg.Env = map[string]string{"BIG": strings.Repeat("x", maxConfigBytes)}
			return cfg
		}(), "at most 131072"},
	} {
		_, err := e.m.Create(ctx, "app", model.CreateMachineRequest{Config: c.cfg, SkipLaunch: true})
		wantKind(t, err, model.KindInvalid, c.mention)
	}
	mc, err := e.m.Create(ctx, "app", model.CreateMachineRequest{Config: withMetadata(map[string]string{"a": "b"}), SkipLaunch: true})
	e.must(err)
	_, err = e.m.Update(ctx, "app", mc.ID, model.UpdateMachineRequest{Config: withMetadata(many), SkipLaunch: true})
	wantKind(t, err, model.KindInvalid, "at most 64")
	// Key by key: the 64th goes in, the 65th is refused.
	for i := 1; i < maxMetadataKeys; i++ {
		e.must(e.m.SetMetadata(ctx, "app", mc.ID, fmt.Sprintf("k%d", i), "v", false))
	}
	wantKind(t, e.m.SetMetadata(ctx, "app", mc.ID, "one-too-many", "v", false), model.KindInvalid, "config.metadata has 65 keys")
	md, err := e.m.Metadata(ctx, "app", mc.ID)
	e.must(err)
	if len(md) != maxMetadataKeys {
		t.Errorf("metadata has %d keys, want %d", len(md), maxMetadataKeys)
	}
}
