// Package cond is the condition machinery of the rule engine: the CEL
// environment a rule file's expressions compile in, the `user`, `request`
// and `record` values they read, the activation that binds them for one
// request, and the native predicates that evaluate common record
// conditions without CEL, prepared once per request.
//
// How it is used: at load, package rules builds one Env per rule file
// (NewEnv), compiles every expression with Compile (subject, when,
// deny_unless, allow_if) or CompileCondition (record conditions: visible,
// a field's when / unless), and, per route, gathers the record values the
// native predicates read (RecordKeys) for the rewriter to capture. Per
// request, it fills an Activation (User, Request, now), evaluates request
// conditions with Expr.EvalBool and prepares record conditions with
// Condition.Prepare; the prepared State's Eval is the rewriter's
// per-record predicate. A target's allow_if is compiled with
// CompileWriteCondition (it may read `body`, a request constant) and
// evaluated on each stored record's JSON with State.EvalJSON.
//
// A native predicate must give exactly CEL's answer, errors included: the
// differential tests and fuzzers in this package (TestNativeAndCELAgree,
// FuzzNativeAgreesWithCEL, FuzzCELTimestamp) check it.
//
// Decisions where the rule format is silent:
//   - request.query holds a parameter given once (or always with the same
//     value); one given with different values is absent, so a condition
//     reading it fails and counts as false. request.header joins a
//     repeated header's values with ", ".
//   - An unknown sign-in time makes user.auth_age the largest duration, so
//     that max-age checks in conditions fail closed.
//   - A record key present twice with different values does not exist for
//     a condition (the rewriter's rule).
//   - A key of `body` is found as encoding/json binds a struct field: the
//     exact key, else the one equal to it under Unicode case folding
//     (package rules refuses bodies where two keys fold alike).
//
// It imports the standard library, cel-go, gjson and rules/rewrite (the
// record a predicate reads and the paths of its values); never package
// rules, yaml or anything that serves HTTP.
package cond

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common"
	"cel.dev/cel-go/common/ast"
	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
	"cel.dev/cel-go/ext"
)

// The variables an expression may use, by name.
const (
	varUser    = "user"
	varRequest = "request"
	varRecord  = "record"
	varNow     = "now"
	varClaims  = "claims"
	varBody    = "body"
	// approver and requester are the users of an approval step's `when`.
	varApprover  = "approver"
	varRequester = "requester"
)

// Scope says which variables an expression may use.
type Scope uint8

const (
	// ClaimsScope is the subject block: `claims` only.
	ClaimsScope Scope = iota
	// RequestScope is a condition on the request: `user`, `request` and
	// `now` (a route's when, a body guard's deny_unless).
	RequestScope
	// RecordScope is a condition that may also read `record` (visible, a
	// field's when / unless, a target's allow_if).
	RecordScope
	// ApprovalScope is an approval step's `when`: `approver` and
	// `requester` (both of the user type) and `now`.
	ApprovalScope
	// BodyScope is a condition on the request and the values its body
	// sets: `user`, `request`, `now` and `body` (a body guard's
	// deny_unless).
	BodyScope
	// WriteScope is a condition on a write: `user`, `request`, `now`,
	// `body` and the stored `record` it changes (a target's allow_if, a
	// body guard's allow_if).
	WriteScope
)

// vars lists the variables of a scope.
func (s Scope) vars() []string {
	switch s {
	case ClaimsScope:
		return []string{varClaims}
	case RequestScope:
		return []string{varUser, varRequest, varNow}
	case ApprovalScope:
		return []string{varApprover, varRequester, varNow}
	case BodyScope:
		return []string{varUser, varRequest, varNow, varBody}
	case WriteScope:
		return []string{varUser, varRequest, varNow, varRecord, varBody}
	}
	return []string{varUser, varRequest, varNow, varRecord}
}

// Schedule is a named `schedules` entry as in_schedule(name) reads it.
type Schedule interface {
	// Contains reports whether t falls in the schedule.
	Contains(t time.Time) bool
}

// Env is the CEL environment of one rule file. It is immutable and safe
// for concurrent use.
type Env struct {
	cel *cel.Env
}

// inScheduleFn is the function in_schedule(name) expands to: the macro
// passes `now` so that the function needs no per-request binding.
const inScheduleFn = "crmguard_in_schedule"

// NewEnv builds the CEL environment for one rule file; schedules are the
// file's schedules by name (in_schedule with an unknown literal name is a
// compile error).
func NewEnv(schedules map[string]Schedule) (*Env, error) {
	expand := func(eh cel.MacroExprFactory, target ast.Expr, args []ast.Expr) (ast.Expr, *common.Error) {
		arg := args[0]
		if arg.Kind() == ast.LiteralKind {
			name, ok := arg.AsLiteral().(types.String)
			if !ok {
				return nil, eh.NewError(arg.ID(), "in_schedule takes a schedule name (a string)")
			}
			if _, ok := schedules[string(name)]; !ok {
				return nil, eh.NewError(arg.ID(), fmt.Sprintf("unknown schedule %q (declared: %s)", string(name), strings.Join(slices.Sorted(maps.Keys(schedules)), ", ")))
			}
		}
		return eh.NewCall(inScheduleFn, eh.NewIdent(varNow), eh.Copy(arg)), nil
	}
	inSchedule := func(lhs, rhs ref.Val) ref.Val {
		now, ok := lhs.(types.Timestamp)
		if !ok {
			return types.NewErr("in_schedule: now is not a timestamp")
		}
		name, ok := rhs.(types.String)
		if !ok {
			return types.NewErr("in_schedule: the schedule name is not a string")
		}
		s, ok := schedules[string(name)]
		if !ok {
			return types.NewErr("in_schedule: unknown schedule %q", string(name))
		}
		return types.Bool(s.Contains(now.Time))
	}
	env, err := cel.NewEnv(
		objTypesOption(),
		cel.Variable(varUser, cel.ObjectType(userTypeName)),
		cel.Variable(varRequest, cel.ObjectType(requestTypeName)),
		cel.Variable(varRecord, cel.MapType(cel.StringType, cel.DynType)),
		cel.Variable(varNow, cel.TimestampType),
		cel.Variable(varClaims, cel.MapType(cel.StringType, cel.DynType)),
		// body is the request body's top-level object (bodyvalue.go).
		cel.Variable(varBody, cel.MapType(cel.StringType, cel.DynType)),
		cel.Variable(varApprover, cel.ObjectType(userTypeName)),
		cel.Variable(varRequester, cel.ObjectType(userTypeName)),
		cel.Macros(cel.GlobalMacro("in_schedule", 1, expand)),
		cel.Function(inScheduleFn, cel.Overload("crmguard_in_schedule_timestamp_string",
			[]*cel.Type{cel.TimestampType, cel.StringType}, cel.BoolType,
			cel.BinaryBinding(inSchedule))),
		ext.Strings(),
	)
	if err != nil {
		return nil, fmt.Errorf("cond: building the CEL environment: %w", err)
	}
	return &Env{cel: env}, nil
}
