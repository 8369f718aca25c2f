package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCIRunsTheREADMETestCommand keeps .ci/run and the README's quickstart
// in step: CI must run exactly the test command the README gives.
func TestCIRunsTheREADMETestCommand(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	ci, err := os.ReadFile(filepath.Join("..", ".ci", "run"))
	if err != nil {
		t.Fatal(err)
	}
	var cmds []string
	blocks := strings.Split(string(readme), "```sh\n")
	for _, b := range blocks[1:] {
		cmd, _, _ := strings.Cut(b, "\n```")
		cmds = append(cmds, strings.TrimSpace(cmd))
	}
	if len(cmds) < 2 {
		t.Fatalf("the README's quickstart needs two commands, found %d", len(cmds))
	}
	if cmds[0] != "go run ./cmd/crmguard demo" {
		t.Errorf("the first quickstart command is %q", cmds[0])
	}
	test := cmds[1]
	if !strings.HasPrefix(test, "go test ./...") {
		t.Errorf("the second quickstart command does not run the tests: %q", test)
	}
	lines := strings.Split(strings.TrimSpace(string(ci)), "\n")
	if last := lines[len(lines)-1]; last != test {
		t.Errorf(".ci/run ends with\n  %s\nbut the README's test command is\n  %s", last, test)
	}
	if !strings.Contains(string(ci), "set -euo pipefail") || !strings.Contains(string(ci), "CI=true") {
		t.Errorf(".ci/run must use set -euo pipefail and CI=true")
	}
}
