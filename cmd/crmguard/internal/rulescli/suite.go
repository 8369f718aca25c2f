// Package rulescli implements the `crmguard rules` subcommands: lint, test
// and explain. The test runner drives the crm_guard handler's own logic
// (caddymodule.Guard) in-process, with a fixed identity and a fake
// upstream, so a case passes exactly when the server would behave so.
package rulescli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/crmguard/crmguard/caddymodule/authn"
	"github.com/crmguard/crmguard/rules"
)

// Suite is a test case file (rules-format.md, "Test cases").
type Suite struct {
	// Rules is the rule file, relative to the case file.
	Rules string `yaml:"rules"`
	// Cases are run in order.
	Cases []Case `yaml:"cases"`
}

// Case is one test case.
type Case struct {
	// Name says what the case shows, as a sentence.
	Name string `yaml:"name"`
	// Now is the clock for the case (RFC 3339); empty: the real clock.
	Now string `yaml:"now"`
	// User is the signed-in user; nil: an anonymous request.
	User *User `yaml:"user"`
	// Grants are approved export grants the user (or another) holds
	// (grants.go).
	Grants []CaseGrant `yaml:"grants"`
	// Elevation is the user's active elevation (grants.go).
	Elevation *CaseElevation `yaml:"elevation"`
	// Usage is what the user has already used of usage limits within
	// their windows (limit id → count), added at the case's time
	// (usage.go): `usage: {bulk_view: 480}`.
	Usage map[string]int64 `yaml:"usage"`
	// Request is what the client sends.
	Request Request `yaml:"request"`
	// Upstream is what the CRM answers; nil: 200 with an empty body.
	Upstream *Upstream `yaml:"upstream"`
	// TargetUpstream is what the CRM answers to the guard's fetch of the
	// stored record (a route's `target`); a case whose request makes that
	// fetch must give it.
	TargetUpstream *Upstream `yaml:"target_upstream"`
	// TargetUpstreams answers the fetches of a bulk write's records (one
	// GET per id) by request target ("/api/customers/7"); a fetch not
	// listed gets TargetUpstream.
	TargetUpstreams map[string]*Upstream `yaml:"target_upstreams"`
	// Expect is what the client must receive.
	Expect Expect `yaml:"expect"`
}

// User is a case's fixed identity.
type User struct {
	// ID is the user's id.
	ID string `yaml:"id" json:"id"`
	// Roles are role names (inheritance is applied).
	Roles []string `yaml:"roles" json:"roles"`
	// Groups are identity-provider groups, mapped through role_map.
	Groups []string `yaml:"groups" json:"groups"`
	// Attrs are the user's attributes.
	Attrs map[string]any `yaml:"attrs" json:"attrs"`
	// MFA is true when the sign-in used MFA.
	MFA bool `yaml:"mfa" json:"mfa"`
	// AuthAge is the time since sign-in (e.g. 10m); empty: just signed in.
	AuthAge string `yaml:"auth_age" json:"auth_age"`
	// Claims are raw token claims, run through the rule file's subject
	// block instead of ID/Roles/Groups/Attrs.
	Claims map[string]any `yaml:"claims" json:"claims"`
}

// Request is a case's client request.
type Request struct {
	// Method is the HTTP method (default GET).
	Method string `yaml:"method"`
	// Path is the request target, with an optional query.
	Path string `yaml:"path"`
	// Headers are request headers (a string or a list of strings each).
	Headers map[string]any `yaml:"headers"`
	// Body is a YAML value sent as JSON.
	Body any `yaml:"body"`
	// Raw is the exact body bytes (instead of Body).
	Raw *string `yaml:"raw"`
}

// Upstream is the CRM's answer in a case.
type Upstream struct {
	// Status is the HTTP status (default 200).
	Status int `yaml:"status"`
	// Headers are answer headers.
	Headers map[string]any `yaml:"headers"`
	// Body is a YAML value sent as JSON.
	Body any `yaml:"body"`
	// Raw is the exact body bytes (instead of Body).
	Raw *string `yaml:"raw"`
}

// Expect is what the client must receive.
type Expect struct {
	// Status is the expected status (0: not checked).
	Status int `yaml:"status"`
	// Body is the exact expected JSON body, key order ignored.
	Body any `yaml:"body"`
	// Headers are expected answer headers; a null value means absent.
	Headers map[string]*string `yaml:"headers"`
	// BodyIncludes must each appear in the body bytes.
	BodyIncludes []string `yaml:"body_includes"`
	// BodyExcludes must not appear in the body bytes.
	BodyExcludes []string `yaml:"body_excludes"`
	// Audit holds fields the audit event must contain (objects compared
	// as subsets, everything else exactly).
	Audit map[string]any `yaml:"audit"`
	// UpstreamHeaders are headers the CRM must have received; a null
	// value means the header must not have reached it.
	UpstreamHeaders map[string]*string `yaml:"upstream_headers"`
	// UpstreamCalled, when set, says whether the request reached the CRM
	// (the guard's own fetch of a target record does not count).
	UpstreamCalled *bool `yaml:"upstream_called"`
	// TargetFetched, when set, says whether the guard fetched the stored
	// record the request changes (a route's `target`).
	TargetFetched *bool `yaml:"target_fetched"`
	// UpstreamQuery, when set, is the query the CRM must have received,
	// exactly: every parameter with its value (a string) or values (a
	// list), decoded; {} means none (a route's forward_query shows here).
	UpstreamQuery map[string]any `yaml:"upstream_query"`

	hasBody bool
}

