package caddymodule

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/crmguard/crmguard/caddymodule/authn"
	"github.com/crmguard/crmguard/caddymodule/notify"
	"github.com/crmguard/crmguard/caddymodule/store"
	"github.com/crmguard/crmguard/caddymodule/workflow"
	"github.com/crmguard/crmguard/rules"
)

// wfUser is a signed-in user of the workflow tests.
type wfUser struct {
	roles   []string
	teams   []string
	authAgo time.Duration // how long ago they signed in with MFA
	noMFA   bool
	bearer  bool
}

// wfPeople are the demo's people: zhang (sales, east) and his manager
// wang, zhao (manager of another team), zhou (IT security), wu (a manager
// who is IT security too), li (service), qian (compliance).
var wfPeople = map[string]wfUser{
	"zhang": {roles: []string{"sales"}, teams: []string{"east"}},
	"wang":  {roles: []string{"sales_manager"}, teams: []string{"east"}},
	"zhao":  {roles: []string{"sales_manager"}, teams: []string{"west"}},
	"zhou":  {roles: []string{"it_security"}},
	"wu":    {roles: []string{"sales_manager", "it_security"}, teams: []string{"east"}},
	"li":    {roles: []string{"service"}},
	"qian":  {roles: []string{"compliance"}},
	"sun":   {roles: []string{"service"}},
}

// wfProvider identifies the user named by the X-Test-User header (a
// suffix ":stale" makes the sign-in an hour old, ":nomfa" without MFA,
// ":bearer" a bearer token); each user has one session. It implements
// authn.FormTokens with a token derived from the session.
type wfProvider struct {
	clock func() time.Time
}

func (p *wfProvider) Identify(r *http.Request) (*authn.Identity, error) {
	name, mod, _ := strings.Cut(r.Header.Get("X-Test-User"), ":")
	if _, ok := wfPeople[name]; !ok {
		return nil, nil
	}
	id := &authn.Identity{Subject: name, SessionID: "sess-" + name, Claims: map[string]any{"sub": name, "mod": mod, "sid": "idp-" + name}}
	if mod == "bearer" {
		id.SessionID, id.Bearer = "", true
	}
	return id, nil
}

func (p *wfProvider) Challenge(w http.ResponseWriter, r *http.Request, need authn.Need) error {
	if strings.Contains(r.Header.Get("Accept"), "text/html") {
		// A browser is sent to sign in, coming back to r.
		http.Redirect(w, r, "/.test/login?return="+url.QueryEscape(r.URL.RequestURI()), http.StatusFound)
		return nil
	}
	authn.WriteChallenge(w, r, need)
	return nil
}

func (p *wfProvider) Handle(http.ResponseWriter, *http.Request) (bool, error) { return false, nil }

func (p *wfProvider) ResolveUser(set *rules.Set, id *authn.Identity) (*rules.User, error) {
	u := wfPeople[id.Subject]
	mod, _ := id.Claims["mod"].(string)
	ago := u.authAgo
	if mod == "stale" {
		ago = time.Hour
	}
	teams := make([]any, len(u.teams))
	for i, t := range u.teams {
		teams[i] = t
	}
	return set.UserFromRoles(id.Subject, u.roles, map[string]any{"teams": teams}, !u.noMFA && mod != "nomfa", p.clock().Add(-ago-time.Minute)), nil
}

func (p *wfProvider) FormToken(id *authn.Identity) string {
	if id == nil || id.SessionID == "" {
		return ""
	}
	return "csrf-" + id.SessionID
}

func (p *wfProvider) CheckFormToken(id *authn.Identity, token string) bool {
	return token != "" && token == p.FormToken(id)
}

// wfNotes records notifications.
type wfNotes struct {
	mu     sync.Mutex
	events []notify.Event
}

func (n *wfNotes) Notify(ev notify.Event) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.events = append(n.events, ev)
}

func (n *wfNotes) types() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []string
	for _, e := range n.events {
		out = append(out, e.Type)
	}
	return out
}

// wfClock is a test clock the guard, the store and the workflow share.
type wfClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *wfClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *wfClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// wfEnv is a guard with a workflow on a store, in front of a fake CRM.
type wfEnv struct {
	t     *testing.T
	g     *Guard
	wf    *workflow.Service
	st    store.Store
	sink  *memSink
	notes *wfNotes
	clock *wfClock
	up    *upstream
}

