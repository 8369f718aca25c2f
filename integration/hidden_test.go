package integration

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/crmguard/crmguard/examples/crm"
)

// TestHiddenMeansHidden replays the red-team findings of issue 14 through
// Caddy, the real provider and the example CRM under examples/rules.yaml:
// searching by a name marketing sees masked, filtering by another owner,
// paging around hidden records, a hidden record against a missing one, and
// customer service setting the last contact date that decides the public
// pool.
func TestHiddenMeansHidden(t *testing.T) {
	d := startDemo(t, filepath.Join(repoRoot(t), "examples", "rules.yaml"))
	now := time.Now()
	truth := d.CRM.Data()
	signIn := func(t *testing.T, user string) *http.Client {
		t.Helper()
		c := browserLike(t)
		if resp, body := signInHTTP(t, c, d, user, "/", now); resp.StatusCode != 200 || !strings.Contains(body, "Signed in as <b>"+user+"</b>") {
			t.Fatalf("signing in %s: status %d\n%.300s", user, resp.StatusCode, body)
		}
		return c
	}
	send := func(t *testing.T, c *http.Client, method, path, body string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest(method, d.URL+path, strings.NewReader(body))
		req.Header.Set("Accept", "application/json")
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp, readAll(t, resp)
	}
	ids := func(t *testing.T, body string) []int {
		t.Helper()
		var env struct {
			List []struct {
				ID int `json:"id"`
			} `json:"list"`
		}
		if err := json.Unmarshal([]byte(body), &env); err != nil {
			t.Fatalf("not a list envelope: %v\n%.300s", err, body)
		}
		out := []int{}
		for _, r := range env.List {
			out = append(out, r.ID)
		}
		return out
	}
	inPool := func(c *crm.Customer) bool { return c.LastContactAt.Before(now.Add(-8760 * time.Hour)) }
	var hiddenFromZhang, eastOfWu *crm.Customer
	var wuEast []int
	for _, c := range truth.Customers {
		if hiddenFromZhang == nil && !visibleToSalesRep(*c, "zhang", "east", now) {
			hiddenFromZhang = c
		}
		if c.OwnerID == "wu" {
			wuEast = append(wuEast, c.ID)
			eastOfWu = c
		}
	}
	if hiddenFromZhang == nil || eastOfWu == nil {
		t.Fatal("the demo data has no customer hidden from zhang, or none of wu's")
	}

	// wang (a manager of team east) pages through lists: zhang's usage
	// limit (bulk_view) would stop a rep after 300 customers.
	zhang, wang, sun := signIn(t, "zhang"), signIn(t, "wang"), signIn(t, "sun")

	t.Run("marketing cannot confirm a full name it sees masked by searching for it", func(t *testing.T) {
		name := url.QueryEscape(truth.Customers[0].Name)
		for _, q := range []string{"q=" + name, "Q=" + name, "view=pool&q=" + name, "sort=name", "sort=-name", "owner_id=zhang", "sort=contract_amount", "sort=-last_contact_at", "view=pool&last_contact_before=2020-01-01T00:00:00Z"} {
			resp, body := send(t, sun, "GET", "/api/customers?"+q, "")
			if resp.StatusCode != http.StatusForbidden || strings.Contains(body, truth.Customers[0].Name) {
				t.Errorf("%s: status %d %.300s; want 403", q, resp.StatusCode, body)
			}
		}
	})

	t.Run("a search or filter sent in a GET's body never reaches the CRM", func(t *testing.T) {
		for _, c := range []struct {
			who  *http.Client
			body string
		}{{sun, `{"q":"` + truth.Customers[0].Name + `"}`}, {zhang, `{"team":"west"}`}, {zhang, `{"sort":"phone"}`}} {
			resp, body := send(t, c.who, "GET", "/api/customers", c.body)
			if resp.StatusCode != http.StatusBadRequest || strings.Contains(body, `"list"`) {
				t.Errorf("GET with body %s: status %d %.300s; want 400", c.body, resp.StatusCode, body)
			}
		}
	})

	t.Run("marketing's customers carry no bank name, company, city, contract amount, owner, phone, e-mail or contacts", func(t *testing.T) {
		resp, body := send(t, sun, "GET", "/api/customers?limit=200", "")
		if resp.StatusCode != 200 {
			t.Fatalf("status %d %.300s", resp.StatusCode, body)
		}
		var env struct {
			List []map[string]any `json:"list"`
		}
		if err := json.Unmarshal([]byte(body), &env); err != nil || len(env.List) != 200 {
			t.Fatalf("%d records (%v)", len(env.List), err)
		}
		for i, r := range env.List {
			var keys []string
			for k := range r {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			if want := []string{"created_at", "id", "last_contact_at", "name", "stage", "tags", "team", "updated_at"}; !slices.Equal(keys, want) {
				t.Fatalf("record %d has %v, want only %v", i, keys, want)
			}
			if orig := truth.Customers[i]; strings.Contains(body, orig.Company) || strings.Contains(body, orig.BankName) || strings.Contains(body, orig.Address.City) || strings.Contains(body, orig.Email) {
				t.Fatalf("customer %d's company, bank, city or e-mail reached marketing", orig.ID)
			}
			for _, k := range []string{"created_at", "last_contact_at", "updated_at"} {
				if v, _ := r[k].(string); !monthOnly.MatchString(v) {
					t.Fatalf("record %d's %s is %q, not its month alone", i, k, v)
				}
			}
		}
	})

	t.Run("a rep filtering by another team's owner gets nothing, a team mate's customers all", func(t *testing.T) {
		if !slices.ContainsFunc(truth.Customers, func(c *crm.Customer) bool { return c.OwnerID == "chen" && c.Team != "east" }) {
			t.Fatal("the demo data gives chen no customer outside team east: an empty answer would prove nothing")
		}
		resp, body := send(t, zhang, "GET", "/api/customers?owner_id=chen&limit=1000", "")
		if got := ids(t, body); resp.StatusCode != 200 || len(got) != 0 {
			t.Errorf("status %d, customers %v; want none", resp.StatusCode, got)
		}
		resp, body = send(t, wang, "GET", "/api/customers?owner_id=wu&limit=1000", "")
		if got := ids(t, body); resp.StatusCode != 200 || !slices.Equal(got, wuEast) {
			t.Errorf("status %d, customers %v; want wu's %v", resp.StatusCode, got, wuEast)
		}
	})

	t.Run("a manager paging through the list sees full pages of the team only, so page positions say nothing about hidden customers", func(t *testing.T) {
		var team []int
		for _, c := range truth.Customers {
			if c.Team == "east" {
				team = append(team, c.ID)
			}
		}
		var got []int
		for offset := 0; ; offset += 20 {
			// The client names another team; the CRM gets the rep's.
			resp, body := send(t, wang, "GET", fmt.Sprintf("/api/customers?offset=%d&limit=20&TEAM=west", offset), "")
			if resp.StatusCode != 200 {
				t.Fatalf("offset %d: status %d %.300s", offset, resp.StatusCode, body)
			}
			page := ids(t, body)
			got = append(got, page...)
			if len(page) < 20 {
				if len(got) != len(team) {
					t.Errorf("a short page (%d) at offset %d before the team's end: hidden customers shaped the pages", len(page), offset)
				}
				break
			}
		}
		if !slices.Equal(got, team) {
			t.Errorf("paged %v\nwant the team's %v", got, team)
		}
	})

	t.Run("the pool view lists every pool customer and nothing else", func(t *testing.T) {
		var pool []int
		for _, c := range truth.Customers {
			if inPool(c) {
				pool = append(pool, c.ID)
			}
		}
		resp, body := send(t, wang, "GET", "/api/customers?view=pool&limit=200&last_contact_before=2100-01-01T00:00:00Z", "")
		if got := ids(t, body); resp.StatusCode != 200 || !slices.Equal(got, pool) || len(pool) == 0 {
			t.Errorf("status %d, customers %v\nwant the pool %v", resp.StatusCode, got, pool)
		}
	})

	t.Run("a hidden customer and a missing one answer the same bytes, to reads and to writes", func(t *testing.T) {
		for _, method := range []string{"GET", "PATCH"} {
			body := ""
			if method == "PATCH" {
				body = `{"notes":"x"}`
			}
			hr, hb := send(t, zhang, method, fmt.Sprintf("/api/customers/%d", hiddenFromZhang.ID), body)
			mr, mb := send(t, zhang, method, "/api/customers/99999", body)
			if hr.StatusCode != http.StatusNotFound || hb != mb || hr.StatusCode != mr.StatusCode || answerHeaders(hr) != answerHeaders(mr) {
				t.Errorf("%s hidden: %d %s %s\nmissing: %d %s %s", method, hr.StatusCode, answerHeaders(hr), hb, mr.StatusCode, answerHeaders(mr), mb)
			}
		}
		if got := d.CRM.Data().Customers[hiddenFromZhang.ID-1].Notes; got != hiddenFromZhang.Notes {
			t.Errorf("the hidden customer's notes changed to %q", got)
		}
	})

	t.Run("the guard's time for a hidden customer and a missing one differ by less than the network's noise", func(t *testing.T) {
		hidden, missing := fmt.Sprintf("/api/customers/%d", hiddenFromZhang.ID), "/api/customers/99999"
		timed := func(p string) time.Duration {
			start := time.Now()
			resp, _ := send(t, zhang, "GET", p, "")
			el := time.Since(start)
			if resp.StatusCode != 404 {
				t.Fatalf("%s: %d", p, resp.StatusCode)
			}
			return el
		}
		// Pairs of adjacent requests, the order alternating: a load spike
		// on a shared machine slows both of a pair, so the median of the
		// pairs' differences measures the guard, not the machine.
		var th, tm, pairs []time.Duration
		for i := 0; i < 300; i++ {
			var h, m time.Duration
			if i%2 == 0 {
				h, m = timed(hidden), timed(missing)
			} else {
				m, h = timed(missing), timed(hidden)
			}
			th, tm, pairs = append(th, h), append(tm, m), append(pairs, h-m)
		}
		diff := median(pairs)
		if diff < 0 {
			diff = -diff
		}
		t.Logf("through Caddy and the example CRM, 300 pairs: median hidden %v, missing %v, median difference within a pair %v", median(th), median(tm), diff)
		if diff > time.Millisecond {
			t.Errorf("a hidden customer's answer and a missing one's differ by %v (median within 300 pairs), more than a millisecond", diff)
		}
	})

	t.Run("customer service cannot set the last contact date that puts a customer into the pool", func(t *testing.T) {
		li := signIn(t, "li")
		target := eastOfWu
		before := d.CRM.Data().Customers[target.ID-1].LastContactAt
		for _, try := range []struct{ method, path, body string }{
			{"PATCH", fmt.Sprintf("/api/customers/%d", target.ID), `{"last_contact_at":"2020-01-01T00:00:00Z"}`},
			{"PATCH", fmt.Sprintf("/api/customers/%d", target.ID), `{"Last_Contact_At":"2020-01-01T00:00:00Z"}`},
			{"POST", "/api/customers/bulk-update", fmt.Sprintf(`{"ids":[%d],"last_contact_at":"2020-01-01T00:00:00Z"}`, target.ID)},
		} {
			resp, body := send(t, li, try.method, try.path, try.body)
			if resp.StatusCode != http.StatusForbidden {
				t.Errorf("%s %s %s: status %d %.200s; want 403", try.method, try.path, try.body, resp.StatusCode, body)
			}
		}
		if got := d.CRM.Data().Customers[target.ID-1].LastContactAt; !got.Equal(before) {
			t.Errorf("the CRM's last contact moved from %v to %v", before, got)
		}
	})
}

// monthOnly is a date marketing may see: its year and month, the rest
// masked.
var monthOnly = regexp.MustCompile(`^\d{4}-\d{2}\*+$`)

// answerHeaders lists an answer's headers but Date, for comparing answers.
func answerHeaders(r *http.Response) string {
	h := r.Header.Clone()
	h.Del("Date")
	var keys []string
	for k := range h {
		keys = append(keys, k+": "+strings.Join(h[k], ", "))
	}
	sort.Strings(keys)
	return strings.Join(keys, "\n")
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}
