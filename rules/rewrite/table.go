package rewrite

// Tables: a CSV or TSV answer rewritten with the same Plan as JSON. Every
// data row is a record whose keys are the header row's column names and
// whose values are strings; field paths name columns.
//
// Decisions where the rule format is silent (as for JSON, see the package
// doc, unless said here):
//   - A path names a column when, after any leading `**` segments, it is one
//     key or one wildcard pattern (`bank_account`, `a\.b`, `sec*`,
//     `**.phone`); other paths (`a.b`, `contacts.#.mobile`) match nothing.
//     Patterns are matched by the same matcher as JSON keys. Names are
//     compared exactly, after the header's quotes are read. Plan.Keys and
//     AuditID name a column the same way; a nested key is absent.
//   - Expose keeps only the columns it names ("@this" keeps them all); a
//     nested expose path keeps no column.
//   - An unconditional Remove drops the column from the header and every
//     row; a Remove whose When reads the row empties the cell in the rows
//     where it applies. Null empties the cell; Replace writes the text of
//     its JSON (a string without quotes, null as an empty cell). Mask and
//     Hash work on the cell's text; an empty cell stays empty, as null stays
//     null, and no weaker rule applies to it.
//   - A column name present twice is treated in every copy. For Plan.Keys
//     a name present twice with different values is ambiguous: the row is
//     hidden without calling Visible, as a JSON record with such a key is.
//   - The input is read strictly (RFC 4180 with LF as well as CRLF line
//     ends): a quote inside an unquoted field, text after a closing quote,
//     an unterminated quoted field, a carriage return without a line feed
//     outside quotes, a row with another number of fields than the header
//     and bytes that are not UTF-8 are errors. Blank lines are not rows.
//   - The output keeps what it can of the input: a UTF-8 byte order mark
//     at the start, each row's line end, unchanged rows and cells byte for
//     byte (their quoting too). Rewritten cells are quoted when they hold
//     the separator, a quote, a line break, or leading or trailing blanks,
//     and a lone empty cell is written "" (it would read as a blank line).
//     If every column is removed the body is empty. A rule set that changes
//     nothing gives the input byte for byte.
//   - Plan.Records, Single and Answer do not apply: a table is a list of
//     rows, and a hidden row is dropped.

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"sync"
	"unicode/utf8"
	"unsafe"

	"github.com/tidwall/gjson"
)

// colKind says how a compiled path names a column.
type colKind uint8

const (
	colNone    colKind = iota // no column
	colExact                  // the column named key
	colPattern                // the columns whose names match the pattern key
)

// colMatch is a path read as a column test.
type colMatch struct {
	kind colKind
	key  string // colExact: the name; colPattern: the pattern, escapes kept
}

// matches reports whether the column called name is named.
func (m colMatch) matches(name string) bool {
	switch m.kind {
	case colExact:
		return name == m.key
	case colPattern:
		return matchPattern(m.key, name)
	}
	return false
}

// column is what a path names in a table: one key or pattern after any
// leading `**` segments.
func (p Path) column() colMatch {
	segs := p.segs
	for len(segs) > 1 && segs[0].kind == segAny {
		segs = segs[1:]
	}
	if len(segs) != 1 {
		return colMatch{}
	}
	switch segs[0].kind {
	case segKey:
		return colMatch{kind: colExact, key: segs[0].key}
	case segPattern:
		return colMatch{kind: colPattern, key: segs[0].key}
	}
	return colMatch{}
}

// tablePlan is what a compiled Plan derives for tables (on first use: a
// JSON-only plan never pays for it).
type tablePlan struct {
	fields  []colMatch // per field rule
	order   []int      // field rules, strongest first (ties: list order)
	replace []string   // per field rule: the text Replace writes
	expose  []colMatch // nil: no allow-list
	audit   colMatch
	keys    []colMatch // per Plan.Keys
}

