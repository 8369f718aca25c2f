package auditcli

import (
	"bytes"
	"fmt"
	"html/template"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/go-analyze/charts"
)

// renderHTML writes the report as one self-contained HTML file: inline
// CSS and SVG charts, no external assets, no script.
func renderHTML(r *Report, w io.Writer) error {
	daily, err := dayChart(r)
	if err != nil {
		return err
	}
	perUser, err := userChart(r, 25)
	if err != nil {
		return err
	}
	page := template.Must(reportPage.Clone())
	page.Funcs(template.FuncMap{"time": r.localTime})
	return page.Execute(w, map[string]any{
		"R": r, "Period": r.periodText(), "Generated": time.Now().UTC().Format(time.RFC3339),
		"DayChart": daily, "UserChart": perUser,
	})
}

func intFormatter(f float64) string { return strconv.FormatFloat(f, 'f', 0, 64) }

// dayChart draws requests, denials and off-hours requests per day.
func dayChart(r *Report) (template.HTML, error) {
	if len(r.Days) == 0 {
		return "", nil
	}
	var req, den, off []float64
	labels := make([]string, len(r.Days))
	for i, d := range r.Days {
		labels[i] = d.Date[5:] // MM-DD
		req = append(req, float64(d.Requests))
		den = append(den, float64(d.Denials))
		off = append(off, float64(d.OffHours))
	}
	opt := charts.NewBarChartOptionWithData([][]float64{req, den, off})
	opt.CategoryAxis.Labels = labels
	opt.Legend.SeriesNames = []string{"requests", "denials", "off hours"}
	opt.Legend.Offset = charts.OffsetRight
	opt.ValueFormatter = intFormatter
	return svg(900, 320, func(p *charts.Painter) error { return p.BarChart(opt) })
}

// userChart draws requests, distinct records and denials of the n users
// with the most requests.
func userChart(r *Report, n int) (template.HTML, error) {
	users := append([]*UserReport(nil), r.Users...)
	if len(users) == 0 {
		return "", nil
	}
	ranked := rank(users, n, func(u *UserReport) int { return u.Requests })
	byName := map[string]*UserReport{}
	for _, u := range users {
		byName[u.User] = u
	}
	var req, rec, den []float64
	var labels []string
	// Horizontal bars are drawn bottom-up: the busiest user last, on top.
	for i := len(ranked) - 1; i >= 0; i-- {
		u := byName[ranked[i].User]
		labels = append(labels, u.User)
		req = append(req, float64(u.Requests))
		rec = append(rec, float64(u.Records))
		den = append(den, float64(u.DenialCount))
	}
	if len(labels) == 0 {
		return "", nil
	}
	opt := charts.NewBarChartOptionWithData([][]float64{req, rec, den})
	opt.Horizontal = true
	opt.CategoryAxis.Labels = labels
	opt.Legend.SeriesNames = []string{"requests", "records", "denials"}
	opt.Legend.Offset = charts.OffsetRight
	opt.ValueFormatter = intFormatter
	return svg(900, 120+40*len(labels), func(p *charts.Painter) error { return p.BarChart(opt) })
}

func svg(width, height int, draw func(*charts.Painter) error) (template.HTML, error) {
	p := charts.NewPainter(charts.PainterOptions{OutputFormat: charts.ChartOutputSVG, Width: width, Height: height})
	if err := draw(p); err != nil {
		return "", fmt.Errorf("drawing a chart: %w", err)
	}
	b, err := p.Bytes()
	if err != nil {
		return "", fmt.Errorf("drawing a chart: %w", err)
	}
	// The library escapes the text it draws (names come from the log).
	return template.HTML(bytes.TrimSpace(b)), nil //nolint:gosec
}

