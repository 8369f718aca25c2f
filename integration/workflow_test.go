package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/crmguard/crmguard/caddymodule/store/redistest"
	"github.com/crmguard/crmguard/examples/demo"
	"github.com/crmguard/crmguard/examples/devidp"
)

// exportPath is the CRM's customer export, the route that needs the
// approval policy `export` in examples/rules.yaml.
const exportPath = "/api/customers/export"

// rulesForWorkflows copies examples/rules.yaml for the workflow tests: the
// export is open at any hour (the tests must not depend on the day), the
// approvers' sign-in may be approverAge old (10m in the file), and with
// managersApproveIT a sales manager may also approve the IT step (so that
// "nobody approves two steps" can be shown with the demo's users).
func rulesForWorkflows(t *testing.T, approverAge time.Duration, managersApproveIT bool) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "examples", "rules.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	edits := []struct{ old, new string }{
		{"approver_mfa: {max_age: 10m}", "approver_mfa: {max_age: " + approverAge.String() + "}"},
	}
	if managersApproveIT {
		edits = append(edits, struct{ old, new string }{"        approvers: [it_security]\n", "        approvers: [it_security, sales_manager]\n"})
	}
	for _, e := range edits {
		if strings.Count(s, e.old) != 1 {
			t.Fatalf("examples/rules.yaml holds %q %d times, the test expects once", e.old, strings.Count(s, e.old))
		}
		s = strings.Replace(s, e.old, e.new, 1)
	}
	// The export's schedule: drop the route's `when` line.
	re := regexp.MustCompile(`(?m)(  - id: customers\.export\n(?:    .*\n)*?)    when: in_schedule\("business_hours"\)\n`)
	if !re.MatchString(s) {
		t.Fatal("examples/rules.yaml: no business-hours `when` on customers.export to lift")
	}
	s = re.ReplaceAllString(s, "$1")
	p := filepath.Join(t.TempDir(), "rules.yaml")
	if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// sendJSON sends a JSON body as a same-origin page script would.
func sendJSON(t *testing.T, c *http.Client, d *demo.Stack, method, path string, body any) (*http.Response, string) {
	t.Helper()
	var rd *strings.Reader
	if body != nil {
		j, _ := json.Marshal(body)
		rd = strings.NewReader(string(j))
	} else {
		rd = strings.NewReader("")
	}
	req, _ := http.NewRequest(method, d.URL+path, rd)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Origin", d.URL)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp, readAll(t, resp)
}

var csrfRe = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// postPageForm submits a form of the guard's page at pagePath (read for its
// CSRF token) to action, as a browser without JavaScript does.
func postPageForm(t *testing.T, c *http.Client, d *demo.Stack, pagePath, action string, vals url.Values) (*http.Response, string) {
	t.Helper()
	_, page := getHTML(t, c, d.URL+pagePath)
	m := csrfRe.FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("the page %s has no form token:\n%.800s", pagePath, page)
	}
	vals.Set("csrf", m[1])
	req, _ := http.NewRequest("POST", d.URL+action, strings.NewReader(vals.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "text/html")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp, readAll(t, resp)
}

type approvalJSON struct {
	ID       string `json:"id"`
	Status   string `json:"status"`
	UsesLeft int    `json:"uses_left"`
	Steps    []struct {
		Name, Status, By string
	} `json:"steps"`
}

func decodeJSON[T any](t *testing.T, body string) T {
	t.Helper()
	var v T
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		t.Fatalf("not the JSON expected: %v: %.500s", err, body)
	}
	return v
}

// askForExport makes c's user ask for the export grant and returns its id.
func askForExport(t *testing.T, c *http.Client, d *demo.Stack, target string) string {
	t.Helper()
	resp, body := sendJSON(t, c, d, "POST", "/.crmguard/approvals", map[string]string{"method": "GET", "path": target, "purpose": "visit plan for the east team"})
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("asking for approval: %d %s", resp.StatusCode, body)
	}
	return decodeJSON[approvalJSON](t, body).ID
}

