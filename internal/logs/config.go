package logs

import (
	"log/slog"
	"time"
)

// Defaults for the zero fields of Config.
const (
	DefaultSegmentSize  = 4 << 20
	DefaultMaxSize      = 32 << 20
	DefaultMaxLine      = 64 << 10
	DefaultFlushTimeout = 500 * time.Millisecond
	DefaultSyncInterval = time.Second
)

// Special values of Config.SyncInterval.
const (
	// SyncEachWrite fsyncs after every write, before Append, Write or the
	// Drain step returns.
	SyncEachWrite time.Duration = -1
	// SyncOnClose fsyncs only on Close (and never on rotation).
	SyncOnClose time.Duration = -2
)

// Config sets a log's limits and durability. The zero value is usable: every
// zero field takes its default.
type Config struct {
	// SegmentSize is the size at which the active segment is closed and a new
	// one started. A segment may pass it by up to about two MaxLine.
	SegmentSize int64
	// MaxSize caps the total size of the segments: after a rotation the oldest
	// are deleted until the rest fit. The active segment is always kept.
	MaxSize int64
	// MaxLine is the longest text of one record (plus up to 3 bytes to end
	// a UTF-8 sequence). A longer line is split into records marked Partial,
	// the last one not, so nothing is dropped.
	MaxLine int
	// FlushTimeout is how long the first bytes of a line may wait for its
	// newline before they are committed as a Partial record.
	FlushTimeout time.Duration
	// SyncInterval bounds how long written data may stay un-fsynced: the
	// first write after an fsync schedules the next one that long after. Or
	// SyncEachWrite, SyncOnClose.
	SyncInterval time.Duration
	// Logger receives repairs (torn tail truncated) and write errors. Nil
	// logs nowhere.
	Logger *slog.Logger
}

// withDefaults returns cfg with its zero fields set to the defaults.
func (cfg Config) withDefaults() Config {
	if cfg.SegmentSize <= 0 {
		cfg.SegmentSize = DefaultSegmentSize
	}
	if cfg.MaxSize <= 0 {
		cfg.MaxSize = DefaultMaxSize
	}
	if cfg.MaxLine <= 0 {
		cfg.MaxLine = DefaultMaxLine
	}
	if cfg.MaxLine > maxText {
		cfg.MaxLine = maxText
	}
	if cfg.FlushTimeout <= 0 {
		cfg.FlushTimeout = DefaultFlushTimeout
	}
	if cfg.SyncInterval == 0 {
		cfg.SyncInterval = DefaultSyncInterval
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return cfg
}
