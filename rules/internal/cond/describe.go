package cond

import (
	"fmt"
	"slices"
	"strings"

	"cel.dev/cel-go/common/ast"
	"cel.dev/cel-go/common/operators"
	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/parser"
)

// Words is a condition said in words for a user who holds a known set of
// roles: the role tests (`"admin" in user.roles`) are decided, the rest is
// named by its shape.
type Words struct {
	// Always and Never are set when the role tests decide the condition.
	Always, Never bool
	// Any lists alternatives of which any one is enough, in words:
	// "own (owner_id)", "team (team in the user's teams)",
	// "pool (last_contact_at older than 8760h)", "in schedule
	// business_hours", or the expression's own text for other shapes.
	Any []string
}

// String joins the alternatives with "or".
func (w Words) String() string {
	switch {
	case w.Always:
		return "always"
	case w.Never:
		return "never"
	}
	return strings.Join(w.Any, " or ")
}

// Describe says the expression in words for a user holding exactly roles
// (effective roles: inheritance expanded).
func (e *Expr) Describe(roles []string) Words {
	d := describer{roles: roles, info: e.ast.NativeRep().SourceInfo()}
	t := d.term(e.ast.NativeRep().Expr())
	switch t.val {
	case 1:
		return Words{Always: true}
	case -1:
		return Words{Never: true}
	}
	return Words{Any: t.alts()}
}

// term is a simplified sub-expression: decided (val 1 or -1) or in words.
type term struct {
	val  int8
	or   []term // an alternative of these
	text string // otherwise: the words
}

func (t term) alts() []string {
	if t.or == nil {
		return []string{t.text}
	}
	var out []string
	for _, o := range t.or {
		out = append(out, o.alts()...)
	}
	return out
}

func (t term) words() string {
	if t.or != nil {
		return "(" + strings.Join(t.alts(), " or ") + ")"
	}
	return t.text
}

type describer struct {
	roles []string
	info  *ast.SourceInfo
}

func (d describer) term(x ast.Expr) term {
	if x.Kind() == ast.LiteralKind {
		if b, ok := x.AsLiteral().(types.Bool); ok {
			return decided(bool(b))
		}
	}
	if x.Kind() != ast.CallKind {
		return term{text: d.source(x)}
	}
	call := x.AsCall()
	args := call.Args()
	switch call.FunctionName() {
	case operators.LogicalOr:
		var kids []term
		for _, a := range args {
			t := d.term(a)
			switch t.val {
			case 1:
				return t
			case -1:
				continue
			}
			if t.or != nil {
				kids = append(kids, t.or...)
			} else {
				kids = append(kids, t)
			}
		}
		switch len(kids) {
		case 0:
			return decided(false)
		case 1:
			return kids[0]
		}
		return term{or: kids}
	case operators.LogicalAnd:
		var parts []string
		for _, a := range args {
			t := d.term(a)
			switch t.val {
			case -1:
				return t
			case 1:
				continue
			}
			parts = append(parts, t.words())
		}
		if len(parts) == 0 {
			return decided(true)
		}
		return term{text: strings.Join(parts, " and ")}
	case operators.LogicalNot:
		t := d.term(args[0])
		if t.val != 0 {
			return decided(t.val < 0)
		}
		return term{text: "not " + t.words()}
	case operators.In:
		if role, ok := roleTest(args); ok {
			return decided(slices.Contains(d.roles, role))
		}
		if f, ok := recordField(args[0]); ok {
			if attr, ok := userAttr(args[1]); ok {
				if strings.Contains(attr, "team") {
					return term{text: fmt.Sprintf("team (%s in the user's %s)", f, attr)}
				}
				return term{text: fmt.Sprintf("%s in the user's %s", f, attr)}
			}
		}
	case operators.Equals:
		for _, p := range [][2]ast.Expr{{args[0], args[1]}, {args[1], args[0]}} {
			if f, ok := recordField(p[0]); ok && isUserID(p[1]) {
				return term{text: fmt.Sprintf("own (%s)", f)}
			}
		}
	case operators.Less, operators.LessEquals:
		if f, ok := recordTime(args[0]); ok {
			if age, ok := nowMinus(args[1]); ok {
				return term{text: fmt.Sprintf("pool (%s older than %s)", f, age)}
			}
		}
	case inScheduleFn:
		if len(args) == 2 && args[1].Kind() == ast.LiteralKind {
			if s, ok := args[1].AsLiteral().(types.String); ok {
				return term{text: "in schedule " + string(s)}
			}
		}
	}
	return term{text: d.source(x)}
}

func decided(b bool) term {
	if b {
		return term{val: 1}
	}
	return term{val: -1}
}

// source is the expression's own text (macros as written).
func (d describer) source(x ast.Expr) string {
	s, err := parser.Unparse(x, d.info)
	if err != nil {
		return "a condition"
	}
	return strings.ReplaceAll(s, inScheduleFn+"(now, ", "in_schedule(")
}

// roleTest matches `"name" in user.roles`.
func roleTest(args []ast.Expr) (string, bool) {
	if len(args) != 2 || args[0].Kind() != ast.LiteralKind || args[1].Kind() != ast.SelectKind {
		return "", false
	}
	sel := args[1].AsSelect()
	if sel.FieldName() != "roles" || !isIdent(sel.Operand(), varUser) {
		return "", false
	}
	s, ok := args[0].AsLiteral().(types.String)
	return string(s), ok
}

// recordField matches record.a.b (returns "a.b").
func recordField(x ast.Expr) (string, bool) {
	var path []string
	for x.Kind() == ast.SelectKind {
		sel := x.AsSelect()
		path = append([]string{sel.FieldName()}, path...)
		x = sel.Operand()
	}
	if len(path) == 0 || !isIdent(x, varRecord) {
		return "", false
	}
	return strings.Join(path, "."), true
}

// recordTime matches timestamp(record.a).
func recordTime(x ast.Expr) (string, bool) {
	if x.Kind() != ast.CallKind || x.AsCall().FunctionName() != "timestamp" || len(x.AsCall().Args()) != 1 {
		return "", false
	}
	return recordField(x.AsCall().Args()[0])
}

// nowMinus matches now - duration("D").
func nowMinus(x ast.Expr) (string, bool) {
	if x.Kind() != ast.CallKind || x.AsCall().FunctionName() != operators.Subtract {
		return "", false
	}
	args := x.AsCall().Args()
	if !isIdent(args[0], varNow) || args[1].Kind() != ast.CallKind || args[1].AsCall().FunctionName() != "duration" {
		return "", false
	}
	d := args[1].AsCall().Args()
	if len(d) != 1 || d[0].Kind() != ast.LiteralKind {
		return "", false
	}
	s, ok := d[0].AsLiteral().(types.String)
	return string(s), ok
}

// userAttr matches user.attrs.a.
func userAttr(x ast.Expr) (string, bool) {
	if x.Kind() != ast.SelectKind {
		return "", false
	}
	sel := x.AsSelect()
	op := sel.Operand()
	if op.Kind() != ast.SelectKind || op.AsSelect().FieldName() != "attrs" || !isIdent(op.AsSelect().Operand(), varUser) {
		return "", false
	}
	return sel.FieldName(), true
}

func isUserID(x ast.Expr) bool {
	return x.Kind() == ast.SelectKind && x.AsSelect().FieldName() == "id" && isIdent(x.AsSelect().Operand(), varUser)
}

func isIdent(x ast.Expr, name string) bool { return x.Kind() == ast.IdentKind && x.AsIdent() == name }
