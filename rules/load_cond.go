package rules

import (
	"strings"

	"github.com/crmguard/crmguard/rules/internal/cond"
	"go.yaml.in/yaml/v3"
)

// expr compiles the expression src found at node n (key names the place)
// in the file's CEL environment. scope lists the variables it may use;
// boolean says the result must be a condition. Problems are reported with
// their position; nil is returned then.
func (l *loader) expr(n *yaml.Node, key, src string, scope cond.Scope, boolean bool) *cond.Expr {
	e, issues := cond.Compile(l.set.env, src, scope, boolean)
	l.exprIssues(n, key, src, issues)
	return e
}

// guardCondition compiles the condition written at n (a string) in scope,
// and counts (or warns about) the role names it tests as lintRoleLiterals
// does: the `when`, `deny_unless`, `allow_if` and `visible` of guards and
// limits. nil when n is no string or the condition does not compile (the
// problem is reported).
func (l *loader) guardCondition(n *yaml.Node, key string, scope cond.Scope) *cond.Expr {
	src, ok := l.str(n, key)
	if !ok {
		return nil
	}
	e := l.expr(n, key, src, scope, true)
	if e != nil {
		l.lintRoleLiterals(n, key, e)
	}
	return e
}

// condition compiles a record condition at n (with its native predicate
// when it has one).
func (l *loader) condition(n *yaml.Node, key, src string) *cond.Condition {
	c, issues := cond.CompileCondition(l.set.env, src)
	if c == nil {
		l.exprIssues(n, key, src, issues)
		return nil
	}
	l.lintRoleLiterals(n, key, c.Expr())
	return c
}

// exprIssues reports the problems of the expression src at n.
func (l *loader) exprIssues(n *yaml.Node, key, src string, issues []cond.Issue) {
	for _, is := range issues {
		l.errs = append(l.errs, &Error{Position: exprPos(&l.diag, n, key, src, is), Msg: is.Msg})
	}
}

// exprPos places a problem of an expression: inside a one-line plain or
// quoted scalar the column is exact; otherwise the scalar's start is
// given.
func exprPos(d *diag, n *yaml.Node, key, src string, is cond.Issue) Position {
	p := d.pos(n, key)
	if n == nil || is.Line != 1 || strings.Contains(src, "\n") {
		return p
	}
	switch n.Style {
	case 0:
		p.Column += is.Column
	case yaml.SingleQuotedStyle, yaml.DoubleQuotedStyle:
		if !strings.ContainsAny(n.Value, `\'`) {
			p.Column += is.Column + 1
		}
	}
	return p
}

// lintRoleLiterals warns about `"name" in user.roles` with an undeclared
// role name, and counts declared ones as used.
func (l *loader) lintRoleLiterals(n *yaml.Node, key string, e *cond.Expr) {
	l.useRoles(n, key, e.RoleLiterals())
}
