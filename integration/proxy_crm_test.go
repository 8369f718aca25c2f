package integration

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/andybalholm/brotli"
)

// proxyCustomer is one record of the fake CRM.
type proxyCustomer struct {
	ID          int    `json:"id"`
	Name        string `json:"name"`
	OwnerID     string `json:"owner_id"`
	Team        string `json:"team"`
	Phone       string `json:"phone"`
	IDCard      string `json:"id_card"`
	BankAccount string `json:"bank_account"`
	Stage       string `json:"stage"`
	Notes       string `json:"notes"`
}

// proxyCustomers builds n customers; every third belongs to zhang. Each
// phone and bank account is unique, so a leak of any one is detectable.
func proxyCustomers(n int) []proxyCustomer {
	owners := []string{"zhang", "li", "chen"}
	out := make([]proxyCustomer, n)
	for i := range out {
		out[i] = proxyCustomer{
			ID:          i + 1,
			Name:        fmt.Sprintf("Customer %d Trading Co.", i+1),
			OwnerID:     owners[i%3],
			Team:        "east",
			Phone:       fmt.Sprintf("138%08d", 10000000+i),
			IDCard:      fmt.Sprintf("1101011990%08d", 10000000+i),
			BankAccount: fmt.Sprintf("62220202%010d", 1000000000+i),
			Stage:       "negotiation",
			Notes:       "Met at the trade fair; follow up about the renewal and the new price list.",
		}
	}
	return out
}

// proxyListJSON is the CRM's list answer for n customers.
func proxyListJSON(n int) []byte {
	b, _ := json.Marshal(map[string]any{"list": proxyCustomers(n), "total": n})
	return b
}

// proxyCRM is the fake legacy CRM behind the proxy: an httptest server.
type proxyCRM struct {
	*httptest.Server
	mu       sync.Mutex
	requests []*http.Request
	// release ends the SSE stream.
	release chan struct{}
}

func (c *proxyCRM) last() *http.Request {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.requests) == 0 {
		return nil
	}
	return c.requests[len(c.requests)-1]
}

// count is the number of requests the CRM has received.
func (c *proxyCRM) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.requests)
}

func newProxyCRM(t testing.TB) *proxyCRM {
	t.Helper()
	c := &proxyCRM{release: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"ok":true}`))
	})
	mux.HandleFunc("/api/customers", func(w http.ResponseWriter, r *http.Request) {
		n := 9
		if s := r.URL.Query().Get("n"); s != "" {
			n, _ = strconv.Atoi(s)
		}
		body := proxyListJSON(n)
		switch r.URL.Query().Get("shape") {
		case "html":
			w.Header().Set("Content-Type", "text/html")
			_, _ = w.Write([]byte("<html><body>13810000000</body></html>"))
			return
		case "gzip":
			// A legacy CRM that compresses whatever the client asked for.
			var buf bytes.Buffer
			zw := gzip.NewWriter(&buf)
			_, _ = zw.Write(body)
			_ = zw.Close()
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Content-Encoding", "gzip")
			_, _ = w.Write(buf.Bytes())
			return
		case "br":
			var buf bytes.Buffer
			bw := brotli.NewWriter(&buf)
			_, _ = bw.Write(body)
			_ = bw.Close()
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Content-Encoding", "br")
			_, _ = w.Write(buf.Bytes())
			return
		case "partial":
			// A CRM that answers 206 even without a Range header.
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Content-Range", fmt.Sprintf("bytes 0-99/%d", len(body)))
			w.WriteHeader(http.StatusPartialContent)
			_, _ = w.Write(body[:100])
			return
		}
		w.Header().Set("Content-Type", "application/json")
		// ServeContent honours Range, If-Range and sets ETag-based answers.
		w.Header().Set("ETag", `"list-v1"`)
		http.ServeContent(w, r, "customers.json", time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), bytes.NewReader(body))
	})
	mux.HandleFunc("/api/reports/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/csv; charset=utf-8")
		w.Header().Set("Content-Disposition", `attachment; filename="customers.csv"`)
		_, _ = w.Write([]byte("id,phone\n1,13810000000\n"))
	})
	mux.HandleFunc("/api/events", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-cache")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte("event: update\ndata: {\"id\":1}\n\n"))
		http.NewResponseController(w).Flush()
		select {
		case <-c.release:
		case <-r.Context().Done():
		}
	})
	mux.HandleFunc("/api/echo", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"headers": r.Header})
	})
	c.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.mu.Lock()
		c.requests = append(c.requests, r.Clone(r.Context()))
		c.mu.Unlock()
		// Like many legacy servers, the CRM is lenient about paths: it
		// drops ;parameters, decodes percent-escapes, ignores case and
		// cleans dot segments and duplicate slashes before routing.
		r2 := r.Clone(r.Context())
		r2.URL.Path = lenientPath(r.URL.EscapedPath())
		r2.URL.RawPath = ""
		mux.ServeHTTP(w, r2)
	}))
	t.Cleanup(func() {
		select {
		case <-c.release:
		default:
			close(c.release)
		}
		c.Close()
	})
	return c
}

// proxyHostPort is the CRM's host:port for reverse_proxy.
func (c *proxyCRM) hostPort() string { return c.Listener.Addr().String() }

// lenientPath normalises a raw request path the way a lenient legacy
// server would.
func lenientPath(raw string) string {
	p := raw
	for i := 0; i < 3; i++ { // repeated decoding: %252e -> %2e -> .
		if d, err := url.PathUnescape(p); err == nil {
			p = d
		}
	}
	p = strings.ReplaceAll(p, "\\", "/")
	var segs []string
	for _, s := range strings.Split(p, "/") {
		if i := strings.IndexByte(s, ';'); i >= 0 {
			s = s[:i]
		}
		segs = append(segs, s)
	}
	p = path.Clean("/" + strings.Join(segs, "/"))
	return strings.ToLower(p)
}
