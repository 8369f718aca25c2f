package auditcli

import (
	"bytes"
	"cmp"
	"compress/gzip"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/crmguard/crmguard/caddymodule/auditlog"
)

// expected turns the generator's truth into the report's users.
func (t *truth) expected() []*UserReport {
	var out []*UserReport
	for _, name := range sortedKeys(t.users) {
		u := t.users[name]
		r := u.UserReport
		r.Records = len(u.records)
		for _, route := range sortedKeys(u.routes) {
			ra := u.routes[route]
			ra.RouteActivity.Records = len(ra.records)
			r.Routes = append(r.Routes, ra.RouteActivity)
		}
		keys := sortedKeys2(u.reveal)
		for _, k := range keys {
			if n := u.reveal[k]; n > 0 {
				r.Revealed = append(r.Revealed, Revealed{Route: k[0], Field: k[1], Records: n})
			}
		}
		for _, k := range sortedKeys2(u.exports) {
			r.Exports = append(r.Exports, *u.exports[k])
		}
		for _, route := range sortedKeys(u.writes) {
			r.Writes = append(r.Writes, *u.writes[route])
		}
		for k, n := range u.denials {
			r.Denials = append(r.Denials, Denial{Decision: k[0], Reason: k[1], Count: n})
		}
		slices.SortFunc(r.Denials, func(a, b Denial) int {
			return cmp.Or(cmp.Compare(b.Count, a.Count), cmp.Compare(a.Decision, b.Decision), cmp.Compare(a.Reason, b.Reason))
		})
		for _, id := range sortedKeys(u.elevs) {
			r.Elevations = append(r.Elevations, *u.elevs[id])
		}
		out = append(out, &r)
	}
	return out
}

func sortedKeys2[V any](m map[[2]string]V) [][2]string {
	keys := make([][2]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b [2]string) int { return cmp.Or(cmp.Compare(a[0], b[0]), cmp.Compare(a[1], b[1])) })
	return keys
}

