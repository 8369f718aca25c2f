package rules

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	"net/http"
	"reflect"
	"strings"
	"testing"
)

const csvRules = `version: 1
roles: {sales: {}, manager: {inherits: [sales]}, marketing: {}, admin: {inherits: [manager]}}
routes:
  - id: export
    match: {methods: [GET], path: /api/customers/export}
    allow: [sales, marketing]
    export: {approval: false}
    records: "@this"
    visible: record.owner_id == user.id || "manager" in user.roles || "marketing" in user.roles
    fields:
      "**.phone": {mask: phone, except: [admin]}
      "**.id\\_card": {mask: id_card}
      bank_account: remove
      email: {hash: true, for: [marketing]}
      notes: {null: true, when: record.stage == "won"}
      tier: {replace: hidden, unless: '"manager" in user.roles'}
      contacts.#.mobile: {mask: phone}
      "sec*": remove
      "a\\.b": remove
      vip: {remove: true, when: record.stage == "won"}
    max_records: 2
    audit_id: id
  - id: exposed
    match: {methods: [GET], path: /api/exposed}
    allow: [sales]
    export: {approval: false}
    records: "@this"
    expose: [id, name, phone, address.city]
    fields:
      phone: {mask: phone}
  - id: raw.export
    match: {methods: [GET], path: /api/raw/export}
    allow: [sales]
    export: {approval: false}
  - id: list
    match: {methods: [GET], path: /api/customers}
    allow: [sales]
    records: list
    fields:
      phone: {mask: phone}
`

const csvType = "text/csv; charset=utf-8"

// csvAnswer runs one CSV answer through InspectResponse and Rewrite.
func csvAnswer(t *testing.T, s *Set, u *User, target, ct, body string) (out string, d *Decision, blk *Block, err error) {
	t.Helper()
	d = s.Decide(u, request("GET", target))
	if d.Outcome != Allow {
		t.Fatalf("not allowed: %s", d.Reason)
	}
	h := http.Header{"Content-Type": {ct}, "Content-Disposition": {`attachment; filename="c.csv"`}}
	buf, blk := d.InspectResponse(200, h)
	if blk != nil {
		return "", d, blk, nil
	}
	if !buf {
		return body, d, nil, nil
	}
	o, blk, err := d.Rewrite(nil, 200, h, []byte(body))
	return string(o), d, blk, err
}

