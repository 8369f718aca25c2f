package rules

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"
)

// shanghaiWorkday is a Tuesday 10:00 in Asia/Shanghai (inside business_hours).
var shanghaiWorkday = time.Date(2026, 11, 24, 10, 0, 0, 0, time.FixedZone("CST", 8*3600))

func request(method, target string) *Request {
	u, err := url.ParseRequestURI(target)
	if err != nil {
		panic(err)
	}
	return &Request{Method: method, URL: u, Header: http.Header{}, Now: shanghaiWorkday}
}

const responseRules = `version: 1
roles: {sales: {}, manager: {inherits: [sales]}, finance: {}, marketing: {}, admin: {}}
routes:
  - id: list
    match: {methods: [GET], path: /api/customers}
    allow: [sales, finance, marketing]
    records: list
    visible: record.owner_id == user.id || "manager" in user.roles || timestamp(record.last_contact_at) < now - duration("8760h")
    fields:
      phone: {mask: phone, except: [manager]}
      notes: {remove: true, for: [finance, marketing]}
      email: {hash: true, for: [marketing]}
      secret: {null: true, when: record.level > 2}
      tier: {replace: {hidden: true}, unless: '"manager" in user.roles'}
      "**.password": remove
    max_records: 3
    audit_id: id
  - id: one
    match: {methods: [GET], path: "/api/customers/{id}"}
    allow: [sales]
    record: "@this"
    visible: record.owner_id == user.id
    expose: [id, name, phone]
    fields:
      phone: {mask: phone}
  - id: export
    match: {methods: [GET], path: /api/export}
    allow: [admin]
    export: {approval: true, without_approval: [admin]}
  - id: plain
    match: {path: /api/plain/**}
    allow: [sales, admin]
`

func rec(id int, owner, lastContact string, extra string) string {
	return `{"id":` + itoa(id) + `,"owner_id":"` + owner + `","last_contact_at":"` + lastContact + `","phone":"13812345678","notes":"n","email":"a@b.cn","secret":"s","level":3,"tier":"gold","meta":{"password":"pw"}` + extra + `}`
}

func itoa(i int) string { b, _ := json.Marshal(i); return string(b) }

func rewriteFor(t *testing.T, s *Set, u *User, target, body string) (*Decision, map[string]any, *Block) {
	t.Helper()
	d := s.Decide(u, request("GET", target))
	if d.Outcome != Allow {
		t.Fatalf("not allowed: %s", d.Reason)
	}
	h := http.Header{"Content-Type": {"application/json"}}
	if buf, blk := d.InspectResponse(200, h); !buf || blk != nil {
		t.Fatalf("InspectResponse = %v %v", buf, blk)
	}
	out, blk, err := d.Rewrite(nil, 200, h, []byte(body))
	if err != nil {
		t.Fatalf("Rewrite: %v", err)
	}
	if blk != nil {
		return d, nil, blk
	}
	var v map[string]any
	if err := json.Unmarshal(out, &v); err != nil {
		t.Fatalf("output is not JSON: %v: %s", err, out)
	}
	return d, v, nil
}