// approveJSON makes c's user approve request id; it returns the status.
func approveJSON(t *testing.T, c *http.Client, d *demo.Stack, id string) (int, string) {
	t.Helper()
	resp, body := sendJSON(t, c, d, "POST", "/.crmguard/approvals/"+id+"/approve", map[string]string{"note": "ok"})
	return resp.StatusCode, body
}

// TestExportApprovalEndToEnd runs the approval of an export through the
// demo stack with the real development provider: zhang asks with a
// purpose, every refusal the policy demands is met, wang approves after
// signing in again with his second factor, zhou approves, zhang downloads
// once and a second download is refused.
func TestExportApprovalEndToEnd(t *testing.T) {
	const approverAge = 8 * time.Second
	d := startDemo(t, rulesForWorkflows(t, approverAge, true))
	zhang, wang, zhou, li := browserLike(t), browserLike(t), browserLike(t), browserLike(t)
	signInHTTP(t, zhang, d, "zhang", "/", time.Now())
	signInHTTP(t, li, d, "li", "/", time.Now())

	resp, body := apiGet(t, zhang, d.URL+exportPath)
	refusal := decodeJSON[struct {
		Rule     string `json:"rule"`
		Reason   string `json:"reason"`
		Approval string `json:"request_approval"`
	}](t, body)
	if resp.StatusCode != 403 || refusal.Approval != "/.crmguard/approvals/new?method=GET&path="+url.QueryEscape(exportPath) || !strings.Contains(refusal.Reason, "needs approval") {
		t.Fatalf("the export without approval: %d %s", resp.StatusCode, body)
	}
	resp, body = sendJSON(t, zhang, d, "POST", "/.crmguard/approvals", map[string]string{"method": "GET", "path": exportPath})
	if resp.StatusCode != 400 || !strings.Contains(body, "purpose") {
		t.Fatalf("asking without a purpose: %d %s", resp.StatusCode, body)
	}
	id := askForExport(t, zhang, d, exportPath)

	for _, c := range []struct {
		name string
		c    *http.Client
		says string
	}{
		{"the requester may not approve their own request", zhang, "own request"},
		{"customer service may not approve an export", li, "may not approve"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if status, body := approveJSON(t, c.c, d, id); status != 403 || !strings.Contains(body, c.says) {
				t.Fatalf("%d %s", status, body)
			}
		})
	}

	t.Run("IT security may not approve before the manager", func(t *testing.T) {
		signInHTTP(t, zhou, d, "zhou", "/.crmguard/approvals", time.Now())
		if status, body := approveJSON(t, zhou, d, id); status != 403 {
			t.Fatalf("%d %s", status, body)
		}
	})

	t.Run("the manager whose sign-in grew too old is asked to sign in again, then approves", func(t *testing.T) {
		signInHTTP(t, wang, d, "wang", "/.crmguard/approvals", time.Now())
		signedIn := time.Now()
		_, list := apiGet(t, wang, d.URL+"/.crmguard/approvals")
		if !strings.Contains(list, id) {
			t.Fatalf("the request is not in wang's queue: %s", list)
		}
		// The approver's MFA age is a wall-clock rule: let the sign-in
		// grow older than it (10 minutes in the file, approverAge here).
		time.Sleep(time.Until(signedIn.Add(approverAge + 1500*time.Millisecond)))
		resp, body := sendJSON(t, wang, d, "POST", "/.crmguard/approvals/"+id+"/approve", map[string]string{})
		if resp.StatusCode != 401 || !strings.Contains(resp.Header.Get("WWW-Authenticate"), "max_age=8") {
			t.Fatalf("an API client with a stale sign-in: %d %q %s", resp.StatusCode, resp.Header.Get("WWW-Authenticate"), body)
		}
		// As a browser: the form post sends wang to sign in again and back
		// to the request's page.
		page := "/.crmguard/approvals/" + id
		resp, body = postPageForm(t, wang, d, page, page+"/approve", url.Values{"note": {"for the visit plan"}})
		if !strings.HasPrefix(resp.Request.URL.String(), d.Issuer+"/login") {
			t.Fatalf("the stale approver was not sent to sign in: %s %d", resp.Request.URL, resp.StatusCode)
		}
		// A code may be used once: the next step's code (the provider
		// accepts one step either side of now).
		u, _ := d.User("wang")
		resp, body = completeSignIn(t, wang, d.Issuer, u, body, time.Now().Add(30*time.Second))
		if resp.Request.URL.String() != d.URL+page {
			t.Fatalf("after signing in again wang is at %s, not back on the request's page:\n%.500s", resp.Request.URL, body)
		}
		resp, body = postPageForm(t, wang, d, page, page+"/approve", url.Values{"note": {"for the visit plan"}})
		if resp.StatusCode != 200 || resp.Request.URL.Path != page || !strings.Contains(body, "for the visit plan") {
			t.Fatalf("wang's approval: %d at %s:\n%.800s", resp.StatusCode, resp.Request.URL, body)
		}
	})

	t.Run("nobody approves two steps of one request", func(t *testing.T) {
		if status, body := approveJSON(t, wang, d, id); status != 403 || !strings.Contains(body, "another step") {
			t.Fatalf("%d %s", status, body)
		}
	})

	t.Run("IT security approves the second step", func(t *testing.T) {
		// A fresh sign-in (a new browser), with the next step's code.
		fresh := browserLike(t)
		signInHTTP(t, fresh, d, "zhou", "/.crmguard/approvals", time.Now().Add(30*time.Second))
		status, body := approveJSON(t, fresh, d, id)
		if a := decodeJSON[approvalJSON](t, body); status != 200 || a.Status != "approved" || a.UsesLeft != 1 {
			t.Fatalf("%d %s", status, body)
		}
	})

	t.Run("the grant does not allow another query", func(t *testing.T) {
		if resp, body := apiGet(t, zhang, d.URL+exportPath+"?limit=5"); resp.StatusCode != 403 {
			t.Fatalf("%d %.300s", resp.StatusCode, body)
		}
	})

	t.Run("zhang downloads once; a second download is refused", func(t *testing.T) {
		req, _ := http.NewRequest("GET", d.URL+exportPath, nil)
		req.Header.Set("Accept", "text/csv, application/json")
		resp, err := zhang.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		csv := readAll(t, resp)
		if resp.StatusCode != 200 || !strings.Contains(csv, "id,name,company,phone") {
			t.Fatalf("the approved export: %d %.300s", resp.StatusCode, csv)
		}
		if resp, body := apiGet(t, zhang, d.URL+exportPath); resp.StatusCode != 403 {
			t.Fatalf("the second download: %d %.300s", resp.StatusCode, body)
		}
		_, body := apiGet(t, zhang, d.URL+"/.crmguard/approvals/"+id)
		if a := decodeJSON[approvalJSON](t, body); a.Status != "used" || a.UsesLeft != 0 {
			t.Errorf("the grant after its use: %s", body)
		}
	})
}

