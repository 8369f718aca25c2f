package integration

import (
	"fmt"
	"os"
	"testing"
)

// TestMain gives this test binary its own Caddy data and config
// directories. Without it, a guard that names no store opens the default
// <data dir>/crmguard/state.db under the user's home, shared with other
// test binaries that `go test ./...` runs at the same time and with a
// running demo: bbolt locks the file, so one of them waited and then
// failed with 503. Tests that set XDG_DATA_HOME themselves still do.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "crmguard-integration-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "TestMain: a temporary Caddy home:", err)
		os.Exit(2)
	}
	os.Setenv("XDG_DATA_HOME", dir+"/data")
	os.Setenv("XDG_CONFIG_HOME", dir+"/config")
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}
