// Package hometest gives a test binary its own Caddy data and config
// directories (test support, imported only by tests).
//
// Without it, a guard that names no store opens the default
// <data dir>/crmguard/state.db under the user's home, shared with other
// test binaries that `go test ./...` runs at the same time and with a
// running demo: bbolt locks the file, so one of them waits and then fails
// with 503. Tests that set XDG_DATA_HOME themselves still do.
package hometest

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// Main runs a test binary's tests with XDG_DATA_HOME and XDG_CONFIG_HOME
// in a fresh temporary directory, removes it, and exits with the tests'
// code. Call it from TestMain; name (the package) goes into the
// directory's name.
func Main(m *testing.M, name string) {
	dir, err := os.MkdirTemp("", "crmguard-"+name+"-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "hometest: a temporary Caddy home:", err)
		os.Exit(2)
	}
	os.Setenv("XDG_DATA_HOME", filepath.Join(dir, "data"))
	os.Setenv("XDG_CONFIG_HOME", filepath.Join(dir, "config"))
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}