func TestResponsesAreRewrittenPerUser(t *testing.T) {
	s := mustLoad(t, responseRules)
	recent, old := "2026-10-01T00:00:00Z", "2024-01-01T00:00:00Z"
	body := `{"list":[` + rec(1, "zhang", recent, "") + `,` + rec(2, "li", recent, "") + `,` + rec(3, "li", old, "") + `]}`
	mac := hmac.New(sha256.New, []byte("k"))
	mac.Write([]byte("a@b.cn"))
	emailHash := hex.EncodeToString(mac.Sum(nil))
	cases := []struct {
		name   string
		roles  []string
		ids    []float64
		check  func(t *testing.T, r map[string]any)
		fields map[string]int
	}{
		{"a sales rep sees own and public-pool records with the phone masked", []string{"sales"}, []float64{1, 3},
			func(t *testing.T, r map[string]any) {
				if r["phone"] != "138****5678" || r["notes"] != "n" || r["email"] != "a@b.cn" {
					t.Errorf("record %v", r)
				}
			}, map[string]int{"mask:phone": 2, "null:secret": 2, "replace:tier": 2, "remove:**.password": 2}},
		{"a manager sees everything with the phone in clear", []string{"manager"}, []float64{1, 2, 3},
			func(t *testing.T, r map[string]any) {
				if r["phone"] != "13812345678" || r["tier"] != "gold" {
					t.Errorf("record %v", r)
				}
			}, map[string]int{"null:secret": 3, "remove:**.password": 3}},
		{"finance loses the notes", []string{"finance"}, []float64{1, 3},
			func(t *testing.T, r map[string]any) {
				if _, ok := r["notes"]; ok {
					t.Errorf("notes survived: %v", r)
				}
			}, nil},
		{"marketing gets a keyed hash of the email", []string{"marketing"}, []float64{1, 3},
			func(t *testing.T, r map[string]any) {
				if r["email"] != emailHash {
					t.Errorf("email %v, want %s", r["email"], emailHash)
				}
			}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d, out, blk := rewriteFor(t, s, s.UserFromRoles("zhang", c.roles, nil, true, shanghaiWorkday), "/api/customers", body)
			if blk != nil {
				t.Fatalf("blocked: %+v", blk)
			}
			list := out["list"].([]any)
			var ids []float64
			for _, x := range list {
				r := x.(map[string]any)
				ids = append(ids, r["id"].(float64))
				c.check(t, r)
				if r["secret"] != nil {
					t.Errorf("secret survived a true per-record when: %v", r)
				}
				if pw := r["meta"].(map[string]any)["password"]; pw != nil {
					t.Errorf("**.password survived: %v", r)
				}
			}
			if !reflect.DeepEqual(ids, c.ids) {
				t.Fatalf("ids %v, want %v", ids, c.ids)
			}
			if d.Audit.RecordsIn != 3 || d.Audit.RecordsOut != len(c.ids) || len(d.Audit.RecordIDs) != len(c.ids) {
				t.Errorf("audit %+v", d.Audit)
			}
			for k, v := range c.fields {
				if d.Audit.Fields[k] != v {
					t.Errorf("audit fields %v, want %s = %d", d.Audit.Fields, k, v)
				}
			}
		})
	}
}

func TestRecordsWhoseConditionFailsAreHiddenAndCounted(t *testing.T) {
	s := mustLoad(t, responseRules)
	body := `{"list":[{"id":1,"owner_id":"zhang"},{"id":2,"owner_id":"li","last_contact_at":"not a time"},{"id":3,"owner_id":"li"},{"id":4,"owner_id":"li","owner_id":"zhang","last_contact_at":"2026-10-01T00:00:00Z"}]}`
	d, out, _ := rewriteFor(t, s, s.UserFromRoles("zhang", []string{"sales"}, nil, true, shanghaiWorkday), "/api/customers", body)
	list := out["list"].([]any)
	if len(list) != 1 || list[0].(map[string]any)["id"].(float64) != 1 {
		t.Fatalf("visible %v, want only record 1", list)
	}
	// 2: a bad timestamp, 3: no last_contact_at, 4: owner_id twice with
	// different values (ambiguous, so absent) -> three errors.
	if d.Audit.EvalErrors != 3 || !reflect.DeepEqual(d.Audit.RecordIDs, []string{"1"}) {
		t.Fatalf("audit %+v", d.Audit)
	}
}

func TestASingleRecordAnswer(t *testing.T) {
	s := mustLoad(t, responseRules)
	sales := s.UserFromRoles("zhang", []string{"sales"}, nil, true, shanghaiWorkday)
	t.Run("a visible record keeps only exposed fields", func(t *testing.T) {
		_, out, blk := rewriteFor(t, s, sales, "/api/customers/1", `{"id":1,"name":"A","phone":"13812345678","owner_id":"zhang","bank":"622"}`)
		if blk != nil {
			t.Fatalf("blocked %+v", blk)
		}
		want := map[string]any{"id": 1.0, "name": "A", "phone": "138****5678"}
		if !reflect.DeepEqual(out, want) {
			t.Fatalf("got %v, want %v", out, want)
		}
	})
	t.Run("a record that is not visible becomes 404", func(t *testing.T) {
		d, _, blk := rewriteFor(t, s, sales, "/api/customers/2", `{"id":2,"owner_id":"li"}`)
		if blk == nil || blk.Status != 404 || d.Audit.Decision != "block" {
			t.Fatalf("block %+v audit %+v", blk, d.Audit)
		}
	})
}

