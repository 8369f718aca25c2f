package integration

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/crmguard/crmguard/examples/demo"
)

// stepUpAge replaces the example rules' 5-minute step-up age in the
// browser test, so that a compliance sign-in grows too old in seconds.
const stepUpAge = 5 * time.Second

// chromiumPath finds Debian's Chromium (or $CRMGUARD_CHROMIUM). Without a
// browser the test fails when CI=true and is skipped, saying why, elsewhere.
func chromiumPath(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("CRMGUARD_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"/usr/bin/chromium", "chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	msg := "no Chromium found (/usr/bin/chromium, chromium, chromium-browser, or $CRMGUARD_CHROMIUM); install it with `apt-get install -y chromium`"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg + "; skipping the browser test outside CI")
	return ""
}

// artifactsDir is where screenshots of failed browser tests go.
func artifactsDir() string {
	if d := os.Getenv("CRMGUARD_ARTIFACTS"); d != "" {
		return d
	}
	return "artifacts"
}

// browser is one fresh headless Chromium (its own profile: no cookies)
// driven through the DevTools protocol.
type browser struct {
	t   *testing.T
	ctx context.Context
	d   *demo.Stack
}

func newBrowser(t *testing.T, d *demo.Stack) *browser {
	t.Helper()
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.WindowSize(1400, 1000),
		chromedp.UserDataDir(t.TempDir()),
	)
	ctx, cancelCtx := chromedp.NewContext(allocCtx)
	t.Cleanup(cancelAlloc)
	t.Cleanup(cancelCtx)
	if err := chromedp.Do(ctx); err != nil { // starts the browser, with no timeout
		t.Fatalf("starting Chromium: %v", err)
	}
	b := &browser{t: t, ctx: ctx, d: d}
	t.Cleanup(b.screenshotOnFailure) // runs before the browser is closed
	return b
}

var unsafeName = regexp.MustCompile(`[^A-Za-z0-9_.-]+`)

func (b *browser) screenshotOnFailure() {
	if !b.t.Failed() {
		return
	}
	dir := artifactsDir()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.t.Logf("cannot create the artifacts folder %s: %v", dir, err)
		return
	}
	base := filepath.Join(dir, unsafeName.ReplaceAllString(b.t.Name(), "_"))
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	if png, err := chromedp.Run(ctx, chromedp.FullScreenshot(90)); err == nil {
		if err := os.WriteFile(base+".png", png, 0o644); err == nil {
			b.t.Logf("screenshot of the failure: %s.png", base)
		}
	} else {
		b.t.Logf("no screenshot: %v", err)
	}
	if html, err := chromedp.Run(ctx, chromedp.Evaluate[string](`location.href + "\n\n" + document.documentElement.outerHTML`)); err == nil {
		_ = os.WriteFile(base+".html", []byte(html), 0o644)
	}
}

// do runs steps with a time limit, failing the test with the page's
// address when one of them fails.
func (b *browser) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		b.t.Fatalf("%s: %v (page: %s)", what, err, b.location())
	}
}

func (b *browser) location() string {
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	loc, err := chromedp.Run(ctx, chromedp.Location())
	if err != nil {
		return "unknown: " + err.Error()
	}
	return loc
}

// waitFor waits until the JavaScript condition holds in the page. The
// condition is polled inside the page; a navigation tears the poll down
// with the old document, so it starts again in the new one.
func (b *browser) waitFor(what, cond string) { b.t.Helper(); b.waitForOrExplain(what, cond, "") }

// waitForOrExplain is waitFor that, on failure, adds the value of the
// JavaScript expression explain (what the page knows about why).
func (b *browser) waitForOrExplain(what, cond, explain string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	for {
		_, err := chromedp.Run(ctx, chromedp.Poll[bool](cond, chromedp.WithPollingInterval(50*time.Millisecond)))
		if err == nil {
			return
		}
		if ctx.Err() != nil || !navigatedAway(err) {
			why := ""
			if explain != "" {
				why = "; the page says: " + eval[string](b, explain)
			}
			b.t.Fatalf("waiting until %s: %v (page: %s)%s", what, err, b.location(), why)
		}
	}
}