// buildTable derives the table form of the plan.
func (p *Plan) buildTable() *tablePlan {
	t := &tablePlan{fields: make([]colMatch, len(p.Fields)), replace: make([]string, len(p.Fields)), audit: p.AuditID.column()}
	for i := range p.Fields {
		f := &p.Fields[i]
		t.fields[i] = f.Path.column()
		if f.Action == Replace {
			switch r := gjson.ParseBytes(f.Replace); r.Type {
			case gjson.String:
				t.replace[i] = r.Str
			case gjson.Null:
			default:
				t.replace[i] = r.Raw
			}
		}
	}
	t.order = make([]int, len(p.Fields))
	for i := range t.order {
		t.order[i] = i
	}
	slices.SortStableFunc(t.order, func(a, b int) int { return strength(p.Fields[a].Action) - strength(p.Fields[b].Action) })
	if len(p.Expose) > 0 {
		t.expose = []colMatch{}
		for _, e := range p.Expose {
			if len(e.segs) == 0 {
				t.expose = nil // "@this": every column
				break
			}
			t.expose = append(t.expose, e.column())
		}
	}
	t.keys = make([]colMatch, len(p.Keys))
	for i, k := range p.Keys {
		if len(k.segs) == 1 {
			t.keys[i] = colMatch{kind: colExact, key: k.segs[0].key}
		}
	}
	return t
}

// RewriteTable appends the rewritten table doc (CSV, or TSV with comma
// '\t') to dst and returns it, applying the plan to every data row as to a
// record; see the decisions at the top of table.go. st may be nil.
func (p *Plan) RewriteTable(dst, doc []byte, comma byte, st *Stats) ([]byte, error) {
	return p.rewriteTable(dst, doc, comma, 0, 0, st)
}

// rewriteTable is RewriteTable with the data rows numbered from base and
// the lines after the header's counted from the header's last line plus
// lines (a stream's batch is its rows after the header: its errors name
// the lines of the whole table).
func (p *Plan) rewriteTable(dst, doc []byte, comma byte, base, lines int, st *Stats) ([]byte, error) {
	c := p.c
	if c == nil {
		var err error
		if c, err = p.build(); err != nil {
			return dst, err
		}
	}
	if comma != ',' && comma != '\t' {
		return dst, fmt.Errorf("rewrite: csv: the separator %q is neither a comma nor a tab", comma)
	}
	if st == nil {
		st = &Stats{}
	}
	c.tableOnce.Do(func() { c.table = p.buildTable() })
	tw := tablePool.Get().(*tableRewriter)
	tw.p, tw.c, tw.t, tw.comma = p, c, c.table, comma
	out, err := tw.rewrite(dst, doc, base, lines, st)
	if tw.mac != nil {
		c.putMac(tw.mac)
	}
	tw.release()
	return out, err
}

// tablePool holds table rewriters with their scratch, so that an export
// allocates as often whatever its number of rows.
var tablePool = sync.Pool{New: func() any { return new(tableRewriter) }}

// maxTableScratch bounds the id cells a pooled table rewriter keeps.
const maxTableScratch = 1 << 20

// release returns tw to the pool, without the plan and with the scratch
// it may keep.
func (tw *tableRewriter) release() {
	if cap(tw.ids) > maxTableScratch {
		tw.ids = nil
	}
	*tw = tableRewriter{sum: tw.sum[:0], cell: tw.cell[:0], cells: tw.cells[:0], ids: tw.ids[:0]}
	tablePool.Put(tw)
}

// tableRewriter is the state of one RewriteTable call.
type tableRewriter struct {
	p     *Plan
	c     *compiled
	t     *tablePlan
	comma byte
	mac   *mac
	sum   []byte
	cell  []byte     // a rewritten cell's text
	cells []cellSpan // the current row's cells
	// the cells of the visible rows' audit ids, copied out of the
	// document at the end (the guard reuses its buffer before the audit
	// event is written)
	ids []cellSpan
}

// tableColumn is what happens to one column.
type tableColumn struct {
	keep   bool
	drop   string // the Stats.Fields key counted per visible row when dropped
	fields []int  // candidate field rules, strongest first
}

var utf8BOM = []byte("\xef\xbb\xbf")

