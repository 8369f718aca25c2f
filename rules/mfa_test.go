package rules

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// mfaRules is a rule file with the given mfa block (none when "") and one
// route that needs MFA.
func mfaRules(block string) string {
	src := "version: 1\nsubject: {id: claims.sub, roles: claims.groups}\nroles: {sales: {}}\n"
	if block != "" {
		src += "mfa: " + block + "\n"
	}
	return src + "routes:\n  - id: customers\n    match: {path: /api/customers}\n    allow: [sales]\n    mfa: {required: true}\n"
}

func TestAnMFABlockWithoutMethodsCountsTheRFC8176SecondFactors(t *testing.T) {
	type signIn struct {
		amr  []string
		acr  string
		want bool
	}
	otp := signIn{amr: []string{"pwd", "otp"}, want: true}
	pwd := signIn{amr: []string{"pwd"}, want: false}
	tests := []struct {
		name    string
		block   string
		signIns []signIn
	}{
		{"a block with only required counts otp and not a password", "{required: true}",
			[]signIn{otp, pwd, {amr: []string{"hwk"}, want: true}, {amr: []string{"sc"}, want: true}, {amr: []string{"OTP"}, want: false}}},
		{"a file without an mfa block counts the same methods", "",
			[]signIn{otp, pwd, {amr: []string{"face"}, want: true}}},
		{"empty lists count as none listed", "{required: true, amr: [], acr: []}",
			[]signIn{otp, pwd}},
		{"a block listing amr values counts only those", "{required: true, amr: [hwk]}",
			[]signIn{{amr: []string{"otp"}, want: false}, {amr: []string{"hwk"}, want: true}}},
		{"a block listing only acr values counts only those", "{required: true, acr: [urn:mfa]}",
			[]signIn{{amr: []string{"otp"}, want: false}, {acr: "urn:mfa", want: true}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := mustLoad(t, mfaRules(tt.block))
			for _, si := range tt.signIns {
				mfa := s.MFA().Satisfied(si.amr, si.acr)
				if mfa != si.want {
					t.Errorf("a sign-in with amr %v acr %q counts as MFA: %v, want %v (policy %+v)", si.amr, si.acr, mfa, si.want, s.MFA())
				}
				// The route that needs MFA lets exactly those sign-ins through.
				u, err := s.UserFromClaims(map[string]any{"sub": "zhang", "groups": []any{"sales"}}, mfa, time.Now())
				if err != nil {
					t.Fatal(err)
				}
				d := s.Decide(u, request("GET", "/api/customers"))
				if want := map[bool]Outcome{true: Allow, false: StepUp}[si.want]; d.Outcome != want {
					t.Errorf("amr %v acr %q: outcome %v (%s), want %v", si.amr, si.acr, d.Outcome, d.Reason, want)
				}
			}
		})
	}
}

func TestMFAPolicyWithDefaultsDoesNotShareItsList(t *testing.T) {
	p := MFAPolicy{}.WithDefaults()
	p.AMR[0] = "pwd"
	if got := (MFAPolicy{}).WithDefaults().AMR[0]; got != "mfa" {
		t.Errorf("changing one policy's list changed the default: first method %q", got)
	}
}

// TestTheDocumentedDefaultMFAMethodsAreTheCodes keeps docs/signin.md and
// defaultMFAAMR the same list.
func TestTheDocumentedDefaultMFAMethodsAreTheCodes(t *testing.T) {
	doc, err := os.ReadFile("../docs/signin.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`RFC\s+8176\s+second-factor\s+methods[^\x60]*\x60([^\x60]+)\x60`).FindSubmatch(doc)
	if m == nil {
		t.Fatal("docs/signin.md no longer lists the RFC 8176 second-factor methods in backquotes after \"RFC 8176 second-factor methods\"")
	}
	if got := strings.Fields(string(m[1])); !slices.Equal(got, defaultMFAAMR[:]) {
		t.Errorf("docs/signin.md lists %v, the code uses %v", got, defaultMFAAMR)
	}
}
