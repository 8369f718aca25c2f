package caddymodule

import (
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/crmguard/crmguard/rules"
)

// csvGuardRules has an approved export route that rewrites CSV answers.
const csvGuardRules = `version: 1
default: deny
subject: {id: claims.sub}
roles: {sales: {}, manager: {inherits: [sales]}}
routes:
  - id: customers.export
    match: {methods: [GET], path: /api/customers/export}
    allow: [sales]
    export: {approval: true, without_approval: [manager]}
    records: "@this"
    visible: record.owner_id == user.id || "manager" in user.roles
    fields:
      "**.phone": {mask: phone}
      "**.id_card": {mask: id_card}
      bank_account: remove
    audit_id: id
  - id: customers.list
    match: {methods: [GET], path: /api/customers}
    allow: [sales]
    records: list
`

func newCSVGuard(t *testing.T, u *testUser) (*Guard, *memSink) {
	t.Helper()
	set, err := rules.Load("csv.yaml", []byte(csvGuardRules))
	if err != nil {
		t.Fatal(err)
	}
	sink := &memSink{}
	g, err := NewGuard(GuardOptions{Rules: func() *rules.Set { return set }, Audit: sink, Provider: &testProvider{user: u}})
	if err != nil {
		t.Fatal(err)
	}
	return g, sink
}

func TestCSVExportsThroughTheGuard(t *testing.T) {
	manager := &testUser{id: "wang", roles: []string{"manager"}}
	const export = "id,name,phone,id_card,bank_account,owner_id\r\n" +
		"1,张伟,13812345678,110101199003071234,6222021234567890123,zhang\r\n" +
		"2,\"Schmidt, Emma\",13698765432,31010119851111002X,6217001234567890,wu\r\n"
	const want = "id,name,phone,id_card,owner_id\r\n" +
		"1,张伟,138****5678,110101********1234,zhang\r\n" +
		"2,\"Schmidt, Emma\",136****5432,310101********002X,wu\r\n"
	secrets := []string{"13812345678", "110101199003071234", "6222021234567890123", "6217001234567890", "bank_account"}
	tests := []struct {
		name       string
		user       *testUser
		path       string
		header     http.Header
		body       []byte
		wantStatus int
		wantBody   string
	}{
		{name: "a manager's approved CSV export is masked and loses the bank column", user: manager, path: "/api/customers/export",
			body: []byte(export), wantStatus: 200, wantBody: want},
		{name: "a gzip CSV export is decoded, rewritten and sent uncompressed", user: manager, path: "/api/customers/export",
			header: http.Header{"Content-Encoding": {"gzip"}}, body: gz([]byte(export)), wantStatus: 200, wantBody: want},
		{name: "a br CSV export is decoded, rewritten and sent uncompressed", user: manager, path: "/api/customers/export",
			header: http.Header{"Content-Encoding": {"br"}}, body: br([]byte(export)), wantStatus: 200, wantBody: want},
		{name: "a spreadsheet on the export route is refused with 502", user: manager, path: "/api/customers/export",
			header: http.Header{"Content-Type": {"application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"}}, body: []byte(export), wantStatus: 502},
		{name: "a ragged CSV export is refused with 502", user: manager, path: "/api/customers/export",
			body: []byte(export + "3,x\r\n"), wantStatus: 502},
		{name: "a CSV on a route that is not an export is still blocked with 403", user: manager, path: "/api/customers",
			body: []byte(export), wantStatus: 403},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g, sink := newCSVGuard(t, tt.user)
			up := &upstream{header: http.Header{"Content-Type": {"text/csv; charset=utf-8"},
				"Content-Disposition": {`attachment; filename="customers.csv"`},
				"Content-Length":      {strconv.Itoa(len(tt.body))}, "Etag": {`"v1"`}}, body: tt.body}
			for k, v := range tt.header {
				up.header[k] = v
			}
			rec := serve(t, g, httptest.NewRequest("GET", tt.path, nil), up)
			got := rec.Body.String()
			if rec.Code != tt.wantStatus {
				t.Fatalf("status: want %d, got %d: %s", tt.wantStatus, rec.Code, got)
			}
			for _, s := range secrets {
				if strings.Contains(got, s) {
					t.Errorf("the answer leaks %q: %s", s, got)
				}
			}
			if tt.wantBody == "" {
				return
			}
			if got != tt.wantBody {
				t.Errorf("body:\nwant %q\ngot  %q", tt.wantBody, got)
			}
			h := rec.Header()
			if cl := h.Get("Content-Length"); cl != strconv.Itoa(len(got)) {
				t.Errorf("Content-Length %q for a body of %d bytes", cl, len(got))
			}
			if ce, et := h.Get("Content-Encoding"), h.Get("Etag"); ce != "" || et != "" {
				t.Errorf("Content-Encoding %q and ETag %q survive the rewrite", ce, et)
			}
			if cd := h.Get("Content-Disposition"); cd != `attachment; filename="customers.csv"` {
				t.Errorf("Content-Disposition %q, want the CRM's", cd)
			}
			if ct := h.Get("Content-Type"); ct != "text/csv; charset=utf-8" {
				t.Errorf("Content-Type %q, want the CRM's text/csv label kept", ct)
			}
			if h.Get("X-Content-Type-Options") != "nosniff" {
				t.Errorf("X-Content-Type-Options %q, want nosniff", h.Get("X-Content-Type-Options"))
			}
			ev := sink.last(t)
			if ev.RecordsIn != 2 || ev.RecordsOut != 2 || strings.Join(ev.RecordIDs, ",") != "1,2" || ev.Fields["remove:bank_account"] != 2 || !ev.Export.Download {
				t.Errorf("audit event %+v", ev)
			}
		})
	}
}