// rewrite rewrites the table body; its data rows are numbered
// (Record.Index) from base, and lines lines are skipped after the header
// in the line numbers of its errors.
func (tw *tableRewriter) rewrite(dst, body []byte, base, lines int, st *Stats) ([]byte, error) {
	if !utf8.Valid(body) {
		return dst, errors.New("rewrite: csv: the answer is not valid UTF-8")
	}
	p, t := tw.p, tw.t
	orig := len(dst)
	off := 0
	if bytes.HasPrefix(body, utf8BOM) {
		off = len(utf8BOM)
	}
	s := &tableScanner{b: body, pos: off, comma: tw.comma, line: 1}
	hdr, _, hdrEnd, err := s.next(nil)
	if err == errTableEnd {
		return append(dst, body...), nil // empty: no header, no rows
	}
	if err != nil {
		return dst, err
	}
	s.line += lines
	row := &tableRow{body: body, ds: unsafe.String(unsafe.SliceData(body), len(body)), cells: hdr}
	names := make([]string, len(hdr))
	for i := range hdr {
		names[i] = row.value(i)
	}
	// The names outlive the header row: the rows decode into a new buffer.
	row.names, row.dec = names, nil
	cols := make([]tableColumn, len(names))
	dropped := false
	auditCol := -1
	for i, name := range names {
		c := &cols[i]
		c.keep = true
		if t.expose != nil {
			c.keep = false
			for _, m := range t.expose {
				c.keep = c.keep || m.matches(name)
			}
			if !c.keep {
				c.drop = tw.c.dropKey
			}
		}
		for _, fi := range t.order {
			if c.keep && t.fields[fi].matches(name) {
				c.fields = append(c.fields, fi)
			}
		}
		for _, fi := range c.fields {
			if f := &p.Fields[fi]; f.When == nil && f.Action == Remove {
				c.keep, c.drop, c.fields = false, tw.c.fieldKeys[fi], nil
				break
			}
		}
		if auditCol < 0 && t.audit.matches(name) {
			auditCol = i
		}
		dropped = dropped || !c.keep
	}
	kept := 0
	for i := range cols {
		if cols[i].keep {
			kept++
		}
	}
	row.keyCols = make([][]int, len(t.keys))
	for k, m := range t.keys {
		for i, name := range names {
			if m.matches(name) {
				row.keyCols[k] = append(row.keyCols[k], i)
			}
		}
	}
	rec := &Record{row: row}
	if auditCol >= 0 && cap(tw.ids) == 0 {
		// At most one id per line: one allocation, however many rows.
		tw.ids = make([]cellSpan, 0, bytes.Count(body[hdrEnd:], []byte{'\n'})+1)
	}
	counts := make([]int, len(p.Fields))
	dropCounts := map[string]int{}
	changed := dropped
	dst = append(dst, body[:off]...)
	if dropped {
		dst = tw.writeRow(dst, row, cols, nil, lineEnd(body[off:hdrEnd]), kept)
	} else {
		dst = append(dst, body[off:hdrEnd]...)
	}
	when := make([]int8, len(p.Fields)) // per row: 0 unknown, 1 applies, 2 not
	acts := make([]int, len(names))     // per row: field rule index + 1 that applies per column
	cells := tw.cells[:0]
	defer func() { tw.cells = cells }()
	for index := 0; ; index++ {
		var start, end int
		cells, start, end, err = s.next(cells)
		if err == errTableEnd {
			break
		}
		if err != nil {
			return dst[:orig], err
		}
		if len(cells) != len(names) {
			return dst[:orig], fmt.Errorf("rewrite: csv: the row on line %d has %d fields; the header has %d", s.rowLine, len(cells), len(names))
		}
		st.RecordsIn++
		row.start(cells, base+index)
		if p.Visible != nil {
			ok, err := false, errAmbiguous
			if !row.ambiguous {
				ok, err = p.Visible(rec)
			}
			if err != nil {
				st.EvalErrors++
				ok = false
			}
			if !ok {
				changed = true
				continue
			}
		}
		st.RecordsOut++
		if auditCol >= 0 {
			tw.ids = append(tw.ids, cells[auditCol])
		}
		clear(when)
		rowChanged := dropped
		for i := range cols {
			acts[i] = 0
			c := &cols[i]
			if !c.keep {
				dropCounts[c.drop]++
				continue
			}
			for _, fi := range c.fields {
				f := &p.Fields[fi]
				if f.When != nil {
					if when[fi] == 0 {
						ok, err := f.When(rec)
						if row.ambiguous {
							err = errAmbiguous
						}
						if err != nil {
							st.EvalErrors++
							ok = true
						}
						when[fi] = 2
						if ok {
							when[fi] = 1
						}
					}
					if when[fi] == 2 {
						continue
					}
				}
				if (f.Action == Mask || f.Action == Hash) && cells[i].end == cells[i].start {
					break // an empty cell stays empty (as null stays null)
				}
				acts[i] = fi + 1
				counts[fi]++
				rowChanged = true
				break
			}
		}
		if !rowChanged {
			dst = append(dst, body[start:end]...)
			continue
		}
		changed = true
		dst = tw.writeRow(dst, row, cols, acts, lineEnd(body[start:end]), kept)
	}
	for fi, n := range counts {
		if n > 0 {
			if st.Fields == nil {
				st.Fields = map[string]int{}
			}
			st.Fields[tw.c.fieldKeys[fi]] += n
		}
	}
	for k, n := range dropCounts {
		if st.Fields == nil {
			st.Fields = map[string]int{}
		}
		st.Fields[k] += n
	}
	if len(tw.ids) > 0 {
		st.IDs = appendIDs(st.IDs, body, tw.ids)
	}
	if !changed {
		return append(dst[:orig], body...), nil
	}
	st.Changed = true
	return dst, nil
}

