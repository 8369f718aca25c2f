package rulescli

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/crmguard/crmguard/caddymodule"
	"github.com/crmguard/crmguard/caddymodule/authn"
	"github.com/crmguard/crmguard/rules"
)

// DefaultTestHashKey is the `hash` key the test runner uses when none is
// given, so rule files that hash fields can be tested without a secret.
const DefaultTestHashKey = "crmguard rules test key"

// loadRules loads a rule file with the `hash` key given, or
// DefaultTestHashKey: the tools judge and explain a file, they hash
// nothing a person reads as evidence.
func loadRules(file, hashKey string) (*rules.Set, error) {
	if hashKey == "" {
		hashKey = DefaultTestHashKey
	}
	return rules.LoadFile(file, rules.WithHashKey([]byte(hashKey)))
}

// Options configure a test run.
type Options struct {
	// HashKey is the key of the `hash` action (default DefaultTestHashKey).
	HashKey string
	// MaxBody is the handler's max_body (default caddymodule.DefaultMaxBody).
	MaxBody int64
}

// Result is the outcome of one case.
type Result struct {
	// File is the case file.
	File string
	// Case is the case's name.
	Case string
	// Failures say what differed; empty means the case passed.
	Failures []string
}

// Passed reports whether the case passed.
func (r Result) Passed() bool { return len(r.Failures) == 0 }

// String is the one-line report of a failed case.
func (r Result) String() string {
	if r.Passed() {
		return fmt.Sprintf("ok   %s: %s", r.File, r.Case)
	}
	return fmt.Sprintf("FAIL %s: %s: %s", r.File, r.Case, strings.Join(r.Failures, "; "))
}

// RunFile loads a case file and its rule file and runs every case. An
// error means the files could not be loaded (no case ran).
func RunFile(path string, opt Options) ([]Result, error) {
	suite, err := LoadSuite(path)
	if err != nil {
		return nil, err
	}
	set, err := loadRules(suite.Rules, opt.HashKey)
	if err != nil {
		return nil, fmt.Errorf("rulescli: %s: %w", path, err)
	}
	results := make([]Result, 0, len(suite.Cases))
	for _, c := range suite.Cases {
		fails := RunCase(set, c, opt)
		results = append(results, Result{File: path, Case: c.Name, Failures: fails})
	}
	return results, nil
}

// captureSink keeps the audit event of one request.
type captureSink struct {
	mu sync.Mutex
	ev *caddymodule.AuditEvent
}

// Write keeps a copy of ev.
func (s *captureSink) Write(ev *caddymodule.AuditEvent) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	cp := *ev
	s.ev = &cp
	return nil
}

// RunCase runs one case against set through the handler logic and returns
// what differed from the expectation.
func RunCase(set *rules.Set, c Case, opt Options) []string {
	a, fails := serveCase(set, c, opt)
	if fails != nil {
		return fails
	}
	fails = compare(c.Expect, a.rec, a.ev, a.upstream)
	for _, uri := range a.unanswered {
		fails = append(fails, fmt.Sprintf("the guard fetched the stored record (GET %s) for the route's target, but the case has no target_upstream (or target_upstreams entry) to answer it", uri))
	}
	if want := c.Expect.TargetFetched; want != nil && *want != (a.target != nil) {
		fails = append(fails, fmt.Sprintf("target_fetched: want %v, got %v", *want, a.target != nil))
	}
	return fails
}

// caseAnswer is what the handler did with a case's request.
type caseAnswer struct {
	// rec is the client's answer.
	rec *httptest.ResponseRecorder
	// ev is the audit event (nil when none was written).
	ev *caddymodule.AuditEvent
	// upstream and target are the requests the fake CRM got: the client's
	// and the guard's (first) fetch of a target record (nil when not made).
	upstream, target *http.Request
	// unanswered are the fetches the case gave no answer for.
	unanswered []string
}

