package integration

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
)

// TestRedteamRequestsThatSmuggleAGuardedFieldOrMethod sends a sales rep's
// requests that try to change a customer's stage (a field the rep may not
// change) or to act with a method the rep may not use, in forms a lenient
// CRM would still act on. Each is refused before the CRM sees it, with one
// audit event saying "deny".
func TestRedteamRequestsThatSmuggleAGuardedFieldOrMethod(t *testing.T) {
	s := startRedteam(t, redteamRules, "")
	req := func(method, path string, headers []string, body string) string {
		var b strings.Builder
		fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: {HOST}\r\nX-Test-User: zhang\r\nConnection: close\r\n", method, path)
		for _, h := range headers {
			b.WriteString(h + "\r\n")
		}
		if body != "" {
			fmt.Fprintf(&b, "Content-Length: %d\r\n", len(body))
		}
		b.WriteString("\r\n" + body)
		return b.String()
	}
	gzBody := string(gz([]byte(`{"stage":"won"}`)))
	tests := []struct {
		name string
		raw  string
		want int
	}{
		{"a gzip-compressed JSON body is refused", req("PATCH", "/api/customers/1", []string{"Content-Type: application/json", "Content-Encoding: gzip"}, gzBody), 415},
		{"a gzip JSON body behind a first Content-Encoding: identity line is refused", req("PATCH", "/api/customers/1", []string{"Content-Type: application/json", "Content-Encoding: identity", "Content-Encoding: gzip"}, gzBody), 415},
		{"a gzip form body behind a first Content-Encoding: identity line is refused", req("PATCH", "/api/customers/1", []string{"Content-Type: application/x-www-form-urlencoded", "Content-Encoding: identity", "Content-Encoding: gzip"}, string(gz([]byte("stage=won")))), 415},
		{"a JSON body labelled as a urlencoded form is still checked", req("PATCH", "/api/customers/1", []string{"Content-Type: application/x-www-form-urlencoded"}, `{"stage":"won"}`), 403},
		{"two Content-Type lines are refused", req("PATCH", "/api/customers/1", []string{"Content-Type: application/x-www-form-urlencoded", "Content-Type: application/json"}, `{"stage":"won"}`), 400},
		{"a JSON body labelled text/plain is refused", req("PATCH", "/api/customers/1", []string{"Content-Type: text/plain"}, `{"stage":"won"}`), 400},
		{"a JSON body without a Content-Type is refused", req("PATCH", "/api/customers/1", nil, `{"stage":"won"}`), 400},
		{"Content-Type with upper case and parameters is still JSON", req("PATCH", "/api/customers/1", []string{"Content-Type: Application/JSON; Charset=UTF-8; x=y"}, `{"stage":"won"}`), 403},
		{"a JSON body with a byte order mark is refused", req("PATCH", "/api/customers/1", []string{"Content-Type: application/json"}, "\xef\xbb\xbf{\"stage\":\"won\"}"), 400},
		{"a JSON body with comments is refused", req("PATCH", "/api/customers/1", []string{"Content-Type: application/json"}, "{/* x */\"stage\":\"won\"}"), 400},
		{"NaN in a JSON body is refused", req("PATCH", "/api/customers/1", []string{"Content-Type: application/json"}, `{"n":NaN,"stage":"won"}`), 400},
		{"a huge number does not hide the guarded field", req("PATCH", "/api/customers/1", []string{"Content-Type: application/json"}, `{"n":1e999999999,"stage":"won"}`), 403},
		{"a very deep body is refused", req("PATCH", "/api/customers/1", []string{"Content-Type: application/json"}, strings.Repeat(`{"a":`, 600)+"1"+strings.Repeat("}", 600)), 400},
		{"a guarded key differing in case is refused", req("PATCH", "/api/customers/1", []string{"Content-Type: application/json"}, `{"Stage":"won"}`), 403},
		{"a guarded key under __proto__ is refused", req("PATCH", "/api/customers/1", []string{"Content-Type: application/json"}, `{"__proto__":{"stage":"won"}}`), 403},
		{"a guarded field inside a string holding JSON is refused", req("PATCH", "/api/customers/1", []string{"Content-Type: application/json"}, `{"data":"{\"stage\":\"won\"}"}`), 403},
		{"a form key with a leading space (PHP trims it) is refused", req("PATCH", "/api/customers/1", []string{"Content-Type: application/x-www-form-urlencoded"}, `+stage=won`), 403},
		{"a form key with an encoded leading space is refused", req("PATCH", "/api/customers/1", []string{"Content-Type: application/x-www-form-urlencoded"}, `%20stage=won`), 403},
		{"the guarded field in the query string of a PATCH (PHP $_REQUEST, Laravel input()) is refused", req("PATCH", "/api/customers/1?stage=won", []string{"Content-Type: application/json"}, `{}`), 403},
		{"the guarded field in the query string of a bodiless PATCH is refused", req("PATCH", "/api/customers/1?customer%5Bstage%5D=won", nil, ""), 403},
		{"a JSON Patch replacing the guarded field is refused", req("PATCH", "/api/customers/1", []string{"Content-Type: application/json-patch+json"}, `[{"op":"replace","path":"/stage","value":"won"}]`), 403},
		{"a form key with PHP array syntax is refused", req("PATCH", "/api/customers/1", []string{"Content-Type: application/x-www-form-urlencoded"}, `customer[stage]=won`), 403},
		{"with Transfer-Encoding and Content-Length together the chunked body is the one checked", "PATCH /api/customers/1 HTTP/1.1\r\nHost: {HOST}\r\nX-Test-User: zhang\r\nContent-Type: application/json\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nf\r\n{\"stage\":\"won\"}\r\n0\r\n\r\n", 403},
		{"X-HTTP-Method-Override is refused", req("POST", "/api/customers/1/notes", []string{"X-HTTP-Method-Override: DELETE"}, ""), 400},
		{"_method in the query is refused", req("POST", "/api/customers/1/notes?_method=DELETE", nil, ""), 400},
		{"_METHOD in the query is refused", req("POST", "/api/customers/1/notes?_METHOD=DELETE", nil, ""), 400},
		{"_method in a form body is refused", req("POST", "/api/customers/1/notes", []string{"Content-Type: application/x-www-form-urlencoded"}, `text=hi&_method=DELETE`), 400},
		{"_method in a JSON body is refused", req("POST", "/api/customers/1/notes", []string{"Content-Type: application/json"}, `{"text":"hi","_method":"DELETE"}`), 400},
		{"_method in a multipart form body is refused", req("POST", "/api/customers/1/notes", []string{"Content-Type: multipart/form-data; boundary=b"}, "--b\r\nContent-Disposition: form-data; name=\"text\"\r\n\r\nhi\r\n--b\r\nContent-Disposition: form-data; name=\"_method\"\r\n\r\nDELETE\r\n--b--\r\n"), 400},
		{"a multipart part naming _method as its second name is refused", req("POST", "/api/customers/1/notes", []string{"Content-Type: multipart/form-data; boundary=b"}, "--b\r\nContent-Disposition: form-data; name=\"text\"; name=\"_method\"\r\n\r\nDELETE\r\n--b--\r\n"), 400},
		{"a guarded field in a multipart form is refused", req("PATCH", "/api/customers/1", []string{"Content-Type: multipart/form-data; boundary=b"}, "--b\r\nContent-Disposition: form-data; name=\"customer[stage]\"\r\n\r\nwon\r\n--b--\r\n"), 403},
		{"an absolute-form request target is judged on its path", req("DELETE", "http://{HOST}/api/customers/1/notes", nil, ""), 403},
		{"an unknown method is refused", req("PURGE", "/api/customers/1/notes", nil, ""), 403},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(s.auditEvents(t))
			reached := len(s.crm.received())
			resp, body := s.raw(t, tt.raw)
			if l := leaked(body); l != "" {
				t.Fatalf("status %d leaked %q", resp.StatusCode, l)
			}
			if resp.StatusCode != tt.want {
				t.Errorf("status %d, want %d: %.300s", resp.StatusCode, tt.want, body)
			}
			if got := len(s.crm.received()); got != reached {
				t.Errorf("the CRM received the request: %q", s.crm.received()[got-1])
			}
			if resp.StatusCode >= 500 || resp.StatusCode < 400 {
				return
			}
			ev := s.oneAuditEvent(t, before)
			if ev["decision"] != "deny" || ev["status"] != float64(resp.StatusCode) {
				t.Errorf("audit decision %v status %v, want deny %d: %v", ev["decision"], ev["status"], resp.StatusCode, ev)
			}
		})
	}
}