// newWFEnv builds the environment on st (nil: a bbolt file in a
// temporary directory).
func newWFEnv(t *testing.T, st store.Store) *wfEnv {
	t.Helper()
	clock := &wfClock{now: time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)} // a Friday
	if st == nil {
		b, err := store.OpenBolt(filepath.Join(t.TempDir(), "state.db"), store.Options{Now: clock.Now})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = b.Close() })
		st = b
	}
	set, err := rules.LoadFile("testdata/workflow.yaml")
	if err != nil {
		t.Fatal(err)
	}
	e := &wfEnv{t: t, st: st, sink: &memSink{}, notes: &wfNotes{}, clock: clock,
		up: &upstream{header: http.Header{"Content-Type": {"text/csv"}}, body: []byte("id,name,phone\n1,Acme,13812345678\n")}}
	rulesFn := func() *rules.Set { return set }
	e.wf, err = workflow.New(workflow.Options{Store: st, Rules: rulesFn, Notifier: e.notes, Now: clock.Now, SweepEvery: -1,
		Audit: workflowAuditor(e.sink, zap.NewNop(), clock.Now)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.wf.Close() })
	e.g, err = NewGuard(GuardOptions{Rules: rulesFn, Provider: &wfProvider{clock: clock.Now}, Audit: e.sink, Now: clock.Now, Workflow: e.wf})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// do sends a request as user ("" anonymous) and returns the answer and
// the audit event it wrote.
func (e *wfEnv) do(user, method, target string, body any, hdr ...string) (*httptest.ResponseRecorder, AuditEvent) {
	e.t.Helper()
	var rd *bytes.Reader
	ctype := ""
	switch b := body.(type) {
	case nil:
		rd = bytes.NewReader(nil)
	case url.Values:
		rd, ctype = bytes.NewReader([]byte(b.Encode())), "application/x-www-form-urlencoded"
	case string:
		rd, ctype = bytes.NewReader([]byte(b)), "application/json"
	default:
		j, _ := json.Marshal(b)
		rd, ctype = bytes.NewReader(j), "application/json"
	}
	req := httptest.NewRequest(method, target, rd)
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	if user != "" {
		req.Header.Set("X-Test-User", user)
	}
	if ctype == "application/json" {
		req.Header.Set("Origin", "http://example.com") // same origin as httptest's host
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i+1] == "" {
			req.Header.Del(hdr[i])
			continue
		}
		req.Header.Set(hdr[i], hdr[i+1])
	}
	e.sink.mu.Lock()
	n := len(e.sink.events)
	e.sink.mu.Unlock()
	rec := httptest.NewRecorder()
	e.up.got = nil
	if err := e.g.ServeHTTP(rec, req, e.up.handler()); err != nil {
		e.t.Fatalf("ServeHTTP: %v", err)
	}
	e.sink.mu.Lock()
	defer e.sink.mu.Unlock()
	if len(e.sink.events) == n {
		e.t.Fatalf("%s %s wrote no audit event", method, target)
	}
	return rec, e.sink.events[len(e.sink.events)-1]
}

// approval decodes an approval answer.
func approvalOf(t *testing.T, rec *httptest.ResponseRecorder) workflow.Approval {
	t.Helper()
	var a workflow.Approval
	if err := json.Unmarshal(rec.Body.Bytes(), &a); err != nil {
		t.Fatalf("not an approval: %v: %s", err, rec.Body)
	}
	return a
}

func elevationOf(t *testing.T, rec *httptest.ResponseRecorder) workflow.Elevation {
	t.Helper()
	var el workflow.Elevation
	if err := json.Unmarshal(rec.Body.Bytes(), &el); err != nil {
		t.Fatalf("not an elevation: %v: %s", err, rec.Body)
	}
	return el
}

// ask makes zhang ask for the team east export and returns its id.
func (e *wfEnv) ask() string {
	e.t.Helper()
	rec, _ := e.do("zhang", "POST", "/.crmguard/approvals", map[string]string{"method": "GET", "path": exportEast, "purpose": "quarterly review with the east team"})
	if rec.Code != http.StatusCreated {
		e.t.Fatalf("asking: %d %s", rec.Code, rec.Body)
	}
	return approvalOf(e.t, rec).ID
}

// approve makes each user approve id in turn, failing on a refusal.
func (e *wfEnv) approve(id string, users ...string) {
	e.t.Helper()
	for _, u := range users {
		rec, _ := e.do(u, "POST", "/.crmguard/approvals/"+id+"/approve", map[string]string{"note": "ok"})
		if rec.Code != http.StatusOK {
			e.t.Fatalf("%s approving: %d %s", u, rec.Code, rec.Body)
		}
	}
}

const exportEast = "/api/customers/export?team=east"
