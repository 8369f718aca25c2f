package rulescli

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/crmguard/crmguard/rules"
)

var exampleRules = filepath.Join("..", "..", "..", "..", "examples", "rules.yaml")

// explained runs `rules explain` and returns its route, decision and the
// fields it treated ("action:path").
func explained(t *testing.T, in ExplainInput) (route, decision string, fields []string) {
	t.Helper()
	x := explainAll(t, in)
	return x.route, x.decision, x.fields
}

// explanation is what the tests read of `rules explain`'s output.
type explanation struct {
	route, decision string
	fields          []string // "action:path"
	limits          []string // the ids of the usage limits that apply
	upstream        string   // the query sent to the CRM ("" unchanged)
}

func explainAll(t *testing.T, in ExplainInput) explanation {
	t.Helper()
	var x explanation
	var out bytes.Buffer
	if code := Explain(in, &out); code != 0 {
		t.Fatalf("explain exit %d: %s", code, out.String())
	}
	for _, line := range strings.Split(out.String(), "\n") {
		k, v, _ := strings.Cut(line, ":")
		v = strings.TrimSpace(v)
		switch k {
		case "route":
			x.route, _, _ = strings.Cut(v, " ")
		case "decision":
			x.decision, _, _ = strings.Cut(v, " ")
		case "field":
			f, _, _ := strings.Cut(v, " ×")
			x.fields = append(x.fields, f)
		case "limit":
			id, _, _ := strings.Cut(v, ":")
			x.limits = append(x.limits, id)
		case "to CRM":
			x.upstream = v
		}
	}
	return x
}

// sampleAnswer holds every field the example rules treat, as a list
// answer (records: list) and as a single record.
const sampleRecord = `{"id":1,"owner_id":"u1","team":"east","name":"Zhang San","email":"z@example.com","phone":"13812345678","mobile":"13912345678","id_card":"110101199003071234","bank_account":"6222020200112233445","notes":"n","address":{"street":"1 Road","city":"Shanghai"},"updated_by":"wu","contacts":[{"name":"Li","email":"li@example.com"}],"payer_account":"6222020200112233445","sales_notes":"x","last_contact_at":"2026-01-01T00:00:00Z","created_at":"2025-03-01T00:00:00Z","updated_at":"2026-01-02T00:00:00Z","company":"Acme","bank_name":"ICBC","contract_amount":1000}`