// TestRedteamForgedHeadersNeverReachTheCRM sends identity and method
// headers a CRM would trust, in spellings a naive filter misses. The CRM
// sees only the proxy's X-CRM-User and X-CRM-Roles, and the real method.
func TestRedteamForgedHeadersNeverReachTheCRM(t *testing.T) {
	s := startRedteam(t, redteamRules, "")
	tests := []struct {
		name   string
		header string
	}{
		{"X_HTTP_METHOD_OVERRIDE with underscores", "X_HTTP_METHOD_OVERRIDE: DELETE"},
		{"X_CRM_USER with underscores", "X_CRM_USER: admin"},
		{"x-crm-roles in lower case", "x-crm-roles: admin"},
		{"X-CRM-User in odd case", "x-CrM-uSeR: admin"},
		{"X_Forwarded_User with underscores", "X_Forwarded_User: admin"},
		{"X-Forwarded-User", "X-Forwarded-User: admin"},
		{"Remote-User", "Remote-User: admin"},
		{"X-Auth-Request-User", "X-Auth-Request-User: admin"},
	}
	for _, tt := range tests {
		t.Run(tt.name+" does not reach the CRM", func(t *testing.T) {
			resp, body := s.raw(t, "POST /api/customers/1/notes HTTP/1.1\r\nHost: {HOST}\r\nX-Test-User: zhang\r\n"+tt.header+"\r\nConnection: close\r\n\r\n")
			if resp.StatusCode != 200 {
				t.Fatalf("status %d: %s", resp.StatusCode, body)
			}
			got := s.crm.lastRequest()
			if got.Method != "POST" {
				t.Fatalf("the CRM saw method %s", got.Method)
			}
			for k, vs := range got.Header {
				for _, v := range vs {
					if v == "admin" || v == "DELETE" {
						t.Fatalf("the CRM received %s: %s", k, v)
					}
				}
			}
			if got.Header.Get("X-Crm-User") != "zhang" || got.Header.Get("X-Crm-Roles") != "sales" {
				t.Fatalf("the CRM's identity headers: %v", got.Header)
			}
		})
	}
}

