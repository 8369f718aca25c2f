package integration

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/andybalholm/brotli"
)

// redteamTargetRules judges customer writes against the stored customer
// (a rep changes only own customers) and lets reps read customers.
const redteamTargetRules = `version: 1
roles: {sales: {}}
routes:
  - id: customers.update
    match: {methods: [PUT, PATCH, DELETE], path: "/api/customers/{id}"}
    allow: [sales]
    target:
      fetch: "/api/customers/{id}"
      allow_if: record.owner_id == user.id
  - id: customers.read
    match: {methods: [GET], path: "/api/customers/{id}"}
    allow: [sales]
`

// redteamTargetCRM serves records whose answers are attacks on the
// guard's record fetch, and logs what every request carried.
type redteamTargetCRM struct {
	*httptest.Server
	mu  sync.Mutex
	log []crmHit
}

// crmHit is one request the CRM received.
type crmHit struct {
	Method, URI, Body                             string
	Cookie, Authorization, CacheControl, Override string
	IfMatch, Range                                string
}

func (h crmHit) String() string { return h.Method + " " + h.URI }

func newRedteamTargetCRM(t *testing.T) *redteamTargetCRM {
	c := &redteamTargetCRM{}
	zip := func(s string) []byte {
		var b bytes.Buffer
		zw := gzip.NewWriter(&b)
		_, _ = zw.Write([]byte(s))
		_ = zw.Close()
		return b.Bytes()
	}
	br := func(s string) []byte {
		var b bytes.Buffer
		bw := brotli.NewWriter(&b)
		_, _ = bw.Write([]byte(s))
		_ = bw.Close()
		return b.Bytes()
	}
	c.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		c.mu.Lock()
		c.log = append(c.log, crmHit{Method: r.Method, URI: r.URL.RequestURI(), Body: string(b),
			Cookie: r.Header.Get("Cookie"), Authorization: r.Header.Get("Authorization"),
			CacheControl: r.Header.Get("Cache-Control"), Override: r.Header.Get("X-HTTP-Method-Override"),
			IfMatch: r.Header.Get("If-Match"), Range: r.Header.Get("Range")})
		c.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		if r.Method != http.MethodGet {
			_, _ = w.Write([]byte(`{"updated":true}`))
			return
		}
		switch strings.TrimPrefix(r.URL.Path, "/api/customers/") {
		case "1":
			_, _ = w.Write([]byte(`{"id":"1","owner_id":"zhang"}`))
		case "2":
			_, _ = w.Write([]byte(`{"id":"2","owner_id":"wu"}`))
		case "3": // the same key twice: a CRM may read either copy
			_, _ = w.Write([]byte(`{"id":"3","owner_id":"zhang","owner_id":"wu"}`))
		case "4": // a list, not a record
			_, _ = w.Write([]byte(`[{"id":"4","owner_id":"zhang"}]`))
		case "5":
			w.Header().Set("Content-Encoding", "gzip")
			_, _ = w.Write(zip(`{"id":"5","owner_id":"zhang"}`))
		case "6":
			w.Header().Set("Content-Encoding", "br")
			_, _ = w.Write(br(`{"id":"6","owner_id":"wu"}`))
		case "7": // a redirect to a record the user owns
			w.Header().Set("Location", "/api/customers/1")
			w.WriteHeader(http.StatusFound)
			_, _ = w.Write([]byte(`{"id":"1","owner_id":"zhang"}`))
		case "8": // larger than max_body, the owner first
			_, _ = w.Write([]byte(`{"id":"8","owner_id":"zhang","pad":"` + strings.Repeat("x", 70<<10) + `"}`))
		case "9":
			w.WriteHeader(http.StatusInternalServerError)
			_, _ = w.Write([]byte(`{"id":"9","owner_id":"zhang"}`))
		case "10": // the owner's id twice with the same value is fine
			_, _ = w.Write([]byte(`{"id":"10","owner_id":"zhang","owner_id":"zhang"}`))
		default:
			w.WriteHeader(http.StatusNotFound)
			_, _ = w.Write([]byte(`{"error":"not found"}`))
		}
	}))
	t.Cleanup(c.Close)
	return c
}

