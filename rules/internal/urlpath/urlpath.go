// Package urlpath normalises request paths and matches them against the
// path patterns of routes ("/api/customers/{id}", "/files/*/meta",
// "/api/**").
//
// A path is normalised once, before any route is tried (Normalize); a path
// that a server behind the proxy could read in more than one way is
// refused. Patterns are compiled at load (ParsePattern) and matched on the
// normalised segments (Pattern.Match), without regard to case, as Windows
// and IIS servers compare paths.
//
// It owns the path rules of the rule format's match.path and nothing else;
// it imports only the standard library.
package urlpath

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// ErrAmbiguous is wrapped by every normalisation refusal.
var ErrAmbiguous = errors.New("urlpath: the path cannot be judged unambiguously")

// Normalize turns an escaped request path into the decoded, clean path
// the routes are matched against, and its segments. It refuses:
//   - invalid or truncated percent escapes (%zz, %4, %u002e);
//   - encoded or raw characters a server may read as a separator or a stop:
//     "/" and "\" encoded (%2F, %5C), raw "\" , ";" (matrix parameters,
//     Tomcat/Jetty strip them), "?" and "#" after decoding;
//   - control characters and NUL (%00), anywhere;
//   - a "%" left after decoding (double encoding such as %252F);
//   - bytes that are not valid UTF-8 after decoding (overlong forms such as
//     %c0%ae);
//   - ".." that would climb above the root;
//   - segments ending in a dot or a space (Windows servers drop them, so
//     "export." would reach "export").
//
// It resolves "." and "..", collapses duplicate slashes and drops a
// trailing slash. Matching ignores case (see equalFoldSegment).
func Normalize(escaped string) (string, []string, error) {
	if escaped == "" {
		escaped = "/"
	}
	if escaped[0] != '/' {
		return "", nil, fmt.Errorf("%w: %q does not start with /", ErrAmbiguous, escaped)
	}
	// Split on raw slashes first: an encoded slash is refused below, so
	// every separator the upstream sees is a raw one.
	if n := strings.Count(escaped, "/"); n > maxSegments {
		return "", nil, fmt.Errorf("%w: the path has %d segments, more than %d", ErrAmbiguous, n, maxSegments)
	}
	raw := strings.Split(escaped[1:], "/")
	// clean: every segment so far is kept as it came (no escape, no empty
	// or dot segment); out is then raw itself and the path is escaped.
	clean := true
	var out []string
	for j, rs := range raw {
		seg, err := decodeSegment(rs)
		if err != nil {
			return "", nil, err
		}
		if clean {
			if seg == rs && seg != "" && seg != "." && seg != ".." {
				if last := seg[len(seg)-1]; last == '.' || last == ' ' {
					return "", nil, fmt.Errorf("%w: segment %q ends in %q, which some servers drop", ErrAmbiguous, seg, string(last))
				}
				continue
			}
			clean = false
			out = append(make([]string, 0, len(raw)), raw[:j]...)
		}
		switch seg {
		case "", ".":
			continue
		case "..":
			if len(out) == 0 {
				return "", nil, fmt.Errorf("%w: %q climbs above the root", ErrAmbiguous, escaped)
			}
			out = out[:len(out)-1]
			continue
		}
		if last := seg[len(seg)-1]; last == '.' || last == ' ' {
			return "", nil, fmt.Errorf("%w: segment %q ends in %q, which some servers drop", ErrAmbiguous, seg, string(last))
		}
		out = append(out, seg)
	}
	if clean {
		return escaped, raw, nil
	}
	return "/" + strings.Join(out, "/"), out, nil
}

// maxSegments bounds the number of segments of a request path (counted
// before dot segments and empty segments are removed).
const maxSegments = 256

