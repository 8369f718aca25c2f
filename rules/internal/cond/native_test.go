package cond

import (
	"fmt"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"cel.dev/cel-go/common/types"
	"github.com/crmguard/crmguard/rules/rewrite"
)

// agreementExprs are record conditions of the shapes the native compiler
// handles, and a few it leaves to CEL.
var agreementExprs = []struct {
	src    string
	native bool // the native compiler must take it
}{
	{`record.owner_id == user.id`, true},
	{`record.team in user.attrs.teams`, true},
	{`"sales_manager" in user.roles`, true},
	{`timestamp(record.last_contact_at) < now - duration("8760h")`, true},
	{`record.owner_id == user.id || record.team in user.attrs.teams || "sales_manager" in user.roles || timestamp(record.last_contact_at) < now - duration("8760h")`, true},
	{`record.amount > 100`, true},
	{`record.amount >= 100.5 && record.amount <= 1000`, true},
	{`!(record.owner_id == user.id)`, true},
	{`record.owner_id != user.id && record.stage == "won"`, true},
	{`record.address.city == "Shanghai"`, true},
	{`record["odd-key.x"] == "x"`, true},
	{`"vip" in record.tags`, true},
	{`record.owner_id == user.id || record.missing == 1`, true},
	{`record.missing == 1 || record.owner_id == user.id`, true},
	{`record.missing == 1 && record.owner_id == "nobody"`, true},
	{`record.flag`, true},
	{`record.flag || record.owner_id == user.id`, true},
	{`record.n == 1`, true},
	{`record.n < 2.5`, true},
	{`record.owner_id == 7`, true},
	{`record.address == {"city": "Shanghai"}`, true},
	{`user.attrs.nothing == record.owner_id || record.stage == "won"`, true},
	{`record.stage in ["won", "lost"]`, true},
	{`record.stage in ["won", 1, null]`, true},
	{`record.amount > 100 || record.amount == 2.5`, true},
	{`record.stage in [user.id, "won"]`, true},
	{`record.owner_id == user.id || record.team in user.attrs.teams`, true},
	{`record.owner_id != user.id && record.team in user.attrs.teams`, true},
	{`!(record.team in user.attrs.teams) && timestamp(record.last_contact_at) > timestamp("2025-01-01T00:00:00Z")`, true},
	{`record.team in ["east", "west"] && !(record.owner_id == "li") || "sales_manager" in user.roles`, true},
	{`timestamp(record.last_contact_at) <= timestamp("2025-01-01T00:00:00Z")`, true},
	{`timestamp(record.last_contact_at) == timestamp("2025-01-01T00:00:00Z")`, true},
	{`timestamp(record.last_contact_at) > timestamp("2024-01-01T00:00:00.5Z")`, true},
	{`timestamp(record.last_contact_at) >= timestamp("2024-01-01T00:00:00.5Z")`, true},
	{`timestamp("2025-01-01T00:00:00Z") > timestamp(record.last_contact_at)`, true},
	{`timestamp("2024-01-01T00:00:00Z") != timestamp(record.last_contact_at)`, true},
	{`record.owner_id.startsWith("zh")`, false},
	{`has(record.team) && record.team == "east"`, false},
	{`size(record.tags) > 1`, false},
	{`record.tags.exists(t, t == "vip")`, false},
}

// agreementRecords are records of every awkward kind.
var agreementRecords = []string{
	`{"id":"1","owner_id":"zhang","team":"east","last_contact_at":"2026-10-01T00:00:00Z","amount":50,"stage":"won","tags":["vip"],"flag":true,"n":1,"address":{"city":"Shanghai"}}`,
	`{"id":"2","owner_id":"li","team":"west","last_contact_at":"2024-01-01T00:00:00Z","amount":150.5,"stage":"lost","tags":[],"flag":false,"n":1.0,"address":{"city":"Beijing"}}`,
	`{"id":"3"}`,
	`{"id":"4","owner_id":null,"team":7,"last_contact_at":"yesterday","amount":"100","stage":null,"tags":"vip","flag":"true","n":"1","address":"Shanghai"}`,
	`{"id":"5","owner_id":"zhang","owner_id":"li","team":"east","team":"east"}`,
	`{"id":"6","owner_id":7,"amount":1e3,"n":1.5e0,"last_contact_at":1700000000,"address":{"city":"Shanghai","city":"Shanghai"},"odd-key.x":"x"}`,
	`{"id":"7","owner_id":"zh\u0061ng","te\u0061m":"east","tags":["vip","vip"],"address":{"city":null},"amount":-0,"n":99999999999999999999}`,
	`{"id":"9","last_contact_at":"2025-01-01T00:00:00Z"}`,
	`{"id":"10","last_contact_at":"2024-01-01T00:00:00Z"}`,
	`{"id":"11","last_contact_at":"2024-01-01T00:00:01Z"}`,
	`{"id":"12","last_contact_at":"2024-12-31T23:59:59Z"}`,
	`{"id":"13","last_contact_at":"2024-02-30T00:00:00Z"}`,
	`{"id":"14","last_contact_at":"2025-01-01T08:00:00+08:00"}`,
	`{"id":"8","last_contact_at":"2025-11-24T10:00:00+08:00","amount":1000,"flag":null,"address":{"city":"Shanghai","zip":{"a":[1,2]}}}`,
}

