package rewrite

// Streams: a list answer rewritten while it arrives, with memory bounded by
// the largest record and a batch, not by the answer.
//
// The stream reads the answer from an io.Reader. Outside the records it
// walks the document itself (the path to the records, the values beside
// them), checking every value before it is handed on unchanged. Inside the
// array of records it only finds where each record ends, and rewrites the
// complete records in batches: a batch is the bytes from the first record to
// the last, inside brackets, rewritten by the same scanner, automaton and
// predicates as Plan.Rewrite (the plan's list form), and handed on without
// its brackets. Tables are read by rows (a line end outside quotes ends a
// row); a batch of rows is rewritten with the header before it by the table
// rewriter, and handed on without the rewritten header.
//
// Decisions where the rule format is silent:
//   - Only a list whose answer rules remove streams (Plan.Streams): a
//     single record is one value, and the other actions are left to the
//     whole answer. A member an answer rule removes is taken back from the
//     bytes not handed on yet; checked bytes are handed on once 64 KiB
//     gathered, so 64 KiB of spacing between a comma and a removed member
//     is an error.
//   - A record, a table row or a value outside the records longer than
//     Stream.MaxRecord is an error (ErrRecordTooLarge).
//   - The bytes handed on are the rewritten answer, but the spacing between
//     records of two batches is not kept: batches are joined by a comma.
//   - What a batch does not pass is never handed on: an error in a batch
//     (invalid JSON or CSV, a read error, a record too large) stops the
//     stream with what earlier batches gave already handed on. The caller
//     must then cut the answer so that the client sees it is incomplete.

import (
	"bytes"
	"errors"
	"fmt"
	"io"
)

// Stream says how Plan.RewriteStream and Plan.RewriteTableStream hold and
// hand on an answer.
type Stream struct {
	// MaxRecord is the largest record, table row or value outside the
	// records the stream holds, in bytes (0: DefaultMaxRecord).
	MaxRecord int
	// Batch is how many bytes of complete records are rewritten together
	// (0: DefaultBatch): larger batches cost fewer calls, smaller ones
	// hand records on sooner.
	Batch int
	// MaxIDs bounds Stats.IDs; the ids of further visible records are
	// counted in Stats.IDsOmitted (0: DefaultMaxIDs).
	MaxIDs int
	// Write gets the rewritten answer piece by piece, in order, with the
	// number of visible records each piece holds. b is valid only during
	// the call. An error stops the stream; the stream returns it.
	Write func(b []byte, records int) error
}

// The defaults of Stream.
const (
	DefaultMaxRecord = 1 << 20
	DefaultBatch     = 64 << 10
	DefaultMaxIDs    = 1000
)

// readChunk is the least room a stream reads into.
const readChunk = 32 << 10

// ErrRecordTooLarge is returned by a stream for a record, row or value
// longer than Stream.MaxRecord.
var ErrRecordTooLarge = errors.New("rewrite: a record is larger than the stream's limit")

// ErrNotStreamable is returned by RewriteStream for a plan that must see
// the whole answer (see Plan.Streams).
var ErrNotStreamable = errors.New("rewrite: the plan needs the whole answer and cannot stream")

// Streams reports whether answers of the plan can be rewritten while they
// stream: a list of records (not Single) whose answer rules only remove.
func (p *Plan) Streams() bool {
	for _, f := range p.Answer {
		if f.Action != Remove {
			return false
		}
	}
	return !p.Single
}

// listForm is c for a document that is the array of records itself (no
// records path, no answer rules): what a stream rewrites its batches with.
func (c *compiled) listForm() *compiled {
	c.listOnce.Do(func() {
		l := &compiled{dfa: c.dfa, root: c.root, nkeys: c.nkeys, auditSlot: c.auditSlot,
			maxDepth: max(1, c.maxDepth-len(c.recSegs)), fieldKeys: c.fieldKeys, dropKey: c.dropKey,
			first: c.first, actions: c.actions, macKey: c.macKey}
		l.macs.New = func() any { return newMac(l.macKey) }
		c.list = l
	})
	return c.list
}