// navigatedAway reports whether err only says that the page changed under
// a running script.
func navigatedAway(err error) bool {
	msg := err.Error()
	for _, s := range []string{"navigated or closed", "Execution context was destroyed", "Cannot find context", "context with specified id"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

// eval evaluates expr in the page; a promise is awaited.
func eval[T any](b *browser, expr string) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 15*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		b.t.Fatalf("evaluating %q: %v (page: %s)", expr, err, b.location())
	}
	return v
}

// onSignInPage waits for the development provider's sign-in form.
func (b *browser) onSignInPage() {
	b.t.Helper()
	b.waitFor("the provider's sign-in form shows",
		fmt.Sprintf(`location.href.startsWith(%q) && !!document.getElementById("username")`, b.d.Issuer+"/login"))
}

// signIn fills the provider's form with the user's password and the TOTP
// code of codeAt, and submits it.
func (b *browser) signIn(user string, codeAt time.Time) {
	b.t.Helper()
	b.onSignInPage()
	u, ok := b.d.User(user)
	if !ok {
		b.t.Fatalf("no demo user %q", user)
	}
	b.do("entering the password",
		chromedp.SendKeys(chromedp.ID("username"), user),
		chromedp.SendKeys(chromedp.ID("password"), u.Password),
		chromedp.Click(chromedp.ID("submit")),
	)
	b.waitFor("the provider asks for the TOTP code", `!!document.getElementById("code")`)
	code, err := b.d.TOTP(user, codeAt)
	if err != nil {
		b.t.Fatal(err)
	}
	b.do("entering the TOTP code",
		chromedp.SendKeys(chromedp.ID("code"), code),
		chromedp.Click(chromedp.ID("submit")),
	)
}

// onCRM waits until the CRM's page has loaded its customer table through
// the guard.
func (b *browser) onCRM() {
	b.t.Helper()
	b.waitFor("the CRM's customer table is loaded",
		fmt.Sprintf(`location.href.startsWith(%q) && document.getElementById("customers-table")?.dataset.loaded === "true"`, b.d.URL+"/"))
}

// row is one customer row as the page shows it.
type row struct {
	ID          string `json:"id"`
	Owner       string `json:"owner"`
	Team        string `json:"team"`
	Phone       string `json:"phone"`
	IDCard      string `json:"id_card"`
	BankAccount string `json:"bank_account"`
	Mobiles     string `json:"contacts"`
}

const rowsJS = `[...document.querySelectorAll("#customers-table tbody tr")].map(tr => ({
	id: tr.dataset.id, owner: tr.dataset.owner, team: tr.dataset.team,
	phone: tr.querySelector(".col-phone").textContent,
	id_card: tr.querySelector(".col-id_card").textContent,
	bank_account: tr.querySelector(".col-bank_account").textContent,
	contacts: tr.querySelector(".col-contacts").textContent,
}))`

var maskedInTextRe = regexp.MustCompile(`1\d{10}`)

