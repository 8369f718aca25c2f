package integration

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// redteamRules is the rule file of the red-team tests: a sales rep sees
// only own customers, phones and ID numbers masked, bank accounts removed;
// a rep may not change a customer's stage; notes may be added with POST.
const redteamRules = `version: 1
default: deny
mode: enforce
subject:
  id: claims.sub
roles:
  sales: {}
  sales_manager: {inherits: [sales]}
  service: {}
mfa:
  required: false
routes:
  - id: customers.list
    match: {methods: [GET], path: /api/customers}
    allow: [sales]
    records: list
    visible: record.owner_id == user.id
    fields: &f
      phone: {mask: phone}
      id_card: {mask: id_card}
      bank_account: remove
    audit_id: id
  - id: customers.get
    match: {methods: [GET], path: "/api/customers/{id}"}
    allow: [sales]
    record: "@this"
    visible: record.owner_id == user.id
    fields: *f
    audit_id: id
  - id: customers.update
    match: {methods: [PATCH], path: "/api/customers/{id}"}
    allow: [sales]
    body:
      stage: {deny: [sales]}
  - id: notes.add
    match: {methods: [POST], path: "/api/customers/{id}/notes"}
    allow: [sales]
  - id: files
    match: {methods: [GET], path: "/api/files/*"}
    allow: [sales]
`

// redteamCRM is a hostile (or merely broken) CRM: it answers whatever the
// test asks through the "evil" query parameter (or the X-Test-Evil
// header), and records every request
// with its body.
type redteamCRM struct {
	*httptest.Server
	mu     sync.Mutex
	bodies []string
	reqs   []*http.Request
}

func (c *redteamCRM) received() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.bodies...)
}

func (c *redteamCRM) lastRequest() *http.Request {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.reqs) == 0 {
		return nil
	}
	return c.reqs[len(c.reqs)-1]
}

// redteamSecrets are the raw values no sales rep may ever see: every
// phone, ID number and bank account, and the owner of others' customers.
func redteamSecrets() []string {
	var out []string
	for _, c := range proxyCustomers(9) {
		out = append(out, c.Phone, c.IDCard, c.BankAccount)
		if c.OwnerID != "zhang" {
			out = append(out, fmt.Sprintf(`"owner_id":"%s"`, c.OwnerID))
		}
	}
	return out
}

func gz(b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	_, _ = zw.Write(b)
	_ = zw.Close()
	return buf.Bytes()
}