func TestMatrixAgreesWithExplainForEveryRoleAndRoute(t *testing.T) {
	set, err := rules.LoadFile(exampleRules, rules.WithHashKey([]byte(DefaultTestHashKey)))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	listFile, recordFile, arrayFile := filepath.Join(dir, "list.json"), filepath.Join(dir, "record.json"), filepath.Join(dir, "array.json")
	_ = os.WriteFile(listFile, []byte(`{"list":[`+sampleRecord+`],"total":1}`), 0o600)
	_ = os.WriteFile(recordFile, []byte(sampleRecord), 0o600)
	_ = os.WriteFile(arrayFile, []byte(`[`+sampleRecord+`]`), 0o600)
	const business, night = "2026-11-18T10:00:00+08:00", "2026-11-22T03:00:00+08:00" // a Wednesday, a Sunday
	m := buildMatrix(set, exampleRules)
	fieldChecks, queryChecks, forwardChecks, condLimitsSeen := 0, 0, 0, 0
	if len(m.Roles) < 5 || len(m.Routes) < 10 {
		t.Fatalf("the matrix has %d roles and %d routes", len(m.Roles), len(m.Routes))
	}
	for _, rt := range m.Routes {
		if rt.Request == "" {
			t.Errorf("route %s: no example request reaches it", rt.ID)
			continue
		}
		for i, role := range m.Roles {
			a := rt.Cells[i]
			t.Run(role+" on "+rt.ID+" is what explain says", func(t *testing.T) {
				user := func(mfa bool, age string) string {
					// A team, as every user of the example has: lists
					// scoped to the user's teams (forward_query) refuse
					// a user without one.
					b, _ := json.Marshal(User{ID: "u1", Roles: []string{role}, Attrs: map[string]any{"teams": []string{"east"}}, MFA: mfa, AuthAge: age})
					return string(b)
				}
				base := ExplainInput{RulesFile: exampleRules, Request: rt.Request, Now: business, UserJSON: user(true, "")}
				want := "allow"
				if !a.Allowed || a.ApprovalNeeded {
					want = "deny"
				}
				x := explainAll(t, base)
				if x.route != rt.ID || x.decision != want {
					t.Fatalf("matrix cell %q; explain: route %s, %s (want %s)", cell(a), x.route, x.decision, want)
				}
				if !a.Allowed {
					return
				}
				atNight := base
				atNight.Now = night
				wantNight := want
				if !a.When.Always {
					wantNight = "deny"
				}
				xNight := explainAll(t, atNight)
				if xNight.decision != wantNight {
					t.Errorf("at night: explain says %s, the matrix (%q) says %s", xNight.decision, whenText(a), wantNight)
				}
				// Usage limits: those the matrix gives without a condition
				// apply at any time, and explain names no other.
				for _, when := range []explanation{x, xNight} {
					for _, l := range a.Limits {
						if l.When.Always && !slices.Contains(when.limits, l.ID) {
							t.Errorf("the matrix says limit %s always counts; explain lists %v", l.ID, when.limits)
						}
						if !l.When.Always && slices.Contains(when.limits, l.ID) {
							condLimitsSeen++
						}
					}
					for _, id := range when.limits {
						if !slices.ContainsFunc(a.Limits, func(l rules.LimitAccess) bool { return l.ID == id }) {
							t.Errorf("explain applies limit %s, the matrix (%q) does not name it", id, limitsText(a))
						}
					}
				}
				if want == "allow" {
					// What forward_query sets goes to the CRM.
					for _, f := range a.Forward {
						if f.When.Always && !strings.Contains("&"+strings.TrimPrefix(x.upstream, "the query becomes ?"), "&"+f.Name+"=") {
							t.Errorf("the matrix says the CRM is asked with %s; explain: %q", forwardText(a), x.upstream)
						}
						forwardChecks++
					}
					if len(a.Forward) == 0 && x.upstream != "" {
						t.Errorf("explain changes the query (%s), the matrix says nothing is sent", x.upstream)
					}
					// The query allowlist: a parameter it does not list is
					// refused, one refused for the role is refused, a plain
					// one it accepts passes.
					withParam := func(p string) string {
						if strings.Contains(base.Request, "?") {
							return base.Request + "&" + p
						}
						return base.Request + "?" + p
					}
					q := base
					q.Request = withParam("zz_unlisted=1")
					if got := explainAll(t, q).decision; a.QueryGuarded != (got == "deny") {
						t.Errorf("an unlisted parameter: explain says %s, the matrix says the query is %q", got, queryText(a))
					}
					for _, p := range a.Params {
						if strings.ContainsAny(p.Name, "[{") || strings.Contains(base.Request, p.Name+"=") {
							continue
						}
						wantP := ""
						switch {
						case p.Refused || len(p.Hidden) > 0:
							wantP = "deny"
						case p.Condition.Always && (p.Use == "" || !slices.Contains(p.Fields, "{value}") && !slices.Contains(p.Fields, "{field}") && !slices.Contains(p.Fields, "{expr}")):
							wantP = "allow" // filters or sorts on listed fields the role sees
						default:
							continue
						}
						q.Request = withParam(p.Name + "=1")
						if got := explainAll(t, q).decision; got != wantP {
							t.Errorf("%s: explain says %s, the matrix says %q", q.Request, got, queryText(a))
						}
						queryChecks++
					}
				}
				old := base
				old.UserJSON = user(true, "1h")
				wantOld := want
				if a.MaxAge > 0 && a.MaxAge < 1*60*60*1e9 {
					wantOld = "step-up"
				}
				if _, got, _ := explained(t, old); got != wantOld {
					t.Errorf("an hour after sign-in: explain says %s, the matrix (%q) says %s", got, signIn(a), wantOld)
				}
				noMFA := base
				noMFA.UserJSON = user(false, "")
				wantNoMFA := want
				if a.MFA {
					wantNoMFA = "step-up"
				}
				if _, got, _ := explained(t, noMFA); got != wantNoMFA {
					t.Errorf("without MFA: explain says %s, the matrix (%q) says %s", got, signIn(a), wantNoMFA)
				}
				if want != "allow" || !strings.HasPrefix(rt.Request, "GET ") {
					return
				}
				sample := base
				sample.UpstreamFile = recordFile
				switch {
				case a.Export:
					sample.UpstreamFile = arrayFile // records: "@this"
				case !strings.Contains(a.Path, "{"):
					sample.UpstreamFile = listFile // a collection (customers.list, customers.pool, ...)
				}
				var wantFields []string
				for _, f := range a.Fields {
					if !f.When.Always {
						continue
					}
					p := f.Path
					if f.Answer {
						p = "answer." + p
					}
					wantFields = append(wantFields, f.Action+":"+p)
				}
				_, _, gotFields := explained(t, sample)
				slices.Sort(wantFields)
				slices.Sort(gotFields)
				if !slices.Equal(gotFields, wantFields) {
					t.Errorf("fields: explain treated %v, the matrix says %v", gotFields, wantFields)
				}
				if len(wantFields) > 0 {
					fieldChecks++
				}
			})
		}
	}
	if fieldChecks < 30 {
		t.Errorf("only %d cells had their fields compared with explain's rewrite", fieldChecks)
	}
	if queryChecks < 30 || forwardChecks < 5 || condLimitsSeen == 0 {
		t.Errorf("only %d query parameters and %d forwarded parameters were compared with explain, and %d conditional limits seen applying", queryChecks, forwardChecks, condLimitsSeen)
	}
}