type elevationJSON struct {
	ID        string `json:"id"`
	Status    string `json:"status"`
	EndReason string `json:"end_reason"`
	Review    *struct {
		By, Note string
	} `json:"review"`
}

// phonesShown counts the customers of the first page whose phone li sees
// unmasked.
func phonesShown(t *testing.T, c *http.Client, d *demo.Stack) int {
	t.Helper()
	resp, body := apiGet(t, c, d.URL+"/api/customers?limit=20")
	if resp.StatusCode != 200 {
		t.Fatalf("the customer list: %d %.300s", resp.StatusCode, body)
	}
	env := decodeJSON[struct {
		List []map[string]any `json:"list"`
	}](t, body)
	n := 0
	for _, r := range env.List {
		if p, _ := r["phone"].(string); p != "" && !maskedPhoneRe.MatchString(p) {
			n++
		}
	}
	if len(env.List) == 0 {
		t.Fatal("the customer list is empty: the check would prove nothing")
	}
	return n
}

// TestBreakGlassEndToEnd: li starts a 30-minute elevation with a reason
// and sees customers' phones; it ends when she signs out; qian reviews it.
func TestBreakGlassEndToEnd(t *testing.T) {
	d := startDemo(t, filepath.Join(repoRoot(t), "examples", "rules.yaml"))
	li, qian := browserLike(t), browserLike(t)
	signInHTTP(t, li, d, "li", "/", time.Now())
	if n := phonesShown(t, li, d); n != 0 {
		t.Fatalf("customer service sees %d phones before any elevation", n)
	}
	resp, body := sendJSON(t, li, d, "POST", "/.crmguard/elevations", map[string]string{"elevation": "complaint", "reason": "customer complains about a wrong invoice; call back", "duration": "30m"})
	el := decodeJSON[elevationJSON](t, body)
	if resp.StatusCode != 201 || el.Status != "active" {
		t.Fatalf("starting the elevation: %d %s", resp.StatusCode, body)
	}
	if n := phonesShown(t, li, d); n == 0 {
		t.Fatal("the elevation shows no phone")
	}
	logout(t, li, d)
	signInHTTP(t, li, d, "li", "/", time.Now().Add(30*time.Second))
	if n := phonesShown(t, li, d); n != 0 {
		t.Fatalf("after signing out and in again li still sees %d phones", n)
	}
	_, body = apiGet(t, li, d.URL+"/.crmguard/elevations/"+el.ID)
	if got := decodeJSON[elevationJSON](t, body); got.Status != "ended" || got.EndReason != "signed out" {
		t.Fatalf("the elevation after the sign-out: %s", body)
	}

	signInHTTP(t, qian, d, "qian", "/", time.Now())
	_, body = apiGet(t, qian, d.URL+"/.crmguard/elevations")
	if !strings.Contains(body, el.ID) {
		t.Fatalf("qian's review queue lacks the elevation: %s", body)
	}
	resp, body = sendJSON(t, qian, d, "POST", "/.crmguard/elevations/"+el.ID+"/review", map[string]string{"note": "invoice 2026-118 was wrong; call justified"})
	if got := decodeJSON[elevationJSON](t, body); resp.StatusCode != 200 || got.Review == nil || got.Review.By != "qian" {
		t.Fatalf("the review: %d %s", resp.StatusCode, body)
	}
}