// TestRedteamAbsoluteFormTargetsAreJudgedOnTheirPath sends absolute-form
// request targets (GET http://host/path): they are judged on the path the
// CRM will see, encoded dot segments resolved first.
func TestRedteamAbsoluteFormTargetsAreJudgedOnTheirPath(t *testing.T) {
	s := startRedteam(t, redteamRules, "")
	tests := []struct {
		name, target string
		want         int
		route        string
	}{
		{"an absolute-form target to the list is filtered", "http://{HOST}/api/customers", 200, "customers.list"},
		{"encoded dot segments in an absolute-form target are resolved before judging", "http://{HOST}/api/files/%2e%2e/customers", 200, "customers.list"},
		{"a double-encoded dot segment is refused", "http://{HOST}/api/files/%252e%252e/customers", 400, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(s.auditEvents(t))
			resp, body := s.raw(t, "GET "+tt.target+" HTTP/1.1\r\nHost: {HOST}\r\nX-Test-User: zhang\r\nConnection: close\r\n\r\n")
			if l := leaked(body); l != "" {
				t.Fatalf("status %d leaked %q", resp.StatusCode, l)
			}
			if resp.StatusCode != tt.want {
				t.Fatalf("status %d, want %d: %.200s", resp.StatusCode, tt.want, body)
			}
			ev := s.oneAuditEvent(t, before)
			if route, _ := ev["route"].(string); route != tt.route {
				t.Fatalf("audited route %q, want %q", route, tt.route)
			}
		})
	}
}