// serveCase serves a case's request through the handler with the case's
// user and CRM. The failures say why the request could not be made.
func serveCase(set *rules.Set, c Case, opt Options) (*caseAnswer, []string) {
	now := time.Now()
	if c.Now != "" {
		t, err := time.Parse(time.RFC3339, c.Now)
		if err != nil {
			return nil, []string{fmt.Sprintf("now %q is not RFC 3339: %v", c.Now, err)}
		}
		now = t
	}
	sink := &captureSink{}
	var provider authn.Provider
	if c.User != nil {
		provider = &fixedIdentity{user: c.User, now: now, elevation: c.Elevation}
	} else if c.Elevation != nil {
		return nil, []string{"elevation: the case has no user"}
	}
	grants, err := newCaseGrants(c.Grants, c.User, now)
	if err != nil {
		return nil, []string{err.Error()}
	}
	var user *rules.User
	if p, ok := provider.(*fixedIdentity); ok {
		if user, err = p.ResolveUser(set, nil); err != nil {
			user = nil // the guard refuses the case's request and says why
		}
	}
	cs, err := newCaseStore(set, c, user, now)
	if err != nil {
		return nil, []string{err.Error()}
	}
	defer cs.Close()
	gopt := caddymodule.GuardOptions{
		Rules:    func() *rules.Set { return set },
		Provider: provider,
		Audit:    sink,
		MaxBody:  opt.MaxBody,
		Now:      func() time.Time { return now },
		Grants:   grants,
	}
	if cs != nil {
		gopt.Store = cs
	}
	guard, err := caddymodule.NewGuard(gopt)
	if err != nil {
		return nil, []string{err.Error()}
	}

	req, err := buildRequest(c.Request)
	if err != nil {
		return nil, []string{err.Error()}
	}
	up := c.Upstream
	if up == nil {
		up = &Upstream{}
	}
	upBody, err := bodyBytes(up.Body, up.Raw)
	if err != nil {
		return nil, []string{"upstream: " + err.Error()}
	}
	var targetBody []byte
	if c.TargetUpstream != nil {
		if targetBody, err = bodyBytes(c.TargetUpstream.Body, c.TargetUpstream.Raw); err != nil {
			return nil, []string{"target_upstream: " + err.Error()}
		}
	}
	targetBodies := map[string][]byte{}
	for uri, tu := range c.TargetUpstreams {
		if targetBodies[uri], err = bodyBytes(tu.Body, tu.Raw); err != nil {
			return nil, []string{fmt.Sprintf("target_upstreams[%q]: %v", uri, err)}
		}
	}
	// The fake CRM tells the client's request (upstream, counted by
	// upstream_called) from the guard's fetches of target records
	// (target_upstream / target_upstreams, counted by target_fetched),
	// which a bulk write makes concurrently.
	var upstreamReq, targetReq *http.Request
	var unanswered []string
	var mu sync.Mutex
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		if caddymodule.IsTargetFetch(r) {
			uri := r.URL.RequestURI()
			mu.Lock()
			if targetReq == nil {
				targetReq = r.Clone(r.Context())
			}
			mu.Unlock()
			if tu, ok := c.TargetUpstreams[uri]; ok {
				answerCase(w, r, tu, targetBodies[uri])
				return nil
			}
			if c.TargetUpstream == nil {
				mu.Lock()
				unanswered = append(unanswered, uri)
				mu.Unlock()
				return caddyhttp.Error(http.StatusBadGateway, errNoTargetUpstream)
			}
			answerCase(w, r, c.TargetUpstream, targetBody)
			return nil
		}
		upstreamReq = r.Clone(r.Context())
		answerCase(w, r, up, upBody)
		return nil
	})

	rec := httptest.NewRecorder()
	if err := guard.ServeHTTP(rec, req, next); err != nil {
		status := http.StatusInternalServerError
		var he caddyhttp.HandlerError
		if errors.As(err, &he) && he.StatusCode != 0 {
			status = he.StatusCode
		}
		rec = httptest.NewRecorder()
		rec.WriteHeader(status)
	}
	sort.Strings(unanswered)
	return &caseAnswer{rec: rec, ev: sink.ev, upstream: upstreamReq, target: targetReq, unanswered: unanswered}, nil
}

// errNoTargetUpstream answers a target fetch in a case without
// target_upstream (the case then fails saying so).
var errNoTargetUpstream = errors.New("rulescli: the case has no target_upstream")

// answerCase writes a case's CRM answer.
func answerCase(w http.ResponseWriter, r *http.Request, up *Upstream, body []byte) {
	if r.Body != nil {
		_, _ = io.Copy(io.Discard, r.Body)
	}
	if up.Body != nil && up.Raw == nil && up.Headers["Content-Type"] == nil && up.Headers["content-type"] == nil {
		w.Header().Set("Content-Type", "application/json")
	}
	_ = headerValues(w.Header(), up.Headers)
	status := up.Status
	if status == 0 {
		status = http.StatusOK
	}
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}

// buildRequest makes the client request of a case.
func buildRequest(cr Request) (*http.Request, error) {
	body, err := bodyBytes(cr.Body, cr.Raw)
	if err != nil {
		return nil, fmt.Errorf("request: %w", err)
	}
	method := cr.Method
	if method == "" {
		method = http.MethodGet
	}
	target := cr.Path
	if !strings.HasPrefix(target, "/") {
		return nil, fmt.Errorf("request: path %q must start with /", target)
	}
	req := httptest.NewRequest(method, "http://crm.test"+target, bytes.NewReader(body))
	if cr.Body != nil && cr.Raw == nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if err := headerValues(req.Header, cr.Headers); err != nil {
		return nil, err
	}
	if len(body) == 0 {
		req.Body = http.NoBody
	}
	return req, nil
}