// TestBrowser drives a real headless Chromium through the demo stack (the
// repository's Caddyfile, examples/rules.yaml, the example CRM and the
// development provider) the way people use it.
func TestBrowser(t *testing.T) {
	chromiumPath(t) // fail or skip before starting anything
	d := startDemo(t, rulesWithStepUp(t, stepUpAge))

	t.Run("a sales rep signs in with password and TOTP and sees the team's customers, then the public pool, masked; the export is refused; logout ends the session", func(t *testing.T) {
		b := newBrowser(t, d)
		now := time.Now()
		b.do("opening the CRM", chromedp.Navigate(d.URL+"/"))
		b.signIn("zhang", now)
		b.onCRM()
		if who := eval[string](b, `document.getElementById("whoami").textContent`); !strings.Contains(who, "zhang") {
			t.Errorf("the page says %q, not that zhang is signed in", who)
		}

		// checkRows compares the customers table with want and checks
		// that nothing sensitive is shown unmasked.
		checkRows := func(what string, want []string) {
			t.Helper()
			var got []string
			for _, r := range eval[[]row](b, rowsJS) {
				got = append(got, r.ID)
				if !maskedPhoneRe.MatchString(r.Phone) {
					t.Errorf("customer %s: the page shows phone %q unmasked", r.ID, r.Phone)
				}
				if !maskedIDCardRe.MatchString(r.IDCard) {
					t.Errorf("customer %s: the page shows ID number %q unmasked", r.ID, r.IDCard)
				}
				if r.BankAccount != "—" {
					t.Errorf("customer %s: the page shows bank account %q", r.ID, r.BankAccount)
				}
				if m := maskedInTextRe.FindString(r.Mobiles); m != "" {
					t.Errorf("customer %s: a contact's mobile %q is shown unmasked", r.ID, m)
				}
			}
			if !slices.Equal(got, want) || len(want) == 0 {
				t.Errorf("%s: the page lists customers %v\nwant exactly %v", what, got, want)
			}
		}
		// The rep's list is scoped to the team in the CRM (the page shows
		// its first 100); the public pool is a view of its own.
		var team, pool []string
		for _, c := range d.CRM.Data().Customers {
			if c.Team == "east" && len(team) < 100 {
				team = append(team, fmt.Sprint(c.ID))
			}
			if c.LastContactAt.Before(now.Add(-8760*time.Hour)) && len(pool) < 100 {
				if !visibleToSalesRep(*c, "zhang", "east", now) {
					t.Fatalf("pool customer %d is not visible to a rep: the ground truth disagrees with the rules", c.ID)
				}
				pool = append(pool, fmt.Sprint(c.ID))
			}
		}
		checkRows("the team's customers", team)
		b.do("ticking the public pool", chromedp.Click(chromedp.ID("pool")))
		b.waitFor("the page shows the pool", fmt.Sprintf(`(document.querySelector("#customers-table tbody tr") || {dataset: {}}).dataset.id === %q`, pool[0]))
		checkRows("the public pool", pool)

		// Claiming a pool customer: the page offers Claim on the pool
		// customers of others, and the proxy lets the claim through.
		claimable := eval[[]string](b, `[...document.querySelectorAll("#customers-table tbody tr")].filter(tr => tr.querySelector(".claim-customer")).map(tr => tr.dataset.id)`)
		var wantClaimable []string
		for _, c := range d.CRM.Data().Customers {
			if slices.Contains(pool, fmt.Sprint(c.ID)) && c.OwnerID != "zhang" {
				wantClaimable = append(wantClaimable, fmt.Sprint(c.ID))
			}
		}
		if len(claimable) == 0 || !slices.Equal(claimable, wantClaimable) {
			t.Fatalf("the page offers Claim on customers %v; the pool customers of others shown are %v", claimable, wantClaimable)
		}
		b.do("clicking Claim on customer "+claimable[0], chromedp.Click(`#customers-table tbody tr[data-id="`+claimable[0]+`"] .claim-customer`))
		b.waitFor("the page says the claim went through", `document.getElementById("message").textContent.includes("You now own customer `+claimable[0]+`")`)
		if id, _ := strconv.Atoi(claimable[0]); d.CRM.Data().Customers[id-1].OwnerID != "zhang" {
			t.Errorf("customer %d was claimed on the page but the CRM's owner is %q", id, d.CRM.Data().Customers[id-1].OwnerID)
		}

		// The export.
		b.do("clicking Export CSV", chromedp.Click(chromedp.ID("export")))
		b.waitFor("the page shows the answer to the export", `!document.getElementById("message").hidden`)
		msg := eval[string](b, `document.getElementById("message").textContent`)
		if !strings.Contains(msg, "403") || !strings.Contains(msg, "customers.export") {
			t.Errorf("the export's refusal on the page is %q; want the 403 and the rule customers.export", msg)
		}

		// Logout.
		cookies, err := chromedp.Call(b.ctx, network.GetCookies, network.GetCookiesParams{URLs: []string{d.URL + "/"}})
		if err != nil {
			t.Fatal(err)
		}
		var before []string
		for _, c := range cookies.Cookies {
			before = append(before, c.Name+"="+c.Value)
		}
		if len(before) == 0 {
			t.Fatal("the browser holds no cookie for the guard while signed in")
		}
		b.do("clicking Sign out", chromedp.Click(chromedp.ID("logout")))
		b.finishLogout()
		b.onSignInPage()

		req, _ := http.NewRequest("GET", d.URL+"/api/customers", nil)
		req.Header.Set("Accept", "application/json")
		req.Header.Set("Cookie", strings.Join(before, "; "))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("the session cookies from before the logout, replayed: status %d, want 401", resp.StatusCode)
		}
		b.do("opening the guard's health page", chromedp.Navigate(d.URL+"/healthz"))
		status := eval[int](b, `fetch("/api/customers", {headers: {Accept: "application/json"}}).then(r => r.status)`)
		if status != http.StatusUnauthorized {
			t.Errorf("an API call from the page after logout: status %d, want 401", status)
		}
		b.do("opening the CRM again", chromedp.Navigate(d.URL+"/"))
		b.onSignInPage() // a new sign-in, not a silent single sign-on
	})

	t.Run("the guard's own sign-out page, opened by address, signs out at the guard and the provider", func(t *testing.T) {
		b := newBrowser(t, d)
		b.do("opening the CRM", chromedp.Navigate(d.URL+"/"))
		b.signIn("wang", time.Now())
		b.onCRM()
		b.do("opening the sign-out page", chromedp.Navigate(d.URL+"/.crmguard/logout"))
		b.finishLogout()
		b.onSignInPage()
		b.do("opening the CRM again", chromedp.Navigate(d.URL+"/"))
		b.onSignInPage() // the provider's session ended too: no silent sign-in
	})

	t.Run("customer service tries to change a deal's stage and the page shows the proxy's refusal", func(t *testing.T) {
		b := newBrowser(t, d)
		b.do("opening the CRM", chromedp.Navigate(d.URL+"/"))
		b.signIn("li", time.Now())
		b.onCRM()
		eval[chromedp.Void](b, `location.hash = "#deals"`)
		b.waitFor("the deals are loaded", `document.getElementById("deals-table")?.dataset.loaded === "true"`)
		type deal struct {
			ID    string `json:"id"`
			Stage string `json:"stage"`
		}
		first := eval[deal](b, `(() => { const tr = document.querySelector("#deals-table tbody tr");
			return {id: tr.dataset.id, stage: tr.querySelector(".col-stage").textContent}; })()`)
		newStage := "won"
		if first.Stage == "won" {
			newStage = "lost"
		}
		b.do("editing the first deal's stage",
			chromedp.Click(chromedp.CSS("#deals-table tbody tr:first-child .edit-deal")),
			chromedp.WaitVisible(chromedp.ID("deal-form")),
			chromedp.SetValue(chromedp.ID("deal-stage"), newStage),
			chromedp.Click(chromedp.ID("deal-save")),
		)
		b.waitFor("the page shows the answer", `document.getElementById("deal-result").textContent !== ""`)
		res := eval[string](b, `document.getElementById("deal-result").className + ": " + document.getElementById("deal-result").textContent`)
		if !strings.HasPrefix(res, "error: Refused (403)") || !strings.Contains(res, "stage") || !strings.Contains(res, "deals.update") {
			t.Errorf("the page shows %q; want the proxy's 403 naming the field stage and the rule deals.update", res)
		}
		id, err := strconv.Atoi(first.ID)
		if err != nil {
			t.Fatalf("the first deal row's id %q is not a number", first.ID)
		}
		if got := d.CRM.Data().Deals[id-1].Stage; got != first.Stage {
			t.Errorf("the CRM's deal %d has stage %q after the refusal, want %q unchanged", id, got, first.Stage)
		}

		// A change service may make goes through, and the CRM knows who made it.
		b.do("changing only the next step",
			chromedp.SetValue(chromedp.ID("deal-stage"), first.Stage),
			chromedp.SetValue(chromedp.ID("deal-next-step"), "call back after the repair"),
			chromedp.Click(chromedp.ID("deal-save")),
		)
		b.waitFor("the page shows the save", `document.getElementById("deal-result").textContent.startsWith("Saved deal")`)
		got := d.CRM.Data().Deals[id-1]
		if got.NextStep != "call back after the repair" || got.UpdatedBy != "li" || got.Stage != first.Stage {
			t.Errorf("the CRM's deal after the allowed change: next step %q by %q, stage %q", got.NextStep, got.UpdatedBy, got.Stage)
		}
	})

	t.Run("compliance must sign in again before the ID numbers appear", func(t *testing.T) {
		b := newBrowser(t, d)
		b.do("opening the CRM", chromedp.Navigate(d.URL+"/"))
		signedIn := time.Now()
		b.signIn("qian", signedIn)
		b.onCRM()
		rows := eval[[]row](b, rowsJS)
		if len(rows) == 0 {
			t.Fatal("compliance sees no customers")
		}
		for _, r := range rows {
			if !maskedIDCardRe.MatchString(r.IDCard) {
				t.Errorf("customer %s: the list shows ID number %q unmasked", r.ID, r.IDCard)
			}
		}
		b.do("opening the first customer", chromedp.Click(chromedp.CSS("#customers-table tbody tr:first-child .open-customer")))
		b.waitFor("the customer's details show", `!!document.getElementById("show-sensitive")`)

		// The step-up age is a wall-clock rule: let the sign-in grow older
		// than it (the rule file's 5 minutes are stepUpAge here).
		time.Sleep(time.Until(signedIn.Add(stepUpAge + 1500*time.Millisecond)))
		b.do("asking for the ID number", chromedp.Click(chromedp.ID("show-sensitive")))
		b.onSignInPage() // the guard sent the browser to sign in again
		// The code of the previous sign-in cannot be used twice; the
		// provider accepts the next step's code.
		b.signIn("qian", time.Now().Add(30*time.Second))
		b.waitFor("the ID number page has loaded", `document.getElementById("sensitive")?.dataset.loaded === "true"`)
		id, err := strconv.Atoi(rows[0].ID)
		if err != nil {
			t.Fatalf("the first customer row's id %q is not a number", rows[0].ID)
		}
		c := d.CRM.Data().Customers[id-1]
		if got := eval[string](b, `document.getElementById("s-id_card").textContent`); got != c.IDCard {
			t.Errorf("after signing in again the page shows ID number %q, want %q", got, c.IDCard)
		}
		if got := eval[string](b, `document.getElementById("s-bank_account").textContent`); got != c.BankAccount {
			t.Errorf("after signing in again the page shows bank account %q, want %q", got, c.BankAccount)
		}
	})
}

