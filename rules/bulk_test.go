package rules

import (
	"context"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/crmguard/crmguard/rules/internal/cond"
)

// bulkRules: a manager reassigns many customers at once, each fetched
// (bulk_update) or all in one list (bulk_assign), only the team's, and
// only to a direct report unless a handover grant is bound to the write.
const bulkRules = `version: 1
roles: {sales: {}, sales_manager: {inherits: [sales]}}
approvals:
  handover:
    description: an administrator
    steps: [{name: admin, approvers: [sales_manager]}]
routes:
  - id: customers.bulk_update
    match: {methods: [POST], path: /api/customers/bulk-update}
    allow: [sales_manager]
    body:
      owner_id:
        allow_if: body.owner_id in user.attrs.reports && record.team in user.attrs.teams
        approval: handover
    target:
      ids: ids.#
      fetch: "/api/customers/{id}"
      allow_if: record.team in user.attrs.teams
      max_ids: 3
      concurrency: 2
  - id: customers.bulk_assign
    match: {methods: [POST], path: "/api/teams/{team}/assign"}
    allow: [sales_manager]
    target:
      ids: items.#.id
      fetch_many: {path: "/api/customers?ids={ids}&limit=1000", records: list}
      allow_if: record.team == request.params.team && record.team in user.attrs.teams
`

var bulkManager = &User{ID: "wang", Roles: []string{"sales", "sales_manager"}, Attrs: map[string]any{"teams": []any{"east"}, "reports": []any{"zhang", "wu"}}, MFA: true}

// bulkCRM answers a fetch of customer id: 1-4 are the east team's, 9 the
// west team's; others do not exist.
func bulkCRM(f TargetFetch) TargetAnswer {
	team := map[string]string{"1": "east", "2": "east", "3": "east", "4": "east", "9": "west"}
	if strings.HasPrefix(f.Path, "/api/customers?") {
		var recs []string
		for _, id := range f.IDs {
			if t, ok := team[id]; ok {
				recs = append(recs, fmt.Sprintf(`{"id":%s,"team":%q}`, id, t))
			}
		}
		recs = append(recs, `{"id":77,"team":"west"}`) // not asked for: not judged
		return TargetAnswer{Status: 200, Header: http.Header{"Content-Type": {"application/json"}}, Body: []byte(`{"list":[` + strings.Join(recs, ",") + `]}`)}
	}
	id := strings.TrimPrefix(f.Path, "/api/customers/")
	t, ok := team[id]
	if !ok {
		return TargetAnswer{Status: 404, Header: http.Header{}, Body: []byte(`{"error":"not found"}`)}
	}
	return TargetAnswer{Status: 200, Header: http.Header{"Content-Type": {"application/json"}}, Body: []byte(fmt.Sprintf(`{"id":%s,"team":%q,"owner_id":"zhang"}`, id, t))}
}