func (c *redteamTargetCRM) take() []crmHit {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := c.log
	c.log = nil
	return out
}

// redteamSend sends one request as zhang (a sales rep) over a raw
// connection, so the path reaches Caddy exactly as written.
func redteamSend(t *testing.T, base, method, path string, h map[string]string, body string) (int, string) {
	t.Helper()
	return redteamSendHeaders(t, base, method, path, h, body, nil)
}

// redteamSendHeaders is redteamSend that also hands the answer to check
// (when not nil) before its body is read.
func redteamSendHeaders(t *testing.T, base, method, path string, h map[string]string, body string, check func(*http.Response)) (int, string) {
	t.Helper()
	addr := strings.TrimPrefix(base, "http://")
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var req strings.Builder
	fmt.Fprintf(&req, "%s %s HTTP/1.1\r\nHost: %s\r\nX-Test-User: zhang\r\nConnection: close\r\nContent-Length: %d\r\n", method, path, addr, len(body))
	for k, v := range h {
		fmt.Fprintf(&req, "%s: %s\r\n", k, v)
	}
	req.WriteString("\r\n" + body)
	if _, err := io.WriteString(conn, req.String()); err != nil {
		t.Fatal(err)
	}
	req2, _ := http.NewRequest(method, "http://x/", nil)
	resp, err := http.ReadResponse(bufio.NewReader(conn), req2)
	if err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	if check != nil {
		check(resp)
	}
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestRedTeamTargetThroughCaddy(t *testing.T) {
	dir := t.TempDir()
	crm := newRedteamTargetCRM(t)
	rulesPath := proxyWriteFile(t, dir, "rules.yaml", redteamTargetRules)
	auditPath := filepath.Join(dir, "audit.jsonl")
	srv := proxyStart(t, dir, proxySite(rulesPath, auditPath, strings.TrimPrefix(crm.URL, "http://"), ""))
	js := map[string]string{"Content-Type": "application/json"}
	form := map[string]string{"Content-Type": "application/x-www-form-urlencoded"}

	cases := []struct {
		name, method, path string
		header             map[string]string
		body               string
		wantStatus         int
		wantCRM            []string // "METHOD uri" in order
	}{
		{"an encoded slash in the id never moves the fetch", "PATCH", "/api/customers/2%2F..%2F1", js, `{}`, 400, nil},
		{"a double-encoded slash in the id never moves the fetch", "PATCH", "/api/customers/2%252F..%252F1", js, `{}`, 400, nil},
		{"a dot-dot id never moves the fetch", "PATCH", "/api/customers/2/../1", js, `{}`, 400, nil},
		{"an encoded question mark in the id never adds a query to the fetch", "PATCH", "/api/customers/1%3Fid=2", js, `{}`, 400, nil},
		{"an encoded hash in the id never cuts the fetch", "PATCH", "/api/customers/1%232", js, `{}`, 400, nil},
		{"a semicolon in the id (a matrix parameter) never reaches the CRM", "PATCH", "/api/customers/1;2", js, `{}`, 400, nil},
		{"a fullwidth digit in the id never reaches the CRM", "PATCH", "/api/customers/%EF%BC%92", js, `{}`, 400, nil},
		{"an empty id matches no target route", "PATCH", "/api/customers/", js, `{}`, 403, nil},
		{"a very long id is fetched as it is and refused as unknown", "PATCH", "/api/customers/" + strings.Repeat("9", 4000), js, `{}`, 404,
			[]string{"GET /api/customers/" + strings.Repeat("9", 4000)}},
		{"a record with its owner key twice with different values is refused", "PATCH", "/api/customers/3", js, `{}`, 403, []string{"GET /api/customers/3"}},
		{"a record with its owner key twice with the same value is allowed", "PATCH", "/api/customers/10", js, `{}`, 200, []string{"GET /api/customers/10", "PATCH /api/customers/10"}},
		{"a list answered for the record is not read as the record", "PATCH", "/api/customers/4", js, `{}`, 502, []string{"GET /api/customers/4"}},
		{"a gzip record is decoded and judged", "PATCH", "/api/customers/5", js, `{}`, 200, []string{"GET /api/customers/5", "PATCH /api/customers/5"}},
		{"a brotli record of another rep is decoded and refused", "PATCH", "/api/customers/6", js, `{}`, 403, []string{"GET /api/customers/6"}},
		{"a redirect answered for the record is not followed", "PATCH", "/api/customers/7", js, `{}`, 502, []string{"GET /api/customers/7"}},
		{"a record larger than max_body is refused", "PATCH", "/api/customers/8", js, `{}`, 502, []string{"GET /api/customers/8"}},
		{"a CRM error answered for the record is refused", "PATCH", "/api/customers/9", js, `{}`, 502, []string{"GET /api/customers/9"}},
		{"a DELETE of another rep's customer is refused", "DELETE", "/api/customers/2", nil, ``, 403, []string{"GET /api/customers/2"}},
		{"a POST with a method-override header does not dodge the target", "POST", "/api/customers/2", map[string]string{"X-HTTP-Method-Override": "PATCH", "Content-Type": "application/json"}, `{}`, 400, nil},
		{"a POST with _method in the query does not dodge the target", "POST", "/api/customers/2?_method=PATCH", js, `{}`, 400, nil},
		{"a POST with _method in a form body does not dodge the target", "POST", "/api/customers/2", form, `_method=PATCH&notes=x`, 403, nil},
		{"a HEAD matches no route (GET only) and reaches nothing", "HEAD", "/api/customers/2", nil, ``, 403, nil},
		{"a dot segment (the path names 2, the clean path 1) is refused", "PATCH", "/api/customers/2/../1", js, `{}`, 400, nil},
		{"an encoded dot segment is refused", "PATCH", "/api/customers/2/%2e%2e/1", js, `{}`, 400, nil},
		{"a trailing slash is refused", "PATCH", "/api/customers/1/", js, `{}`, 400, nil},
		{"a double slash is refused", "PATCH", "/api//customers/1", js, `{}`, 400, nil},
		{"a body naming another id than the path is refused before the fetch", "PATCH", "/api/customers/1", js, `{"id":"2","notes":"x"}`, 400, nil},
		{"a body naming the path's id as a number is allowed", "PATCH", "/api/customers/1", js, `{"id":1,"notes":"x"}`, 200, []string{"GET /api/customers/1", "PATCH /api/customers/1"}},
		{"a body naming the id twice, the second another record, is refused", "PATCH", "/api/customers/1", js, `{"id":"1","id":"2"}`, 400, nil},
		{"a body holding an object at the id is refused", "PATCH", "/api/customers/1", js, `{"id":{"eq":"2"}}`, 400, nil},
		{"a bulk array naming several ids is refused", "PATCH", "/api/customers/1", js, `[{"id":"1"},{"id":"2"}]`, 400, nil},
		{"a JSON Patch replacing the id with another is refused", "PATCH", "/api/customers/1", map[string]string{"Content-Type": "application/json-patch+json"}, `[{"op":"replace","path":"/id","value":"2"}]`, 400, nil},
		{"a form naming another id is refused", "PUT", "/api/customers/1", form, `notes=x&id=2`, 400, nil},
		{"a PHP-style form name for the id is refused", "PUT", "/api/customers/1", form, `notes=x&id[]=2`, 400, nil},
		{"a multipart form naming another id is refused", "PUT", "/api/customers/1", map[string]string{"Content-Type": "multipart/form-data; boundary=XX"},
			"--XX\r\nContent-Disposition: form-data; name=\"id\"\r\n\r\n2\r\n--XX--\r\n", 400, nil},
		{"a body over max_body on a target route is refused before the fetch", "PATCH", "/api/customers/1", map[string]string{"Content-Type": "text/plain"}, strings.Repeat("x", 65<<10), 413, nil},
		{"a JSON body labelled text/plain naming another id is refused", "PATCH", "/api/customers/1", map[string]string{"Content-Type": "text/plain"}, `{"id":"2"}`, 400, nil},
		{"a query naming another id is refused", "PATCH", "/api/customers/1?id=2", js, `{}`, 400, nil},
		{"a gzip body that cannot be read for ids is refused", "PATCH", "/api/customers/1", map[string]string{"Content-Type": "application/json", "Content-Encoding": "gzip"}, "\x1f\x8b", 415, nil},
		{"an OPTIONS matches no route and reaches nothing", "OPTIONS", "/api/customers/2", nil, ``, 403, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			status, body := redteamSend(t, srv.URL, c.method, c.path, c.header, c.body)
			if status != c.wantStatus {
				t.Errorf("status %d %s; want %d", status, body, c.wantStatus)
			}
			targetAuditSettle(t, auditPath)
			var got []string
			for _, h := range crm.take() {
				got = append(got, h.String())
			}
			if strings.Join(got, "\n") != strings.Join(c.wantCRM, "\n") {
				t.Errorf("the CRM received:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(c.wantCRM, "\n"))
			}
		})
	}

	t.Run("the fetch carries no client body, conditional, range or override and only the credentials the write carries, and asks caches not to answer", func(t *testing.T) {
		status, body := redteamSend(t, srv.URL, "PATCH", "/api/customers/1", map[string]string{
			"Content-Type":  "application/json",
			"Cookie":        "crm_sid=abc; crmguard_session=planted",
			"Authorization": "Basic emhhbmc6cHc=",
			"If-Match":      `"v1"`,
			"Range":         "bytes=0-5",
		}, `{"notes":"called"}`)
		if status != 200 {
			t.Fatalf("status %d %s", status, body)
		}
		targetAuditSettle(t, auditPath)
		hits := crm.take()
		if len(hits) != 2 || hits[0].Method != "GET" || hits[1].Method != "PATCH" {
			t.Fatalf("the CRM received %v, want the GET then the PATCH", hits)
		}
		get, patch := hits[0], hits[1]
		if get.Body != "" || get.IfMatch != "" || get.Range != "" || get.Override != "" {
			t.Errorf("the fetch carried body %q, If-Match %q, Range %q, override %q", get.Body, get.IfMatch, get.Range, get.Override)
		}
		if get.Cookie != patch.Cookie || get.Authorization != patch.Authorization {
			t.Errorf("the fetch carried Cookie %q Authorization %q; the write carried %q %q", get.Cookie, get.Authorization, patch.Cookie, patch.Authorization)
		}
		if strings.Contains(get.Cookie, "crmguard") {
			t.Errorf("the proxy's own cookie reached the CRM on the fetch: %q", get.Cookie)
		}
		if !strings.Contains(get.CacheControl, "no-cache") {
			t.Errorf("the fetch's Cache-Control is %q; a cache between the guard and the CRM could answer with a stale owner", get.CacheControl)
		}
	})
}

// targetAuditSettle waits until the audit file holds one more event than
// the previous call saw on it.
var targetAuditSeen = map[string]int{}

func targetAuditSettle(t *testing.T, path string) {
	t.Helper()
	targetAuditSeen[path]++
	targetAuditEvents(t, path, targetAuditSeen[path])
}

func TestRedTeamTargetInShadowModeAndWithTheCRMDown(t *testing.T) {
	dir := t.TempDir()
	crm := newRedteamTargetCRM(t)
	rulesPath := proxyWriteFile(t, dir, "rules.yaml", redteamTargetRules)
	auditPath := filepath.Join(dir, "audit.jsonl")
	srv := proxyStart(t, dir, proxySite(rulesPath, auditPath, strings.TrimPrefix(crm.URL, "http://"), "mode shadow"))
	js := map[string]string{"Content-Type": "application/json"}

	t.Run("in shadow mode a change to another rep's customer is forwarded and audited as a deny", func(t *testing.T) {
		status, body := redteamSend(t, srv.URL, "PATCH", "/api/customers/2", js, `{}`)
		if status != 200 {
			t.Errorf("status %d %s; want 200 (shadow mode never blocks)", status, body)
		}
		evs := targetAuditEvents(t, auditPath, 1)
		ev := evs[len(evs)-1]
		tg, _ := ev["target"].(map[string]any)
		if ev["decision"] != "deny" || tg == nil || tg["allowed"] != false || !strings.Contains(fmt.Sprint(ev["reason"]), "you may not change this record") {
			t.Errorf("audit event %v; want decision deny with the target refused", ev)
		}
		if got := crm.take(); len(got) != 2 || got[1].String() != "PATCH /api/customers/2" {
			t.Errorf("the CRM received %v, want the fetch and the write", got)
		}
	})
	t.Run("in shadow mode a body naming another record is forwarded and audited as a deny", func(t *testing.T) {
		status, body := redteamSend(t, srv.URL, "PATCH", "/api/customers/1", js, `{"id":"2"}`)
		if status != 200 {
			t.Errorf("status %d %s; want 200 (shadow mode never blocks)", status, body)
		}
		evs := targetAuditEvents(t, auditPath, 2)
		ev := evs[len(evs)-1]
		if ev["decision"] != "deny" || !strings.Contains(fmt.Sprint(ev["reason"]), `names record "2"`) {
			t.Errorf("audit event %v; want decision deny naming record 2", ev)
		}
		if got := crm.take(); len(got) == 0 || got[len(got)-1].String() != "PATCH /api/customers/1" {
			t.Errorf("the CRM received %v, want the write", got)
		}
	})

	t.Run("with the CRM down a write is refused with 502 and audited as an error", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		dead := ln.Addr().String()
		ln.Close()
		dir2 := t.TempDir()
		audit2 := filepath.Join(dir2, "audit.jsonl")
		srv2 := proxyStart(t, dir2, proxySite(rulesPath, audit2, dead, ""))
		status, body := redteamSend(t, srv2.URL, "PATCH", "/api/customers/1", js, `{}`)
		if status != 502 || strings.Contains(body, dead) {
			t.Errorf("status %d %s; want 502 without the CRM's address", status, body)
		}
		ev := targetAuditEvents(t, audit2, 1)[0]
		tg, _ := ev["target"].(map[string]any)
		if ev["decision"] != "error" || tg == nil || tg["status"] != 0.0 || tg["allowed"] != false {
			t.Errorf("audit event %v; want decision error with target status 0", ev)
		}
	})
}