func TestExportsAndDownloads(t *testing.T) {
	s := mustLoad(t, responseRules)
	sales := s.UserFromRoles("zhang", []string{"sales"}, nil, true, shanghaiWorkday)
	admin := s.UserFromRoles("root", []string{"admin"}, nil, true, shanghaiWorkday)
	cases := []struct {
		name   string
		user   *User
		target string
		header http.Header
		status int // 0: not blocked
	}{
		{"an attachment on a route not marked export is blocked", sales, "/api/plain/x", http.Header{"Content-Disposition": {`attachment; filename="c.json"`}}, 403},
		{"an attachment written in capitals is blocked", sales, "/api/plain/x", http.Header{"Content-Disposition": {`ATTACHMENT`}}, 403},
		{"an unreadable Content-Disposition counts as a download", sales, "/api/plain/x", http.Header{"Content-Disposition": {`attachment; filename="unterminated`}}, 403},
		{"a CSV answer is blocked", sales, "/api/plain/x", http.Header{"Content-Type": {"text/csv; charset=utf-8"}}, 403},
		{"an Excel answer is blocked", sales, "/api/plain/x", http.Header{"Content-Type": {"application/vnd.ms-excel"}}, 403},
		{"an xlsx answer is blocked", sales, "/api/plain/x", http.Header{"Content-Type": {"application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"}}, 403},
		{"an OpenDocument spreadsheet is blocked", sales, "/api/plain/x", http.Header{"Content-Type": {"application/vnd.oasis.opendocument.spreadsheet"}}, 403},
		{"an octet-stream answer (browsers save it) is blocked", sales, "/api/plain/x", http.Header{"Content-Type": {"application/octet-stream"}}, 403},
		{"a force-download answer is blocked", sales, "/api/plain/x", http.Header{"Content-Type": {"application/force-download"}}, 403},
		{"an image answer passes", sales, "/api/plain/x", http.Header{"Content-Type": {"image/png"}}, 0},
		{"an inline answer passes", sales, "/api/plain/x", http.Header{"Content-Disposition": {"inline"}, "Content-Type": {"application/json"}}, 0},
		{"a download on an approved export route passes", admin, "/api/export", http.Header{"Content-Type": {"text/csv"}, "Content-Disposition": {"attachment"}}, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := s.Decide(c.user, request("GET", c.target))
			if d.Outcome != Allow {
				t.Fatalf("not allowed: %s", d.Reason)
			}
			_, blk := d.InspectResponse(200, c.header)
			if c.status == 0 {
				if blk != nil {
					t.Fatalf("blocked: %+v", blk)
				}
				if !d.Audit.Export.Download && c.header.Get("Content-Type") == "text/csv" {
					t.Error("the download was not flagged")
				}
				return
			}
			if blk == nil || blk.Status != c.status || !d.Audit.Export.Download || !d.Audit.Export.Blocked || !strings.Contains(blk.Reason, "download") {
				t.Fatalf("block %+v audit %+v", blk, d.Audit)
			}
		})
	}
}

func TestMoreRecordsThanMaxRecordsIsABlockedExport(t *testing.T) {
	s := mustLoad(t, responseRules)
	manager := s.UserFromRoles("wang", []string{"manager"}, nil, true, shanghaiWorkday)
	sales := s.UserFromRoles("zhang", []string{"sales"}, nil, true, shanghaiWorkday)
	var recs []string
	for i := 1; i <= 5; i++ {
		recs = append(recs, rec(i, "li", "2026-10-01T00:00:00Z", ""))
	}
	recs = append(recs, rec(6, "zhang", "2026-10-01T00:00:00Z", ""))
	body := `{"list":[` + strings.Join(recs, ",") + `]}`
	t.Run("a manager who sees six records is blocked", func(t *testing.T) {
		d, _, blk := rewriteFor(t, s, manager, "/api/customers", body)
		if blk == nil || blk.Status != 403 || !d.Audit.Export.TooMany || !d.Audit.Export.Blocked {
			t.Fatalf("block %+v audit %+v", blk, d.Audit)
		}
	})
	t.Run("a rep who sees one of the six passes: hidden records do not count", func(t *testing.T) {
		d, out, blk := rewriteFor(t, s, sales, "/api/customers", body)
		if blk != nil || len(out["list"].([]any)) != 1 || d.Audit.Export.TooMany {
			t.Fatalf("block %+v audit %+v", blk, d.Audit)
		}
	})
}

