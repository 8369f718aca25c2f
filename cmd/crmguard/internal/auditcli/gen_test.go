package auditcli

import (
	"fmt"
	"io"
	"math/rand/v2"
	"strconv"
	"time"
)

// The generated log: users of four kinds on a CRM's routes, over a period
// with days before and after it, so that every figure of the report has a
// truth the generator knows without reading the log back.

var genLoc = mustLoc("Asia/Shanghai")

func mustLoc(name string) *time.Location {
	l, err := time.LoadLocation(name)
	if err != nil {
		panic(err)
	}
	return l
}

// The period the tests report on, and the span events are drawn from
// (two days more on each side).
var (
	genFrom = time.Date(2026, 11, 2, 0, 0, 0, 0, genLoc)
	genTo   = time.Date(2026, 11, 15, 0, 0, 0, 0, genLoc) // excluded: --to 2026-11-14
)

type genUser struct {
	id    string
	roles []string
	kind  string // sales, compliance, manager, service
}

// truth is what the report must say, kept by the generator as it decides.
type truth struct {
	inPeriod  int
	anonymous int
	reloads   int // reload events in the period (not requests)
	days      map[string]*DayActivity
	users     map[string]*userTruth
}

type userTruth struct {
	UserReport
	records map[string]bool
	routes  map[string]*routeTruth
	reveal  map[[2]string]int
	exports map[[2]string]*Export
	writes  map[string]*Write
	denials map[[2]string]int
	elevs   map[string]*Elevation
}

type routeTruth struct {
	RouteActivity
	records map[string]bool
}

func newTruth() *truth {
	return &truth{days: map[string]*DayActivity{}, users: map[string]*userTruth{}}
}

// generator writes events as the file sink writes them.
type generator struct {
	rng   *rand.Rand
	users []genUser
	t     *truth // nil: no bookkeeping (benchmarks)
	buf   []byte
}

func newGenerator(seed uint64, nUsers int, t *truth) *generator {
	g := &generator{rng: rand.New(rand.NewPCG(seed, 7)), t: t}
	kinds := []string{"sales", "sales", "manager", "service", "compliance"}
	for i := 0; i < nUsers; i++ {
		k := kinds[i%len(kinds)]
		roles := []string{k}
		if k == "manager" {
			roles = []string{"sales", "sales_manager"}
		}
		g.users = append(g.users, genUser{id: fmt.Sprintf("user%03d", i), roles: roles, kind: k})
	}
	return g
}

// ev is one generated event before it is written.
type genEvent struct {
	t                     time.Time
	user                  *genUser
	method, path, route   string
	decision, reason      string
	status                int
	in, out               int
	ids                   []string
	fields                [][2]any // action:path, count
	export                string   // JSON object body
	shadow                bool
	grant                 string // JSON object or ""
	elevation             string // JSON object or ""
	bodyFields            []string
	changes               []string
	exportRoute, exported bool
	blockedExport         bool
	elevID, elevName      string
	elevReason            string
	grantID, grantPurpose string
	workflow              string
	limited               bool // refused by a usage limit (429)
	reload                bool // a rule file reload, not a request
}

// The rule file versions of the generated log: a reload installs the
// second every reloadEvery events.
const (
	genVersionOld = "1362656482c63680"
	genVersionNew = "a0f3c5e1d27b9846"
	reloadEvery   = 2000
)

func (g *generator) time() time.Time {
	span := genTo.Sub(genFrom) + 4*24*time.Hour
	return genFrom.Add(-2*24*time.Hour + time.Duration(g.rng.Int64N(int64(span))))
}

func (g *generator) ids(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = strconv.Itoa(1 + g.rng.IntN(400))
	}
	return out
}