func TestCSVAnswersAreRewrittenByColumnName(t *testing.T) {
	s := mustLoad(t, csvRules)
	manager := &User{ID: "wang", Roles: []string{"manager", "sales"}}
	rep := &User{ID: "zhang", Roles: []string{"sales"}}
	admin := &User{ID: "root", Roles: []string{"admin", "manager", "sales"}}
	marketing := &User{ID: "m", Roles: []string{"marketing"}}
	mac := hmac.New(sha256.New, []byte("k"))
	mac.Write([]byte("a@b.cn"))
	emailHash := hex.EncodeToString(mac.Sum(nil))
	cases := []struct {
		name    string
		user    *User
		ct      string
		body    string
		want    string
		in, out int
		ids     []string
		evalErr int
		fields  map[string]int
	}{
		{
			name: "a manager's export has phones and ID numbers masked and the bank column gone",
			user: manager, ct: csvType,
			body: "id,name,phone,id_card,bank_account,owner_id\n1,张伟,13812345678,110101199003071234,6222021234567890123,zhang\n2,Emma,13698765432,31010119851111002X,6217001234567890,wu\n",
			want: "id,name,phone,id_card,owner_id\n1,张伟,138****5678,110101********1234,zhang\n2,Emma,136****5432,310101********002X,wu\n",
			in:   2, out: 2, ids: []string{"1", "2"},
			fields: map[string]int{"mask:**.phone": 2, "mask:**.id\\_card": 2, "remove:bank_account": 2},
		},
		{
			name: "a sales rep's export keeps only the rows visible would show",
			user: rep, ct: csvType,
			body: "id,owner_id,phone\n1,zhang,13812345678\n2,wu,13698765432\n3,zhang,\n",
			want: "id,owner_id,phone\n1,zhang,138****5678\n3,zhang,\n",
			in:   3, out: 2, ids: []string{"1", "3"},
			fields: map[string]int{"mask:**.phone": 1},
		},
		{
			name: "a row whose condition fails to evaluate is hidden and counted",
			user: rep, ct: csvType,
			body: "id,phone\n1,13812345678\n2,13698765432\n",
			want: "id,phone\n",
			in:   2, out: 0, evalErr: 2,
		},
		{
			name: "quoted fields with commas, quotes and line breaks survive and a masked quoted value is rewritten",
			user: manager, ct: csvType,
			body: "id,name,phone,stage,notes\n1,\"Doe, John\",\"138 1234 5678\",lead,\"said \"\"hi\"\"\r\nand left\"\n",
			want: "id,name,phone,stage,notes\n1,\"Doe, John\",138 **** 5678,lead,\"said \"\"hi\"\"\r\nand left\"\n",
			in:   1, out: 1, ids: []string{"1"},
			fields: map[string]int{"mask:**.phone": 1},
		},
		{
			name: "CRLF line ends and a UTF-8 byte order mark are kept",
			user: manager, ct: csvType,
			body: "\ufeffid,phone,bank_account\r\n1,13812345678,6222\r\n2,,6333\r\n",
			want: "\ufeffid,phone\r\n1,138****5678\r\n2,\r\n",
			in:   2, out: 2, ids: []string{"1", "2"},
			fields: map[string]int{"mask:**.phone": 1, "remove:bank_account": 2},
		},
		{
			name: "a header-only export loses its removed columns",
			user: manager, ct: csvType,
			body: "id,phone,bank_account\n",
			want: "id,phone\n",
		},
		{
			name: "an empty export stays empty",
			user: manager, ct: csvType,
			body: "", want: "",
		},
		{
			name: "every copy of a duplicated column is treated",
			user: manager, ct: csvType,
			body: "id,phone,bank_account,phone,bank_account\n1,13812345678,6222,13911112222,6333\n",
			want: "id,phone,phone\n1,138****5678,139****2222\n",
			in:   1, out: 1, ids: []string{"1"},
			fields: map[string]int{"mask:**.phone": 2, "remove:bank_account": 2},
		},
		{
			name: "a row whose owner_id column appears twice with different values is hidden and counted",
			user: rep, ct: csvType,
			body: "id,owner_id,owner_id\n1,zhang,wu\n2,zhang,zhang\n",
			want: "id,owner_id,owner_id\n2,zhang,zhang\n",
			in:   2, out: 1, ids: []string{"2"}, evalErr: 1,
		},
		{
			name: "a column named like a nested path is not that path, and an escaped dot names a column with a dot",
			user: manager, ct: csvType,
			body: "id,contacts.#.mobile,a.b\n1,13900001111,secret\n",
			want: "id,contacts.#.mobile\n1,13900001111\n",
			in:   1, out: 1, ids: []string{"1"},
			fields: map[string]int{"remove:a\\.b": 1},
		},
		{
			name: "a wildcard path removes every column it fits",
			user: manager, ct: csvType,
			body: "id,secret,second,sex\n1,x,y,z\n",
			want: "id,sex\n1,z\n",
			in:   1, out: 1, ids: []string{"1"},
			fields: map[string]int{"remove:sec*": 2},
		},
		{
			name: "marketing gets hashed emails and a replaced tier",
			user: marketing, ct: csvType,
			body: "id,email,tier,phone\n1,a@b.cn,gold,13812345678\n2,,silver,\n",
			want: "id,email,tier,phone\n1," + emailHash + ",hidden,138****5678\n2,,hidden,\n",
			in:   2, out: 2, ids: []string{"1", "2"},
			fields: map[string]int{"hash:email": 1, "replace:tier": 2, "mask:**.phone": 1},
		},
		{
			name: "a rule with a per-row condition empties the cell only where it holds, also for remove",
			user: manager, ct: csvType,
			body: "id,stage,notes,vip\n1,won,keep out,yes\n2,lead,call back,no\n",
			want: "id,stage,notes,vip\n1,won,,\n2,lead,call back,no\n",
			in:   2, out: 2, ids: []string{"1", "2"},
			fields: map[string]int{"null:notes": 1, "remove:vip": 1},
		},
		{
			name: "a field rule whose per-row condition fails applies to that row and is counted",
			user: manager, ct: csvType,
			body: "id,notes\n1,secret note\n",
			want: "id,notes\n1,\n",
			in:   1, out: 1, ids: []string{"1"}, evalErr: 1,
			fields: map[string]int{"null:notes": 1},
		},
		{
			name: "an answer nothing changes is returned byte for byte",
			user: admin, ct: csvType,
			body: "id,\"name\",phone\r\n1,\"Zhang\",13812345678\n",
			want: "id,\"name\",phone\r\n1,\"Zhang\",13812345678\n",
			in:   1, out: 1, ids: []string{"1"},
		},
		{
			name: "tab-separated values are read with tabs",
			user: manager, ct: "text/tab-separated-values",
			body: "id\tphone\tbank_account\n1\t13812345678\t6222\n",
			want: "id\tphone\n1\t138****5678\n",
			in:   1, out: 1, ids: []string{"1"},
			fields: map[string]int{"mask:**.phone": 1, "remove:bank_account": 1},
		},
		{
			name: "the older CSV type names are rewritten too",
			user: manager, ct: "application/x-csv",
			body: "id,bank_account\n1,6222\n",
			want: "id\n1\n",
			in:   1, out: 1, ids: []string{"1"},
			fields: map[string]int{"remove:bank_account": 1},
		},
		{
			name: "a lone empty cell is written quoted so that it does not read as a blank line",
			user: manager, ct: csvType,
			body: "phone,bank_account\n,6222\n",
			want: "phone\n\"\"\n",
			in:   1, out: 1,
			fields: map[string]int{"remove:bank_account": 1},
		},
		{
			name: "a masked value that needs quoting is quoted",
			user: marketing, ct: csvType,
			body: "id,tier\n1,gold\n",
			want: "id,tier\n1,hidden\n",
			in:   1, out: 1, ids: []string{"1"},
			fields: map[string]int{"replace:tier": 1},
		},
		{
			name: "the last row without a line end keeps none",
			user: manager, ct: csvType,
			body: "id,phone\n1,13812345678",
			want: "id,phone\n1,138****5678",
			in:   1, out: 1, ids: []string{"1"},
			fields: map[string]int{"mask:**.phone": 1},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out, d, blk, err := csvAnswer(t, s, c.user, "/api/customers/export", c.ct, c.body)
			if err != nil || blk != nil {
				t.Fatalf("err %v, block %+v", err, blk)
			}
			if out != c.want {
				t.Errorf("got\n%q\nwant\n%q", out, c.want)
			}
			a := d.Audit
			if a.RecordsIn != c.in || a.RecordsOut != c.out || a.EvalErrors != c.evalErr {
				t.Errorf("records in/out %d/%d, eval errors %d; want %d/%d, %d", a.RecordsIn, a.RecordsOut, a.EvalErrors, c.in, c.out, c.evalErr)
			}
			if !reflect.DeepEqual(a.RecordIDs, c.ids) {
				t.Errorf("record ids %q, want %q", a.RecordIDs, c.ids)
			}
			if len(a.Fields)+len(c.fields) > 0 && !reflect.DeepEqual(a.Fields, c.fields) {
				t.Errorf("fields %v, want %v", a.Fields, c.fields)
			}
		})
	}
}

