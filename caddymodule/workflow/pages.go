package workflow

import (
	"bytes"
	"encoding/json"
	"html/template"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/crmguard/crmguard/rules"
)

// The pages are server-rendered HTML: no script, no external asset, one
// inline style sheet (the Content-Security-Policy allows nothing else).
// Every form posts to the same site with the session's CSRF token; after
// a change the browser is redirected to the page of what changed.

const layout = `{{define "layout"}}<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.Title}}</title>
<style>
body{font-family:system-ui,sans-serif;max-width:56em;margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
nav a{margin-right:1.2em}h1{font-size:1.5em}h2{font-size:1.15em;margin-top:2em}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.35em .5em;border-bottom:1px solid #ddd;vertical-align:top}
.status{font-weight:600}.pending,.waiting{color:#8a5a00}.approved,.active{color:#1a6b1a}.denied,.revoked,.expired{color:#a11}
.note{color:#555;font-size:.93em}.box{border:1px solid #ccc;border-radius:6px;padding:1em;margin:1em 0;background:#fafafa}
.msg{border-left:4px solid #a11;padding:.5em 1em;background:#fff5f5}label{display:block;margin:.6em 0 .2em}
textarea,input[type=text],select{width:100%;max-width:40em;font:inherit}button{font:inherit;padding:.3em 1em;margin-top:.6em}
code{background:#f2f2f2;padding:0 .3em}
</style></head>
<body>
<nav><a href="/.crmguard/approvals" id="nav-approvals">Approvals</a><a href="/.crmguard/elevations" id="nav-elevations">Temporary access</a><a href="/">Back to the CRM</a></nav>
<p class="note">Signed in as <strong id="user">{{.User}}</strong></p>
<h1 id="title">{{.Title}}</h1>
{{if .Message}}<p class="msg" id="message">{{.Message}}</p>{{end}}
{{template "content" .}}
</body></html>{{end}}`

var funcs = template.FuncMap{
	"when": func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return t.Local().Format("2006-01-02 15:04 MST")
	},
	"words":   statusWords,
	"setting": setting,
	"join":    func(s []string) string { return strings.Join(s, ", ") },
	"duration": func(s string) string {
		d, err := time.ParseDuration(s)
		if err != nil {
			return s
		}
		return words(d)
	},
}

// statusWords says a status in plain words.
func statusWords(s string) string {
	switch s {
	case StatusPending:
		return "waiting for approval"
	case StepWaiting:
		return "waiting"
	case StepLater:
		return "not yet"
	}
	return s
}

func parsePage(src string) *template.Template {
	t := template.Must(template.New("page").Funcs(funcs).Parse(layout))
	return template.Must(t.Parse(src))
}

