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
// in-process CRM: the medians of interleaved samples must differ by less
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
	var hidden, missing []time.Duration
	for i := 0; i < 2*n; i++ {
		path := "/api/customers/2"
		if i%2 == 1 {
			path = "/api/customers/404"
		}
		r := httptest.NewRequest(http.MethodGet, path, nil)
		r.Header.Set("Accept", "application/json")
		start := time.Now()
		rec := serveCRM(t, g, r, crm)
		d := time.Since(start)
		if rec.Code != 404 {
			t.Fatalf("%s: %d", path, rec.Code)
		}
		if i%2 == 0 {
			hidden = append(hidden, d)
		} else {
			missing = append(missing, d)
		}
	}
	mh, mm := median(hidden), median(missing)
	diff := mh - mm
	if diff < 0 {
		diff = -diff
	}
	t.Logf("median over %d requests each: hidden %v, missing %v, difference %v", n, mh, mm, diff)
	if diff > 100*time.Microsecond {
		t.Errorf("hidden %v and missing %v differ by %v, more than 100µs", mh, mm, diff)
	}
}