func TestCSVThatCannotBeReadIsAnError(t *testing.T) {
	s := mustLoad(t, csvRules)
	manager := &User{ID: "wang", Roles: []string{"manager", "sales"}}
	cases := []struct {
		name, ct, body, want string
	}{
		{"a row with more fields than the header", csvType, "id,phone\n1,138,extra\n", "2 has 3 fields; the header has 2"},
		{"a row with fewer fields than the header", csvType, "id,phone\n1,138\n2\n", "3 has 1 fields"},
		{"a quote inside an unquoted field", csvType, "id,phone\n1,13\"8\n", "a quote inside an unquoted field"},
		{"a quoted field that is never closed", csvType, "id,phone\n1,\"138\n", "never closed"},
		{"text after a closing quote", csvType, "id,phone\n1,\"138\"x\n", "text after a closing quote"},
		{"a carriage return alone as a line end", csvType, "id,phone\r1,13812345678\r", "carriage return"},
		{"bytes that are not UTF-8 (a GBK export)", csvType, "id,name\n1,\xd5\xc5\xce\xb0\n", "not valid UTF-8"},
		{"a UTF-16 export", csvType, "\xff\xfei\x00d\x00", "not valid UTF-8"},
		{"a charset other than UTF-8", "text/csv; charset=gbk", "id\n1\n", "charset"},
	}
	for _, c := range cases {
		t.Run(c.name+" is refused", func(t *testing.T) {
			out, d, blk, err := csvAnswer(t, s, manager, "/api/customers/export", c.ct, c.body)
			if blk != nil && strings.Contains(blk.Reason, c.want) && blk.Status == http.StatusBadGateway {
				return // refused before the body was read
			}
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err %v, block %+v, out %q; want an error saying %q", err, blk, out, c.want)
			}
			if out != "" || d.Audit.Decision != "error" {
				t.Errorf("out %q, audit decision %q; want nothing and error", out, d.Audit.Decision)
			}
		})
	}
}

