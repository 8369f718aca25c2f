package caddymodule

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/crmguard/crmguard/rules"
)

func TestPresize(t *testing.T) {
	cases := []struct {
		name    string
		length  string
		limit   int64
		atLeast int
		atMost  int
	}{
		{"an announced length within the limit is reserved", "20000", DefaultMaxBody, 20000, 1 << 20},
		{"a length over the body limit reserves nothing", "5000", 4000, 0, 0},
		{"a length over a megabyte reserves nothing", "2000000", DefaultMaxBody, 0, 0},
		{"a length that is not a number reserves nothing", "20k", DefaultMaxBody, 0, 0},
		{"a negative length reserves nothing", "-5", DefaultMaxBody, 0, 0},
		{"no length reserves nothing", "", DefaultMaxBody, 0, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var buf bytes.Buffer
			presize(&buf, c.length, c.limit)
			if buf.Cap() < c.atLeast || buf.Cap() > c.atMost {
				t.Errorf("presize(%q, %d): capacity %d, want %d..%d", c.length, c.limit, buf.Cap(), c.atLeast, c.atMost)
			}
			if buf.Len() != 0 {
				t.Errorf("presize(%q) left %d bytes in the buffer", c.length, buf.Len())
			}
		})
	}
}

// waitingSink holds the audit event until the client has read the whole
// answer (or gives up after a while and says so).
type waitingSink struct {
	clientDone chan struct{}
	waited     chan bool
}

func (s *waitingSink) Write(*AuditEvent) error {
	select {
	case <-s.clientDone:
		s.waited <- true
	case <-time.After(5 * time.Second):
		s.waited <- false
	}
	return nil
}

func TestRewrittenAnswerReachesTheClientBeforeTheAuditLine(t *testing.T) {
	set := loadTestRules(t)
	sink := &waitingSink{clientDone: make(chan struct{}), waited: make(chan bool, 1)}
	g, err := NewGuard(GuardOptions{Rules: func() *rules.Set { return set }, Provider: &testProvider{user: zhang}, Audit: sink})
	if err != nil {
		t.Fatal(err)
	}
	// An answer well over the server's write buffers, so that without a
	// flush its tail would wait for the handler to return.
	up := jsonUpstream(string(benchList())).handler()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := g.ServeHTTP(w, r, up); err != nil {
			t.Errorf("ServeHTTP: %v", err)
		}
	}))
	defer srv.Close()

	resp, err := http.Get(srv.URL + "/api/customers")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d, reading: %v", resp.StatusCode, err)
	}
	close(sink.clientDone)
	if !<-sink.waited {
		t.Fatal("the audit line was written before the client had the whole answer")
	}
	if int64(len(body)) != resp.ContentLength || !bytes.Contains(body, []byte(`"list"`)) {
		t.Errorf("the client got %d of %d bytes: %.80s", len(body), resp.ContentLength, body)
	}
}

func TestRangeAndEncodingPassOnRoutesThatDoNotRewrite(t *testing.T) {
	g, _ := newTestGuard(t, guardSetup{user: zhang})
	req := httptest.NewRequest("GET", "/files/manual.pdf", nil)
	req.Header.Set("Range", "bytes=0-10")
	req.Header.Set("Accept-Encoding", "gzip")
	up := &upstream{status: 206, header: http.Header{"Content-Type": {"application/pdf"}, "Content-Range": {"bytes 0-10/100"}}, body: []byte("%PDF-1.7 ab")}
	rec := serve(t, g, req, up)
	if up.got.Header.Get("Range") != "bytes=0-10" || up.got.Header.Get("Accept-Encoding") != "gzip" {
		t.Errorf("headers at the CRM: %v", up.got.Header)
	}
	if rec.Code != 206 || rec.Body.String() != "%PDF-1.7 ab" {
		t.Errorf("a partial answer on a route that does not rewrite must pass: %d %q", rec.Code, rec.Body)
	}
}

