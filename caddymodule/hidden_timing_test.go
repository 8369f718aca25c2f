//go:build !race

package caddymodule

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// The race detector slows the buffered path (a hidden record is read and
// judged) more than the refused one, several times over: timing is
// measured in the build that runs in production.

// TestHiddenAndMissingTakeTheSameTime compares the guard's time for a
// hidden record (buffered, rewritten until visible says no) with a missing
// one (the CRM's 404, refused before buffering), against the same
// in-process CRM: the median difference within adjacent pairs must be less
// than a tenth of a millisecond, far below the variation of any network
// between a client and the proxy. The CRM's own time to find a record or
// not is outside the proxy (docs/security.md).
func TestHiddenAndMissingTakeTheSameTime(t *testing.T) {
	if testing.Short() {
		t.Skip("timing samples are skipped in -short")
	}
	g, _ := newRulesGuard(t, hiddenRules, zhang, false)
	crm := crmRecords()
	const n = 400
	timed := func(path string) time.Duration {
		r := httptest.NewRequest(http.MethodGet, path, nil)
		r.Header.Set("Accept", "application/json")
		start := time.Now()
		rec := serveCRM(t, g, r, crm)
		d := time.Since(start)
		if rec.Code != 404 {
			t.Fatalf("%s: %d", path, rec.Code)
		}
		return d
	}
	// Adjacent pairs, the order alternating: a load spike on a shared
	// machine slows both of a pair, so the median of the pairs'
	// differences measures the guard, not the machine.
	var hidden, missing, pairs []time.Duration
	for i := 0; i < n; i++ {
		var h, m time.Duration
		if i%2 == 0 {
			h, m = timed("/api/customers/2"), timed("/api/customers/404")
		} else {
			m, h = timed("/api/customers/404"), timed("/api/customers/2")
		}
		hidden, missing, pairs = append(hidden, h), append(missing, m), append(pairs, h-m)
	}
	mh, mm := median(hidden), median(missing)
	diff := median(pairs)
	if diff < 0 {
		diff = -diff
	}
	t.Logf("%d pairs: median hidden %v, missing %v, median difference within a pair %v", n, mh, mm, diff)
	if diff > 100*time.Microsecond {
		t.Errorf("hidden (median %v) and missing (median %v) differ by %v within a pair (median of %d), more than 100µs", mh, mm, diff, n)
	}
}
