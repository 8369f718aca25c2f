package rewrite

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// segKind is the kind of one path segment.
type segKind uint8

const (
	segKey     segKind = iota // a plain key (or an array index when numeric)
	segPattern                // a key with `*` / `?` wildcards
	segEach                   // `#`: every element of an array
	segAny                    // `**`: zero or more levels
)

// seg is one compiled path segment.
type seg struct {
	kind segKind
	key  string // segKey: the unescaped key; segPattern: the pattern, `\` escapes kept
	idx  int    // segKey: the array index the key names, -1 when not numeric
}

// gjsonModifiers are the modifier names gjson knows; a path segment starting
// with one of them after `@` is refused rather than read as a key.
var gjsonModifiers = []string{
	"this", "reverse", "ugly", "pretty", "valid", "flatten", "join", "keys", "values",
	"tostr", "fromstr", "group", "dig",
}

// ParsePath compiles a field path: the checked subset of gjson path syntax
// (`a.b`, `a.#.b`, `a.0`, `*` and `?` in keys matching every key they fit, `\`
// escapes such as `@odata\.etag` or `a\.b`), plus `**` for any depth (`**.key`).
// "@this" (or "") is the value itself. `#` stands alone for every element of
// an array (also last: gjson's element count is no field); a number names an
// array index and the object key of the same text. gjson modifiers
// (`@reverse`…), queries (`#(...)`), multipaths and pipes are refused with
// an error naming the part; a key that starts with `@` and is no modifier
// name (`@odata\.etag`) is a key.
func ParsePath(s string) (Path, error) {
	if s == "" || s == "@this" {
		return Path{}, nil
	}
	if !utf8.ValidString(s) {
		return Path{}, fmt.Errorf("rewrite: path %q is not valid UTF-8", s)
	}
	switch s[0] {
	case '[', '{':
		return Path{}, fmt.Errorf("rewrite: path %q: multipaths are not supported", s)
	case '.':
		if strings.HasPrefix(s, "..") {
			return Path{}, fmt.Errorf("rewrite: path %q: JSON-lines paths (`..`) are not supported", s)
		}
	}
	var segs []seg
	var raw strings.Builder // the segment with escapes kept (for patterns)
	var key strings.Builder // the segment unescaped
	wild, escapedAt := false, false
	flush := func(pos int) error {
		r, k := raw.String(), key.String()
		raw.Reset()
		key.Reset()
		defer func() { wild, escapedAt = false, false }()
		switch {
		case r == "":
			return fmt.Errorf("rewrite: path %q: empty key at byte %d (a stray or doubled `.`)", s, pos)
		case r == "**":
			segs = append(segs, seg{kind: segAny, idx: -1})
		case r == "#":
			segs = append(segs, seg{kind: segEach, idx: -1})
		case strings.HasPrefix(r, "#"):
			if strings.HasPrefix(r, "#(") {
				return fmt.Errorf("rewrite: path %q: queries such as %q are not supported: they cannot be enforced reliably", s, r)
			}
			return fmt.Errorf("rewrite: path %q: %q: `#` must stand alone (every array element); escape it as `\\#` for a key", s, r)
		case r[0] == '@' && !escapedAt:
			name := r[1:]
			if i := strings.IndexByte(name, ':'); i >= 0 {
				name = name[:i]
			}
			for _, m := range gjsonModifiers {
				if name == m {
					return fmt.Errorf("rewrite: path %q: gjson modifier %q is not supported; escape the `@` as `\\@` if it is a key", s, "@"+m)
				}
			}
			segs = append(segs, keySeg(k))
		case wild:
			segs = append(segs, seg{kind: segPattern, key: r, idx: -1})
		default:
			segs = append(segs, keySeg(k))
		}
		return nil
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch c {
		case '\\':
			if i+1 >= len(s) {
				return Path{}, fmt.Errorf("rewrite: path %q ends with a lone `\\`", s)
			}
			_, n := utf8.DecodeRuneInString(s[i+1:])
			if raw.Len() == 0 && s[i+1] == '@' {
				escapedAt = true
			}
			raw.WriteString(s[i : i+1+n])
			key.WriteString(s[i+1 : i+1+n])
			i += n
		case '.':
			if err := flush(i); err != nil {
				return Path{}, err
			}
		case '|':
			return Path{}, fmt.Errorf("rewrite: path %q: pipes (`|`) are not supported", s)
		case '*', '?':
			wild = true
			raw.WriteByte(c)
			key.WriteByte(c)
		default:
			raw.WriteByte(c)
			key.WriteByte(c)
		}
	}
	if err := flush(len(s)); err != nil {
		return Path{}, err
	}
	if segs[len(segs)-1].kind == segAny {
		return Path{}, fmt.Errorf("rewrite: path %q: `**` must be followed by a key", s)
	}
	return Path{raw: s, segs: segs}, nil
}

