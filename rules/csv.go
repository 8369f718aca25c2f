package rules

// CSV answers. A route that rewrites answers (it has `records` or `record`,
// which `fields`, `visible` and `expose` need) may answer with a CSV
// download on an approved export. Such an answer is rewritten by column
// name with the same rule semantics as JSON records: every data row is a
// record whose keys are the header row's column names and whose values are
// strings. Spreadsheets cannot be rewritten and are refused (502).

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"net/http"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/crmguard/crmguard/internal/mediatype"
	"github.com/crmguard/crmguard/rules/internal/cond"
	"github.com/crmguard/crmguard/rules/mask"
	"github.com/crmguard/crmguard/rules/rewrite"
	"github.com/tidwall/gjson"
)

// inspectType refuses, on a rewriting route, a 2xx answer whose type
// cannot be rewritten: a spreadsheet, a Content-Type that cannot be read or
// names a charset other than UTF-8, or Content-Type lines that disagree.
func (d *Decision) inspectType(h http.Header) *Block {
	t, err := mediatype.Lines(h["Content-Type"])
	switch {
	case err != nil:
		return d.block(http.StatusBadGateway, fmt.Sprintf("route %s rewrites answers and %s", d.route.id, answerTypeError(err)))
	case t.Kind == mediatype.Sheet:
		return d.block(http.StatusBadGateway, fmt.Sprintf("route %s rewrites answers and the CRM sent a spreadsheet (%s), which cannot be rewritten", d.route.id, t.Essence))
	}
	return nil
}

// answerTypeError words an error of mediatype.Lines for a refusal.
func answerTypeError(err error) string {
	var ce *mediatype.CharsetError
	if errors.As(err, &ce) {
		return fmt.Sprintf("the answer is in charset %q; only UTF-8 (or US-ASCII) answers can be rewritten", ce.Charset)
	}
	return "the answer's Content-Type cannot be read: " + strings.TrimPrefix(err.Error(), "mediatype: ")
}

// rewriteTable rewrites a CSV or TSV answer (kind) for this request,
// adding what it did to st.
func (d *Decision) rewriteTable(dst, body []byte, kind mediatype.Kind, st *rewrite.Stats) ([]byte, error) {
	p := d.csvPlan(kind)
	return p.rewrite(dst, body, st)
}

// csvField is one field rule as it applies to columns.
type csvField struct {
	match   func(name string) bool
	action  rewrite.Action
	mask    mask.Func
	replace string
	when    func(r *csvRow) (bool, error) // nil: always
	key     string                        // "action:path" for the audit
}

// csvPlan is how one request's CSV answer is rewritten.
type csvPlan struct {
	comma   byte
	visible func(r *csvRow) (bool, error) // nil: every row is visible
	expose  []func(string) bool           // nil: no allow-list
	fields  []csvField                    // strongest first
	auditID func(string) bool             // nil: no ids
	hashKey []byte
}