var (
	tmplApprovals = parsePage(`{{define "content"}}
<h2>Waiting for your approval</h2>
{{if .Lists.Waiting}}<table id="waiting"><tr><th>Asked by</th><th>For</th><th>Purpose</th><th>Step</th><th>Asked</th><th></th></tr>
{{range .Lists.Waiting}}<tr><td>{{.Requester}}</td><td>{{if .Method}}<code>{{.Method}} {{.Path}}</code>{{with .Values}} setting <code>{{setting .}}</code>{{end}}{{else}}temporary access{{end}}</td><td>{{.Purpose}}</td>
<td>{{range .Steps}}{{if eq .Status "waiting"}}{{.Name}}{{if .Description}} ({{.Description}}){{end}}{{end}}{{end}}</td><td>{{when .Created}}</td>
<td><a href="/.crmguard/approvals/{{.ID}}">Review</a></td></tr>{{end}}</table>
{{else}}<p id="waiting-none">Nothing waits for you.</p>{{end}}
<h2>Your requests</h2>
{{if .Lists.Mine}}<table id="mine"><tr><th>For</th><th>Purpose</th><th>Status</th><th>Until</th><th>Uses left</th><th></th></tr>
{{range .Lists.Mine}}<tr><td>{{if .Method}}<code>{{.Method}} {{.Path}}</code>{{with .Values}} setting <code>{{setting .}}</code>{{end}}{{else}}temporary access{{end}}</td><td>{{.Purpose}}</td>
<td class="status {{.Status}}">{{words .Status}}</td><td>{{when .Expires}}</td><td>{{if eq .Status "approved"}}{{.UsesLeft}} of {{.Uses}}{{end}}</td>
<td><a href="/.crmguard/approvals/{{.ID}}">Open</a></td></tr>{{end}}</table>
{{else}}<p id="mine-none">You have asked for no approval yet. When an export or a change needs approval, the refusal links to the request form.</p>{{end}}
{{end}}`)

	tmplNew = parsePage(`{{define "content"}}
{{if .Policy}}<p>This {{if .Write}}change{{else}}export{{end}} needs approval before it runs: {{.Policy.Description}}. Say what you need it for; your approvers see it, and it is kept in the audit trail.</p>
<form method="post" action="/.crmguard/approvals" class="box" id="request-form">
<input type="hidden" name="csrf" value="{{.CSRF}}">
<input type="hidden" name="method" value="{{.Method}}">
{{if .Write}}<input type="hidden" name="values" value="{{.ValuesJSON}}">
<label for="path">Change</label><input type="text" id="path" name="path" value="{{.Path}}" readonly>
<p>{{.Method}} <code>{{.Path}}</code> setting <code id="values">{{setting .Values}}</code></p>
{{else}}<label for="path">Export</label><input type="text" id="path" name="path" value="{{.Path}}" readonly>{{end}}
<label for="purpose">Purpose{{if .Policy.PurposeRequired}} (required){{end}}</label>
<textarea id="purpose" name="purpose" rows="3" maxlength="500" {{if .Policy.PurposeRequired}}required{{end}}>{{.Purpose}}</textarea>
{{if .Write}}<p class="note">Once approved, the approval is valid for {{.ValidFor}}{{if eq .Policy.Uses 1}} and for one change{{else}} and for {{.Policy.Uses}} changes{{end}} that sets exactly these values on exactly this record.</p>
{{else}}<p class="note">Once approved, the approval is valid for {{.ValidFor}}{{if eq .Policy.Uses 1}} and for one download{{else}} and for {{.Policy.Uses}} downloads{{end}} of exactly this export.</p>{{end}}
<button type="submit" id="submit">Ask for approval</button>
</form>
{{else}}<p id="no-form">Open this page from the message that refused your {{if .Write}}change{{else}}export{{end}}: it fills in what to ask for.</p>{{end}}
{{end}}`)

	tmplApproval = parsePage(`{{define "content"}}{{with .A}}
<table id="details">
<tr><th>Status</th><td class="status {{.Status}}" id="status">{{words .Status}}</td></tr>
<tr><th>Asked by</th><td id="requester">{{.Requester}}, {{when .Created}}</td></tr>
{{if eq .Kind "export"}}<tr><th>Export</th><td><code id="request">{{.Method}} {{.Path}}</code></td></tr>{{else if eq .Kind "write"}}<tr><th>Change</th><td><code id="request">{{.Method}} {{.Path}}</code></td></tr>
<tr><th>Sets</th><td><code id="values">{{setting .Values}}</code></td></tr>{{else}}<tr><th>For</th><td>temporary access (<a href="/.crmguard/elevations/{{.Elevation}}">details</a>)</td></tr>{{end}}
<tr><th>Purpose</th><td id="purpose">{{.Purpose}}</td></tr>
<tr><th>Policy</th><td>{{.Policy}}</td></tr>
{{if eq .Status "approved"}}<tr><th>Valid until</th><td>{{when .Expires}}</td></tr><tr><th>Uses left</th><td id="uses-left">{{.UsesLeft}} of {{.Uses}}</td></tr>
{{else if eq .Status "pending"}}<tr><th>Waits until</th><td>{{when .Expires}}</td></tr>{{end}}
{{if .EndedBy}}<tr><th>{{words .Status}} by</th><td>{{.EndedBy}}, {{when .Ended}}{{if .Note}}: {{.Note}}{{end}}</td></tr>{{end}}
</table>
<h2>Approvals</h2>
<table id="steps"><tr><th>Step</th><th>Who approves</th><th>Status</th><th>By</th><th>Note</th></tr>
{{range .Steps}}<tr id="step-{{.Name}}"><td>{{.Name}}</td><td>{{if .Description}}{{.Description}}{{else}}{{join .Approvers}}{{end}}</td><td class="status {{.Status}}" id="step-{{.Name}}-status">{{words .Status}}</td>
<td>{{.By}}{{if .By}}, {{when .At}}{{end}}</td><td class="note">{{.Note}}</td></tr>{{end}}</table>
{{end}}
{{if .CanDecide}}<form method="post" class="box" id="decide-form">
<input type="hidden" name="csrf" value="{{.CSRF}}">
<label for="note">Note (optional; the requester sees it)</label><textarea id="note" name="note" rows="2" maxlength="2000"></textarea>
{{if .StepUp}}<p class="note">Approving needs a recent sign-in with your second factor{{if .StepUp}} (within {{.StepUp}}){{end}}: you may be asked to sign in again.</p>{{end}}
<button type="submit" formaction="/.crmguard/approvals/{{.A.ID}}/approve" id="approve">Approve</button>
<button type="submit" formaction="/.crmguard/approvals/{{.A.ID}}/deny" id="deny">Deny</button>
</form>{{end}}
{{if .Resend}}<p class="box" id="resend">Your change is approved: make it again in the CRM, setting exactly these values on this record; it goes through {{if gt .A.UsesLeft 1}}{{.A.UsesLeft}} more times{{else}}once{{end}}.</p>{{end}}
{{if .Download}}<p class="box">Your export is approved. <a href="{{.Download}}" id="download">Download it now</a>{{if gt .A.UsesLeft 1}} (it may be used {{.A.UsesLeft}} more times){{else}} (it may be used once){{end}}.</p>{{end}}
{{if .CanRevoke}}<form method="post" action="/.crmguard/approvals/{{.A.ID}}/revoke" class="box" id="revoke-form">
<input type="hidden" name="csrf" value="{{.CSRF}}">
<label for="revoke-note">Why (optional)</label><input type="text" id="revoke-note" name="note" maxlength="2000">
<button type="submit" id="revoke">{{if eq .A.Status "approved"}}Revoke the approval{{else}}Withdraw the request{{end}}</button>
</form>{{end}}
{{end}}`)

	tmplElevations = parsePage(`{{define "content"}}
{{if .Lists.Available}}<h2>Start temporary access</h2>
<p>Temporary access adds roles to your session for a short time, for an urgent need such as a customer's complaint. It is recorded, ends by itself, and is reviewed afterwards.</p>
<form method="post" action="/.crmguard/elevations" class="box" id="start-form">
<input type="hidden" name="csrf" value="{{.CSRF}}">
<label for="elevation">Which</label><select id="elevation" name="elevation">
{{range .Lists.Available}}<option value="{{.Name}}">{{.Name}}{{if .Description}}: {{.Description}}{{end}} (adds {{join .Roles}}; at most {{duration .Max}}{{if .NeedsApproval}}; needs approval{{end}})</option>{{end}}
</select>
<label for="reason">Reason (required; the reviewers read it)</label><textarea id="reason" name="reason" rows="3" maxlength="500" required></textarea>
<label for="duration">For how long</label><select id="duration" name="duration">{{range .Durations}}<option value="{{.Value}}"{{if .Selected}} selected{{end}}>{{.Label}}</option>{{end}}</select>
<p class="note">You may be asked to sign in again with your second factor first.</p>
<button type="submit" id="start">Start</button>
</form>{{end}}
<h2>Your temporary access</h2>
{{if .Lists.Mine}}<table id="mine"><tr><th>Which</th><th>Reason</th><th>Status</th><th>From</th><th>Until</th><th></th></tr>
{{range .Lists.Mine}}<tr><td>{{.Name}} ({{join .Roles}})</td><td>{{.Reason}}</td><td class="status {{.Status}}">{{words .Status}}{{if .EndReason}}: {{.EndReason}}{{end}}</td>
<td>{{when .Started}}</td><td>{{if .Ended}}{{when .Ended}}{{else}}{{when .Expires}}{{end}}</td><td><a href="/.crmguard/elevations/{{.ID}}">Open</a></td></tr>{{end}}</table>
{{else}}<p id="mine-none">You have used no temporary access.</p>{{end}}
{{if .Reviewer}}<h2>Waiting for your review</h2>
{{if .Lists.Review}}<table id="review"><tr><th>Who</th><th>Which</th><th>Reason</th><th>From</th><th>Ended</th><th></th></tr>
{{range .Lists.Review}}<tr><td>{{.User}}</td><td>{{.Name}} ({{join .Roles}})</td><td>{{.Reason}}</td><td>{{when .Started}}</td><td>{{when .Ended}} ({{.EndReason}})</td>
<td><a href="/.crmguard/elevations/{{.ID}}">Review</a></td></tr>{{end}}</table>
{{else}}<p id="review-none">Nothing waits for your review.</p>{{end}}{{end}}
{{end}}`)

	tmplElevation = parsePage(`{{define "content"}}{{with .E}}
<table id="details">
<tr><th>Status</th><td class="status {{.Status}}" id="status">{{words .Status}}{{if .EndReason}}: {{.EndReason}}{{end}}</td></tr>
<tr><th>Who</th><td id="who">{{.User}}</td></tr>
<tr><th>Which</th><td>{{.Name}}, adds {{join .Roles}}</td></tr>
<tr><th>Reason</th><td id="reason">{{.Reason}}</td></tr>
<tr><th>Asked</th><td>{{when .Requested}}</td></tr>
{{if .Started}}<tr><th>Started</th><td>{{when .Started}}</td></tr>{{end}}
{{if .Ended}}<tr><th>Ended</th><td>{{when .Ended}}</td></tr>{{else if .Expires}}<tr><th>Ends</th><td>{{when .Expires}}</td></tr>{{end}}
{{if .Approval}}<tr><th>Approval</th><td><a href="/.crmguard/approvals/{{.Approval}}">the request for approval</a></td></tr>{{end}}
{{with .Review}}<tr><th>Reviewed</th><td id="review">by {{.By}}, {{when .At}}: {{.Note}}</td></tr>{{end}}
</table>{{end}}
{{if .CanEnd}}<form method="post" action="/.crmguard/elevations/{{.E.ID}}/end" class="box" id="end-form">
<input type="hidden" name="csrf" value="{{.CSRF}}">
<button type="submit" id="end">{{if eq .E.Status "active"}}End it now{{else}}Withdraw it{{end}}</button>
</form>{{end}}
{{if .CanReview}}<form method="post" action="/.crmguard/elevations/{{.E.ID}}/review" class="box" id="review-form">
<input type="hidden" name="csrf" value="{{.CSRF}}">
<label for="note">What you found (required)</label><textarea id="note" name="note" rows="3" maxlength="2000" required></textarea>
<button type="submit" id="submit-review">Mark as reviewed</button>
</form>{{end}}
{{end}}`)

	tmplMessage = parsePage(`{{define "content"}}<p><a href="{{.Back}}" id="back">Back</a></p>{{end}}`)
)