func TestMatrixFormats(t *testing.T) {
	render := func(format string) string {
		var out bytes.Buffer
		if code := Matrix(MatrixInput{RulesFile: exampleRules, Format: format}, &out); code != 0 {
			t.Fatalf("%s: exit %d: %s", format, code, out.String())
		}
		return out.String()
	}
	t.Run("markdown has the overview and a section per role", func(t *testing.T) {
		md := render("md")
		for _, s := range []string{"| route | request | admin |", "## sales\n", "| customers.list | GET | own (owner_id) or team (team in the user's teams) or pool (last_contact_at older than 8760h) |",
			"export needs approval export", "MFA within 5m"} {
			if !strings.Contains(md, s) {
				t.Errorf("missing %q", s)
			}
		}
	})
	t.Run("csv has one row per role and route", func(t *testing.T) {
		rows, err := csv.NewReader(strings.NewReader(render("csv"))).ReadAll()
		if err != nil {
			t.Fatal(err)
		}
		set, _ := rules.LoadFile(exampleRules, rules.WithHashKey([]byte(DefaultTestHashKey)))
		if want := 1 + len(set.Roles())*len(set.Routes()); len(rows) != want {
			t.Errorf("%d rows, want %d", len(rows), want)
		}
	})
	t.Run("html is one page without scripts", func(t *testing.T) {
		h := render("html")
		if !strings.Contains(h, "<h2>sales</h2>") || strings.Contains(h, "<script") {
			t.Errorf("unexpected page")
		}
	})
	t.Run("an unknown format is a usage error", func(t *testing.T) {
		var out bytes.Buffer
		if code := Matrix(MatrixInput{RulesFile: exampleRules, Format: "pdf"}, &out); code != 2 {
			t.Errorf("exit %d", code)
		}
	})
}

func TestRoleDiffSaysWhatARuleChangeDoesToEachRole(t *testing.T) {
	dir := t.TempDir()
	src, err := os.ReadFile(exampleRules)
	if err != nil {
		t.Fatal(err)
	}
	changed := strings.Replace(string(src), "allow: [finance, admin]\n    records: list\n    fields: &payment_fields", "allow: [finance, admin, sales]\n    records: list\n    fields: &payment_fields", 1)
	if changed == string(src) {
		t.Fatal("the test's edit did not apply")
	}
	newFile := filepath.Join(dir, "new.yaml")
	_ = os.WriteFile(newFile, []byte(changed), 0o600)
	var out bytes.Buffer
	if code := RoleDiff(exampleRules, newFile, "", &out); code != 0 {
		t.Fatalf("exit %d: %s", code, out.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 3 || lines[1] != "sales: may now call payments.list" || lines[2] != "sales_manager: may now call payments.list" {
		t.Errorf("got:\n%s", out.String())
	}
	out.Reset()
	RoleDiff(exampleRules, exampleRules, "", &out)
	if !strings.Contains(out.String(), "no role may do anything else") {
		t.Errorf("the same file: %s", out.String())
	}
}
