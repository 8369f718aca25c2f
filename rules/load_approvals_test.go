package rules

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// wfHead is the top of the rule files below: line 1 is "version: 1", the
// approvals block starts on line 9.
const wfHead = `version: 1
role_map: {crm-sales: sales, crm-managers: sales_manager, crm-it: it_security, crm-service: service}
roles:
  sales: {}
  sales_manager: {inherits: [sales]}
  it_security: {}
  service: {}
  service_plus: {inherits: [service]}
`

// wfRoutes closes a rule file with an export route naming the policy
// export and a route naming service_plus.
const wfRoutes = `routes:
  - id: export
    match: {path: /export}
    allow: [sales]
    export: {approval: export}
  - id: phones
    match: {path: /phones}
    allow: [service]
    records: list
    fields: {phone: {mask: phone, except: [service_plus]}}
    query: {params: {}}
`

const wfPolicy = `approvals:
  export:
    steps:
      - {name: manager, approvers: [sales_manager], when: 'approver.attrs.teams.exists(t, t in requester.attrs.teams)'}
      - {name: it, approvers: [it_security]}
`

func TestApprovalsAndElevationsLoad(t *testing.T) {
	s := mustLoad(t, wfHead+`approvals:
  export:
    description: your manager and IT security
    purpose: optional
    valid_for: 2h
    uses: 3
    approver_mfa: {max_age: 10m}
    steps:
      - name: manager
        description: your manager
        approvers: [sales_manager]
        when: 'approver.attrs.teams.exists(t, t in requester.attrs.teams)'
      - {name: it, approvers: [it_security]}
elevations:
  complaint:
    description: see a complaining customer's phone
    for: [service]
    grant: [service_plus]
    max: 30m
    reason: required
    mfa: {max_age: 5m}
    approval: none
    review_by: [sales_manager]
  escalated:
    for: [service]
    grant: [service_plus]
    max: 1h
    reason: optional
    approval: export
    review_by: [sales_manager]
`+wfRoutes)
	p, ok := s.ApprovalPolicy("export")
	if !ok {
		t.Fatal("policy export not found")
	}
	if p.Name != "export" || p.Description != "your manager and IT security" || p.PurposeRequired || p.ValidFor != 2*time.Hour || p.Uses != 3 || p.ApproverMFAMaxAge != 10*time.Minute {
		t.Errorf("policy %+v", p)
	}
	if len(p.Steps) != 2 || p.Steps[0].Name != "manager" || p.Steps[0].Description != "your manager" || p.Steps[1].Description != "it_security" ||
		p.Steps[0].When == "" || p.Steps[1].When != "" || strings.Join(p.Steps[0].Approvers, ",") != "sales_manager" {
		t.Errorf("steps %+v %+v", p.Steps[0], p.Steps[1])
	}
	if _, ok := s.ApprovalPolicy("nope"); ok {
		t.Error("an unknown policy was found")
	}
	e, ok := s.Elevation("complaint")
	if !ok {
		t.Fatal("elevation complaint not found")
	}
	if e.Max != 30*time.Minute || !e.ReasonRequired || e.MFAMaxAge != 5*time.Minute || e.Approval != "" ||
		strings.Join(e.For, ",") != "service" || strings.Join(e.Grant, ",") != "service_plus" || strings.Join(e.ReviewBy, ",") != "sales_manager" {
		t.Errorf("elevation %+v", e)
	}
	if e2, _ := s.Elevation("escalated"); e2 == nil || e2.Approval != "export" || e2.ReasonRequired {
		t.Errorf("elevation escalated %+v", e2)
	}
	if got := strings.Join(s.Elevations(), ","); got != "complaint,escalated" {
		t.Errorf("Elevations() = %s", got)
	}
	if got := strings.Join(s.ApprovalPolicies(), ","); got != "export" {
		t.Errorf("ApprovalPolicies() = %s", got)
	}
	if w := s.Warnings(); len(w) != 0 {
		t.Errorf("warnings: %v", w)
	}
}

func TestApprovalPolicyDefaults(t *testing.T) {
	s := mustLoad(t, wfHead+wfPolicy+wfRoutes)
	p, _ := s.ApprovalPolicy("export")
	if !p.PurposeRequired || p.ValidFor != 24*time.Hour || p.Uses != 1 || p.ApproverMFAMaxAge != 0 {
		t.Errorf("defaults %+v", p)
	}
	if p.Description != "sales_manager, then it_security" {
		t.Errorf("generated description %q", p.Description)
	}
}

