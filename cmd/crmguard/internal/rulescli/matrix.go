package rulescli

import (
	"encoding/csv"
	"fmt"
	"html/template"
	"io"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/crmguard/crmguard/rules"
)

// MatrixInput is what `crmguard rules matrix` is asked for.
type MatrixInput struct {
	// RulesFile is the rule file.
	RulesFile string
	// Format is md (default), csv or html.
	Format string
	// HashKey is the key of the `hash` action (a rule file that hashes
	// does not load without one).
	HashKey string
}

// Matrix prints the permission matrix of a rule file: for every role and
// route, whether the role may call it, on which records and conditions,
// with which sign-in and export approval, and the fields removed, masked
// or hashed for it. It returns the exit code.
func Matrix(in MatrixInput, out io.Writer) int {
	set, err := loadRules(in.RulesFile, in.HashKey)
	if err != nil {
		fmt.Fprintf(out, "error: %v\n", err)
		return 1
	}
	m := buildMatrix(set, in.RulesFile)
	switch in.Format {
	case "", "md":
		err = m.markdown(out)
	case "csv":
		err = m.csv(out)
	case "html":
		err = matrixPage.Execute(out, m)
	default:
		fmt.Fprintf(out, "error: --format %q: want md, csv or html\n", in.Format)
		return 2
	}
	if err != nil {
		fmt.Fprintf(out, "error: %v\n", err)
		return 1
	}
	return 0
}

// matrix is a rule file's access, by route and by role.
type matrix struct {
	File   string
	Roles  []string
	Routes []matrixRoute
	// EveryRoute says the usage limits without `routes`, which count
	// every request (the overview leaves them out of its cells).
	EveryRoute []string
}

type matrixRoute struct {
	ID      string
	Request string // an example request that matches the route
	Cells   []rules.Access
}

func buildMatrix(set *rules.Set, file string) *matrix {
	m := &matrix{File: file, Roles: set.Roles()}
	for _, lim := range set.Limits() {
		if lim.Routes != nil {
			continue
		}
		s := lim.ID + ": " + limitText(lim.Count, lim.Max, lim.Per, lim.Key, lim.Action)
		if lim.Description != "" {
			s += " (" + lim.Description + ")"
		}
		if lim.For != nil {
			s += ", for " + strings.Join(lim.For, ", ")
		}
		if len(lim.Except) > 0 {
			s += ", except " + strings.Join(lim.Except, ", ")
		}
		if lim.When != "" {
			s += ", when `" + lim.When + "`"
		}
		m.EveryRoute = append(m.EveryRoute, s)
	}
	byRole := make([][]rules.Access, len(m.Roles))
	for i, r := range m.Roles {
		byRole[i] = set.Access(r)
	}
	if len(m.Roles) == 0 {
		return m
	}
	for j, a := range byRole[0] {
		mr := matrixRoute{ID: a.Route, Request: exampleRequest(set, a)}
		for i := range m.Roles {
			mr.Cells = append(mr.Cells, byRole[i][j])
		}
		m.Routes = append(m.Routes, mr)
	}
	return m
}

// exampleRequest is a request the route matches ("" when earlier routes
// take every request it would: {param} and * become "1", ** "1/2").
func exampleRequest(set *rules.Set, a rules.Access) string {
	method := "GET"
	if len(a.Methods) > 0 {
		method = a.Methods[0]
	}
	var segs []string
	for _, s := range strings.Split(a.Path, "/") {
		switch {
		case s == "**":
			s = "1/2"
		case s == "*" || strings.HasPrefix(s, "{") && strings.HasSuffix(s, "}"):
			s = "1"
		}
		segs = append(segs, s)
	}
	path := strings.Join(segs, "/")
	if path == "" {
		path = "/"
	}
	if len(a.Query) > 0 {
		path += "?" + strings.Join(a.Query, "&")
	}
	req := httptest.NewRequest(method, "http://crm.test"+path, nil)
	d := set.Decide(nil, &rules.Request{Method: method, URL: req.URL, Header: req.Header, Now: time.Now()})
	if d.RouteID != a.Route {
		return ""
	}
	return method + " " + path
}

