package rules

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/crmguard/crmguard/rules/internal/cond"
	"github.com/crmguard/crmguard/rules/mask"
	"github.com/crmguard/crmguard/rules/rewrite"
	"go.yaml.in/yaml/v3"
)

// Load time. The files named load_*.go hold the compiler of rule files:
// the loader reads the YAML strictly (load_yaml.go), validates every key,
// compiles conditions through package cond (load_cond.go), paths through
// urlpath and rewrite, and builds the immutable Set and its routes
// (route.go); it lints what loads but looks wrong (load_lint.go). Nothing
// in them runs per request. The files without the prefix hold what does
// (Decide and the Decision's methods) and the types both share.

// Reserved names in `allow` that are not roles.
const (
	allowPublic        = "public"
	allowAuthenticated = "authenticated"
)

// Built-in masks.
var builtinMasks = mask.Names()

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

// loader holds what compiling one file needs.
type loader struct {
	diag
	cfg           loadConfig
	set           *Set
	declared      map[string]*yaml.Node // role -> its key node
	used          map[string]bool       // roles referenced anywhere
	usedAt        []roleUse
	roleNode      *yaml.Node
	workflowState // load_approvals.go
}

type roleUse struct {
	role string
	node *yaml.Node
	key  string
}

// compileFile compiles one rule file named name: the loader's entry.
func compileFile(name string, data []byte, cfg loadConfig) (*Set, error) {
	l := &loader{
		diag:     diag{file: name},
		cfg:      cfg,
		set:      &Set{file: name, hashKey: cfg.hashKey},
		declared: map[string]*yaml.Node{},
		used:     map[string]bool{},
	}
	l.policyUses = map[string]bool{}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, &LoadError{Errors: []*Error{yamlSyntaxError(name, err)}}
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 {
		return nil, &LoadError{Errors: []*Error{{Position: Position{File: name}, Msg: "the rule file is empty"}}}
	}
	l.file(doc.Content[0])
	if len(l.errs) > 0 {
		sort.SliceStable(l.errs, func(i, j int) bool {
			a, b := l.errs[i], l.errs[j]
			if a.Line != b.Line {
				return a.Line < b.Line
			}
			return a.Column < b.Column
		})
		return nil, &LoadError{Errors: l.errs}
	}
	l.lint()
	l.set.warnings = l.warns
	l.set.version = fileVersion(doc.Content[0])
	return l.set, nil
}

func (l *loader) file(root *yaml.Node) {
	top, ok := l.entries(root, "", "version", "default", "mode", "subject", "role_map", "roles", "mfa", "schedules", "masks", "approvals", "elevations", "routes", "limits")
	if !ok {
		return
	}
	byName := map[string]entry{}
	for _, e := range top {
		byName[e.name] = e
	}
	s := l.set
	if e, ok := byName["version"]; ok {
		if v, ok := l.integer(e.val, "version", 1); ok && v != 1 {
			l.errorf(e.val, "version", "unsupported version %d (this build reads version 1)", v)
		}
	} else {
		l.errorf(root, "version", "missing: write `version: 1` at the top")
	}
	if e, ok := byName["default"]; ok {
		if v, ok := l.str(e.val, "default"); ok {
			switch v {
			case "deny":
			case "allow":
				s.defAllow = true
			default:
				l.errorf(e.val, "default", "want deny or allow, got %q", v)
			}
		}
	}
	if e, ok := byName["mode"]; ok {
		if v, ok := l.str(e.val, "mode"); ok {
			switch v {
			case "enforce":
			case "shadow":
				s.mode = Shadow
			default:
				l.errorf(e.val, "mode", "want enforce or shadow, got %q", v)
			}
		}
	}
	// Order matters: roles before everything that names them, schedules
	// before any CEL.
	if e, ok := byName["roles"]; ok {
		l.roles(e.val)
	} else {
		l.errorf(root, "roles", "missing: declare the roles the file uses")
	}
	if e, ok := byName["role_map"]; ok {
		l.roleMap(e.val)
	}
	if e, ok := byName["mfa"]; ok {
		l.mfa(e.val)
	}
	s.mfa = s.mfa.WithDefaults() // a block that lists no methods, or none, means RFC 8176's
	s.schedules = map[string]*schedule{}
	if e, ok := byName["schedules"]; ok {
		l.schedules(e.val)
	}
	s.masks = map[string]mask.Func{}
	if e, ok := byName["masks"]; ok {
		l.masks(e.val)
	}
	scheds := make(map[string]cond.Schedule, len(s.schedules))
	for name, sc := range s.schedules {
		scheds[name] = sc
	}
	env, err := cond.NewEnv(scheds)
	if err != nil {
		l.errorf(root, "", "%v", err)
		return
	}
	s.env = env
	var subj *yaml.Node
	if e, ok := byName["subject"]; ok {
		subj = e.val
	}
	l.subject(subj)
	l.approvals(byName["approvals"].val)   // load_approvals.go
	l.elevations(byName["elevations"].val) // after approvals, which it names
	if e, ok := byName["routes"]; ok {
		l.routes(e.val)
	} else {
		l.errorf(root, "routes", "missing: a rule file needs routes")
	}
	l.limits(byName["limits"].val) // load_limits.go: after routes, whose ids it matches
}

