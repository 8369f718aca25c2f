package rules

import (
	"net/http"
	"strings"
	"testing"
)

const answerRules = `version: 1
roles: {sales: {}, manager: {inherits: [sales]}, auditor: {}}
routes:
  - id: list
    match: {methods: [GET], path: /api/customers}
    allow: [sales, auditor]
    records: list
    visible: record.owner_id == user.id || "manager" in user.roles
    answer:
      total: {remove: true, except: [manager]}
      "meta.total-pages": {replace: null, when: '!("manager" in user.roles)'}
      "meta.cursor": {hash: true, for: [auditor]}
    answer_headers: [X-Total-Count, content-range]
`

func TestAnswerFieldsAreTreatedPerRole(t *testing.T) {
	s := mustLoad(t, answerRules)
	body := `{"total":3,"list":[{"owner_id":"zhang","id":1},{"owner_id":"li","id":2}],"meta":{"total-pages":2,"cursor":"c1"}}`
	cases := []struct {
		name   string
		roles  []string
		want   string
		fields map[string]int
	}{
		{"a sales rep sees neither the total nor the page count", []string{"sales"},
			`{"list":[{"owner_id":"zhang","id":1}],"meta":{"total-pages":null,"cursor":"c1"}}`,
			map[string]int{"remove:answer.total": 1, "replace:answer.meta.total-pages": 1}},
		{"a manager sees every record and so the real total", []string{"manager"}, body, nil},
		{"an auditor gets the cursor hashed as well", []string{"auditor"},
			`{"list":[{"owner_id":"zhang","id":1}],"meta":{"total-pages":null,"cursor":"` + hmacFor(t, "c1") + `"}}`,
			map[string]int{"remove:answer.total": 1, "replace:answer.meta.total-pages": 1, "hash:answer.meta.cursor": 1}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			u := s.UserFromRoles("zhang", tc.roles, nil, true, shanghaiWorkday)
			d := s.Decide(u, request("GET", "/api/customers"))
			h := http.Header{"Content-Type": {"application/json"}}
			if buf, blk := d.InspectResponse(200, h); !buf || blk != nil {
				t.Fatalf("InspectResponse = %v %v", buf, blk)
			}
			out, blk, err := d.Rewrite(nil, 200, h, []byte(body))
			if err != nil || blk != nil {
				t.Fatalf("block %v err %v", blk, err)
			}
			if string(out) != tc.want {
				t.Fatalf("got  %s\nwant %s", out, tc.want)
			}
			for k, n := range tc.fields {
				if d.Audit.Fields[k] != n {
					t.Errorf("audit %s = %d, want %d (all: %v)", k, d.Audit.Fields[k], n, d.Audit.Fields)
				}
			}
			for k := range d.Audit.Fields {
				if strings.Contains(k, ":answer.") && tc.fields[k] == 0 {
					t.Errorf("audit counts %s, which did not apply", k)
				}
			}
		})
	}
}

