package machine

import (
	"encoding/json"

	"github.com/torpor-dev/torpor/internal/model"
)

// Bounds of what a config makes the store hold (issue 17, F12: an app
// token grew the store by 160 MiB in 12 s with ~900 KB of metadata per
// update). The store keeps a bounded number of versions of each config
// (store.MaxConfigVersions), so these bound a machine's share of it.
const (
	maxMetadataKeys  = 64
	maxMetadataBytes = 64 << 10  // keys and values together
	maxConfigBytes   = 128 << 10 // the whole config, as stored (JSON)
)

// checkConfigBytes bounds config.metadata and the config as a whole.
func checkConfigBytes(cfg *model.MachineConfig) error {
	if err := checkMetadataSize(cfg.Metadata); err != nil {
		return err
	}
	data, err := json.Marshal(cfg)
	if err != nil {
		return err
	}
	if len(data) > maxConfigBytes {
		return invalid("config is %d bytes as JSON: at most %d (env, files, metadata, services and the rest together)", len(data), maxConfigBytes)
	}
	return nil
}

func checkMetadataSize(md map[string]string) error {
	if len(md) > maxMetadataKeys {
		return invalid("config.metadata has %d keys: at most %d", len(md), maxMetadataKeys)
	}
	total := 0
	for k, v := range md {
		if len(v) > maxMetadataValue {
			return invalid("config.metadata.%s is %d bytes: at most %d", k, len(v), maxMetadataValue)
		}
		total += len(k) + len(v)
	}
	if total > maxMetadataBytes {
		return invalid("config.metadata is %d bytes (keys and values): at most %d", total, maxMetadataBytes)
	}
	return nil
}
