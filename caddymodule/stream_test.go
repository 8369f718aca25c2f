package caddymodule

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"runtime/metrics"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/crmguard/crmguard/internal/listgen"
)

// streamSize is the size of the answer TestAStreamedExportKeepsMemoryFlat
// streams through the guard; CI runs 64 MiB, `-stream.size=1073741824`
// the 1 GB of the issue.
var streamSize = flag.Int64("stream.size", 64<<20, "bytes of the answer the memory test streams through the guard")

// streamMaxBody is the guard's max_body in the stream tests: answers over
// it stream.
const streamMaxBody = 64 << 10

// bigCRM answers a generated list of about size bytes. After cutAt bytes
// (0: never) it breaks the answer as bad says: "json" writes a broken
// record, "big" a record of 2 MiB, "quote" a CSV row whose quote never
// closes, "reset" aborts as Caddy's reverse proxy does when the CRM drops
// the connection mid-answer.
func bigCRM(f listgen.Format, size, cutAt int64, bad string) caddyhttp.Handler {
	return caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		if f == listgen.CSV {
			w.Header().Set("Content-Type", "text/csv; charset=utf-8")
		} else {
			w.Header().Set("Content-Type", "application/json")
		}
		w.WriteHeader(http.StatusOK)
		src := listgen.New(f, size)
		if cutAt == 0 {
			_, err := io.Copy(w, src)
			return err
		}
		// up to the end of a record after cutAt
		br := bufio.NewReader(io.LimitReader(src, cutAt))
		if _, err := io.Copy(w, br); err != nil {
			return err
		}
		rest := bufio.NewReader(src)
		end := byte('}')
		if f == listgen.CSV {
			end = '\n'
		}
		if line, err := rest.ReadBytes(end); err == nil {
			_, _ = w.Write(line)
		}
		switch bad {
		case "json":
			_, _ = io.WriteString(w, `,{"id":"x","owner":"u1","phone":"13800138000" "oops":1},`+strings.Repeat(`{"id":"y","phone":"13800138000"},`, 3000))
		case "big":
			_, _ = io.WriteString(w, `,{"id":"x","owner":"u1","phone":"13800138000","pad":"`+strings.Repeat("x", 2<<20)+`"}]}`)
		case "quote":
			_, _ = io.WriteString(w, `c1,u1,u1,east,"never closed,13800138000`+strings.Repeat("\r\nc2,u1,u1,east,x,13800138000,1,2,s,n", 60000))
		case "reset":
			panic(http.ErrAbortHandler)
		}
		return nil
	})
}

// sinkWriter is a client that reads the answer as it comes: it keeps the
// first bytes (all with keep), counts the rest and looks for a raw phone
// number across writes.
type sinkWriter struct {
	h      http.Header
	status int
	n      int64
	keep   bool
	body   bytes.Buffer
	tail   []byte
	leaked bool
}

func newSinkWriter(keep bool) *sinkWriter { return &sinkWriter{h: http.Header{}, keep: keep} }

func (w *sinkWriter) Header() http.Header { return w.h }

func (w *sinkWriter) WriteHeader(status int) {
	if w.status == 0 {
		w.status = status
	}
}

func (w *sinkWriter) Write(b []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	w.n += int64(len(b))
	seam := append(w.tail, b[:min(len(b), 16)]...)
	if bytes.Contains(seam, []byte(listgen.Phone)) || bytes.Contains(b, []byte(listgen.Phone)) {
		w.leaked = true
	}
	w.tail = append(w.tail[:0], b[max(0, len(b)-16):]...)
	if w.keep || w.body.Len() < 64<<10 {
		w.body.Write(b)
	}
	return len(b), nil
}

func (w *sinkWriter) Flush() {}