// settings returns s with its defaults filled in.
func (s *Stream) settings() Stream {
	v := *s
	if v.MaxRecord <= 0 {
		v.MaxRecord = DefaultMaxRecord
	}
	if v.Batch <= 0 {
		v.Batch = DefaultBatch
	}
	if v.MaxIDs <= 0 {
		v.MaxIDs = DefaultMaxIDs
	}
	return v
}

// streamIn is the input of a stream: the unread bytes and the ones still
// needed, in a buffer that never grows past max. Offsets are counted from
// the start of the answer.
type streamIn struct {
	r    io.Reader
	buf  []byte
	off  int // the answer's offset of buf[0]
	end  int // the answer's offset after the last byte read
	pos  int // the next byte to read
	mark int // the first byte still needed, when before pos; -1: none
	max  int
	eof  bool
	err  error
}

// at is the byte at offset i (off ≤ i < end).
func (in *streamIn) at(i int) byte { return in.buf[i-in.off] }

// bytes are the bytes at offsets [a, b).
func (in *streamIn) bytes(a, b int) []byte { return in.buf[a-in.off : b-in.off] }

// more reads more of the answer; false at its end, with the read error
// if it failed.
func (in *streamIn) more() (bool, error) {
	if in.eof {
		return false, in.err
	}
	if len(in.buf)-(in.end-in.off) < readChunk/2 {
		keep := in.pos
		if in.mark >= 0 && in.mark < keep {
			keep = in.mark
		}
		if n := keep - in.off; n > 0 {
			copy(in.buf, in.buf[n:in.end-in.off])
			in.off = keep
		}
		if len(in.buf)-(in.end-in.off) < readChunk/2 {
			if len(in.buf) >= in.max {
				return false, fmt.Errorf("%w (%d bytes held)", ErrRecordTooLarge, in.max)
			}
			nb := make([]byte, min(in.max, max(2*len(in.buf), 2*readChunk)))
			copy(nb, in.buf[:in.end-in.off])
			in.buf = nb
		}
	}
	for range 100 {
		n, err := in.r.Read(in.buf[in.end-in.off:])
		in.end += n
		if err != nil {
			in.eof = true
			if err != io.EOF {
				in.err = fmt.Errorf("rewrite: reading the answer: %w", err)
			}
			if n > 0 {
				return true, nil
			}
			return false, in.err
		}
		if n > 0 {
			return true, nil
		}
	}
	in.eof, in.err = true, fmt.Errorf("rewrite: reading the answer: %w", io.ErrNoProgress)
	return false, in.err
}

// ensure makes the byte at offset i readable; false at the end of input.
func (in *streamIn) ensure(i int) (bool, error) {
	for i >= in.end {
		ok, err := in.more()
		if !ok {
			return false, err
		}
	}
	return true, nil
}

// skipSpace moves the read position past spacing (kept in the batch, not
// handed on); the end of input is an error.
func (in *streamIn) skipSpace() error {
	for {
		for in.pos < in.end && ws[in.at(in.pos)] {
			in.pos++
		}
		if in.pos < in.end {
			return nil
		}
		if ok, err := in.more(); !ok {
			return endError(in.pos, err)
		}
	}
}