func TestAnswerRewriting(t *testing.T) {
	plain := []byte(customers)
	tests := []struct {
		name       string
		method     string
		status     int
		header     http.Header
		body       []byte
		maxBody    int64
		wantStatus int
		wantBody   string // exact, when set
		mustNot    []string
	}{
		{name: "a JSON list is filtered and masked", body: plain, wantStatus: 200,
			wantBody: `{"list":[{"id":1,"owner_id":"zhang","phone":"138****5678"}]}`, mustNot: []string{"13812345678", "6222", `"li"`}},
		{name: "a gzip answer is decoded and rewritten", header: http.Header{"Content-Encoding": {"gzip"}}, body: gz(plain), wantStatus: 200,
			wantBody: `{"list":[{"id":1,"owner_id":"zhang","phone":"138****5678"}]}`},
		{name: "a deflate answer is decoded and rewritten", header: http.Header{"Content-Encoding": {"deflate"}}, body: zl(plain), wantStatus: 200,
			wantBody: `{"list":[{"id":1,"owner_id":"zhang","phone":"138****5678"}]}`},
		{name: "a zstd answer is decoded and rewritten", header: http.Header{"Content-Encoding": {"zstd"}}, body: zs(plain), wantStatus: 200,
			wantBody: `{"list":[{"id":1,"owner_id":"zhang","phone":"138****5678"}]}`},
		{name: "a br answer is decoded and rewritten", header: http.Header{"Content-Encoding": {"br"}}, body: br(plain), wantStatus: 200,
			wantBody: `{"list":[{"id":1,"owner_id":"zhang","phone":"138****5678"}]}`},
		{name: "an answer compressed twice is decoded in order", header: http.Header{"Content-Encoding": {"gzip, br"}}, body: br(gz(plain)), wantStatus: 200,
			wantBody: `{"list":[{"id":1,"owner_id":"zhang","phone":"138****5678"}]}`},
		{name: "an answer compressed twice and labelled on two header lines is decoded in order", header: http.Header{"Content-Encoding": {"gzip", "br"}}, body: br(gz(plain)), wantStatus: 200,
			wantBody: `{"list":[{"id":1,"owner_id":"zhang","phone":"138****5678"}]}`},
		{name: "an answer in an encoding the proxy cannot decode is refused", header: http.Header{"Content-Encoding": {"compress"}}, body: plain, wantStatus: 502, mustNot: []string{"1381234"}},
		{name: "a corrupt br answer is refused", header: http.Header{"Content-Encoding": {"br"}}, body: plain, wantStatus: 502, mustNot: []string{"1381234"}},
		{name: "a br bomb over max_body is refused", header: http.Header{"Content-Encoding": {"br"}}, body: br(bytes.Repeat([]byte(" "), 4096)), maxBody: 1024, wantStatus: 502},
		{name: "a corrupt gzip answer is refused", header: http.Header{"Content-Encoding": {"gzip"}}, body: plain, wantStatus: 502, mustNot: []string{"1381234"}},
		{name: "an answer that is not JSON is refused", body: []byte(`<html>13812345678</html>`), wantStatus: 502, mustNot: []string{"1381234"}},
		{name: "a list over max_body streams rewritten (stream.go)", body: plain, maxBody: 64, wantStatus: 200, mustNot: []string{"1381234", "6222", "13900001111"}},
		{name: "a gzip bomb over max_body is refused", header: http.Header{"Content-Encoding": {"gzip"}}, body: gz(bytes.Repeat([]byte(" "), 4096)), maxBody: 1024, wantStatus: 502},
		{name: "a partial answer is refused", status: 206, header: http.Header{"Content-Range": {"bytes 0-10/200"}}, body: plain[:11], wantStatus: 502, mustNot: []string{`{"list"`}},
		{name: "an upstream error answer keeps its status and its unchecked body is withheld", status: 500, body: plain, wantStatus: 500, mustNot: []string{"1381234", `"list":[`}},
		{name: "a HEAD answer has headers and no body", method: "HEAD", body: plain, wantStatus: 200, wantBody: "-"},
		{name: "a 304 answer has no body", status: 304, body: nil, wantStatus: 304, wantBody: "-"},
		{name: "an empty 200 answer passes without a body", body: nil, wantStatus: 200, wantBody: "-"},
		{name: "an empty gzip answer passes without a body", header: http.Header{"Content-Encoding": {"gzip"}}, body: gz(nil), wantStatus: 200, wantBody: "-"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g, sink := newTestGuard(t, guardSetup{user: zhang, maxBody: tt.maxBody})
			method := tt.method
			if method == "" {
				method = "GET"
			}
			up := &upstream{status: tt.status, header: http.Header{"Content-Type": {"application/json"},
				"Etag": {`"v1"`}, "Last-Modified": {"Mon, 02 Jan 2006 15:04:05 GMT"}, "Accept-Ranges": {"bytes"},
				"Content-Length": {strconv.Itoa(len(tt.body))}}, body: tt.body}
			for k, v := range tt.header {
				up.header[k] = v
			}
			rec := serve(t, g, httptest.NewRequest(method, "/api/customers", nil), up)
			if rec.Code != tt.wantStatus {
				t.Fatalf("status: want %d, got %d: %s", tt.wantStatus, rec.Code, rec.Body)
			}
			got := rec.Body.String()
			switch tt.wantBody {
			case "":
			case "-":
				if got != "" {
					t.Errorf("want no body, got %q", got)
				}
			default:
				if got != tt.wantBody {
					t.Errorf("body:\nwant %s\ngot  %s", tt.wantBody, got)
				}
			}
			for _, s := range tt.mustNot {
				if strings.Contains(got, s) {
					t.Errorf("the answer leaks %q: %s", s, got)
				}
			}
			if tt.wantStatus == 200 && tt.wantBody != "-" {
				want := strconv.Itoa(len(got))
				if tt.maxBody > 0 && int64(len(tt.body)) > tt.maxBody {
					want = "" // streamed: its length is not known ahead
				}
				if cl := rec.Header().Get("Content-Length"); cl != want {
					t.Errorf("Content-Length: want %q, got %q", want, cl)
				}
				if rec.Header().Get("Content-Encoding") != "" {
					t.Errorf("Content-Encoding left on a decoded answer: %s", rec.Header().Get("Content-Encoding"))
				}
			}
			if tt.wantStatus == 200 {
				for _, k := range []string{"ETag", "Last-Modified", "Accept-Ranges"} {
					if rec.Header().Get(k) != "" {
						t.Errorf("%s kept after a rewrite", k)
					}
				}
			}
			if tt.wantStatus == 502 {
				ev := sink.last(t)
				if ev.Status != 502 || ev.Decision != "blocked" || ev.Reason == "" {
					t.Errorf("audit of a refused answer: %+v", ev)
				}
			}
		})
	}
}

