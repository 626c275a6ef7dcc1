package logs

import (
	"bufio"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"time"
)

// Record is one line (or one piece of a long or unfinished line) of a
// machine's output, as readers see it. Its JSON form follows the fields of a
// Fly log entry where they exist (timestamp, message).
type Record struct {
	// Seq is the record's sequence number: increasing, never reused.
	Seq uint64 `json:"seq"`
	// Time is when the daemon read the line's first bytes (host clock, UTC).
	Time time.Time `json:"timestamp"`
	// Line is the text without its newline, byte for byte as written.
	// Encoded as JSON, invalid UTF-8 becomes U+FFFD.
	Line string `json:"message"`
	// Partial says no newline ended this record: the line was longer than
	// MaxLine, or its newline had not arrived by the flush timeout, or the
	// log was closed. Its text continues in the next record; concatenating
	// Line plus "\n" unless Partial rebuilds the output exactly.
	Partial bool `json:"partial,omitempty"`
	// Dropped is how many records before this one the reader asked for but
	// cannot have: deleted by rotation, or lost to a failed write.
	Dropped uint64 `json:"dropped,omitempty"`
}

// On-disk format; see the package documentation.
const (
	magic      = "TORPLOG1"
	headerSize = 28
	maxText    = 16 << 20

	kindLine    = 1
	kindPending = 2

	flagPartial = 1 // line record: not ended by a newline
	flagStart   = 2 // pending record: first chunk of a line
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// errTorn reports a record that is incomplete or fails its checksum.
var errTorn = errors.New("logs: torn or corrupt record")

// frame is one decoded on-disk record. text aliases the reader's buffer.
type frame struct {
	kind, flags byte
	seq         uint64
	nanos       int64
	text        []byte
}

// record converts a line frame for readers.
func (f frame) record() Record {
	return Record{Seq: f.seq, Time: time.Unix(0, f.nanos).UTC(), Line: string(f.text),
		Partial: f.flags&flagPartial != 0}
}

// appendFrame appends a record whose text is a followed by b.
func appendFrame(buf []byte, kind, flags byte, seq uint64, nanos int64, a, b []byte) []byte {
	start := len(buf)
	buf = binary.LittleEndian.AppendUint32(buf, uint32(len(a)+len(b)))
	buf = append(buf, 0, 0, 0, 0, kind, flags, 0, 0)
	buf = binary.LittleEndian.AppendUint64(buf, seq)
	buf = binary.LittleEndian.AppendUint64(buf, uint64(nanos))
	buf = append(buf, a...)
	buf = append(buf, b...)
	crc := crc32.Update(crc32.Checksum(buf[start:start+4], castagnoli), castagnoli, buf[start+8:])
	binary.LittleEndian.PutUint32(buf[start+4:], crc)
	return buf
}

// frameReader decodes records from a segment, after its magic.
type frameReader struct {
	br  *bufio.Reader
	hdr [headerSize]byte
	buf []byte
}

// next decodes the next record and returns its encoded size. It returns
// io.EOF at a clean end and errTorn for a short, corrupt or unknown record.
func (r *frameReader) next() (frame, int, error) {
	if _, err := io.ReadFull(r.br, r.hdr[:]); err != nil {
		if err == io.EOF {
			return frame{}, 0, io.EOF
		}
		if err == io.ErrUnexpectedEOF {
			return frame{}, 0, errTorn
		}
		return frame{}, 0, err
	}
	h := r.hdr[:]
	n := binary.LittleEndian.Uint32(h[0:])
	kind, flags := h[8], h[9]
	if n > maxText || (kind != kindLine && kind != kindPending) {
		return frame{}, 0, errTorn
	}
	if cap(r.buf) < int(n) {
		r.buf = make([]byte, n)
	}
	text := r.buf[:n]
	if _, err := io.ReadFull(r.br, text); err != nil {
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return frame{}, 0, errTorn
		}
		return frame{}, 0, err
	}
	crc := crc32.Update(crc32.Checksum(h[0:4], castagnoli), castagnoli, h[8:])
	if crc32.Update(crc, castagnoli, text) != binary.LittleEndian.Uint32(h[4:]) {
		return frame{}, 0, errTorn
	}
	f := frame{kind: kind, flags: flags, text: text,
		seq:   binary.LittleEndian.Uint64(h[12:]),
		nanos: int64(binary.LittleEndian.Uint64(h[20:]))}
	return f, headerSize + int(n), nil
}
