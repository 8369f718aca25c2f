package integration

import (
	"fmt"
	"net/url"
	"strings"
	"testing"
)

// TestRedteamHostileCRMAnswersNeverLeakRawData plays a CRM that answers a
// rewriting route in every shape the rewriter might not expect. Whatever
// the shape, the sales rep never sees another owner's record or a raw
// phone, ID number or bank account, and each request writes exactly one
// audit event with the decision it got.
func TestRedteamHostileCRMAnswersNeverLeakRawData(t *testing.T) {
	s := startRedteam(t, redteamRules, "")
	tests := []struct {
		name       string
		path       string
		wantStatus int
		decision   string
	}{
		{"a 500 whose body echoes every record is withheld", "/api/customers?evil=500-echo", 500, "blocked"},
		{"a 404 whose body holds another owner's record is withheld", "/api/customers/2?evil=404-echo", 404, "blocked"},
		{"a 422 whose body is another owner's record is withheld", "/api/customers/2?evil=422-echo", 422, "blocked"},
		{"a redirect whose body holds every record is withheld", "/api/customers?evil=302-echo", 302, "blocked"},
		{"an HTML page holding the JSON is refused, never raw", "/api/customers?evil=html", 502, "blocked"},
		{"JSON labelled text/plain is rewritten, never raw", "/api/customers?evil=text-json", 200, "allow"},
		{"JSON without a Content-Type is rewritten, never raw", "/api/customers?evil=no-type", 200, "allow"},
		{"a JSONP answer is refused", "/api/customers?evil=jsonp", 502, "blocked"},
		{"an XSSI-prefixed answer is refused", "/api/customers?evil=xssi", 502, "blocked"},
		{"an answer with a byte order mark is refused", "/api/customers?evil=bom", 502, "blocked"},
		{"a second JSON value after the first is refused", "/api/customers?evil=second-value", 502, "blocked"},
		{"raw data after the JSON value is refused", "/api/customers?evil=trailing-garbage", 502, "blocked"},
		{"NaN inside a record is refused", "/api/customers?evil=nan", 502, "blocked"},
		{"trailing whitespace after the JSON is fine", "/api/customers?evil=trailing-ws", 200, "allow"},
		{"UTF-16 JSON is refused", "/api/customers?evil=utf16", 502, "blocked"},
		{"JSON labelled UTF-16 is refused: only UTF-8 answers are read", "/api/customers?evil=utf16-label", 502, "blocked"},
		{"two Content-Encoding header lines are decoded in order", "/api/customers?evil=two-encodings", 200, "allow"},
		{"Content-Encoding identity is read as plain JSON", "/api/customers?evil=identity", 200, "allow"},
		{"gzip applied twice is decoded twice", "/api/customers?evil=double-gzip", 200, "allow"},
		{"an upper-case ATTACHMENT disposition is a blocked download", "/api/customers?evil=attachment-upper", 403, "blocked"},
		{"an attachment with filename* is a blocked download", "/api/customers?evil=attachment-star", 403, "blocked"},
		{"an unknown disposition type (browsers save it like an attachment) is a blocked download", "/api/files/x?evil=disposition-unknown", 403, "blocked"},
		{"an inline disposition is not a download", "/api/files/x?evil=disposition-inline", 200, "allow"},
		{"CSV with a charset parameter is a blocked download", "/api/files/x?evil=csv-charset", 403, "blocked"},
		{"CSV sent as application/octet-stream without a disposition is a blocked download", "/api/files/x?evil=csv-octet", 403, "blocked"},
		{"a field sent as a trailer after a rewritten answer does not reach the client", "/api/customers?evil=trailer", 200, "allow"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(s.auditEvents(t))
			resp, body := s.raw(t, fmt.Sprintf("GET %s HTTP/1.1\r\nHost: {HOST}\r\nX-Test-User: zhang\r\nConnection: close\r\nTE: trailers\r\n\r\n", tt.path))
			if l := leaked(body); l != "" {
				t.Fatalf("status %d leaked %q: %.300s", resp.StatusCode, l, body)
			}
			for k, vs := range resp.Trailer {
				if l := leaked(strings.Join(vs, " ")); l != "" {
					t.Fatalf("trailer %s leaked %q", k, l)
				}
			}
			if resp.StatusCode != tt.wantStatus {
				t.Errorf("status %d, want %d: %.300s", resp.StatusCode, tt.wantStatus, body)
			}
			ev := s.oneAuditEvent(t, before)
			if ev["decision"] != tt.decision || ev["status"] != float64(resp.StatusCode) {
				t.Errorf("audit decision %v status %v, want %s %d: %v", ev["decision"], ev["status"], tt.decision, resp.StatusCode, ev)
			}
		})
	}
}

// TestRedteamCRMCannotSetTheProxysCookies plays a CRM that tries to plant
// the proxy's session cookie (session fixation, or signing the user out):
// its own cookies pass, the proxy's never do.
func TestRedteamCRMCannotSetTheProxysCookies(t *testing.T) {
	s := startRedteam(t, redteamRules, "")
	resp, body := s.raw(t, "GET /api/customers?evil=set-cookie HTTP/1.1\r\nHost: {HOST}\r\nX-Test-User: zhang\r\nConnection: close\r\n\r\n")
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	var names []string
	for _, c := range resp.Cookies() {
		names = append(names, c.Name)
	}
	for _, n := range names {
		if strings.Contains(strings.ToLower(n), "crmguard") {
			t.Fatalf("the CRM set the proxy's cookie %q (cookies: %v)", n, names)
		}
	}
	if len(names) != 1 || names[0] != "crm_lang" {
		t.Fatalf("the CRM's own cookie should pass, got %v", names)
	}
}

