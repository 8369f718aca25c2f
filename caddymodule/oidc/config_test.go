package oidc

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/crmguard/crmguard/caddymodule/authn"
	"github.com/crmguard/crmguard/rules"
)

func TestConfigCaddyfile(t *testing.T) {
	for _, c := range []struct {
		name, in string
		ok       bool
		check    func(Config) bool
	}{
		{"a full block parses", `oidc {
			issuer https://idp.example.com/realms/corp
			client_id crm
			client_secret s3cret
			redirect_url https://crm.example.com/.crmguard/callback
			scopes openid profile groups
			acr_values urn:mfa
			login_path /signin
			logout_path /signout
			backchannel_logout_path /bcl
			post_logout_redirect /bye
			bearer_audiences crm-api other
			algorithms RS256 ES256
			mfa_retries 2
			clock_skew 30s
			refresh_before 2m
			flow_timeout 5m
		}`, true, func(c Config) bool {
			return c.Issuer == "https://idp.example.com/realms/corp" && c.ClientID == "crm" && c.ClientSecret == "s3cret" &&
				c.RedirectURL == "https://crm.example.com/.crmguard/callback" && len(c.Scopes) == 3 && c.ACRValues[0] == "urn:mfa" &&
				c.LoginPath == "/signin" && c.LogoutPath == "/signout" && c.BackchannelLogoutPath == "/bcl" && c.PostLogoutRedirect == "/bye" &&
				len(c.BearerAudiences) == 2 && len(c.Algorithms) == 2 && c.MFARetries == 2 && time.Duration(c.ClockSkew) == 30*time.Second &&
				time.Duration(c.RefreshBefore) == 2*time.Minute && time.Duration(c.FlowTimeout) == 5*time.Minute
		}},
		{"disable_bearer takes no argument", "oidc {\ndisable_bearer\n}", true, func(c Config) bool { return c.DisableBearer }},
		{"an unknown subdirective is an error", "oidc {\nissuer_url x\n}", false, nil},
		{"issuer with two values is an error", "oidc {\nissuer a b\n}", false, nil},
		{"mfa_retries must be a positive number", "oidc {\nmfa_retries zero\n}", false, nil},
		{"a bad duration is an error", "oidc {\nclock_skew often\n}", false, nil},
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
}

func TestConfigDefaultsAndValidation(t *testing.T) {
	c := Config{Issuer: "https://idp.example/", ClientID: "crm"}.WithDefaults()
	t.Run("defaults are filled in", func(t *testing.T) {
		if c.Issuer != "https://idp.example/" || c.CallbackPath != "/.crmguard/callback" || c.LogoutPath != DefaultLogoutPath ||
			c.BearerAudiences[0] != "crm" || c.MFARetries != 3 || c.Scopes[0] != "openid" {
			t.Fatalf("%+v", c)
		}
		if err := c.Validate(); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("openid is always requested", func(t *testing.T) {
		c := Config{Issuer: "https://idp", ClientID: "x", Scopes: []string{"profile"}}.WithDefaults()
		if c.Scopes[0] != "openid" {
			t.Fatalf("%v", c.Scopes)
		}
	})
	for _, bad := range []struct {
		name string
		cfg  Config
	}{
		{"no issuer", Config{ClientID: "crm"}},
		{"an issuer that is not a URL", Config{Issuer: "idp.example", ClientID: "crm"}},
		{"no client id", Config{Issuer: "https://idp"}},
		{"alg none", Config{Issuer: "https://idp", ClientID: "crm", Algorithms: []string{"none"}}},
		{"HS256", Config{Issuer: "https://idp", ClientID: "crm", Algorithms: []string{"RS256", "HS256"}}},
		{"a relative redirect URL", Config{Issuer: "https://idp", ClientID: "crm", RedirectURL: "/cb"}},
		{"a callback path that is protocol-relative", Config{Issuer: "https://idp", ClientID: "crm", CallbackPath: "//evil/cb"}},
	} {
		t.Run(bad.name+" is refused", func(t *testing.T) {
			c := bad.cfg.WithDefaults()
			if err := c.Validate(); err == nil || !strings.HasPrefix(err.Error(), "oidc: ") {
				t.Fatalf("err = %v", err)
			}
		})
	}
}

func TestAPIChallenges(t *testing.T) {
	p := &Provider{cfg: Config{ACRValues: []string{"urn:mfa"}}.WithDefaults(), mfa: func() rules.MFAPolicy { return rules.MFAPolicy{} }}
	for _, c := range []struct {
		name   string
		auth   string
		need   authn.Need
		header string
	}{
		{"a signed-out client gets a realm", "", authn.Need{SignIn: true}, `Bearer realm="crmguard"`},
		{"an invalid token gets invalid_token", "Bearer x", authn.Need{SignIn: true, Reason: `bad "token"`},
			`Bearer realm="crmguard", error="invalid_token", error_description="bad 'token'"`},
		{"missing MFA names the acr values", "Bearer x", authn.Need{StepUp: rules.StepUpNeed{MFA: true}, Reason: "MFA needed"},
			`Bearer realm="crmguard", error="insufficient_user_authentication", error_description="MFA needed", acr_values="urn:mfa"`},
		{"an old sign-in names max_age", "Bearer x", authn.Need{StepUp: rules.StepUpNeed{MaxAge: 5 * time.Minute}, Reason: "too old"},
			`Bearer realm="crmguard", error="insufficient_user_authentication", error_description="too old", max_age=300`},
		{"the rule's acr values win", "Bearer x", authn.Need{StepUp: rules.StepUpNeed{MFA: true, ACR: []string{"a", "b"}}, Reason: "r"},
			`Bearer realm="crmguard", error="insufficient_user_authentication", error_description="r", acr_values="a b"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			req := httptest.NewRequest(http.MethodGet, "/api/x", nil)
			if c.auth != "" {
				req.Header.Set("Authorization", c.auth)
			}
			if err := p.Challenge(rec, req, c.need); err != nil {
				t.Fatal(err)
			}
			if rec.Code != http.StatusUnauthorized || rec.Header().Get("WWW-Authenticate") != c.header {
				t.Fatalf("%d %q", rec.Code, rec.Header().Get("WWW-Authenticate"))
			}
			if !strings.Contains(rec.Body.String(), `"error"`) {
				t.Fatalf("body %q", rec.Body.String())
			}
		})
	}
	t.Run("a browser is told apart from an API client", func(t *testing.T) {
		for _, c := range []struct {
			accept, auth string
			browser      bool
		}{
			{"text/html,application/xhtml+xml", "", true},
			{"application/json", "", false},
			{"*/*", "", false},
			{"text/html", "Bearer x", false},
		} {
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			r.Header.Set("Accept", c.accept)
			if c.auth != "" {
				r.Header.Set("Authorization", c.auth)
			}
			if isBrowser(r) != c.browser {
				t.Fatalf("Accept %q Authorization %q: browser=%v", c.accept, c.auth, !c.browser)
			}
		}
	})
}
