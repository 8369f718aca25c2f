package auditcli

import (
	"cmp"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/tidwall/gjson"

	"github.com/crmguard/crmguard/rules"
	"github.com/crmguard/crmguard/rules/rewrite"
)

// ReportOptions is what `crmguard audit report` is asked for.
type ReportOptions struct {
	// From and To are the first and last day of the period (YYYY-MM-DD in
	// TZ, both included) or RFC 3339 times (To excluded).
	From, To string
	// TZ is the IANA time zone of dates, days and business hours ("" and
	// "Local": the machine's zone).
	TZ string
	// Days and Hours are the business hours in the rule file's schedule
	// syntax (default mon-fri, 08:00-20:00); outside them is off hours.
	Days, Hours string
	// Format is text, csv, json or html.
	Format string
	// Top is the length of the lists of unusual users (default 5).
	Top int
	// Progress receives progress lines on large inputs (nil: none).
	Progress io.Writer
}

// Report is the audit report of a period: what each user did.
type Report struct {
	// From and To bound the period: From included, To excluded.
	From time.Time `json:"from"`
	To   time.Time `json:"to"`
	// TZ is the time zone of days and business hours.
	TZ string `json:"tz"`
	// BusinessHours says which hours are not off hours.
	BusinessHours string `json:"business_hours"`
	// Files are the files read.
	Files []string `json:"files"`
	// Lines counts the lines read; Events the audit events among them;
	// InPeriod the events in the period.
	Lines    int64 `json:"lines"`
	Events   int64 `json:"events"`
	InPeriod int64 `json:"in_period"`
	// Anonymous counts the requests in the period without a signed-in user.
	Anonymous int `json:"anonymous_requests"`
	// Sensitive lists, per route, the fields the guard treated (removed,
	// masked, hashed, ...) for someone in the period: the fields that count
	// as sensitive on that route.
	Sensitive map[string][]string `json:"sensitive_fields"`
	// Days counts activity per day.
	Days []DayActivity `json:"days"`
	// Users are the signed-in users, by id.
	Users []*UserReport `json:"users"`
	// Unusual are the users at the top of each measure.
	Unusual Unusual `json:"unusual"`
	// Reloads are the rule file reloads in the period, in order.
	Reloads []Reload `json:"reloads,omitempty"`
}

// Reload is a rule file reload: the versions and what changed per role.
type Reload struct {
	// Time is when the reload happened.
	Time time.Time `json:"time"`
	// File is the rule file reloaded.
	File string `json:"file"`
	// OldVersion and NewVersion are the rule file's versions before and
	// after.
	OldVersion string `json:"old_version"`
	NewVersion string `json:"new_version"`
	// Roles says per role what changed, in words.
	Roles []string `json:"roles,omitempty"`
}

// DayActivity is one day's activity.
type DayActivity struct {
	// Date is the day, YYYY-MM-DD in the report's time zone.
	Date string `json:"date"`
	// Requests counts the day's requests, Records the records they
	// received, Denials the refused ones and OffHours those outside
	// business hours.
	Requests int `json:"requests"`
	Records  int `json:"records"`
	Denials  int `json:"denials"`
	OffHours int `json:"off_hours"`
}

// UserReport is what one user did in the period.
type UserReport struct {
	// User is the user's id.
	User string `json:"user"`
	// Roles are the roles the user's requests carried.
	Roles []string `json:"roles"`
	// Requests counts every request; Allowed those the rules allowed.
	Requests int `json:"requests"`
	Allowed  int `json:"allowed"`
	// Records counts the distinct records the user received (record_ids).
	Records int `json:"records"`
	// Routes are the user's requests and records per route.
	Routes []RouteActivity `json:"routes"`
	// Revealed are the sensitive fields the user received untreated.
	Revealed []Revealed `json:"revealed,omitempty"`
	// Exports are the exports the user received, by route and grant;
	// ExportRows counts their rows, ExportsBlocked the exports refused.
	Exports        []Export `json:"exports,omitempty"`
	ExportRows     int      `json:"export_rows"`
	ExportsBlocked int      `json:"exports_blocked"`
	// Writes are the writes the CRM carried out, by route.
	Writes []Write `json:"writes,omitempty"`
	// Denials are the refusals, by decision and reason; DenialCount
	// counts them all.
	Denials     []Denial `json:"denials,omitempty"`
	DenialCount int      `json:"denial_count"`
	// OffHours counts requests outside business hours, OffHoursRecords
	// the records they received.
	OffHours        int `json:"off_hours"`
	OffHoursRecords int `json:"off_hours_records"`
	// Elevations are the elevations the user's requests ran under.
	Elevations []Elevation `json:"elevations,omitempty"`
	// Workflow counts approval and elevation actions ("approval
	// requested", "approval approved", "elevation reviewed", ...).
	Workflow map[string]int `json:"workflow,omitempty"`
	// Days counts the user's requests per day.
	Days map[string]int `json:"days"`
	// First and Last are the user's first and last request in the period.
	First time.Time `json:"first"`
	Last  time.Time `json:"last"`
}