// TestRedteamPerUserAnswersAreNeverSharedByCaches plays a CRM that lets
// shared caches (a CDN in front of the proxy) keep answers it computed for
// one user: max-age without private, Expires, or nothing at all (heuristic
// freshness from Last-Modified). A cookie does not stop a shared cache, so
// every answer on a signed-in route must say private.
func TestRedteamPerUserAnswersAreNeverSharedByCaches(t *testing.T) {
	s := startRedteam(t, redteamRules, "")
	tests := []struct{ name, evil, want string }{
		{"max-age without private becomes private", "cache-maxage", "private, max-age=600"},
		{"no Cache-Control with Last-Modified becomes private", "cache-none", "private"},
		{"Expires alone becomes private", "cache-expires", "private"},
		{"an answer already private is left alone", "cache-private", "private, max-age=60"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := s.raw(t, "GET /api/files/x?evil="+tt.evil+" HTTP/1.1\r\nHost: {HOST}\r\nX-Test-User: zhang\r\nConnection: close\r\n\r\n")
			if resp.StatusCode != 200 {
				t.Fatalf("status %d: %.200s", resp.StatusCode, body)
			}
			if got := resp.Header.Get("Cache-Control"); got != tt.want {
				t.Fatalf("Cache-Control %q, want %q", got, tt.want)
			}
		})
	}
}

// TestRedteamRewrittenAnswersAreLabelledJSON plays a CRM that labels its
// JSON as HTML (a customer name holding a script would run in the
// browser), as text, as UTF-16, or not at all. A rewritten answer is JSON
// in UTF-8 by construction: it is labelled so, and browsers may not sniff.
func TestRedteamRewrittenAnswersAreLabelledJSON(t *testing.T) {
	s := startRedteam(t, redteamRules, "")
	for _, evil := range []string{"html-json", "text-json", "no-type", "none"} {
		t.Run("a "+evil+" answer is sent as application/json with nosniff", func(t *testing.T) {
			resp, body := s.raw(t, "GET /api/customers?evil="+evil+" HTTP/1.1\r\nHost: {HOST}\r\nX-Test-User: zhang\r\nConnection: close\r\n\r\n")
			if resp.StatusCode != 200 {
				t.Fatalf("status %d: %.200s", resp.StatusCode, body)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Fatalf("Content-Type %q", ct)
			}
			if resp.Header.Get("X-Content-Type-Options") != "nosniff" {
				t.Fatalf("no nosniff: %v", resp.Header)
			}
		})
	}
}

// TestRedteamCRMDownIsAuditedOnce stops the CRM: the client gets a 502
// without data and the audit has exactly one event with that status.
func TestRedteamCRMDownIsAuditedOnce(t *testing.T) {
	s := startRedteam(t, redteamRules, "")
	s.crm.Close()
	for _, path := range []string{"/api/customers", "/api/files/x"} {
		t.Run("a request to "+path+" with the CRM down", func(t *testing.T) {
			before := len(s.auditEvents(t))
			resp, body := s.raw(t, "GET "+path+" HTTP/1.1\r\nHost: {HOST}\r\nX-Test-User: zhang\r\nConnection: close\r\n\r\n")
			if resp.StatusCode != 502 {
				t.Fatalf("status %d: %s", resp.StatusCode, body)
			}
			ev := s.oneAuditEvent(t, before)
			if ev["status"] != float64(502) || ev["decision"] != "error" {
				t.Fatalf("audit %v", ev)
			}
			t.Logf("audit decision %v: %v", ev["decision"], ev["reason"])
		})
	}
}

// TestRedteamCSVUnderOtherNamesIsADownload plays a CRM that labels its
// customer CSV with one of the other names CSV and spreadsheets go by, on
// a route that is not an approved export.
func TestRedteamCSVUnderOtherNamesIsADownload(t *testing.T) {
	s := startRedteam(t, redteamRules, "")
	for _, ct := range []string{"text/x-csv", "application/x-csv", "text/comma-separated-values", "text/x-comma-separated-values", "TEXT/CSV", "application/x-excel", "application/vnd.ms-excel.sheet.macroEnabled.12"} {
		t.Run(ct+" is a blocked download", func(t *testing.T) {
			before := len(s.auditEvents(t))
			resp, body := s.raw(t, "GET /api/files/x?evil=csv-x&type="+url.QueryEscape(ct)+" HTTP/1.1\r\nHost: {HOST}\r\nX-Test-User: zhang\r\nConnection: close\r\n\r\n")
			if l := leaked(body); l != "" || resp.StatusCode != 403 {
				t.Fatalf("status %d leaked %q: %.100s", resp.StatusCode, l, body)
			}
			if ev := s.oneAuditEvent(t, before); ev["decision"] != "blocked" {
				t.Fatalf("audit %v", ev)
			}
		})
	}
}
