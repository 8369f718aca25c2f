package cond

import (
	"fmt"
	"reflect"
	"slices"
	"strings"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/ast"
	"cel.dev/cel-go/common/operators"
	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
	"cel.dev/cel-go/common/types/traits"
)

// Expr is a compiled, type-checked CEL expression. It is immutable and
// safe for concurrent use.
type Expr struct {
	src  string
	ast  *cel.Ast
	prg  cel.Program
	vars map[string]bool // variables the expression references
}

// Issue is one problem found while compiling an expression.
type Issue struct {
	// Msg says what is wrong.
	Msg string
	// Line is the 1-based line in the source where CEL found the
	// problem; 0 when the problem is the whole expression.
	Line int
	// Column is CEL's 0-based column on Line.
	Column int
}

// Compile compiles and type-checks src in env. scope lists the variables
// the expression may use; boolean says the result must be a condition
// (bool, or dyn checked when evaluated). On a problem it returns nil and
// the issues found.
func Compile(env *Env, src string, scope Scope, boolean bool) (*Expr, []Issue) {
	if strings.TrimSpace(src) == "" {
		return nil, []Issue{{Msg: "empty expression"}}
	}
	checked, iss := env.cel.Compile(src)
	if iss != nil && iss.Err() != nil {
		var out []Issue
		for _, e := range iss.Errors() {
			is := Issue{Msg: strings.TrimSuffix(e.Message, " (in container '')")}
			if loc := e.Location; loc != nil {
				is.Line, is.Column = loc.Line(), loc.Column()
			}
			out = append(out, is)
		}
		return nil, out
	}
	allowed := scope.vars()
	vars := referencedVars(checked)
	for v := range vars {
		ok := false
		for _, a := range allowed {
			ok = ok || a == v
		}
		if !ok {
			return nil, []Issue{{Msg: fmt.Sprintf("%s is not available here (this expression may use: %s)", v, strings.Join(allowed, ", "))}}
		}
	}
	if boolean {
		t := checked.OutputType()
		if !t.IsExactType(cel.BoolType) && !t.IsExactType(cel.DynType) {
			return nil, []Issue{{Msg: fmt.Sprintf("the condition gives %s, not a bool", t)}}
		}
	}
	prg, err := env.cel.Program(checked, cel.EvalOptions(cel.OptOptimize))
	if err != nil {
		return nil, []Issue{{Msg: err.Error()}}
	}
	return &Expr{src: src, ast: checked, prg: prg, vars: vars}, nil
}

// referencedVars lists the top-level variables an expression reads.
func referencedVars(a *cel.Ast) map[string]bool {
	out := map[string]bool{}
	for _, r := range a.NativeRep().ReferenceMap() {
		if r.Name != "" && len(r.OverloadIDs) == 0 {
			name := r.Name
			if i := strings.IndexByte(name, '.'); i >= 0 {
				name = name[:i]
			}
			switch name {
			case varUser, varRequest, varRecord, varNow, varClaims, varApprover, varRequester, varBody:
				out[name] = true
			}
		}
	}
	return out
}

// Source is the expression as written.
func (e *Expr) Source() string { return e.src }

// ReadsRecord reports whether the expression reads `record`.
func (e *Expr) ReadsRecord() bool { return e.vars[varRecord] }

// ReadsBody reports whether the expression reads `body`.
func (e *Expr) ReadsBody() bool { return e.vars[varBody] }

// OutputType is the checked type of the result, as CEL writes it
// ("bool", "dyn", "list(string)", ...).
func (e *Expr) OutputType() string { return e.ast.OutputType().String() }