// finishLogout follows the logout to its end: when the guard asks to
// confirm (logout is a POST with a CSRF token), it presses the button.
func (b *browser) finishLogout() {
	b.t.Helper()
	b.waitFor("the logout is answered", fmt.Sprintf(
		`document.readyState === "complete" && (location.href.startsWith(%q) || (location.href.startsWith(%q) && !!document.querySelector("form")))`,
		b.d.Issuer, b.d.URL+"/.crmguard/"))
	if !strings.HasPrefix(b.location(), b.d.URL+"/.crmguard/") {
		return
	}
	// Record Content-Security-Policy violations: a policy that blocks the
	// form's redirect to the provider leaves the browser on this page.
	eval[chromedp.Void](b, `window.__csp = []; document.addEventListener("securitypolicyviolation",
		e => window.__csp.push(e.violatedDirective + " blocked " + e.blockedURI))`)
	b.do("confirming the logout", chromedp.Click(chromedp.CSS(`form button, form input[type="submit"]`)))
	b.waitForOrExplain("the logout leaves the guard for the provider",
		fmt.Sprintf(`!location.href.startsWith(%q)`, b.d.URL+"/.crmguard/"),
		`"still on " + location.href + "; CSP violations: " + JSON.stringify(window.__csp || [])`)
}