func TestRewriteAuditEvent(t *testing.T) {
	g, sink := newTestGuard(t, guardSetup{user: zhang})
	req := httptest.NewRequest("GET", "/api/customers", nil)
	serve(t, g, req, jsonUpstream(customers))
	ev := sink.last(t)
	if ev.User != "zhang" || ev.Route != "customers.list" || ev.Decision != "allow" || ev.Status != 200 {
		t.Errorf("event: %+v", ev)
	}
	if ev.RecordsIn != 2 || ev.RecordsOut != 1 {
		t.Errorf("records: want 2 in, 1 out, got %d, %d", ev.RecordsIn, ev.RecordsOut)
	}
	if len(ev.RecordIDs) != 1 || ev.RecordIDs[0] != "1" {
		t.Errorf("record ids: want [1], got %v", ev.RecordIDs)
	}
	if len(ev.Fields) == 0 {
		t.Errorf("fields treated are not in the event")
	}
	if !ev.Rewritten || ev.Method != "GET" || ev.Path != "/api/customers" || ev.Time.IsZero() {
		t.Errorf("event: %+v", ev)
	}
}

func TestDownloadOnNonExportRouteIsBlocked(t *testing.T) {
	g, sink := newTestGuard(t, guardSetup{user: zhang})
	up := &upstream{header: http.Header{"Content-Type": {"text/csv"}, "Content-Disposition": {`attachment; filename="c.csv"`}},
		body: []byte("id,phone\n1,13812345678\n")}
	rec := serve(t, g, httptest.NewRequest("GET", "/files/customers.csv", nil), up)
	if rec.Code != 403 {
		t.Fatalf("want 403 for a CSV download, got %d: %s", rec.Code, rec.Body)
	}
	if strings.Contains(rec.Body.String(), "13812345678") || rec.Header().Get("Content-Disposition") != "" {
		t.Errorf("the download leaked: %v %s", rec.Header(), rec.Body)
	}
	if ev := sink.last(t); !ev.Export.Blocked || !ev.Export.Download {
		t.Errorf("audit export flags: %+v", ev.Export)
	}
}

func TestShadowModeStreamsAnOversizeAnswer(t *testing.T) {
	g, _ := newTestGuard(t, guardSetup{user: zhang, shadow: true, maxBody: 40})
	rec := serve(t, g, httptest.NewRequest("GET", "/api/customers", nil), jsonUpstream(customers))
	if rec.Body.String() != customers {
		t.Fatalf("shadow mode must pass the whole answer, got %q", rec.Body)
	}
}
