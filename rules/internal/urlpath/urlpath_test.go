package urlpath

import (
	"errors"
	"net/url"
	"strings"
	"testing"
)

func TestPathsAreNormalisedOnceBeforeMatching(t *testing.T) {
	cases := []struct {
		name, in, want string
	}{
		{"a plain path stays as it is", "/api/customers", "/api/customers"},
		{"duplicate slashes collapse", "//api///customers", "/api/customers"},
		{"a trailing slash is dropped", "/api/customers/", "/api/customers"},
		{"dot segments resolve", "/api/./x/../customers", "/api/customers"},
		{"encoded dot segments resolve after decoding", "/api/x/%2e%2E/customers", "/api/customers"},
		{"percent escapes decode", "/api/%63ustomers", "/api/customers"},
		{"UTF-8 in the path decodes", "/api/%E5%AE%A2%E6%88%B7", "/api/客户"},
		{"the empty path is the root", "", "/"},
		{"the root stays the root", "/", "/"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, _, err := Normalize(c.in)
			if err != nil || got != c.want {
				t.Fatalf("Normalize(%q) = %q, %v; want %q", c.in, got, err, c.want)
			}
		})
	}
}

func TestPathsAServerCouldReadDifferentlyAreRefused(t *testing.T) {
	cases := []struct {
		name, in, why string
	}{
		{"an encoded slash", "/api/customers%2Fexport", "encoded \"/\""},
		{"an encoded slash in lower case", "/api/customers%2fexport", "encoded \"/\""},
		{"an encoded backslash", "/api/customers%5Cexport", "encoded \"\\\\\""},
		{"a raw backslash", "/api\\customers", "backslash"},
		{"a matrix parameter", "/api/customers;x=1/export", "';'"},
		{"an encoded semicolon", "/api/customers%3Bx/export", "';'"},
		{"an encoded NUL", "/api/customers/export%00", "control character"},
		{"an encoded newline", "/api/customers/export%0a", "control character"},
		{"double encoding of a slash", "/api/customers%252Fexport", "double encoding"},
		{"double encoding of dots", "/api/%252e%252e/admin", "double encoding"},
		{"an invalid escape", "/api/%zzcustomers", "invalid percent escape"},
		{"a truncated escape", "/api/customers%4", "invalid percent escape"},
		{"IIS %u escapes", "/api/%u0065xport", "invalid percent escape"},
		{"an overlong UTF-8 dot", "/api/%c0%ae%c0%ae/admin", "not valid UTF-8"},
		{"an encoded question mark", "/api/customers/export%3F.json", "encoded \"?\""},
		{"an encoded hash", "/api/customers/export%23x", "encoded \"#\""},
		{"a trailing dot that Windows drops", "/api/customers/export.", "ends in \".\""},
		{"a trailing space that Windows drops", "/api/customers/export%20", "ends in \" \""},
		{"dot segments above the root", "/../api/customers", "climbs above the root"},
		{"a path that does not start with a slash", "api/customers", "does not start with /"},
		{"a path of too many segments", "/" + strings.Repeat("a/", 300), "more than 256"},
		{"a fullwidth slash", "/api/customers%EF%BC%8Fexport", "best-fit"},
		{"a fullwidth full stop pair", "/api/%EF%BC%8E%EF%BC%8E/admin", "best-fit"},
		{"a division slash", "/api/customers%E2%88%95export", "best-fit"},
		{"a fullwidth letter", "/api/%EF%BD%83ustomers", "compatibility form"},
		{"a fullwidth digit", "/api/customers/%EF%BC%92", "compatibility form"},
		{"a ligature", "/api/cu%EF%AC%86omers", "compatibility form"},
		{"the Kelvin sign", "/api/%E2%84%AAeys", "compatibility form"},
		{"a circled letter", "/%E2%92%B6pi/customers", "compatibility form"},
		{"a mathematical bold letter", "/api/%F0%9D%90%9Customers", "compatibility form"},
		{"an ideographic space", "/api/customers%E3%80%80", "compatibility form"},
		{"a no-break space", "/api/customers%C2%A0", "compatibility form"},
	}
	for _, c := range cases {
		t.Run(c.name+" is refused", func(t *testing.T) {
			got, _, err := Normalize(c.in)
			if err == nil {
				t.Fatalf("Normalize(%q) = %q, want an error", c.in, got)
			}
			if !errors.Is(err, ErrAmbiguous) || !strings.Contains(err.Error(), c.why) {
				t.Fatalf("error %q does not say %q", err, c.why)
			}
		})
	}
}

