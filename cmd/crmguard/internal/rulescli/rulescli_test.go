package rulescli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestExampleCaseFiles runs every examples/*_test.yaml of the project
// through the runner, as CI's `crmguard rules test` would.
func TestExampleCaseFiles(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("..", "..", "..", "..", "examples", "*_test.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no examples/*_test.yaml files found; the example rules must have test cases")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			results, err := RunFile(f, Options{})
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range results {
				if !r.Passed() {
					t.Error(r.String())
				}
			}
			t.Logf("%d cases", len(results))
		})
	}
}

func TestRunnerPassesCorrectCases(t *testing.T) {
	results, err := RunFile("testdata/pass_test.yaml", Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(results) != 6 {
		t.Fatalf("want 6 results, got %d", len(results))
	}
	for _, r := range results {
		if !r.Passed() {
			t.Errorf("%s", r)
		}
	}
}

func TestRunnerReportsEachDifference(t *testing.T) {
	results, err := RunFile("testdata/fail_test.yaml", Options{})
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]Result{}
	for _, r := range results {
		byName[r.Case] = r
	}
	tests := []struct {
		name     string
		caseName string
		want     []string
	}{
		{name: "a status mismatch names both statuses", caseName: "a wrong status is reported", want: []string{"status: want 200, got 403"}},
		{name: "a body mismatch names the JSON path and both values, and every other expectation is checked",
			caseName: "a wrong body is reported with the path that differs",
			want: []string{`body.list[0].phone: want "13812345678", got "138****5678"`, `header X-Missing: want "here", got ""`,
				`body_includes: "nothing-like-this" not in body`, `body_excludes: "138****5678" is in body`, "audit.records_out: want 5, got 1",
				`upstream_query: want "offset=20", got ""`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, ok := byName[tt.caseName]
			if !ok {
				t.Fatalf("case %q not run", tt.caseName)
			}
			if r.Passed() {
				t.Fatalf("a wrong expectation passed")
			}
			if len(r.Failures) != len(tt.want) {
				t.Errorf("want %d failures, got %d: %q", len(tt.want), len(r.Failures), r.Failures)
			}
			for _, w := range tt.want {
				found := false
				for _, f := range r.Failures {
					found = found || strings.Contains(f, w)
				}
				if !found {
					t.Errorf("no failure contains %q: %q", w, r.Failures)
				}
			}
		})
	}
	if r := byName["a passing case in a failing file"]; !r.Passed() {
		t.Errorf("a correct case failed: %s", r)
	}
}

func TestTestCommandPrintsOneLinePerFailureAndExitsNonZero(t *testing.T) {
	var out bytes.Buffer
	code := Test([]string{"testdata/pass_test.yaml", "testdata/fail_test.yaml"}, Options{}, false, &out)
	if code != 1 {
		t.Fatalf("exit code: want 1, got %d", code)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	var fails []string
	for _, l := range lines {
		if strings.HasPrefix(l, "FAIL testdata/fail_test.yaml: a wrong") {
			fails = append(fails, l)
		}
	}
	if len(fails) != 2 {
		t.Errorf("want one line for each of the 2 failing cases, got:\n%s", out.String())
	}
	var ok bytes.Buffer
	if code := Test([]string{"testdata/pass_test.yaml"}, Options{}, false, &ok); code != 0 {
		t.Errorf("passing file: exit code %d:\n%s", code, ok.String())
	}
}

func TestBadCaseFilesAreErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name, s string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	rules, _ := filepath.Abs("testdata/rules.yaml")
	tests := []struct {
		name string
		file string
		want string
	}{
		{name: "a typo in an expectation key is refused", file: "testdata/typo_test.yaml", want: `unknown key "stauts"`},
		{name: "a typo in a case key is refused", file: write("a_test.yaml", "rules: "+rules+"\ncases:\n  - name: x\n    requst: {path: /}\n"), want: "requst"},
		{name: "a file without cases is refused", file: write("b_test.yaml", "rules: "+rules+"\ncases: []\n"), want: "no cases"},
		{name: "a rule file that does not load is refused with its position", file: write("c_test.yaml", "rules: "+mustAbs(t, "testdata/broken.yaml")+"\ncases:\n  - name: x\n    request: {path: /}\n"), want: "broken.yaml:7:5"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := RunFile(tt.file, Options{})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("want an error containing %q, got %v", tt.want, err)
			}
		})
	}
}

func mustAbs(t *testing.T, p string) string {
	t.Helper()
	a, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestLint(t *testing.T) {
	tests := []struct {
		name     string
		file     string
		wantCode int
		want     []string
	}{
		{name: "a broken file lists every error with file, line and column and exits 1", file: "testdata/broken.yaml", wantCode: 1,
			want: []string{"error: broken.yaml:7:5: routes[0].visibel: unknown key", "2 error(s)"}},
		{name: "bad usage limits are errors with file, line, column and key", file: "testdata/bad_limits.yaml", wantCode: 1,
			want: []string{"error: bad_limits.yaml:13:10: limits[0].max: max 0 with action block would refuse every request",
				`error: bad_limits.yaml:21:13: limits[1].action: want alert, step_up or block, got "ban"`, "2 error(s)"}},
		{name: "a good file exits 0", file: "testdata/rules.yaml", wantCode: 0, want: []string{"ok, 0 warning(s)"}},
		{name: "the shipped example rule file has no warnings (query guards everywhere, no writable visibility field)", file: "../../../../examples/rules.yaml", wantCode: 0, want: []string{"rules.yaml: ok, 0 warning(s)"}},
		{name: "a missing file exits 1", file: "testdata/nope.yaml", wantCode: 1, want: []string{"error:"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			if code := Lint(tt.file, &out); code != tt.wantCode {
				t.Fatalf("exit code: want %d, got %d:\n%s", tt.wantCode, code, out.String())
			}
			for _, w := range tt.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, out.String())
				}
			}
		})
	}
}

func TestLintPrintsWarnings(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "w.yaml")
	// The second route can never match: the first one shadows it.
	src := "version: 1\nroles:\n  sales: {}\nroutes:\n  - id: all\n    match: {path: /api/**}\n    allow: [sales]\n  - id: never\n    match: {path: /api/x}\n    allow: [sales]\n"
	if err := os.WriteFile(p, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if code := Lint(p, &out); code != 0 {
		t.Fatalf("warnings alone must not fail: %d\n%s", code, out.String())
	}
	if !strings.Contains(out.String(), "warning: w.yaml:") {
		t.Errorf("no positioned warning:\n%s", out.String())
	}
}

func TestExplain(t *testing.T) {
	sample := filepath.Join(t.TempDir(), "answer.json")
	if err := os.WriteFile(sample, []byte(`{"list":[{"id":1,"owner_id":"zhang","phone":"13812345678","bank_account":"1"},{"id":2,"owner_id":"li"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		in       ExplainInput
		wantCode int
		want     []string
		lacks    []string
	}{
		{name: "an allowed list names the route and shows the rewrite of a sample answer",
			in:   ExplainInput{RulesFile: "testdata/rules.yaml", UserJSON: `{"id":"zhang","roles":["sales"]}`, Request: "GET /api/customers", UpstreamFile: sample},
			want: []string{"route:     customers.list", "matched:   GET,HEAD /api/customers", "allow:     sales", "decision:  allow", "buffered and rewritten", `"phone": "138****5678"`, "records:   2 in, 1 out", "field:     mask:phone"}},
		{name: "a denied request says why",
			in:   ExplainInput{RulesFile: "testdata/rules.yaml", UserJSON: `{"id":"x","roles":[]}`, Request: "GET /api/customers"},
			want: []string{"decision:  deny (status 403)", "why:"}},
		{name: "an unmatched path says no route matched",
			in:   ExplainInput{RulesFile: "testdata/rules.yaml", UserJSON: `{"id":"zhang","roles":["sales"]}`, Request: "GET /nowhere/../api/x"},
			want: []string{"route:     none matched"}},
		{name: "path parameters are shown",
			in:   ExplainInput{RulesFile: "testdata/rules.yaml", UserJSON: `{"id":"zhang","roles":["sales"]}`, Request: "PATCH /api/customers/42"},
			want: []string{"customers.update (params id=42)", "checked against body guards", "target:    the stored record is fetched first (GET /api/customers/42)"}},
		{name: "a rep's customer list names the usage limit that counts it",
			in:    ExplainInput{RulesFile: exampleRules, UserJSON: `{"id":"zhang","roles":["sales"],"attrs":{"teams":["east"]},"mfa":true}`, Request: "GET /api/customers", Now: "2026-11-20T10:30:00+08:00"},
			want:  []string{"limit:     bulk_view: at most 300 records in 10m0s, counted per user; past that, refused with 429 until the window allows (block)"},
			lacks: []string{"off_hours"}},
		{name: "off hours the limit whose when holds is named too",
			in:   ExplainInput{RulesFile: exampleRules, UserJSON: `{"id":"zhang","roles":["sales"],"attrs":{"teams":["east"]},"mfa":true}`, Request: "GET /api/customers", Now: "2026-11-20T22:30:00+08:00"},
			want: []string{"limit:     bulk_view:", `limit:     off_hours: at most 0 requests in 1h0m0s, counted per user; past that, passes and raises an alert (alert); when !in_schedule("business_hours") holds now`}},
		{name: "a manager, whom the rep limit excepts, is told no limit applies",
			in:    ExplainInput{RulesFile: exampleRules, UserJSON: `{"id":"wang","roles":["sales_manager"],"attrs":{"teams":["east"]},"mfa":true}`, Request: "GET /api/customers", Now: "2026-11-20T10:30:00+08:00"},
			want:  []string{"limits:    none applies to this user on this request"},
			lacks: []string{"bulk_view"}},
		{name: "a rule file without limits says nothing of them",
			in:    ExplainInput{RulesFile: "testdata/rules.yaml", UserJSON: `{"id":"zhang","roles":["sales"]}`, Request: "GET /api/customers"},
			lacks: []string{"limit"}},
		{name: "a malformed request line is a usage error", in: ExplainInput{RulesFile: "testdata/rules.yaml", Request: "/api"}, wantCode: 2, want: []string{"must look like"}},
		{name: "an unknown user key is a usage error", in: ExplainInput{RulesFile: "testdata/rules.yaml", UserJSON: `{"name":"x"}`, Request: "GET /"}, wantCode: 2, want: []string{"--user"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			if code := Explain(tt.in, &out); code != tt.wantCode {
				t.Fatalf("exit code: want %d, got %d:\n%s", tt.wantCode, code, out.String())
			}
			for _, w := range tt.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, out.String())
				}
			}
			for _, w := range tt.lacks {
				if strings.Contains(out.String(), w) {
					t.Errorf("output has %q:\n%s", w, out.String())
				}
			}
		})
	}
}

// TestREADMECaseExamplePasses runs the case-file example of README.md
// against testdata/rules.yaml, so the documented format stays true.
func TestREADMECaseExamplePasses(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join("..", "..", "..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(readme), "```yaml\n")
	if !ok {
		t.Fatal("README.md has no yaml example")
	}
	example, _, _ := strings.Cut(rest, "```")
	dir := t.TempDir()
	rules, err := os.ReadFile("testdata/rules.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "rules.yaml"), rules, 0o600); err != nil {
		t.Fatal(err)
	}
	cases := filepath.Join(dir, "readme_test.yaml")
	if err := os.WriteFile(cases, []byte(example), 0o600); err != nil {
		t.Fatal(err)
	}
	results, err := RunFile(cases, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(results) != 2 {
		t.Fatalf("the README example has %d cases, want 2 (a read and a write judged on the stored record)", len(results))
	}
	for _, r := range results {
		if !r.Passed() {
			t.Errorf("the README example fails: %s", r)
		}
	}
}
