package caddymodule

import (
	"net/http"
	"testing"

	"github.com/crmguard/crmguard/caddymodule/authn"
	"github.com/crmguard/crmguard/rules"
)

// identityOnly is an authn.Provider that leaves mapping identities to
// users to the guard (it is no UserResolver).
type identityOnly struct{}

func (identityOnly) Identify(*http.Request) (*authn.Identity, error) { return nil, nil }
func (identityOnly) Challenge(w http.ResponseWriter, r *http.Request, need authn.Need) error {
	authn.WriteChallenge(w, r, need)
	return nil
}
func (identityOnly) Handle(http.ResponseWriter, *http.Request) (bool, error) { return false, nil }

func TestResolveUserCountsTheRuleFilesDefaultMFAMethods(t *testing.T) {
	set, err := rules.Load("rules.yaml", []byte(`version: 1
subject: {id: claims.sub, roles: claims.groups}
roles: {sales: {}}
mfa: {required: true}
routes:
  - id: customers
    match: {path: /api/customers}
    allow: [sales]
`))
	if err != nil {
		t.Fatalf("a rule file whose mfa block lists no methods does not load: %v", err)
	}
	tests := []struct {
		name string
		amr  []string
		want bool
	}{
		{"a sign-in with a one-time code counts as MFA", []string{"pwd", "otp"}, true},
		{"a sign-in with a password only does not", []string{"pwd"}, false},
		{"a sign-in without amr does not", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := &authn.Identity{Subject: "zhang", Claims: map[string]any{"sub": "zhang", "groups": []any{"sales"}}, AMR: tt.amr}
			u, err := resolveUser(identityOnly{}, set, id)
			if err != nil {
				t.Fatal(err)
			}
			if u.MFA != tt.want {
				t.Errorf("user.mfa = %v, want %v", u.MFA, tt.want)
			}
		})
	}
}
