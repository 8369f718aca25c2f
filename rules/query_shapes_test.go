package rules

import (
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"
)

// crmShapeRules guards the query shapes of four CRMs' list APIs (the
// answers' shapes are /work/shared/fixtures/crm-shapes/): SuiteCRM's
// JSON:API (filter[field][op], sort, page[size]), EspoCRM's where[n][...]
// and orderBy, Salesforce's SOQL in q and an OData $filter / $orderby
// (Dynamics), and HubSpot's GET list (properties, sorts). A rep sees
// phones masked and no tax id or bank account.
const crmShapeRules = `version: 1
mfa: {required: false}
roles: {sales: {}, admin: {}}
routes:
  - id: suitecrm.accounts
    match: {methods: [GET], path: /Api/V8/module/Accounts}
    allow: [sales, admin]
    records: data
    fields: {"**.phone_office": {mask: phone, except: [admin]}}   # JSON:API: under attributes
    query:
      params:
        filter[{field}][*]: {filters: "{field}"}
        filter[operator]: {}
        sort: {sorts: "{value}"}
        page[size]: {}
        page[number]: {}
        fields[*]: {}
  - id: espocrm.accounts
    match: {methods: [GET], path: /api/v1/Account}
    allow: [sales, admin]
    records: list
    fields: {phoneNumber: {mask: phone, except: [admin]}, emailAddress: {remove: true, except: [admin]}}
    query:
      params:
        where[*][type]: {}
        where[*][attribute]: {filters: "{value}"}
        where[*][value]: {}
        where[*][value][*][type]: {}
        where[*][value][*][attribute]: {filters: "{value}"}
        where[*][value][*][value]: {}
        orderBy: {sorts: "{value}"}
        order: {}
        maxSize: {}
        offset: {}
        select: {}
  - id: salesforce.query
    match: {methods: [GET], path: /services/data/v60.0/query}
    allow: [sales, admin]
    records: records
    fields:
      Phone: {mask: phone, except: [admin]}
      Tax_ID__c: {remove: true, except: [admin]}
      Bank_Account__c: remove
    query: {params: {q: {filters: "{expr}"}}}
  - id: dynamics.accounts
    match: {methods: [GET], path: /api/data/v9.2/accounts}
    allow: [sales, admin]
    records: value
    fields: {telephone1: {mask: phone, except: [admin]}, contacts.#.mobilephone: {mask: phone, except: [admin]}}
    query:
      params:
        $filter: {filters: "{expr}"}
        $orderby: {sorts: "{expr}"}
        $top: {}
        $select: {}
  - id: hubspot.contacts
    match: {methods: [GET], path: /crm/v3/objects/contacts}
    allow: [sales, admin]
    records: results
    fields: {"**.phone": {mask: phone, except: [admin]}}
    query: {params: {properties: {}, sorts: {sorts: "{value}"}, after: {}, limit: {}}}
`