// cell says in short what one role may do on one route.
func cell(a rules.Access) string {
	switch {
	case a.Denied != "":
		return "nobody"
	case !a.Allowed:
		return "—"
	}
	parts := []string{a.MethodsText()}
	if a.Public {
		parts = append(parts, "public")
	}
	if !a.When.Always {
		parts = append(parts, "when "+a.When.String())
	}
	if !a.Records.Always {
		parts = append(parts, "records: "+a.Records.String())
	}
	if c := a.Changes.String(); c != "" && !a.Changes.Always {
		parts = append(parts, "changes: "+c)
	}
	if s := signIn(a); s != "" && a.MaxAge > 0 {
		parts = append(parts, s)
	}
	if a.ApprovalNeeded {
		parts = append(parts, "export needs approval "+orText(a.Approval, "(no policy: refused)"))
	}
	if len(a.Forward) > 0 {
		parts = append(parts, "CRM asked with "+forwardText(a))
	}
	var ids []string // limits on every route are said once, under the table
	for _, l := range a.Limits {
		if !l.EveryRoute {
			ids = append(ids, l.ID)
		}
	}
	if len(ids) > 0 {
		parts = append(parts, "limits: "+strings.Join(ids, ", "))
	}
	return strings.Join(parts, "; ")
}

// queryText says which query parameters the route accepts from the role
// and what becomes of them: "any (passed on unread)" without `query`.
func queryText(a rules.Access) string {
	if !a.QueryGuarded {
		return "any (passed on unread)"
	}
	if len(a.Params) == 0 {
		return "none (a query is refused)"
	}
	var accepted, refused []string
	for _, p := range a.Params {
		s := p.Name
		if p.Use != "" {
			s += " (" + p.Use + " " + strings.Join(p.Fields, ", ")
			if len(p.Fields) == 1 && (p.Fields[0] == "{value}" || p.Fields[0] == "{field}" || p.Fields[0] == "{expr}") {
				s += ": only fields the role sees unmasked"
			}
			s += ")"
		}
		switch {
		case p.Refused:
			refused = append(refused, p.Name+" (deny)")
			continue
		case len(p.Hidden) > 0:
			refused = append(refused, p.Name+" (hidden: "+strings.Join(p.Hidden, "; ")+")")
			continue
		case !p.Condition.Always:
			s += " only if " + p.Condition.String()
		}
		accepted = append(accepted, s)
	}
	out := "accepts " + orText(strings.Join(accepted, ", "), "none")
	if len(refused) > 0 {
		out += "; refused for the role: " + strings.Join(refused, ", ")
	}
	return out + "; any other parameter refused"
}

// forwardText says what `forward_query` sets on the role's requests to
// the CRM ("" when nothing).
func forwardText(a rules.Access) string {
	var out []string
	for _, f := range a.Forward {
		s := f.Name + " = " + f.Value
		if !f.When.Always {
			s += " when " + f.When.String()
		}
		out = append(out, s)
	}
	return strings.Join(out, ", ")
}

// limitsText says which usage limits count the role's requests on the
// route ("" when none).
func limitsText(a rules.Access) string {
	var out []string
	for _, l := range a.Limits {
		s := l.ID + ": " + limitText(l.Count, l.Max, l.Per, l.Key, l.Action)
		if !l.When.Always {
			s += " when " + l.When.String()
		}
		out = append(out, s)
	}
	return strings.Join(out, "; ")
}

func signIn(a rules.Access) string {
	switch {
	case a.Public:
		return ""
	case a.MaxAge > 0:
		return "MFA within " + shortDuration(a.MaxAge)
	case a.MFA:
		return "MFA"
	}
	return "any sign-in"
}

