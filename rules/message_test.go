package rules

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

const messageRules = `version: 1
roles: {sales: {}, sales_manager: {inherits: [sales]}, service: {}, compliance: {}}
mfa: {required: true, amr: [mfa]}
schedules:
  business_hours: {days: mon-fri, hours: "08:00-20:00", tz: Asia/Shanghai}
  weekend: {days: "sat,sun", hours: "10:00-16:00", tz: Europe/Berlin}
approvals:
  export:
    steps:
      - {name: manager, description: your manager, approvers: [sales_manager]}
      - {name: it, description: IT security, approvers: [compliance]}
routes:
  - id: customers.export
    match: {methods: [GET], path: /api/customers/export}
    allow: [sales]
    when: in_schedule("business_hours") || "sales_manager" in user.roles
    export: {approval: export}
  - id: deals.export
    match: {methods: [GET], path: /api/deals/export}
    allow: [sales]
    when: {if: 'in_schedule("business_hours")', message: "Deal exports run in office hours only."}
    export: {approval: export, message: "Ask your manager for a deal export."}
  - id: reports
    description: the weekly reports
    match: {methods: [GET], path: /api/reports}
    allow: [sales]
    when: in_schedule("business_hours") || in_schedule("weekend")
  - id: customers.sensitive
    match: {methods: [GET], path: "/api/customers/{id}/sensitive"}
    allow: [compliance]
    mfa: {max_age: 5m, message: "Sign in again with your second factor to see ID numbers."}
  - id: customers.notes
    match: {methods: [GET], path: "/api/customers/{id}/notes"}
    allow: [sales]
    mfa: {max_age: 5m}
  - id: customers.update
    match: {methods: [PATCH], path: "/api/customers/{id}"}
    allow: [sales, service]
    body:
      stage: {deny: [service], message: "Only sales may move a customer's stage."}
      contract_amount: {deny: [service]}
  - id: tickets
    match: {methods: [GET], path: /api/tickets}
    allow: [service]
    message: Tickets are for customer service only.
  - id: internal
    match: {path: /internal}
    deny: internal endpoints are not served
  - id: custom.when
    match: {path: /custom}
    allow: [sales]
    when: '"x" in user.attrs'
`

func TestRefusalsSpeakToTheUser(t *testing.T) {
	s := mustLoad(t, messageRules)
	night := time.Date(2026, 11, 20, 23, 0, 0, 0, time.FixedZone("CST", 8*3600))
	sales := s.UserFromRoles("zhang", []string{"sales"}, nil, true, workday.Add(-time.Hour))
	service := s.UserFromRoles("li", []string{"service"}, nil, true, workday.Add(-time.Hour))
	compliance := s.UserFromRoles("qian", []string{"compliance"}, nil, true, workday.Add(-time.Hour))
	cases := []struct {
		name    string
		user    *User
		method  string
		target  string
		now     time.Time
		message string
	}{
		{name: "a schedule is described in words, not in CEL", user: sales, target: "/api/customers/export", now: night,
			message: "Exports are open Monday to Friday, 08:00-20:00 (Asia/Shanghai)."},
		{name: "two schedules are both described", user: sales, target: "/api/reports", now: night,
			message: "This part of the CRM is open Monday to Friday, 08:00-20:00 (Asia/Shanghai), or Saturday and Sunday, 10:00-16:00 (Europe/Berlin)."},
		{name: "a when with a message says the operator's words", user: sales, target: "/api/deals/export", now: night,
			message: "Deal exports run in office hours only."},
		{name: "a role that may not use a route is named", user: service, target: "/api/customers/export",
			message: "Your role (service) may not use this export."},
		{name: "a route's description names what the role may not use", user: service, target: "/api/reports",
			message: "Your role (service) may not use the weekly reports."},
		{name: "a route's message replaces the generated one", user: sales, target: "/api/tickets",
			message: "Tickets are for customer service only."},
		{name: "a deny route's reason is the message", user: sales, target: "/internal",
			message: "internal endpoints are not served"},
		{name: "an export without a grant names the policy and who approves", user: sales, target: "/api/customers/export",
			message: "This export needs approval (policy export: your manager, then IT security). Request it with a purpose."},
		{name: "an export's message replaces the generated one", user: sales, target: "/api/deals/export",
			message: "Ask your manager for a deal export."},
		{name: "a step-up with the route's message", user: s.UserFromRoles("qian", []string{"compliance"}, nil, true, workday.Add(-time.Hour)), target: "/api/customers/1/sensitive",
			message: "Sign in again with your second factor to see ID numbers."},
		{name: "a step-up without a message says how recent the sign-in must be", user: sales, target: "/api/customers/1/notes",
			message: "Sign in again with your second factor to continue (it needs a sign-in within the last 5 minutes)."},
		{name: "a condition that is not a schedule gets a general sentence", user: sales, target: "/custom",
			message: "The access rules do not allow this part of the CRM for you at the moment."},
		{name: "an address no route covers is closed", user: sales, target: "/nowhere",
			message: "This address is not covered by the CRM's access rules, so it is closed."},
		{name: "an anonymous user is asked to sign in", target: "/api/tickets", message: "Sign in to continue."},
		{name: "a guarded field in the query string names the field with its message", user: service, method: "PATCH", target: "/api/customers/1?stage=won",
			message: "Only sales may move a customer's stage."},
		{name: "a request that cannot be judged is refused in words", user: compliance, target: "/api/%zz",
			message: "This request cannot be checked by the access rules, so it is refused."},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			method := c.method
			if method == "" {
				method = "GET"
			}
			r := request(method, "/")
			if err := setTarget(r, c.target); err != nil {
				t.Fatal(err)
			}
			r.Now = workday
			if !c.now.IsZero() {
				r.Now = c.now
			}
			d := s.Decide(c.user, r)
			if d.Outcome == Allow {
				t.Fatalf("allowed: %s", d.Reason)
			}
			if d.Message != c.message {
				t.Errorf("message\n got %q\nwant %q\n(reason %q)", d.Message, c.message, d.Reason)
			}
			if strings.Contains(d.Reason, `\"`) {
				t.Errorf("the reason escapes quotes: %q", d.Reason)
			}
		})
	}
}

