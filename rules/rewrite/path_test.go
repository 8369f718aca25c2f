package rewrite

import (
	"reflect"
	"strings"
	"testing"
)

func TestParsePath(t *testing.T) {
	ok := []struct {
		name, path string
		want       []seg
	}{
		{"a plain key is one segment", "phone", []seg{{segKey, "phone", -1}}},
		{"dots separate keys", "address.street", []seg{{segKey, "address", -1}, {segKey, "street", -1}}},
		{"a hash stands for every element", "contacts.#.mobile", []seg{{segKey, "contacts", -1}, {segEach, "", -1}, {segKey, "mobile", -1}}},
		{"a number is a key that also names an index", "tags.0", []seg{{segKey, "tags", -1}, {segKey, "0", 0}}},
		{"a leading zero is no index", "a.01", []seg{{segKey, "a", -1}, {segKey, "01", -1}}},
		{"a star makes a pattern", "bank_*", []seg{{segPattern, "bank_*", -1}}},
		{"a question mark makes a pattern", "ph?ne", []seg{{segPattern, "ph?ne", -1}}},
		{"a double star is any depth", "**.password", []seg{{segAny, "", -1}, {segKey, "password", -1}}},
		{"an escaped dot stays in the key", `@odata\.etag`, []seg{{segKey, "@odata.etag", -1}}},
		{"an escaped dot in the middle of a path", `meta.a\.b.c`, []seg{{segKey, "meta", -1}, {segKey, "a.b", -1}, {segKey, "c", -1}}},
		{"an escaped star is a plain key", `a\*b`, []seg{{segKey, "a*b", -1}}},
		{"an escaped at sign names a key that looks like a modifier", `\@reverse`, []seg{{segKey, "@reverse", -1}}},
		{"an escaped hash is a plain key", `\#`, []seg{{segKey, "#", -1}}},
		{"non-ASCII keys are kept", "地址.街道", []seg{{segKey, "地址", -1}, {segKey, "街道", -1}}},
	}
	for _, c := range ok {
		t.Run(c.name, func(t *testing.T) {
			p, err := ParsePath(c.path)
			if err != nil {
				t.Fatal(err)
			}
			if len(p.segs) != len(c.want) {
				t.Fatalf("ParsePath(%q) = %+v, want %+v", c.path, p.segs, c.want)
			}
			for i := range c.want {
				if p.segs[i] != c.want[i] {
					t.Fatalf("ParsePath(%q) segment %d = %+v, want %+v", c.path, i, p.segs[i], c.want[i])
				}
			}
			if p.String() != c.path {
				t.Fatalf("String() = %q, want %q", p.String(), c.path)
			}
		})
	}
	t.Run("@this and the empty path are the value itself", func(t *testing.T) {
		for _, s := range []string{"@this", ""} {
			p, err := ParsePath(s)
			if err != nil || len(p.segs) != 0 || p.String() != "@this" {
				t.Fatalf("ParsePath(%q) = %+v, %v", s, p, err)
			}
		}
	})
	bad := []struct {
		name, path, says string
	}{
		{"a modifier is refused", "@reverse", "modifier"},
		{"a modifier inside a path is refused", "list.@reverse", "modifier"},
		{"a modifier with arguments is refused", `@dig:phone`, "modifier"},
		{"a query is refused", `list.#(age>40).name`, "queries"},
		{"a query for all matches is refused", `list.#(age>40)#`, "queries"},
		{"a multipath in brackets is refused", `[name,phone]`, "multipath"},
		{"a multipath in braces is refused", `{name,phone}`, "multipath"},
		{"a pipe is refused", `list|0`, "pipe"},
		{"an empty key is refused", `a..b`, "empty key"},
		{"a trailing dot is refused", `a.`, "empty key"},
		{"a lone backslash at the end is refused", `a\`, "lone"},
		{"a double star at the end is refused", `a.**`, "followed by a key"},
		{"a hash with more text is refused", `a.#b`, "stand alone"},
		{"JSON lines are refused", `..0`, "JSON-lines"},
		{"invalid UTF-8 is refused", "a\xff", "UTF-8"},
	}
	for _, c := range bad {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParsePath(c.path)
			if err == nil {
				t.Fatalf("ParsePath(%q) accepted", c.path)
			}
			if !strings.HasPrefix(err.Error(), "rewrite: ") || !strings.Contains(err.Error(), c.says) {
				t.Fatalf("ParsePath(%q) error %q does not say %q", c.path, err, c.says)
			}
		})
	}
}

