package rules

import (
	"bytes"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"
)

const streamRules = `version: 1
roles: {sales: {}, admin: {}}
routes:
  - id: list
    match: {methods: [GET, HEAD], path: /api/customers}
    allow: [sales]
    records: list
    visible: record.owner_id == user.id
    fields:
      phone: {mask: phone}
    audit_id: id
  - id: capped
    match: {methods: [GET], path: /api/capped}
    allow: [sales]
    records: list
    max_records: 3
  - id: export
    match: {methods: [GET], path: /api/export}
    allow: [admin]
    export: {approval: true, without_approval: [admin]}
    records: list
    max_records: 3
    audit_id: id
  - id: one
    match: {methods: [GET], path: "/api/customers/{id}"}
    allow: [sales]
    record: "@this"
  - id: paged
    match: {methods: [GET], path: /api/paged}
    allow: [sales]
    records: list
    answer:
      total: {remove: true, except: [admin]}
      "meta.next": remove
  - id: counted
    match: {methods: [GET], path: /api/counted}
    allow: [sales]
    records: list
    answer:
      total: {replace: 0}
`

func TestWhichAnswersStream(t *testing.T) {
	s, err := Load("stream.yaml", []byte(streamRules))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)
	sales := s.UserFromRoles("zhang", []string{"sales"}, nil, true, now)
	admin := s.UserFromRoles("root", []string{"admin"}, nil, true, now)
	jsonType := http.Header{"Content-Type": {"application/json"}}
	cases := []struct {
		name   string
		user   *User
		method string
		target string
		status int
		header http.Header
		want   bool
	}{
		{"a JSON list streams", sales, "GET", "/api/customers", 200, jsonType, true},
		{"a CSV table streams", sales, "GET", "/api/customers", 200, http.Header{"Content-Type": {"text/csv"}}, true},
		{"a TSV table streams", sales, "GET", "/api/customers", 200, http.Header{"Content-Type": {"text/tab-separated-values"}}, true},
		{"an answer the CRM compressed does not", sales, "GET", "/api/customers", 200, http.Header{"Content-Type": {"application/json"}, "Content-Encoding": {"gzip"}}, false},
		{"a spreadsheet does not", sales, "GET", "/api/customers", 200, http.Header{"Content-Type": {"application/vnd.ms-excel"}}, false},
		{"a charset other than UTF-8 does not", sales, "GET", "/api/customers", 200, http.Header{"Content-Type": {"application/json; charset=gbk"}}, false},
		{"a HEAD answer does not", sales, "HEAD", "/api/customers", 200, jsonType, false},
		{"a partial answer does not", sales, "GET", "/api/customers", 206, jsonType, false},
		{"an error answer does not", sales, "GET", "/api/customers", 500, jsonType, false},
		{"a route with max_records that is no export does not: it refuses whole", sales, "GET", "/api/capped", 200, jsonType, false},
		{"an export this user may run streams, max_records or not", admin, "GET", "/api/export", 200, jsonType, true},
		{"a single record does not", sales, "GET", "/api/customers/7", 200, jsonType, false},
		{"a route whose answer fields remove streams", sales, "GET", "/api/paged", 200, jsonType, true},
		{"a route with an answer field that replaces does not", sales, "GET", "/api/counted", 200, jsonType, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := s.Decide(c.user, request(c.method, c.target))
			if d.Outcome != Allow {
				t.Fatalf("not allowed: %s", d.Reason)
			}
			if got := d.Streamable(c.status, c.header); got != c.want {
				t.Fatalf("Streamable = %v, want %v", got, c.want)
			}
		})
	}
	t.Run("shadow mode does not: the answer passes unchanged", func(t *testing.T) {
		shadow, err := Load("stream.yaml", []byte(strings.Replace(streamRules, "version: 1", "version: 1\nmode: shadow", 1)))
		if err != nil {
			t.Fatal(err)
		}
		d := shadow.Decide(shadow.UserFromRoles("zhang", []string{"sales"}, nil, true, now), request("GET", "/api/customers"))
		if d.Streamable(200, jsonType) {
			t.Fatal("a shadow decision streams")
		}
	})
}

