package session

import (
	"context"
	"encoding/base64"
	"errors"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/crmguard/crmguard/caddymodule/store"
)

const (
	secretA = "secret-A-secret-A-secret-A-secret-A"
	secretB = "secret-B-secret-B-secret-B-secret-B"
)

func TestCodecKeyRotation(t *testing.T) {
	old := must(NewCodec([]string{secretA}, "p"))
	rotated := must(NewCodec([]string{secretB, secretA}, "p"))
	retired := must(NewCodec([]string{secretB}, "p"))
	sealedOld := old.Seal([]byte("id-1"), []byte("c"))
	sealedNew := rotated.Seal([]byte("id-2"), []byte("c"))

	t.Run("a value sealed with the old key opens after rotation", func(t *testing.T) {
		if got, err := rotated.Open(sealedOld, []byte("c")); err != nil || string(got) != "id-1" {
			t.Fatalf("%q %v", got, err)
		}
	})
	t.Run("new values are sealed with the newest key", func(t *testing.T) {
		if _, err := retired.Open(sealedNew, []byte("c")); err != nil {
			t.Fatalf("the newest key alone cannot open it: %v", err)
		}
		if _, err := old.Open(sealedNew, []byte("c")); !errors.Is(err, ErrInvalid) {
			t.Fatalf("the old key opened a new value: %v", err)
		}
	})
	t.Run("a retired key's values no longer open", func(t *testing.T) {
		if _, err := retired.Open(sealedOld, []byte("c")); !errors.Is(err, ErrInvalid) {
			t.Fatal("opened")
		}
	})
	t.Run("another purpose or aad does not open", func(t *testing.T) {
		other := must(NewCodec([]string{secretA}, "q"))
		if _, err := other.Open(sealedOld, []byte("c")); err == nil {
			t.Fatal("another purpose opened it")
		}
		if _, err := old.Open(sealedOld, []byte("d")); err == nil {
			t.Fatal("another aad opened it")
		}
	})
	for _, bad := range []string{"", "x", sealedOld[:len(sealedOld)-1], sealedOld + "A", "!!" + sealedOld, strings.Repeat("A", 10000)} {
		t.Run("tampered input is ErrInvalid", func(t *testing.T) {
			if _, err := old.Open(bad, []byte("c")); !errors.Is(err, ErrInvalid) {
				t.Fatalf("Open(%.20q) = %v", bad, err)
			}
		})
	}
	t.Run("MACs verify under every key and fail when changed", func(t *testing.T) {
		tag := old.MAC([]byte("m"))
		if !rotated.VerifyMAC([]byte("m"), tag) || rotated.VerifyMAC([]byte("n"), tag) || rotated.VerifyMAC([]byte("m"), tag[:10]) {
			t.Fatal("MAC check wrong")
		}
	})
	t.Run("short secrets are refused", func(t *testing.T) {
		if _, err := NewCodec([]string{"short"}, "p"); err == nil {
			t.Fatal("accepted")
		}
	})
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// testStore opens an embedded store in a temporary directory for the test.
func testStore(t *testing.T) store.Store {
	t.Helper()
	st := must(store.OpenBolt(filepath.Join(t.TempDir(), "state.db"), store.Options{}))
	t.Cleanup(func() { st.Close() })
	return st
}

func newData(sub, sid string) *Data {
	now := time.Now()
	return &Data{ID: RandomID(32), Subject: sub, SID: sid, Created: now, LastSeen: now, Expires: now.Add(time.Hour), IdleUntil: now.Add(30 * time.Minute)}
}

func TestManagerCookies(t *testing.T) {
	m := must(NewManager(Config{Secrets: []string{secretA}}, testStore(t)))
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodGet, "https://crm.example/", nil)
	d := &Data{Subject: "zhang", IDToken: strings.Repeat("t", 3000), AccessToken: strings.Repeat("a", 3000)}
	if err := m.Start(rec, req, d); err != nil {
		t.Fatal(err)
	}
	c := rec.Result().Cookies()[0]
	t.Run("the cookie is HttpOnly, Secure over TLS, SameSite=Lax and small", func(t *testing.T) {
		if !c.HttpOnly || !c.Secure || c.SameSite != http.SameSiteLaxMode || len(c.String()) > 300 {
			t.Fatalf("%s (%d bytes)", c, len(c.String()))
		}
	})
	t.Run("the store holds the tokens only sealed, bound to the session id", func(t *testing.T) {
		raw, err := m.Store().Get(context.Background(), d.ID)
		if err != nil {
			t.Fatal(err)
		}
		if raw.IDToken != "" || raw.AccessToken != "" || raw.Sealed == "" || sealedShowsPlaintext(raw.Sealed, "t") || sealedShowsPlaintext(raw.Sealed, "a") {
			t.Fatalf("stored %+v", raw)
		}
		moved := *raw
		moved.ID = RandomID(32)
		if _, err := m.open(&moved); !errors.Is(err, ErrNotFound) {
			t.Fatal("sealed tokens opened under another session id")
		}
		got, err := m.Get(context.Background(), d.ID)
		if err != nil || got.IDToken != d.IDToken || got.AccessToken != d.AccessToken {
			t.Fatalf("Get did not open the tokens: %v", err)
		}
	})
	t.Run("the cookie over TLS is named __Host- with Path=/ and no Domain", func(t *testing.T) {
		if c.Name != "__Host-crmguard_session" || c.Path != "/" || c.Domain != "" || !c.Secure {
			t.Fatalf("%s", c)
		}
	})
	t.Run("the cookie loads the session", func(t *testing.T) {
		r := httptest.NewRequest(http.MethodGet, "https://crm.example/", nil)
		r.AddCookie(c)
		got, err := m.Load(r)
		if err != nil || got == nil || got.Subject != "zhang" {
			t.Fatalf("%v %v", got, err)
		}
	})
	t.Run("a cookie of the plain spelling (planted by a sibling subdomain) is ignored over TLS", func(t *testing.T) {
		r := httptest.NewRequest(http.MethodGet, "https://crm.example/", nil)
		r.AddCookie(&http.Cookie{Name: "crmguard_session", Value: c.Value})
		if got, err := m.Load(r); got != nil || err != nil {
			t.Fatalf("loaded %v %v", got, err)
		}
	})
	t.Run("a __Host- cookie is ignored over plain http, where the plain name is used", func(t *testing.T) {
		r := httptest.NewRequest(http.MethodGet, "http://127.0.0.1/", nil)
		r.AddCookie(c)
		if got, err := m.Load(r); got != nil || err != nil {
			t.Fatalf("loaded %v %v", got, err)
		}
		if name := m.CookieNameFor(r, "crmguard_session"); name != "crmguard_session" {
			t.Fatalf("plain-http name %q", name)
		}
	})
	t.Run("with secure_cookie (TLS ends before Caddy) a plain-http request gets the __Host- Secure cookie", func(t *testing.T) {
		sm := must(NewManager(Config{Secrets: []string{secretA}, SecureCookie: true}, testStore(t)))
		r := httptest.NewRequest(http.MethodGet, "http://10.0.0.5/", nil)
		rec := httptest.NewRecorder()
		sm.SetCookiePath(rec, r, "crmguard_session_signin_x", "v", "/.crmguard/callback", 60)
		got := rec.Result().Cookies()
		if len(got) != 1 || got[0].Name != "__Host-crmguard_session_signin_x" || !got[0].Secure || got[0].Path != "/" {
			t.Fatalf("cookies %v", got)
		}
	})
	t.Run("End deletes the session and clears the cookie", func(t *testing.T) {
		r := httptest.NewRequest(http.MethodGet, "https://crm.example/", nil)
		r.AddCookie(c)
		rec := httptest.NewRecorder()
		if err := m.End(rec, r); err != nil {
			t.Fatal(err)
		}
		if got, _ := m.Load(r); got != nil {
			t.Fatal("still loads")
		}
		if rc := rec.Result().Cookies(); len(rc) != 1 || rc[0].MaxAge >= 0 || rc[0].Name != c.Name {
			t.Fatalf("cookie not cleared: %v", rc)
		}
	})
}