func decodeSegment(s string) (string, error) {
	var b []byte
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '%' {
			if i+2 >= len(s) || !isHex(s[i+1]) || !isHex(s[i+2]) {
				return "", fmt.Errorf("%w: invalid percent escape in %q", ErrAmbiguous, s)
			}
			if b == nil {
				b = append(make([]byte, 0, len(s)), s[:i]...)
			}
			c = unhex(s[i+1])<<4 | unhex(s[i+2])
			i += 2
			switch c {
			case '/', '\\':
				return "", fmt.Errorf("%w: encoded %q in %q", ErrAmbiguous, string(c), s)
			}
			b = append(b, c)
			continue
		}
		if b != nil {
			b = append(b, c)
		}
	}
	dec := s
	if b != nil {
		dec = string(b)
	}
	for i := 0; i < len(dec); i++ {
		c := dec[i]
		switch {
		case c < 0x20 || c == 0x7f:
			return "", fmt.Errorf("%w: control character %#x in the path", ErrAmbiguous, c)
		case c == '\\':
			return "", fmt.Errorf("%w: backslash in %q (Windows servers read it as /)", ErrAmbiguous, dec)
		case c == ';':
			return "", fmt.Errorf("%w: %q holds ';' (path parameters, which some servers strip)", ErrAmbiguous, dec)
		case c == '%':
			return "", fmt.Errorf("%w: %q is still encoded after decoding (double encoding)", ErrAmbiguous, dec)
		case c == '?' || c == '#':
			return "", fmt.Errorf("%w: encoded %q in %q", ErrAmbiguous, string(c), dec)
		}
	}
	if !utf8.ValidString(dec) {
		return "", fmt.Errorf("%w: %q is not valid UTF-8 after decoding", ErrAmbiguous, dec)
	}
	for _, r := range dec {
		if r >= 0x80 && strings.ContainsRune(lookalikes, r) {
			return "", fmt.Errorf("%w: %q holds %U, which Windows best-fit conversion turns into a separator or dot", ErrAmbiguous, dec, r)
		}
		if r >= 0xa0 && compatForm(r) {
			return "", fmt.Errorf("%w: %q holds %U, a compatibility form that servers normalising to NFKC read as plain letters, digits or a space", ErrAmbiguous, dec, r)
		}
	}
	return dec, nil
}

// compatForms are the blocks of characters whose compatibility (NFKC)
// form is an ASCII letter, digit or space: a server that normalises paths
// reads "/api/ｃustomers" (fullwidth c) as "/api/customers", which no
// route pattern (written in ASCII) would match, so a catch-all route could
// judge it instead.
var compatForms = [][2]rune{
	{0x00a0, 0x00a0},   // no-break space
	{0x00aa, 0x00aa},   // feminine ordinal (a)
	{0x00b2, 0x00b3},   // superscript two, three
	{0x00b9, 0x00ba},   // superscript one, masculine ordinal (o)
	{0x00bc, 0x00be},   // vulgar fractions
	{0x017f, 0x017f},   // long s
	{0x1d2c, 0x1d6a},   // modifier letters
	{0x2000, 0x200a},   // spaces
	{0x2070, 0x209f},   // superscripts and subscripts
	{0x2100, 0x218f},   // letterlike symbols (Kelvin K), number forms (Roman numerals)
	{0x2460, 0x24ff},   // enclosed alphanumerics
	{0x3000, 0x3000},   // ideographic space
	{0xfb00, 0xfb06},   // Latin ligatures
	{0xfe50, 0xfe6f},   // small form variants
	{0xff00, 0xffef},   // halfwidth and fullwidth forms
	{0x1d400, 0x1d7ff}, // mathematical alphanumeric symbols
	{0x1f100, 0x1f1ff}, // enclosed alphanumeric supplement
}

func compatForm(r rune) bool {
	for _, b := range compatForms {
		if r >= b[0] && r <= b[1] {
			return true
		}
	}
	return false
}

// lookalikes are characters that Windows' best-fit ANSI conversion (and
// some Unicode normalisations) turn into / \ . ; % ? or #: fullwidth and
// small forms, division and fraction slashes, set minus, one-dot leader.
const lookalikes = "\uff0f\uff3c\uff0e\uff1b\uff05\uff1f\uff03\u2215\u2044\u2216\u29f5\u29f8\u29f9\ufe68\ufe52\ufe54\ufe6a\u2024\u3002"

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case '0' <= c && c <= '9':
		return c - '0'
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}