func newRedteamCRM(t testing.TB) *redteamCRM {
	t.Helper()
	c := &redteamCRM{}
	list := proxyListJSON(9)
	one, _ := json.Marshal(proxyCustomers(9)[1]) // li's customer
	c.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		c.mu.Lock()
		c.bodies = append(c.bodies, string(b))
		c.reqs = append(c.reqs, r.Clone(r.Context()))
		c.mu.Unlock()
		// Like Symfony, Zend and IIS-hosted apps: a front proxy's header
		// names the path the app routes on.
		for _, name := range []string{"X-Original-Url", "X-Rewrite-Url", "X-Original-Uri", "X-Forwarded-Path"} {
			if o := r.Header.Get(name); o != "" {
				r.URL.Path, r.URL.RawPath = o, ""
			}
		}
		h := w.Header()
		h.Set("Content-Type", "application/json")
		if r.Header.Get("Upgrade") != "" {
			// A CRM (or a framework under it) that accepts any protocol
			// switch, then talks raw over the connection.
			conn, brw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				return
			}
			defer conn.Close()
			fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: %s\r\n\r\n%s", r.Header.Get("Upgrade"), list)
			_ = brw.Flush()
			return
		}
		evil := r.URL.Query().Get("evil")
		if evil == "" {
			// Rule files with query guards (the shipped example) refuse
			// an "evil" parameter: such tests ask through a header.
			evil = r.Header.Get("X-Test-Evil")
		}
		if b, ok := redteamBodies[evil]; ok {
			_, _ = w.Write([]byte(b))
			return
		}
		switch evil {
		case "500-echo":
			w.WriteHeader(500)
			fmt.Fprintf(w, `{"error":"internal","debug":%s}`, list)
		case "404-echo":
			w.WriteHeader(404)
			fmt.Fprintf(w, `{"error":"not found","near":%s}`, one)
		case "302-echo":
			h.Set("Location", "/elsewhere")
			w.WriteHeader(302)
			_, _ = w.Write(list)
		case "422-echo":
			w.WriteHeader(422)
			_, _ = w.Write(one)
		case "html":
			h.Set("Content-Type", "text/html")
			fmt.Fprintf(w, "<pre>%s</pre>", list)
		case "nested":
			_, _ = w.Write([]byte(redteamNested))
		case "html-json":
			h.Set("Content-Type", "text/html; charset=utf-8")
			fmt.Fprintf(w, `{"list":[{"id":1,"owner_id":"zhang","name":"<script>alert(document.cookie)</script>"}]}`)
		case "utf16-label":
			h.Set("Content-Type", "application/json; charset=utf-16")
			_, _ = w.Write(list)
		case "text-json":
			h.Set("Content-Type", "text/plain")
			_, _ = w.Write(list)
		case "no-type":
			h.Del("Content-Type")
			h["Content-Type"] = nil
			_, _ = w.Write(list)
		case "jsonp":
			h.Set("Content-Type", "application/javascript")
			fmt.Fprintf(w, "cb(%s)", list)
		case "xssi":
			fmt.Fprintf(w, ")]}',\n%s", list)
		case "bom":
			_, _ = w.Write(append([]byte("\xef\xbb\xbf"), list...))
		case "second-value":
			fmt.Fprintf(w, `{"list":[]} %s`, list)
		case "trailing-garbage":
			fmt.Fprintf(w, `{"list":[]} %s`, proxyCustomers(9)[1].BankAccount)
		case "nan":
			fmt.Fprintf(w, `{"list":[{"owner_id":"zhang","score":NaN,"bank_account":"%s"}]}`, proxyCustomers(9)[1].BankAccount)
		case "trailing-ws":
			_, _ = w.Write(append(append([]byte(nil), list...), " \n\t\r\n"...))
		case "utf16":
			h.Set("Content-Type", "application/json; charset=utf-16")
			var u []byte
			for _, ch := range string(list) {
				u = append(u, byte(ch), 0)
			}
			_, _ = w.Write(u)
		case "two-encodings":
			h["Content-Encoding"] = []string{"identity", "gzip"}
			_, _ = w.Write(gz(list))
		case "identity":
			h.Set("Content-Encoding", "identity")
			_, _ = w.Write(list)
		case "double-gzip":
			h.Set("Content-Encoding", "gzip, gzip")
			_, _ = w.Write(gz(gz(list)))
		case "attachment-upper":
			h.Set("Content-Disposition", `ATTACHMENT; filename="c.json"`)
			_, _ = w.Write(list)
		case "disposition-unknown":
			h.Set("Content-Disposition", `download; filename="customers.json"`)
			_, _ = w.Write(list)
		case "disposition-inline":
			h.Set("Content-Disposition", `inline; filename="brochure.json"`)
			_, _ = w.Write([]byte(`{"file":"brochure"}`))
		case "attachment-star":
			h.Set("Content-Disposition", `attachment; filename*=UTF-8''c%C3%A9.json`)
			_, _ = w.Write(list)
		case "csv-octet":
			h.Set("Content-Type", "application/octet-stream")
			fmt.Fprintf(w, "id,phone\n1,%s\n", proxyCustomers(9)[1].Phone)
		case "csv-x":
			h.Set("Content-Type", r.URL.Query().Get("type"))
			fmt.Fprintf(w, "id,phone\n1,%s\n", proxyCustomers(9)[1].Phone)
		case "csv-charset":
			h.Set("Content-Type", "text/csv; charset=gbk")
			fmt.Fprintf(w, "id,phone\n1,%s\n", proxyCustomers(9)[1].Phone)
		case "set-cookie":
			http.SetCookie(w, &http.Cookie{Name: "crmguard_session", Value: "attacker-session", Path: "/"})
			http.SetCookie(w, &http.Cookie{Name: "__Host-crmguard_session", Value: "attacker-session", Path: "/", Secure: true})
			http.SetCookie(w, &http.Cookie{Name: "crm_lang", Value: "zh", Path: "/"})
			_, _ = w.Write(list)
		case "cache-maxage":
			h.Set("Cache-Control", "max-age=600")
			_, _ = w.Write(list)
		case "cache-none":
			h.Set("Last-Modified", "Mon, 02 Jan 2006 15:04:05 GMT")
			_, _ = w.Write(list)
		case "cache-expires":
			h.Set("Expires", "Mon, 02 Jan 2034 15:04:05 GMT")
			_, _ = w.Write(list)
		case "cache-private":
			h.Set("Cache-Control", "private, max-age=60")
			_, _ = w.Write(list)
		case "trailer":
			h.Set("Trailer", "X-Debug-Record")
			_, _ = w.Write(list)
			h.Set("X-Debug-Record", proxyCustomers(9)[1].BankAccount)
		default:
			// Like servers that normalise paths to compatibility forms
			// (NFKC, Windows best-fit): fullwidth letters are ASCII.
			p := strings.Map(func(r rune) rune {
				if r >= 0xff01 && r <= 0xff5e {
					return r - 0xfee0
				}
				return r
			}, lenientPath(r.URL.EscapedPath()))
			// Like Rails formats and Spring's suffix pattern matching: a
			// last segment "customers.json" is "customers".
			if i := strings.LastIndexByte(p, '.'); i > strings.LastIndexByte(p, '/') && i > 0 {
				p = p[:i]
			}
			switch {
			case strings.HasPrefix(p, "/api/customers/") && !strings.HasSuffix(p, "/notes"):
				_, _ = w.Write(one)
			case p == "/api/customers" || strings.HasSuffix(p, "/notes"):
				_, _ = w.Write(list)
			case strings.HasPrefix(p, "/api/files/"):
				_, _ = w.Write([]byte(`{"file":"brochure.pdf"}`))
			default:
				w.WriteHeader(http.StatusNotFound)
				_, _ = w.Write([]byte(`{"error":"no such page"}`))
			}
		}
	}))
	t.Cleanup(c.Close)
	return c
}

