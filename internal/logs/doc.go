// Package logs owns each machine's persistent console log: the append-only,
// sequence-numbered, size-capped record of every line a machine wrote to its
// stdout and stderr, and the ways to read it back (by sequence number, by
// time, and following new lines as they arrive). The console FIFO itself,
// and when to drain it, belong to package machine; serving logs over HTTP
// belongs to package api.
//
// # Layout
//
// A log is a directory (the daemon uses machines/<id>/logs/) holding segment
// files named after the sequence number of their first record,
// "00000000000000000001.seg", plus a LOCK file that keeps a second writer
// out (an flock: Open fails with ErrLocked; other processes read with
// ReadDir). The newest segment is the active one; older segments are
// read-only and the oldest are deleted once the total size passes
// Config.MaxSize.
//
// # Format
//
// A segment is the 8-byte magic "TORPLOG1" followed by framed records, all
// integers little-endian:
//
//	len   uint32  length of text
//	crc   uint32  CRC-32C of len and of every byte after crc
//	kind  uint8   1 line, 2 pending (bytes of a line whose newline has not arrived)
//	flags uint8   line: 1 partial (no newline ended it); pending: 2 first chunk
//	_     uint16  zero
//	seq   uint64  sequence number (line records only)
//	time  int64   host time, Unix nanoseconds
//	text  [len]byte
//
// A framed binary format rather than JSON lines because console output is
// arbitrary bytes: records keep them exactly (no escaping, no loss of invalid
// UTF-8, no cost per byte), and the checksum tells a torn or zero-filled tail
// left by a crash from data, so recovery truncates exactly what was not fully
// written. Record (the reader's view) is what goes out as JSON.
//
// A line that arrives in pieces is written as pending records as each piece
// arrives, then once more, whole, as a line record when its newline (or the
// flush timeout) comes, so only such lines take twice their size on disk.
//
// # Sequence numbers
//
// Every line record gets the next sequence number, starting at 1. Numbers are
// never reused: on Open the newest segment is scanned, a torn tail is
// truncated and numbering resumes after the last whole record. (The one
// exception is a host crash, not a daemon crash: records written but not yet
// fsynced may vanish and their numbers be handed out again.) Numbers are
// consecutive except after a failed write (disk full), which skips numbers
// for the lines it lost. A reader sees such a gap, like records deleted by
// rotation before it got to them, as Record.Dropped.
//
// # Durability
//
// Drain writes every chunk it reads to the active segment with one pwrite
// before it reads again, including a line whose newline has not arrived yet
// (as pending records, which readers do not see and which Open turns back
// into the held partial line). So a daemon killed with SIGKILL loses at most
// the one chunk it had read but not yet written, and nothing it had written:
// with the machine's FIFO kept open by the sandbox, the next daemon continues
// exactly where this one stopped. Against a host crash the guarantee is
// Config.SyncInterval: data is fsynced in the background at most that long
// after it was written (or before each write returns, with SyncEachWrite),
// and on rotation and Close.
package logs