// stream sends GET target through the harness guard to up, writing to w;
// cut is true when the guard aborted the answer.
func (h *limitHarness) stream(target string, up caddyhttp.Handler, w http.ResponseWriter) (cut bool, ev AuditEvent) {
	h.t.Helper()
	h.sink.mu.Lock()
	before := len(h.sink.events)
	h.sink.mu.Unlock()
	func() {
		defer func() {
			if p := recover(); p != nil {
				if p != http.ErrAbortHandler {
					panic(p)
				}
				cut = true
			}
		}()
		if err := h.g.ServeHTTP(w, httptest.NewRequest("GET", "http://crm.test"+target, nil), up); err != nil {
			h.t.Fatalf("GET %s: %v", target, err)
		}
	}()
	h.sink.mu.Lock()
	defer h.sink.mu.Unlock()
	if len(h.sink.events) != before+1 {
		h.t.Fatalf("GET %s wrote %d audit events, want 1", target, len(h.sink.events)-before)
	}
	return cut, h.sink.events[before]
}

func TestAnAnswerOverMaxBodyStreamsRewritten(t *testing.T) {
	for _, f := range []listgen.Format{listgen.JSON, listgen.CSV} {
		t.Run(fmt.Sprintf("format %d", f), func(t *testing.T) {
			h := newLimitHarness(t, "", limitSetup{maxBody: streamMaxBody})
			w := newSinkWriter(true)
			cut, ev := h.stream("/api/customers", bigCRM(f, 4<<20, 0, ""), w)
			if cut || w.status != 200 || ev.Decision != "allow" || !ev.Streamed || !ev.Rewritten {
				t.Fatalf("cut %v, status %d, decision %q (%s), streamed %v", cut, w.status, ev.Decision, ev.Reason, ev.Streamed)
			}
			if w.leaked {
				t.Fatal("a raw phone number reached the client")
			}
			if w.h.Get("Content-Length") != "" || w.h.Get("Cache-Control") != "private, no-store" {
				t.Errorf("headers %v", w.h)
			}
			body := w.body.Bytes()
			rows := 0
			if f == listgen.JSON {
				var doc struct {
					List []map[string]any `json:"list"`
				}
				if err := json.Unmarshal(body, &doc); err != nil {
					t.Fatalf("the streamed answer is not JSON: %v", err)
				}
				rows = len(doc.List)
			} else {
				rows = strings.Count(string(body), "\r\n") - 1
			}
			if rows < 10000 || ev.RecordsIn != rows || ev.RecordsOut != rows {
				t.Errorf("the client got %d records; the audit says %d in, %d out", rows, ev.RecordsIn, ev.RecordsOut)
			}
			if len(ev.RecordIDs) != 1000 || ev.RecordIDsOmitted != rows-1000 || ev.RecordIDs[0] != "c000000000" {
				t.Errorf("%d record ids (first %q), %d omitted", len(ev.RecordIDs), ev.RecordIDs[0], ev.RecordIDsOmitted)
			}
		})
	}
}

