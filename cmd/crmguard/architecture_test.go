package main

import (
	"bufio"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// importRule is one row of the package table in docs/architecture.md:
// which module packages a package may import.
type importRule struct {
	// all is true for "everything" (with except naming the exceptions).
	all    bool
	except []string
	// allowed are module-relative package paths; "p/..." allows p's
	// sub-packages.
	allowed []string
}

// permits reports whether the rule lets a package import the
// module-relative package rel.
func (r importRule) permits(rel string) bool {
	if r.all {
		return !slices.Contains(r.except, rel)
	}
	for _, a := range r.allowed {
		if base, ok := strings.CutSuffix(a, "/..."); ok {
			if strings.HasPrefix(rel, base+"/") {
				return true
			}
			continue
		}
		if a == rel {
			return true
		}
	}
	return false
}

// backticked returns the `quoted` words of s in order.
func backticked(s string) []string {
	var out []string
	for {
		_, rest, ok := strings.Cut(s, "`")
		if !ok {
			return out
		}
		word, after, ok := strings.Cut(rest, "`")
		if !ok {
			return out
		}
		out = append(out, word)
		s = after
	}
}

// parseImportTable reads the "## Packages" table of docs/architecture.md:
// first column the package, last column what it may import.
func parseImportTable(text string) map[string]importRule {
	rules := map[string]importRule{}
	in := false
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "## ") {
			in = line == "## Packages"
			continue
		}
		if !in || !strings.HasPrefix(line, "|") {
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		if len(cells) < 3 {
			continue
		}
		pkgs := backticked(cells[0])
		if len(pkgs) != 1 {
			continue // the header and the separator
		}
		last := strings.TrimSpace(cells[len(cells)-1])
		var r importRule
		switch {
		case strings.HasPrefix(last, "everything"):
			r.all = true
			r.except = backticked(last)
		case last == "(none)":
		default:
			r.allowed = backticked(last)
		}
		rules[pkgs[0]] = r
	}
	return rules
}

func TestImportTableReading(t *testing.T) {
	table := parseImportTable("# x\n## Packages\n\n| package | owns | may import |\n| --- | --- | --- |\n" +
		"| `a` | things | `b`, `c/...` |\n| `b` | more | (none) |\n| `cmd` | all | everything except `integration` |\n## Next\n| `z` | no | `a` |\n")
	tests := []struct {
		name     string
		pkg, imp string
		want     bool
	}{
		{"a listed package may be imported", "a", "b", true},
		{"a sub-package of a /... entry may be imported", "a", "c/d", true},
		{"the /... entry does not allow the parent itself", "a", "c", false},
		{"an unlisted package may not be imported", "a", "d", false},
		{"(none) allows nothing", "b", "a", false},
		{"everything allows any package", "cmd", "a", true},
		{"everything except names its exceptions", "cmd", "integration", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, ok := table[tt.pkg]
			if !ok {
				t.Fatalf("no row for %s in %v", tt.pkg, table)
			}
			if got := r.permits(tt.imp); got != tt.want {
				t.Errorf("%s importing %s: got %v, want %v", tt.pkg, tt.imp, got, tt.want)
			}
		})
	}
	if _, ok := table["z"]; ok {
		t.Error("a row after the Packages section was read as part of it")
	}
}

// TestArchitectureTableMatchesImports keeps docs/architecture.md true:
// every package of the module has a row, and imports only what its row
// allows; the rule engine and the shared readers never import Caddy, and
// only the condition package imports cel-go.
func TestArchitectureTableMatchesImports(t *testing.T) {
	doc, err := os.ReadFile("../../docs/architecture.md")
	if err != nil {
		t.Fatal(err)
	}
	table := parseImportTable(string(doc))
	if len(table) < 10 {
		t.Fatalf("read only %d rows from docs/architecture.md's package table; the check would see nothing", len(table))
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command, needed to list the module's imports: %v", err)
	}
	cmd := exec.Command(goTool, "list", "-f", "{{.ImportPath}} {{join .Imports \" \"}}", "./...")
	cmd.Dir = "../.."
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list ./...: %v", err)
	}
	seen := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line)
		pkg, ok := strings.CutPrefix(fields[0], modulePath+"/")
		if !ok {
			continue
		}
		rule, ok := table[pkg]
		if !ok {
			t.Errorf("package %s has no row in docs/architecture.md's package table: add what it owns and what it may import", pkg)
			continue
		}
		seen++
		engine := strings.HasPrefix(pkg, "rules") || strings.HasPrefix(pkg, "internal/")
		for _, imp := range fields[1:] {
			if rel, ok := strings.CutPrefix(imp, modulePath+"/"); ok {
				if !rule.permits(rel) {
					t.Errorf("%s imports %s, which its row in docs/architecture.md does not allow", pkg, rel)
				}
				continue
			}
			switch {
			case engine && strings.HasPrefix(imp, "github.com/caddyserver/"):
				t.Errorf("%s imports Caddy (%s); the rule engine and the shared readers stay free of it", pkg, imp)
			case strings.HasPrefix(imp, "cel.dev/cel-go") && pkg != "rules/internal/cond":
				t.Errorf("%s imports cel-go (%s); conditions live in rules/internal/cond", pkg, imp)
			case (strings.HasPrefix(imp, "go.etcd.io/bbolt") || strings.HasPrefix(imp, "github.com/redis/go-redis")) && !strings.HasPrefix(pkg, "caddymodule/store"):
				t.Errorf("%s imports %s; state lives behind caddymodule/store", pkg, imp)
			}
		}
	}
	if seen < 10 {
		t.Fatalf("checked only %d packages; go list printed:\n%s", seen, out)
	}
}