func TestAnswersThatCannotBeRewritten(t *testing.T) {
	s := mustLoad(t, responseRules)
	sales := s.UserFromRoles("zhang", []string{"sales"}, nil, true, shanghaiWorkday)
	t.Run("invalid JSON is an error the caller answers with 502", func(t *testing.T) {
		d := s.Decide(sales, request("GET", "/api/customers"))
		out, blk, err := d.Rewrite(nil, 200, nil, []byte(`{"list":[{"id":1,"phone":"13812345678"`))
		if err == nil || blk != nil || len(out) != 0 || d.Audit.Decision != "error" {
			t.Fatalf("out %q block %v err %v", out, blk, err)
		}
	})
	for _, c := range []struct {
		name, want string
		cts        []string
	}{
		{"a JSON answer in GBK (field names the rules cannot match)", "charset", []string{"application/json; charset=gbk"}},
		{"a JSON answer labelled UTF-16", "charset", []string{"application/json; charset=utf-16"}},
		{"a JSON answer labelled utf8 without its dash", "charset", []string{"application/json;charset=utf8"}},
		{"an HTML-labelled answer in Latin-1", "charset", []string{"text/html; charset=iso-8859-1"}},
		{"a JSON answer whose charset is given twice", "twice", []string{"application/json; charset=utf-8; charset=gbk"}},
		{"a JSON answer whose Content-Type cannot be read", "cannot be read", []string{"application/json; charset"}},
		{"an answer with a JSON and an HTML Content-Type line", "different formats", []string{"application/json", "text/html"}},
	} {
		t.Run(c.name+" is blocked with 502 before it is read, and an error if read", func(t *testing.T) {
			d := s.Decide(sales, request("GET", "/api/customers"))
			h := http.Header{"Content-Type": c.cts}
			buf, blk := d.InspectResponse(200, h)
			if buf || blk == nil || blk.Status != 502 || !strings.Contains(blk.Reason, c.want) {
				t.Fatalf("buffer %v block %+v; want 502 saying %q", buf, blk, c.want)
			}
			d = s.Decide(sales, request("GET", "/api/customers"))
			out, blk, err := d.Rewrite(nil, 200, h, []byte(`{"list":[{"id":1,"owner_id":"zhang","phone":"13812345678"}]}`))
			if err == nil || blk != nil || len(out) != 0 || d.Audit.Decision != "error" || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("out %q block %v err %v audit %q", out, blk, err, d.Audit.Decision)
			}
		})
	}
	for _, ct := range []string{"application/json; charset=UTF-8", "application/json; charset=us-ascii", `application/json; charset="utf-8"`, "text/plain", ""} {
		t.Run("an answer labelled "+ct+" is rewritten", func(t *testing.T) {
			d := s.Decide(sales, request("GET", "/api/customers"))
			h := http.Header{"Content-Type": {ct}}
			if buf, blk := d.InspectResponse(200, h); !buf || blk != nil {
				t.Fatalf("buffer %v block %+v", buf, blk)
			}
			out, blk, err := d.Rewrite(nil, 200, h, []byte(`{"list":[{"id":1,"owner_id":"zhang","phone":"13812345678"}]}`))
			if err != nil || blk != nil || strings.Contains(string(out), "13812345678") {
				t.Fatalf("out %q block %v err %v", out, blk, err)
			}
		})
	}
	t.Run("a partial answer is blocked with 502", func(t *testing.T) {
		d := s.Decide(sales, request("GET", "/api/customers"))
		buf, blk := d.InspectResponse(206, http.Header{"Content-Type": {"application/json"}})
		if buf || blk == nil || blk.Status != 502 {
			t.Fatalf("buffer %v block %+v", buf, blk)
		}
	})
	for _, status := range []int{500, 404, 422, 302} {
		t.Run(fmt.Sprintf("the body of a %d answer is withheld with the CRM's status", status), func(t *testing.T) {
			d := s.Decide(sales, request("GET", "/api/customers"))
			buf, blk := d.InspectResponse(status, http.Header{"Content-Type": {"application/json"}})
			if buf || blk == nil || blk.Status != status || d.Audit.Decision != "block" {
				t.Fatalf("buffer %v block %+v audit %q", buf, blk, d.Audit.Decision)
			}
		})
	}
	t.Run("a 304 answer has no body and passes", func(t *testing.T) {
		d := s.Decide(sales, request("GET", "/api/customers"))
		if buf, blk := d.InspectResponse(304, http.Header{}); buf || blk != nil {
			t.Fatalf("buffer %v block %+v", buf, blk)
		}
	})
	t.Run("a HEAD answer is not buffered", func(t *testing.T) {
		s := mustLoad(t, strings.Replace(responseRules, "methods: [GET], path: /api/customers}", "methods: [GET, HEAD], path: /api/customers}", 1))
		d := s.Decide(sales, request("HEAD", "/api/customers"))
		buf, blk := d.InspectResponse(200, http.Header{"Content-Type": {"application/json"}})
		out, blk2, err := d.Rewrite(nil, 200, nil, nil)
		if d.Outcome != Allow || buf || blk != nil || blk2 != nil || err != nil || len(out) != 0 {
			t.Fatalf("outcome %d buffer %v block %v %v err %v", d.Outcome, buf, blk, blk2, err)
		}
	})
	t.Run("a route without records is not buffered", func(t *testing.T) {
		d := s.Decide(sales, request("GET", "/api/plain/x"))
		if buf, blk := d.InspectResponse(200, http.Header{"Content-Type": {"application/json"}}); buf || blk != nil {
			t.Fatalf("buffer %v block %v", buf, blk)
		}
	})
}