// RouteActivity is a user's activity on one route.
type RouteActivity struct {
	// Route is the route's id.
	Route string `json:"route"`
	// Requests counts the user's requests on the route.
	Requests int `json:"requests"`
	// Records counts distinct records received; Received counts records
	// received, repeats included.
	Records  int `json:"records"`
	Received int `json:"received"`
}

// Revealed is a sensitive field a user received untreated on a route.
type Revealed struct {
	// Route is the route's id.
	Route string `json:"route"`
	// Field is the field's path.
	Field string `json:"field"`
	// Records is the number of records received with the field untreated
	// (an upper bound: a record without the field counts too).
	Records int `json:"records"`
}

// Export is a user's exports on one route under one grant ("" without).
type Export struct {
	// Route is the route's id.
	Route string `json:"route"`
	// Grant is the approval grant's id ("" without one), Policy its
	// approval policy, Purpose the reason the requester gave and
	// Approvers who approved it.
	Grant     string   `json:"grant,omitempty"`
	Policy    string   `json:"policy,omitempty"`
	Purpose   string   `json:"purpose,omitempty"`
	Approvers []string `json:"approvers,omitempty"`
	// Count counts the exports, Rows the rows they held.
	Count int `json:"count"`
	Rows  int `json:"rows"`
}

// Write is a user's writes on one route.
type Write struct {
	// Route is the route's id.
	Route string `json:"route"`
	// Count counts the writes.
	Count int `json:"count"`
	// Fields counts the request body fields set (body_fields).
	Fields map[string]int `json:"fields,omitempty"`
	// Changed counts the recorded changes per field (changes).
	Changed map[string]int `json:"changed,omitempty"`
}

// Denial is a user's refusals with one decision and reason.
type Denial struct {
	// Decision is the event's decision (deny, step_up, ...).
	Decision string `json:"decision"`
	// Reason is the refusal's reason as audited.
	Reason string `json:"reason"`
	// Count counts the refusals.
	Count int `json:"count"`
}

// Elevation is one elevation a user's requests ran under.
type Elevation struct {
	// ID is the elevation's id, Name the rule file's elevation and Reason
	// the reason the user gave.
	ID     string `json:"id"`
	Name   string `json:"name,omitempty"`
	Reason string `json:"reason,omitempty"`
	// Requests counts the user's requests under it.
	Requests int `json:"requests"`
}

// Unusual lists the users at the top of each measure.
type Unusual struct {
	// MostRecords, MostDenials and MostOffHours rank the users by
	// distinct records received, refusals and requests outside business
	// hours.
	MostRecords  []Ranked `json:"most_records"`
	MostDenials  []Ranked `json:"most_denials"`
	MostOffHours []Ranked `json:"most_off_hours"`
}

// Ranked is a user and their figure.
type Ranked struct {
	// User is the user's id.
	User string `json:"user"`
	// Value is the user's figure on the measure.
	Value int `json:"value"`
}

// period is a report's time range and clock.
type period struct {
	from, to time.Time
	loc      *time.Location
	hours    *rules.Schedule
	hoursTxt string
}

