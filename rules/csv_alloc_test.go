// The race detector makes sync.Pool drop a random share of what is put
// back, so allocation counts that rely on warm pools mean nothing under
// -race; this test runs in the plain `go test ./...` pass.

//go:build !race

package rules

import (
	"fmt"
	"net/http"
	"runtime"
	"testing"
)

// TestCSVExportAllocationsDoNotGrowWithRows holds the table rewriter to
// allocations per export that do not depend on the number of rows: rows
// are judged by native predicates reading cells in place, and nothing is
// allocated per row or per cell (the output buffer is reused, as the
// guard's pool does). It holds with the pools warm and after a garbage
// collection has emptied them.
func TestCSVExportAllocationsDoNotGrowWithRows(t *testing.T) {
	s := mustLoad(t, csvRules)
	u := &User{ID: "zhang", Roles: []string{"sales"}}
	h := http.Header{"Content-Type": {csvType}}
	allocs := func(rows int, cold bool) float64 {
		doc := csvExport(rows)
		var out []byte
		export := func() {
			if cold {
				runtime.GC() // twice: a pool keeps its items through one
				runtime.GC()
			}
			d := s.Decide(u, request("GET", "/api/customers/export"))
			var err error
			out, _, err = d.Rewrite(out[:0], 200, h, doc)
			if err != nil {
				t.Fatal(err)
			}
		}
		export() // size the output buffer
		return testing.AllocsPerRun(5, export)
	}
	for _, cold := range []bool{false, true} {
		pools := "warm"
		if cold {
			pools = "emptied"
		}
		small := allocs(300, cold)
		for _, rows := range []int{3000, 30000} {
			t.Run(fmt.Sprintf("an export of %d rows allocates as often as one of 300 with the pools %s", rows, pools), func(t *testing.T) {
				if got := allocs(rows, cold); got > small {
					t.Fatalf("%d rows: %.0f allocations per export, 300 rows: %.0f", rows, got, small)
				}
			})
		}
	}
}