func TestAStreamedAnswerThatBreaksIsCut(t *testing.T) {
	cases := []struct {
		name    string
		f       listgen.Format
		cutAt   int64
		bad     string
		cut     bool   // else refused whole
		status  int    // of a refusal
		because string // in the audit reason
	}{
		{"broken JSON after the first records cuts the answer", listgen.JSON, 1 << 20, "json", true, 0, "invalid JSON"},
		{"the CRM dropping the connection cuts the answer", listgen.JSON, 1 << 20, "reset", true, 0, "cut short"},
		{"a record over the cap cuts the answer", listgen.JSON, 1 << 20, "big", true, 0, "larger than the stream's limit"},
		{"a CSV row whose quote never closes cuts the answer", listgen.CSV, 1 << 20, "quote", true, 0, "larger than the stream's limit"},
		{"broken JSON in the first records is refused whole", listgen.JSON, 1, "json", false, http.StatusBadGateway, "invalid JSON"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := newLimitHarness(t, "", limitSetup{maxBody: streamMaxBody})
			w := newSinkWriter(false)
			cut, ev := h.stream("/api/customers", bigCRM(c.f, 8<<20, c.cutAt, c.bad), w)
			if w.leaked {
				t.Fatal("a raw phone number reached the client")
			}
			if !strings.Contains(ev.Reason, c.because) {
				t.Errorf("audit reason %q does not say %q", ev.Reason, c.because)
			}
			if !c.cut {
				if cut || w.status != c.status || ev.Decision != "blocked" || ev.RecordsOut != 0 {
					t.Fatalf("cut %v, status %d, decision %q, %d records out; want a whole refusal %d", cut, w.status, ev.Decision, ev.RecordsOut, c.status)
				}
				return
			}
			if !cut || ev.Decision != "cut" || ev.Status != 200 || ev.RecordsOut == 0 || !ev.Streamed {
				t.Fatalf("cut %v, decision %q, status %d, %d records out", cut, ev.Decision, ev.Status, ev.RecordsOut)
			}
			if len(ev.RecordIDs) != min(1000, ev.RecordsOut) {
				t.Errorf("%d record ids for %d records out", len(ev.RecordIDs), ev.RecordsOut)
			}
		})
	}
}

func TestAStreamedAnswerStopsAtItsUsageLimit(t *testing.T) {
	limit := func(max int) string {
		return fmt.Sprintf("  - id: bulk_view\n    routes: [customers.list]\n    count: records\n    max: %d\n    per: 1h\n    action: block\n", max)
	}
	t.Run("records past the limit are not sent and the answer is cut where it crossed", func(t *testing.T) {
		h := newLimitHarness(t, limit(3000), limitSetup{maxBody: streamMaxBody})
		w := newSinkWriter(true)
		cut, ev := h.stream("/api/customers", bigCRM(listgen.JSON, 4<<20, 0, ""), w)
		if !cut || ev.Decision != "cut" || !strings.Contains(ev.Reason, "bulk_view") {
			t.Fatalf("cut %v, decision %q: %s", cut, ev.Decision, ev.Reason)
		}
		sent := strings.Count(w.body.String(), `"id":"c`)
		counted := h.count(h.g.opt.Rules(), "bulk_view", "")
		if sent == 0 || sent > 3000 || ev.RecordsOut != sent || counted != int64(sent) {
			t.Fatalf("the client got %d records, the audit says %d, the window holds %d (max 3000)", sent, ev.RecordsOut, counted)
		}
		if len(ev.Limits) != 1 || !ev.Limits[0].Refused || ev.Limits[0].Limit != "bulk_view" {
			t.Errorf("limit hits %+v", ev.Limits)
		}
	})
	t.Run("a limit the first records pass is refused whole with 429", func(t *testing.T) {
		h := newLimitHarness(t, limit(10), limitSetup{maxBody: streamMaxBody})
		w := newSinkWriter(true)
		cut, ev := h.stream("/api/customers", bigCRM(listgen.JSON, 4<<20, 0, ""), w)
		if cut || w.status != http.StatusTooManyRequests || ev.Decision != "limited" || ev.RecordsOut != 0 {
			t.Fatalf("cut %v, status %d, decision %q, %d records out", cut, w.status, ev.Decision, ev.RecordsOut)
		}
		if strings.Contains(w.body.String(), `"id":"c`) || h.count(h.g.opt.Rules(), "bulk_view", "") != 0 {
			t.Fatalf("records were sent or counted: %s", w.body.String())
		}
	})
}

func TestAnAnswerThatMustBeSeenWholeIsStillRefusedOverMaxBody(t *testing.T) {
	h := newLimitHarness(t, "", limitSetup{maxBody: streamMaxBody})
	gz := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Encoding", "gzip")
		w.WriteHeader(200)
		_, err := io.Copy(w, listgen.New(listgen.JSON, 1<<20)) // not really gzip: never read
		return err
	})
	w := newSinkWriter(true)
	cut, ev := h.stream("/api/customers", gz, w)
	if cut || w.status != http.StatusBadGateway || ev.Decision != "blocked" || ev.Streamed {
		t.Fatalf("a compressed answer over max_body: cut %v, status %d, decision %q, streamed %v", cut, w.status, ev.Decision, ev.Streamed)
	}
}

