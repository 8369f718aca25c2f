package main

import (
	"io/fs"
	"os"
	"os/exec"
	"path"
	"slices"
	"strings"
	"testing"
	"testing/fstest"
)

// modulePath is the repository's Go module.
const modulePath = "github.com/crmguard/crmguard"

// testPackageDeps returns the packages among deps (import paths) that are
// test code: the end-to-end tests in integration/ and the module's test
// helper packages (named like httptest: redistest, ...).
func testPackageDeps(deps []string) []string {
	var bad []string
	for _, p := range deps {
		rel, ok := strings.CutPrefix(p, modulePath+"/")
		if !ok {
			continue
		}
		if rel == "integration" || strings.HasPrefix(rel, "integration/") || strings.HasSuffix(path.Base(rel), "test") {
			bad = append(bad, p)
		}
	}
	return bad
}

// integrationLayoutViolations returns what in the integration folder is
// neither a _test.go file nor under testdata/: a non-test .go file (code
// another package could import) or another folder (another package).
func integrationLayoutViolations(fsys fs.FS) ([]string, error) {
	var bad []string
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		switch {
		case p == ".":
		case d.IsDir() && p == "testdata":
			return fs.SkipDir
		case d.IsDir():
			bad = append(bad, p+"/")
			return fs.SkipDir
		case strings.HasSuffix(p, ".go") && !strings.HasSuffix(p, "_test.go"):
			bad = append(bad, p)
		}
		return nil
	})
	return bad, err
}

func TestLayoutCheckersFindWhatBreaksTheRule(t *testing.T) {
	t.Run("an integration package among the dependencies is found", func(t *testing.T) {
		got := testPackageDeps([]string{"fmt", modulePath + "/rules", modulePath + "/integration", modulePath + "/examples/demo"})
		if want := []string{modulePath + "/integration"}; !slices.Equal(got, want) {
			t.Errorf("got %v, want %v", got, want)
		}
	})
	t.Run("a test helper package among the dependencies is found", func(t *testing.T) {
		got := testPackageDeps([]string{modulePath + "/caddymodule/session/redistest", "net/http/httptest"})
		if want := []string{modulePath + "/caddymodule/session/redistest"}; !slices.Equal(got, want) {
			t.Errorf("got %v, want %v", got, want)
		}
	})
	tests := []struct {
		name string
		fsys fstest.MapFS
		want []string
	}{
		{"test files and testdata are the rule", fstest.MapFS{
			"a_test.go":           {},
			"testdata/rules.yaml": {},
			"testdata/x/y.go":     {},
		}, nil},
		{"a non-test Go file is found", fstest.MapFS{
			"a_test.go":     {},
			"demo_stack.go": {},
		}, []string{"demo_stack.go"}},
		{"a folder other than testdata is found", fstest.MapFS{
			"proxy/testdata/rules.yaml": {},
		}, []string{"proxy/"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := integrationLayoutViolations(tt.fsys)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

// TestProductionImportsNoTestCode keeps the layout rule of
// ARCHITECTURE.md true: the binary links no test package, and integration/
// holds only tests and their testdata (the demo lives in examples/demo).
func TestProductionImportsNoTestCode(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command, needed to list the binary's packages: %v", err)
	}
	out, err := exec.Command(goTool, "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps ./cmd/crmguard: %v", err)
	}
	deps := strings.Fields(string(out))
	if !slices.Contains(deps, modulePath+"/rules") {
		t.Fatalf("go list -deps printed no %s/rules; the check would see nothing:\n%s", modulePath, out)
	}
	if bad := testPackageDeps(deps); len(bad) > 0 {
		t.Errorf("cmd/crmguard imports test code: %v", bad)
	}
	bad, err := integrationLayoutViolations(os.DirFS("../../integration"))
	if err != nil {
		t.Fatal(err)
	}
	if len(bad) > 0 {
		t.Errorf("integration/ holds %v; it may hold only _test.go files and testdata/ (shared code goes to examples/ or the package it belongs to)", bad)
	}
}