// csvPlan builds the plan of this request: the same selection of field
// rules as the JSON plan (for / except, request-only conditions evaluated
// once), with record conditions evaluated in CEL on each row.
func (d *Decision) csvPlan(kind mediatype.Kind) *csvPlan {
	rt := d.route
	p := &csvPlan{comma: ',', hashKey: d.set.hashKey}
	if kind == mediatype.TSV {
		p.comma = '\t'
	}
	if rt.visible != nil {
		p.visible = d.rowCondition(rt.visible)
	}
	for _, x := range rt.expose {
		if m := columnMatcher(x.String()); m != nil {
			p.expose = append(p.expose, m)
		}
	}
	if len(rt.expose) > 0 && p.expose == nil {
		p.expose = []func(string) bool{} // an allow-list no column meets
	}
	if rt.auditID.String() != "@this" {
		p.auditID = columnMatcher(rt.auditID.String())
	}
	for _, f := range rt.fields {
		if f.forR != nil && !hasAny(d.user, f.forR) {
			continue
		}
		if f.except != nil && hasAny(d.user, f.except) {
			continue
		}
		m := columnMatcher(f.path)
		if m == nil {
			continue // a nested path: no column can hold it
		}
		cf := csvField{match: m, action: actions[f.action], mask: f.maskFn, key: f.action + ":" + f.path}
		if f.action == "replace" {
			switch r := gjson.ParseBytes(f.replace); r.Type {
			case gjson.String:
				cf.replace = r.Str
			case gjson.Null:
			default:
				cf.replace = r.Raw
			}
		}
		var when, unless func(*csvRow) (bool, error)
		if f.when != nil {
			when = d.rowCondition(f.when)
		}
		if f.unless != nil {
			unless = d.rowCondition(f.unless)
		}
		if !f.perRecord() {
			applies, err := applyRow(when, unless, nil)
			if err != nil {
				d.Audit.EvalErrors++
			}
			if !applies {
				continue
			}
		} else {
			cf.when = func(r *csvRow) (bool, error) { return applyRow(when, unless, r) }
		}
		p.fields = append(p.fields, cf)
	}
	sort.SliceStable(p.fields, func(i, j int) bool { return csvStrength(p.fields[i].action) < csvStrength(p.fields[j].action) })
	return p
}

// csvStrength orders actions as the JSON rewriter does: remove, null,
// replace, hash, mask.
func csvStrength(a rewrite.Action) int {
	switch a {
	case rewrite.Remove:
		return 0
	case rewrite.Null:
		return 1
	case rewrite.Replace:
		return 2
	case rewrite.Hash:
		return 3
	}
	return 4
}

// rowCondition evaluates a record condition on rows, in CEL with `record`
// the row as a map of column name to string. A condition that does not
// read `record` is evaluated once.
func (d *Decision) rowCondition(c *cond.Condition) func(*csvRow) (bool, error) {
	if !c.UsesRecord() {
		ok, err := c.Expr().EvalBool(d.act)
		return func(*csvRow) (bool, error) { return ok, err }
	}
	return func(r *csvRow) (bool, error) {
		if r == nil {
			return false, errors.New("rules: the condition reads record, and there is no row")
		}
		return c.Expr().EvalBool(d.act.WithRecord(r.json()))
	}
}

// applyRow decides whether a field rule applies to a row, as applyField
// does for JSON records: `when` holds and `unless` does not; an error
// applies the rule (fail closed).
func applyRow(when, unless func(*csvRow) (bool, error), r *csvRow) (bool, error) {
	if when != nil {
		ok, err := when(r)
		if err != nil {
			return true, err
		}
		if !ok {
			return false, nil
		}
	}
	if unless != nil {
		ok, err := unless(r)
		if err != nil {
			return true, err
		}
		if ok {
			return false, nil
		}
	}
	return true, nil
}

// columnMatcher turns a field path into a test on column names: a path of
// one key (`\` escapes kept out, `*` and `?` wildcards as in JSON), after
// any leading `**.` segments. A path that cannot name a top-level member
// (nested `a.b`, `#`, `@this`) matches no column: nil.
func columnMatcher(path string) func(string) bool {
	if path == "" || path == "@this" {
		return nil
	}
	var segs []string // raw, escapes kept
	start := 0
	for i := 0; i < len(path); i++ {
		switch path[i] {
		case '\\':
			i++
		case '.':
			segs = append(segs, path[start:i])
			start = i + 1
		}
	}
	segs = append(segs, path[start:])
	for len(segs) > 1 && segs[0] == "**" {
		segs = segs[1:]
	}
	if len(segs) != 1 || segs[0] == "#" || segs[0] == "**" || segs[0] == "" {
		return nil
	}
	raw := segs[0]
	wild := false
	var key strings.Builder
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		switch {
		case c == '\\' && i+1 < len(raw):
			i++
			key.WriteByte(raw[i])
		case c == '*' || c == '?':
			wild = true
			key.WriteByte(c)
		default:
			key.WriteByte(c)
		}
	}
	if wild {
		return func(name string) bool { return globMatch(raw, name) }
	}
	k := key.String()
	return func(name string) bool { return name == k }
}