func TestACutAnswerIsIncompleteToAnHTTPClient(t *testing.T) {
	h := newLimitHarness(t, "", limitSetup{maxBody: streamMaxBody})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = h.g.ServeHTTP(w, r, bigCRM(listgen.JSON, 8<<20, 1<<20, "json"))
	}))
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/api/customers")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("status %d, read error %v after %d bytes: the client must see the answer is cut", resp.StatusCode, err, len(body))
	}
	if len(body) == 0 || bytes.Contains(body, []byte(listgen.Phone)) {
		t.Fatalf("%d bytes, a raw phone number among them: %v", len(body), bytes.Contains(body, []byte(listgen.Phone)))
	}
}

// TestAStreamedExportKeepsMemoryFlat streams a generated answer of
// -stream.size bytes through the guard and samples the heap and the
// resident set while it runs: their growth must stay under 64 MB, whatever
// the answer's size.
func TestAStreamedExportKeepsMemoryFlat(t *testing.T) {
	if testing.Short() && *streamSize > 64<<20 {
		t.Skip("-short: the large memory run is skipped")
	}
	h := newLimitHarness(t, "", limitSetup{}) // the default max_body (16 MiB)
	runtime.GC()
	heap0, rss0 := heapAlloc(), residentBytes(t)
	w := &meteredWriter{sinkWriter: newSinkWriter(false), every: 4 << 20}
	start := time.Now()
	cut, ev := h.stream("/api/customers", bigCRM(listgen.JSON, *streamSize, 0, ""), w)
	took := time.Since(start)
	if cut || ev.Decision != "allow" || !ev.Streamed || w.leaked || w.n < *streamSize/4 {
		t.Fatalf("cut %v, decision %q (%s), streamed %v, leaked %v, %d bytes", cut, ev.Decision, ev.Reason, ev.Streamed, w.leaked, w.n)
	}
	heapGrowth, rssGrowth := int64(w.heapPeak)-int64(heap0), w.rssPeak-rss0
	t.Logf("%d MiB from the CRM, %d MiB to the client in %v (%.0f MB/s), %d records; live heap grew by at most %.1f MiB, resident set by %.1f MiB (sampled every 4 MiB)",
		*streamSize>>20, w.n>>20, took.Round(time.Millisecond), float64(*streamSize)/took.Seconds()/1e6, ev.RecordsOut,
		float64(heapGrowth)/(1<<20), float64(rssGrowth)/(1<<20))
	if heapGrowth > 64<<20 || rssGrowth > 64<<20 {
		t.Fatalf("memory grew by %d bytes of heap, %d resident: more than 64 MB", heapGrowth, rssGrowth)
	}
}

// meteredWriter samples the heap and the resident set every so many bytes.
type meteredWriter struct {
	*sinkWriter
	every    int64
	next     int64
	heapPeak uint64
	rssPeak  int64
}

func (w *meteredWriter) Write(b []byte) (int, error) {
	n, err := w.sinkWriter.Write(b)
	if w.n >= w.next {
		w.next = w.n + w.every
		w.heapPeak = max(w.heapPeak, heapAlloc())
		w.rssPeak = max(w.rssPeak, residentBytes(nil))
	}
	return n, err
}

// heapAlloc is the live heap as the last collection found it (garbage
// not yet collected does not count).
func heapAlloc() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// residentBytes is VmRSS from /proc/self/status (0 where there is none).
func residentBytes(t *testing.T) int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		if t != nil {
			t.Logf("no resident set size: %v", err)
		}
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}
