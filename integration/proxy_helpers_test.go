package integration

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"

	"github.com/crmguard/crmguard/caddymodule/authn"
	"github.com/crmguard/crmguard/rules"

	// Caddy's standard modules and the crm_guard handler.
	_ "github.com/caddyserver/caddy/v2/modules/standard"
	_ "github.com/crmguard/crmguard/caddymodule"
)

func init() {
	caddy.RegisterModule(proxyTestIdentity{})
}

// proxyTestIdentity is a TEST-ONLY identity source, registered only in
// this test binary (module crm_guard.identity.proxy_test_header): it takes
// the user from the X-Test-User and X-Test-Roles request headers, so the
// Caddyfile tests can play several users without an OpenID Provider. The
// crmguard binary registers no module in the crm_guard.identity namespace.
type proxyTestIdentity struct{}

// CaddyModule returns the module information.
func (proxyTestIdentity) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "crm_guard.identity.proxy_test_header", New: func() caddy.Module { return new(proxyTestIdentity) }}
}

// UnmarshalCaddyfile reads `identity proxy_test_header`.
func (proxyTestIdentity) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next()
	return nil
}

func (proxyTestIdentity) Identify(r *http.Request) (*authn.Identity, error) {
	id := r.Header.Get("X-Test-User")
	if id == "" {
		return nil, nil
	}
	return &authn.Identity{Subject: id}, nil
}

func (proxyTestIdentity) Challenge(w http.ResponseWriter, r *http.Request, need authn.Need) error {
	w.Header().Set("WWW-Authenticate", `Bearer realm="test"`)
	w.WriteHeader(http.StatusUnauthorized)
	return nil
}

func (proxyTestIdentity) Handle(http.ResponseWriter, *http.Request) (bool, error) { return false, nil }

// ResolveUser builds the user straight from the headers, with the teams
// the example's identity provider gives the same user (examples/devidp).
func (proxyTestIdentity) ResolveUser(set *rules.Set, id *authn.Identity) (*rules.User, error) {
	var attrs map[string]any
	if teams, ok := proxyTeams[id.Subject]; ok {
		attrs = map[string]any{"teams": teams}
	}
	return set.UserFromRoles(id.Subject, proxyRolesOf(id.Subject), attrs, true, time.Now()), nil
}

// proxyTeams are the test users' teams (user.attrs.teams).
var proxyTeams = map[string][]any{"zhang": {"east"}, "wang": {"east"}, "li": {"service"}}

// proxyRoles maps the test users to roles (kept here, not in a header, so
// a client cannot choose its roles even in tests).
var proxyRoles = map[string][]string{
	"zhang": {"sales"},
	"wang":  {"sales_manager"},
	"li":    {"service"},
}

func proxyRolesOf(id string) []string { return proxyRoles[id] }

// proxyFreePort returns a free loopback port.
func proxyFreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// proxyServer is a running Caddy instance started from a Caddyfile.
type proxyServer struct {
	// URL is the base URL of the first site.
	URL string
	// LogFile receives Caddy's JSON logs.
	LogFile string
	dir     string
}

// proxyGlobals is the global options block of every test Caddyfile:
// admin off, plain http on loopback, logs to a file.
func proxyGlobals(dir string) string {
	return fmt.Sprintf(`{
	admin off
	auto_https off
	persist_config off
	storage file_system %s
	log {
		output file %s
		format json
		level INFO
	}
}
`, filepath.Join(dir, "storage"), filepath.Join(dir, "caddy.log"))
}

// proxyTLSGlobals is the global options block of a Caddy serving HTTPS
// with a given certificate (tls cert key in the site): like proxyGlobals,
// but automatic HTTPS only skips its redirects and installs no trust.
func proxyTLSGlobals(dir string) string {
	return fmt.Sprintf(`{
	admin off
	persist_config off
	skip_install_trust
	auto_https disable_redirects
	storage file_system %s
	log {
		output file %s
		format json
	}
}
`, filepath.Join(dir, "storage"), filepath.Join(dir, "caddy.log"))
}