func TestBadApprovalsAndElevationsNameFileLineColumnAndKey(t *testing.T) {
	cases := []struct {
		name string
		src  string
		want string // the exact error text (one problem)
	}{
		{"a route naming an unknown policy is a load error",
			wfHead + wfPolicy + strings.Replace(wfRoutes, "{approval: export}", "{approval: exprot}", 1),
			"rules.yaml:18:24: routes[0].export.approval: unknown approval policy \"exprot\" (approvals: export)"},
		{"an elevation naming an unknown policy is a load error",
			wfHead + wfPolicy + "elevations:\n  c: {for: [service], grant: [service_plus], max: 30m, approval: boss, review_by: [sales_manager]}\n" + wfRoutes,
			"rules.yaml:15:66: elevations.c.approval: unknown approval policy \"boss\" (approvals: export)"},
		{"a step condition with a type error names its column",
			wfHead + "approvals:\n  export:\n    steps:\n      - name: m\n        approvers: [sales_manager]\n        when: approver.id == 1\n" + wfRoutes,
			"rules.yaml:14:27: approvals.export.steps[0].when: found no matching overload for '_==_' applied to '(string, int)'"},
		{"a step condition may not read user",
			wfHead + "approvals:\n  export:\n    steps:\n      - name: m\n        approvers: [sales_manager]\n        when: user.id == requester.id\n" + wfRoutes,
			"rules.yaml:14:15: approvals.export.steps[0].when: user is not available here (this expression may use: approver, requester, now)"},
		{"a route condition may not read approver",
			wfHead + wfPolicy + strings.Replace(wfRoutes, "    allow: [sales]\n", "    allow: [sales]\n    when: approver.id == \"x\"\n", 1),
			"rules.yaml:18:11: routes[0].when: approver is not available here (this expression may use: user, request, now)"},
		{"a step condition that is not a bool is an error",
			wfHead + "approvals:\n  export:\n    steps:\n      - name: m\n        approvers: [sales_manager]\n        when: requester.id\n" + wfRoutes,
			"rules.yaml:14:15: approvals.export.steps[0].when: the condition gives string, not a bool"},
		{"a policy without steps is an error",
			wfHead + "approvals:\n  export: {purpose: required}\n" + wfRoutes,
			"rules.yaml:10:11: approvals.export.steps: missing: a policy needs at least one step saying who approves"},
		{"a step without approvers is an error",
			wfHead + "approvals:\n  export:\n    steps: [{name: m}]\n" + wfRoutes,
			"rules.yaml:11:13: approvals.export.steps[0].approvers: missing: say which roles approve this step"},
		{"two steps with one name are an error",
			wfHead + "approvals:\n  export:\n    steps: [{name: m, approvers: [sales_manager]}, {name: m, approvers: [it_security]}]\n" + wfRoutes,
			"rules.yaml:11:52: approvals.export.steps[1].name: duplicate step name \"m\""},
		{"an unknown policy key is an error",
			wfHead + "approvals:\n  export:\n    step: []\n    steps: [{name: m, approvers: [sales_manager]}]\n" + wfRoutes,
			"rules.yaml:11:5: approvals.export.step: unknown key (known here: description, purpose, valid_for, uses, steps, approver_mfa)"},
		{"purpose takes required or optional",
			wfHead + "approvals:\n  export:\n    purpose: yes please\n    steps: [{name: m, approvers: [sales_manager]}]\n" + wfRoutes,
			"rules.yaml:11:14: approvals.export.purpose: want required or optional, got \"yes please\""},
		{"uses must be at least 1",
			wfHead + "approvals:\n  export:\n    uses: 0\n    steps: [{name: m, approvers: [sales_manager]}]\n" + wfRoutes,
			"rules.yaml:11:11: approvals.export.uses: want a whole number of at least 1, got \"0\""},
		{"a grant valid for 0 is an error",
			wfHead + "approvals:\n  export:\n    valid_for: 0s\n    steps: [{name: m, approvers: [sales_manager]}]\n" + wfRoutes,
			"rules.yaml:11:16: approvals.export.valid_for: a grant valid for 0 could never be used"},
		{"an elevation granting an undeclared role is an error",
			wfHead + wfPolicy + "elevations:\n  c: {for: [service], grant: [service_pluss], max: 30m, review_by: [sales_manager]}\n" + wfRoutes,
			"rules.yaml:15:30: elevations.c.grant: grants the undeclared role \"service_pluss\": declare it under roles"},
		{"an elevation without max is an error",
			wfHead + wfPolicy + "elevations:\n  c: {for: [service], grant: [service_plus], review_by: [sales_manager]}\n" + wfRoutes,
			"rules.yaml:15:6: elevations.c.max: missing: an elevation needs for (who may ask), grant (roles added) and max (how long at most)"},
		{"an empty message is an error",
			wfHead + wfPolicy + strings.Replace(wfRoutes, "    allow: [sales]\n", "    allow: [sales]\n    message: \" \"\n", 1),
			"rules.yaml:18:14: routes[0].message: an empty message: remove the key to get the generated one"},
		{"a when mapping without if is an error",
			wfHead + wfPolicy + strings.Replace(wfRoutes, "    allow: [sales]\n", "    allow: [sales]\n    when: {message: closed}\n", 1),
			"rules.yaml:18:11: routes[0].when.if: missing: write the condition under if"},
		{"a when mapping's CEL error names the place under if",
			wfHead + wfPolicy + strings.Replace(wfRoutes, "    allow: [sales]\n", "    allow: [sales]\n    when: {if: user.idd == \"x\", message: closed}\n", 1),
			"rules.yaml:18:20: routes[0].when.if: undefined field 'idd'"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Load("rules.yaml", []byte(c.src), WithHashKey([]byte("k")))
			var le *LoadError
			if !errors.As(err, &le) {
				t.Fatalf("want a *LoadError, got %v", err)
			}
			if len(le.Errors) != 1 || le.Errors[0].Error() != c.want {
				t.Errorf("errors:\n%v\nwant exactly:\n%s", err, c.want)
			}
		})
	}
}