// next decides one event.
func (g *generator) next(i int) genEvent {
	e := genEvent{t: g.time(), export: ""}
	if i%reloadEvery == reloadEvery-1 {
		e.reload, e.decision = true, "reload"
		return e
	}
	u := &g.users[g.rng.IntN(len(g.users))]
	e.user = u
	switch k := g.rng.IntN(20); {
	case k < 8: // a list of customers
		e.method, e.path, e.route, e.decision, e.status = "GET", "/api/customers", "customers.list", "allow", 200
		e.in = 5 + g.rng.IntN(6)
		e.out = 1 + g.rng.IntN(e.in)
		e.ids = g.ids(e.out)
		masked := e.out // sales: phone masked on every record
		switch u.kind {
		case "compliance":
			masked = 0
		case "manager":
			masked = g.rng.IntN(e.out + 1) // own records in clear
		}
		if masked > 0 {
			e.fields = append(e.fields, [2]any{"mask:phone", masked})
		}
		e.fields = append(e.fields, [2]any{"remove:bank_account", e.out}, [2]any{"remove:answer.total", 1}, [2]any{"remove:answer_header.X-Total-Count", 1})
		if u.kind == "service" && g.rng.IntN(3) == 0 {
			e.elevID = fmt.Sprintf("el-%s-%d", u.id, g.rng.IntN(2))
			e.elevName, e.elevReason = "complaint", "ticket 4711"
		}
		if u.kind == "manager" && g.rng.IntN(10) == 0 {
			e.shadow = true
		}
	case k < 10: // one customer
		e.method, e.route, e.decision, e.status = "GET", "customers.get", "allow", 200
		e.ids = g.ids(1)
		e.path = "/api/customers/" + e.ids[0]
		e.in, e.out = 1, 1
		e.fields = [][2]any{{"remove:bank_account", 1}}
	case k < 11: // an export with a grant
		e.method, e.path, e.route, e.decision, e.status = "GET", "/api/customers/export", "customers.export", "allow", 200
		e.in = 20 + g.rng.IntN(30)
		e.out = e.in
		e.ids = g.ids(3)[:0] // exports name no records here: rows only
		e.exportRoute, e.exported = true, true
		e.grantID = fmt.Sprintf("g-%s-%d", u.id, g.rng.IntN(2))
		e.grantPurpose = "quarterly review"
	case k < 12: // an export refused
		e.method, e.path, e.route, e.decision, e.status = "GET", "/api/customers/export", "customers.export", "blocked", 403
		e.reason = "This export needs an approval."
		e.exportRoute, e.blockedExport = true, true
	case k < 14: // a write
		e.method, e.route, e.decision, e.status = "PATCH", "customers.update", "allow", 200
		e.path = "/api/customers/" + strconv.Itoa(1+g.rng.IntN(400))
		e.bodyFields = []string{"stage", "notes"}
		if g.rng.IntN(2) == 0 {
			e.bodyFields = []string{"owner_id"}
		}
		e.changes = e.bodyFields[:1]
	case k < 16: // a denial
		e.method, e.path, e.route, e.decision, e.status = "GET", "/api/payments", "payments.list", "deny", 403
		e.reason = fmt.Sprintf("Role %s may not use payments.list.", u.roles[0])
		if u.kind == "sales" && g.rng.IntN(4) == 0 { // a page past the usage limit
			e.path, e.route, e.decision, e.status = "/api/customers", "customers.list", "limited", 429
			e.reason, e.limited = "usage limit bulk_view: 280 records in the last 10m0s, this request 100 more, max 300", true
		}
	case k < 17: // a step-up challenge (not a denial)
		e.method, e.path, e.route, e.decision, e.status = "GET", "/api/customers/1/id_card", "customers.id_card", "step_up", 401
	case k < 18: // an approval asked for, or given
		e.method, e.decision, e.status = "POST", "provider", 201
		e.path, e.workflow = "/.crmguard/approvals", "approval requested"
		if g.rng.IntN(2) == 0 {
			e.status, e.path, e.workflow = 200, "/.crmguard/approvals/a-9/approve", "approval approved"
		}
	default: // anonymous
		e.user = nil
		e.method, e.path, e.route, e.decision, e.status = "GET", "/healthz", "health", "allow", 200
	}
	return e
}