func TestTableAnswersOnExportRoutes(t *testing.T) {
	s := mustLoad(t, csvRules)
	rep := &User{ID: "zhang", Roles: []string{"sales"}}
	xlsx := "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
	t.Run("a spreadsheet on a route with fields is refused with 502 naming its type", func(t *testing.T) {
		_, _, blk, _ := csvAnswer(t, s, rep, "/api/customers/export", xlsx, "PK\x03\x04")
		if blk == nil || blk.Status != http.StatusBadGateway || !strings.Contains(blk.Reason, xlsx) {
			t.Fatalf("block %+v; want 502 naming %s", blk, xlsx)
		}
	})
	t.Run("a legacy Excel label on a route with fields is refused with 502", func(t *testing.T) {
		_, _, blk, _ := csvAnswer(t, s, rep, "/api/customers/export", "application/vnd.ms-excel", "id,phone\n1,13812345678\n")
		if blk == nil || blk.Status != http.StatusBadGateway || !strings.Contains(blk.Reason, "application/vnd.ms-excel") {
			t.Fatalf("block %+v; want 502", blk)
		}
	})
	t.Run("a spreadsheet on an export route without fields passes as before", func(t *testing.T) {
		out, _, blk, err := csvAnswer(t, s, rep, "/api/raw/export", xlsx, "PK\x03\x04")
		if blk != nil || err != nil || out != "PK\x03\x04" {
			t.Fatalf("out %q, block %+v, err %v", out, blk, err)
		}
	})
	t.Run("a CSV labelled text/plain on a route with fields is read as JSON and refused", func(t *testing.T) {
		_, _, blk, err := csvAnswer(t, s, rep, "/api/customers/export", "text/plain", "id,owner_id,phone\n1,zhang,13812345678\n")
		if blk != nil || err == nil {
			t.Fatalf("block %+v, err %v; want an error (502)", blk, err)
		}
	})
	t.Run("JSON sent as octet-stream on an export route with fields is rewritten as JSON", func(t *testing.T) {
		out, _, blk, err := csvAnswer(t, s, rep, "/api/customers/export", "application/octet-stream", `[{"id":1,"owner_id":"zhang","phone":"13812345678"}]`)
		if blk != nil || err != nil || strings.Contains(out, "13812345678") || !strings.Contains(out, `"id":1`) {
			t.Fatalf("out %q, block %+v, err %v; want the record with its phone masked", out, blk, err)
		}
	})
	t.Run("a CSV sent as octet-stream on an export route with fields is read as JSON and refused", func(t *testing.T) {
		_, _, blk, err := csvAnswer(t, s, rep, "/api/customers/export", "application/octet-stream", "id,owner_id,phone\n1,zhang,13812345678\n")
		if blk != nil || err == nil {
			t.Fatalf("block %+v, err %v; want an error (502)", blk, err)
		}
	})
	t.Run("a CSV on an export route without fields is not buffered", func(t *testing.T) {
		d := s.Decide(rep, request("GET", "/api/raw/export"))
		buf, blk := d.InspectResponse(200, http.Header{"Content-Type": {csvType}})
		if buf || blk != nil {
			t.Fatalf("buffer %v, block %+v", buf, blk)
		}
	})
	t.Run("a CSV on a rewriting route that is not an export is still blocked with 403", func(t *testing.T) {
		d := s.Decide(rep, request("GET", "/api/customers"))
		buf, blk := d.InspectResponse(200, http.Header{"Content-Type": {csvType}})
		if buf || blk == nil || blk.Status != http.StatusForbidden {
			t.Fatalf("buffer %v, block %+v; want 403", buf, blk)
		}
	})
	t.Run("Content-Type lines naming CSV and JSON are refused with 502", func(t *testing.T) {
		d := s.Decide(rep, request("GET", "/api/customers/export"))
		buf, blk := d.InspectResponse(200, http.Header{"Content-Type": {csvType, "application/json"}})
		if buf || blk == nil || blk.Status != http.StatusBadGateway {
			t.Fatalf("buffer %v, block %+v; want 502", buf, blk)
		}
	})
	t.Run("max_records counts visible rows and marks an approved export as too many without blocking it", func(t *testing.T) {
		manager := &User{ID: "wang", Roles: []string{"manager", "sales"}}
		out, d, blk, err := csvAnswer(t, s, manager, "/api/customers/export", csvType, "id\n1\n2\n3\n")
		if blk != nil || err != nil || out != "id\n1\n2\n3\n" || !d.Audit.Export.TooMany || d.Audit.Export.Blocked {
			t.Fatalf("out %q, block %+v, err %v, export %+v", out, blk, err, d.Audit.Export)
		}
	})
	t.Run("expose keeps only the listed columns and a nested path keeps none", func(t *testing.T) {
		out, d, blk, err := csvAnswer(t, s, rep, "/api/exposed", csvType, "id,name,phone,address,id_card\n1,Zhang,13812345678,Shanghai,110101199003071234\n")
		if blk != nil || err != nil || out != "id,name,phone\n1,Zhang,138****5678\n" {
			t.Fatalf("out %q, block %+v, err %v", out, blk, err)
		}
		if want := map[string]int{"expose:dropped": 2, "mask:phone": 1}; !reflect.DeepEqual(d.Audit.Fields, want) {
			t.Errorf("fields %v, want %v", d.Audit.Fields, want)
		}
	})
	t.Run("in shadow mode the answer passes unchanged and the audit says what would have changed", func(t *testing.T) {
		sh := mustLoad(t, strings.Replace(csvRules, "version: 1\n", "version: 1\nmode: shadow\n", 1))
		manager := &User{ID: "wang", Roles: []string{"manager", "sales"}}
		body := "id,bank_account\n1,6222\n"
		out, d, blk, err := csvAnswer(t, sh, manager, "/api/customers/export", csvType, body)
		if blk != nil || err != nil || out != body || d.Audit.Fields["remove:bank_account"] != 1 {
			t.Fatalf("out %q, block %+v, err %v, fields %v", out, blk, err, d.Audit.Fields)
		}
	})
}