// page is a rendered page.
type page struct {
	t    *template.Template
	data any
}

// base is what every page shows.
type base struct {
	Title   string
	User    string
	CSRF    string
	Message string
}

func (x *call) base(title string) base {
	b := base{Title: title, User: x.c.User.ID}
	if x.h.Forms != nil && x.c.Identity != nil {
		b.CSRF = x.h.Forms.FormToken(x.c.Identity)
	}
	return b
}

func (x *call) page(p page) { x.pageStatus(http.StatusOK, p) }

func (x *call) pageStatus(status int, p page) {
	var buf bytes.Buffer
	if err := p.t.ExecuteTemplate(&buf, "layout", p.data); err != nil {
		x.res.Reason = "workflow: rendering the page: " + err.Error()
		status = http.StatusInternalServerError
		buf.Reset()
		buf.WriteString("The page could not be shown.")
	}
	h := x.w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "same-origin")
	// No form-action: browsers apply it to the redirects that follow a
	// form post too, and a post that needs a fresh sign-in is redirected
	// to the identity provider, another origin.
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("Content-Length", strconv.Itoa(buf.Len()))
	x.w.WriteHeader(status)
	if x.r.Method != http.MethodHead {
		_, _ = x.w.Write(buf.Bytes())
	}
}

func messagePage(x *call, status int, msg string) page {
	b := x.base(http.StatusText(status))
	b.Message = msg
	back := ApprovalsPath
	if strings.HasPrefix(x.r.URL.Path, ElevationsPath) {
		back = ElevationsPath
	}
	return page{tmplMessage, struct {
		base
		Back string
	}{b, back}}
}

