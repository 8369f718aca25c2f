package integration

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
	"path/filepath"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/crmguard/crmguard/internal/listgen"
)

// Streamed exports through Caddy: an approved export larger than max_body
// is rewritten while it streams, and an answer that breaks midway reaches
// an HTTP client visibly incomplete.

const streamRules = `version: 1
default: deny
subject:
  id: claims.sub
roles:
  sales: {}
  sales_manager: {inherits: [sales]}
mfa:
  required: false
routes:
  - id: customers.export
    match: {methods: [GET], path: /api/customers/export}
    allow: [sales_manager]
    export: {approval: true, without_approval: [sales_manager]}
    records: list
    max_records: 1000
    fields:
      phone: {mask: phone}
      id_card: {mask: id_card}
      bank_account: remove
      secret: remove
    audit_id: id
`

// streamCRM answers GET /api/customers/export with a generated list of
// ?size= bytes (listgen); ?bad=json breaks it after 2 MiB with an invalid
// record, ?bad=reset drops the connection there.
func streamCRM(t testing.TB) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		size, _ := strconv.ParseInt(r.URL.Query().Get("size"), 10, 64)
		w.Header().Set("Content-Type", "application/json")
		src := listgen.New(listgen.JSON, size)
		bad := r.URL.Query().Get("bad")
		if bad == "" {
			_, _ = io.Copy(w, src)
			return
		}
		br := bufio.NewReader(io.LimitReader(src, 2<<20))
		_, _ = io.Copy(w, br)
		if rest, err := bufio.NewReader(src).ReadBytes('}'); err == nil {
			_, _ = w.Write(rest)
		}
		_, _ = w.Write(bytes.Repeat([]byte(`,{"id":"x","phone":"`+listgen.Phone+`"}`), 100))
		switch bad {
		case "json":
			_, _ = io.WriteString(w, `,{"id":"y","phone":"`+listgen.Phone+`" "broken":1}]}`)
		case "reset":
			http.NewResponseController(w).Flush()
			conn, _, err := http.NewResponseController(w).Hijack()
			if err == nil {
				conn.Close()
			}
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

// streamLastEvent decodes the last audit event in the file at path.
func streamLastEvent(t testing.TB, path string) map[string]any {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	var ev map[string]any
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &ev); err != nil {
		t.Fatalf("the last audit event in %s: %v", path, err)
	}
	return ev
}

func TestAStreamedExportThroughCaddy(t *testing.T) {
	dir := t.TempDir()
	crm := streamCRM(t)
	rulesPath := proxyWriteFile(t, dir, "rules.yaml", streamRules)
	auditPath := filepath.Join(dir, "audit.jsonl")
	srv := proxyStart(t, dir, proxySite(rulesPath, auditPath, crm.Listener.Addr().String(), "")) // max_body 64KiB
	client := &http.Client{Transport: &http.Transport{DisableCompression: true}}
	lastEvent := func(t *testing.T) map[string]any { return streamLastEvent(t, auditPath) }

	t.Run("an approved export over max_body streams rewritten", func(t *testing.T) {
		resp := proxyGet(t, client, "GET", srv.URL+"/api/customers/export?size=8388608", "wang", nil)
		body := proxyBody(t, resp)
		if resp.StatusCode != 200 || resp.ContentLength != -1 {
			t.Fatalf("status %d, length %d: %.200s", resp.StatusCode, resp.ContentLength, body)
		}
		var doc struct {
			List  []map[string]any
			Total int
		}
		if err := json.Unmarshal([]byte(body), &doc); err != nil || len(doc.List) != doc.Total || doc.Total < 20000 {
			t.Fatalf("the export is not the whole list as JSON (%v): %d records, total %d", err, len(doc.List), doc.Total)
		}
		for _, raw := range []string{listgen.Phone, "110101199003071234", "6222020200112233445", `"secret"`} {
			if strings.Contains(body, raw) {
				t.Fatalf("the raw value %s reached the client", raw)
			}
		}
		ev := lastEvent(t)
		export, _ := ev["export"].(map[string]any)
		ids, _ := ev["record_ids"].([]any)
		if ev["decision"] != "allow" || ev["streamed"] != true || int(ev["records_out"].(float64)) != doc.Total ||
			export["approved"] != true || export["too_many"] != true || len(ids) != 1000 ||
			int(ev["record_ids_omitted"].(float64)) != doc.Total-1000 {
			t.Fatalf("audit event %v", ev)
		}
	})

	for _, bad := range []string{"json", "reset"} {
		t.Run(fmt.Sprintf("an answer that breaks (%s) midway reaches the client incomplete", bad), func(t *testing.T) {
			resp := proxyGet(t, client, "GET", srv.URL+"/api/customers/export?size=8388608&bad="+bad, "wang", nil)
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if resp.StatusCode != 200 || !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("status %d, read error %v after %d bytes: the client must see the answer is cut", resp.StatusCode, err, len(body))
			}
			if len(body) < 1<<20 || bytes.Contains(body, []byte(listgen.Phone)) {
				t.Fatalf("%d bytes reached the client; a raw phone among them: %v", len(body), bytes.Contains(body, []byte(listgen.Phone)))
			}
			if json.Valid(body) {
				t.Fatal("the cut answer parses as whole JSON")
			}
			ev := lastEvent(t)
			if ev["decision"] != "cut" || ev["records_out"].(float64) == 0 || !strings.Contains(ev["reason"].(string), "cut after") {
				t.Fatalf("audit event %v", ev)
			}
		})
	}
}

