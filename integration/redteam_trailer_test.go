package integration

import (
	"testing"
)

// TestRedteamRequestTrailersNeverReachTheCRM sends a chunked request whose
// trailer section holds identity and method-override headers: they arrive
// after the rules judged the headers, and a server that merges trailers
// into headers would trust them. No trailer reaches the CRM.
func TestRedteamRequestTrailersNeverReachTheCRM(t *testing.T) {
	s := startRedteam(t, redteamRules, "")
	resp, body := s.raw(t, "GET /api/files/x HTTP/1.1\r\nHost: {HOST}\r\nX-Test-User: zhang\r\nTransfer-Encoding: chunked\r\nTrailer: X-CRM-User, X-HTTP-Method-Override\r\nConnection: close\r\n\r\n2\r\nhi\r\n0\r\nX-CRM-User: admin\r\nX-HTTP-Method-Override: DELETE\r\n\r\n")
	got := s.crm.lastRequest()
	if resp.StatusCode != 200 || got == nil {
		t.Fatalf("status %d: %.100s", resp.StatusCode, body)
	}
	if len(got.Trailer) != 0 {
		t.Fatalf("the CRM received trailers %v", got.Trailer)
	}
	if got.Header.Get("X-Crm-User") != "zhang" || got.Header.Get("X-Http-Method-Override") != "" {
		t.Fatalf("the CRM's headers: %v", got.Header)
	}
}