// TestRedteamProtocolUpgradeOnARewritingRoute asks for a protocol switch
// (websocket, h2c) on a route whose answers must be rewritten, against a
// CRM that accepts any switch and then sends raw records down the tunnel.
// A tunnel cannot be rewritten: the request is refused before the CRM.
func TestRedteamProtocolUpgradeOnARewritingRoute(t *testing.T) {
	s := startRedteam(t, redteamRules, "")
	for _, up := range []string{"websocket", "h2c", "TLS/1.2"} {
		t.Run("Upgrade: "+up+" is refused on a rewriting route", func(t *testing.T) {
			before := len(s.auditEvents(t))
			reached := len(s.crm.received())
			resp, body := s.raw(t, "GET /api/customers HTTP/1.1\r\nHost: {HOST}\r\nX-Test-User: zhang\r\nConnection: Upgrade\r\nUpgrade: "+up+"\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
			if l := leaked(body); l != "" || resp.StatusCode == http.StatusSwitchingProtocols {
				t.Fatalf("status %d: the switch reached the client (leak %q)", resp.StatusCode, l)
			}
			if resp.StatusCode != http.StatusBadRequest {
				t.Fatalf("status %d, want 400: %s", resp.StatusCode, body)
			}
			if len(s.crm.received()) != reached {
				t.Fatalf("the CRM received the upgrade request")
			}
			if ev := s.oneAuditEvent(t, before); ev["decision"] != "deny" {
				t.Fatalf("audit %v", ev)
			}
		})
	}
}

// TestRedteamCompatibilityFormsInPaths sends paths whose letters are
// Unicode compatibility forms (fullwidth, ligatures, letterlike symbols)
// that a normalising CRM reads as the customer list, while the guard would
// see an unknown path and fall to a catch-all route that does not rewrite.
func TestRedteamCompatibilityFormsInPaths(t *testing.T) {
	rulesFile := redteamRules + `  - id: api.other
    match: {methods: [GET], path: "/api/**"}
    allow: [sales]
`
	s := startRedteam(t, rulesFile, "")
	for _, p := range []string{
		"/api/%EF%BD%83ustomers",    // fullwidth c
		"/api/customers%EF%BC%8F",   // fullwidth solidus (a lookalike separator)
		"/api/%EF%BC%A3USTOMERS",    // fullwidth C
		"/api/cu%EF%AC%86omers",     // the "st" ligature U+FB06
		"/%E2%92%B6pi/customers",    // circled A U+24B6
		"/api/customers/%EF%BC%92",  // fullwidth digit 2
		"/api/%F0%9D%90%9Customers", // mathematical bold small c
	} {
		t.Run(fmt.Sprintf("the path %s is refused", p), func(t *testing.T) {
			before := len(s.auditEvents(t))
			resp, body := s.raw(t, "GET "+p+" HTTP/1.1\r\nHost: {HOST}\r\nX-Test-User: zhang\r\nConnection: close\r\n\r\n")
			if l := leaked(body); l != "" {
				t.Fatalf("status %d leaked %q", resp.StatusCode, l)
			}
			if resp.StatusCode != http.StatusBadRequest {
				t.Fatalf("status %d, want 400: %.200s", resp.StatusCode, body)
			}
			if ev := s.oneAuditEvent(t, before); ev["decision"] != "deny" {
				t.Fatalf("audit %v", ev)
			}
		})
	}
}

// TestRedteamQueryNamesAPHPCRMReadsDifferently asks for a CSV report
// reserved to managers with parameter names a PHP CRM reads as format
// (format[]=csv, " format=csv"), hoping the guard sees no format and
// judges the request on a broader route.
func TestRedteamQueryNamesAPHPCRMReadsDifferently(t *testing.T) {
	rulesFile := strings.Replace(redteamRules, "routes:\n", `routes:
  - id: reports.csv
    match: {methods: [GET], path: "/api/files/report", query: {format: csv}}
    allow: [sales_manager]
`, 1)
	s := startRedteam(t, rulesFile, "")
	tests := []struct {
		name, query string
		want        int
	}{
		{"format=csv is the managers' route", "format=csv", 403},
		{"format[]=csv is judged as format=csv", "format%5B%5D=csv", 403},
		{"format[x]=csv is judged as format=csv", "format[x]=csv", 403},
		{"a leading space before format is judged as format=csv", "+format=csv", 403},
		{"format given as json and as format[]=csv is unjudgeable", "format=json&format[]=csv", 400},
		{"_method[]=DELETE is a method override", "_method[]=DELETE", 400},
		{"another parameter passes to the broader route", "page=2", 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(s.auditEvents(t))
			resp, body := s.raw(t, "GET /api/files/report?"+tt.query+" HTTP/1.1\r\nHost: {HOST}\r\nX-Test-User: zhang\r\nConnection: close\r\n\r\n")
			if resp.StatusCode != tt.want {
				t.Fatalf("status %d, want %d: %.200s", resp.StatusCode, tt.want, body)
			}
			ev := s.oneAuditEvent(t, before)
			if want := map[bool]string{true: "allow", false: "deny"}[tt.want == 200]; ev["decision"] != want {
				t.Fatalf("audit %v, want %s", ev, want)
			}
		})
	}
}