// expectKeys are the keys an `expect` block may hold.
var expectKeys = map[string]bool{"status": true, "body": true, "headers": true, "body_includes": true,
	"body_excludes": true, "audit": true, "upstream_headers": true, "upstream_called": true, "target_fetched": true, "upstream_query": true}

// UnmarshalYAML refuses unknown keys (a custom unmarshaler does not get
// the decoder's KnownFields check) and notes whether `body` was given (a
// null body is a valid expectation).
func (e *Expect) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.MappingNode {
		return fmt.Errorf("line %d: expect must be a mapping", n.Line)
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i]
		if !expectKeys[k.Value] {
			return fmt.Errorf("line %d: unknown key %q in expect", k.Line, k.Value)
		}
		if k.Value == "body" {
			e.hasBody = true
		}
	}
	type plain Expect
	return n.Decode((*plain)(e))
}

// LoadSuite reads a case file. Unknown keys are errors, so a typo cannot
// silently drop an expectation.
func LoadSuite(path string) (*Suite, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("rulescli: reading test file: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var s Suite
	if err := dec.Decode(&s); err != nil {
		return nil, fmt.Errorf("rulescli: %s: %w", path, err)
	}
	if s.Rules == "" {
		return nil, fmt.Errorf("rulescli: %s: `rules` (the rule file to test) is missing", path)
	}
	if len(s.Cases) == 0 {
		return nil, fmt.Errorf("rulescli: %s: no cases", path)
	}
	if !filepath.IsAbs(s.Rules) {
		s.Rules = filepath.Join(filepath.Dir(path), s.Rules)
	}
	for i, c := range s.Cases {
		if c.Name == "" {
			return nil, fmt.Errorf("rulescli: %s: case %d has no name", path, i+1)
		}
		if c.Request.Path == "" {
			return nil, fmt.Errorf("rulescli: %s: case %q has no request path", path, c.Name)
		}
	}
	return &s, nil
}

// bodyBytes turns a YAML body or raw string into bytes.
func bodyBytes(body any, raw *string) ([]byte, error) {
	if raw != nil {
		return []byte(*raw), nil
	}
	if body == nil {
		return nil, nil
	}
	b, err := json.Marshal(body)
	if err != nil {
		return nil, fmt.Errorf("rulescli: body is not JSON-encodable (keys must be strings): %w", err)
	}
	return b, nil
}

// headerValues adds a case's header map to h.
func headerValues(h http.Header, m map[string]any) error {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		switch v := m[k].(type) {
		case string:
			h.Add(k, v)
		case []any:
			for _, item := range v {
				h.Add(k, fmt.Sprint(item))
			}
		case nil:
		default:
			h.Add(k, fmt.Sprint(v))
		}
	}
	return nil
}

// fixedIdentity is the runner's authn.Provider: every request comes from
// the case's user, already verified.
type fixedIdentity struct {
	user      *User
	now       time.Time
	elevation *CaseElevation
}

// Identify returns the case's user.
func (p *fixedIdentity) Identify(*http.Request) (*authn.Identity, error) {
	if p.user == nil {
		return nil, nil
	}
	return &authn.Identity{Subject: p.user.ID, Claims: p.user.Claims}, nil
}

// Challenge answers as the OIDC provider answers an API client, with the
// same writer.
func (p *fixedIdentity) Challenge(w http.ResponseWriter, r *http.Request, need authn.Need) error {
	authn.WriteChallenge(w, r, need)
	return nil
}

// Handle serves no endpoints.
func (p *fixedIdentity) Handle(http.ResponseWriter, *http.Request) (bool, error) { return false, nil }

// ResolveUser builds the rules user from the case, through the rule
// file's subject block when claims are given, through role_map when
// groups are.
func (p *fixedIdentity) ResolveUser(set *rules.Set, _ *authn.Identity) (*rules.User, error) {
	u, err := p.user.resolve(set, p.now)
	if err != nil {
		return nil, err
	}
	return elevate(set, u, p.elevation)
}

func (u *User) resolve(set *rules.Set, now time.Time) (*rules.User, error) {
	authTime := now
	if u.AuthAge != "" {
		age, err := time.ParseDuration(u.AuthAge)
		if err != nil {
			return nil, fmt.Errorf("rulescli: user.auth_age %q: %w", u.AuthAge, err)
		}
		authTime = now.Add(-age)
	}
	switch {
	case u.Claims != nil:
		return set.UserFromClaims(u.Claims, u.MFA, authTime)
	case u.Groups != nil:
		return set.UserFromGroups(u.ID, u.Groups, u.Attrs, u.MFA, authTime), nil
	default:
		return set.UserFromRoles(u.ID, u.Roles, u.Attrs, u.MFA, authTime), nil
	}
}