func TestABulkWriteIsJudgedOnEveryRecordItNames(t *testing.T) {
	s := mustLoad(t, bulkRules)
	cases := []struct {
		name    string
		path    string
		body    string
		status  int      // 0: forwarded
		fetched []string // the fetches made
		says    string   // in the reason
		refused string   // Audit.Target.Refused
	}{
		{name: "a bulk update of the team's customers fetches each and passes", path: "/api/customers/bulk-update", body: `{"ids":[1,"2",3],"owner_id":"zhang"}`,
			fetched: []string{"/api/customers/1", "/api/customers/2", "/api/customers/3"}},
		{name: "an id named twice is fetched once", path: "/api/customers/bulk-update", body: `{"ids":[1,1,2],"owner_id":"wu"}`,
			fetched: []string{"/api/customers/1", "/api/customers/2"}},
		{name: "one customer of another team refuses the whole write, naming it", path: "/api/customers/bulk-update", body: `{"ids":[1,9,2],"owner_id":"zhang"}`,
			status: 403, fetched: []string{"/api/customers/1", "/api/customers/9", "/api/customers/2"}, says: "record 9", refused: "9"},
		{name: "one customer that does not exist refuses the whole write with 404", path: "/api/customers/bulk-update", body: `{"ids":[1,5]}`,
			status: 404, fetched: []string{"/api/customers/1", "/api/customers/5"}, says: "record 5", refused: "5"},
		{name: "a new owner outside the manager's reports is refused on the first record, naming it", path: "/api/customers/bulk-update", body: `{"ids":[2,1],"owner_id":"chen"}`,
			status: 403, fetched: []string{"/api/customers/2", "/api/customers/1"}, says: `owner_id to "chen" on record 2`, refused: "2"},
		{name: "more ids than max_ids are refused before any fetch", path: "/api/customers/bulk-update", body: `{"ids":[1,2,3,4]}`, status: 413, says: "max_ids"},
		{name: "an empty list is refused: a CRM may read it as every record", path: "/api/customers/bulk-update", body: `{"ids":[]}`, status: 400, says: "empty list"},
		{name: "a body without ids is refused", path: "/api/customers/bulk-update", body: `{"owner_id":"zhang"}`, status: 400, says: "names no records"},
		{name: "an empty body is refused", path: "/api/customers/bulk-update", body: ``, status: 400, says: "names no records"},
		{name: "ids that are not a list are refused", path: "/api/customers/bulk-update", body: `{"ids":"1,2"}`, status: 400, says: "no list"},
		{name: "an id that is an object is refused", path: "/api/customers/bulk-update", body: `{"ids":[1,{"id":2}]}`, status: 400, says: "item 1"},
		{name: "an id that is a fraction is refused", path: "/api/customers/bulk-update", body: `{"ids":[1.5]}`, status: 400, says: "item 0"},
		{name: "an id holding a slash is refused before any fetch", path: "/api/customers/bulk-update", body: `{"ids":["1/../9"]}`, status: 400, says: "cannot be fetched"},
		{name: "ids given twice are refused before any fetch", path: "/api/customers/bulk-update", body: `{"ids":[1],"ids":[9]}`, status: 400, says: "twice"},
		{name: "ids given in another case as well are refused", path: "/api/customers/bulk-update", body: `{"ids":[1],"IDS":[9]}`, status: 400, says: "differ only in case"},
		{name: "a list of records sent as a top-level array is refused", path: "/api/customers/bulk-update", body: `[{"id":9}]`, status: 400, says: "not an object"},
		{name: "ids in the query as well as the body are refused", path: "/api/customers/bulk-update?ids=9", body: `{"ids":[1]}`, status: 400, says: "the query sets"},
		{name: "a fetch_many fetches all records in one GET and judges each", path: "/api/teams/east/assign", body: `{"items":[{"id":1,"owner_id":"zhang"},{"id":2}]}`,
			fetched: []string{"/api/customers?ids=1%2C2&limit=1000"}},
		{name: "a fetch_many answer showing a record of another team refuses, naming it", path: "/api/teams/east/assign", body: `{"items":[{"id":1},{"id":9}]}`,
			status: 403, fetched: []string{"/api/customers?ids=1%2C9&limit=1000"}, says: "record 9", refused: "9"},
		{name: "a record missing from the fetch_many answer refuses with 404", path: "/api/teams/east/assign", body: `{"items":[{"id":1},{"id":6}]}`,
			status: 404, fetched: []string{"/api/customers?ids=1%2C6&limit=1000"}, says: "record 6", refused: "6"},
		{name: "a path parameter takes part in the judgement", path: "/api/teams/west/assign", body: `{"items":[{"id":1}]}`,
			status: 403, fetched: []string{"/api/customers?ids=1&limit=1000"}, says: "record 1", refused: "1"},
		{name: "an id holding a comma cannot be listed in one fetch", path: "/api/teams/east/assign", body: `{"items":[{"id":"1,9"}]}`, status: 400, says: `","`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := targetReq("POST", c.path)
			r.Now = workday
			d := s.Decide(bulkManager, r)
			status, text := 0, ""
			var fetched []string
			switch {
			case d.Outcome != Allow:
				status, text = d.Status, d.Reason
			default:
				if be := d.CheckBody("application/json", []byte(c.body)); be != nil {
					status, text = be.Status, be.Reason
					break
				}
				if be := d.CheckTargetBody("application/json", []byte(c.body)); be != nil {
					status, text = be.Status, be.Reason
					break
				}
				var answers []TargetAnswer
				for _, f := range d.TargetFetches() {
					fetched = append(fetched, f.Path)
					answers = append(answers, bulkCRM(f))
				}
				if b := d.JudgeTargets(answers); b != nil {
					status, text = b.Status, b.Reason
				}
			}
			if status != c.status {
				t.Fatalf("status %d (%s), want %d", status, text, c.status)
			}
			if !strings.Contains(text, c.says) {
				t.Errorf("%q does not say %q", text, c.says)
			}
			if !reflect.DeepEqual(fetched, c.fetched) {
				t.Errorf("fetched %q, want %q", fetched, c.fetched)
			}
			if a := d.Audit.Target; c.fetched != nil && (a == nil || a.Refused != c.refused || a.Allowed != (c.status == 0) || a.Fetches != len(c.fetched) || len(a.IDs) == 0) {
				t.Errorf("audit target %+v; want refused %q, allowed %v, %d fetches", a, c.refused, c.status == 0, len(c.fetched))
			}
		})
	}
}