// writeRow writes the kept cells of row, with their actions (acts[i]-1 is
// the field rule for column i; 0, or acts nil: unchanged), then le.
func (tw *tableRewriter) writeRow(dst []byte, row *tableRow, cols []tableColumn, acts []int, le string, kept int) []byte {
	if kept == 0 {
		return dst
	}
	first := true
	for i, c := range cols {
		if !c.keep {
			continue
		}
		if !first {
			dst = append(dst, tw.comma)
		}
		first = false
		cl := row.cells[i]
		if acts == nil || acts[i] == 0 {
			if kept == 1 && cl.end == cl.start {
				dst = append(dst, `""`...) // a lone empty field would read as a blank line
			} else {
				dst = append(dst, row.body[cl.start:cl.end]...)
			}
			continue
		}
		fi := acts[i] - 1
		f := &tw.p.Fields[fi]
		var v []byte
		switch f.Action {
		case Remove, Null:
		case Replace:
			v = append(tw.cell[:0], tw.t.replace[fi]...)
		case Hash:
			if tw.mac == nil {
				tw.mac = tw.c.getMac()
			}
			text := row.value(i) // not changed by sum
			tw.sum = tw.mac.sum(tw.sum[:0], unsafe.Slice(unsafe.StringData(text), len(text)))
			v = tw.cell[:0]
			for _, b := range tw.sum {
				v = append(v, hexPairs[b][:]...)
			}
		case Mask:
			v = f.Mask(tw.cell[:0], row.value(i))
		}
		tw.cell = v
		dst = tw.appendCell(dst, v, kept == 1)
	}
	return append(dst, le...)
}

// appendCell appends v as a cell, quoted when it holds the separator, a
// quote, a line break or a leading or trailing blank, or when it is empty
// and alone on its line.
func (tw *tableRewriter) appendCell(dst, v []byte, alone bool) []byte {
	need := len(v) == 0 && alone
	for i := 0; i < len(v) && !need; i++ {
		switch v[i] {
		case tw.comma, '"', '\r', '\n':
			need = true
		}
	}
	if len(v) > 0 && (v[0] == ' ' || v[0] == '\t' || v[len(v)-1] == ' ' || v[len(v)-1] == '\t') {
		need = true
	}
	if !need {
		return append(dst, v...)
	}
	dst = append(dst, '"')
	for _, c := range v {
		if c == '"' {
			dst = append(dst, '"')
		}
		dst = append(dst, c)
	}
	return append(dst, '"')
}