// agreementCase is one agreement expression compiled twice: natively (as
// at load) and with its native predicate removed, so that CEL decides
// everything. keys are the record values the native one reads; both run
// with them, as both would on a route (the rewriter hides a record in
// which one of them is ambiguous).
type agreementCase struct {
	native, cel *Condition
	keys        []rewrite.Path
}

// bothPaths compiles src twice, once as usual and once for CEL only.
func bothPaths(t testing.TB, src string) agreementCase {
	t.Helper()
	env, err := NewEnv(nil)
	if err != nil {
		t.Fatal(err)
	}
	compile := func() *Condition {
		c, issues := CompileCondition(env, src)
		if c == nil {
			t.Fatalf("%s does not compile: %v", src, issues)
		}
		return c
	}
	var k RecordKeys
	native := compile()
	k.Add(native)
	return agreementCase{native: native, cel: compile().CELOnly(), keys: k.Paths()}
}

func mustPath(t testing.TB, p string) rewrite.Path {
	t.Helper()
	path, err := rewrite.ParsePath(p)
	if err != nil {
		t.Fatal(err)
	}
	return path
}

// runVisible rewrites body's "list" with c as `visible`, for user zhang of
// team east and north with the given roles, as the engine does per
// request: the records shown (by id) and the evaluation errors counted.
func runVisible(t testing.TB, c *Condition, keys []rewrite.Path, roles []string, body string) (ids []string, evalErrors int, err error) {
	now := time.Now()
	u := SignedInUser("zhang", roles, map[string]any{"teams": []any{"east", "north"}}, true, time.Time{}, now)
	var r Request
	r.Init("GET", "/list", map[string]string{}, url.Values{}, http.Header{})
	st := c.Prepare(&Activation{User: &u, Request: &r, Now: now})
	p := &rewrite.Plan{Records: mustPath(t, "list"), Keys: keys, AuditID: mustPath(t, "id"), Visible: st.Eval}
	if err := p.Compile(); err != nil {
		t.Fatal(err)
	}
	var stats rewrite.Stats
	_, err = p.Rewrite(nil, []byte(body), &stats)
	return stats.IDs, stats.EvalErrors, err
}

func TestNativeAndCELAgree(t *testing.T) {
	body := `{"list":[` + strings.Join(agreementRecords, ",") + `]}`
	for _, e := range agreementExprs {
		for _, roles := range [][]string{{"sales"}, {"sales_manager"}} {
			t.Run(fmt.Sprintf("%s for %v gives the same records natively and in CEL", e.src, roles), func(t *testing.T) {
				ac := bothPaths(t, e.src)
				if got := ac.native.Native(); got != e.native {
					t.Fatalf("native compiled = %v, want %v", got, e.native)
				}
				nIDs, nErr, nFail := runVisible(t, ac.native, ac.keys, roles, body)
				cIDs, cErr, cFail := runVisible(t, ac.cel, ac.keys, roles, body)
				if fmt.Sprint(nFail) != fmt.Sprint(cFail) {
					t.Fatalf("errors differ: native %v, CEL %v", nFail, cFail)
				}
				if !reflect.DeepEqual(nIDs, cIDs) || nErr != cErr {
					t.Fatalf("native shows %v with %d eval errors, CEL shows %v with %d", nIDs, nErr, cIDs, cErr)
				}
			})
		}
	}
}