// startDemoOn is startDemo with the guard's state in store (a redis://
// or unix:// URL that several stacks share).
func startDemoOn(t *testing.T, rules, store string) *demo.Stack {
	t.Helper()
	tmp := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d, err := demo.Start(ctx, demo.Config{
		Caddyfile: demoCaddyfile(t), Rules: rules, Listen: "localhost:0", SessionStore: store,
		StorageDir: filepath.Join(tmp, "caddy"), Admin: "off", Log: testLogWriter{t},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Stop)
	return d
}

// instanceEnv carries a second guard process's settings (JSON).
const instanceEnv = "CRMGUARD_TEST_GUARD_INSTANCE"

// instanceSettings are what the second guard process runs.
type instanceSettings struct {
	Caddyfile, Rules, Store, Dir string
}

// TestHelperGuardProcess is not a test of its own: run by
// startDemoProcess as a separate process (Caddy runs one configuration
// per process), it starts a demo stack, prints its addresses and runs
// until its standard input closes.
func TestHelperGuardProcess(t *testing.T) {
	raw := os.Getenv(instanceEnv)
	if raw == "" {
		t.Skip("the second guard process of TestAOneUseGrantIsUsedOnceAcrossTwoInstances; not run alone")
	}
	var in instanceSettings
	if err := json.Unmarshal([]byte(raw), &in); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d, err := demo.Start(ctx, demo.Config{Caddyfile: in.Caddyfile, Rules: in.Rules, Listen: "localhost:0", SessionStore: in.Store,
		StorageDir: filepath.Join(in.Dir, "caddy"), Admin: "off", Log: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Stop()
	fmt.Printf("\nREADY %s %s\n", d.URL, d.Issuer)
	_, _ = io.Copy(io.Discard, os.Stdin)
}

// startDemoProcess runs a demo stack with the guard's state in store in a
// separate process (this test binary, running TestHelperGuardProcess) and
// returns what a client needs of it.
func startDemoProcess(t *testing.T, rules, store string) *demo.Stack {
	t.Helper()
	dir := t.TempDir()
	settings, _ := json.Marshal(instanceSettings{Caddyfile: demoCaddyfile(t), Rules: rules, Store: store, Dir: dir})
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperGuardProcess$", "-test.v")
	cmd.Env = append(os.Environ(), instanceEnv+"="+string(settings), "HOME="+dir,
		"XDG_DATA_HOME="+filepath.Join(dir, "data"), "XDG_CONFIG_HOME="+filepath.Join(dir, "config"))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = testLogWriter{t}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = stdin.Close()
		if err := cmd.Wait(); err != nil {
			t.Errorf("the second guard process: %v", err)
		}
	})
	ready := make(chan []string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if f := strings.Fields(sc.Text()); len(f) == 3 && f[0] == "READY" {
				ready <- f[1:]
			}
		}
		close(ready)
	}()
	select {
	case f, ok := <-ready:
		if !ok {
			t.Fatal("the second guard process ended before it was ready")
		}
		return &demo.Stack{URL: f[0], Issuer: f[1], Users: devidp.DemoUsers(demo.DefaultTOTPSeed)}
	case <-time.After(60 * time.Second):
		t.Fatal("the second guard process was not ready within 60s")
	}
	return nil
}