// newPeriod reads the period options.
func newPeriod(o ReportOptions) (period, error) {
	var p period
	tz := o.TZ
	if tz == "" {
		tz = "Local"
	}
	loc, err := time.LoadLocation(tz)
	if err != nil {
		return p, fmt.Errorf("--tz %q: %w", o.TZ, err)
	}
	p.loc = loc
	days, hours := cmp.Or(o.Days, "mon-fri"), cmp.Or(o.Hours, "08:00-20:00")
	if p.hours, err = rules.ParseSchedule(days, hours, tz); err != nil {
		return p, err
	}
	p.hoursTxt = fmt.Sprintf("%s %s %s", days, hours, loc)
	if p.from, err = parseBound(o.From, loc, false); err != nil {
		return p, fmt.Errorf("--from: %w", err)
	}
	if p.to, err = parseBound(o.To, loc, true); err != nil {
		return p, fmt.Errorf("--to: %w", err)
	}
	if !p.to.After(p.from) {
		return p, fmt.Errorf("--to %s is not after --from %s", o.To, o.From)
	}
	return p, nil
}

// parseBound reads YYYY-MM-DD (a whole day: end is the next midnight) or
// RFC 3339.
func parseBound(s string, loc *time.Location, end bool) (time.Time, error) {
	if d, err := time.ParseInLocation(time.DateOnly, s, loc); err == nil {
		if end {
			d = d.AddDate(0, 0, 1)
		}
		return d, nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return t, fmt.Errorf("%q is neither YYYY-MM-DD nor RFC 3339", s)
	}
	return t, nil
}

// collector adds events up; its memory grows with users, routes, fields
// and distinct records, not with the number of events.
type collector struct {
	p period
	interner
	display   map[string]string // a recorded field path -> as shown (field)
	recordIdx map[string]uint32
	users     map[string]*userAgg
	days      map[int]*DayActivity
	sensitive map[string]map[string]bool // route -> field -> true
	inPeriod  int64
	anonymous int
	reloads   []Reload
	ev        event
	treated   []fieldCount // the fields of the event being added
}

// fieldCount is a treated field (interned) and its count in one event.
// (Assigning to a map replaces a string key with the one given, so keys
// are always interned strings, never views of the line.)
type fieldCount struct {
	field string
	n     int
}

type userAgg struct {
	r     UserReport
	roles map[string]bool
	// records maps each record the user received to the routes they
	// received it on: bit i is the user's i-th route (routes beyond 64
	// keep their own set).
	records  map[uint32]uint64
	routes   map[string]*routeAgg
	rolesRaw string // the roles array last seen, to skip reading it again
	exports  map[exportKey]*Export
	writes   map[string]*Write
	denials  map[[2]string]int
	elevs    map[string]*Elevation
	workflow map[string]int
	days     map[int]int
}

type routeAgg struct {
	RouteActivity
	bit     uint64              // the route's bit in userAgg.records; 0: records below
	records map[uint32]struct{} // routes beyond the 64th only
	out     int                 // records received, for revealed counts
	treated map[string]int      // field -> records received with it treated
}

type exportKey struct{ route, grant string }

func newCollector(p period) *collector {
	return &collector{p: p, interner: interner{}, display: map[string]string{}, recordIdx: map[string]uint32{}, users: map[string]*userAgg{},
		days: map[int]*DayActivity{}, sensitive: map[string]map[string]bool{}}
}

// interner keeps one copy of each string kept past the line it was read
// from: the report's collector and the review's reviewer embed it.
type interner map[string]string

// intern returns a copy of s that outlives the line, shared by equal
// strings.
func (in interner) intern(s string) string {
	if v, ok := in[s]; ok {
		return v
	}
	v := strings.Clone(s)
	in[v] = v
	return v
}

// field is the treated field path of an audit event as people read it
// (interned): with only the escapes its reading needs, so that `**.id\_card`
// (a rule file's second key for one path) is `**.id_card`, while paths that
// read differently stay apart (rewrite.Path.Display). A path that does not
// parse is shown as recorded.
func (c *collector) field(raw string) string {
	if v, ok := c.display[raw]; ok {
		return v
	}
	d := raw
	if p, err := rewrite.ParsePath(raw); err == nil {
		d = p.Display()
	}
	v := c.intern(d)
	c.display[strings.Clone(raw)] = v
	return v
}

