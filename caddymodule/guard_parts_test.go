package caddymodule

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/crmguard/crmguard/rules"
)

func TestJSONLabel(t *testing.T) {
	cases := []struct {
		name string
		cts  []string
		want bool
	}{
		{"plain application/json is JSON", []string{"application/json"}, true},
		{"the label is read without regard to case", []string{"Application/JSON"}, true},
		{"a UTF-8 charset is JSON", []string{"application/json; charset=utf-8"}, true},
		{"a UTF-8 charset without a space and in capitals is JSON", []string{"application/json;charset=UTF-8"}, true},
		{"a +json media type is JSON", []string{"application/vnd.api+json"}, true},
		{"a UTF-16 charset is not kept", []string{"application/json; charset=utf-16"}, false},
		{"a Latin-1 charset is not kept", []string{"application/json; charset=iso-8859-1"}, false},
		{"text/html is not JSON", []string{"text/html"}, false},
		{"a longer subtype is not JSON", []string{"application/jsonx"}, false},
		{"two Content-Type lines are not kept", []string{"application/json", "application/json"}, false},
		{"no Content-Type is not kept", nil, false},
		{"an unparsable label is not kept", []string{"application/json; charset"}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := jsonLabel(c.cts); got != c.want {
				t.Errorf("jsonLabel(%q) = %v, want %v", c.cts, got, c.want)
			}
		})
	}
}

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