// TestRedteamPathOverrideHeaders asks for a route the guard allows without
// rewriting (/api/files/x) while naming the customer list in a header that
// Symfony, Zend or IIS-hosted CRMs route on (X-Original-URL and friends).
func TestRedteamPathOverrideHeaders(t *testing.T) {
	s := startRedteam(t, redteamRules, "")
	for _, name := range []string{"X-Original-URL", "X-Rewrite-URL", "X-Original-URI", "X-Forwarded-Path", "X_Original_URL"} {
		t.Run(name+" never reaches the CRM", func(t *testing.T) {
			resp, body := s.raw(t, "GET /api/files/x HTTP/1.1\r\nHost: {HOST}\r\nX-Test-User: zhang\r\n"+name+": /api/customers\r\nConnection: close\r\n\r\n")
			if l := leaked(body); l != "" {
				t.Fatalf("status %d leaked %q", resp.StatusCode, l)
			}
			got := s.crm.lastRequest()
			for k := range got.Header {
				if strings.EqualFold(strings.ReplaceAll(k, "_", "-"), strings.ReplaceAll(name, "_", "-")) {
					t.Fatalf("the CRM received %s", k)
				}
			}
		})
	}
}

// TestRedteamFormatSuffixesAreJudgedAsTheirRoute asks for the customer list
// as /api/customers.json: Rails (formats) and Spring (suffix pattern
// matching) route it to /api/customers, so it must get that route's
// rewriting, not fall to a catch-all route that passes answers raw.
func TestRedteamFormatSuffixesAreJudgedAsTheirRoute(t *testing.T) {
	rulesFile := redteamRules + `  - id: api.other
    match: {methods: [GET], path: "/api/**"}
    allow: [sales]
`
	s := startRedteam(t, rulesFile, "")
	for _, p := range []string{"/api/customers.json", "/api/customers.JSON", "/api/customers.xml", "/api/Customers.json"} {
		t.Run(p+" is judged as customers.list", func(t *testing.T) {
			before := len(s.auditEvents(t))
			resp, body := s.raw(t, "GET "+p+" HTTP/1.1\r\nHost: {HOST}\r\nX-Test-User: zhang\r\nConnection: close\r\n\r\n")
			if l := leaked(body); l != "" {
				t.Fatalf("status %d leaked %q", resp.StatusCode, l)
			}
			if ev := s.oneAuditEvent(t, before); ev["route"] != "customers.list" {
				t.Fatalf("audited route %v", ev["route"])
			}
		})
	}
}

// TestMultipartUploadsWithoutAnOverrideReachTheCRMUnchanged: reading a
// multipart POST for a _method override must not change it: the CRM
// receives the very bytes the client sent, file included.
func TestMultipartUploadsWithoutAnOverrideReachTheCRMUnchanged(t *testing.T) {
	s := startRedteam(t, redteamRules, "")
	body := "--b\r\nContent-Disposition: form-data; name=\"text\"\r\n\r\ncalled, sent the brochure\r\n" +
		"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"brochure.pdf\"\r\nContent-Type: application/pdf\r\n\r\n%PDF-1.4 _method=DELETE \x00\xff\r\n--b--\r\n"
	resp, answer := s.raw(t, fmt.Sprintf("POST /api/customers/1/notes HTTP/1.1\r\nHost: {HOST}\r\nX-Test-User: zhang\r\nContent-Type: multipart/form-data; boundary=b\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(body), body))
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %.300s", resp.StatusCode, answer)
	}
	got := s.crm.received()
	if len(got) == 0 || got[len(got)-1] != body {
		t.Fatalf("the CRM did not receive the body unchanged: %q", got)
	}
}