// FuzzNativeAgreesWithCEL feeds arbitrary records to every agreement
// expression: the native predicates and CEL must show the same records and
// count the same evaluation errors.
func FuzzNativeAgreesWithCEL(f *testing.F) {
	for i, r := range agreementRecords {
		f.Add(uint8(i), r)
	}
	cases := make([]agreementCase, len(agreementExprs))
	for i, e := range agreementExprs {
		cases[i] = bothPaths(f, e.src)
	}
	f.Fuzz(func(t *testing.T, which uint8, record string) {
		ac := cases[int(which)%len(cases)]
		body := `{"list":[` + record + `]}`
		for _, roles := range [][]string{{"sales"}, {"sales_manager"}} {
			nIDs, nErr, nFail := runVisible(t, ac.native, ac.keys, roles, body)
			cIDs, cErr, cFail := runVisible(t, ac.cel, ac.keys, roles, body)
			if (nFail == nil) != (cFail == nil) {
				t.Fatalf("errors differ: native %v, CEL %v", nFail, cFail)
			}
			if nFail == nil && (!reflect.DeepEqual(nIDs, cIDs) || nErr != cErr) {
				t.Fatalf("%s on %s: native shows %v with %d errors, CEL %v with %d", agreementExprs[int(which)%len(cases)].src, record, nIDs, nErr, cIDs, cErr)
			}
		}
	})
}

// celTimestampAgrees checks the fast timestamp parser against CEL's own
// timestamp(string).
func celTimestampAgrees(t *testing.T, s string) {
	got, ok := celTimestamp(s)
	v := types.String(s).ConvertToType(types.TimestampType)
	want, isTS := v.(types.Timestamp)
	if ok != isTS {
		t.Fatalf("celTimestamp(%q) ok = %v, CEL gives %v", s, ok, v)
	}
	if ok && !got.Equal(want.Time) {
		t.Fatalf("celTimestamp(%q) = %v, CEL gives %v", s, got, want.Time)
	}
	// The canonical fast path: it may only give CEL's instant, and it must
	// take every canonical string CEL accepts.
	sec, fast := canonicalUTC(s)
	if fast && (!isTS || !want.Time.Equal(time.Unix(sec, 0))) {
		t.Fatalf("canonicalUTC(%q) = %d, CEL gives %v", s, sec, v)
	}
	canonical := len(s) == 20 && s[10] == 'T' && s[19] == 'Z'
	if isTS && canonical && !fast {
		t.Fatalf("canonicalUTC(%q) refuses a canonical instant CEL accepts", s)
	}
}

var timestampSeeds = []string{
	"2026-10-01T00:00:00Z", "2026-10-01t00:00:00z", "2026-10-01T00:00:00.123456789+08:00", "2026-10-01T00:00:00-23:59",
	"2026-10-01T00:00:00+24:00", "2026-10-01T24:00:00Z", "2026-13-01T00:00:00Z", "2026-00-01T00:00:00Z", "2026-02-30T00:00:00Z",
	"2026-10-01T00:00:60Z", "2026-10-01T00:00:00,5Z", "2026-10-01T0:00:00Z", "2026-10-01 00:00:00Z", "0000-01-01T00:00:00Z",
	"9999-12-31T23:59:59+00:00", "9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00", " 2026-10-01T00:00:00Z", "2026-10-01T00:00:00.Z",
	"yesterday", "", "2026-10-01T00:00:00+0800", "２０２６-10-01T00:00:00Z",
	"2024-02-29T23:59:59Z", "2023-02-29T00:00:00Z", "1900-02-29T00:00:00Z", "2000-02-29T12:00:00Z", "2026-04-31T00:00:00Z",
	"2026-12-31T23:59:59Z", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "1969-12-31T23:59:59Z", "2026-1a-01T00:00:00Z",
	"2026-10-01T00:00:00z", "2026-10-01t00:00:00Z", "2026-10-01T00:60:00Z", "2026-10-01T00:00:00.5Z", "2026/10/01T00:00:00Z",
	"20a6-10-01T00:00:00Z", "2a26-10-01T00:00:00Z", "2026-1:-01T00:00:00Z", "2026-10-0/T00:00:00Z", "2026-10-01T/0:00:00Z",
	"2026-10-01T00:0/:00Z", "2026-10-01T00:00:/0Z", "0000-12-31T23:59:59Z", "0001-02-29T00:00:00Z", "0004-02-29T00:00:00Z",
}

func TestTheFastTimestampParserAgreesWithCEL(t *testing.T) {
	for _, s := range timestampSeeds {
		t.Run(fmt.Sprintf("%q parses as in CEL", s), func(t *testing.T) { celTimestampAgrees(t, s) })
	}
}

// FuzzCELTimestamp: the fast parser and CEL accept the same strings and
// give the same instants.
func FuzzCELTimestamp(f *testing.F) {
	for _, s := range timestampSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) { celTimestampAgrees(t, s) })
}