// FuzzCSVRewrite: the rewriter never panics; what it writes parses as CSV
// (encoding/csv) with the header's width; no cell of a removed column
// survives; and it accepts only what encoding/csv also reads.
func FuzzCSVRewrite(f *testing.F) {
	for _, seed := range []string{
		"id,phone,bank_account,owner_id\n1,13812345678,6222021234567890123,wang\n",
		"\ufeffid,\"phone\",bank_account\r\n\"1\",\"13,8\",\"62\"\"22\"\r\n",
		"bank_account\n\"a\nb\"\n",
		"id,bank_account,bank_account\n1,x,y\n2,,z",
		"",
		"id\n\n\n1\n",
		"a,b\n1,\"x\"\"\n",
	} {
		f.Add(seed, false)
		f.Add(seed, true)
	}
	s := mustLoad(f, csvRules)
	manager := &User{ID: "wang", Roles: []string{"manager", "sales"}}
	rep := &User{ID: "1", Roles: []string{"sales"}}
	f.Fuzz(func(t *testing.T, body string, asRep bool) {
		u := manager
		if asRep {
			u = rep // visible then hides rows per owner_id
		}
		d := s.Decide(u, request("GET", "/api/customers/export"))
		h := http.Header{"Content-Type": {csvType}}
		out, blk, err := d.Rewrite(nil, 200, h, []byte(body))
		if err != nil || blk != nil {
			return
		}
		// The input was accepted: encoding/csv must read it too.
		in := strings.TrimPrefix(body, "\ufeff")
		r := csv.NewReader(strings.NewReader(in))
		rows, rerr := r.ReadAll()
		if rerr != nil {
			t.Fatalf("accepted %q, which encoding/csv refuses: %v", body, rerr)
		}
		o := bytes.TrimPrefix(out, []byte("\ufeff"))
		got, oerr := csv.NewReader(bytes.NewReader(o)).ReadAll()
		if oerr != nil {
			t.Fatalf("output %q of %q does not parse: %v", out, body, oerr)
		}
		if len(rows) == 0 {
			return
		}
		removed := map[int]bool{}
		for i, name := range rows[0] {
			if name == "bank_account" || strings.HasPrefix(name, "sec") || name == "a.b" {
				removed[i] = true
			}
		}
		kept := len(rows[0]) - len(removed)
		if kept == 0 {
			if len(bytes.TrimSpace(o)) != 0 {
				t.Fatalf("every column was removed but the output is %q", out)
			}
			return
		}
		if len(got) == 0 || len(got[0]) != kept || len(got) > len(rows) {
			t.Fatalf("output %q of %q: %d rows of width %v; want at most %d rows of %d", out, body, len(got), got, len(rows), kept)
		}
		keptVals, outVals := map[string]bool{}, map[string]bool{}
		for _, row := range rows {
			for i, v := range row {
				if !removed[i] {
					keptVals[v] = true
				}
			}
		}
		for _, row := range got[1:] {
			for _, v := range row {
				outVals[v] = true
			}
		}
		for _, row := range rows[1:] {
			for i, v := range row {
				// A removed value must not appear as a cell (unless a kept
				// column holds the same text).
				if removed[i] && len(v) >= 4 && outVals[v] && !keptVals[v] {
					t.Fatalf("removed value %q survives in %q (input %q)", v, out, body)
				}
			}
		}
	})
}