func TestQueryGuardsReadEachCRMsQueryShape(t *testing.T) {
	s := mustLoad(t, crmShapeRules)
	sales := s.UserFromRoles("zhang", []string{"sales"}, nil, false, time.Time{})
	admin := s.UserFromRoles("root", []string{"admin"}, nil, false, time.Time{})
	runQueryCases(t, s, []queryCase{
		{"SuiteCRM: a rep may filter accounts by name", sales, "/Api/V8/module/Accounts?filter[name][eq]=%E6%9D%AD%E5%B7%9E&filter[operator]=and&page[size]=20", 0, ""},
		{"SuiteCRM: a rep may not filter by the office phone a rep sees masked", sales, "/Api/V8/module/Accounts?filter[phone_office][like]=0571%25", 403, `"filter[phone_office][like]" filters on phone_office`},
		{"SuiteCRM: a rep may not sort by the office phone", sales, "/Api/V8/module/Accounts?sort=-phone_office", 403, "sorts by phone_office"},
		{"SuiteCRM: an admin may filter by the office phone", admin, "/Api/V8/module/Accounts?filter[phone_office][eq]=0571", 0, ""},
		{"SuiteCRM: choosing the fields to return filters nothing", sales, "/Api/V8/module/Accounts?fields[Accounts]=name,phone_office", 0, ""},
		{"EspoCRM: a rep may filter by a visible attribute", sales, "/api/v1/Account?where[0][type]=equals&where[0][attribute]=type&where[0][value]=Customer&orderBy=createdAt&order=desc", 0, ""},
		{"EspoCRM: a rep may not filter by the phone number", sales, "/api/v1/Account?where[0][type]=startsWith&where[0][attribute]=phoneNumber&where[0][value]=%2B86", 403, `"where[0][attribute]" filters on phoneNumber`},
		{"EspoCRM: the attribute's case does not hide it", sales, "/api/v1/Account?where[0][type]=startsWith&where[0][attribute]=PHONENUMBER&where[0][value]=1", 403, "filters on PHONENUMBER"},
		{"EspoCRM: a phone filter nested in an or group is refused", sales, "/api/v1/Account?where[0][type]=or&where[0][value][0][type]=equals&where[0][value][0][attribute]=emailAddress&where[0][value][0][value]=x", 403, "filters on emailAddress"},
		{"EspoCRM: a group nested deeper than the rule file says is no parameter the route takes", sales, "/api/v1/Account?where[0][type]=or&where[0][value][0][value][0][attribute]=phoneNumber", 403, "is not one the route accepts"},
		{"EspoCRM: a rep may not order by the phone number", sales, "/api/v1/Account?orderBy=phoneNumber&order=asc", 403, "sorts by phoneNumber"},
		{"EspoCRM: an attribute with a NUL after it cannot be judged", sales, "/api/v1/Account?orderBy=phoneNumber%00", 400, "control character"},
		{"Salesforce: a SOQL query filtering on a visible field passes", sales, "/services/data/v60.0/query?q=SELECT+Id,Name,Phone+FROM+Account+WHERE+Industry+=+'Retail'+AND+LastActivityDate+%3C+LAST_N_DAYS:30+ORDER+BY+Name+LIMIT+200", 0, ""},
		{"Salesforce: a SOQL WHERE on the phone is refused", sales, "/services/data/v60.0/query?q=SELECT+Id,Name+FROM+Account+WHERE+Phone+LIKE+'138%25'", 403, `"q" filters on Phone`},
		{"Salesforce: a SOQL ORDER BY a removed field is refused", sales, "/services/data/v60.0/query?q=SELECT+Name+FROM+Account+ORDER+BY+Tax_ID__c", 403, "filters on Tax_ID__c"},
		{"Salesforce: a phone filter in a sub-query of the select list is refused", sales, "/services/data/v60.0/query?q=SELECT+Name,(SELECT+Id+FROM+Contacts+WHERE+Phone='1')+FROM+Account", 403, "filters on Phone"},
		{"Salesforce: a field name in lower case is the same field", sales, "/services/data/v60.0/query?q=select+name+from+account+where+phone+!=+null", 403, "filters on phone"},
		{"Salesforce: a field named inside a quoted value is a value, not a filter", sales, "/services/data/v60.0/query?q=SELECT+Name+FROM+Account+WHERE+Name+=+'Phone+Co'", 0, ""},
		{"Salesforce: an escaped quote that SOQL and OData read differently cannot be judged", sales, "/services/data/v60.0/query?q=SELECT+Name+FROM+Account+WHERE+Name+=+'x\\'+OR+Phone+=+'1'", 400, `\'`},
		{"Salesforce: an unclosed quote cannot be judged", sales, "/services/data/v60.0/query?q=SELECT+Name+FROM+Account+WHERE+Name+=+'x", 400, "never closed"},
		{"Salesforce: an admin may filter on the phone", admin, "/services/data/v60.0/query?q=SELECT+Name+FROM+Account+WHERE+Phone+LIKE+'138%25'", 0, ""},
		{"Salesforce: a field removed for everyone is refused to an admin too", admin, "/services/data/v60.0/query?q=SELECT+Name+FROM+Account+WHERE+Bank_Account__c+!=+null", 403, "Bank_Account__c"},
		{"OData: a filter on a visible field with functions passes", sales, "/api/data/v9.2/accounts?$filter=contains(name,'%E8%BF%9C%E8%88%AA')+and+revenue+gt+1000&$orderby=name+desc&$top=50", 0, ""},
		{"OData: a function over the phone is refused", sales, "/api/data/v9.2/accounts?$filter=startswith(telephone1,'138')", 403, `"$filter" filters on telephone1`},
		{"OData: the dollar sign percent-encoded is the same parameter", sales, "/api/data/v9.2/accounts?%24filter=telephone1+eq+'1'", 403, "filters on telephone1"},
		{"OData: a lambda over the contacts' mobile phones is refused", sales, "/api/data/v9.2/accounts?$filter=contacts/any(c:c/mobilephone+eq+'139')", 403, "contacts"},
		{"OData: ordering by the phone is refused", sales, "/api/data/v9.2/accounts?$orderby=telephone1+asc", 403, "sorts by telephone1"},
		{"OData: $it names the record itself", sales, "/api/data/v9.2/accounts?$filter=$it/telephone1+eq+'1'", 403, "telephone1"},
		{"OData: $root reaches other records and cannot be judged", sales, "/api/data/v9.2/accounts?$filter=$root/accounts/telephone1+eq+'1'", 400, "$root"},
		{"HubSpot: choosing properties filters nothing", sales, "/crm/v3/objects/contacts?properties=firstname,phone&limit=10&after=514", 0, ""},
		{"HubSpot: sorting by the phone property is refused", sales, "/crm/v3/objects/contacts?sorts=-phone", 403, `"sorts" sorts by phone`},
	})
}