func exportText(a rules.Access) string {
	switch {
	case !a.Export:
		return ""
	case a.ApprovalNeeded && a.Approval == "":
		return "refused (no approval policy)"
	case a.ApprovalNeeded:
		return "approval " + a.Approval
	}
	return "without approval"
}

// fieldsBy lists the fields a role gets with one treatment.
func fieldsBy(a rules.Access, actions ...string) string {
	var out []string
	for _, f := range a.Fields {
		match := false
		for _, act := range actions {
			match = match || f.Action == act
		}
		if !match {
			continue
		}
		s := f.Path
		if f.Answer {
			s = "answer " + s
		}
		if f.Action == "mask" && f.Mask != "" {
			s += " (" + f.Mask + ")"
		}
		if f.Action != "remove" && f.Action != "mask" && f.Action != "hash" {
			s += " (" + f.Action + ")"
		}
		if !f.When.Always {
			s += " when " + f.When.String()
		}
		out = append(out, s)
	}
	return strings.Join(out, ", ")
}

// shortDuration writes 5m rather than 5m0s.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// recordsText says which records a role sees: "all" without a condition.
func recordsText(a rules.Access) string {
	if a.Records.Always {
		return "all"
	}
	return a.Records.String()
}

// whenText says the route's condition: "" without one.
func whenText(a rules.Access) string {
	if a.When.Always {
		return ""
	}
	return a.When.String()
}