// keySeg is a plain-key segment; a key of decimal digits also names that
// array index, as in gjson.
func keySeg(k string) seg {
	sg := seg{kind: segKey, key: k, idx: -1}
	if len(k) > 0 && len(k) <= 9 && (k == "0" || k[0] != '0') {
		n := 0
		for i := 0; i < len(k); i++ {
			if k[i] < '0' || k[i] > '9' {
				return sg
			}
			n = n*10 + int(k[i]-'0')
		}
		sg.idx = n
	}
	return sg
}

// Display returns the path written with only the escapes its reading needs,
// for people: `**.id\_card` (a rule file's second key for one path) is
// `**.id_card`, while `a\.b` (the key "a.b") stays apart from `a.b`. Paths
// that read alike display alike; the result parses to the same path.
func (p Path) Display() string {
	if len(p.segs) == 0 {
		return "@this"
	}
	var b strings.Builder
	for i, sg := range p.segs {
		if i > 0 {
			b.WriteByte('.')
		}
		switch sg.kind {
		case segAny:
			b.WriteString("**")
		case segEach:
			b.WriteByte('#')
		case segPattern:
			// The pattern keeps its escapes: drop the ones of runes that
			// mean nothing unescaped (matchPattern reads `\x` as x).
			for j := 0; j < len(sg.key); j++ {
				c := sg.key[j]
				if c == '\\' && j+1 < len(sg.key) {
					if e := sg.key[j+1]; strings.IndexByte(`\.*?|`, e) >= 0 || j == 0 && strings.IndexByte("#@[{", e) >= 0 {
						b.WriteByte('\\')
					}
					j++
					c = sg.key[j]
				}
				b.WriteByte(c)
			}
		default:
			for j, r := range sg.key {
				esc := strings.ContainsRune(`\.*?|`, r)
				if j == 0 {
					switch r {
					case '#':
						esc = true
					case '[', '{':
						esc = esc || i == 0
					case '@':
						name, _, _ := strings.Cut(sg.key[1:], ":")
						for _, m := range gjsonModifiers {
							esc = esc || name == m
						}
					}
				}
				if esc {
					b.WriteByte('\\')
				}
				b.WriteRune(r)
			}
		}
	}
	return b.String()
}

// MustParsePath is ParsePath that panics on error, for tests and constants.
func MustParsePath(s string) Path {
	p, err := ParsePath(s)
	if err != nil {
		panic(err)
	}
	return p
}

// plain reports whether the path has only keys and indexes.
func (p Path) plain() bool {
	for _, sg := range p.segs {
		if sg.kind != segKey {
			return false
		}
	}
	return true
}

// matchPattern reports whether key matches the wildcard pattern pat (`*` any
// run of runes, `?` one rune, `\` escapes the next rune).
func matchPattern(pat, key string) bool {
	// Iterative glob with one backtrack point: linear in practice.
	px, kx := 0, 0
	starP, starK := -1, 0
	for kx < len(key) || px < len(pat) {
		if px < len(pat) {
			c := pat[px]
			switch c {
			case '*':
				starP, starK = px, kx
				px++
				continue
			case '?':
				if kx < len(key) {
					_, n := utf8.DecodeRuneInString(key[kx:])
					px++
					kx += n
					continue
				}
			default:
				pn := 1
				if c == '\\' && px+1 < len(pat) {
					px++
				}
				_, pn = utf8.DecodeRuneInString(pat[px:])
				if kx+pn <= len(key) && pat[px:px+pn] == key[kx:kx+pn] {
					px += pn
					kx += pn
					continue
				}
			}
		}
		if starP >= 0 && starK < len(key) {
			_, n := utf8.DecodeRuneInString(key[starK:])
			starK += n
			px, kx = starP+1, starK
			continue
		}
		return false
	}
	return true
}