func TestABulkWriteCannotBeJudgedWithTheWrongAnswers(t *testing.T) {
	s := mustLoad(t, bulkRules)
	d := s.Decide(bulkManager, targetReq("POST", "/api/customers/bulk-update"))
	if be := d.CheckBody("application/json", []byte(`{"ids":[1,2]}`)); be != nil {
		t.Fatal(be)
	}
	t.Run("one answer for two fetches is refused", func(t *testing.T) {
		if b := d.JudgeTarget(bulkCRM(d.TargetFetches()[0])); b == nil || b.Status != http.StatusBadGateway {
			t.Fatalf("block %+v, want 502", b)
		}
	})
	t.Run("a bulk write whose ids were never read is refused", func(t *testing.T) {
		d := s.Decide(bulkManager, targetReq("POST", "/api/customers/bulk-update"))
		if got := d.TargetFetches(); got != nil {
			t.Fatalf("fetches %v before the body was read", got)
		}
		if b := d.JudgeTargets(nil); b == nil || b.Status != http.StatusForbidden {
			t.Fatalf("block %+v, want 403", b)
		}
	})
	t.Run("the route's concurrency is the decision's", func(t *testing.T) {
		if got := d.TargetConcurrency(); got != 2 {
			t.Errorf("concurrency %d, want 2", got)
		}
	})
}

func TestABulkHandoverGrantIsBoundToItsIDs(t *testing.T) {
	s := mustLoad(t, bulkRules)
	canon, err := CanonicalWrite("POST", "/api/customers/bulk-update", map[string]any{"owner_id": "chen", "@ids": []string{"1", "2"}})
	if err != nil {
		t.Fatal(err)
	}
	grant := func() *fakeGrants {
		return &fakeGrants{grants: []*fakeGrant{{
			Grant: Grant{ID: "h-1", Policy: "handover", UsesLeft: 1},
			q:     GrantQuery{Requester: "wang", Route: "customers.bulk_update", Policy: "handover", Request: canon},
		}}}
	}
	for _, c := range []struct {
		name, body string
		status     int
	}{
		{"the ids and the owner the grant names pass", `{"ids":[1,2],"owner_id":"chen"}`, 0},
		{"the ids in another order are the same write", `{"ids":[1,2],"owner_id":"chen"}`, 0},
		{"one id more is another write", `{"ids":[1,2,3],"owner_id":"chen"}`, 403},
		{"another owner is another write", `{"ids":[1,2],"owner_id":"liu"}`, 403},
	} {
		t.Run(c.name, func(t *testing.T) {
			src := grant()
			r := targetReq("POST", "/api/customers/bulk-update")
			r.Grants = src
			d := s.Decide(bulkManager, r)
			if be := d.CheckBody("application/json", []byte(c.body)); be != nil {
				t.Fatal(be)
			}
			var answers []TargetAnswer
			for _, f := range d.TargetFetches() {
				answers = append(answers, bulkCRM(f))
			}
			status := 0
			if b := d.JudgeTargets(answers); b != nil {
				status = b.Status
			} else if err := d.UseGrant(context.Background()); err != nil {
				status = d.Status
			}
			if status != c.status {
				t.Fatalf("status %d (%s), want %d", status, d.Reason, c.status)
			}
			if c.status == 0 && src.used != 1 {
				t.Errorf("%d uses consumed, want 1", src.used)
			}
		})
	}
}