func TestMatchPattern(t *testing.T) {
	cases := []struct {
		pat, key string
		want     bool
	}{
		{"*", "", true},
		{"*", "anything", true},
		{"bank_*", "bank_account", true},
		{"bank_*", "bank", false},
		{"*_id", "tax_id", true},
		{"*_id", "tax_idx", false},
		{"ph?ne", "phone", true},
		{"ph?ne", "phne", false},
		{"?", "张", true},
		{"张?", "张伟", true},
		{"a*b*c", "axxbyyc", true},
		{"a*b*c", "axxbyy", false},
		{`a\*`, "a*", true},
		{`a\*`, "ab", false},
		{`\?`, "x", false},
	}
	for _, c := range cases {
		name := "pattern " + c.pat + " on " + c.key
		if c.want {
			name += " matches"
		} else {
			name += " does not match"
		}
		t.Run(name, func(t *testing.T) {
			if got := matchPattern(c.pat, c.key); got != c.want {
				t.Fatalf("matchPattern(%q, %q) = %v", c.pat, c.key, got)
			}
		})
	}
}

func TestPathDisplay(t *testing.T) {
	cases := []struct {
		name, path, want string
	}{
		{"an escape a rule file adds for a second key is dropped", `**.id\_card`, `**.id_card`},
		{"a path without escapes is unchanged", `**.id_card`, `**.id_card`},
		{"an escaped dot inside a key stays", `a\.b`, `a\.b`},
		{"a dot between keys stays unescaped", `a.b`, `a.b`},
		{"an escaped star is a key, not a pattern", `attributes.\*`, `attributes.\*`},
		{"a pattern keeps its wildcards and drops needless escapes", `attributes.\r*revenue`, `attributes.r*revenue`},
		{"a pattern keeps the escapes of a literal star", `a\*b*`, `a\*b*`},
		{"a pattern keeps an escaped backslash", `a\\*`, `a\\*`},
		{"a key that names a gjson modifier keeps its escape", `\@reverse`, `\@reverse`},
		{"a key with an at sign that is no modifier needs no escape", `\@odata\.etag`, `@odata\.etag`},
		{"a key starting with a hash keeps its escape", `a.\#x`, `a.\#x`},
		{"every element and any depth are written as they are", `a.#.**.b`, `a.#.**.b`},
		{"a backslash key stays escaped", `a\\b`, `a\\b`},
		{"a first key starting with a bracket keeps its escape", `\[a`, `\[a`},
		{"the record itself is @this", ``, `@this`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := MustParsePath(c.path)
			got := p.Display()
			if got != c.want {
				t.Fatalf("Display of %q = %q, want %q", c.path, got, c.want)
			}
			q, err := ParsePath(got)
			if err != nil {
				t.Fatalf("the displayed %q does not parse: %v", got, err)
			}
			if q.Display() != got {
				t.Errorf("the displayed %q displays as %q once parsed", got, q.Display())
			}
			if p.plain() && !reflect.DeepEqual(q.segs, p.segs) {
				t.Errorf("the displayed %q reads %+v, the path %q reads %+v", got, q.segs, c.path, p.segs)
			}
		})
	}
	t.Run("paths that read differently display differently", func(t *testing.T) {
		seen := map[string]string{}
		for _, s := range []string{`a.b`, `a\.b`, `a*`, `a\*`, `#`, `\#`, `**.x`, `\*\*.x`, `@odata`, `\@this`, `a\\`, `a\\\.b`} {
			d := MustParsePath(s).Display()
			if prev, ok := seen[d]; ok {
				t.Errorf("%q and %q both display as %q", prev, s, d)
			}
			seen[d] = s
		}
	})
}