// TestBrowserApprovalAndBreakGlass walks both workflows in real headless
// Chromium through the demo stack. The guard's pages are used as a
// browser without scripts uses them: links are followed and forms posted.
// zhang asks for an export with a purpose from the refusal; wang approves
// after signing in again with his second factor; zhou approves; zhang
// downloads once and is refused the second time. li starts the
// complaint elevation with a reason, sees phones, ends it; qian reviews it.
func TestBrowserApprovalAndBreakGlass(t *testing.T) {
	chromiumPath(t) // fail or skip before starting anything
	const approverAge = 8 * time.Second
	d := startDemo(t, rulesForWorkflows(t, approverAge, false))
	text := func(b *browser, id string) string {
		return eval[string](b, fmt.Sprintf(`document.getElementById(%q)?.textContent ?? ""`, id))
	}

	zhang := newBrowser(t, d)
	zhang.do("opening the CRM", chromedp.Navigate(d.URL+"/"))
	zhang.signIn("zhang", time.Now())
	zhang.onCRM()
	zhang.do("clicking Export CSV", chromedp.Click(chromedp.ID("export")))
	zhang.waitFor("the refusal offers to ask for approval", `!!document.getElementById("ask-approval")`)
	if msg := text(zhang, "message"); !strings.Contains(msg, "needs approval") {
		t.Errorf("the export's refusal says %q", msg)
	}
	zhang.do("following Ask for approval", chromedp.Click(chromedp.ID("ask-approval")))
	zhang.waitFor("the request form shows the export", `document.getElementById("path")?.value === "/api/customers/export"`)
	zhang.do("stating the purpose and sending the form",
		chromedp.SendKeys(chromedp.ID("purpose"), "visit plan for the east team"),
		chromedp.Click(chromedp.ID("submit")))
	zhang.waitFor("the request's page says it waits", `document.getElementById("status")?.textContent === "waiting for approval"`)
	page := zhang.location()
	if !strings.HasPrefix(page, d.URL+"/.crmguard/approvals/ap-") {
		t.Fatalf("after sending the form zhang is at %s", page)
	}

	wang := newBrowser(t, d)
	wang.do("opening the approvals", chromedp.Navigate(d.URL+"/.crmguard/approvals"))
	wang.signIn("wang", time.Now())
	signedIn := time.Now()
	wang.waitFor("zhang's request waits for wang", `!!document.querySelector("#waiting a")`)
	wang.do("opening the request", chromedp.Click(chromedp.CSS(`#waiting a`)))
	wang.waitFor("the request's page offers to approve", `!!document.getElementById("approve")`)
	// The approver's MFA age is a wall-clock rule: let the sign-in grow
	// older than it (10 minutes in the file, approverAge here).
	time.Sleep(time.Until(signedIn.Add(approverAge + 1500*time.Millisecond)))
	wang.do("approving with a note", chromedp.SendKeys(chromedp.ID("note"), "fine for the visit plan"), chromedp.Click(chromedp.ID("approve")))
	// The guard sent wang to sign in again; a code is accepted once, so
	// the next step's code.
	wang.signIn("wang", time.Now().Add(30*time.Second))
	wang.waitFor("wang is back on the request's page", fmt.Sprintf(`location.href === %q && !!document.getElementById("approve")`, page))
	wang.do("approving after signing in again", chromedp.Click(chromedp.ID("approve")))
	wang.waitFor("the manager's step is approved", `document.getElementById("step-manager-status")?.textContent === "approved"`)

	zhou := newBrowser(t, d)
	zhou.do("opening the request", chromedp.Navigate(page))
	zhou.signIn("zhou", time.Now())
	zhou.waitFor("the request's page offers to approve", `!!document.getElementById("approve")`)
	zhou.do("approving", chromedp.Click(chromedp.ID("approve")))
	zhou.waitFor("the request is approved", `document.getElementById("status")?.textContent === "approved"`)

	zhang.do("opening the CRM again", chromedp.Navigate(d.URL+"/"))
	zhang.onCRM()
	zhang.do("clicking Export CSV", chromedp.Click(chromedp.ID("export")))
	zhang.waitForOrExplain("the export is downloaded", `document.getElementById("message")?.textContent.startsWith("Export downloaded")`,
		`document.getElementById("message")?.textContent`)
	zhang.do("clicking Export CSV a second time", chromedp.Click(chromedp.ID("export")))
	zhang.waitFor("the second export is refused", `document.getElementById("message")?.textContent.includes("403")`)

	li := newBrowser(t, d)
	li.do("opening temporary access", chromedp.Navigate(d.URL+"/.crmguard/elevations"))
	li.signIn("li", time.Now())
	li.waitFor("the start form shows", `!!document.getElementById("start-form")`)
	li.do("starting the complaint elevation with a reason",
		chromedp.SendKeys(chromedp.ID("reason"), "customer complains about a wrong invoice; call back"),
		chromedp.Click(chromedp.ID("start")))
	li.waitFor("the elevation is active", `document.getElementById("status")?.textContent === "active"`)
	elevation := li.location()
	li.do("opening the CRM", chromedp.Navigate(d.URL+"/"))
	li.onCRM()
	shown := 0
	for _, r := range eval[[]row](li, rowsJS) {
		if maskedInTextRe.MatchString(r.Phone) {
			shown++
		}
	}
	if shown == 0 {
		t.Error("during the elevation li sees no phone unmasked")
	}
	li.do("going back to the elevation", chromedp.Navigate(elevation))
	li.waitFor("the end button shows", `!!document.getElementById("end")`)
	li.do("ending it", chromedp.Click(chromedp.ID("end")))
	li.waitFor("the elevation has ended", `(document.getElementById("status")?.textContent ?? "").startsWith("ended")`)

	qian := newBrowser(t, d)
	qian.do("opening temporary access", chromedp.Navigate(d.URL+"/.crmguard/elevations"))
	qian.signIn("qian", time.Now())
	qian.waitFor("li's elevation waits for review", `!!document.querySelector("#review a")`)
	qian.do("opening it", chromedp.Click(chromedp.CSS(`#review a`)))
	qian.waitFor("the review form shows", `!!document.getElementById("review-form")`)
	qian.do("reviewing with a note",
		chromedp.SendKeys(chromedp.ID("note"), "invoice was wrong; the call was justified"),
		chromedp.Click(chromedp.ID("submit-review")))
	qian.waitFor("the review is recorded", `(document.getElementById("review")?.textContent ?? "").includes("by qian")`)
}