// raceCRM keeps one record per path with an owner and a version; every
// GET answers with the version as a strong ETag (none under /api/plain/),
// and when race is set the owner changes to wu right after a GET (a
// reassignment landing between the guard's fetch and the write). A write
// whose If-Match is not the current version is refused with 412.
type raceCRM struct {
	*httptest.Server
	mu      sync.Mutex
	race    bool
	version map[string]int
	owner   map[string]string
	writes  []string // "PATCH /path If-Match=..." of applied writes
	hits    []string
}

func newRaceCRM(t *testing.T) *raceCRM {
	c := &raceCRM{version: map[string]int{}, owner: map[string]string{}}
	c.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.mu.Lock()
		defer c.mu.Unlock()
		p := r.URL.Path
		c.hits = append(c.hits, r.Method+" "+p)
		if _, ok := c.owner[p]; !ok {
			c.owner[p], c.version[p] = "zhang", 1
		}
		etag := fmt.Sprintf(`"v%d"`, c.version[p])
		w.Header().Set("Content-Type", "application/json")
		if r.Method == http.MethodGet {
			if !strings.HasPrefix(p, "/api/plain/") {
				w.Header().Set("ETag", etag)
			}
			fmt.Fprintf(w, `{"owner_id":%q}`, c.owner[p])
			if c.race {
				c.owner[p], c.version[p] = "wu", c.version[p]+1
			}
			return
		}
		if im := r.Header.Get("If-Match"); im != "" && im != etag {
			w.WriteHeader(http.StatusPreconditionFailed)
			return
		}
		c.writes = append(c.writes, r.Method+" "+p+" If-Match="+r.Header.Get("If-Match"))
		_, _ = w.Write([]byte(`{"updated":true}`))
	}))
	t.Cleanup(c.Close)
	return c
}