// valueEnd finds where the value at offset start ends: containers and
// strings by their brackets and quotes (what is between is checked later),
// anything else at the first byte that cannot continue it. A value longer
// than limit is ErrRecordTooLarge.
func (in *streamIn) valueEnd(start, limit int) (int, error) {
	if ok, err := in.ensure(start); !ok {
		return 0, endError(start, err)
	}
	first := in.at(start)
	if first != '{' && first != '[' && first != '"' {
		i := start
		for {
			for i < in.end && !delim[in.at(i)] {
				i++
			}
			if i < in.end {
				return i, nil
			}
			if i-start > limit {
				return 0, fmt.Errorf("%w: a value of more than %d bytes at byte %d", ErrRecordTooLarge, limit, start)
			}
			if ok, err := in.more(); !ok {
				if err != nil {
					return 0, err
				}
				return i, nil
			}
		}
	}
	depth, inStr, esc := 0, false, false
	i := start
	for {
		b := in.bytes(i, in.end)
		k := 0
		if esc {
			k, esc = 1, false
		}
		for ; k < len(b); k++ {
			c := b[k]
			if !structural[c] {
				continue
			}
			if inStr {
				switch c {
				case '\\':
					k++
					if k >= len(b) {
						esc = true
					}
				case '"':
					inStr = false
					if depth == 0 {
						return valueEnd(start, i+k+1, limit)
					}
				}
				continue
			}
			switch c {
			case '"':
				inStr = true
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth <= 0 {
					return valueEnd(start, i+k+1, limit)
				}
			}
		}
		// on with the bytes still to come (after an escape, its second
		// byte is the first of them)
		i = in.end
		if i-start > limit {
			return 0, fmt.Errorf("%w: a value of more than %d bytes at byte %d", ErrRecordTooLarge, limit, start)
		}
		if ok, err := in.more(); !ok {
			return 0, endError(in.end, err)
		}
	}
}

// valueEnd returns end, or ErrRecordTooLarge when the value from start to
// end is longer than limit.
func valueEnd(start, end, limit int) (int, error) {
	if end-start > limit {
		return 0, fmt.Errorf("%w: a value of more than %d bytes at byte %d", ErrRecordTooLarge, limit, start)
	}
	return end, nil
}

// endError is the error for an answer that ends (or fails) at i.
func endError(i int, err error) error {
	if err != nil {
		return err
	}
	return syntaxError(i, "unexpected end of input")
}

// structural marks the bytes valueEnd stops at.
var structural = [256]bool{'"': true, '\\': true, '{': true, '}': true, '[': true, ']': true}

// delim marks the bytes that end a number or literal.
var delim = [256]bool{' ': true, '\t': true, '\n': true, '\r': true, ',': true, ']': true, '}': true, ':': true, '[': true, '{': true, '"': true}

// checkValue checks that v is one JSON value (RFC 8259, strings in UTF-8)
// nested at most maxDepth deep.
func checkValue(v []byte, maxDepth int) error {
	var stack []bool // open containers: true for an array
	i := 0
	const (
		wantValue = iota
		wantKey
		afterValue
	)
	state := wantValue
	for {
		switch state {
		case wantKey:
			if i >= len(v) || v[i] != '"' {
				return syntaxError(i, "a key was expected")
			}
			end, _, err := scanString(v, i)
			if err != nil {
				return err
			}
			i = skipWS(v, end)
			if i >= len(v) || v[i] != ':' {
				return syntaxError(i, "a colon was expected after the key")
			}
			i, state = skipWS(v, i+1), wantValue
		case wantValue:
			if i >= len(v) {
				return syntaxError(i, "unexpected end of input, a value was expected")
			}
			var err error
			switch b := v[i]; b {
			case '{', '[':
				if len(stack) >= maxDepth {
					return fmt.Errorf("rewrite: nesting deeper than %d levels at byte %d", maxDepth, i)
				}
				stack = append(stack, b == '[')
				i = skipWS(v, i+1)
				if i < len(v) && (v[i] == '}' && b == '{' || v[i] == ']' && b == '[') {
					stack, i, state = stack[:len(stack)-1], i+1, afterValue
				} else if b == '{' {
					state = wantKey
				}
				continue
			case '"':
				i, _, err = scanString(v, i)
			case 't', 'f', 'n':
				i, err = scanLiteral(v, i)
			default:
				if b != '-' && (b < '0' || b > '9') {
					return syntaxError(i, fmt.Sprintf("unexpected %q, a value was expected", b))
				}
				i, err = scanNumber(v, i)
			}
			if err != nil {
				return err
			}
			state = afterValue
		case afterValue:
			i = skipWS(v, i)
			if len(stack) == 0 {
				if i != len(v) {
					return syntaxError(i, "data after the value")
				}
				return nil
			}
			arr := stack[len(stack)-1]
			switch {
			case i >= len(v):
				return syntaxError(i, "unexpected end of input in a container")
			case v[i] == ',':
				i, state = skipWS(v, i+1), wantValue
				if !arr {
					state = wantKey
				}
			case arr && v[i] == ']' || !arr && v[i] == '}':
				stack, i = stack[:len(stack)-1], i+1
			default:
				return syntaxError(i, fmt.Sprintf("unexpected %q in a container", v[i]))
			}
		}
	}
}