// compare checks the client's answer against expect.
func compare(expect Expect, rec *httptest.ResponseRecorder, ev *caddymodule.AuditEvent, upstream *http.Request) []string {
	var fails []string
	got := rec.Body.Bytes()
	if expect.Status != 0 && rec.Code != expect.Status {
		fails = append(fails, fmt.Sprintf("status: want %d, got %d (body %s)", expect.Status, rec.Code, clip(got)))
	}
	if expect.hasBody {
		var gotV any
		if err := json.Unmarshal(got, &gotV); err != nil {
			fails = append(fails, fmt.Sprintf("body: want JSON, got %s", clip(got)))
		} else {
			wantV := normalise(expect.Body)
			for _, d := range diffJSON("body", wantV, gotV) {
				fails = append(fails, d)
			}
		}
	}
	for _, name := range sortedNames(expect.Headers) {
		want := expect.Headers[name]
		values, present := rec.Header()[http.CanonicalHeaderKey(name)]
		switch {
		case want == nil && present:
			fails = append(fails, fmt.Sprintf("header %s: want absent, got %q", name, strings.Join(values, ", ")))
		case want != nil && rec.Header().Get(name) != *want:
			fails = append(fails, fmt.Sprintf("header %s: want %q, got %q", name, *want, rec.Header().Get(name)))
		}
	}
	for _, s := range expect.BodyIncludes {
		if !bytes.Contains(got, []byte(s)) {
			fails = append(fails, fmt.Sprintf("body_includes: %q not in body %s", s, clip(got)))
		}
	}
	for _, s := range expect.BodyExcludes {
		if bytes.Contains(got, []byte(s)) {
			fails = append(fails, fmt.Sprintf("body_excludes: %q is in body %s", s, clip(got)))
		}
	}
	if expect.Audit != nil {
		if ev == nil {
			fails = append(fails, "audit: no audit event was written")
		} else {
			raw, _ := json.Marshal(ev)
			var gotA any
			_ = json.Unmarshal(raw, &gotA)
			fails = append(fails, subsetDiff("audit", normalise(expect.Audit), gotA)...)
		}
	}
	if expect.UpstreamCalled != nil && *expect.UpstreamCalled != (upstream != nil) {
		fails = append(fails, fmt.Sprintf("upstream_called: want %v, got %v", *expect.UpstreamCalled, upstream != nil))
	}
	if len(expect.UpstreamHeaders) > 0 {
		if upstream == nil {
			fails = append(fails, "upstream_headers: the request did not reach the upstream")
		} else {
			for _, name := range sortedNames(expect.UpstreamHeaders) {
				want := expect.UpstreamHeaders[name]
				values, present := upstream.Header[http.CanonicalHeaderKey(name)]
				switch {
				case want == nil && present:
					fails = append(fails, fmt.Sprintf("upstream header %s: want absent, got %q", name, strings.Join(values, ", ")))
				case want != nil && upstream.Header.Get(name) != *want:
					fails = append(fails, fmt.Sprintf("upstream header %s: want %q, got %q", name, *want, upstream.Header.Get(name)))
				}
			}
		}
	}
	if expect.UpstreamQuery != nil {
		fails = append(fails, compareQuery(expect.UpstreamQuery, upstream)...)
	}
	return fails
}

// compareQuery checks the query the CRM received against upstream_query.
func compareQuery(want map[string]any, upstream *http.Request) []string {
	if upstream == nil {
		return []string{"upstream_query: the request did not reach the upstream"}
	}
	w := url.Values{}
	for k, v := range want {
		switch v := v.(type) {
		case []any:
			for _, x := range v {
				w.Add(k, fmt.Sprint(x))
			}
		default:
			w.Add(k, fmt.Sprint(v))
		}
	}
	got, err := url.ParseQuery(upstream.URL.RawQuery)
	if err != nil {
		return []string{fmt.Sprintf("upstream_query: the CRM got %q, which cannot be read: %v", upstream.URL.RawQuery, err)}
	}
	if got.Encode() != w.Encode() {
		return []string{fmt.Sprintf("upstream_query: want %q, got %q", w.Encode(), got.Encode())}
	}
	return nil
}

// clip shortens a body for a one-line report.
func clip(b []byte) string {
	const max = 300
	s := strings.TrimSpace(string(b))
	if len(s) > max {
		return s[:max] + "…"
	}
	if s == "" {
		return "(empty)"
	}
	return s
}

func sortedNames(m map[string]*string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
