package caddymodule

import (
	"net/http/httptest"
	"strings"
	"testing"
)

func TestRequestBodies(t *testing.T) {
	tests := []struct {
		name       string
		body       string
		encoding   string
		maxBody    int64
		wantStatus int
	}{
		{name: "a body without guarded fields reaches the CRM unchanged", body: `{"name":"ACME"}`, wantStatus: 200},
		{name: "a guarded field is refused", body: `{"name":"ACME","stage":"won"}`, wantStatus: 403},
		{name: "a body over max_body is refused with 413", body: `{"name":"` + strings.Repeat("a", 200) + `"}`, maxBody: 100, wantStatus: 413},
		{name: "a compressed body that cannot be checked is refused", body: `{"stage":"won"}`, encoding: "gzip", wantStatus: 415},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g, _ := newTestGuard(t, guardSetup{user: zhang, maxBody: tt.maxBody})
			req := httptest.NewRequest("PATCH", "/api/customers/7", strings.NewReader(tt.body))
			req.Header.Set("Content-Type", "application/json")
			if tt.encoding != "" {
				req.Header.Set("Content-Encoding", tt.encoding)
			}
			up := jsonUpstream(`{"ok":true}`)
			rec := serve(t, g, req, up)
			if rec.Code != tt.wantStatus {
				t.Fatalf("status: want %d, got %d: %s", tt.wantStatus, rec.Code, rec.Body)
			}
			if tt.wantStatus == 200 {
				if string(up.gotBody) != tt.body {
					t.Errorf("the CRM got body %q, want %q", up.gotBody, tt.body)
				}
				if up.got.ContentLength != int64(len(tt.body)) {
					t.Errorf("the CRM got Content-Length %d, want %d", up.got.ContentLength, len(tt.body))
				}
			} else if up.got != nil {
				t.Errorf("a refused body reached the CRM")
			}
		})
	}
}

func TestShadowModeRequestBodies(t *testing.T) {
	tests := []struct {
		name    string
		body    string
		maxBody int64
		wantDec string
	}{
		{name: "a guarded field passes and is audited as a denial", body: `{"stage":"won"}`, wantDec: "deny"},
		{name: "a body over max_body passes whole", body: `{"name":"` + strings.Repeat("x", 300) + `"}`, maxBody: 100, wantDec: "allow"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g, sink := newTestGuard(t, guardSetup{user: zhang, shadow: true, maxBody: tt.maxBody})
			req := httptest.NewRequest("PATCH", "/api/customers/7", strings.NewReader(tt.body))
			req.Header.Set("Content-Type", "application/json")
			up := jsonUpstream(`{"ok":true}`)
			rec := serve(t, g, req, up)
			if rec.Code != 200 {
				t.Fatalf("shadow mode refused: %d %s", rec.Code, rec.Body)
			}
			if string(up.gotBody) != tt.body {
				t.Errorf("the CRM got %d bytes, want the whole %d-byte body", len(up.gotBody), len(tt.body))
			}
			ev := sink.last(t)
			if !ev.Shadow || ev.Decision != tt.wantDec || ev.Reason == "" {
				t.Errorf("audit: %+v", ev)
			}
		})
	}
}