// globMatch reports whether name matches pat: `*` any run of runes, `?`
// one rune, `\` escapes the next byte.
func globMatch(pat, name string) bool {
	px, nx := 0, 0
	starP, starN := -1, 0
	for px < len(pat) || nx < len(name) {
		if px < len(pat) {
			switch c := pat[px]; c {
			case '*':
				starP, starN = px, nx
				px++
				continue
			case '?':
				if nx < len(name) {
					_, n := utf8.DecodeRuneInString(name[nx:])
					px++
					nx += n
					continue
				}
			default:
				q := px
				if c == '\\' && px+1 < len(pat) {
					q = px + 1
				}
				if nx < len(name) && pat[q] == name[nx] {
					px = q + 1
					nx++
					continue
				}
			}
		}
		if starP >= 0 && starN < len(name) {
			_, n := utf8.DecodeRuneInString(name[starN:])
			starN += n
			px, nx = starP+1, starN
			continue
		}
		return false
	}
	return true
}

// csvSpan is one field of a row in the body: raw [start, end), quoted or not.
type csvSpan struct {
	start, end int
	quoted     bool
}

// csvRow is one scanned row.
type csvRow struct {
	body   []byte
	fields []csvSpan
	names  []string // the header's column names
	buf    []byte   // the row as a JSON object, built on first need
	built  bool
}

// value is the decoded text of field i.
func (r *csvRow) value(i int) string {
	f := r.fields[i]
	raw := r.body[f.start:f.end]
	if !f.quoted {
		return string(raw)
	}
	raw = raw[1 : len(raw)-1]
	if bytes.IndexByte(raw, '"') < 0 {
		return string(raw)
	}
	return strings.ReplaceAll(string(raw), `""`, `"`)
}