// write appends the event's JSON line (without a newline) to dst and
// keeps the truth.
func (g *generator) write(dst []byte, e *genEvent) []byte {
	b := append(dst, `{"time":"`...)
	b = e.t.UTC().AppendFormat(b, time.RFC3339Nano)
	if e.reload {
		b = append(b, `","method":"","path":"","rules_version":"`+genVersionNew+`","decision":"reload","status":0,"records_in":0,"records_out":0,"export":{},`+
			`"reload":{"file":"/etc/crmguard/rules.yaml","old_version":"`+genVersionOld+`","new_version":"`+genVersionNew+`",`+
			`"roles":[{"role":"sales","changed":[{"route":"customers.list","what":["fields"]}]}]},"duration_ms":0}`...)
		if g.t != nil {
			g.t.add(e)
		}
		return b
	}
	b = append(b, `","request_id":"6f1d8a4e-2c1b-4b8e-9a57-`...)
	b = fmt.Appendf(b, "%012d\"", g.rng.Int64N(1e12))
	if e.user != nil {
		b = append(b, `,"user":"`...)
		b = append(b, e.user.id...)
		b = append(b, `","roles":`...)
		b = appendQuotedList(b, e.user.roles)
	}
	b = fmt.Appendf(b, `,"method":%q,"path":%q`, e.method, e.path)
	if e.route != "" {
		b = fmt.Appendf(b, `,"route":%q`, e.route)
	}
	b = append(b, `,"rules_version":"`+genVersionOld+`"`...)
	b = fmt.Appendf(b, `,"decision":%q`, e.decision)
	switch {
	case e.reason != "":
		b = fmt.Appendf(b, `,"reason":%q`, e.reason)
	case e.decision == "allow" && e.user != nil && e.route != "":
		b = fmt.Appendf(b, `,"reason":"role %s may call %s"`, e.user.roles[0], e.route)
	}
	b = fmt.Appendf(b, `,"status":%d,"records_in":%d,"records_out":%d`, e.status, e.in, e.out)
	if len(e.ids) > 0 {
		b = append(b, `,"record_ids":`...)
		b = appendQuotedList(b, e.ids)
	}
	if len(e.fields) > 0 {
		b = append(b, `,"fields":{`...)
		for i, f := range e.fields {
			if i > 0 {
				b = append(b, ',')
			}
			b = fmt.Appendf(b, `%q:%d`, f[0], f[1])
		}
		b = append(b, '}')
	}
	b = append(b, `,"export":{`...)
	switch {
	case e.blockedExport:
		b = append(b, `"route":true,"blocked":true`...)
	case e.exported:
		b = append(b, `"route":true,"approved":true`...)
	}
	b = append(b, '}')
	if e.shadow {
		b = append(b, `,"shadow":true`...)
	}
	if e.out > 0 && e.decision == "allow" {
		b = append(b, `,"rewritten":true`...)
	}
	if e.grantID != "" {
		b = fmt.Appendf(b, `,"grant":{"id":%q,"policy":"export","purpose":%q,"approvers":["mgr1","it1"]}`, e.grantID, e.grantPurpose)
	}
	if e.elevID != "" {
		b = fmt.Appendf(b, `,"elevation":{"id":%q,"name":%q,"reason":%q}`, e.elevID, e.elevName, e.elevReason)
	}
	if e.limited {
		b = append(b, `,"limits":[{"limit":"bulk_view","counts":"records","action":"block","count":280,"adding":100,"max":300,"window":"10m0s","refused":true,"retry_after":420}]`...)
	}
	if len(e.bodyFields) > 0 {
		b = append(b, `,"body_fields":`...)
		b = appendQuotedList(b, e.bodyFields)
	}
	if len(e.changes) > 0 {
		b = append(b, `,"changes":{`...)
		for i, f := range e.changes {
			if i > 0 {
				b = append(b, ',')
			}
			b = fmt.Appendf(b, `%q:{"old":"a","new":"b"}`, f)
		}
		b = append(b, '}')
	}
	b = fmt.Appendf(b, `,"duration_ms":%.3f}`, g.rng.Float64())
	if g.t != nil {
		g.t.add(e)
	}
	return b
}

// appendQuotedList appends list as a JSON array of strings.
func appendQuotedList(b []byte, list []string) []byte {
	b = append(b, '[')
	for i, s := range list {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendQuote(b, s)
	}
	return append(b, ']')
}