func TestPathPatterns(t *testing.T) {
	cases := []struct {
		name, pattern, path string
		match               bool
		params              map[string]string
	}{
		{"a literal matches itself", "/a/b", "/a/b", true, nil},
		{"a literal ignores ASCII case", "/a/b", "/A/B", true, nil},
		{"a literal does not match a longer path", "/a/b", "/a/b/c", false, nil},
		{"{id} captures one segment", "/c/{id}", "/c/42", true, map[string]string{"id": "42"}},
		{"{id} keeps the segment's case and decoding", "/c/{id}", "/c/Ab%20c", true, map[string]string{"id": "Ab c"}},
		{"{id} does not match two segments", "/c/{id}", "/c/4/2", false, nil},
		{"{id} does not match nothing", "/c/{id}", "/c", false, nil},
		{"* matches one segment", "/c/*/x", "/c/9/x", true, nil},
		{"** matches the rest", "/api/**", "/api/a/b/c", true, nil},
		{"** matches nothing", "/api/**", "/api", true, nil},
		{"** in the middle", "/api/**/export", "/api/a/b/export", true, nil},
		{"** in the middle needs the tail", "/api/**/export", "/api/a/b", false, nil},
		{"two ** match around a literal", "/a/**/x/**/y", "/a/1/x/2/3/y", true, nil},
		{"two ** need their literals", "/a/**/x/**/y", "/a/1/x/2/3", false, nil},
		{"two ** capture the parameter of the match", "/a/**/{id}/x/**", "/a/1/7/x/2", true, map[string]string{"id": "7"}},
		{"non-ASCII literals match themselves", "/客户", "/客户", true, nil},
		{"non-ASCII literals ignore case as Windows does", "/api/Übersicht", "/api/%C3%BCbersicht", true, nil},
		{"non-ASCII literals do not match other letters", "/api/客户", "/api/客房", false, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, err := ParsePattern(c.pattern)
			if err != nil {
				t.Fatal(err)
			}
			_, segs, err := Normalize(c.path)
			if err != nil {
				t.Fatal(err)
			}
			params := map[string]string{}
			if got := p.Match(segs, params); got != c.match {
				t.Fatalf("match = %v, want %v", got, c.match)
			}
			for k, v := range c.params {
				if params[k] != v {
					t.Errorf("params[%s] = %q, want %q", k, params[k], v)
				}
			}
		})
	}
}

// FuzzNormalizePath: an accepted path is clean (no empty, "." or ".."
// segments, no character a server could read as a separator, a stop or an
// escape) and normalising it again changes nothing.
func FuzzNormalizePath(f *testing.F) {
	for _, s := range []string{"/api/customers", "//a/./b/../c/", "/a%2fb", "/a;b", "/%2e%2e/x", "/a%252f", "/客户/%E5%AE%A2", "/a/b%20", "/x%00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		got, segs, err := Normalize(in)
		if err != nil {
			return
		}
		if !strings.HasPrefix(got, "/") || strings.ContainsAny(got, ";\\%?#\x00") || strings.Contains(got, "//") {
			t.Fatalf("Normalize(%q) = %q", in, got)
		}
		for _, s := range segs {
			if s == "" || s == "." || s == ".." || strings.Contains(s, "/") {
				t.Fatalf("Normalize(%q) has segment %q", in, s)
			}
		}
		// The decoded path, escaped again, normalises to itself.
		again, _, err := Normalize((&url.URL{Path: got}).EscapedPath())
		if err != nil || again != got {
			t.Fatalf("Normalize(%q) = %q, but again gives %q, %v", in, got, again, err)
		}
	})
}

// TestALongPathCannotMakeMatchingExplode: with several ** in a pattern, a
// path of the longest accepted length that nearly matches computes each
// (pattern position, path position) state at most once.
func TestALongPathCannotMakeMatchingExplode(t *testing.T) {
	p, err := ParsePattern("/a/**/x/**/x/**/x/**/y")
	if err != nil {
		t.Fatal(err)
	}
	_, segs, err := Normalize("/a/" + strings.Repeat("x/", 250) + "z")
	if err != nil {
		t.Fatal(err)
	}
	m := &memoMatch{pat: p.segs, segs: segs, params: map[string]string{}, failed: make([]bool, (len(p.segs)+1)*(len(segs)+1))}
	if m.run(0, 0) {
		t.Fatal("matched a path without the final y")
	}
	if limit := (len(p.segs) + 1) * (len(segs) + 1); m.steps > limit {
		t.Fatalf("%d states computed, more than the %d that exist", m.steps, limit)
	}
	if p.Match(segs, map[string]string{}) {
		t.Fatal("match disagrees with the memo")
	}
}