// jsonStream is the state of one RewriteStream call.
type jsonStream struct {
	p   *Plan
	c   *compiled // the plan's list form
	ans *compiled // the plan, for its answer rules
	// ansKeys name the answer rules in Stats.Fields
	ansKeys []string
	// flushes counts the times the checked bytes were handed on
	flushes int
	segs    []seg // the records path
	s       Stream
	in      streamIn
	st      *Stats
	pend    []byte // checked bytes not handed on yet
	doc     []byte // a batch
	out     []byte // a batch rewritten
	found   int
	index   int  // records read so far
	sent    bool // a record of this array was handed on
	depth   int  // the plan's nesting limit
}

// RewriteStream rewrites the JSON answer read from r as it arrives,
// handing the rewritten answer to s.Write, as Rewrite would rewrite it
// whole (see the decisions at the top of stream.go). st may be nil.
func (p *Plan) RewriteStream(s *Stream, r io.Reader, st *Stats) error {
	if !p.Streams() {
		return ErrNotStreamable
	}
	c := p.c
	if c == nil {
		var err error
		if c, err = p.build(); err != nil {
			return err
		}
	}
	if st == nil {
		st = &Stats{}
	}
	v := s.settings()
	js := &jsonStream{p: p, c: c.listForm(), ans: c, ansKeys: c.ansKeys, segs: c.recSegs, s: v, st: st, depth: c.maxDepth,
		in: streamIn{r: r, mark: -1, max: 2*v.MaxRecord + v.Batch + 2*readChunk}}
	root := int32(-1)
	if len(c.ans) > 0 {
		root = 0
	}
	if err := js.value(0, true, root); err != nil {
		return err
	}
	if err := js.ws(); err != nil {
		return err
	}
	if ok, err := js.in.ensure(js.in.pos); ok {
		return syntaxError(js.in.pos, "data after the end of the document")
	} else if err != nil {
		return err
	}
	if js.found == 0 {
		return ErrNoRecords
	}
	return js.flush()
}

// flush hands on the checked bytes.
func (js *jsonStream) flush() error {
	if len(js.pend) == 0 {
		return nil
	}
	js.flushes++
	err := js.s.Write(js.pend, 0)
	js.pend = js.pend[:0]
	return err
}

// take hands on the n bytes at the read position (checked by the caller).
func (js *jsonStream) take(n int) error {
	in := &js.in
	js.pend = append(js.pend, in.bytes(in.pos, in.pos+n)...)
	in.pos += n
	if len(js.pend) >= max(js.s.Batch, DefaultBatch) {
		return js.flush()
	}
	return nil
}

// ws hands on the spacing at the read position.
func (js *jsonStream) ws() error {
	in := &js.in
	for {
		i := in.pos
		for i < in.end && ws[in.at(i)] {
			i++
		}
		if err := js.take(i - in.pos); err != nil {
			return err
		}
		if in.pos < in.end {
			return nil
		}
		if ok, err := in.more(); !ok {
			return err
		}
	}
}

// peek is the byte at the read position; the end of input is an error.
func (js *jsonStream) peek() (byte, error) {
	in := &js.in
	if ok, err := in.ensure(in.pos); !ok {
		return 0, endError(in.pos, err)
	}
	return in.at(in.pos), nil
}