func TestShadowModeRewritesNothingButAuditsEverything(t *testing.T) {
	s := mustLoad(t, strings.Replace(responseRules, "version: 1\n", "version: 1\nmode: shadow\n", 1))
	sales := s.UserFromRoles("zhang", []string{"sales"}, nil, true, shanghaiWorkday)
	body := `{"list":[` + rec(1, "zhang", "2026-10-01T00:00:00Z", "") + `,` + rec(2, "li", "2026-10-01T00:00:00Z", "") + `]}`
	d := s.Decide(sales, request("GET", "/api/customers"))
	out, blk, err := d.Rewrite([]byte("prefix:"), 200, nil, []byte(body))
	if err != nil || blk != nil || string(out) != "prefix:"+body {
		t.Fatalf("out %q block %v err %v", out, blk, err)
	}
	if !d.Audit.Shadow || d.Audit.RecordsIn != 2 || d.Audit.RecordsOut != 1 || d.Audit.Fields["mask:phone"] != 1 {
		t.Fatalf("audit %+v", d.Audit)
	}
	d = s.Decide(sales, request("GET", "/api/customers/2"))
	out, blk, err = d.Rewrite(nil, 200, nil, []byte(`{"id":2,"owner_id":"li"}`))
	if err != nil || blk != nil || string(out) != `{"id":2,"owner_id":"li"}` || d.Audit.Decision != "block" || !strings.HasPrefix(d.Audit.Reason, "shadow mode, not enforced") {
		t.Fatalf("out %q block %v err %v audit %+v", out, blk, err, d.Audit)
	}
}