// json is the row as a JSON object of column name to string (duplicate
// column names give duplicate keys, which conditions treat as a missing
// key when their values differ, as in JSON answers).
func (r *csvRow) json() []byte {
	if r.built {
		return r.buf
	}
	b := append(r.buf[:0], '{')
	for i := range r.fields {
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

// csvScanner reads rows strictly (RFC 4180, with LF as well as CRLF line
// ends): a quote inside an unquoted field, text after a closing quote, an
// unterminated quoted field or a carriage return not followed by a line
// feed outside quotes is an error. Blank lines are not rows.
type csvScanner struct {
	b     []byte
	pos   int
	comma byte
	line  int // 1-based line of pos
	// rowLine is the line the last row scanned starts on.
	rowLine int
}

var errCSVEnd = errors.New("end")

// next scans the row at pos into fields; rowStart is where the row begins
// (after blank lines) and the returned end is after its line end.
func (s *csvScanner) next(fields []csvSpan) (out []csvSpan, rowStart, end int, err error) {
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
		return fields, s.pos, s.pos, errCSVEnd
	}
	rowStart = s.pos
	startLine := s.line
	s.rowLine = startLine
	i := s.pos
	fields = fields[:0]
	for {
		f := csvSpan{start: i}
		if i < len(b) && b[i] == '"' {
			f.quoted = true
			i++
			for {
				j := bytes.IndexByte(b[i:], '"')
				if j < 0 {
					return fields, rowStart, i, fmt.Errorf("rules: csv: line %d: a quoted field is never closed", startLine)
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
				return fields, rowStart, i, fmt.Errorf("rules: csv: line %d: text after a closing quote", s.line)
			}
		} else {
			for i < len(b) && b[i] != s.comma && b[i] != '\n' && b[i] != '\r' {
				if b[i] == '"' {
					return fields, rowStart, i, fmt.Errorf("rules: csv: line %d: a quote inside an unquoted field", s.line)
				}
				i++
			}
		}
		f.end = i
		fields = append(fields, f)
		if i >= len(b) {
			s.pos = i
			return fields, rowStart, i, nil
		}
		switch b[i] {
		case s.comma:
			i++
			continue
		case '\r':
			if i+1 >= len(b) || b[i+1] != '\n' {
				return fields, rowStart, i, fmt.Errorf("rules: csv: line %d: a carriage return without a line feed outside quotes", s.line)
			}
			i++
		}
		i++ // the '\n'
		s.line++
		s.pos = i
		return fields, rowStart, i, nil
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

// column is what happens to one column.
type column struct {
	keep   bool
	drop   string // audit key counted per visible row when dropped
	fields []int  // candidate field rules, strongest first
	audit  bool
}

var utf8BOM = []byte("\xef\xbb\xbf")

// rewrite rewrites body (a CSV or TSV document) into dst.
func (p *csvPlan) rewrite(dst, body []byte, st *rewrite.Stats) ([]byte, error) {
	if !utf8.Valid(body) {
		return dst, errors.New("rules: csv: the answer is not valid UTF-8")
	}
	orig := len(dst)
	off := 0
	if bytes.HasPrefix(body, utf8BOM) {
		off = len(utf8BOM)
	}
	s := &csvScanner{b: body, pos: off, comma: p.comma, line: 1}
	hdr, _, hdrEnd, err := s.next(nil)
	if err == errCSVEnd {
		return append(dst, body...), nil // empty: no header, no rows
	}
	if err != nil {
		return dst, err
	}
	names := make([]string, len(hdr))
	row := &csvRow{body: body, fields: hdr}
	for i := range hdr {
		names[i] = row.value(i)
	}
	row.names = names
	cols := make([]column, len(names))
	dropped := false
	auditCol := -1
	for i, name := range names {
		c := &cols[i]
		c.keep = true
		if p.expose != nil {
			c.keep = false
			for _, m := range p.expose {
				c.keep = c.keep || m(name)
			}
			if !c.keep {
				c.drop = "expose:dropped"
			}
		}
		for fi := range p.fields {
			if c.keep && p.fields[fi].match(name) {
				c.fields = append(c.fields, fi)
			}
		}
		for _, fi := range c.fields {
			if f := &p.fields[fi]; f.when == nil && f.action == rewrite.Remove {
				c.keep, c.drop, c.fields = false, f.key, nil
				break
			}
		}
		if p.auditID != nil && auditCol < 0 && p.auditID(name) {
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
	counts := make([]int, len(p.fields))
	dropCounts := map[string]int{}
	changed := dropped
	dst = append(dst, body[:off]...)
	if dropped {
		dst = p.writeRow(dst, row, cols, lineEnd(body[off:hdrEnd]), kept)
	} else {
		dst = append(dst, body[off:hdrEnd]...)
	}
	when := make([]int8, len(p.fields)) // per row: 0 unknown, 1 applies, 2 not
	acts := make([]int, len(names))     // per row: field rule index + 1 that applies per column
	var fields []csvSpan
	var macH hash.Hash
	for {
		var start, end int
		fields, start, end, err = s.next(fields)
		if err == errCSVEnd {
			break
		}
		if err != nil {
			return dst[:orig], err
		}
		if len(fields) != len(names) {
			return dst[:orig], fmt.Errorf("rules: csv: the row on line %d has %d fields; the header has %d", s.rowLine, len(fields), len(names))
		}
		st.RecordsIn++
		row.fields, row.built = fields, false
		if p.visible != nil {
			ok, err := p.visible(row)
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
			st.IDs = append(st.IDs, row.value(auditCol))
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
				f := &p.fields[fi]
				if f.when != nil {
					if when[fi] == 0 {
						ok, err := f.when(row)
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
				if (f.action == rewrite.Mask || f.action == rewrite.Hash) && fields[i].end-fields[i].start == 0 {
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
		le := lineEnd(body[start:end])
		var err2 error
		dst, macH, err2 = p.writeCells(dst, row, cols, acts, le, kept, macH)
		if err2 != nil {
			return dst[:orig], err2
		}
	}
	for fi, n := range counts {
		if n > 0 {
			if st.Fields == nil {
				st.Fields = map[string]int{}
			}
			st.Fields[p.fields[fi].key] += n
		}
	}
	for k, n := range dropCounts {
		if st.Fields == nil {
			st.Fields = map[string]int{}
		}
		st.Fields[k] += n
	}
	if !changed {
		return append(dst[:orig], body...), nil
	}
	st.Changed = true
	return dst, nil
}

// writeRow writes the kept fields of row unchanged, then le.
func (p *csvPlan) writeRow(dst []byte, row *csvRow, cols []column, le string, kept int) []byte {
	if kept == 0 {
		return dst
	}
	first := true
	for i, c := range cols {
		if !c.keep {
			continue
		}
		if !first {
			dst = append(dst, p.comma)
		}
		first = false
		f := row.fields[i]
		if kept == 1 && f.end == f.start {
			dst = append(dst, `""`...) // a lone empty field would read as a blank line
		} else {
			dst = append(dst, row.body[f.start:f.end]...)
		}
	}
	return append(dst, le...)
}

// writeCells writes a visible row with its actions (acts[i]-1 is the field
// rule for column i; 0: unchanged), then le.
func (p *csvPlan) writeCells(dst []byte, row *csvRow, cols []column, acts []int, le string, kept int, macH hash.Hash) ([]byte, hash.Hash, error) {
	if kept == 0 {
		return dst, macH, nil
	}
	first := true
	var scratch []byte
	for i, c := range cols {
		if !c.keep {
			continue
		}
		if !first {
			dst = append(dst, p.comma)
		}
		first = false
		fl := row.fields[i]
		if acts[i] == 0 {
			if kept == 1 && fl.end == fl.start {
				dst = append(dst, `""`...)
			} else {
				dst = append(dst, row.body[fl.start:fl.end]...)
			}
			continue
		}
		f := &p.fields[acts[i]-1]
		var v string
		switch f.action {
		case rewrite.Remove, rewrite.Null:
			v = ""
		case rewrite.Replace:
			v = f.replace
		case rewrite.Hash:
			if macH == nil {
				if len(p.hashKey) == 0 {
					return dst, macH, errors.New("rules: csv: a hash rule needs a hash key")
				}
				macH = hmac.New(sha256.New, p.hashKey)
			}
			macH.Reset()
			macH.Write([]byte(row.value(i)))
			v = hex.EncodeToString(macH.Sum(nil))
		case rewrite.Mask:
			scratch = f.mask(scratch[:0], row.value(i))
			v = string(scratch)
		}
		dst = p.appendField(dst, v, kept == 1)
	}
	return append(dst, le...), macH, nil
}

// appendField appends v as a field, quoted when it holds the separator, a
// quote, a line break or a leading or trailing space, or when it is empty
// and alone on its line.
func (p *csvPlan) appendField(dst []byte, v string, alone bool) []byte {
	need := v == "" && alone
	for i := 0; i < len(v) && !need; i++ {
		switch v[i] {
		case p.comma, '"', '\r', '\n':
			need = true
		}
	}
	if v != "" && (v[0] == ' ' || v[0] == '\t' || v[len(v)-1] == ' ' || v[len(v)-1] == '\t') {
		need = true
	}
	if !need {
		return append(dst, v...)
	}
	dst = append(dst, '"')
	for i := 0; i < len(v); i++ {
		if v[i] == '"' {
			dst = append(dst, '"')
		}
		dst = append(dst, v[i])
	}
	return append(dst, '"')
}