// value walks the value at the read position, n containers deep: on the
// records path after matching n of its segments (on), and at node of the
// answer rules' trie (-1: none).
func (js *jsonStream) value(n int, on bool, node int32) error {
	if err := js.ws(); err != nil {
		return err
	}
	b, err := js.peek()
	if err != nil {
		return err
	}
	if on && n == len(js.segs) {
		js.found++
		return js.records(b)
	}
	if b != '{' && b != '[' || !on && (node < 0 || len(js.ans.ans[node].kids) == 0) {
		return js.skip(n, false)
	}
	if err := js.take(1); err != nil {
		return err
	}
	in := &js.in
	// An answer rule removes a member: the checked bytes are taken back
	// to where it (or the comma before it) starts, which must not have
	// been handed on yet.
	kept, dropComma := 0, false
	commaAt, commaFlushes := -1, 0
	for k := 0; ; k++ {
		if err := js.ws(); err != nil {
			return err
		}
		c, err := js.peek()
		if err != nil {
			return err
		}
		if k == 0 && (b == '{' && c == '}' || b == '[' && c == ']') {
			return js.take(1)
		}
		memberAt, memberFlushes := len(js.pend), js.flushes
		childOn := on && b == '[' && js.segs[n].idx == k
		child := js.ans.ansArr(node, k)
		if b == '{' {
			if c != '"' {
				return syntaxError(in.pos, fmt.Sprintf("unexpected %q, a key was expected", c))
			}
			end, err := in.valueEnd(in.pos, js.s.MaxRecord)
			if err != nil {
				return err
			}
			raw := in.bytes(in.pos, end)
			e, esc, err := scanString(raw, 0)
			if err != nil || e != len(raw) {
				return syntaxError(in.pos, "a key was expected")
			}
			key := raw[1 : len(raw)-1]
			if esc {
				key = decodeString(nil, raw)
			}
			childOn = on && string(key) == js.segs[n].key
			child = js.ans.ansObj(node, string(key))
			if err := js.take(len(raw)); err != nil {
				return err
			}
			if err := js.ws(); err != nil {
				return err
			}
			if c, err := js.peek(); err != nil {
				return err
			} else if c != ':' {
				return syntaxError(in.pos, "a colon was expected after the key")
			}
			if err := js.take(1); err != nil {
				return err
			}
		}
		if child >= 0 && js.ans.ans[child].field >= 0 {
			// an answer rule (remove: Plan.Streams) ends here
			if err := js.skip(n+1, true); err != nil {
				return err
			}
			at, flushes := memberAt, memberFlushes
			if kept > 0 {
				at, flushes = commaAt, commaFlushes
			}
			if flushes != js.flushes {
				return errors.New("rewrite: an answer field could not be removed: the bytes before it were handed on already")
			}
			js.pend = js.pend[:at]
			dropComma = kept == 0
			if js.st.Fields == nil {
				js.st.Fields = map[string]int{}
			}
			js.st.Fields[js.ansKeys[js.ans.ans[child].field]]++
			js.st.Changed = true
		} else {
			if err := js.value(n+1, childOn, child); err != nil {
				return err
			}
			kept++
		}
		if err := js.ws(); err != nil {
			return err
		}
		c, err = js.peek()
		if err != nil {
			return err
		}
		switch {
		case c == ',' && dropComma:
			in.pos++ // the comma after a removed first member
			dropComma = false
		case c == ',':
			commaAt, commaFlushes = len(js.pend), js.flushes
			if err := js.take(1); err != nil {
				return err
			}
		case b == '{' && c == '}' || b == '[' && c == ']':
			return js.take(1)
		default:
			return syntaxError(in.pos, fmt.Sprintf("unexpected %q in a container", c))
		}
	}
}

// skip checks the value at the read position, off the records path n
// containers deep, and hands it on, or with drop leaves it out.
func (js *jsonStream) skip(n int, drop bool) error {
	if err := js.ws(); err != nil {
		return err
	}
	in := &js.in
	end, err := in.valueEnd(in.pos, js.s.MaxRecord)
	if err != nil {
		return err
	}
	if err := checkValue(in.bytes(in.pos, end), max(1, js.depth-n)); err != nil {
		return err
	}
	if drop {
		in.pos = end
		return nil
	}
	return js.take(end - in.pos)
}