// setTarget sets a request's URL from a raw target, keeping bad escapes
// for the rules to refuse.
func setTarget(r *Request, target string) error {
	path, query, _ := strings.Cut(target, "?")
	r.URL.Path, r.URL.RawPath, r.URL.RawQuery = path, path, query
	return nil
}

func TestRefusedBodiesSpeakToTheUser(t *testing.T) {
	s := mustLoad(t, messageRules)
	service := s.UserFromRoles("li", []string{"service"}, nil, true, workday.Add(-time.Hour))
	cases := []struct {
		name, body, message string
	}{
		{"a guard's message is used", `{"stage":"won"}`, "Only sales may move a customer's stage."},
		{"a guard without a message names the field", `{"contract_amount":1}`, "You may not change the field contract_amount here."},
		{"a body that cannot be read is refused in words", `{"stage":`, "This request's content cannot be checked by the access rules, so it is refused."},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := request("PATCH", "/api/customers/1")
			r.Now = workday
			d := s.Decide(service, r)
			be := d.CheckBody("application/json", []byte(c.body))
			if be == nil || be.Message != c.message {
				t.Fatalf("body error %+v, want message %q", be, c.message)
			}
		})
	}
}

func TestBlockedAnswersSpeakToTheUser(t *testing.T) {
	s := mustLoad(t, messageRules)
	r := request("GET", "/api/reports")
	r.Now = workday
	d := s.Decide(s.UserFromRoles("zhang", []string{"sales"}, nil, true, workday), r)
	_, b := d.InspectResponse(200, http.Header{"Content-Disposition": {"attachment; filename=all.csv"}})
	if b == nil || b.Message != "This answer is a download, and downloads are only allowed from export pages." {
		t.Fatalf("block %+v", b)
	}
}

func TestSchedulesAreDescribedInWords(t *testing.T) {
	cases := []struct {
		days, hours, tz, want string
	}{
		{"mon-fri", "08:00-20:00", "Asia/Shanghai", "Monday to Friday, 08:00-20:00 (Asia/Shanghai)"},
		{"sat,sun", "10:00-16:00", "UTC", "Saturday and Sunday, 10:00-16:00 (UTC)"},
		{"fri-mon", "22:00-06:00", "UTC", "Friday to Monday, 22:00-06:00 (UTC)"},
		{"mon,wed,fri", "", "UTC", "Monday, Wednesday and Friday, all day (UTC)"},
		{"daily", "09:00-12:00,14:00-18:00", "Europe/Berlin", "every day, 09:00-12:00 and 14:00-18:00 (Europe/Berlin)"},
		{"tue", "00:00-24:00", "UTC", "Tuesday, all day (UTC)"},
		{"sun-tue", "08:00-09:00", "UTC", "Sunday to Tuesday, 08:00-09:00 (UTC)"},
	}
	for _, c := range cases {
		t.Run(c.days+" "+c.hours+" reads "+c.want, func(t *testing.T) {
			src := "version: 1\nroles: {a: {}}\nschedules:\n  s: {days: \"" + c.days + "\", hours: \"" + c.hours + "\", tz: " + c.tz + "}\nroutes:\n  - id: x\n    match: {path: /x}\n    allow: [a]\n    when: in_schedule(\"s\")\n"
			s := mustLoad(t, src)
			if got := s.schedules["s"].describe(); got != c.want {
				t.Errorf("got %q, want %q", got, c.want)
			}
		})
	}
}

func TestDurationsAreWrittenInWords(t *testing.T) {
	for d, want := range map[time.Duration]string{
		5 * time.Minute: "5 minutes", time.Minute: "1 minute", 24 * time.Hour: "1 day", 90 * time.Minute: "1 hour 30 minutes",
		30 * time.Second: "30 seconds", 48 * time.Hour: "2 days", 2 * time.Hour: "2 hours",
	} {
		if got := words(d); got != want {
			t.Errorf("words(%s) = %q, want %q", d, got, want)
		}
	}
}
