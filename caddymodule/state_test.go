package caddymodule

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/crmguard/crmguard/caddymodule/authn"
	"github.com/crmguard/crmguard/caddymodule/session"
	"github.com/crmguard/crmguard/caddymodule/store"
	"github.com/crmguard/crmguard/caddymodule/store/redistest"
	"github.com/crmguard/crmguard/rules"
)

// sessionProvider identifies requests by their session cookie in the
// state store, as the OIDC provider does, without a provider to sign in
// with: sessions are made with Manager.Start.
type sessionProvider struct{ m *session.Manager }

func (p *sessionProvider) Identify(r *http.Request) (*authn.Identity, error) {
	d, err := p.m.Load(r)
	if err != nil || d == nil {
		return nil, err
	}
	return &authn.Identity{Subject: d.Subject}, nil
}

func (p *sessionProvider) Challenge(w http.ResponseWriter, r *http.Request, need authn.Need) error {
	authn.WriteChallenge(w, r, need)
	return nil
}

func (p *sessionProvider) Handle(http.ResponseWriter, *http.Request) (bool, error) { return false, nil }

func (p *sessionProvider) ResolveUser(set *rules.Set, id *authn.Identity) (*rules.User, error) {
	return set.UserFromRoles(id.Subject, []string{"sales"}, nil, true, time.Now()), nil
}

func TestARedisStoreStoppedMidTestAnswers503(t *testing.T) {
	srv := redistest.Run(t)
	st, err := store.OpenRedis(srv.URL, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	m, err := session.NewManager(session.Config{Secrets: []string{"0123456789abcdef0123456789abcdef-state-test"}}, st)
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	if err := m.Start(rec, httptest.NewRequest("GET", "/", nil), &session.Data{Subject: "zhang"}); err != nil {
		t.Fatal(err)
	}
	cookie := rec.Result().Cookies()[0]
	set := loadTestRules(t)
	guard := func(t *testing.T) (*Guard, *memSink) {
		sink := &memSink{}
		g, err := NewGuard(GuardOptions{Rules: func() *rules.Set { return set }, Audit: sink, Provider: &sessionProvider{m: m}, Store: st})
		if err != nil {
			t.Fatal(err)
		}
		return g, sink
	}
	request := func(path string, signedIn bool, accept string) *http.Request {
		req := httptest.NewRequest("GET", path, nil)
		if signedIn {
			req.AddCookie(cookie)
		}
		if accept != "" {
			req.Header.Set("Accept", accept)
		}
		return req
	}

	t.Run("while the store answers, the session cookie signs the request in", func(t *testing.T) {
		g, sink := guard(t)
		up := jsonUpstream(customers)
		if rec := serve(t, g, request("/api/customers", true, ""), up); rec.Code != http.StatusOK || up.got == nil {
			t.Fatalf("status %d, upstream reached: %v", rec.Code, up.got != nil)
		}
		if ev := sink.last(t); ev.User != "zhang" || ev.Decision != "allow" {
			t.Fatalf("audit %+v", ev)
		}
		if g.Store() != st {
			t.Fatal("Guard.Store is not the configured store")
		}
	})

	srv.Stop()

	for _, tc := range []struct {
		name, path string
		signedIn   bool
		accept     string
		wantStatus int
	}{
		{name: "a signed-in API request on a guarded route gets 503, not the CRM's answer and not 401", path: "/api/customers", signedIn: true, wantStatus: 503},
		{name: "a signed-in browser gets the 503 page saying why", path: "/api/customers", signedIn: true, accept: "text/html", wantStatus: 503},
		{name: "a signed-in request on a public route gets 503 too (the session could not be checked)", path: "/healthz", signedIn: true, wantStatus: 503},
		{name: "a request without a session cookie needs no store: on a guarded route it must sign in", path: "/api/customers", wantStatus: 401},
		{name: "a request without a session cookie needs no store: a public route answers", path: "/healthz", wantStatus: 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g, sink := guard(t)
			up := jsonUpstream(`{"ok":true}`)
			rec := serve(t, g, request(tc.path, tc.signedIn, tc.accept), up)
			if rec.Code != tc.wantStatus {
				t.Fatalf("status %d, want %d: %s", rec.Code, tc.wantStatus, rec.Body)
			}
			if tc.wantStatus != 503 {
				return
			}
			if up.got != nil {
				t.Fatal("the request reached the CRM")
			}
			if !strings.Contains(rec.Body.String(), "state store could not be reached") {
				t.Fatalf("the answer does not say why: %s", rec.Body)
			}
			if tc.accept == "" {
				var body struct{ Error string }
				if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || body.Error != "unavailable" {
					t.Fatalf("body %s: %v", rec.Body, err)
				}
			}
			ev := sink.last(t)
			if ev.Decision != "error" || ev.Status != 503 || ev.User != "" ||
				!strings.Contains(ev.Reason, "state store could not be reached") || !strings.Contains(ev.Reason, "store: unavailable") {
				t.Fatalf("audit event %+v", ev)
			}
		})
	}
}