// TestBrowserHandoverApproval asks for a handover approval (转交审批) in a
// real browser: the refused PATCH's link opens the request form, which
// shows the value to be approved; wang approves on the request's page; the
// same PATCH then goes through, while one setting another owner does not.
func TestBrowserHandoverApproval(t *testing.T) {
	chromiumPath(t) // fail or skip before starting anything
	d := startDemo(t, filepath.Join(repoRoot(t), "examples", "rules.yaml"))
	text := func(b *browser, id string) string {
		return eval[string](b, fmt.Sprintf(`document.getElementById(%q)?.textContent ?? ""`, id))
	}
	// patch sends a PATCH from the page as the CRM's script would and
	// returns its status and request_approval link.
	patch := func(b *browser, id, owner string) (int, string) {
		r := eval[struct {
			Status int    `json:"status"`
			Link   string `json:"link"`
		}](b, fmt.Sprintf(`fetch("/api/customers/%s", {method: "PATCH", headers: {"Content-Type": "application/json", "Accept": "application/json"},
			body: JSON.stringify({owner_id: %q})}).then(async r => ({status: r.status, link: (await r.json()).request_approval ?? ""}))`, id, owner))
		return r.Status, r.Link
	}

	zhang := newBrowser(t, d)
	zhang.do("opening the CRM", chromedp.Navigate(d.URL+"/"))
	zhang.signIn("zhang", time.Now())
	zhang.onCRM()
	id := ""
	for _, r := range eval[[]row](zhang, rowsJS) {
		if r.Owner == "zhang" {
			id = r.ID
			break
		}
	}
	if id == "" {
		t.Fatal("zhang's customer list shows no customer of his")
	}
	status, link := patch(zhang, id, "wang")
	if status != 403 || !strings.Contains(link, "values=") {
		t.Fatalf("the handover without approval: %d, link %q", status, link)
	}
	zhang.do("following the link to ask for approval", chromedp.Navigate(d.URL+link))
	zhang.waitFor("the form shows the change and the value", `document.getElementById("values")?.textContent === 'owner_id "wang"'`)
	zhang.do("stating the purpose and sending the form",
		chromedp.SendKeys(chromedp.ID("purpose"), "zhang moves to the west team"),
		chromedp.Click(chromedp.ID("submit")))
	zhang.waitFor("the request's page says it waits", `document.getElementById("status")?.textContent === "waiting for approval"`)
	page := zhang.location()

	wang := newBrowser(t, d)
	wang.do("opening the request", chromedp.Navigate(page))
	wang.signIn("wang", time.Now())
	wang.waitFor("the request's page offers to approve", `!!document.getElementById("approve")`)
	if got := text(wang, "values"); got != `owner_id "wang"` {
		t.Errorf("wang's page shows the change as setting %q", got)
	}
	wang.do("approving", chromedp.Click(chromedp.ID("approve")))
	wang.waitFor("the handover is approved", `document.getElementById("status")?.textContent === "approved"`)

	zhang.do("opening the request again", chromedp.Navigate(page))
	zhang.waitFor("the page says the change may be made", `!!document.getElementById("resend")`)
	// The guard's pages allow no script requests (CSP): back to the CRM.
	zhang.do("opening the CRM again", chromedp.Navigate(d.URL+"/"))
	zhang.onCRM()
	if status, _ := patch(zhang, id, "li"); status != 403 {
		t.Errorf("the approval to hand the customer to wang handed it to li: %d", status)
	}
	if status, _ := patch(zhang, id, "wang"); status != 200 {
		t.Fatalf("the approved handover: %d", status)
	}
	if status, _ := patch(zhang, id, "wang"); status != 403 {
		t.Errorf("the handover went through twice: %d", status)
	}
}
