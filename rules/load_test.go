package rules

import (
	"errors"
	"os"
	"strings"
	"testing"
)

func loadExample(t testing.TB, opts ...LoadOption) *Set {
	t.Helper()
	data, err := os.ReadFile("testdata/example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if opts == nil {
		opts = []LoadOption{WithHashKey([]byte("test key"))}
	}
	s, err := Load("example.yaml", data, opts...)
	if err != nil {
		t.Fatalf("the example does not load:\n%v", err)
	}
	return s
}

func TestTheCompleteExampleLoads(t *testing.T) {
	s := loadExample(t)
	if got := len(s.Routes()); got != 7 {
		t.Errorf("routes = %d, want 7", got)
	}
	for _, w := range s.Warnings() {
		t.Logf("warning: %s", w)
	}
}

// mustFail loads src and returns the error text, failing when it loads.
func mustFail(t *testing.T, src string) string {
	t.Helper()
	_, err := Load("rules.yaml", []byte(src), WithHashKey([]byte("k")))
	if err == nil {
		t.Fatalf("loaded, want an error:\n%s", src)
	}
	var le *LoadError
	if !errors.As(err, &le) {
		t.Fatalf("error %T is not a *LoadError: %v", err, err)
	}
	return err.Error()
}

var _ = strings.Contains
