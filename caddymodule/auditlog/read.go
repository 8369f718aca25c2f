package auditlog

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/klauspost/compress/gzip"
	"github.com/tidwall/gjson"
)

// Reader reads one audit file line by line, plain or gzip-compressed (told
// apart by the gzip magic bytes, not by the name).
type Reader struct {
	name  string
	f     *os.File
	count *countingReader
	zr    *gzip.Reader
	br    *bufio.Reader
	long  []byte
	line  int
	cut   bool
	err   error
}

// Open opens the audit file name for reading.
func Open(name string) (*Reader, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, fmt.Errorf("auditlog: %w", err)
	}
	r := &Reader{name: name, f: f, count: &countingReader{r: f}}
	head := bufio.NewReaderSize(r.count, 256<<10)
	magic, _ := head.Peek(2)
	if len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		zr, err := gzip.NewReader(head)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("auditlog: %s: %w", name, err)
		}
		r.zr = zr
		r.br = bufio.NewReaderSize(zr, 256<<10)
	} else {
		r.br = head
	}
	return r, nil
}

// Name is the file's name as given to Open.
func (r *Reader) Name() string { return r.name }

// Line is the 1-based number of the line Next returned last.
func (r *Reader) Line() int { return r.line }

// Cut reports whether the line Next returned last ended the file without
// a newline.
func (r *Reader) Cut() bool { return r.cut }

// Offset is how many bytes of the file (compressed bytes for gzip) have
// been read so far, for progress reports.
func (r *Reader) Offset() int64 { return r.count.n }

// Size is the file's size on disk.
func (r *Reader) Size() int64 {
	fi, err := r.f.Stat()
	if err != nil {
		return 0
	}
	return fi.Size()
}

// Next returns the next line without its newline, valid until the next
// call; ok is false at the end of the file or on an error (see Err).
func (r *Reader) Next() (line []byte, ok bool) {
	if r.err != nil {
		return nil, false
	}
	r.long = r.long[:0]
	for {
		b, err := r.br.ReadSlice('\n')
		switch {
		case err == nil:
			r.line++
			r.cut = false
			if len(r.long) > 0 {
				r.long = append(r.long, b[:len(b)-1]...)
				return r.long, true
			}
			return b[:len(b)-1], true
		case errors.Is(err, bufio.ErrBufferFull):
			r.long = append(r.long, b...)
			continue
		case errors.Is(err, io.EOF):
			r.long = append(r.long, b...)
			if len(r.long) == 0 {
				r.err = io.EOF
				return nil, false
			}
			r.err = io.EOF
			r.line++
			r.cut = true
			return r.long, true
		default:
			r.err = fmt.Errorf("auditlog: reading %s: %w", r.name, err)
			return nil, false
		}
	}
}

// Err returns the error that stopped Next, nil at the end of the file.
func (r *Reader) Err() error {
	if errors.Is(r.err, io.EOF) {
		return nil
	}
	return r.err
}

// Close closes the file.
func (r *Reader) Close() error {
	if r.zr != nil {
		r.zr.Close()
	}
	return r.f.Close()
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// Event returns the audit event a line holds: the line itself when it is
// an event as the file sink writes it, or the object under the key
// "event" when the line is a Caddy log entry (events sent to the Caddy
// logger crm_guard.audit, or exported in that form from a log system).
// ok is false for a line that is neither.
func Event(line []byte) (ev []byte, ok bool) {
	line = bytes.TrimSpace(line)
	if bytes.HasPrefix(line, []byte(`{"time":`)) {
		return line, true
	}
	if len(line) == 0 || line[0] != '{' {
		return nil, false
	}
	res := gjson.GetBytes(line, "event")
	if res.IsObject() && res.Index > 0 {
		return line[res.Index : res.Index+len(res.Raw)], true
	}
	if gjson.GetBytes(line, "decision").Exists() {
		return line, true
	}
	return nil, false
}