var reportPage = template.Must(template.New("report").Funcs(template.FuncMap{
	"join":   strings.Join,
	"counts": counts,
	"orNone": func(s string) string { return cmpOr(s, "(no route)") },
	"time":   func(t time.Time) string { return t.Format(time.RFC3339) },
}).Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Audit report {{.Period}}</title>
<style>
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans","PingFang SC","Microsoft YaHei",sans-serif;margin:2em auto;max-width:1000px;color:#222;line-height:1.4}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ccc}h3{font-size:1.05em;margin:1.2em 0 .3em}
table{border-collapse:collapse;margin:.4em 0 1em}td,th{border:1px solid #ddd;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f4f4f4}td.n{text-align:right;font-variant-numeric:tabular-nums}
.muted{color:#666}.warn{color:#a40000;font-weight:600}
details{margin:.4em 0;border:1px solid #ddd;padding:.3em .8em}summary{cursor:pointer;font-weight:600}
svg{max-width:100%;height:auto}
@media print{details{break-inside:avoid}}
</style>
</head>
<body>
<h1>Audit report {{.Period}}</h1>
<p class="muted">Business hours {{.R.BusinessHours}}. Read {{len .R.Files}} files, {{.R.Lines}} lines, {{.R.Events}} events; {{.R.InPeriod}} in the period ({{.R.Anonymous}} without a signed-in user). Generated {{.Generated}}.</p>

<h2>Unusual users</h2>
<table>
<tr><th>most distinct records</th><th>most denials</th><th>most off-hours requests</th></tr>
<tr>
<td>{{range .R.Unusual.MostRecords}}{{.User}}: {{.Value}}<br>{{else}}nobody{{end}}</td>
<td>{{range .R.Unusual.MostDenials}}{{.User}}: {{.Value}}<br>{{else}}nobody{{end}}</td>
<td>{{range .R.Unusual.MostOffHours}}{{.User}}: {{.Value}}<br>{{else}}nobody{{end}}</td>
</tr>
</table>

{{if .DayChart}}<h2>Activity per day</h2>
{{.DayChart}}{{end}}
{{if .UserChart}}<h2>Activity per user</h2>
{{.UserChart}}{{end}}

<h2>Users</h2>
<table>
<tr><th>user</th><th>roles</th><th>requests</th><th>records</th><th>export rows</th><th>writes</th><th>denials</th><th>off hours</th><th>elevations</th></tr>
{{range .R.Users}}<tr><td>{{.User}}</td><td>{{join .Roles ", "}}</td><td class="n">{{.Requests}}</td><td class="n">{{.Records}}</td><td class="n">{{.ExportRows}}</td><td class="n">{{len .Writes}}</td><td class="n">{{.DenialCount}}</td><td class="n">{{.OffHours}}</td><td class="n">{{len .Elevations}}</td></tr>
{{end}}</table>

{{if .R.Reloads}}<h2>Rule file changes</h2>
<table><tr><th>time</th><th>file</th><th>version</th><th>what changed, per role</th></tr>
{{range .R.Reloads}}<tr><td>{{time .Time}}</td><td>{{.File}}</td><td>{{.OldVersion}} &rarr; {{.NewVersion}}</td><td>{{range .Roles}}{{.}}<br>{{else}}nothing a role may do{{end}}</td></tr>
{{end}}</table>{{end}}

{{if .R.Sensitive}}<h2>Sensitive fields</h2>
<p class="muted">A field counts as sensitive on a route when the guard removed, masked, hashed or otherwise treated it for someone there in the period.</p>
<table><tr><th>route</th><th>fields</th></tr>
{{range $route, $fields := .R.Sensitive}}<tr><td>{{$route}}</td><td>{{join $fields ", "}}</td></tr>
{{end}}</table>{{end}}

<h2>Per user</h2>
{{range .R.Users}}<details>
<summary>{{.User}} ({{join .Roles ", "}}): {{.Requests}} requests, {{.Records}} records{{if .DenialCount}}, <span class="warn">{{.DenialCount}} denials</span>{{end}}</summary>
<p class="muted">{{time .First}} to {{time .Last}}; {{.Allowed}} allowed; off hours: {{.OffHours}} requests, {{.OffHoursRecords}} records.</p>
<h3>Records per route</h3>
<table><tr><th>route</th><th>requests</th><th>distinct records</th><th>records received</th></tr>
{{range .Routes}}<tr><td>{{orNone .Route}}</td><td class="n">{{.Requests}}</td><td class="n">{{.Records}}</td><td class="n">{{.Received}}</td></tr>
{{end}}</table>
{{if .Revealed}}<h3>Sensitive fields received untreated</h3>
<table><tr><th>route</th><th>field</th><th>records</th></tr>
{{range .Revealed}}<tr><td>{{.Route}}</td><td>{{.Field}}</td><td class="n">{{.Records}}</td></tr>
{{end}}</table>{{end}}
{{if or .Exports .ExportsBlocked}}<h3>Exports ({{.ExportRows}} rows, {{.ExportsBlocked}} blocked)</h3>
<table><tr><th>route</th><th>exports</th><th>rows</th><th>grant</th><th>policy</th><th>purpose</th><th>approvers</th></tr>
{{range .Exports}}<tr><td>{{.Route}}</td><td class="n">{{.Count}}</td><td class="n">{{.Rows}}</td><td>{{.Grant}}</td><td>{{.Policy}}</td><td>{{.Purpose}}</td><td>{{join .Approvers ", "}}</td></tr>
{{end}}</table>{{end}}
{{if .Writes}}<h3>Writes</h3>
<table><tr><th>route</th><th>writes</th><th>fields set</th><th>changes recorded</th></tr>
{{range .Writes}}<tr><td>{{.Route}}</td><td class="n">{{.Count}}</td><td>{{counts .Fields}}</td><td>{{counts .Changed}}</td></tr>
{{end}}</table>{{end}}
{{if .Denials}}<h3>Denials</h3>
<table><tr><th>decision</th><th>count</th><th>reason</th></tr>
{{range .Denials}}<tr><td>{{.Decision}}</td><td class="n">{{.Count}}</td><td>{{.Reason}}</td></tr>
{{end}}</table>{{end}}
{{if .Elevations}}<h3>Elevations</h3>
<table><tr><th>id</th><th>elevation</th><th>reason</th><th>requests</th></tr>
{{range .Elevations}}<tr><td>{{.ID}}</td><td>{{.Name}}</td><td>{{.Reason}}</td><td class="n">{{.Requests}}</td></tr>
{{end}}</table>{{end}}
{{if .Workflow}}<h3>Approvals and elevations</h3><p>{{counts .Workflow}}</p>{{end}}
</details>
{{end}}
</body>
</html>
`))