func approvalsPage(x *call, l *ApprovalLists) page {
	return page{tmplApprovals, struct {
		base
		Lists *ApprovalLists
	}{x.base("Approvals"), l}}
}

// newApprovalPage is the request form for the export or write x.in names
// (method, path and, for a write, the values its approval binds),
// explaining who approves; errMsg is shown when a post of it was refused.
func newApprovalPage(x *call, errMsg string) page {
	in := &x.in
	k := in.ask()
	title := "Ask for approval of an export"
	if k.write() {
		title = "Ask for approval of a change"
	}
	d := struct {
		base
		Method, Path, Purpose, ValidFor string
		Write                           bool
		Values                          map[string]any
		ValuesJSON                      string
		Policy                          *rules.ApprovalPolicy
	}{base: x.base(title), Method: strings.ToUpper(in.Method), Path: in.Path, Purpose: in.Purpose, Write: k.write()}
	if d.Method == "" {
		d.Method = http.MethodGet
	}
	if in.Path != "" {
		_, _, q, values, err := x.s.probe(x.r.Context(), x.c, k)
		if err != nil {
			d.Message = messageOf(err)
		} else if pol, ok := x.c.Set.ApprovalPolicy(q.Policy); ok {
			d.Policy, d.ValidFor = pol, words(pol.ValidFor)
			if values != nil {
				// The form carries the values the approval binds (also
				// when a body named them): what the approvers see.
				d.Values = values
				if j, err := json.Marshal(values); err == nil {
					d.ValuesJSON = string(j)
				}
			}
		}
	}
	if errMsg != "" {
		d.Message = errMsg
	}
	return page{tmplNew, d}
}

