package caddymodule

import (
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"
)

// documentedForgeableHeaders reads the header names docs/caddyfile.md
// promises to strip (step 4 of "What the guard does to every request"); a
// name ending in * is a prefix.
func documentedForgeableHeaders(t *testing.T) []string {
	t.Helper()
	doc, err := os.ReadFile("../docs/caddyfile.md")
	if err != nil {
		t.Fatal(err)
	}
	text := string(doc)
	var names []string
	for _, span := range [][2]string{
		{"Identity headers a client might forge are removed:", "plus `strip_headers`"},
		{"on another path than the one judged:", "Request trailers"},
	} {
		_, rest, ok := strings.Cut(text, span[0])
		part, _, ok2 := strings.Cut(rest, span[1])
		if !ok || !ok2 {
			t.Fatalf("docs/caddyfile.md no longer has the passage %q ... %q", span[0], span[1])
		}
		for _, m := range regexp.MustCompile("`([A-Za-z][A-Za-z0-9_*-]+)`").FindAllStringSubmatch(part, -1) {
			names = append(names, m[1])
		}
	}
	if len(names) < 20 {
		t.Fatalf("found only %d header names in docs/caddyfile.md: %v", len(names), names)
	}
	return names
}

func TestTheDocumentedForgeableHeadersAreStripped(t *testing.T) {
	s := newHeaderScrubber(nil, nil)
	for _, doc := range documentedForgeableHeaders(t) {
		name := doc
		if p, ok := strings.CutSuffix(doc, "*"); ok {
			name = p + "Anything"
		}
		for _, spelling := range []string{name, strings.ToLower(name), strings.ReplaceAll(name, "-", "_")} {
			t.Run(doc+" written "+spelling+" is stripped", func(t *testing.T) {
				h := http.Header{spelling: {"admin"}, "Accept": {"application/json"}}
				s.scrub(h)
				if _, ok := h[spelling]; ok {
					t.Errorf("%s reached the CRM", spelling)
				}
				if h.Get("Accept") == "" {
					t.Error("Accept was stripped too")
				}
			})
		}
	}
}

func TestHeadersOutsideTheForgeableFamiliesAreKept(t *testing.T) {
	s := newHeaderScrubber(nil, nil)
	for _, name := range []string{"X-Forwarded-For", "X-Forwarded-Proto", "X-Ms-Request-Id", "X-Goog-Api-Key", "X-Amzn-Trace-Id", "X-Request-Id", "Accept-Language"} {
		t.Run(name+" is kept", func(t *testing.T) {
			h := http.Header{name: {"v"}}
			s.scrub(h)
			if h.Get(name) != "v" {
				t.Errorf("%s was stripped", name)
			}
		})
	}
}

func TestEveryStrippedHeaderIsDocumented(t *testing.T) {
	documented := documentedForgeableHeaders(t)
	isDocumented := func(name string) bool {
		for _, d := range documented {
			if strings.EqualFold(strings.TrimSuffix(d, "*"), name) {
				return true
			}
		}
		return false
	}
	for _, name := range append(append([]string(nil), forgeableHeaders...), forgeablePrefixes...) {
		if !isDocumented(name) {
			t.Errorf("%s is stripped but docs/caddyfile.md does not name it (a prefix is written with a trailing *)", name)
		}
	}
}