// appendIDs appends the decoded text of the cells of body to ids, all in
// one new string (so they outlive body).
func appendIDs(ids []string, body []byte, cells []cellSpan) []string {
	n := 0
	for _, c := range cells {
		n += c.end - c.start
	}
	buf := make([]byte, 0, n)
	for _, c := range cells {
		buf = appendCellText(buf, body[c.start:c.end], c.quoted)
	}
	all := unsafe.String(unsafe.SliceData(buf), len(buf))
	ids = slices.Grow(ids, len(cells))
	from := 0
	for _, c := range cells {
		n := c.end - c.start
		if c.quoted {
			n -= 2 + bytes.Count(body[c.start+1:c.end-1], []byte{'"'})/2
		}
		ids = append(ids, all[from:from+n])
		from += n
	}
	return ids
}

// appendCellText appends the text of the cell raw (quoted or not) to dst.
func appendCellText(dst, raw []byte, quoted bool) []byte {
	if !quoted {
		return append(dst, raw...)
	}
	raw = raw[1 : len(raw)-1]
	for i := 0; i < len(raw); i++ {
		dst = append(dst, raw[i])
		if raw[i] == '"' {
			i++ // the second of a doubled quote
		}
	}
	return dst
}

// cellSpan is one cell of a row in the body: raw [start, end), quoted or not.
type cellSpan struct {
	start, end int
	quoted     bool
}

// tableRow is the row predicates see through Record.
type tableRow struct {
	body    []byte
	ds      string // body as a string, shared memory
	cells   []cellSpan
	names   []string // the header's column names
	keyCols [][]int  // per Plan.Keys: the columns of that name
	index   int
	// ambiguous: a key of Plan.Keys names columns with different values
	ambiguous bool
	buf       []byte // the row as a JSON object, built on first need
	built     bool
	// dec holds the decoded text of this row's cells with doubled quotes
	dec []byte
}

// start makes the row cells (row index).
func (r *tableRow) start(cells []cellSpan, index int) {
	r.cells, r.index, r.built, r.ambiguous, r.dec = cells, index, false, false, r.dec[:0]
	for _, cs := range r.keyCols {
		for _, c := range cs[min(1, len(cs)):] {
			if r.value(c) != r.value(cs[0]) {
				r.ambiguous = true
			}
		}
	}
}

// value is the decoded text of cell i, valid while the row is: it shares
// the body's memory, or, when the cell holds a doubled quote, the row's
// decoding buffer (reset per row, so no cell allocates once it has grown).
func (r *tableRow) value(i int) string {
	c := r.cells[i]
	if !c.quoted {
		return r.ds[c.start:c.end]
	}
	v := r.ds[c.start+1 : c.end-1]
	if bytes.IndexByte(r.body[c.start+1:c.end-1], '"') < 0 {
		return v
	}
	from := len(r.dec)
	r.dec = appendCellText(r.dec, r.body[c.start:c.end], true)
	// An append that moves r.dec leaves the text given out before in the
	// old array, which stays alive while it is referenced.
	return unsafe.String(&r.dec[from], len(r.dec)-from)
}

// str is Record.Str for a row: the value of Plan.Keys[i] (a string), or
// false when the column is absent or ambiguous.
func (r *tableRow) str(i int) (string, bool) {
	if uint(i) >= uint(len(r.keyCols)) || len(r.keyCols[i]) == 0 || r.ambiguous && r.keyAmbiguous(i) {
		return "", false
	}
	return r.value(r.keyCols[i][0]), true
}

// keyAmbiguous reports whether the columns of Plan.Keys[i] disagree.
func (r *tableRow) keyAmbiguous(i int) bool {
	cs := r.keyCols[i]
	for _, c := range cs[1:] {
		if r.value(c) != r.value(cs[0]) {
			return true
		}
	}
	return false
}

// key is Record.Key for a row.
func (r *tableRow) key(i int) gjson.Result {
	s, ok := r.str(i)
	if !ok {
		return gjson.Result{}
	}
	return gjson.Result{Type: gjson.String, Str: s, Raw: string(appendJSONString(nil, s))}
}