func TestStateLocation(t *testing.T) {
	data := t.TempDir()
	dir := t.TempDir()
	def := filepath.Join(data, "crmguard", "state.db")
	for _, tc := range []struct {
		name         string
		store, inSes string
		want         string
		err          string
	}{
		{name: "nothing set is the default file under Caddy's data directory", want: def},
		{name: "store in the crm_guard block is used", store: filepath.Join(dir, "s.db"), want: filepath.Join(dir, "s.db")},
		{name: "the former session store keeps working", inSes: "file:" + dir, want: filepath.Join(dir, "state.db")},
		{name: "the former session store file means the default file", inSes: "file", want: def},
		{name: "both naming the same store is fine", store: filepath.Join(dir, "state.db"), inSes: "file:" + dir, want: filepath.Join(dir, "state.db")},
		{name: "both naming different stores fails, saying store replaced the session setting", store: filepath.Join(dir, "s.db"), inSes: "redis://127.0.0.1:6379/0",
			err: "`store` in the crm_guard block replaced `session { store ... }`"},
		{name: "a bad session store is refused", inSes: "memcached://x", err: "session store"},
		{name: "a bad store is refused", store: "memcached://x", err: "crm_guard store"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := &Handler{Store: tc.store}
			if tc.inSes != "" {
				h.Session = &sessionConfig{Store: tc.inSes}
			}
			loc, err := h.stateLocation(caddy.NewReplacer(), data)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil || loc.Path != tc.want {
				t.Fatalf("%+v %v, want %s", loc, err, tc.want)
			}
		})
	}
}

func TestProvisionOpensOneStore(t *testing.T) {
	t.Setenv("XDG_DATA_HOME", t.TempDir())
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	oidcHandler := func(storePath string) *Handler {
		return &Handler{Rules: "testdata/rules.yaml", ReloadInterval: -1, Store: storePath,
			OIDC:    &oidcConfig{Issuer: "http://127.0.0.1:1", ClientID: "crm", ClientSecret: "s"},
			Session: &sessionConfig{Secrets: []string{"0123456789abcdef0123456789abcdef-provision"}}}
	}
	t.Run("a config reload opens the file once: both generations share it until the old one is cleaned up", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "state.db")
		old, reloaded := oidcHandler(path), oidcHandler(path)
		if err := old.Provision(ctx); err != nil {
			t.Fatal(err)
		}
		if err := reloaded.Provision(ctx); err != nil {
			t.Fatalf("the reloaded config could not open the store: %v", err)
		}
		defer reloaded.Cleanup()
		if err := old.Cleanup(); err != nil {
			t.Fatal(err)
		}
		if _, err := reloaded.guard.Store().Add(ctx, "k", 1, 0, time.Minute); err != nil {
			t.Fatalf("the store closed with the old config: %v", err)
		}
	})
	t.Run("with both store settings naming different stores the config does not load", func(t *testing.T) {
		h := oidcHandler(filepath.Join(t.TempDir(), "state.db"))
		h.Session.Store = "redis://127.0.0.1:6379/0"
		err := h.Provision(ctx)
		if err == nil {
			h.Cleanup()
		}
		if err == nil || !strings.Contains(err.Error(), "replaced `session { store ... }`") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("without oidc the default store is created at its first use only", func(t *testing.T) {
		h := &Handler{Rules: "testdata/rules.yaml", ReloadInterval: -1}
		if err := h.Provision(ctx); err != nil {
			t.Fatal(err)
		}
		defer h.Cleanup()
		def := store.DefaultPath(caddy.AppDataDir())
		if _, err := os.Stat(def); err == nil {
			t.Fatal("the store file exists before anything needed it")
		}
		if _, err := h.guard.Store().Add(ctx, "k", 1, 0, time.Minute); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(def); err != nil {
			t.Fatalf("the first use did not create the store: %v", err)
		}
	})
}