// streamBenchSize is the size of the list BenchmarkProxyStreamedExport
// sends through the guard.
var streamBenchSize = flag.Int64("stream.bench", 100<<20, "bytes of the list BenchmarkProxyStreamedExport streams")

// BenchmarkProxyStreamedExport sends a 100 MB JSON list through the guard
// (streamed and rewritten: max_body 16 MiB, an approved export) and through
// Caddy's reverse proxy alone, in the same run: compare the two MB/s. The
// peak-heap metric is the largest heap sampled
// while the answer streams, above the heap before (which holds the
// upstream's 100 MB answer): heap objects not yet collected count too, so
// it is an upper bound.
func BenchmarkProxyStreamedExport(b *testing.B) {
	var body bytes.Buffer
	if _, err := io.Copy(&body, listgen.New(listgen.JSON, *streamBenchSize)); err != nil {
		b.Fatal(err)
	}
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(body.Len()))
		_, _ = w.Write(body.Bytes())
	}))
	defer up.Close()
	dir := b.TempDir()
	rulesPath := proxyWriteFile(b, dir, "rules.yaml", streamRules)
	bare, guarded := proxyFreePort(b), proxyFreePort(b)
	src := proxyGlobals(dir) + fmt.Sprintf(`http://127.0.0.1:%d {
	reverse_proxy %s
}
http://127.0.0.1:%d {
	crm_guard {
		rules %s
		identity proxy_test_header
		audit %s
	}
	reverse_proxy %s
}
`, bare, up.Listener.Addr(), guarded, rulesPath, filepath.Join(dir, "audit.jsonl"), up.Listener.Addr())
	if err := caddy.Load(proxyAdapt(b, src), true); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = caddy.Stop() }()
	client := &http.Client{Transport: &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: 2}}
	for _, site := range []struct {
		name string
		port int
	}{{"bare", bare}, {"guarded", guarded}} {
		b.Run(site.name, func(b *testing.B) {
			url := fmt.Sprintf("http://127.0.0.1:%d/api/customers/export", site.port)
			req, _ := http.NewRequest("GET", url, nil)
			req.Header.Set("X-Test-User", "wang")
			base := liveHeap()
			var peak uint64
			stop, done := make(chan struct{}), make(chan struct{})
			var once sync.Once
			go func() {
				defer close(done)
				tick := time.NewTicker(5 * time.Millisecond)
				defer tick.Stop()
				for {
					select {
					case <-stop:
						return
					case <-tick.C:
						peak = max(peak, liveHeap())
					}
				}
			}()
			b.SetBytes(int64(body.Len()))
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				resp, err := client.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				n, err := io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if err != nil || resp.StatusCode != 200 || n < int64(body.Len())/3 {
					b.Fatalf("status %d, %d bytes, %v", resp.StatusCode, n, err)
				}
			}
			b.StopTimer()
			once.Do(func() { close(stop) })
			<-done
			b.ReportMetric(float64(max(peak, base)-base)/(1<<20), "peak-heap-MiB")
		})
	}
}

// liveHeap is the memory of heap objects, live or not yet collected.
func liveHeap() uint64 {
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}