func (l *loader) roles(n *yaml.Node) {
	l.roleNode = n
	es, ok := l.entries(n, "roles")
	if !ok {
		return
	}
	parents := map[string][]string{}
	parentNode := map[string]*yaml.Node{}
	for _, e := range es {
		key := joinKey("roles", e.name)
		if e.name == allowPublic || e.name == allowAuthenticated || !validName(e.name) {
			l.errorf(e.key, key, "%q cannot be a role name (letters, digits, _ - . only; public and authenticated are reserved)", e.name)
			continue
		}
		l.declared[e.name] = e.key
		fs, _ := l.entries(e.val, key, "inherits", "description")
		parents[e.name] = nil
		for _, f := range fs {
			switch f.name {
			case "inherits":
				if ps, ok := l.strList(f.val, joinKey(key, "inherits")); ok {
					parents[e.name] = ps
					parentNode[e.name] = f.val
				}
			case "description":
				l.str(f.val, joinKey(key, "description"))
			}
		}
	}
	for r, ps := range parents {
		for _, p := range ps {
			if _, ok := parents[p]; !ok {
				l.errorf(parentNode[r], joinKey(joinKey("roles", r), "inherits"), "unknown role %q", p)
				continue
			}
		}
	}
	// Expand inheritance, finding cycles.
	eff := map[string][]string{}
	var visit func(r string, stack []string) []string
	visit = func(r string, stack []string) []string {
		if got, ok := eff[r]; ok {
			return got
		}
		for i, s := range stack {
			if s == r {
				cycle := append(append([]string(nil), stack[i:]...), r)
				l.errorf(l.declared[r], joinKey(joinKey("roles", r), "inherits"), "inheritance cycle: %s", strings.Join(cycle, " -> "))
				return nil
			}
		}
		set := map[string]bool{r: true}
		for _, p := range parents[r] {
			if _, ok := parents[p]; !ok {
				continue
			}
			for _, a := range visit(p, append(stack, r)) {
				set[a] = true
			}
		}
		out := slices.Sorted(maps.Keys(set))
		eff[r] = out
		return out
	}
	for _, r := range slices.Sorted(maps.Keys(parents)) {
		visit(r, nil)
	}
	l.set.roles = eff
}