// redteamStack is the hostile CRM behind a real Caddy running crm_guard.
type redteamStack struct {
	crm   *redteamCRM
	srv   *proxyServer
	addr  string
	audit string
}

func startRedteam(t *testing.T, rulesFile, extra string) *redteamStack {
	t.Helper()
	dir := t.TempDir()
	crm := newRedteamCRM(t)
	rulesPath := proxyWriteFile(t, dir, "rules.yaml", rulesFile)
	audit := filepath.Join(dir, "audit.jsonl")
	srv := proxyStart(t, dir, proxySite(rulesPath, audit, crm.Listener.Addr().String(), extra))
	return &redteamStack{crm: crm, srv: srv, addr: strings.TrimPrefix(srv.URL, "http://"), audit: audit}
}

// raw sends a raw HTTP/1.1 request (the text is sent as written, {HOST}
// replaced) and returns the answer and its body.
func (s *redteamStack) raw(t *testing.T, req string) (*http.Response, string) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", s.addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	req = strings.ReplaceAll(req, "{HOST}", s.addr)
	if _, err := io.WriteString(conn, req); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		// What comes down the tunnel is the body.
		tunnel, _ := io.ReadAll(br)
		return resp, string(tunnel)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b)
}

// auditEvents reads the audit file's events.
func (s *redteamStack) auditEvents(t *testing.T) []map[string]any {
	t.Helper()
	return readAuditEvents(t, s.audit)
}

// oneAuditEvent waits until the audit file holds exactly one event more
// than before (the event is written as the handler returns, which may be
// just after the client has its answer) and returns it.
func (s *redteamStack) oneAuditEvent(t *testing.T, before int) map[string]any {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		evs := s.auditEvents(t)
		if len(evs) > before+1 {
			t.Fatalf("%d audit events for one request: %v", len(evs)-before, evs[before:])
		}
		if len(evs) == before+1 {
			return evs[before]
		}
		if time.Now().After(deadline) {
			t.Fatalf("no audit event for the request")
		}
		runtime.Gosched()
	}
}

// leaked returns the first secret in body, or "".
func leaked(body string) string {
	for _, s := range redteamSecrets() {
		if strings.Contains(body, s) {
			return s
		}
	}
	return ""
}