func (c *raceCRM) take() (hits, writes []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	hits, writes = c.hits, c.writes
	c.hits, c.writes = nil, nil
	return hits, writes
}

func TestRedTeamTargetRaceBetweenFetchAndWrite(t *testing.T) {
	const rulesSrc = `version: 1
roles: {sales: {}}
routes:
  - id: conditional
    match: {methods: [PATCH], path: "/api/{kind}/{id}"}
    allow: [sales]
    target:
      fetch: "/api/{kind}/{id}"
      allow_if: record.owner_id == user.id
      if_match: true
  - id: unconditional
    match: {methods: [PATCH], path: "/open/{kind}/{id}"}
    allow: [sales]
    target:
      fetch: "/api/{kind}/{id}"
      allow_if: record.owner_id == user.id
`
	dir := t.TempDir()
	crm := newRaceCRM(t)
	rulesPath := proxyWriteFile(t, dir, "rules.yaml", rulesSrc)
	auditPath := filepath.Join(dir, "audit.jsonl")
	srv := proxyStart(t, dir, proxySite(rulesPath, auditPath, strings.TrimPrefix(crm.URL, "http://"), ""))
	js := map[string]string{"Content-Type": "application/json"}

	cases := []struct {
		name       string
		race       bool
		path       string
		ifMatch    string
		wantStatus int
		wantWrites []string
	}{
		{"without if_match a reassignment between the fetch and the write is not seen (the documented limit)", true, "/open/customers/1", "", 200,
			[]string{"PATCH /open/customers/1 If-Match="}},
		{"with if_match the write carries the judged version and the CRM refuses it after a reassignment", true, "/api/customers/2", "", 412, nil},
		{"with if_match and no race the write goes through with the judged version", false, "/api/customers/3", "", 200,
			[]string{`PATCH /api/customers/3 If-Match="v1"`}},
		{"a client If-Match naming another version is refused before the write", false, "/api/customers/4", `"v0"`, 412, nil},
		{"a client If-Match of * is narrowed to the judged version", false, "/api/customers/5", `*`, 200,
			[]string{`PATCH /api/customers/5 If-Match="v1"`}},
		{"with if_match a CRM answer without an ETag is refused", false, "/api/plain/6", "", 502, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			crm.mu.Lock()
			crm.race = c.race
			crm.mu.Unlock()
			h := map[string]string{"Content-Type": js["Content-Type"]}
			if c.ifMatch != "" {
				h["If-Match"] = c.ifMatch
			}
			status, body := redteamSend(t, srv.URL, "PATCH", c.path, h, `{"notes":"x"}`)
			if status != c.wantStatus {
				t.Errorf("status %d %s; want %d", status, body, c.wantStatus)
			}
			targetAuditSettle(t, auditPath)
			hits, writes := crm.take()
			if strings.Join(writes, "\n") != strings.Join(c.wantWrites, "\n") {
				t.Errorf("the CRM applied:\n%s\nwant:\n%s\n(all requests: %v)", strings.Join(writes, "\n"), strings.Join(c.wantWrites, "\n"), hits)
			}
		})
	}
}
