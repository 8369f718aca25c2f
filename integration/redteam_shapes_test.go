package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// li's customer 2 and zhang's customer 1, for answers written by hand.
var (
	rtLi    = proxyCustomers(9)[1]
	rtZhang = proxyCustomers(9)[0]
)

// redteamBodies are JSON answers of a CRM that writes JSON in legal but
// unusual ways, by name (the "evil" query parameter).
var redteamBodies = map[string]string{
	"dup-list":         fmt.Sprintf(`{"list":[],"list":[{"owner_id":"li","phone":"%s","bank_account":"%s"}]}`, rtLi.Phone, rtLi.BankAccount),
	"escaped-list":     fmt.Sprintf(`{"li\u0073t":[{"owner_id":"li","phone":"%s","bank_account":"%s"}]}`, rtLi.Phone, rtLi.BankAccount),
	"escaped-field":    fmt.Sprintf(`{"list":[{"owner_id":"zhang","ph\u006fne":"%s","b\u0061nk_account":"%s"}]}`, rtZhang.Phone, rtZhang.BankAccount),
	"escaped-owner":    fmt.Sprintf(`{"list":[{"owner\u005fid":"li","phone":"%s"}]}`, rtLi.Phone),
	"escaped-value":    fmt.Sprintf(`{"list":[{"owner_id":"\u007ahang","phone":"%s"}]}`, escapeDigits(rtZhang.Phone)),
	"number-phone":     fmt.Sprintf(`{"list":[{"owner_id":"zhang","phone":%s,"id_card":%s}]}`, rtZhang.Phone, rtZhang.IDCard),
	"dup-field":        fmt.Sprintf(`{"list":[{"owner_id":"zhang","phone":"x","phone":"%s","bank_account":"1","bank_account":"%s"}]}`, rtZhang.Phone, rtZhang.BankAccount),
	"dup-owner":        fmt.Sprintf(`{"list":[{"owner_id":"li","owner_id":"zhang","phone":"%s"}]}`, rtLi.Phone),
	"array-owner":      fmt.Sprintf(`{"list":[{"owner_id":["zhang","li"],"phone":"%s"}]}`, rtLi.Phone),
	"missing-list":     fmt.Sprintf(`{"items":[{"owner_id":"li","phone":"%s"}]}`, rtLi.Phone),
	"object-list":      fmt.Sprintf(`{"list":{"owner_id":"li","phone":"%s"}}`, rtLi.Phone),
	"null-list":        `{"list":null}`,
	"phone-object":     fmt.Sprintf(`{"list":[{"owner_id":"zhang","phone":{"value":"%s"},"bank_account":["%s"]}]}`, rtZhang.Phone, rtZhang.BankAccount),
	"huge-number":      fmt.Sprintf(`{"list":[{"owner_id":"zhang","n":1e999999,"bank_account":"%s"}]}`, rtZhang.BankAccount),
	"single-dup-owner": fmt.Sprintf(`{"owner_id":"zhang","phone":"%s","owner_id":"li"}`, rtLi.Phone),
	"single-array":     fmt.Sprintf(`[{"owner_id":"li","phone":"%s"}]`, rtLi.Phone),
}

// redteamNested is a CRM answer that embeds other people's sensitive data
// inside a visible record: a spouse's ID number and bank account, related
// customers with phones, a contact's mobile.
var redteamNested = fmt.Sprintf(`{"list":[{"id":1,"owner_id":"zhang","team":"east","name":"A","phone":"%s","last_contact_at":"2026-11-01T00:00:00Z",
 "spouse":{"name":"B","id_card":"%s","bank_account":"%s","phone":"%s"},
 "related":[{"id":2,"owner_id":"li","phone":"%s","id_card":"%s","bank_account":"%s"}],
 "contacts":[{"name":"C","mobile":"%s"}]}],"total":1}`,
	rtZhang.Phone, rtLi.IDCard, rtLi.BankAccount, rtLi.Phone, proxyCustomers(9)[2].Phone, proxyCustomers(9)[2].IDCard, proxyCustomers(9)[2].BankAccount, proxyCustomers(9)[4].Phone)

// TestRedteamExampleRulesCoverNestedSensitiveData runs the shipped example
// rule file (examples/rules.yaml, which operators copy) against a CRM that
// nests sensitive data inside a record the sales rep may see.
func TestRedteamExampleRulesCoverNestedSensitiveData(t *testing.T) {
	rulesFile, err := os.ReadFile(filepath.Join("..", "examples", "rules.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	// The example rules have usage limits (off_hours applies at night and
	// at weekends), which need the state store: without one every request
	// they cover is refused with 503.
	store := filepath.Join(t.TempDir(), "state.db")
	s := startRedteam(t, string(rulesFile), "hash_key 0123456789abcdef0123456789abcdef\n\t\tstore "+store)
	resp, body := s.raw(t, "GET /api/customers HTTP/1.1\r\nHost: {HOST}\r\nX-Test-User: zhang\r\nX-Test-Evil: nested\r\nConnection: close\r\n\r\n")
	if resp.StatusCode != 200 || !strings.Contains(body, `"owner_id":"zhang"`) {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	// The related customer is the CRM's choice to show; its phone, ID
	// number and bank account are not.
	for _, c := range proxyCustomers(9) {
		for _, v := range []string{c.Phone, c.IDCard, c.BankAccount} {
			if strings.Contains(body, v) {
				t.Fatalf("leaked %q: %s", v, body)
			}
		}
	}
}

// escapeDigits writes every digit of s as a \u escape.
func escapeDigits(s string) string {
	var b strings.Builder
	for _, r := range s {
		fmt.Fprintf(&b, `\u%04x`, r)
	}
	return b.String()
}

// TestRedteamUnusualJSONNeverLeaks sends JSON answers that are legal (or
// nearly) but written the way a naive rewriter misreads: duplicate keys
// (a browser keeps the last), escaped keys and values, numbers where
// strings are expected, objects where arrays are. The rep never sees a raw
// value or another owner's record.
func TestRedteamUnusualJSONNeverLeaks(t *testing.T) {
	s := startRedteam(t, redteamRules, "")
	for name := range redteamBodies {
		path := "/api/customers?evil=" + name
		if strings.HasPrefix(name, "single-") {
			path = "/api/customers/2?evil=" + name
		}
		t.Run(fmt.Sprintf("the %s answer leaks nothing", name), func(t *testing.T) {
			before := len(s.auditEvents(t))
			resp, body := s.raw(t, "GET "+path+" HTTP/1.1\r\nHost: {HOST}\r\nX-Test-User: zhang\r\nConnection: close\r\n\r\n")
			if l := leakedDecoded(body); l != "" {
				t.Fatalf("status %d leaked %q: %s", resp.StatusCode, l, body)
			}
			ev := s.oneAuditEvent(t, before)
			if ev["status"] != float64(resp.StatusCode) {
				t.Errorf("audit status %v, answer %d", ev["status"], resp.StatusCode)
			}
			t.Logf("status %d decision %v: %.200s", resp.StatusCode, ev["decision"], body)
		})
	}
}

// leakedDecoded is leaked on the body with JSON \u escapes decoded.
func leakedDecoded(body string) string {
	if l := leaked(body); l != "" {
		return l
	}
	var b strings.Builder
	for i := 0; i < len(body); i++ {
		if body[i] == '\\' && i+5 < len(body) && body[i+1] == 'u' {
			var r rune
			if _, err := fmt.Sscanf(body[i+2:i+6], "%04x", &r); err == nil {
				b.WriteRune(r)
				i += 5
				continue
			}
		}
		b.WriteByte(body[i])
	}
	return leaked(b.String())
}