// proxyStart adapts site (a Caddyfile body without global options, with
// {PORT} for a free port) and loads it into Caddy. Caddy runs one config
// per process, so a new start replaces the previous config.
func proxyStart(t testing.TB, dir, site string) *proxyServer {
	t.Helper()
	port := proxyFreePort(t)
	src := proxyGlobals(dir) + strings.ReplaceAll(site, "{PORT}", fmt.Sprint(port))
	cfg, warnings, err := caddyfile.Adapter{ServerType: httpcaddyfile.ServerType{}}.Adapt([]byte(src), nil)
	if err != nil {
		t.Fatalf("adapting the Caddyfile: %v\n%s", err, src)
	}
	for _, w := range warnings {
		t.Logf("caddyfile warning: %s", w.String())
	}
	if err := caddy.Load(cfg, true); err != nil {
		t.Fatalf("loading the config: %v", err)
	}
	t.Cleanup(func() { _ = caddy.Stop() })
	return &proxyServer{URL: fmt.Sprintf("http://127.0.0.1:%d", port), LogFile: filepath.Join(dir, "caddy.log"), dir: dir}
}

// proxyAdapt adapts a full Caddyfile for caddy.Load.
func proxyAdapt(t testing.TB, src string) []byte {
	t.Helper()
	cfg, _, err := caddyfile.Adapter{ServerType: httpcaddyfile.ServerType{}}.Adapt([]byte(src), nil)
	if err != nil {
		t.Fatalf("adapting: %v", err)
	}
	return cfg
}

// proxyWriteFile writes a file in dir and returns its path.
func proxyWriteFile(t testing.TB, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// proxyGet sends a request as user (empty: anonymous) with extra headers.
func proxyGet(t testing.TB, client *http.Client, method, url, user string, h map[string]string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if user != "" {
		req.Header.Set("X-Test-User", user)
	}
	for k, v := range h {
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	return resp
}

// proxyWaitForLog reads the log file until a line contains all of want,
// calling between(), which must make progress (send a request), between
// reads. It fails after deadline.
func proxyWaitForLog(t testing.TB, path string, deadline time.Duration, between func(), want ...string) string {
	t.Helper()
	end := time.Now().Add(deadline)
	for time.Now().Before(end) {
		if line := proxyFindLog(path, want...); line != "" {
			return line
		}
		between()
	}
	t.Fatalf("no log line with %q in %s within %s", want, path, deadline)
	return ""
}

func proxyFindLog(path string, want ...string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		ok := true
		for _, w := range want {
			if !strings.Contains(line, w) {
				ok = false
				break
			}
		}
		if ok {
			return line
		}
	}
	return ""
}

// allowedAtOnce sends n requests at the same time, the i-th through
// send(i), and returns how many were answered 200; an answer other than
// 200 or 403, or a failed request, fails t.
func allowedAtOnce(t *testing.T, n int, send func(i int) (*http.Response, error)) int {
	t.Helper()
	var wg sync.WaitGroup
	codes := make(chan int, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := send(i)
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			codes <- resp.StatusCode
		}()
	}
	wg.Wait()
	close(codes)
	ok := 0
	for c := range codes {
		switch c {
		case http.StatusOK:
			ok++
		case http.StatusForbidden:
		default:
			t.Errorf("status %d, want 200 or 403", c)
		}
	}
	return ok
}

// readAuditEvents reads the events of the audit file at path, one JSON
// object a line (none while the file does not exist); a line that is not
// JSON fails t.
func readAuditEvents(t *testing.T, path string) []map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	// A last line without its newline is an event being written as the
	// file is read (the guard writes it after the answer): it is left for
	// the next read, not taken for a broken line.
	if i := bytes.LastIndexByte(b, '\n'); i < len(b)-1 {
		b = b[:i+1]
	}
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if line == "" {
			continue
		}
		var ev map[string]any
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("audit line is not JSON: %v: %s", err, line)
		}
		out = append(out, ev)
	}
	return out
}