// add keeps the truth of one event.
func (t *truth) add(e *genEvent) {
	e.t = e.t.UTC() // as the log holds it
	if e.t.Before(genFrom) || !e.t.Before(genTo) {
		return
	}
	if e.reload {
		t.reloads++ // not a request
		return
	}
	t.inPeriod++
	local := e.t.In(genLoc)
	date := local.Format(time.DateOnly)
	day := t.days[date]
	if day == nil {
		day = &DayActivity{Date: date}
		t.days[date] = day
	}
	day.Requests++
	received := e.out
	if e.shadow {
		received = e.in
	}
	if e.decision == "allow" {
		day.Records += received
	}
	denial := e.decision == "deny" || e.decision == "blocked" || e.decision == "limited"
	if denial {
		day.Denials++
	}
	wd := local.Weekday()
	off := wd == time.Saturday || wd == time.Sunday || local.Hour() < 8 || local.Hour() >= 20
	if off {
		day.OffHours++
	}
	if e.user == nil {
		t.anonymous++
		return
	}
	u := t.users[e.user.id]
	if u == nil {
		u = &userTruth{UserReport: UserReport{User: e.user.id, Roles: e.user.roles, First: e.t, Days: map[string]int{}},
			records: map[string]bool{}, routes: map[string]*routeTruth{}, reveal: map[[2]string]int{},
			exports: map[[2]string]*Export{}, writes: map[string]*Write{}, denials: map[[2]string]int{}, elevs: map[string]*Elevation{}}
		t.users[e.user.id] = u
	}
	u.Requests++
	u.Days[date]++
	if e.t.Before(u.First) {
		u.First = e.t
	}
	if e.t.After(u.Last) {
		u.Last = e.t
	}
	if off {
		u.OffHours++
		if e.decision == "allow" {
			u.OffHoursRecords += received
		}
	}
	if e.elevID != "" {
		el := u.elevs[e.elevID]
		if el == nil {
			el = &Elevation{ID: e.elevID, Name: e.elevName, Reason: e.elevReason}
			u.elevs[e.elevID] = el
		}
		el.Requests++
	}
	if e.workflow != "" {
		if u.Workflow == nil {
			u.Workflow = map[string]int{}
		}
		u.Workflow[e.workflow]++
	}
	if denial {
		u.DenialCount++
		u.denials[[2]string{e.decision, e.reason}]++
		if e.blockedExport {
			u.ExportsBlocked++
		}
	}
	if e.decision != "allow" {
		return
	}
	u.Allowed++
	r := u.routes[e.route]
	if r == nil {
		r = &routeTruth{RouteActivity: RouteActivity{Route: e.route}, records: map[string]bool{}}
		u.routes[e.route] = r
	}
	r.Requests++
	r.Received += received
	for _, id := range e.ids {
		u.records[id] = true
		r.records[id] = true
	}
	// phone is masked for sales on customers.list and bank_account removed
	// for everyone: those are its sensitive fields. What was not treated
	// was revealed (everything, in shadow mode).
	if e.route == "customers.list" {
		masked, removed := 0, 0
		if !e.shadow {
			removed = e.out
			for _, f := range e.fields {
				if f[0] == "mask:phone" {
					masked = f[1].(int)
				}
			}
		}
		u.reveal[[2]string{e.route, "phone"}] += received - masked
		u.reveal[[2]string{e.route, "bank_account"}] += received - removed
	}
	if e.route == "customers.get" {
		// bank_account is removed here too; phone is sensitive only on
		// customers.list (never treated on this route).
		u.reveal[[2]string{e.route, "bank_account"}] += 0
	}
	if e.exported {
		k := [2]string{e.route, e.grantID}
		x := u.exports[k]
		if x == nil {
			x = &Export{Route: e.route, Grant: e.grantID, Policy: "export", Purpose: e.grantPurpose, Approvers: []string{"mgr1", "it1"}}
			u.exports[k] = x
		}
		x.Count++
		x.Rows += received
		u.ExportRows += received
	}
	if len(e.bodyFields) > 0 {
		w := u.writes[e.route]
		if w == nil {
			w = &Write{Route: e.route, Fields: map[string]int{}, Changed: map[string]int{}}
			u.writes[e.route] = w
		}
		w.Count++
		for _, f := range e.bodyFields {
			w.Fields[f]++
		}
		for _, f := range e.changes {
			w.Changed[f]++
		}
	}
}

// writeLog writes n generated events, one per line, to w.
func (g *generator) writeLog(w io.Writer, n int) error {
	for i := 0; i < n; i++ {
		e := g.next(i)
		g.buf = append(g.write(g.buf[:0], &e), '\n')
		if _, err := w.Write(g.buf); err != nil {
			return err
		}
	}
	return nil
}