func TestExpressionWordsAreReadAsFields(t *testing.T) {
	cases := []struct {
		name, expr string
		want       []string // fields; a trailing "!" marks a word of the language
		bad        string
	}{
		{"OData comparisons", "name eq 'x' and stage ne 'lost'", []string{"name", "eq!", "and!", "stage", "ne!"}, ""},
		{"a navigation path joins keys with dots", "Owner/Phone eq '1'", []string{"Owner.Phone", "eq!"}, ""},
		{"a function name is judged as a word", "contains(phone,'1')", []string{"contains!", "phone"}, ""},
		{"numbers and dates are values", "amount gt 100 and created lt 2026-01-01", []string{"amount", "gt!", "and!", "created", "lt!"}, ""},
		{"a lambda reads the collection and its elements", "contacts/any(c: c/mobile eq '1')", []string{"contacts", "contacts.#.mobile", "eq!"}, ""},
		{"the SOQL select list is skipped, the object name too", "SELECT Id, Phone FROM Account WHERE Name = 'a'", []string{"WHERE!", "Name"}, ""},
		{"double quotes are no quotes", `"phone" = 'x'`, []string{"phone"}, ""},
		{"a doubled quote stays in the value", "name eq 'it''s phone'", []string{"name", "eq!"}, ""},
		{"SOQL without FROM is read whole", "SELECT Phone", []string{"SELECT!", "Phone"}, ""},
		{"a select list that is not a plain list is read whole", "select eq 'x' and phone eq '1' and from eq 'y'", []string{"select!", "eq!", "and!", "phone", "eq!", "and!", "from!", "eq!"}, ""},
		{"a select list with a function and a sub-query is skipped but for the sub-query", "SELECT COUNT(Id), (SELECT Id FROM Contacts WHERE Mobile = '1') FROM Account", []string{"Id", "SELECT!", "Id", "WHERE!", "Mobile"}, ""},
		{"a control character", "name eq\x00'x'", nil, "control character"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fs, bad := exprFields(c.expr)
			if c.bad != "" {
				if !strings.Contains(bad, c.bad) {
					t.Fatalf("bad %q, want %q", bad, c.bad)
				}
				return
			}
			if bad != "" {
				t.Fatalf("cannot be read: %s", bad)
			}
			var got []string
			for _, f := range fs {
				s := f.path.String()
				if f.word {
					s += "!"
				}
				got = append(got, s)
			}
			if strings.Join(got, " ") != strings.Join(c.want, " ") {
				t.Errorf("got %q, want %q", got, c.want)
			}
		})
	}
}

