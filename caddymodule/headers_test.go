package caddymodule

import (
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// The hot path indexes header maps by constant names instead of calling
// http.Header's methods, which canonicalize the name on every call. A name
// written there in another case would silently miss the header.
func TestHeaderNamesIndexedDirectlyAreCanonical(t *testing.T) {
	direct := regexp.MustCompile(`(?:\bh\[|delete\(h, )"([^"]+)"`)
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	seen := 0
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range direct.FindAllStringSubmatch(string(src), -1) {
			seen++
			if c := http.CanonicalHeaderKey(m[1]); c != m[1] {
				t.Errorf("%s indexes a header map with %q; the canonical name is %q", f, m[1], c)
			}
		}
	}
	if seen == 0 {
		t.Fatal("no header map indexed by a constant name was found; the pattern is out of date")
	}
}
