package integration

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/crmguard/crmguard/examples/crm"
	"github.com/crmguard/crmguard/examples/demo"
	"github.com/crmguard/crmguard/examples/devidp"
)

var (
	hiddenIDRe     = regexp.MustCompile(`name="id" value="([^"]+)"`)
	maskedPhoneRe  = regexp.MustCompile(`^1\d{2}\*{4}\d{4}$`)
	maskedIDCardRe = regexp.MustCompile(`^\d{6}\*{8}\d{3}[\dX]$`)
)

// browserLike is an HTTP client with a cookie jar that follows redirects,
// like a browser without JavaScript.
func browserLike(t *testing.T) *http.Client {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Jar: jar, Timeout: 20 * time.Second}
}

func readAll(t *testing.T, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func getHTML(t *testing.T, c *http.Client, u string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", u, nil)
	req.Header.Set("Accept", "text/html,application/xhtml+xml")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp, readAll(t, resp)
}

// signInHTTP signs user in through the guard and the development provider
// with password and TOTP, starting at path, and returns the page the
// browser ends on.
func signInHTTP(t *testing.T, c *http.Client, d *demo.Stack, user, path string, codeAt time.Time) (*http.Response, string) {
	t.Helper()
	u, ok := d.User(user)
	if !ok {
		t.Fatalf("no demo user %q", user)
	}
	return signInAt(t, c, d.URL, d.Issuer, u, path, codeAt)
}

// signInAt signs u in through the guard at site and the development
// provider at issuer with password and the TOTP code of codeAt, starting
// at path, and returns the page the browser ends on.
func signInAt(t *testing.T, c *http.Client, site, issuer string, u devidp.User, path string, codeAt time.Time) (*http.Response, string) {
	t.Helper()
	resp, body := getHTML(t, c, site+path)
	if !strings.HasPrefix(resp.Request.URL.String(), issuer+"/login") {
		t.Fatalf("GET %s ended at %s, not the provider's sign-in page:\n%.500s", path, resp.Request.URL, body)
	}
	return completeSignIn(t, c, issuer, u, body, codeAt)
}

// completeSignIn signs u in on the sign-in page body of the development
// provider at issuer (where a guard's redirect led) with password and the
// TOTP code of codeAt, and returns the page the browser ends on.
func completeSignIn(t *testing.T, c *http.Client, issuer string, u devidp.User, body string, codeAt time.Time) (*http.Response, string) {
	t.Helper()
	m := hiddenIDRe.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no sign-in request id on the provider's page:\n%.500s", body)
	}
	resp, err := c.PostForm(issuer+"/login/password", url.Values{"id": {m[1]}, "username": {u.Username}, "password": {u.Password}})
	if err != nil {
		t.Fatal(err)
	}
	if body = readAll(t, resp); !strings.Contains(body, `id="code"`) {
		t.Fatalf("the password step did not ask for a TOTP code (status %d):\n%.500s", resp.StatusCode, body)
	}
	code, err := devidp.TOTP(u.TOTPSecret, codeAt)
	if err != nil {
		t.Fatal(err)
	}
	resp, err = c.PostForm(issuer+"/login/totp", url.Values{"id": {m[1]}, "code": {code}})
	if err != nil {
		t.Fatal(err)
	}
	return resp, readAll(t, resp)
}