func TestAGETWithABodyOnARouteThatJudgesItsQueryIsRefused(t *testing.T) {
	s := mustLoad(t, queryRules)
	sales := s.UserFromRoles("zhang", []string{"sales"}, nil, false, time.Time{})
	for _, c := range []struct {
		name, method, target, body string
		reads                      bool
		status                     int
	}{
		{"a GET carrying a JSON search in its body", "GET", "/api/customers", `{"q":"张"}`, true, 400},
		{"a GET carrying a form", "GET", "/api/customers", "sort=phone", true, 400},
		{"a GET with an empty body", "GET", "/api/customers", "", true, 0},
		{"a GET on a route with forward_query", "GET", "/api/tickets", `{"owner_id":"wu"}`, true, 400},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := s.Decide(sales, request(c.method, c.target))
			if d.Outcome != Allow {
				t.Fatalf("refused: %s", d.Reason)
			}
			if got := d.ReadsBody("application/json"); got != c.reads {
				t.Fatalf("ReadsBody %v", got)
			}
			be := d.CheckBody("application/json", []byte(c.body))
			switch {
			case c.status == 0 && be != nil:
				t.Errorf("refused: %s", be.Reason)
			case c.status != 0 && (be == nil || be.Status != c.status || !strings.Contains(be.Reason, "carries a body")):
				t.Errorf("got %+v, want %d", be, c.status)
			}
		})
	}
}

func TestTheAccessMatrixNamesAnExpressionParameter(t *testing.T) {
	s := mustLoad(t, crmShapeRules)
	sales := s.UserFromRoles("zhang", []string{"sales"}, nil, false, time.Time{})
	var rt *route
	for _, r := range s.routes {
		if r.id == "salesforce.query" {
			rt = r
		}
	}
	qs := rt.queryAccess(sales, []string{"sales"})
	if len(qs) != 1 || qs[0].Name != "q" || qs[0].Use != "filters" || len(qs[0].Fields) != 1 || qs[0].Fields[0] != "{expr}" {
		t.Errorf("the matrix reads q as %+v, want filters {expr}", qs)
	}
}

// FuzzExprFieldsNeverLosesAField checks the expression reader from the
// attacker's side: whatever surrounds it, a word phone outside quotes (in
// an expression that is no SOQL select list, and without lambda
// variables) is judged, or the expression is refused as unreadable.
func FuzzExprFieldsNeverLosesAField(f *testing.F) {
	for _, s := range []string{
		"phone eq '1'", "contains(phone,'1')", "Owner/phone eq 1", "a eq 'x''y' or phone eq 'z'",
		"(name eq 'a') or (phone ne null)", "$it/phone eq '1'", `"phone" = 'x'`, "phone desc, name asc",
		"name eq 'x\\' or phone eq '1'", "from eq 'a' and phone eq 'b'",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, expr string) {
		fields, bad := exprFields(expr)
		if bad != "" || strings.ContainsAny(expr, "':") || !utf8.ValidString(expr) {
			return
		}
		if w := strings.Fields(strings.ToLower(expr)); len(w) > 0 && strings.HasPrefix(w[0], "select") {
			return
		}
		has := false
		for _, w := range strings.FieldsFunc(expr, func(r rune) bool {
			return !(r == '_' || r == '$' || unicode.IsLetter(r) || unicode.IsDigit(r))
		}) {
			has = has || w == "phone"
		}
		if !has {
			return
		}
		for _, f := range fields {
			if strings.Contains(f.path.String(), "phone") {
				return
			}
		}
		t.Errorf("%q names phone, read as %v", expr, fields)
	})
}