// json is the row as a JSON object of column name to string (duplicate
// column names give duplicate keys, which conditions treat as a missing key
// when their values differ, as in JSON answers).
func (r *tableRow) json() []byte {
	if r.built {
		return r.buf
	}
	b := append(r.buf[:0], '{')
	for i := range r.cells {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, r.names[i])
		b = append(b, ':')
		b = appendJSONString(b, r.value(i))
	}
	r.buf, r.built = append(b, '}'), true
	return r.buf
}

// appendJSONString appends s (valid UTF-8) as a JSON string.
func appendJSONString(b []byte, s string) []byte {
	const hexd = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20:
			b = append(b, '\\', 'u', '0', '0', hexd[c>>4], hexd[c&15])
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}

// tableScanner reads rows strictly (RFC 4180, with LF as well as CRLF line
// ends): a quote inside an unquoted field, text after a closing quote, an
// unterminated quoted field or a carriage return not followed by a line
// feed outside quotes is an error. Blank lines are not rows.
type tableScanner struct {
	b     []byte
	pos   int
	comma byte
	line  int // 1-based line of pos
	// rowLine is the line the last row scanned starts on.
	rowLine int
}

var errTableEnd = errors.New("end")

// cellStops are the bytes that end an unquoted cell (the separator, a line
// end) or make it an error (a quote): for ',' and for '\t'.
var cellStops = func() (t [2][256]bool) {
	for i, comma := range []byte{',', '\t'} {
		t[i][comma], t[i]['\n'], t[i]['\r'], t[i]['"'] = true, true, true, true
	}
	return t
}()

// next scans the row at pos into cells; rowStart is where the row begins
// (after blank lines) and the returned end is after its line end.
func (s *tableScanner) next(cells []cellSpan) (out []cellSpan, rowStart, end int, err error) {
	b := s.b
	for s.pos < len(b) {
		if b[s.pos] == '\n' {
			s.pos++
			s.line++
			continue
		}
		if b[s.pos] == '\r' && s.pos+1 < len(b) && b[s.pos+1] == '\n' {
			s.pos += 2
			s.line++
			continue
		}
		break
	}
	if s.pos >= len(b) {
		return cells, s.pos, s.pos, errTableEnd
	}
	rowStart = s.pos
	startLine := s.line
	s.rowLine = startLine
	i := s.pos
	cells = cells[:0]
	for {
		f := cellSpan{start: i}
		if i < len(b) && b[i] == '"' {
			f.quoted = true
			i++
			for {
				j := bytes.IndexByte(b[i:], '"')
				if j < 0 {
					return cells, rowStart, i, fmt.Errorf("rewrite: csv: line %d: a quoted field is never closed", startLine)
				}
				s.line += bytes.Count(b[i:i+j], []byte{'\n'})
				i += j + 1
				if i < len(b) && b[i] == '"' {
					i++
					continue
				}
				break
			}
			if i < len(b) && b[i] != s.comma && b[i] != '\n' && b[i] != '\r' {
				return cells, rowStart, i, fmt.Errorf("rewrite: csv: line %d: text after a closing quote", s.line)
			}
		} else {
			stops := &cellStops[0]
			if s.comma == '\t' {
				stops = &cellStops[1]
			}
			for i < len(b) && !stops[b[i]] {
				i++
			}
			if i < len(b) && b[i] == '"' {
				return cells, rowStart, i, fmt.Errorf("rewrite: csv: line %d: a quote inside an unquoted field", s.line)
			}
		}
		f.end = i
		cells = append(cells, f)
		if i >= len(b) {
			s.pos = i
			return cells, rowStart, i, nil
		}
		switch b[i] {
		case s.comma:
			i++
			continue
		case '\r':
			if i+1 >= len(b) || b[i+1] != '\n' {
				return cells, rowStart, i, fmt.Errorf("rewrite: csv: line %d: a carriage return without a line feed outside quotes", s.line)
			}
			i++
		}
		i++ // the '\n'
		s.line++
		s.pos = i
		return cells, rowStart, i, nil
	}
}

// lineEnd is the line end of the row raw [start, end).
func lineEnd(b []byte) string {
	switch {
	case bytes.HasSuffix(b, []byte("\r\n")):
		return "\r\n"
	case bytes.HasSuffix(b, []byte("\n")):
		return "\n"
	}
	return ""
}
