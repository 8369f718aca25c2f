package auditcli

import (
	"bufio"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/tidwall/gjson"

	"github.com/crmguard/crmguard/caddymodule/auditlog"
)

// benchEvents is the size of the generated log; CRMGUARD_AUDIT_BENCH_EVENTS
// changes it (the figure is 1,000,000 events, about 500 MB).
func benchEvents() int {
	if n, err := strconv.Atoi(os.Getenv("CRMGUARD_AUDIT_BENCH_EVENTS")); err == nil && n > 0 {
		return n
	}
	return 200_000
}

// BenchmarkReport compares `audit report` over a generated log with
// gjson.Valid over each line of the same file, read the same way, in the
// same run (both from the page cache after the first pass).
func BenchmarkReport(b *testing.B) {
	n := benchEvents()
	path := filepath.Join(b.TempDir(), "audit.jsonl")
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	if err := newGenerator(1, 200, nil).writeLog(w, n); err != nil {
		b.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		b.Fatal(err)
	}
	f.Close()
	fi, _ := os.Stat(path)
	size := fi.Size()
	b.Logf("%d events, %d MB, %d bytes per event", n, size>>20, size/int64(n))

	valid := func(b *testing.B) {
		r, err := auditlog.Open(path)
		if err != nil {
			b.Fatal(err)
		}
		lines := 0
		for {
			line, ok := r.Next()
			if !ok {
				break
			}
			if gjson.ValidBytes(line) {
				lines++
			}
		}
		r.Close()
		if lines != n {
			b.Fatalf("%d valid lines, want %d", lines, n)
		}
	}
	report := func(b *testing.B) {
		r, err := BuildReport(genOptions, []string{path})
		if err != nil {
			b.Fatal(err)
		}
		if r.Events != int64(n) {
			b.Fatalf("%d events, want %d", r.Events, n)
		}
	}
	b.Run("gjson.Valid", func(b *testing.B) {
		b.SetBytes(size)
		b.ReportAllocs()
		for b.Loop() {
			valid(b)
		}
	})
	b.Run("report", func(b *testing.B) {
		b.SetBytes(size)
		b.ReportAllocs()
		var heap uint64
		for b.Loop() {
			report(b)
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			heap = max(heap, ms.HeapInuse)
		}
		b.ReportMetric(float64(heap)/(1<<20), "heap-MiB")
	})
	// On a shared machine the two runs above may see different loads: this
	// one times both in each iteration and compares the best of each.
	b.Run("paired", func(b *testing.B) {
		b.SetBytes(2 * size)
		bestValid, bestReport := time.Duration(1<<62), time.Duration(1<<62)
		for b.Loop() {
			t0 := time.Now()
			valid(b)
			t1 := time.Now()
			report(b)
			bestValid, bestReport = min(bestValid, t1.Sub(t0)), min(bestReport, time.Since(t1))
		}
		b.ReportMetric(float64(bestValid.Milliseconds()), "valid-ms")
		b.ReportMetric(float64(bestReport.Milliseconds()), "report-ms")
		b.ReportMetric(float64(bestReport)/float64(bestValid), "report/valid")
	})
}
