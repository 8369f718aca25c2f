package auditlog

import (
	"bytes"
	"fmt"
	"io"
)

// tailWindow is how much of the last line ReadState reads: enough for the
// seq, chain_prev and chain keys whatever the event before them.
const tailWindow = 512

// ReadState reads where the chain in a file of the given size stands: the
// seq and link of its last complete line. A last line without a link (or
// an empty file) gives the zero State, so the next line starts a chain.
// cut is true when the file does not end in a newline (a write was cut
// short): the writer must end that line before it appends.
func ReadState(f io.ReaderAt, size int64) (st State, cut bool, err error) {
	if size == 0 {
		return State{}, false, nil
	}
	var last [1]byte
	if _, err := f.ReadAt(last[:], size-1); err != nil {
		return State{}, false, fmt.Errorf("auditlog: reading the end of the file: %w", err)
	}
	end := size // one past the last complete line's newline
	if last[0] != '\n' {
		cut = true
		if end, err = lastNewline(f, size); err != nil {
			return State{}, cut, err
		}
		if end < 0 {
			return State{}, cut, nil
		}
		end++
	}
	from := max(end-1-tailWindow, 0)
	buf := make([]byte, end-1-from)
	if _, err := f.ReadAt(buf, from); err != nil && err != io.EOF {
		return State{}, cut, fmt.Errorf("auditlog: reading the last line: %w", err)
	}
	if i := bytes.LastIndexByte(buf, '\n'); i >= 0 {
		buf = buf[i+1:]
	}
	l, ok := ParseLine(buf)
	if !ok {
		return State{}, cut, nil
	}
	return State{Seq: l.Seq, Link: append([]byte(nil), l.Link[:]...)}, cut, nil
}

// lastNewline returns the offset of the last '\n' before size, or -1.
func lastNewline(f io.ReaderAt, size int64) (int64, error) {
	const chunk = 64 << 10
	buf := make([]byte, chunk)
	for end := size; end > 0; {
		from := max(end-chunk, 0)
		b := buf[:end-from]
		if _, err := f.ReadAt(b, from); err != nil && err != io.EOF {
			return -1, fmt.Errorf("auditlog: looking for the last line: %w", err)
		}
		if i := bytes.LastIndexByte(b, '\n'); i >= 0 {
			return from + int64(i), nil
		}
		end = from
	}
	return -1, nil
}
