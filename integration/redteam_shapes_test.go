package integration

import (
	"fmt"
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