// RoleLiterals lists the role names the expression tests with
// `"name" in user.roles`, in order of appearance (for lint).
func (e *Expr) RoleLiterals() []string {
	var out []string
	v := ast.NewExprVisitor(func(x ast.Expr) {
		if x.Kind() != ast.CallKind || x.AsCall().FunctionName() != operators.In {
			return
		}
		args := x.AsCall().Args()
		if len(args) != 2 || args[0].Kind() != ast.LiteralKind || args[1].Kind() != ast.SelectKind {
			return
		}
		sel := args[1].AsSelect()
		if sel.FieldName() != "roles" || sel.Operand().Kind() != ast.IdentKind || sel.Operand().AsIdent() != varUser {
			return
		}
		if s, ok := args[0].AsLiteral().(types.String); ok {
			out = append(out, string(s))
		}
	})
	ast.PostOrderVisit(e.ast.NativeRep().Expr(), v)
	return out
}

// ScheduleNames lists the schedules the expression names with a literal
// in_schedule("name"), in order of first appearance (for messages that
// describe them).
func (e *Expr) ScheduleNames() []string {
	var out []string
	v := ast.NewExprVisitor(func(x ast.Expr) {
		if x.Kind() != ast.CallKind || x.AsCall().FunctionName() != inScheduleFn {
			return
		}
		args := x.AsCall().Args()
		if len(args) != 2 || args[1].Kind() != ast.LiteralKind {
			return
		}
		if s, ok := args[1].AsLiteral().(types.String); ok && !slices.Contains(out, string(s)) {
			out = append(out, string(s))
		}
	})
	ast.PostOrderVisit(e.ast.NativeRep().Expr(), v)
	return out
}

// EvalBool evaluates a condition; an error or a non-bool result is
// returned as an error (callers count it as false).
func (e *Expr) EvalBool(a *Activation) (bool, error) {
	v, _, err := e.prg.Eval(a)
	if err != nil {
		return false, err
	}
	b, ok := v.(types.Bool)
	if !ok {
		return false, fmt.Errorf("cond: condition %q gave %s, not a bool", e.src, v.Type().TypeName())
	}
	return bool(b), nil
}

// Eval evaluates the expression.
func (e *Expr) Eval(a *Activation) (Value, error) {
	v, _, err := e.prg.Eval(a)
	return Value{v: v}, err
}

// Value is the result of an expression.
type Value struct {
	v ref.Val
}

// Native is the value as plain Go values: string, float64, int64, uint64,
// bool, nil, []any, map[string]any, time.Time or time.Duration.
func (v Value) Native() any { return celToNative(v.v) }

// Strings reads a string or a list of strings (a string is a list of
// one).
func (v Value) Strings() ([]string, error) {
	if s, ok := v.v.(types.String); ok {
		return []string{string(s)}, nil
	}
	l, ok := v.v.(traits.Lister)
	if !ok {
		return nil, fmt.Errorf("gave %s, not a list of strings", v.v.Type().TypeName())
	}
	n, _ := l.Size().(types.Int)
	out := make([]string, 0, int(n))
	for i := types.Int(0); i < n; i++ {
		s, ok := l.Get(i).(types.String)
		if !ok {
			return nil, fmt.Errorf("item %d is not a string", i)
		}
		out = append(out, string(s))
	}
	return out, nil
}

// celToNative turns a CEL value into plain Go values (string, float64,
// int64, bool, nil, []any, map[string]any, time.Time, time.Duration).
func celToNative(v ref.Val) any {
	switch v := v.(type) {
	case types.String:
		return string(v)
	case types.Bool:
		return bool(v)
	case types.Int:
		return int64(v)
	case types.Uint:
		return uint64(v)
	case types.Double:
		return float64(v)
	case types.Null:
		return nil
	case types.Timestamp:
		return v.Time
	case types.Duration:
		return v.Duration
	}
	if l, ok := v.(interface {
		Size() ref.Val
		Get(ref.Val) ref.Val
	}); ok && v.Type() == types.ListType {
		n, _ := l.Size().(types.Int)
		out := make([]any, 0, int(n))
		for i := types.Int(0); i < n; i++ {
			out = append(out, celToNative(l.Get(i)))
		}
		return out
	}
	if v.Type() == types.MapType {
		if m, err := v.ConvertToNative(reflect.TypeFor[map[string]any]()); err == nil {
			return m
		}
	}
	return v.Value()
}
