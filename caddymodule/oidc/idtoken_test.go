package oidc

import "testing"

func TestIDTokensAreToldFromAccessTokens(t *testing.T) {
	cases := []struct {
		name   string
		claims map[string]any
		id     bool
	}{
		{"a token with a nonce is an ID token", map[string]any{"sub": "zhang", "nonce": "n"}, true},
		{"a token with at_hash is an ID token", map[string]any{"sub": "zhang", "at_hash": "x"}, true},
		{"a token with c_hash is an ID token", map[string]any{"sub": "zhang", "c_hash": "x"}, true},
		{"a token with s_hash is an ID token", map[string]any{"sub": "zhang", "s_hash": "x"}, true},
		{"a Keycloak token typed ID is an ID token", map[string]any{"sub": "zhang", "typ": "ID"}, true},
		{"a Keycloak token typed Bearer is an access token", map[string]any{"sub": "zhang", "typ": "Bearer"}, false},
		{"a token with scopes and no ID token claim is an access token", map[string]any{"sub": "zhang", "scope": "openid crm", "amr": []any{"pwd", "otp"}}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := isIDToken(c.claims); got != c.id {
				t.Fatalf("isIDToken = %v, want %v", got, c.id)
			}
		})
	}
}