func TestRewriteStreamAuditsWhatTheClientReceived(t *testing.T) {
	s, err := Load("stream.yaml", []byte(streamRules))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)
	admin := s.UserFromRoles("root", []string{"admin"}, nil, true, now)
	sales := s.UserFromRoles("zhang", []string{"sales"}, nil, true, now)
	h := http.Header{"Content-Type": {"application/json"}}
	body := `{"list":[{"id":"1","owner_id":"zhang","phone":"13812345678"},{"id":"2","owner_id":"li","phone":"13900001111"},{"id":"3","owner_id":"zhang","phone":"13812345678"}],"total":3}`

	t.Run("a whole answer: the visible records, masked, and their ids", func(t *testing.T) {
		d := s.Decide(sales, request("GET", "/api/customers"))
		var out bytes.Buffer
		n := 0
		err := d.RewriteStream(200, h, strings.NewReader(body), 0, func(b []byte, records int) error {
			out.Write(b)
			n += records
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(out.String(), "13812345678") || strings.Contains(out.String(), `"2"`) || n != 2 {
			t.Fatalf("%d records: %s", n, out.String())
		}
		if d.Audit.RecordsIn != 3 || d.Audit.RecordsOut != 2 || strings.Join(d.Audit.RecordIDs, ",") != "1,3" || !d.Audit.Streamed || d.Audit.Fields["mask:phone"] != 2 {
			t.Fatalf("audit %+v", d.Audit)
		}
	})
	t.Run("a refused write cuts the answer and nothing of it is counted", func(t *testing.T) {
		d := s.Decide(admin, request("GET", "/api/export"))
		stop := errors.New("the client went away")
		err := d.RewriteStream(200, h, strings.NewReader(body), 0, func([]byte, int) error { return stop })
		var cut *StreamCut
		if !errors.As(err, &cut) || !errors.Is(err, stop) || cut.Records != 0 {
			t.Fatalf("error %v, want a cut after 0 records wrapping the write's error", err)
		}
		if d.Audit.Decision != "cut" || d.Audit.RecordsOut != 0 || len(d.Audit.RecordIDs) != 0 || !strings.Contains(d.Audit.Reason, "cut after 0 records") {
			t.Fatalf("audit %+v", d.Audit)
		}
	})
	t.Run("answer fields are removed from a streamed answer", func(t *testing.T) {
		d := s.Decide(sales, request("GET", "/api/paged"))
		var out bytes.Buffer
		doc := `{"total":3,"list":[{"id":"1"}],"meta":{"next":"/p2","size":1}}`
		if err := d.RewriteStream(200, h, strings.NewReader(doc), 0, func(b []byte, _ int) error { out.Write(b); return nil }); err != nil {
			t.Fatal(err)
		}
		if out.String() != `{"list":[{"id":"1"}],"meta":{"size":1}}` || d.Audit.Fields["remove:answer.total"] != 1 {
			t.Fatalf("%s; fields %v", out.String(), d.Audit.Fields)
		}
	})
	t.Run("an export past max_records is flagged too_many, not refused", func(t *testing.T) {
		d := s.Decide(admin, request("GET", "/api/export"))
		big := `{"list":[` + strings.Repeat(`{"id":"x","owner_id":"li"},`, 9) + `{"id":"y"}]}`
		if err := d.RewriteStream(200, h, strings.NewReader(big), 0, func([]byte, int) error { return nil }); err != nil {
			t.Fatal(err)
		}
		if d.Audit.RecordsOut != 10 || !d.Audit.Export.TooMany || !d.Audit.Export.Approved {
			t.Fatalf("audit %+v", d.Audit)
		}
	})
}