// approvalPage shows one request with what the viewer may do with it.
func approvalPage(x *call, a *Approval) page {
	d := struct {
		base
		A                    *Approval
		CanDecide, CanRevoke bool
		StepUp               string
		Download             string
		Resend               bool
	}{base: x.base("Approval request"), A: a}
	ctx, now := x.r.Context(), x.s.opt.Now()
	if rec, err := x.s.getApproval(ctx, a.ID); err == nil {
		pol, perr := policyFor(x.c.Set, rec)
		if perr == nil && mayAct(pol, rec, x.c.User, now) {
			d.CanDecide = true
			if pol.ApproverMFAMaxAge > 0 {
				d.StepUp = words(pol.ApproverMFAMaxAge)
			}
		}
		d.CanRevoke = rec.open() && (x.c.User.ID == rec.Requester || (perr == nil && responsible(pol, rec, x.c.User, now)))
	}
	if a.Status == StatusApproved && a.Kind == KindExport && a.Requester == x.c.User.ID && a.Method == http.MethodGet {
		d.Download = a.Path
	}
	d.Resend = a.Status == StatusApproved && a.Kind == KindWrite && a.Requester == x.c.User.ID
	return page{tmplApproval, d}
}

// duration is one choice of the elevation form.
type duration struct {
	Value, Label string
	Selected     bool
}

func elevationsPage(x *call, l *ElevationLists) page {
	var longest time.Duration
	for _, a := range l.Available {
		if d, err := time.ParseDuration(a.Max); err == nil && d > longest {
			longest = d
		}
	}
	var ds []duration
	for _, d := range []time.Duration{5 * time.Minute, 10 * time.Minute, 15 * time.Minute, 30 * time.Minute, time.Hour, 2 * time.Hour, 4 * time.Hour, 8 * time.Hour} {
		if d < longest {
			ds = append(ds, duration{Value: d.String(), Label: words(d)})
		}
	}
	if longest > 0 {
		ds = append(ds, duration{Value: longest.String(), Label: words(longest) + " (the longest allowed)", Selected: true})
	}
	reviewer := len(l.Review) > 0
	for _, name := range x.c.Set.Elevations() {
		el, _ := x.c.Set.Elevation(name)
		reviewer = reviewer || slices.ContainsFunc(el.ReviewBy, x.c.User.HasRole)
	}
	return page{tmplElevations, struct {
		base
		Lists     *ElevationLists
		Durations []duration
		Reviewer  bool
	}{x.base("Temporary access"), l, ds, reviewer}}
}

func elevationPage(x *call, e *Elevation) page {
	mine := e.User == x.c.User.ID
	return page{tmplElevation, struct {
		base
		E                 *Elevation
		CanEnd, CanReview bool
	}{x.base("Temporary access"), e, mine && (e.Status == StatusActive || e.Status == StatusPending),
		!mine && e.needsReview() && reviewer(x.c.User, e)}}
}

// words says a duration in words ("30 minutes", "1 hour 30 minutes").
func words(d time.Duration) string {
	if d <= 0 {
		return "no time"
	}
	var parts []string
	unit := func(n int64, one string) {
		switch {
		case n == 1:
			parts = append(parts, "1 "+one)
		case n > 1:
			parts = append(parts, strconv.FormatInt(n, 10)+" "+one+"s")
		}
	}
	unit(int64(d/(24*time.Hour)), "day")
	unit(int64(d%(24*time.Hour)/time.Hour), "hour")
	unit(int64(d%time.Hour/time.Minute), "minute")
	if len(parts) == 0 {
		unit(int64(d/time.Second), "second")
	}
	return strings.Join(parts, " ")
}