// records rewrites the records array at the read position (b is its first
// byte) in batches.
func (js *jsonStream) records(b byte) error {
	in := &js.in
	if b == 'n' {
		end, err := in.valueEnd(in.pos, js.s.MaxRecord)
		if err != nil {
			return err
		}
		if string(in.bytes(in.pos, end)) != "null" {
			return syntaxError(in.pos, "bad literal")
		}
		return js.take(end - in.pos) // null: no records
	}
	if b != '[' {
		return fmt.Errorf("rewrite: the records at %q are not an array", js.p.Records.String())
	}
	if err := js.take(1); err != nil {
		return err
	}
	js.sent = false
	if err := js.ws(); err != nil {
		return err
	}
	if c, err := js.peek(); err != nil {
		return err
	} else if c == ']' {
		return js.take(1)
	}
	batch, n := -1, 0
	defer func() { in.mark = -1 }()
	for {
		c, err := js.peek()
		if err != nil {
			return err
		}
		if c != '{' {
			return fmt.Errorf("rewrite: record %d at byte %d is not an object", js.index+n, in.pos)
		}
		if batch < 0 {
			batch, in.mark = in.pos, in.pos
		}
		end, err := in.valueEnd(in.pos, js.s.MaxRecord)
		if err != nil {
			return fmt.Errorf("rewrite: record %d: %w", js.index+n, err)
		}
		in.pos, n = end, n+1
		if err := in.skipSpace(); err != nil {
			return err
		}
		switch in.at(in.pos) {
		case ',':
			if end-batch >= js.s.Batch {
				if err := js.batch(batch, end, n); err != nil {
					return err
				}
				batch, n, in.mark = -1, 0, -1
			}
			in.pos++
			if err := in.skipSpace(); err != nil {
				return err
			}
		case ']':
			if err := js.batch(batch, end, n); err != nil {
				return err
			}
			in.mark = -1
			return js.take(1)
		default:
			return syntaxError(in.pos, fmt.Sprintf("unexpected %q in an array", in.at(in.pos)))
		}
	}
}

// batch rewrites the n records at offsets [a, b) (with the commas and
// spacing between them) and hands them on after the checked bytes.
func (js *jsonStream) batch(a, b, n int) error {
	js.doc = append(append(append(js.doc[:0], '['), js.in.bytes(a, b)...), ']')
	before := js.st.RecordsOut
	out, err := js.p.rewriteWith(js.c, js.out[:0], js.doc, js.index, js.st)
	js.index += n
	if err != nil {
		return err
	}
	if len(out) < 2 || out[0] != '[' || out[len(out)-1] != ']' {
		return errors.New("rewrite: a batch of records was not rewritten to a list") // cannot happen: fail closed
	}
	js.out = out
	inner := out[1 : len(out)-1]
	if len(bytes.TrimSpace(inner)) > 0 {
		if js.sent {
			js.pend = append(js.pend, ',')
		}
		js.pend = append(js.pend, inner...)
		js.sent = true
	}
	return js.hand(js.st.RecordsOut - before)
}

// hand gives the checked and rewritten bytes to Write with the number of
// records they hold, and bounds the ids kept.
func (js *jsonStream) hand(records int) error {
	boundIDs(js.st, js.s.MaxIDs)
	js.flushes++
	err := js.s.Write(js.pend, records)
	js.pend = js.pend[:0]
	return err
}

// boundIDs keeps at most max ids in st.IDs, counting the others.
func boundIDs(st *Stats, max int) {
	if len(st.IDs) > max {
		st.IDsOmitted += len(st.IDs) - max
		clear(st.IDs[max:])
		st.IDs = st.IDs[:max]
	}
}