// Pattern is a compiled route path pattern.
type Pattern struct {
	src   string
	segs  []patSeg
	rests int // how many ** the pattern holds
}

type segKind int

const (
	segLit   segKind = iota
	segParam         // {name}
	segStar          // *
	segRest          // **
)

type patSeg struct {
	kind segKind
	text string // literal text or parameter name
}

// ParsePattern reads "/api/customers/{id}", "/files/*/meta", "/api/**":
// literal segments (written decoded and clean), {name} (one segment,
// captured), * (one segment) and ** (any number of segments, none
// included).
func ParsePattern(p string) (*Pattern, error) {
	if !strings.HasPrefix(p, "/") {
		return nil, fmt.Errorf("a path pattern starts with /, got %q", p)
	}
	pat := &Pattern{src: p}
	names := map[string]bool{}
	for _, s := range strings.Split(p[1:], "/") {
		switch {
		case s == "":
			continue
		case s == "**":
			pat.segs = append(pat.segs, patSeg{kind: segRest})
			pat.rests++
		case s == "*":
			pat.segs = append(pat.segs, patSeg{kind: segStar})
		case strings.HasPrefix(s, "{") && strings.HasSuffix(s, "}"):
			name := s[1 : len(s)-1]
			if !ValidParamName(name) {
				return nil, fmt.Errorf("path parameter %q: want a name of letters, digits and _", s)
			}
			if names[name] {
				return nil, fmt.Errorf("path parameter {%s} appears twice", name)
			}
			names[name] = true
			pat.segs = append(pat.segs, patSeg{kind: segParam, text: name})
		default:
			if strings.ContainsAny(s, "{}*") {
				return nil, fmt.Errorf("segment %q: {name}, * and ** stand for whole segments only", s)
			}
			dec, _, err := Normalize("/" + s)
			if err != nil || dec != "/"+s {
				return nil, fmt.Errorf("segment %q: write path patterns decoded and clean (no %%, ;, \\, dot segments or trailing dots)", s)
			}
			pat.segs = append(pat.segs, patSeg{kind: segLit, text: s})
		}
	}
	return pat, nil
}

// String is the pattern as written.
func (p *Pattern) String() string { return p.src }

// Params lists the names of the pattern's {name} segments, in order.
func (p *Pattern) Params() []string {
	var out []string
	for _, s := range p.segs {
		if s.kind == segParam {
			out = append(out, s.text)
		}
	}
	return out
}

// LiteralPrefix lists the literal segments that start the pattern, up to
// its first {name}, * or ** ("/api/customers/{id}" gives api, customers):
// the collection a route serves, for lint.
func (p *Pattern) LiteralPrefix() []string {
	var out []string
	for _, s := range p.segs {
		if s.kind != segLit {
			break
		}
		out = append(out, s.text)
	}
	return out
}

