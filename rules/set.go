package rules

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"github.com/crmguard/crmguard/rules/internal/cond"

	"github.com/crmguard/crmguard/rules/mask"
)

// Set is a compiled, immutable rule set, safe for concurrent use.
type Set struct {
	file      string
	defAllow  bool
	mode      Mode
	subject   subjectSpec
	roleMap   map[string][]string // IdP group -> roles; nil: groups are role names
	roles     map[string][]string // declared role -> effective roles (itself and every ancestor), sorted
	mfa       MFAPolicy
	schedules map[string]*schedule
	masks     map[string]mask.Func
	routes    []*route
	// approvals and elevations are the workflow blocks (approvals.go).
	approvals  map[string]*ApprovalPolicy
	elevations map[string]*Elevation
	warnings   []Warning
	hashKey    []byte
	env        *cond.Env
	plans      sync.Map // planKey -> *sync.Pool of *pooledPlan (see response.go)
}

// LoadOption changes how a rule file is loaded.
type LoadOption func(*loadConfig)

type loadConfig struct {
	hashKey []byte
}

// WithHashKey sets the secret key of the `hash` field action (keyed
// HMAC-SHA256). Without it, a file that uses `hash` does not load: a hash
// without a secret key would be a reversible dictionary lookup.
func WithHashKey(key []byte) LoadOption {
	return func(c *loadConfig) { c.hashKey = append([]byte(nil), key...) }
}

// Load compiles a rule file. name is the file name used in messages. A
// file with problems returns a *LoadError listing each of them.
func Load(name string, data []byte, opts ...LoadOption) (*Set, error) {
	var cfg loadConfig
	for _, o := range opts {
		o(&cfg)
	}
	return compileFile(name, data, cfg)
}

// LoadFile reads and compiles the rule file at path.
func LoadFile(path string, opts ...LoadOption) (*Set, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("rules: reading the rule file: %w", err)
	}
	return Load(filepath.Base(path), data, opts...)
}

// Warnings lists the lint warnings found when the set was loaded.
func (s *Set) Warnings() []Warning { return append([]Warning(nil), s.warnings...) }

// Warning is a lint finding that does not stop the file from loading.
type Warning struct {
	Position
	// Msg says what looks wrong.
	Msg string
}

// Mode is the rule set's mode.
func (s *Set) Mode() Mode { return s.mode }

// MFA is the rule set's MFA policy.
func (s *Set) MFA() MFAPolicy {
	p := s.mfa
	p.AMR = append([]string(nil), p.AMR...)
	p.ACR = append([]string(nil), p.ACR...)
	return p
}

// Roles lists the declared roles, sorted.
func (s *Set) Roles() []string { return slices.Sorted(maps.Keys(s.roles)) }