func (c *collector) record(id string) uint32 {
	if i, ok := c.recordIdx[id]; ok {
		return i
	}
	i := uint32(len(c.recordIdx))
	c.recordIdx[strings.Clone(id)] = i
	return i
}

func dayKey(t time.Time) int {
	y, m, d := t.Date()
	return y*10000 + int(m)*100 + d
}

func dayString(k int) string { return fmt.Sprintf("%04d-%02d-%02d", k/10000, k/100%100, k%100) }

// add counts one event.
func (c *collector) add(raw []byte) {
	t, known := leadingTime(raw)
	if known && (t.Before(c.p.from) || !t.Before(c.p.to)) {
		return // outside the period: not worth parsing
	}
	e := &c.ev
	parseEvent(raw, e, known)
	if known {
		e.time, e.badTime = t, false
	}
	if e.badTime || e.time.Before(c.p.from) || !e.time.Before(c.p.to) {
		return
	}
	if e.decision == "reload" {
		c.addReload(e) // not a request
		return
	}
	c.inPeriod++
	local := e.time.In(c.p.loc)
	dk := dayKey(local)
	day := c.days[dk]
	if day == nil {
		day = &DayActivity{Date: dayString(dk)}
		c.days[dk] = day
	}
	day.Requests++
	received := e.recordsOut
	if e.shadow && e.decision == "allow" {
		received = max(e.recordsIn, e.recordsOut) // nothing was withheld
	}
	if e.decision == "allow" {
		day.Records += received
	}
	if e.isDenial() {
		day.Denials++
	}
	offHours := !c.p.hours.Contains(e.time)
	if offHours {
		day.OffHours++
	}
	// Sensitive fields: whatever the guard treated on the route, for anyone.
	c.treated = c.treated[:0]
	if e.route != "" && e.fields.IsObject() {
		m := c.sensitive[e.route]
		if m == nil {
			m = map[string]bool{}
			c.sensitive[c.intern(e.route)] = m
		}
		e.fields.ForEach(func(k, n gjson.Result) bool {
			if action, field, ok := strings.Cut(k.Str, ":"); ok && isRecordField(action, field) {
				field = c.field(field)
				m[field] = true
				c.treated = append(c.treated, fieldCount{field, int(n.Int())})
			}
			return true
		})
	}
	if e.user == "" {
		c.anonymous++
		return
	}
	u := c.users[e.user]
	if u == nil {
		name := c.intern(e.user)
		u = &userAgg{r: UserReport{User: name, First: e.time}, roles: map[string]bool{}, records: map[uint32]uint64{},
			routes: map[string]*routeAgg{}, exports: map[exportKey]*Export{}, writes: map[string]*Write{},
			denials: map[[2]string]int{}, elevs: map[string]*Elevation{}, workflow: map[string]int{}, days: map[int]int{}}
		c.users[name] = u
	}
	u.r.Requests++
	u.days[dk]++
	if e.time.Before(u.r.First) {
		u.r.First = e.time
	}
	if e.time.After(u.r.Last) {
		u.r.Last = e.time
	}
	if e.roles.Raw != u.rolesRaw {
		u.rolesRaw = c.intern(e.roles.Raw)
		e.roles.ForEach(func(_, r gjson.Result) bool {
			u.roles[c.intern(r.Str)] = true
			return true
		})
	}
	if offHours {
		u.r.OffHours++
		if e.decision == "allow" {
			u.r.OffHoursRecords += received
		}
	}
	if e.elevation.IsObject() {
		id := e.elevation.Get("id").Str
		el := u.elevs[id]
		if el == nil {
			el = &Elevation{ID: c.intern(id), Name: c.intern(e.elevation.Get("name").Str), Reason: c.intern(e.elevation.Get("reason").Str)}
			u.elevs[el.ID] = el
		}
		el.Requests++
	}
	if action, _, _ := e.workflow(); action != "" {
		u.workflow[c.intern(action)]++
	}
	if e.isDenial() {
		u.r.DenialCount++
		u.denials[[2]string{c.intern(e.decision), c.intern(e.reason)}]++
		if e.exportFlag.blocked {
			u.r.ExportsBlocked++
		}
	}
	if e.decision != "allow" {
		return
	}
	u.r.Allowed++
	ra := c.route(u, e.route)
	ra.Requests++
	ra.Received += received
	eachString(e.recordIDs, func(id string) {
		i := c.record(id)
		u.records[i] |= ra.bit
		if ra.bit == 0 {
			ra.records[i] = struct{}{}
		}
	})
	ra.out += received
	if !e.shadow {
		for _, f := range c.treated {
			ra.treated[f.field] += min(f.n, e.recordsOut)
		}
	}
	if e.isExport() {
		c.export(u, e, received)
	}
	if e.isWrite() {
		c.write(u, e)
	}
}