// ValidParamName reports whether s may name a {param}: letters, digits and
// _, not starting with a digit.
func ValidParamName(s string) bool {
	if s == "" || s[0] >= '0' && s[0] <= '9' {
		return false
	}
	for _, c := range s {
		if !(c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// Match matches the segments of a normalised path (Normalize);
// params receives the {name} captures. A pattern with several ** is matched
// with a memo of failed positions, so that a long path cannot make matching
// explode.
func (p *Pattern) Match(segs []string, params map[string]string) bool {
	if p.rests <= 1 {
		return matchSegs(p.segs, segs, params)
	}
	m := &memoMatch{pat: p.segs, segs: segs, params: params, failed: make([]bool, (len(p.segs)+1)*(len(segs)+1))}
	return m.run(0, 0)
}

type memoMatch struct {
	pat    []patSeg
	segs   []string
	params map[string]string
	failed []bool // by pattern index * (len(segs)+1) + segment index
	steps  int    // states computed (each at most once)
}

func (m *memoMatch) run(pi, si int) bool {
	slot := pi*(len(m.segs)+1) + si
	if m.failed[slot] {
		return false
	}
	m.steps++
	ok := m.step(pi, si)
	if !ok {
		m.failed[slot] = true
	}
	return ok
}

func (m *memoMatch) step(pi, si int) bool {
	if pi == len(m.pat) {
		return si == len(m.segs)
	}
	ps := m.pat[pi]
	if ps.kind == segRest {
		for j := len(m.segs); j >= si; j-- {
			if m.run(pi+1, j) {
				return true
			}
		}
		return false
	}
	if si == len(m.segs) {
		return false
	}
	switch ps.kind {
	case segLit:
		if !literalMatches(ps.text, m.segs[si], si == len(m.segs)-1) {
			return false
		}
	case segParam:
		m.params[ps.text] = m.segs[si]
	}
	return m.run(pi+1, si+1)
}

func matchSegs(pat []patSeg, segs []string, params map[string]string) bool {
	for i, ps := range pat {
		switch ps.kind {
		case segRest:
			rest := pat[i+1:]
			for j := len(segs); j >= 0; j-- {
				if matchSegs(rest, segs[j:], params) {
					return true
				}
			}
			return false
		}
		if len(segs) == 0 {
			return false
		}
		switch ps.kind {
		case segLit:
			if !literalMatches(ps.text, segs[0], len(segs) == 1) {
				return false
			}
		case segParam:
			if params != nil {
				params[ps.text] = segs[0]
			}
		}
		segs = segs[1:]
	}
	return len(segs) == 0
}

// literalMatches compares a literal pattern segment with a request
// segment. The last segment of the path also matches with a format suffix
// ("customers.json", "customers.xml"): Rails formats and Spring's suffix
// pattern matching route it like "customers", so it must meet that route
// (its rewriting, its roles), never fall to a broader one.
func literalMatches(lit, seg string, last bool) bool {
	if equalFoldSegment(lit, seg) {
		return true
	}
	if !last || len(seg) <= len(lit)+1 || seg[len(lit)] != '.' {
		return false
	}
	ext := seg[len(lit)+1:]
	if len(ext) > 10 {
		return false
	}
	for i := 0; i < len(ext); i++ {
		c := ext[i] | 0x20
		if !('a' <= c && c <= 'z' || '0' <= ext[i] && ext[i] <= '9') {
			return false
		}
	}
	return equalFoldSegment(lit, seg[:len(lit)])
}

// equalFoldSegment compares path segments without case, as Windows and IIS
// servers do (Unicode simple case folding, so "Übersicht" is "übersicht").
func equalFoldSegment(a, b string) bool {
	for i := 0; i < len(a); i++ {
		if a[i] >= 0x80 {
			return strings.EqualFold(a, b)
		}
	}
	for i := 0; i < len(b); i++ {
		if b[i] >= 0x80 {
			return strings.EqualFold(a, b)
		}
	}
	return EqualFoldASCII(a, b)
}

// EqualFoldASCII compares ASCII letters without case and every other byte
// exactly: how route matching compares names and values that servers read
// case-insensitively (query keys, header names and values).
func EqualFoldASCII(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// Covers reports whether p matches every path q matches (for lint).
func (p *Pattern) Covers(q *Pattern) bool { return coverSegs(p.segs, q.segs) }

func coverSegs(a, b []patSeg) bool {
	if len(a) == 0 {
		return len(b) == 0
	}
	switch a[0].kind {
	case segRest:
		for j := 0; j <= len(b); j++ {
			if coverSegs(a[1:], b[j:]) {
				return true
			}
		}
		return false
	}
	if len(b) == 0 || b[0].kind == segRest {
		return false
	}
	switch a[0].kind {
	case segLit:
		if b[0].kind != segLit || !equalFoldSegment(a[0].text, b[0].text) {
			return false
		}
	}
	return coverSegs(a[1:], b[1:])
}