func apiGet(t *testing.T, c *http.Client, u string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", u, nil)
	req.Header.Set("Accept", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp, readAll(t, resp)
}

// TestDemoStackGuardsTheCRMEndToEnd runs the demo from the repository's
// Caddyfile and examples/rules.yaml and goes through it as a browser
// without JavaScript would: sign-in with password and TOTP at the real
// development provider, the CRM's page, its API through the guard, an
// export, logout.
func TestDemoStackGuardsTheCRMEndToEnd(t *testing.T) {
	d := startDemo(t, filepath.Join(repoRoot(t), "examples", "rules.yaml"))
	now := time.Now()
	c := browserLike(t)

	t.Run("an anonymous API call is refused, not served", func(t *testing.T) {
		resp, body := apiGet(t, browserLike(t), d.URL+"/api/customers")
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("status %d, want 401: %.300s", resp.StatusCode, body)
		}
	})

	t.Run("a sales rep signs in with password and TOTP and lands on the CRM", func(t *testing.T) {
		resp, body := signInHTTP(t, c, d, "zhang", "/", now)
		if resp.StatusCode != 200 || !strings.Contains(body, "Signed in as <b>zhang</b>") {
			t.Fatalf("after sign-in: %s status %d:\n%.800s", resp.Request.URL, resp.StatusCode, body)
		}
		if !strings.HasPrefix(resp.Request.URL.String(), d.URL+"/") {
			t.Errorf("the sign-in ended at %s, not on the guard", resp.Request.URL)
		}
	})

	// The rep's list is scoped in the CRM (forward_query team=east): the
	// CRM pages over the team's customers only, so its pages say nothing
	// about other teams'. The public pool is its own view.
	t.Run("the sales rep's customer list pages over the team's customers only, masked", func(t *testing.T) {
		var want []int
		for _, cu := range d.CRM.Data().Customers {
			if cu.Team == "east" && len(want) < 100 {
				want = append(want, cu.ID)
			}
		}
		checkRepList(t, c, d.URL+"/api/customers?limit=100", want, d.CRM.Data().Customers)
	})

	t.Run("the sales rep's pool view holds exactly the pool customers, masked", func(t *testing.T) {
		var want []int
		for _, cu := range d.CRM.Data().Customers {
			if cu.LastContactAt.Before(now.Add(-8760 * time.Hour)) {
				want = append(want, cu.ID)
			}
		}
		checkRepList(t, c, d.URL+"/api/customers?view=pool&limit=200", want, d.CRM.Data().Customers)
	})

	t.Run("the sales rep's export is refused with the rule and the reason", func(t *testing.T) {
		resp, body := apiGet(t, c, d.URL+"/api/customers/export")
		if resp.StatusCode != http.StatusForbidden {
			t.Fatalf("status %d, want 403: %.300s", resp.StatusCode, body)
		}
		var e struct{ Error, Rule, Reason string }
		if err := json.Unmarshal([]byte(body), &e); err != nil || e.Rule != "customers.export" || e.Reason == "" {
			t.Errorf("refusal %q does not name rule customers.export with a reason (%v)", body, err)
		}
	})

	t.Run("the CRM logs the verified user, not one the client claims", func(t *testing.T) {
		req, _ := http.NewRequest("GET", d.URL+"/api/whoami", nil)
		req.Header.Set("Accept", "application/json")
		req.Header.Set("X-CRM-User", "admin")
		req.Header.Set("X-CRM-Roles", "admin")
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body := readAll(t, resp)
		if body != `{"roles":["sales"],"user":"zhang"}` {
			t.Errorf("the CRM saw %s, want zhang with role sales", body)
		}
	})

	t.Run("after logout the same cookies no longer reach the CRM", func(t *testing.T) {
		before := cookieHeader(c, d.URL)
		if before == "" {
			t.Fatal("no session cookie before logout")
		}
		logout(t, c, d)
		// The same cookies the browser had before logging out, replayed.
		req, _ := http.NewRequest("GET", d.URL+"/api/customers", nil)
		req.Header.Set("Accept", "application/json")
		req.Header.Set("Cookie", before)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if body := readAll(t, resp); resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("a replayed pre-logout cookie: status %d, want 401: %.300s", resp.StatusCode, body)
		}
		resp, body := getHTML(t, c, d.URL+"/")
		if !strings.HasPrefix(resp.Request.URL.String(), d.Issuer+"/login") || !strings.Contains(body, `id="username"`) {
			t.Errorf("after logout, the CRM page ended at %s instead of a fresh sign-in:\n%.300s", resp.Request.URL, body)
		}
	})
}

