package caddymodule

import (
	"testing"

	"github.com/crmguard/crmguard/internal/hometest"
)

// TestMain runs this package's tests in their own Caddy home (hometest).
func TestMain(m *testing.M) { hometest.Main(m, "caddymodule") }