// isRecordField reports whether a treated field of the audit event's
// `fields` ("action:path") is a field of each record: not one of the
// answer outside the records (answer.total), a header, or the members
// `expose` dropped, which say nothing of the records' fields.
func isRecordField(action, field string) bool {
	return action != "expose" && !strings.HasPrefix(field, "answer.") && !strings.HasPrefix(field, "answer_header.")
}

// addReload keeps a rule file reload (there are few).
func (c *collector) addReload(e *event) {
	r := Reload{Time: e.time, File: strings.Clone(e.reload.Get("file").Str),
		OldVersion: strings.Clone(e.reload.Get("old_version").Str), NewVersion: strings.Clone(e.reload.Get("new_version").Str)}
	e.reload.Get("roles").ForEach(func(_, rc gjson.Result) bool {
		var parts []string
		if s := rc.Get("status").Str; s != "" {
			parts = append(parts, "role "+s)
		}
		if a := rc.Get("added"); a.IsArray() {
			parts = append(parts, "may now call "+joinStrings(a))
		}
		if a := rc.Get("removed"); a.IsArray() {
			parts = append(parts, "may no longer call "+joinStrings(a))
		}
		rc.Get("changed").ForEach(func(_, ch gjson.Result) bool {
			parts = append(parts, ch.Get("route").Str+": "+joinStrings(ch.Get("what"))+" changed")
			return true
		})
		r.Roles = append(r.Roles, rc.Get("role").Str+": "+strings.Join(parts, "; "))
		return true
	})
	c.reloads = append(c.reloads, r)
}

func joinStrings(a gjson.Result) string {
	var out []string
	a.ForEach(func(_, v gjson.Result) bool {
		out = append(out, v.Str)
		return true
	})
	return strings.Join(out, ", ")
}

func (c *collector) route(u *userAgg, route string) *routeAgg {
	ra := u.routes[route]
	if ra == nil {
		ra = &routeAgg{RouteActivity: RouteActivity{Route: c.intern(route)}, treated: map[string]int{}}
		if n := len(u.routes); n < 64 {
			ra.bit = 1 << n
		} else {
			ra.records = map[uint32]struct{}{}
		}
		u.routes[ra.Route] = ra
	}
	return ra
}

func (c *collector) export(u *userAgg, e *event, rows int) {
	k := exportKey{route: e.route, grant: e.grant.Get("id").Str}
	x := u.exports[k]
	if x == nil {
		k = exportKey{route: c.intern(k.route), grant: c.intern(k.grant)}
		x = &Export{Route: k.route, Grant: k.grant, Policy: c.intern(e.grant.Get("policy").Str), Purpose: c.intern(e.grant.Get("purpose").Str)}
		e.grant.Get("approvers").ForEach(func(_, a gjson.Result) bool {
			x.Approvers = append(x.Approvers, c.intern(a.Str))
			return true
		})
		u.exports[k] = x
	}
	x.Count++
	x.Rows += rows
	u.r.ExportRows += rows
}

func (c *collector) write(u *userAgg, e *event) {
	w := u.writes[e.route]
	if w == nil {
		w = &Write{Route: c.intern(e.route)}
		u.writes[w.Route] = w
	}
	w.Count++
	e.bodyFields.ForEach(func(_, f gjson.Result) bool {
		if w.Fields == nil {
			w.Fields = map[string]int{}
		}
		w.Fields[c.intern(f.Str)]++
		return true
	})
	e.changes.ForEach(func(k, _ gjson.Result) bool {
		if w.Changed == nil {
			w.Changed = map[string]int{}
		}
		w.Changed[c.intern(k.Str)]++
		return true
	})
}