// hmacFor is the hash the rules give s under mustLoad's key.
func hmacFor(t *testing.T, s string) string {
	t.Helper()
	set := mustLoad(t, "version: 1\nroles: {a: {}}\nroutes:\n  - id: r\n    match: {path: /r}\n    allow: [a]\n    records: list\n    fields: {v: hash}\n")
	d := set.Decide(set.UserFromRoles("u", []string{"a"}, nil, true, shanghaiWorkday), request("GET", "/r"))
	out, _, err := d.Rewrite(nil, 200, nil, []byte(`{"list":[{"v":"`+s+`"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSuffix(strings.TrimPrefix(string(out), `{"list":[{"v":"`), `"}]}`)
}

func TestAnswerHeadersAreRemoved(t *testing.T) {
	t.Run("the listed headers are removed whatever their spelling and counted", func(t *testing.T) {
		s := mustLoad(t, answerRules)
		d := s.Decide(s.UserFromRoles("zhang", []string{"sales"}, nil, true, shanghaiWorkday), request("GET", "/api/customers"))
		h := http.Header{"Content-Type": {"application/json"}, "X-Total-Count": {"500"}, "Content-Range": {"items 0-9/500"}, "X-Other": {"1"}}
		d.InspectResponse(200, h)
		if _, ok := h["X-Total-Count"]; ok || h.Get("Content-Range") != "" || h.Get("X-Other") != "1" {
			t.Fatalf("headers %v", h)
		}
		if d.Audit.Fields["remove:answer_header.X-Total-Count"] != 1 || d.Audit.Fields["remove:answer_header.Content-Range"] != 1 {
			t.Fatalf("audit %v", d.Audit.Fields)
		}
	})
	t.Run("the headers are removed from an error answer too", func(t *testing.T) {
		s := mustLoad(t, answerRules)
		d := s.Decide(s.UserFromRoles("zhang", []string{"sales"}, nil, true, shanghaiWorkday), request("GET", "/api/customers"))
		h := http.Header{"X-Total-Count": {"500"}}
		if _, blk := d.InspectResponse(500, h); blk == nil {
			t.Fatal("a 500 on a rewriting route was not withheld")
		}
		if h.Get("X-Total-Count") != "" {
			t.Fatalf("headers %v", h)
		}
	})
	t.Run("in shadow mode the headers stay and are counted", func(t *testing.T) {
		s := mustLoad(t, strings.Replace(answerRules, "version: 1\n", "version: 1\nmode: shadow\n", 1))
		d := s.Decide(s.UserFromRoles("zhang", []string{"sales"}, nil, true, shanghaiWorkday), request("GET", "/api/customers"))
		h := http.Header{"X-Total-Count": {"500"}}
		d.InspectResponse(200, h)
		if h.Get("X-Total-Count") != "500" || d.Audit.Fields["remove:answer_header.X-Total-Count"] != 1 {
			t.Fatalf("headers %v audit %v", h, d.Audit.Fields)
		}
	})
	t.Run("a route without records can remove headers", func(t *testing.T) {
		s := mustLoad(t, "version: 1\nroles: {a: {}}\nroutes:\n  - id: r\n    match: {path: /r}\n    allow: [a]\n    answer_headers: [X-Total-Count]\n")
		d := s.Decide(s.UserFromRoles("u", []string{"a"}, nil, true, shanghaiWorkday), request("GET", "/r"))
		h := http.Header{"X-Total-Count": {"9"}}
		if buf, _ := d.InspectResponse(200, h); buf || h.Get("X-Total-Count") != "" {
			t.Fatalf("buffer %v headers %v", buf, h)
		}
	})
}

func TestABadAnswerRuleIsRefusedWithLineAndColumn(t *testing.T) {
	route := "version: 1\nroles: {a: {}}\nroutes:\n  - id: r\n    match: {path: /r}\n    allow: [a]\n    records: data.list\n"
	cases := []struct {
		name string
		src  string
		want string
	}{
		{"a condition reading record is refused", route + "    answer:\n      total: {remove: true, when: record.x == 1}\n",
			"rules.yaml:9:35: routes[0].answer.total.when: an answer field's condition cannot read record"},
		{"a path into the records is refused", route + "    answer:\n      data.list.secret: remove\n",
			`rules.yaml:9:7: routes[0].answer["data.list.secret"]: answer field "data.list.secret" reaches into the records`},
		{"a path naming the envelope of the records is refused", route + "    answer:\n      data: remove\n",
			`rules.yaml:9:7: routes[0].answer.data: answer field "data" would treat the records`},
		{"a ** path is refused", route + "    answer:\n      \"**.total\": remove\n",
			"rules.yaml:9:7: routes[0].answer[\"**.total\"]: answer field \"**.total\": only plain keys"},
		{"answer without records is refused", "version: 1\nroles: {a: {}}\nroutes:\n  - id: r\n    match: {path: /r}\n    allow: [a]\n    answer: {total: remove}\n",
			"routes[0].answer: needs records or record"},
		{"an unknown action is refused", route + "    answer:\n      total: drop\n",
			`rules.yaml:9:14: routes[0].answer.total: unknown action "drop"`},
		{"a header name with a colon is refused", route + "    answer_headers: [\"X-Total-Count:\"]\n",
			`rules.yaml:8:21: routes[0].answer_headers[0]: "X-Total-Count:" is not a header name`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			wantLoadError(t, tc.src, []LoadOption{WithHashKey([]byte("k"))}, tc.want)
		})
	}
}