func orText(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func mdEscape(s string) string { return strings.ReplaceAll(s, "|", `\|`) }

func (m *matrix) markdown(w io.Writer) error {
	p := func(format string, args ...any) { fmt.Fprintf(w, format, args...) }
	p("# Permission matrix: %s\n\n", m.File)
	p("Each role includes the roles it inherits. Conditions are said for the role: \"records\" is which records of an answer it sees, \"changes\" which stored records a write may change, \"query\" which query parameters pass (`query:`), \"sent to the CRM\" what `forward_query` sets, \"usage limits\" the `limits:` that count the role's requests.\n\n")
	p("## Routes by role\n\n| route | request |")
	for _, r := range m.Roles {
		p(" %s |", r)
	}
	p("\n| --- | --- |%s\n", strings.Repeat(" --- |", len(m.Roles)))
	for _, rt := range m.Routes {
		p("| %s | %s |", rt.ID, mdEscape(orText(rt.Request, "(shadowed by earlier routes)")))
		for _, c := range rt.Cells {
			p(" %s |", mdEscape(cell(c)))
		}
		p("\n")
	}
	if len(m.EveryRoute) > 0 {
		p("\nUsage limits on every route (the role tables say for whom): %s.\n", strings.Join(m.EveryRoute, "; "))
	}
	for i, role := range m.Roles {
		p("\n## %s\n\n| route | methods | records | when | sign-in | export | changes | removed | masked | hashed | other fields | body fields refused | query | sent to the CRM | usage limits |\n", role)
		p("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
		for _, rt := range m.Routes {
			a := rt.Cells[i]
			if !a.Allowed {
				continue
			}
			p("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", a.Route, a.MethodsText(),
				mdEscape(recordsText(a)), mdEscape(whenText(a)), signIn(a), exportText(a), mdEscape(a.Changes.String()),
				mdEscape(fieldsBy(a, "remove")), mdEscape(fieldsBy(a, "mask")), mdEscape(fieldsBy(a, "hash")),
				mdEscape(fieldsBy(a, "null", "replace")), mdEscape(strings.Join(a.Body, ", ")),
				mdEscape(queryText(a)), mdEscape(forwardText(a)), mdEscape(limitsText(a)))
		}
	}
	return nil
}

func (m *matrix) csv(w io.Writer) error {
	cw := csv.NewWriter(w)
	_ = cw.Write([]string{"role", "route", "methods", "path", "allowed", "public", "records", "when", "sign_in", "export", "changes", "removed", "masked", "hashed", "other_fields", "body_refused",
		"query", "sent_to_crm", "limits"})
	for i, role := range m.Roles {
		for _, rt := range m.Routes {
			a := rt.Cells[i]
			_ = cw.Write([]string{role, a.Route, a.MethodsText(), a.Path, fmt.Sprint(a.Allowed), fmt.Sprint(a.Public), recordsText(a), whenText(a),
				signIn(a), exportText(a), a.Changes.String(), fieldsBy(a, "remove"), fieldsBy(a, "mask"), fieldsBy(a, "hash"),
				fieldsBy(a, "null", "replace"), strings.Join(a.Body, ", "), queryText(a), forwardText(a), limitsText(a)})
		}
	}
	cw.Flush()
	return cw.Error()
}

var matrixPage = template.Must(template.New("matrix").Funcs(template.FuncMap{
	"cell": cell, "signIn": signIn, "query": queryText, "forward": forwardText, "limits": limitsText, "records": recordsText, "when": whenText, "export": exportText, "fields": fieldsBy, "join": strings.Join,
	"or": orText, "roleAt": func(rt matrixRoute, i int) rules.Access { return rt.Cells[i] },
}).Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Permission matrix: {{.File}}</title>
<style>
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans","PingFang SC","Microsoft YaHei",sans-serif;margin:2em;color:#222;line-height:1.35}
table{border-collapse:collapse;margin:.4em 0 1.5em;font-size:.9em}td,th{border:1px solid #ddd;padding:.25em .5em;text-align:left;vertical-align:top}
th{background:#f4f4f4;position:sticky;top:0}td.no{color:#999;text-align:center}h2{margin-top:2em}
</style>
</head>
<body>
<h1>Permission matrix: {{.File}}</h1>
<p>Each role includes the roles it inherits. Conditions are said for the role: "records" is which records of an answer it sees, "changes" which stored records a write may change, "query" which query parameters pass (<code>query:</code>), "sent to the CRM" what <code>forward_query</code> sets, "usage limits" the <code>limits:</code> that count the role's requests.</p>
<h2>Routes by role</h2>
<table>
<tr><th>route</th><th>request</th>{{range .Roles}}<th>{{.}}</th>{{end}}</tr>
{{range .Routes}}<tr><td>{{.ID}}</td><td>{{or .Request "(shadowed by earlier routes)"}}</td>{{range .Cells}}{{if .Allowed}}<td>{{cell .}}</td>{{else}}<td class="no">{{cell .}}</td>{{end}}{{end}}</tr>
{{end}}</table>
{{if .EveryRoute}}<p>Usage limits on every route (the role tables say for whom): {{join .EveryRoute "; "}}.</p>{{end}}
{{$routes := .Routes}}{{range $i, $role := .Roles}}<h2>{{$role}}</h2>
<table>
<tr><th>route</th><th>methods</th><th>records</th><th>when</th><th>sign-in</th><th>export</th><th>changes</th><th>removed</th><th>masked</th><th>hashed</th><th>other fields</th><th>body fields refused</th><th>query</th><th>sent to the CRM</th><th>usage limits</th></tr>
{{range $routes}}{{$a := roleAt . $i}}{{if $a.Allowed}}<tr><td>{{$a.Route}}</td><td>{{$a.MethodsText}}</td><td>{{records $a}}</td><td>{{when $a}}</td><td>{{signIn $a}}</td><td>{{export $a}}</td><td>{{$a.Changes}}</td><td>{{fields $a "remove"}}</td><td>{{fields $a "mask"}}</td><td>{{fields $a "hash"}}</td><td>{{fields $a "null" "replace"}}</td><td>{{join $a.Body ", "}}</td><td>{{query $a}}</td><td>{{forward $a}}</td><td>{{limits $a}}</td></tr>
{{end}}{{end}}</table>
{{end}}</body>
</html>
`))