// report builds the report from what was collected.
func (c *collector) report(top int) *Report {
	r := &Report{From: c.p.from, To: c.p.to, TZ: c.p.loc.String(), BusinessHours: c.p.hoursTxt,
		InPeriod: c.inPeriod, Anonymous: c.anonymous, Sensitive: map[string][]string{}}
	r.Reloads = c.reloads
	slices.SortStableFunc(r.Reloads, func(a, b Reload) int { return a.Time.Compare(b.Time) })
	for route, fields := range c.sensitive {
		r.Sensitive[route] = sortedSet(fields)
	}
	for _, k := range sortedKeys(c.days) {
		r.Days = append(r.Days, *c.days[k])
	}
	for _, name := range sortedKeys(c.users) {
		u := c.users[name]
		ur := u.r
		ur.Roles = sortedSet(u.roles)
		ur.Records = len(u.records)
		for _, route := range sortedKeys(u.routes) {
			ra := u.routes[route]
			ra.RouteActivity.Records = len(ra.records)
			if ra.bit != 0 {
				for _, routes := range u.records {
					if routes&ra.bit != 0 {
						ra.RouteActivity.Records++
					}
				}
			}
			ur.Routes = append(ur.Routes, ra.RouteActivity)
			for _, f := range r.Sensitive[route] {
				if n := ra.out - ra.treated[f]; n > 0 {
					ur.Revealed = append(ur.Revealed, Revealed{Route: route, Field: f, Records: n})
				}
			}
		}
		for _, x := range u.exports {
			ur.Exports = append(ur.Exports, *x)
		}
		slices.SortFunc(ur.Exports, func(a, b Export) int { return cmp.Or(cmp.Compare(a.Route, b.Route), cmp.Compare(a.Grant, b.Grant)) })
		for _, route := range sortedKeys(u.writes) {
			ur.Writes = append(ur.Writes, *u.writes[route])
		}
		for k, n := range u.denials {
			ur.Denials = append(ur.Denials, Denial{Decision: k[0], Reason: k[1], Count: n})
		}
		slices.SortFunc(ur.Denials, func(a, b Denial) int {
			return cmp.Or(cmp.Compare(b.Count, a.Count), cmp.Compare(a.Decision, b.Decision), cmp.Compare(a.Reason, b.Reason))
		})
		for _, id := range sortedKeys(u.elevs) {
			ur.Elevations = append(ur.Elevations, *u.elevs[id])
		}
		if len(u.workflow) > 0 {
			ur.Workflow = u.workflow
		}
		ur.Days = map[string]int{}
		for k, n := range u.days {
			ur.Days[dayString(k)] = n
		}
		r.Users = append(r.Users, &ur)
	}
	if top <= 0 {
		top = 5
	}
	r.Unusual = Unusual{
		MostRecords:  rank(r.Users, top, func(u *UserReport) int { return u.Records }),
		MostDenials:  rank(r.Users, top, func(u *UserReport) int { return u.DenialCount }),
		MostOffHours: rank(r.Users, top, func(u *UserReport) int { return u.OffHours }),
	}
	return r
}

// rank returns the top n users by measure, leaving out zeros; ties by id.
func rank(users []*UserReport, n int, measure func(*UserReport) int) []Ranked {
	var out []Ranked
	for _, u := range users {
		if v := measure(u); v > 0 {
			out = append(out, Ranked{User: u.User, Value: v})
		}
	}
	slices.SortStableFunc(out, func(a, b Ranked) int { return cmp.Compare(b.Value, a.Value) })
	if len(out) > n {
		out = out[:n]
	}
	return out
}

func sortedKeys[K cmp.Ordered, V any](m map[K]V) []K {
	keys := make([]K, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func sortedSet(m map[string]bool) []string { return sortedKeys(m) }

// BuildReport reads files and builds the report of the period.
func BuildReport(o ReportOptions, files []string) (*Report, error) {
	p, err := newPeriod(o)
	if err != nil {
		return nil, err
	}
	c := newCollector(p)
	st, err := scanFiles(files, o.Progress, c.add)
	if err != nil {
		return nil, err
	}
	r := c.report(o.Top)
	r.Files, r.Lines, r.Events = files, st.Lines, st.Events
	return r, nil
}