func TestABadBulkTargetIsRefusedWhenTheFileLoads(t *testing.T) {
	route := func(target string) string {
		return "version: 1\nroles: {sales: {}}\nroutes:\n  - id: c.bulk\n    match: {methods: [POST], path: \"/api/customers/bulk\"}\n    allow: [sales]\n    target:\n" + target
	}
	cases := []struct {
		name, target, want string
	}{
		{"ids without # is refused", "      ids: ids\n      fetch: \"/api/customers/{id}\"\n      allow_if: record.x == 1\n", "needs a #"},
		{"ids with # at the root is refused", "      ids: \"#.id\"\n      fetch: \"/api/customers/{id}\"\n      allow_if: record.x == 1\n", "under a key"},
		{"ids with two # is refused", "      ids: a.#.b.#\n      fetch: \"/api/customers/{id}\"\n      allow_if: record.x == 1\n", "one # only"},
		{"a fetch without a parameter for the ids is refused", "      ids: ids.#\n      fetch: \"/api/customers/all\"\n      allow_if: record.x == 1\n", "found 0"},
		{"a fetch with two free parameters is refused", "      ids: ids.#\n      fetch: \"/api/{a}/{b}\"\n      allow_if: record.x == 1\n", "found 2"},
		{"fetch and fetch_many together are refused", "      ids: ids.#\n      fetch: \"/api/customers/{id}\"\n      fetch_many: {path: \"/api/customers?ids={ids}\"}\n      allow_if: record.x == 1\n", "not both"},
		{"a fetch_many without {ids} is refused", "      ids: ids.#\n      fetch_many: {path: \"/api/customers?ids=1\"}\n      allow_if: record.x == 1\n", "{ids}"},
		{"a fetch_many with {ids} in the path is refused", "      ids: ids.#\n      fetch_many: {path: \"/api/{ids}\"}\n      allow_if: record.x == 1\n", "not captured"},
		{"max_ids over the limit is refused", "      ids: ids.#\n      fetch: \"/api/customers/{id}\"\n      max_ids: 5000\n      allow_if: record.x == 1\n", "at most 1000"},
		{"concurrency over the limit is refused", "      ids: ids.#\n      fetch: \"/api/customers/{id}\"\n      concurrency: 100\n      allow_if: record.x == 1\n", "at most 16"},
		{"id_fields on a bulk write is refused", "      ids: ids.#\n      fetch: \"/api/customers/{id}\"\n      id_fields: {id: [id]}\n      allow_if: record.x == 1\n", "names the record"},
		{"if_match on a bulk write is refused", "      ids: ids.#\n      fetch: \"/api/customers/{id}\"\n      if_match: true\n      allow_if: record.x == 1\n", "names the record"},
		{"fetch_many without ids is refused", "      fetch_many: {path: \"/api/customers?ids={ids}\"}\n      fetch: \"/api/customers/all\"\n      allow_if: record.x == 1\n", "add ids"},
		{"record with fetch_many is refused", "      ids: ids.#\n      record: data\n      fetch_many: {path: \"/api/customers?ids={ids}\"}\n      allow_if: record.x == 1\n", "fetch_many.records"},
		{"a fetch with a free parameter without ids is refused as before", "      fetch: \"/api/customers/{id}\"\n      allow_if: record.x == 1\n", "with ids:, the records the body names"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			wantLoadError(t, route(c.target), nil, c.want, "routes[0].target")
		})
	}
}

// BenchmarkJudgeABulkWrite judges a bulk reassignment of 100 customers,
// fetched in one list, per request (Decide, CheckBody, JudgeTargets): the
// target's allow_if natively (the project) and in CEL alone (the
// baseline), in the same run.
func BenchmarkJudgeABulkWrite(b *testing.B) {
	s := mustLoad(b, `version: 1
roles: {sales: {}, sales_manager: {inherits: [sales]}}
routes:
  - id: customers.bulk
    match: {methods: [POST], path: /api/customers/bulk-update}
    allow: [sales_manager]
    target:
      ids: ids.#
      fetch_many: {path: "/api/customers?ids={ids}", records: list}
      max_ids: 100
      allow_if: record.team in user.attrs.teams && record.owner_id != body.owner_id && timestamp(record.last_contact_at) > now - duration("87600h")
`)
	var ids, recs []string
	for i := 1; i <= 100; i++ {
		ids = append(ids, fmt.Sprint(i))
		recs = append(recs, fmt.Sprintf(`{"id":%d,"name":"Customer %d Trading Co.","owner_id":"zhang","team":"east","stage":"negotiation","last_contact_at":"2026-10-01T09:00:00Z","notes":"follow up about the renewal"}`, i, i))
	}
	body := []byte(`{"ids":[` + strings.Join(ids, ",") + `],"owner_id":"wu"}`)
	answer := TargetAnswer{Status: 200, Header: http.Header{"Content-Type": {"application/json"}}, Body: []byte(`{"list":[` + strings.Join(recs, ",") + `]}`)}
	native := s.routes[0].target.allowCond
	for _, c := range []struct {
		name string
		cond *cond.Condition
	}{{"native", native}, {"cel", native.CELOnly()}} {
		b.Run(c.name, func(b *testing.B) {
			s.routes[0].target.allowCond = c.cond
			defer func() { s.routes[0].target.allowCond = native }()
			r := targetReq("POST", "/api/customers/bulk-update")
			r.Now = workday
			b.SetBytes(int64(len(answer.Body)))
			b.ReportAllocs()
			for b.Loop() {
				d := s.Decide(bulkManager, r)
				if be := d.CheckBody("application/json", body); be != nil {
					b.Fatal(be)
				}
				if blk := d.JudgeTargets([]TargetAnswer{answer}); blk != nil {
					b.Fatal(blk.Reason)
				}
			}
		})
	}
}