func TestLintChecksApprovalPoliciesAndElevations(t *testing.T) {
	cases := []struct {
		name string
		src  string
		want []string // each warning, in order
	}{
		{"a policy nobody names is reported",
			wfHead + wfPolicy + "  unused:\n    steps: [{name: m, approvers: [sales_manager]}]\n" + strings.Replace(wfRoutes, "{approval: export}", "{approval: true}", 1),
			[]string{
				"rules.yaml:10:3: approvals.export: approval policy export is not used: no route's export.approval and no elevation's approval names it",
				"rules.yaml:14:3: approvals.unused: approval policy unused is not used: no route's export.approval and no elevation's approval names it",
			}},
		{"a policy only an elevation names is used",
			wfHead + wfPolicy + "elevations:\n  c: {for: [service], grant: [service_plus], max: 30m, approval: export, review_by: [sales_manager]}\n" + strings.Replace(wfRoutes, "{approval: export}", "{approval: true}", 1),
			nil},
		{"a step whose role nobody is mapped to is reported",
			strings.Replace(wfHead, ", crm-it: it_security", "", 1) + wfPolicy + wfRoutes,
			[]string{`rules.yaml:13:31: approvals.export.steps[1].approvers: nobody can approve this step: no role_map entry gives "it_security" (or a role inheriting it), and no elevation grants it`}},
		{"a step role reached through inheritance from a mapped role can be approved",
			strings.Replace(strings.Replace(wfHead, ", crm-it: it_security", ", crm-admins: admin", 1), "  service: {}\n", "  service: {}\n  admin: {inherits: [it_security]}\n", 1) + wfPolicy + wfRoutes,
			nil},
		{"a step role an elevation grants can be approved",
			strings.Replace(wfHead, ", crm-it: it_security", "", 1) + wfPolicy + "elevations:\n  duty: {for: [service], grant: [it_security], max: 1h, review_by: [sales_manager]}\n" + wfRoutes,
			nil},
		{"an unknown approver role is reported",
			wfHead + "approvals:\n  export:\n    steps: [{name: m, approvers: [sales_managr]}]\n" + wfRoutes,
			[]string{
				`rules.yaml:6:3: roles.it_security: role "it_security" is declared but no rule names it or a role it inherits, so it grants nothing`,
				`rules.yaml:11:34: approvals.export.steps[0].approvers: role "sales_managr" is used but not declared under roles, so nobody has it`,
				`rules.yaml:11:34: approvals.export.steps[0].approvers: nobody can approve this step: no role_map entry gives "sales_managr" (or a role inheriting it), and no elevation grants it`,
			}},
		{"unknown roles in for and review_by are reported",
			wfHead + wfPolicy + "elevations:\n  c: {for: [servise], grant: [service_plus], max: 30m, review_by: [complaince]}\n" + wfRoutes,
			[]string{
				`rules.yaml:15:12: elevations.c.for: role "servise" is used but not declared under roles, so nobody has it`,
				`rules.yaml:15:67: elevations.c.review_by: role "complaince" is used but not declared under roles, so nobody has it`,
			}},
		{"an elevation without reviewers is reported",
			wfHead + wfPolicy + "elevations:\n  c: {for: [service], grant: [service_plus], max: 30m}\n" + wfRoutes,
			[]string{"rules.yaml:15:3: elevations.c: elevation c has no review_by: nobody reviews it afterwards"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := mustLoad(t, c.src)
			var got []string
			for _, w := range s.Warnings() {
				got = append(got, w.String())
			}
			if strings.Join(got, "\n") != strings.Join(c.want, "\n") {
				t.Errorf("warnings:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(c.want, "\n"))
			}
		})
	}
}