// writeGeneratedSet writes n generated events as the three forms a report
// reads: a chained file of the file sink, a gzip-compressed rolled file,
// and an export of a log system in the Caddy logger's form (the event
// under "event") with lines that are no events among them.
func writeGeneratedSet(t *testing.T, n int) ([]string, *truth) {
	t.Helper()
	dir := t.TempDir()
	tr := newTruth()
	g := newGenerator(42, 23, tr)
	chain := auditlog.NewChain([]byte("k"), auditlog.State{})
	var plain, zipped, exported bytes.Buffer
	zw := gzip.NewWriter(&zipped)
	for i := 0; i < n; i++ {
		e := g.next(i)
		line := g.write(nil, &e)
		switch i % 3 {
		case 0:
			plain.Write(chain.Append(nil, line, plain.Len() == 0))
		case 1:
			zw.Write(append(line, '\n'))
		default:
			exported.WriteString(`{"level":"info","ts":1.7e9,"logger":"crm_guard.audit","msg":"request","event":`)
			exported.Write(line)
			exported.WriteString("}\n")
			if i%50 == 2 {
				exported.WriteString(`{"level":"info","ts":1.7e9,"logger":"http","msg":"server running"}` + "\n")
			}
		}
	}
	zw.Close()
	files := []string{filepath.Join(dir, "audit.jsonl"), filepath.Join(dir, "audit-2026-11-01T00-00-00.000.jsonl.gz"), filepath.Join(dir, "loki-export.jsonl")}
	for i, b := range []*bytes.Buffer{&plain, &zipped, &exported} {
		if err := os.WriteFile(files[i], b.Bytes(), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return files, tr
}

var genOptions = ReportOptions{From: "2026-11-02", To: "2026-11-14", TZ: "Asia/Shanghai"}

func TestReportCountsMatchTheGeneratedTruth(t *testing.T) {
	const n = 6000
	files, tr := writeGeneratedSet(t, n)
	r, err := BuildReport(genOptions, files)
	if err != nil {
		t.Fatal(err)
	}
	t.Run("every event is read from the three forms and the period is applied", func(t *testing.T) {
		if r.Events != n || r.InPeriod != int64(tr.inPeriod) || r.Anonymous != tr.anonymous {
			t.Fatalf("events %d in period %d anonymous %d; want %d %d %d", r.Events, r.InPeriod, r.Anonymous, n, tr.inPeriod, tr.anonymous)
		}
		if r.Lines <= r.Events {
			t.Errorf("the log system's other lines were not read: %d lines, %d events", r.Lines, r.Events)
		}
	})
	t.Run("the rule file reloads are listed apart from the requests", func(t *testing.T) {
		if tr.reloads == 0 || len(r.Reloads) != tr.reloads {
			t.Fatalf("%d reloads listed, the log holds %d in the period", len(r.Reloads), tr.reloads)
		}
		for _, rl := range r.Reloads {
			if rl.OldVersion != genVersionOld || rl.NewVersion != genVersionNew || len(rl.Roles) != 1 {
				t.Errorf("reload %+v", rl)
			}
		}
	})
	t.Run("refusals by a usage limit count as denials", func(t *testing.T) {
		limited := 0
		for _, u := range r.Users {
			for _, d := range u.Denials {
				if d.Decision == "limited" {
					limited += d.Count
				}
			}
		}
		if limited == 0 {
			t.Error("no user has a denial by a usage limit")
		}
	})
	t.Run("each user's figures are exactly the truth", func(t *testing.T) {
		want := tr.expected()
		if len(r.Users) != len(want) {
			t.Fatalf("%d users, want %d", len(r.Users), len(want))
		}
		for i, w := range want {
			g, _ := json.MarshalIndent(r.Users[i], "", " ")
			x, _ := json.MarshalIndent(w, "", " ")
			if !bytes.Equal(g, x) {
				t.Errorf("user %s differs:\n got %s\nwant %s", w.User, g, x)
			}
		}
	})
	t.Run("the days are exactly the truth", func(t *testing.T) {
		var want []DayActivity
		for _, d := range sortedKeys(tr.days) {
			want = append(want, *tr.days[d])
		}
		if !slices.Equal(r.Days, want) {
			t.Errorf("days\n got %v\nwant %v", r.Days, want)
		}
	})
	t.Run("the sensitive fields are those treated for someone on the route", func(t *testing.T) {
		got, _ := json.Marshal(r.Sensitive)
		if string(got) != `{"customers.get":["bank_account"],"customers.list":["bank_account","phone"]}` {
			t.Errorf("sensitive fields: %s", got)
		}
	})
	t.Run("the unusual users are the top of each measure", func(t *testing.T) {
		want := tr.expected()
		for _, m := range []struct {
			name    string
			got     []Ranked
			measure func(*UserReport) int
		}{
			{"records", r.Unusual.MostRecords, func(u *UserReport) int { return u.Records }},
			{"denials", r.Unusual.MostDenials, func(u *UserReport) int { return u.DenialCount }},
			{"off hours", r.Unusual.MostOffHours, func(u *UserReport) int { return u.OffHours }},
		} {
			if len(m.got) != 5 {
				t.Fatalf("%s: want 5 users, got %v", m.name, m.got)
			}
			for i, x := range m.got {
				better := 0
				for _, u := range want {
					if m.measure(u) > x.Value {
						better++
					}
					if u.User == x.User && m.measure(u) != x.Value {
						t.Errorf("%s: %s has %d, the list says %d", m.name, u.User, m.measure(u), x.Value)
					}
				}
				if better > i {
					t.Errorf("%s: %d users beat %s at place %d", m.name, better, x.User, i+1)
				}
			}
		}
	})
}

func TestReportFormats(t *testing.T) {
	files, tr := writeGeneratedSet(t, 1500)
	want := tr.expected()
	render := func(t *testing.T, format string) string {
		t.Helper()
		o := genOptions
		o.Format = format
		var out, errOut bytes.Buffer
		if code := ReportCommand(o, files, &out, &errOut); code != 0 {
			t.Fatalf("exit %d: %s", code, errOut.String())
		}
		return out.String()
	}
	u := want[0]
	t.Run("text names each user with their figures", func(t *testing.T) {
		out := render(t, "text")
		for _, s := range []string{`Audit report 2026-11-02 to 2026-11-14 \(Asia/Shanghai\)`, "== " + u.User + " \\(",
			`records seen:\s+` + strconv.Itoa(u.Records) + " distinct", "Unusual users"} {
			if !regexp.MustCompile(s).MatchString(out) {
				t.Errorf("missing %q in\n%s", s, out[:min(len(out), 2000)])
			}
		}
	})
	t.Run("json decodes to the same users", func(t *testing.T) {
		var r Report
		if err := json.Unmarshal([]byte(render(t, "json")), &r); err != nil {
			t.Fatal(err)
		}
		g, _ := json.Marshal(r.Users)
		x, _ := json.Marshal(want)
		if !bytes.Equal(g, x) {
			t.Error("the JSON report's users differ from the truth")
		}
	})
	t.Run("csv has one row per figure", func(t *testing.T) {
		rows, err := csv.NewReader(strings.NewReader(render(t, "csv"))).ReadAll()
		if err != nil {
			t.Fatal(err)
		}
		found := 0
		for _, row := range rows {
			if row[0] == u.User && row[1] == "records" {
				found++
				if row[3] != strconv.Itoa(u.Records) {
					t.Errorf("records of %s: %s, want %d", u.User, row[3], u.Records)
				}
			}
		}
		if found != 1 || rows[0][0] != "user" {
			t.Errorf("want a header and one records row for %s, got %d", u.User, found)
		}
	})
	t.Run("html is one file with inline charts and no scripts or external assets", func(t *testing.T) {
		out := render(t, "html")
		if strings.Count(out, "<svg") != 2 {
			t.Errorf("want two charts, got %d", strings.Count(out, "<svg"))
		}
		noXMLNS := strings.NewReplacer(`xmlns="http://www.w3.org/2000/svg"`, "", `xmlns:xlink="http://www.w3.org/1999/xlink"`, "").Replace(out)
		for _, bad := range []string{"<script", "http://", "https://", "<link", "@import", "src="} {
			if strings.Contains(noXMLNS, bad) {
				t.Errorf("the page contains %q", bad)
			}
		}
		if !strings.Contains(out, "<summary>"+u.User+" (") {
			t.Errorf("no section for %s", u.User)
		}
	})
}

func TestReportEscapesHostileValues(t *testing.T) {
	dir := t.TempDir()
	evil := `<script>alert(1)</script>`
	line := `{"time":"2026-11-03T03:00:00Z","user":"` + evil + `","roles":["=cmd|' /C calc'!A0"],"method":"GET","path":"/api/customers/export","route":"customers.export","decision":"allow","status":200,"records_in":1,"records_out":1,"export":{"route":true,"approved":true},"grant":{"id":"g1","policy":"export","purpose":"=HYPERLINK(\"http://x\")"}}` + "\n"
	p := filepath.Join(dir, "a.jsonl")
	_ = os.WriteFile(p, []byte(line), 0o600)
	for _, format := range []string{"html", "csv"} {
		t.Run(format+" output keeps names and purposes as text", func(t *testing.T) {
			o := genOptions
			o.Format = format
			var out, errOut bytes.Buffer
			if code := ReportCommand(o, []string{p}, &out, &errOut); code != 0 {
				t.Fatalf("exit %d: %s", code, errOut.String())
			}
			s := out.String()
			if format == "html" && (strings.Contains(s, evil) || !strings.Contains(s, "&lt;script&gt;alert(1)&lt;/script&gt;")) {
				t.Errorf("the user id is not escaped, or missing")
			}
			if format == "csv" && (strings.Contains(s, "\n=") || strings.Contains(s, ",=") || strings.Contains(s, `"=`)) {
				t.Errorf("a cell starts with = and would run as a formula:\n%s", s)
			}
		})
	}
}

func TestReportRefusesBadOptions(t *testing.T) {
	files, _ := writeGeneratedSet(t, 10)
	tests := []struct {
		name string
		o    ReportOptions
		want string
	}{
		{name: "a date that is no date", o: ReportOptions{From: "yesterday", To: "2026-11-14"}, want: "--from"},
		{name: "a period that ends before it starts", o: ReportOptions{From: "2026-11-14", To: "2026-11-02"}, want: "not after"},
		{name: "an unknown zone", o: ReportOptions{From: "2026-11-02", To: "2026-11-14", TZ: "Mars/Olympus"}, want: "--tz"},
		{name: "an unknown format", o: ReportOptions{From: "2026-11-02", To: "2026-11-14", Format: "pdf"}, want: "--format"},
		{name: "hours that are no hours", o: ReportOptions{From: "2026-11-02", To: "2026-11-14", Hours: "9-5"}, want: "hours"},
	}
	for _, tt := range tests {
		t.Run(tt.name+" is refused", func(t *testing.T) {
			var out, errOut bytes.Buffer
			if code := ReportCommand(tt.o, files, &out, &errOut); code != 2 || !strings.Contains(errOut.String(), tt.want) {
				t.Fatalf("exit %d, stderr %q; want 2 and %q", code, errOut.String(), tt.want)
			}
		})
	}
}

// TestReportReadsWhatALogSystemExports reads the same events in the forms a
// central log system gives back and checks that the reports agree.
func TestReportReadsWhatALogSystemExports(t *testing.T) {
	g := newGenerator(7, 9, nil)
	var sink, caddyForm, sourceForm bytes.Buffer
	for i := 0; i < 2000; i++ {
		e := g.next(i)
		line := g.write(nil, &e)
		sink.Write(append(line, '\n'))
		// What Caddy's logger writes (and Loki or a net listener keeps).
		caddyForm.WriteString(`{"level":"info","ts":1.7e9,"logger":"crm_guard.audit","msg":"request","event":`)
		caddyForm.Write(line)
		caddyForm.WriteString("}\n")
		// A document of a search index whose shipper parsed the line into
		// top-level fields next to its own.
		sourceForm.WriteString(`{"@timestamp":"2026-11-20T00:00:00Z","host":{"name":"crm-proxy-1"},`)
		sourceForm.Write(line[1:])
		sourceForm.WriteString("\n")
	}
	dir := t.TempDir()
	var reports []string
	for i, b := range []*bytes.Buffer{&sink, &caddyForm, &sourceForm} {
		p := filepath.Join(dir, strconv.Itoa(i)+".jsonl")
		if err := os.WriteFile(p, b.Bytes(), 0o600); err != nil {
			t.Fatal(err)
		}
		r, err := BuildReport(genOptions, []string{p})
		if err != nil {
			t.Fatal(err)
		}
		if r.Events != 2000 {
			t.Fatalf("form %d: %d events read, want 2000", i, r.Events)
		}
		got, _ := json.Marshal(struct {
			Users []*UserReport
			Days  []DayActivity
		}{r.Users, r.Days})
		reports = append(reports, string(got))
	}
	for i, name := range []string{"the Caddy logger's form", "a search index's parsed documents"} {
		t.Run(name+" gives the file sink's report", func(t *testing.T) {
			if reports[i+1] != reports[0] {
				t.Error("the reports differ")
			}
		})
	}
}

func TestReportListsRuleFileReloadsApartFromRequests(t *testing.T) {
	log := `{"time":"2026-11-03T02:00:00Z","user":"zhang","roles":["sales"],"method":"GET","path":"/api/customers","route":"customers.list","rules_version":"aaaa","decision":"allow","status":200,"records_in":1,"records_out":1,"export":{}}
{"time":"2026-11-03T03:00:00Z","method":"","path":"","rules_version":"bbbb","decision":"reload","status":0,"records_in":0,"records_out":0,"export":{},"reload":{"file":"/etc/crmguard/rules.yaml","old_version":"aaaa","new_version":"bbbb","roles":[{"role":"service","added":["customers.list"]},{"role":"sales","changed":[{"route":"customers.list","what":["records","fields"]}]}]}}
`
	p := filepath.Join(t.TempDir(), "a.jsonl")
	_ = os.WriteFile(p, []byte(log), 0o600)
	r, err := BuildReport(genOptions, []string{p})
	if err != nil {
		t.Fatal(err)
	}
	if r.InPeriod != 1 || r.Anonymous != 0 || len(r.Users) != 1 {
		t.Errorf("the reload counted as a request: in period %d, anonymous %d", r.InPeriod, r.Anonymous)
	}
	want := []string{"service: may now call customers.list", "sales: customers.list: records, fields changed"}
	if len(r.Reloads) != 1 || r.Reloads[0].OldVersion != "aaaa" || r.Reloads[0].NewVersion != "bbbb" || !slices.Equal(r.Reloads[0].Roles, want) {
		t.Errorf("reloads %+v", r.Reloads)
	}
}

func TestReportProgressGoesToItsOwnWriterOnLargeInputsOnly(t *testing.T) {
	// 3 × 65536 lines: progress is looked at every 65536 lines.
	const n = 3 << 16
	p := filepath.Join(t.TempDir(), "audit.jsonl")
	g := newGenerator(5, 20, nil)
	var log bytes.Buffer
	if err := g.writeLog(&log, n); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, log.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	oldMin, oldEvery := progressMin, progressEvery
	t.Cleanup(func() { progressMin, progressEvery = oldMin, oldEvery })
	tests := []struct {
		name  string
		min   int64
		lines int
	}{
		{name: "an input over the threshold reports each 65536 lines read", min: int64(log.Len()) - 1, lines: 3},
		{name: "an input under the threshold reports nothing", min: int64(log.Len()) + 1, lines: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			progressMin, progressEvery = tt.min, 0
			var progress, out bytes.Buffer
			o := genOptions
			o.Progress = &progress
			if code := ReportCommand(o, []string{p}, &out, &progress); code != 0 {
				t.Fatalf("exit %d: %s", code, progress.String())
			}
			got := strings.Split(strings.TrimSpace(progress.String()), "\n")
			if progress.Len() == 0 {
				got = nil
			}
			if len(got) != tt.lines {
				t.Fatalf("%d progress lines, want %d:\n%s", len(got), tt.lines, progress.String())
			}
			for i, l := range got {
				want := fmt.Sprintf("%d events", (i+1)<<16)
				if !strings.HasPrefix(l, "audit: ") || !strings.Contains(l, want) {
					t.Errorf("progress line %q does not say %q", l, want)
				}
			}
			if strings.Contains(out.String(), "audit: ") || !strings.Contains(out.String(), "Audit report") {
				t.Errorf("the report's output holds progress or no report:\n%.300s", out.String())
			}
		})
	}
}

func TestReportShowsFieldsAsTheyRead(t *testing.T) {
	// zhang's rule writes id_card with its "_" escaped (a second key for
	// one path, as examples/rules.yaml does), li's does not: both mask the
	// same field. a.b (b in a) and a\.b (the key "a.b") are different.
	ev := func(user, fields string) string {
		return `{"time":"2026-11-03T03:00:00Z","user":"` + user + `","roles":["sales"],"method":"GET","path":"/api/customers","route":"customers.list","decision":"allow","status":200,"records_in":3,"records_out":3,"fields":` + fields + `}` + "\n"
	}
	log := ev("zhang", `{"mask:**.id\\_card":3,"remove:a\\.b":3}`) + ev("li", `{"mask:**.id_card":3,"remove:a.b":3}`)
	p := filepath.Join(t.TempDir(), "a.jsonl")
	if err := os.WriteFile(p, []byte(log), 0o600); err != nil {
		t.Fatal(err)
	}
	render := func(t *testing.T, format string) string {
		t.Helper()
		o := genOptions
		o.Format = format
		var out, errOut bytes.Buffer
		if code := ReportCommand(o, []string{p}, &out, &errOut); code != 0 {
			t.Fatalf("exit %d: %s", code, errOut.String())
		}
		return out.String()
	}
	t.Run("json lists each field once, unescaped, and reveals only what was untreated", func(t *testing.T) {
		var r Report
		if err := json.Unmarshal([]byte(render(t, "json")), &r); err != nil {
			t.Fatal(err)
		}
		if got, want := r.Sensitive["customers.list"], []string{`**.id_card`, `a.b`, `a\.b`}; !slices.Equal(got, want) {
			t.Errorf("sensitive fields %q, want %q", got, want)
		}
		want := map[string][]Revealed{
			"li":    {{Route: "customers.list", Field: `a\.b`, Records: 3}},
			"zhang": {{Route: "customers.list", Field: `a.b`, Records: 3}},
		}
		for _, u := range r.Users {
			if !slices.Equal(u.Revealed, want[u.User]) {
				t.Errorf("%s revealed %+v, want %+v", u.User, u.Revealed, want[u.User])
			}
		}
		if len(r.Users) != 2 {
			t.Errorf("%d users, want 2", len(r.Users))
		}
	})
	for _, format := range []string{"text", "csv", "html", "json"} {
		t.Run(format+" output shows no needless escape", func(t *testing.T) {
			out := render(t, format)
			if strings.Contains(out, `id\_card`) || strings.Contains(out, `id\\_card`) {
				t.Errorf("a field is shown with its rule file escape:\n%s", out)
			}
			if !strings.Contains(out, `a.b`) {
				t.Errorf("the revealed field a.b is missing:\n%s", out)
			}
		})
	}
}
