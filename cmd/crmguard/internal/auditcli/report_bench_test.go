package auditcli

import (
	"bufio"
	"os"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"strconv"
	"sync"
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

// writeBenchLog writes n generated events to a file as the file sink
// with chain_key writes them (each line sealed with seq and chain) and
// returns its path and size. Whatever n, the log has the same 200 users
// and 400 records.
func writeBenchLog(b *testing.B, n int) (string, int64) {
	b.Helper()
	path := filepath.Join(b.TempDir(), "audit.jsonl")
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	g := newGenerator(1, 200, nil)
	chain := auditlog.NewChain([]byte("bench-key"), auditlog.State{})
	var line []byte
	for i := 0; i < n; i++ {
		e := g.next(i)
		g.buf = g.write(g.buf[:0], &e)
		line = chain.Append(line[:0], g.buf, i == 0)
		if _, err := w.Write(line); err != nil {
			b.Fatal(err)
		}
	}
	if err := w.Flush(); err != nil {
		b.Fatal(err)
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("%d events, %d MB, %d bytes per event", n, fi.Size()>>20, fi.Size()/int64(n))
	return path, fi.Size()
}

// BenchmarkReport compares `audit report` over a generated log with
// gjson.Valid over each line of the same file, read the same way, in the
// same run (both from the page cache after the first pass).
func BenchmarkReport(b *testing.B) {
	n := benchEvents()
	path, size := writeBenchLog(b, n)
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
		for b.Loop() {
			report(b)
		}
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

// BenchmarkReportMemory shows that the report's memory follows the users
// and records, not the input: logs of a quarter of the events and of all
// of them (the same 200 users and 400 records) are reported on, and each
// reports the heap the report's state holds once every line is read
// (live-MiB: after a collection, the state still in use) and the largest
// heap seen while reading (peak-MiB, sampled every millisecond; it holds
// garbage not yet collected too).
func BenchmarkReportMemory(b *testing.B) {
	n := benchEvents()
	for _, events := range []int{n / 4, n} {
		b.Run("events="+strconv.Itoa(events), func(b *testing.B) {
			path, size := writeBenchLog(b, events)
			p, err := newPeriod(genOptions)
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(size)
			var live, peak uint64
			for b.Loop() {
				runtime.GC()
				stop := samplePeakHeap(&peak)
				c := newCollector(p)
				st, err := scanFiles([]string{path}, nil, c.add)
				stop()
				if err != nil || st.Events != int64(events) {
					b.Fatalf("%d events (%v), want %d", st.Events, err, events)
				}
				runtime.GC()
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				live = max(live, ms.HeapAlloc)
				if r := c.report(5); len(r.Users) != 200 {
					b.Fatalf("%d users, want 200", len(r.Users))
				}
			}
			b.ReportMetric(float64(live)/(1<<20), "live-MiB")
			b.ReportMetric(float64(peak)/(1<<20), "peak-MiB")
		})
	}
}

// samplePeakHeap keeps the largest heap (bytes in live and unswept
// objects) seen in *peak until stop is called.
func samplePeakHeap(peak *uint64) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
		t := time.NewTicker(time.Millisecond)
		defer t.Stop()
		for {
			metrics.Read(s)
			*peak = max(*peak, s[0].Value.Uint64())
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}