// TestConcurrentRequestsGetTheirOwnAnswers runs users with different
// rights at the same time on one Set: compiled plans are shared through
// pools, and no request may see another's predicates or field selection.
func TestConcurrentRequestsGetTheirOwnAnswers(t *testing.T) {
	s := mustLoad(t, responseRules)
	body := `{"list":[` + rec(1, "zhang", "2026-10-01T00:00:00Z", "") + `,` + rec(2, "li", "2026-10-01T00:00:00Z", "") + `,` + rec(3, "wang", "2026-10-01T00:00:00Z", "") + `]}`
	users := []struct {
		id, role string
		ids      []string
		phone    string
	}{
		{"zhang", "sales", []string{"1"}, "138****5678"},
		{"li", "sales", []string{"2"}, "138****5678"},
		{"wang", "manager", []string{"1", "2", "3"}, "13812345678"},
		{"wang", "finance", []string{"3"}, "138****5678"},
	}
	done := make(chan error)
	const rounds = 50
	for _, u := range users {
		go func() {
			user := s.UserFromRoles(u.id, []string{u.role}, nil, true, shanghaiWorkday)
			for range rounds {
				d := s.Decide(user, request("GET", "/api/customers"))
				out, blk, err := d.Rewrite(nil, 200, nil, []byte(body))
				if err != nil || blk != nil {
					done <- fmt.Errorf("%s: %v %v", u.id, blk, err)
					return
				}
				if !reflect.DeepEqual(d.Audit.RecordIDs, u.ids) || !strings.Contains(string(out), `"phone":"`+u.phone+`"`) {
					done <- fmt.Errorf("%s/%s got ids %v and %s", u.id, u.role, d.Audit.RecordIDs, out)
					return
				}
			}
			done <- nil
		}()
	}
	for range users {
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
}

func TestOtherAnswerShapes(t *testing.T) {
	t.Run("a bare array of records is filtered", func(t *testing.T) {
		s := mustLoad(t, "version: 1\nroles: {a: {}}\nroutes:\n  - id: r\n    match: {path: /r}\n    allow: [a]\n    records: \"@this\"\n    visible: record.owner == user.id\n    fields: {phone: {mask: phone}}\n")
		d := s.Decide(s.UserFromRoles("u", []string{"a"}, nil, true, shanghaiWorkday), request("GET", "/r"))
		out, blk, err := d.Rewrite(nil, 200, nil, []byte(`[{"owner":"u","phone":"13812345678"},{"owner":"v","phone":"13812345678"}]`))
		if err != nil || blk != nil || string(out) != `[{"owner":"u","phone":"138****5678"}]` {
			t.Fatalf("out %s block %v err %v", out, blk, err)
		}
	})
	t.Run("a public route rewrites answers for anonymous users", func(t *testing.T) {
		s := mustLoad(t, "version: 1\nroles: {staff: {}}\nroutes:\n  - id: r\n    match: {path: /r}\n    allow: public\n    records: list\n    visible: record.public == true || \"staff\" in user.roles\n    fields: {phone: {mask: phone, except: [staff]}, notes: {remove: true, for: [staff]}}\n")
		d := s.Decide(nil, request("GET", "/r"))
		out, blk, err := d.Rewrite(nil, 200, nil, []byte(`{"list":[{"public":true,"phone":"13812345678","notes":"n"},{"public":false,"phone":"1"}]}`))
		if err != nil || blk != nil || string(out) != `{"list":[{"public":true,"phone":"138****5678","notes":"n"}]}` {
			t.Fatalf("out %s block %v err %v", out, blk, err)
		}
	})
	t.Run("a records path that matches nothing is an error", func(t *testing.T) {
		s := mustLoad(t, "version: 1\nroles: {a: {}}\nroutes:\n  - id: r\n    match: {path: /r}\n    allow: [a]\n    records: list\n")
		d := s.Decide(s.UserFromRoles("u", []string{"a"}, nil, true, shanghaiWorkday), request("GET", "/r"))
		if _, _, err := d.Rewrite(nil, 200, nil, []byte(`{"items":[]}`)); err == nil {
			t.Fatal("no error")
		}
	})
	t.Run("a rule set that changes nothing returns the answer byte for byte", func(t *testing.T) {
		s := mustLoad(t, "version: 1\nroles: {a: {}}\nroutes:\n  - id: r\n    match: {path: /r}\n    allow: [a]\n    records: list\n    fields: {secret: remove}\n")
		d := s.Decide(s.UserFromRoles("u", []string{"a"}, nil, true, shanghaiWorkday), request("GET", "/r"))
		body := "{ \"list\" : [ {\"a\":1 , \"b\":\"\\u0041\"} ] }\n"
		out, blk, err := d.Rewrite(nil, 200, nil, []byte(body))
		if err != nil || blk != nil || string(out) != body {
			t.Fatalf("out %q block %v err %v", out, blk, err)
		}
	})
	t.Run("a download on a request no route matches is blocked under default allow", func(t *testing.T) {
		s := mustLoad(t, "version: 1\ndefault: allow\nroles: {a: {}}\nroutes:\n  - id: r\n    match: {path: /r}\n    allow: [a]\n")
		d := s.Decide(s.UserFromRoles("u", []string{"a"}, nil, true, shanghaiWorkday), request("GET", "/elsewhere.csv"))
		if d.Outcome != Allow {
			t.Fatalf("not allowed: %s", d.Reason)
		}
		if _, blk := d.InspectResponse(200, http.Header{"Content-Type": {"text/csv"}}); blk == nil || blk.Status != 403 {
			t.Fatalf("block %+v", blk)
		}
	})
}