func cookieHeader(c *http.Client, u string) string {
	pu, _ := url.Parse(u)
	var parts []string
	for _, ck := range c.Jar.Cookies(pu) {
		parts = append(parts, ck.Name+"="+ck.Value)
	}
	return strings.Join(parts, "; ")
}

var formRe = regexp.MustCompile(`(?s)<form[^>]*action="([^"]*)"[^>]*>(.*?)</form>`)
var inputRe = regexp.MustCompile(`<input[^>]*name="([^"]+)"[^>]*value="([^"]*)"`)

// logout follows the CRM's "Sign out" link. When the guard answers with a
// confirmation form (logout is a POST with a CSRF token), it submits it.
func logout(t *testing.T, c *http.Client, d *demo.Stack) {
	t.Helper()
	resp, body := getHTML(t, c, d.URL+"/.crmguard/logout")
	if m := formRe.FindStringSubmatch(body); m != nil && strings.HasPrefix(resp.Request.URL.String(), d.URL) {
		vals := url.Values{}
		for _, in := range inputRe.FindAllStringSubmatch(m[2], -1) {
			vals.Set(in[1], in[2])
		}
		action, err := resp.Request.URL.Parse(m[1])
		if err != nil {
			t.Fatal(err)
		}
		req, _ := http.NewRequest("POST", action.String(), strings.NewReader(vals.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Accept", "text/html") // a browser's form post; kept on the redirects that follow
		resp, err = c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body = readAll(t, resp)
	}
	if resp.StatusCode >= 400 {
		t.Fatalf("logout: %s status %d:\n%.500s", resp.Request.URL, resp.StatusCode, body)
	}
}

// The ground truth helper must agree with the rule file's pool boundary.
func TestVisibleToSalesRepUsesTheOneYearPool(t *testing.T) {
	now := time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)
	tests := []struct {
		name string
		c    crm.Customer
		want bool
	}{
		{"an own customer is visible", crm.Customer{OwnerID: "zhang", Team: "west", LastContactAt: now}, true},
		{"a team customer is visible", crm.Customer{OwnerID: "wu", Team: "east", LastContactAt: now}, true},
		{"another team's customer contacted last month is hidden", crm.Customer{OwnerID: "chen", Team: "west", LastContactAt: now.AddDate(0, -1, 0)}, false},
		{"another team's customer not contacted for 13 months is in the pool", crm.Customer{OwnerID: "chen", Team: "west", LastContactAt: now.AddDate(0, -13, 0)}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := visibleToSalesRep(tt.c, "zhang", "east", now); got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

// TestDemoStackServesEachRoleWhatTheRulesSay signs each kind of user in
// through the real provider and checks one promise of examples/rules.yaml
// per role against the CRM's own data.
func TestDemoStackServesEachRoleWhatTheRulesSay(t *testing.T) {
	d := startDemo(t, filepath.Join(repoRoot(t), "examples", "rules.yaml"))
	truth := d.CRM.Data()
	send := func(t *testing.T, c *http.Client, method, path, body string) (*http.Response, string) {
		t.Helper()
		return sendJSON(t, c, d, method, path, rawJSON(body))
	}
	list := func(t *testing.T, body string) []map[string]any {
		t.Helper()
		var env struct {
			List []map[string]any `json:"list"`
		}
		if err := json.Unmarshal([]byte(body), &env); err != nil {
			t.Fatalf("not a list envelope: %v\n%.300s", err, body)
		}
		if len(env.List) == 0 {
			t.Fatalf("an empty list proves nothing:\n%.300s", body)
		}
		return env.List
	}
	maskedCard := regexp.MustCompile(`^\*+\d{4}$`)
	tests := []struct {
		name, user string
		check      func(t *testing.T, c *http.Client)
	}{
		{"finance reads payments with the payer's account masked and no sales conversation, and no notes", "zhao", func(t *testing.T, c *http.Client) {
			resp, body := send(t, c, "GET", "/api/payments?limit=50", "")
			if resp.StatusCode != 200 {
				t.Fatalf("payments: status %d: %.300s", resp.StatusCode, body)
			}
			for _, p := range list(t, body) {
				if acct, _ := p["payer_account"].(string); !maskedCard.MatchString(acct) {
					t.Errorf("payment %v: payer account %q is not masked", p["id"], acct)
				}
				if _, ok := p["sales_notes"]; ok {
					t.Errorf("payment %v: the sales conversation reached finance", p["id"])
				}
			}
			if resp, _ := send(t, c, "GET", "/api/notes", ""); resp.StatusCode != http.StatusForbidden {
				t.Errorf("conversation notes for finance: status %d, want 403", resp.StatusCode)
			}
		}},
		{"marketing gets hashed ids, masked names and no ID numbers", "sun", func(t *testing.T, c *http.Client) {
			resp, body := send(t, c, "GET", "/api/customers?limit=50", "")
			if resp.StatusCode != 200 {
				t.Fatalf("customers: status %d: %.300s", resp.StatusCode, body)
			}
			for i, r := range list(t, body) {
				orig := truth.Customers[i]
				if id, ok := r["id"].(string); !ok || id == fmt.Sprint(orig.ID) || len(id) < 16 {
					t.Errorf("record %d: id %v is not a keyed hash", i, r["id"])
				}
				if name, _ := r["name"].(string); name == orig.Name || !strings.Contains(name, "*") {
					t.Errorf("record %d: name %q is not masked", i, name)
				}
				for _, k := range []string{"id_card", "bank_account", "notes"} {
					if _, ok := r[k]; ok {
						t.Errorf("record %d: %s reached marketing", i, k)
					}
				}
			}
		}},
		{"customer service cannot move a deal's stage and the CRM's deal stays as it was", "li", func(t *testing.T, c *http.Client) {
			before := truth.Deals[0].Stage
			next := "won"
			if before == "won" {
				next = "lost"
			}
			resp, body := send(t, c, "PATCH", "/api/deals/1", `{"stage":"`+next+`"}`)
			if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "stage") || !strings.Contains(body, "deals.update") {
				t.Errorf("status %d %s; want 403 naming stage and deals.update", resp.StatusCode, body)
			}
			if got := d.CRM.Data().Deals[0].Stage; got != before {
				t.Errorf("the CRM's deal 1 moved to %q", got)
			}
		}},
		{"a new hire reads but cannot write", "xiao", func(t *testing.T, c *http.Client) {
			if resp, body := send(t, c, "GET", "/api/customers?limit=20", ""); resp.StatusCode != 200 {
				t.Errorf("reading: status %d: %.200s", resp.StatusCode, body)
			}
			before := truth.Customers[0].Notes
			if resp, _ := send(t, c, "PATCH", "/api/customers/1", `{"notes":"my first note"}`); resp.StatusCode != http.StatusForbidden {
				t.Errorf("writing: status %d, want 403", resp.StatusCode)
			}
			if got := d.CRM.Data().Customers[0].Notes; got != before {
				t.Errorf("the CRM's customer 1 changed to %q", got)
			}
		}},
		{"compliance reads an ID number right after an MFA sign-in", "qian", func(t *testing.T, c *http.Client) {
			resp, body := send(t, c, "GET", "/api/customers/7/sensitive", "")
			if resp.StatusCode != 200 || !strings.Contains(body, `"id_card":"`+truth.Customers[6].IDCard+`"`) {
				t.Errorf("status %d %.300s; want customer 7's full ID number", resp.StatusCode, body)
			}
		}},
		{"a sales manager moves a customer of the team to another rep, but not another team's, which answers like a missing one", "wang", func(t *testing.T, c *http.Client) {
			// customers.update judges the write against the stored
			// customer: a manager changes the customers of the team led;
			// another team's customer outside the pool is hidden from the
			// manager, so a write to it answers like a missing customer.
			var own, other *crm.Customer
			for _, cu := range truth.Customers {
				switch {
				case own == nil && cu.Team == "east" && cu.OwnerID != "zhang":
					own = cu
				case other == nil && cu.Team != "east" && cu.LastContactAt.After(time.Now().Add(-8760*time.Hour+24*time.Hour)):
					// Not in the pool: a manager may claim a pool
					// customer for themselves like any rep.
					other = cu
				}
			}
			if own == nil || other == nil {
				t.Fatal("the demo data has no east customer of another rep, or no customer of another team")
			}
			resp, body := send(t, c, "PATCH", fmt.Sprintf("/api/customers/%d", own.ID), `{"owner_id":"zhang"}`)
			if resp.StatusCode != 200 {
				t.Fatalf("status %d: %.300s", resp.StatusCode, body)
			}
			if got := d.CRM.Data().Customers[own.ID-1]; got.OwnerID != "zhang" || got.UpdatedBy != "wang" {
				t.Errorf("the CRM's customer %d: owner %q changed by %q", own.ID, got.OwnerID, got.UpdatedBy)
			}
			before := other.OwnerID
			resp, body = send(t, c, "PATCH", fmt.Sprintf("/api/customers/%d", other.ID), `{"owner_id":"wang"}`)
			if resp.StatusCode != http.StatusNotFound || !strings.Contains(body, "This record does not exist, or you may not see it.") {
				t.Errorf("another team's customer: status %d %.300s; want 404", resp.StatusCode, body)
			}
			if got := d.CRM.Data().Customers[other.ID-1].OwnerID; got != before {
				t.Errorf("the CRM's customer %d moved to %q", other.ID, got)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := browserLike(t)
			if resp, body := signInHTTP(t, c, d, tt.user, "/", time.Now()); resp.StatusCode != 200 || !strings.Contains(body, "Signed in as <b>"+tt.user+"</b>") {
				t.Fatalf("signing in %s: status %d\n%.300s", tt.user, resp.StatusCode, body)
			}
			tt.check(t, c)
		})
	}
}

// checkRepList GETs a customer list as the sales rep and checks that it
// holds exactly the customers want, in order, masked, with no raw phone, ID
// number or bank account of any customer of all.
func checkRepList(t *testing.T, c *http.Client, url string, want []int, all []*crm.Customer) {
	t.Helper()
	resp, body := apiGet(t, c, url)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %.500s", resp.StatusCode, body)
	}
	var env struct {
		List []map[string]any `json:"list"`
	}
	if err := json.Unmarshal([]byte(body), &env); err != nil {
		t.Fatal(err)
	}
	var got []int
	for _, r := range env.List {
		got = append(got, int(r["id"].(float64)))
		if p, _ := r["phone"].(string); !maskedPhoneRe.MatchString(p) {
			t.Errorf("customer %v: phone %q is not masked", r["id"], p)
		}
		if p, _ := r["id_card"].(string); !maskedIDCardRe.MatchString(p) {
			t.Errorf("customer %v: ID number %q is not masked", r["id"], p)
		}
		if _, ok := r["bank_account"]; ok {
			t.Errorf("customer %v: the bank account reached the client", r["id"])
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("customers %v\nwant %v", got, want)
	}
	if len(want) == 0 {
		t.Error("the seeded data gives no customers: the check would prove nothing")
	}
	for _, cu := range all {
		if strings.Contains(body, cu.Phone) || strings.Contains(body, cu.IDCard) || strings.Contains(body, cu.BankAccount) {
			t.Errorf("customer %d: a raw phone, ID number or bank account is in the answer", cu.ID)
		}
	}
}
