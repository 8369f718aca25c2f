package cond

import (
	"fmt"
	"net/http"
	"net/url"
	"reflect"
	"testing"
	"time"

	"github.com/crmguard/crmguard/rules/rewrite"
)

// agreementTables are CSV answers of every awkward kind: every value is a
// string (so numeric and boolean comparisons fail in both paths), empty and
// quoted cells, doubled quotes, line breaks inside quotes, multi-byte text,
// a column name with a dot, and columns present twice.
var agreementTables = []struct {
	name, csv string
}{
	{"plain rows", "id,owner_id,team,last_contact_at,amount,stage,flag,n,tags,address,odd-key.x\r\n" +
		"1,zhang,east,2026-10-01T00:00:00Z,50,won,true,1,vip,Shanghai,x\r\n" +
		"2,li,west,2024-01-01T00:00:00Z,150.5,lost,false,1.0,,Beijing,y\r\n" +
		"3,,,,,,,,,,\r\n" +
		"4,\"zh\"\"ang\",\"east\",yesterday,100,\"\",\"true\",\"1\",\"vip,gold\",\"Shang\nhai\",\"x\"\r\n" +
		"5,\"zhang\",north,2025-01-01T08:00:00+08:00,-0,won,TRUE,01,vip,上海,x\n" +
		"6,张,east,2024-02-30T00:00:00Z,1e3,lost,1,2.5,\"[\"\"vip\"\"]\",{},\"\"\n" +
		"7,zhang,east,2025-01-01T00:00:00Z,100,won,false,1,vip,Shanghai,x\n"},
	{"columns present twice", "id,owner_id,team,owner_id,team,last_contact_at\n" +
		"1,zhang,east,zhang,east,2026-10-01T00:00:00Z\n" +
		"2,zhang,east,li,east,2024-01-01T00:00:00Z\n" +
		"3,li,east,li,west,2024-01-01T00:00:00Z\n" +
		"4,\"zhang\",east,zhang,\"east\",2024-01-01T00:00:00Z\n"},
}

// runTableVisible rewrites the CSV body with c as `visible`, for user zhang
// of team east and north with the given roles, as the engine does per
// request: the rows shown (by id) and the evaluation errors counted.
func runTableVisible(t testing.TB, c *Condition, keys []rewrite.Path, roles []string, body string) (ids []string, evalErrors int, err error) {
	now := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	u := SignedInUser("zhang", roles, map[string]any{"teams": []any{"east", "north"}}, true, time.Time{}, now)
	var r Request
	r.Init("GET", "/export", map[string]string{}, url.Values{}, http.Header{})
	st := c.Prepare(&Activation{User: &u, Request: &r, Now: now})
	p := &rewrite.Plan{Records: mustPath(t, "@this"), Keys: keys, AuditID: mustPath(t, "id"), Visible: st.Eval}
	if err := p.Compile(); err != nil {
		t.Fatal(err)
	}
	var stats rewrite.Stats
	_, err = p.RewriteTable(nil, []byte(body), ',', &stats)
	return stats.IDs, stats.EvalErrors, err
}

func TestNativeAndCELAgreeOnTableRows(t *testing.T) {
	for _, tb := range agreementTables {
		for _, e := range agreementExprs {
			for _, roles := range [][]string{{"sales"}, {"sales_manager"}} {
				t.Run(fmt.Sprintf("%s for %v shows the same %s natively and in CEL", e.src, roles, tb.name), func(t *testing.T) {
					ac := bothPaths(t, e.src)
					if got := ac.native.Native(); got != e.native {
						t.Fatalf("native compiled = %v, want %v", got, e.native)
					}
					nIDs, nErr, nFail := runTableVisible(t, ac.native, ac.keys, roles, tb.csv)
					cIDs, cErr, cFail := runTableVisible(t, ac.cel, ac.keys, roles, tb.csv)
					if nFail != nil || cFail != nil {
						t.Fatalf("the table is not read: native %v, CEL %v", nFail, cFail)
					}
					if !reflect.DeepEqual(nIDs, cIDs) || nErr != cErr {
						t.Fatalf("native shows %v with %d eval errors, CEL shows %v with %d", nIDs, nErr, cIDs, cErr)
					}
				})
			}
		}
	}
}

// TestTableRowsAreJudgedNativelyWhereJSONRecordsAre holds the point of the
// table path: a common visible condition shows the rows a reader expects
// (not only the same rows in both paths, which an always-false predicate
// would also give).
func TestTableRowsAreJudgedNativelyWhereJSONRecordsAre(t *testing.T) {
	cases := []struct {
		src   string
		roles []string
		want  []string
	}{
		{`record.owner_id == user.id`, []string{"sales"}, []string{"1", "5", "7"}},
		{`record.owner_id == user.id || record.team in user.attrs.teams`, []string{"sales"}, []string{"1", "4", "5", "6", "7"}},
		{`timestamp(record.last_contact_at) <= timestamp("2025-01-01T00:00:00Z")`, []string{"sales"}, []string{"2", "5", "7"}},
		{`record["odd-key.x"] == "x"`, []string{"sales"}, []string{"1", "4", "5", "7"}},
		{`"sales_manager" in user.roles`, []string{"sales_manager"}, []string{"1", "2", "3", "4", "5", "6", "7"}},
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("%s for %v shows rows %v", c.src, c.roles, c.want), func(t *testing.T) {
			ac := bothPaths(t, c.src)
			if !ac.native.Native() {
				t.Fatalf("%s does not compile to a native predicate", c.src)
			}
			ids, _, err := runTableVisible(t, ac.native, ac.keys, c.roles, agreementTables[0].csv)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(ids, c.want) {
				t.Fatalf("rows shown %v, want %v", ids, c.want)
			}
		})
	}
}

// FuzzNativeAgreesWithCELOnTableRows feeds arbitrary CSV rows (under the
// first agreement table's header) to every agreement expression: both
// paths read or refuse the same tables and show the same rows.
func FuzzNativeAgreesWithCELOnTableRows(f *testing.F) {
	hdr := "id,owner_id,team,last_contact_at,amount,stage,flag,n,tags,address,odd-key.x\n"
	f.Add(uint8(0), "1,zhang,east,2026-10-01T00:00:00Z,50,won,true,1,vip,Shanghai,x\n")
	f.Add(uint8(4), "2,\"l\"\"i\",west,2024-01-01T00:00:00Z,,,,,,,\n")
	f.Add(uint8(9), "3,zhang,\"ea\nst\",2024-02-30T00:00:00Z,1,2,3,4,5,6,7\r\n")
	cases := make([]agreementCase, len(agreementExprs))
	for i, e := range agreementExprs {
		cases[i] = bothPaths(f, e.src)
	}
	f.Fuzz(func(t *testing.T, which uint8, rows string) {
		ac := cases[int(which)%len(cases)]
		for _, roles := range [][]string{{"sales"}, {"sales_manager"}} {
			nIDs, nErr, nFail := runTableVisible(t, ac.native, ac.keys, roles, hdr+rows)
			cIDs, cErr, cFail := runTableVisible(t, ac.cel, ac.keys, roles, hdr+rows)
			if (nFail == nil) != (cFail == nil) {
				t.Fatalf("errors differ: native %v, CEL %v", nFail, cFail)
			}
			if nFail == nil && (!reflect.DeepEqual(nIDs, cIDs) || nErr != cErr) {
				t.Fatalf("%s on %q: native shows %v with %d errors, CEL %v with %d", agreementExprs[int(which)%len(cases)].src, rows, nIDs, nErr, cIDs, cErr)
			}
		}
	})
}