func validName(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if !(c == '_' || c == '-' || c == '.' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// useRoles records role references for lint and checks reserved names.
func (l *loader) useRoles(n *yaml.Node, key string, roles []string) {
	for _, r := range roles {
		l.used[r] = true
		l.usedAt = append(l.usedAt, roleUse{role: r, node: n, key: key})
	}
}

func (l *loader) roleMap(n *yaml.Node) {
	es, ok := l.entries(n, "role_map")
	if !ok {
		return
	}
	m := map[string][]string{}
	for _, e := range es {
		key := joinKey("role_map", e.name)
		roles, ok := l.strList(e.val, key)
		if !ok {
			continue
		}
		for _, r := range roles {
			if _, ok := l.declared[r]; !ok {
				l.errorf(e.val, key, "maps to undeclared role %q", r)
			}
		}
		m[e.name] = roles
	}
	l.set.roleMap = m
}

func (l *loader) mfa(n *yaml.Node) {
	es, _ := l.entries(n, "mfa", "required", "amr", "acr")
	p := &l.set.mfa
	for _, e := range es {
		key := joinKey("mfa", e.name)
		switch e.name {
		case "required":
			p.Required, _ = l.boolean(e.val, key)
		case "amr":
			p.AMR, _ = l.strList(e.val, key)
		case "acr":
			p.ACR, _ = l.strList(e.val, key)
		}
	}
}

func (l *loader) masks(n *yaml.Node) {
	es, _ := l.entries(n, "masks")
	for _, e := range es {
		key := joinKey("masks", e.name)
		if contains(builtinMasks, e.name) {
			l.errorf(e.key, key, "%q is a built-in mask and cannot be redefined", e.name)
			continue
		}
		fs, _ := l.entries(e.val, key, "keep_start", "keep_end", "char")
		m := mask.Custom{Char: "*"}
		for _, f := range fs {
			fk := joinKey(key, f.name)
			switch f.name {
			case "keep_start":
				m.KeepStart, _ = l.integer(f.val, fk, 0)
			case "keep_end":
				m.KeepEnd, _ = l.integer(f.val, fk, 0)
			case "char":
				if c, ok := l.str(f.val, fk); ok {
					if len([]rune(c)) != 1 {
						l.errorf(f.val, fk, "want one character, got %q", c)
					}
					m.Char = c
				}
			}
		}
		fn, err := mask.New(m)
		if err != nil {
			l.errorf(e.val, key, "%v", err)
			continue
		}
		l.set.masks[e.name] = fn
	}
}

func (l *loader) subject(n *yaml.Node) {
	s := &l.set.subject
	idSrc, rolesSrc := "claims.sub", `has(claims.groups) ? claims.groups : []`
	var idNode, rolesNode *yaml.Node
	if n != nil {
		es, _ := l.entries(n, "subject", "id", "roles", "attrs")
		for _, e := range es {
			key := joinKey("subject", e.name)
			switch e.name {
			case "id":
				idSrc, _ = l.str(e.val, key)
				idNode = e.val
			case "roles":
				rolesSrc, _ = l.str(e.val, key)
				rolesNode = e.val
			case "attrs":
				as, _ := l.entries(e.val, key)
				for _, a := range as {
					ak := joinKey(key, a.name)
					if src, ok := l.str(a.val, ak); ok {
						if x := l.expr(a.val, ak, src, cond.ClaimsScope, false); x != nil {
							s.attrs = append(s.attrs, namedExpr{name: a.name, e: x})
						}
					}
				}
			}
		}
	}
	s.id = l.expr(idNode, "subject.id", idSrc, cond.ClaimsScope, false)
	s.roles = l.expr(rolesNode, "subject.roles", rolesSrc, cond.ClaimsScope, false)
	if s.roles != nil {
		t := s.roles.OutputType()
		if t != "dyn" && !strings.HasPrefix(t, "list(") {
			l.errorf(rolesNode, "subject.roles", "gives %s, not a list of strings", t)
		}
	}
}

// checkFieldPath compiles a field path with the rewriter's parser.
func checkFieldPath(p string) (rewrite.Path, error) {
	path, err := rewrite.ParsePath(p)
	if err != nil {
		return path, fmt.Errorf("%s", strings.TrimPrefix(err.Error(), "rewrite: "))
	}
	return path, nil
}

var yamlLine = regexp.MustCompile(`^yaml: line (\d+): `)

// yamlSyntaxError places a YAML syntax error at its line.
func yamlSyntaxError(name string, err error) *Error {
	msg := err.Error()
	pos := Position{File: name}
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		pos.Line, _ = strconv.Atoi(m[1])
		pos.Column = 1
		msg = msg[len(m[0]):]
	}
	return &Error{Position: pos, Msg: "YAML syntax: " + strings.TrimPrefix(msg, "yaml: ")}
}