// TestAOneUseGrantIsUsedOnceAcrossTwoInstances runs two guards (each with
// its own CRM and provider, the second in its own process) on one Redis:
// a grant approved on one is seen and used by the other, and of
// concurrent exports through both exactly one goes through.
func TestAOneUseGrantIsUsedOnceAcrossTwoInstances(t *testing.T) {
	redis := redistest.Start(t)
	tmp := t.TempDir()
	t.Setenv("XDG_DATA_HOME", filepath.Join(tmp, "data"))
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(tmp, "config"))
	t.Setenv("HOME", tmp)
	rules := rulesForWorkflows(t, 10*time.Minute, false)
	a, b := startDemoOn(t, rules, redis), startDemoProcess(t, rules, redis)
	zhangA, zhangB, wang, zhou := browserLike(t), browserLike(t), browserLike(t), browserLike(t)
	signInHTTP(t, zhangA, a, "zhang", "/", time.Now())
	signInHTTP(t, zhangB, b, "zhang", "/", time.Now())
	signInHTTP(t, wang, a, "wang", "/", time.Now())
	signInHTTP(t, zhou, a, "zhou", "/", time.Now())
	grant := func(target string) {
		t.Helper()
		id := askForExport(t, zhangA, a, target)
		for _, c := range []*http.Client{wang, zhou} {
			if status, body := approveJSON(t, c, a, id); status != 200 {
				t.Fatalf("approving on instance A: %d %s", status, body)
			}
		}
	}

	t.Run("a grant approved on one instance is used on the other, and then nowhere", func(t *testing.T) {
		grant(exportPath + "?limit=3")
		if resp, body := apiGet(t, zhangB, b.URL+exportPath+"?limit=3"); resp.StatusCode != 200 {
			t.Fatalf("instance B: %d %.300s", resp.StatusCode, body)
		}
		if resp, _ := apiGet(t, zhangA, a.URL+exportPath+"?limit=3"); resp.StatusCode != 403 {
			t.Fatalf("instance A after B used the grant: %d", resp.StatusCode)
		}
	})

	t.Run("of concurrent exports through both instances exactly one goes through", func(t *testing.T) {
		grant(exportPath)
		const perInstance = 8
		ok := allowedAtOnce(t, 2*perInstance, func(i int) (*http.Response, error) {
			c, d := zhangA, a
			if i%2 == 1 {
				c, d = zhangB, b
			}
			req, _ := http.NewRequest("GET", d.URL+exportPath, nil)
			req.Header.Set("Accept", "application/json")
			return c.Do(req)
		})
		if ok != 1 {
			t.Fatalf("%d of %d concurrent exports went through a one-use grant, want exactly 1", ok, 2*perInstance)
		}
	})
}