func TestCaddyfile(t *testing.T) {
	for _, c := range []struct {
		name, in string
		ok       bool
		check    func(Config) bool
	}{
		{"a full block parses", `session {
			secret ` + secretB + ` ` + secretA + `
			store redis://127.0.0.1:6379/0
			idle_timeout 15m
			lifetime 8h
			cookie_name crm_sess
			insecure_cookie
		}`, true, func(c Config) bool {
			return len(c.Secrets) == 2 && c.Secrets[0] == secretB && c.Store == "redis://127.0.0.1:6379/0" &&
				time.Duration(c.IdleTimeout) == 15*time.Minute && time.Duration(c.Lifetime) == 8*time.Hour && c.CookieName == "crm_sess" && c.InsecureCookie
		}},
		{"file store with a directory", "session {\nsecret " + secretA + "\nstore file /var/lib/crm\n}", true, func(c Config) bool { return c.Store == "file:/var/lib/crm" }},
		{"an unknown subdirective is an error", "session {\nsecrte x\n}", false, nil},
		{"a bad duration is an error", "session {\nidle_timeout soon\n}", false, nil},
		{"arguments on the session line are an error", "session x {\n}", false, nil},
		{"secret without a value is an error", "session {\nsecret\n}", false, nil},
		{"secure_cookie parses", "session {\nsecure_cookie\n}", true, func(c Config) bool { return c.SecureCookie && !c.InsecureCookie }},
		{"secure_cookie with a bad boolean is an error", "session {\nsecure_cookie maybe\n}", false, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := caddyfile.NewTestDispenser(c.in)
			d.Next()
			var cfg Config
			err := cfg.UnmarshalCaddyfile(d)
			if (err == nil) != c.ok {
				t.Fatalf("err = %v", err)
			}
			if c.check != nil && !c.check(cfg) {
				t.Fatalf("parsed %+v", cfg)
			}
		})
	}
	t.Run("validation refuses short secrets and idle longer than lifetime", func(t *testing.T) {
		for _, c := range []Config{{}, {Secrets: []string{"short"}}, {Secrets: []string{secretA}, IdleTimeout: 100, Lifetime: 10},
			{Secrets: []string{secretA}, InsecureCookie: true, SecureCookie: true}} {
			if err := c.Validate(); err == nil {
				t.Fatalf("%+v accepted", c)
			}
		}
	})
}

// sealedShowsPlaintext tells whether a long run of the one-letter token c
// shows in sealed, raw or base64-encoded: the plaintext tokens are 3000
// copies of one letter, while ciphertext holds a run of 24 equal
// characters with a chance of about 8000/64^23 (a 3-letter run, as this
// test once checked, shows by chance in about 3% of runs).
func sealedShowsPlaintext(sealed, c string) bool {
	run := strings.Repeat(c, 24)
	return strings.Contains(sealed, run) ||
		strings.Contains(sealed, base64.RawURLEncoding.EncodeToString([]byte(run))) ||
		strings.Contains(sealed, base64.StdEncoding.EncodeToString([]byte(run)))
}