// RewriteTableStream rewrites the CSV (or, with comma '\t', TSV) answer
// read from r as it arrives, handing the rewritten table to s.Write, as
// RewriteTable would rewrite it whole (see the decisions at the top of
// stream.go and table.go). st may be nil.
func (p *Plan) RewriteTableStream(s *Stream, r io.Reader, comma byte, st *Stats) error {
	if comma != ',' && comma != '\t' {
		return fmt.Errorf("rewrite: csv: the separator %q is neither a comma nor a tab", comma)
	}
	if st == nil {
		st = &Stats{}
	}
	v := s.settings()
	in := &streamIn{r: r, mark: -1, max: 2*v.MaxRecord + v.Batch + 2*readChunk}
	// The header: after a byte order mark and blank lines, the first row.
	start := 0
	if ok, err := in.ensure(2); err != nil {
		return err
	} else if ok && bytes.Equal(in.bytes(0, 3), utf8BOM) {
		start = 3
	}
	hdrEnd := start
	for {
		end, err := in.rowEnd(hdrEnd, v.MaxRecord)
		if err != nil {
			return err
		}
		if end == hdrEnd { // the end of input: no header
			if end > 0 {
				return v.Write(in.bytes(0, end), 0)
			}
			return nil
		}
		line := string(in.bytes(hdrEnd, end))
		hdrEnd = end
		if line != "\n" && line != "\r\n" {
			break // not a blank line
		}
	}
	hdr := bytes.Clone(in.bytes(0, hdrEnd))
	hdrOut, err := p.rewriteTable(nil, hdr, comma, 0, 0, &Stats{})
	if err != nil {
		return err
	}
	in.pos = hdrEnd
	var doc, out []byte
	pend := hdrOut
	index := 0
	// The batches are rewritten after the header: their errors name the
	// lines of the whole table, counted from the header's, by the lines
	// before the batch (lines: line ends before batchStart).
	hdrLines := bytes.Count(hdr, []byte{'\n'})
	lines := hdrLines
	batch := func(a, b int) error {
		doc = append(append(doc[:0], hdr...), in.bytes(a, b)...)
		before, beforeIn := st.RecordsOut, st.RecordsIn
		var err error
		out, err = p.rewriteTable(out[:0], doc, comma, index, lines-hdrLines, st)
		index += st.RecordsIn - beforeIn
		if err != nil {
			return err
		}
		if !bytes.HasPrefix(out, hdrOut) {
			return errors.New("rewrite: csv: a batch of rows was not rewritten after its header") // cannot happen: fail closed
		}
		pend = append(pend, out[len(hdrOut):]...)
		boundIDs(st, v.MaxIDs)
		err = v.Write(pend, st.RecordsOut-before)
		pend = pend[:0]
		return err
	}
	batchStart := in.pos
	in.mark = batchStart
	for {
		end, err := in.rowEnd(in.pos, v.MaxRecord)
		if err != nil {
			line := lines + bytes.Count(in.bytes(batchStart, in.pos), []byte{'\n'}) + 1
			return fmt.Errorf("rewrite: csv: the row on line %d: %w", line, err)
		}
		if end == in.pos { // the end of input
			return batch(batchStart, end)
		}
		in.pos = end
		if batchStart == end-len(lineEnd(in.bytes(batchStart, end))) {
			// a blank line before the batch's first row: not a row
			batchStart, in.mark = end, end
			lines++
			continue
		}
		if end-batchStart >= v.Batch {
			if err := batch(batchStart, end); err != nil {
				return err
			}
			lines += bytes.Count(in.bytes(batchStart, end), []byte{'\n'})
			batchStart, in.mark = end, end
		}
	}
}

// rowEnd finds where the table row at offset start ends: after the first
// line feed outside quotes, or at the end of input (start itself when
// nothing is left). Quotes are only counted: the table rewriter checks the
// row. A row longer than limit is ErrRecordTooLarge.
func (in *streamIn) rowEnd(start, limit int) (int, error) {
	quoted := false
	i := start
	for {
		b := in.bytes(i, in.end)
		for k, c := range b {
			switch c {
			case '"':
				quoted = !quoted
			case '\n':
				if !quoted {
					if end := i + k + 1; end-start <= limit {
						return end, nil
					}
					return 0, fmt.Errorf("%w: a row of more than %d bytes at byte %d", ErrRecordTooLarge, limit, start)
				}
			}
		}
		i = in.end
		if i-start > limit {
			return 0, fmt.Errorf("%w: a row of more than %d bytes at byte %d", ErrRecordTooLarge, limit, start)
		}
		if ok, err := in.more(); !ok {
			if err != nil {
				return 0, err
			}
			return i, nil
		}
	}
}
