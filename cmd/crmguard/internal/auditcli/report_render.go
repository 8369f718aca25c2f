package auditcli

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// ReportCommand builds the report of the period from files and writes it in
// o.Format. It returns the exit code: 0, or 2 on a usage or read error.
func ReportCommand(o ReportOptions, files []string, out, errOut io.Writer) int {
	if len(files) == 0 {
		fmt.Fprintln(errOut, "error: no audit files given")
		return 2
	}
	render, ok := renderers[o.Format]
	if !ok {
		fmt.Fprintf(errOut, "error: --format %q: want text, csv, json or html\n", o.Format)
		return 2
	}
	r, err := BuildReport(o, files)
	if err != nil {
		fmt.Fprintf(errOut, "error: %v\n", err)
		return 2
	}
	if err := render(r, out); err != nil {
		fmt.Fprintf(errOut, "error: writing the report: %v\n", err)
		return 2
	}
	return 0
}

var renderers = map[string]func(*Report, io.Writer) error{
	"":     renderText,
	"text": renderText,
	"csv":  renderCSV,
	"json": renderJSON,
	"html": renderHTML,
}

func renderJSON(r *Report, w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// localTime formats t in the report's time zone.
func (r *Report) localTime(t time.Time) string {
	if loc, err := time.LoadLocation(r.TZ); err == nil {
		t = t.In(loc)
	}
	return t.Format(time.RFC3339)
}

// periodText says the period in words: dates when it is whole days.
func (r *Report) periodText() string {
	loc, err := time.LoadLocation(r.TZ)
	if err != nil {
		loc = time.UTC
	}
	from, to := r.From.In(loc), r.To.In(loc)
	midnight := func(t time.Time) bool {
		return t.Hour() == 0 && t.Minute() == 0 && t.Second() == 0 && t.Nanosecond() == 0
	}
	if midnight(from) && midnight(to) {
		return fmt.Sprintf("%s to %s (%s)", from.Format(time.DateOnly), to.AddDate(0, 0, -1).Format(time.DateOnly), r.TZ)
	}
	return fmt.Sprintf("%s to %s", from.Format(time.RFC3339), to.Format(time.RFC3339))
}

func renderText(r *Report, out io.Writer) error {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	p := func(format string, args ...any) { fmt.Fprintf(w, format, args...) }
	p("Audit report %s\n", r.periodText())
	p("Business hours: %s\n", r.BusinessHours)
	p("Read %d files, %d lines, %d events; %d in the period (%d without a signed-in user).\n\n", len(r.Files), r.Lines, r.Events, r.InPeriod, r.Anonymous)
	p("Unusual users\n")
	for _, l := range []struct {
		name string
		list []Ranked
	}{{"most records", r.Unusual.MostRecords}, {"most denials", r.Unusual.MostDenials}, {"most off-hours requests", r.Unusual.MostOffHours}} {
		parts := make([]string, len(l.list))
		for i, x := range l.list {
			parts[i] = fmt.Sprintf("%s %d", x.User, x.Value)
		}
		p("  %s:\t%s\n", l.name, cmpOr(strings.Join(parts, ", "), "nobody"))
	}
	if len(r.Reloads) > 0 {
		p("\nRule file changes\n")
		for _, rl := range r.Reloads {
			p("  %s\t%s\t%s -> %s\n", r.localTime(rl.Time), rl.File, rl.OldVersion, rl.NewVersion)
			for _, rc := range rl.Roles {
				p("    %s\n", rc)
			}
		}
	}
	if len(r.Sensitive) > 0 {
		p("\nSensitive fields (treated for someone on the route)\n")
		for _, route := range sortedKeys(r.Sensitive) {
			p("  %s:\t%s\n", route, strings.Join(r.Sensitive[route], ", "))
		}
	}
	for _, u := range r.Users {
		p("\n== %s (%s)\n", u.User, strings.Join(u.Roles, ", "))
		p("  requests:\t%d (%d allowed), %s to %s\n", u.Requests, u.Allowed, r.localTime(u.First), r.localTime(u.Last))
		p("  records seen:\t%d distinct\n", u.Records)
		for _, ra := range u.Routes {
			p("    %s\t%d requests\t%d records\t%d received\n", cmpOr(ra.Route, "(no route)"), ra.Requests, ra.Records, ra.Received)
		}
		if len(u.Revealed) > 0 {
			p("  revealed untreated:\n")
			for _, x := range u.Revealed {
				p("    %s\t%s\t%d records\n", x.Route, x.Field, x.Records)
			}
		}
		if len(u.Exports) > 0 || u.ExportsBlocked > 0 {
			p("  exports:\t%d rows, %d blocked\n", u.ExportRows, u.ExportsBlocked)
			for _, x := range u.Exports {
				grant := "no grant"
				if x.Grant != "" {
					grant = fmt.Sprintf("grant %s (policy %s, purpose %q, approvers %s)", x.Grant, x.Policy, x.Purpose, strings.Join(x.Approvers, ", "))
				}
				p("    %s\t%d exports\t%d rows\t%s\n", x.Route, x.Count, x.Rows, grant)
			}
		}
		if len(u.Writes) > 0 {
			p("  writes:\n")
			for _, x := range u.Writes {
				p("    %s\t%d writes\tfields: %s\tchanged: %s\n", x.Route, x.Count, counts(x.Fields), counts(x.Changed))
			}
		}
		if u.DenialCount > 0 {
			p("  denials:\t%d\n", u.DenialCount)
			for _, d := range u.Denials {
				p("    %s\t%d\t%s\n", d.Decision, d.Count, d.Reason)
			}
		}
		if u.OffHours > 0 {
			p("  off hours:\t%d requests, %d records\n", u.OffHours, u.OffHoursRecords)
		}
		for _, e := range u.Elevations {
			p("  elevation:\t%s %s (%q): %d requests\n", e.ID, e.Name, e.Reason, e.Requests)
		}
		if len(u.Workflow) > 0 {
			p("  approvals and elevations:\t%s\n", counts(u.Workflow))
		}
	}
	return w.Flush()
}

// csvCell keeps a value that a spreadsheet would run as a formula (a user
// id or a grant's purpose starting with =, +, -, @) as text.
func csvCell(s string) string {
	if s != "" && strings.ContainsRune("=+-@\t\r", rune(s[0])) {
		return "'" + s
	}
	return s
}

// counts formats a map of counts, keys sorted.
func counts(m map[string]int) string {
	if len(m) == 0 {
		return "-"
	}
	parts := make([]string, 0, len(m))
	for _, k := range sortedKeys(m) {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// renderCSV writes one row per figure: user, measure, detail, value, so
// that a spreadsheet can pivot it.
func renderCSV(r *Report, out io.Writer) error {
	w := csv.NewWriter(out)
	row := func(user, measure, detail string, v int) {
		_ = w.Write([]string{csvCell(user), measure, csvCell(detail), strconv.Itoa(v)})
	}
	_ = w.Write([]string{"user", "measure", "detail", "value"})
	for _, d := range r.Days {
		row("", "day_requests", d.Date, d.Requests)
		row("", "day_records", d.Date, d.Records)
		row("", "day_denials", d.Date, d.Denials)
		row("", "day_off_hours", d.Date, d.OffHours)
	}
	for _, rl := range r.Reloads {
		row("", "rules_reload", rl.Time.Format(time.RFC3339)+" "+rl.OldVersion+" -> "+rl.NewVersion+": "+strings.Join(rl.Roles, " | "), 1)
	}
	for _, u := range r.Users {
		n := u.User
		row(n, "requests", strings.Join(u.Roles, " "), u.Requests)
		row(n, "allowed", "", u.Allowed)
		row(n, "records", "", u.Records)
		for _, ra := range u.Routes {
			row(n, "route_requests", ra.Route, ra.Requests)
			row(n, "route_records", ra.Route, ra.Records)
			row(n, "route_received", ra.Route, ra.Received)
		}
		for _, x := range u.Revealed {
			row(n, "revealed", x.Route+" "+x.Field, x.Records)
		}
		for _, x := range u.Exports {
			detail := x.Route
			if x.Grant != "" {
				detail += fmt.Sprintf(" grant=%s policy=%s purpose=%s approvers=%s", x.Grant, x.Policy, x.Purpose, strings.Join(x.Approvers, "+"))
			}
			row(n, "exports", detail, x.Count)
			row(n, "export_rows", detail, x.Rows)
		}
		row(n, "exports_blocked", "", u.ExportsBlocked)
		for _, x := range u.Writes {
			row(n, "writes", x.Route, x.Count)
			for _, f := range sortedKeys(x.Fields) {
				row(n, "write_fields", x.Route+" "+f, x.Fields[f])
			}
			for _, f := range sortedKeys(x.Changed) {
				row(n, "write_changes", x.Route+" "+f, x.Changed[f])
			}
		}
		for _, d := range u.Denials {
			row(n, "denials", d.Decision+": "+d.Reason, d.Count)
		}
		row(n, "off_hours_requests", "", u.OffHours)
		row(n, "off_hours_records", "", u.OffHoursRecords)
		for _, e := range u.Elevations {
			row(n, "elevation_requests", e.ID+" "+e.Name+": "+e.Reason, e.Requests)
		}
		for _, k := range sortedKeys(u.Workflow) {
			row(n, "workflow", k, u.Workflow[k])
		}
		for _, k := range sortedKeys(u.Days) {
			row(n, "day_requests", k, u.Days[k])
		}
	}
	w.Flush()
	return w.Error()
}
