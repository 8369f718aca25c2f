package rules

import (
	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
)

// The CEL object types `user` and `request`, described by hand so that
// every field has a precise type (a typo such as user.rolse fails the
// load) and is read straight from the Go struct without reflection.
const (
	userTypeName    = "crmguard.User"
	requestTypeName = "crmguard.Request"
)

type objField struct {
	t   *types.Type
	get func(any) any
}

var objFields = map[string]map[string]objField{
	userTypeName: {
		"id":       {types.StringType, func(o any) any { return o.(*celUser).ID }},
		"roles":    {types.NewListType(types.StringType), func(o any) any { return o.(*celUser).Roles }},
		"attrs":    {types.NewMapType(types.StringType, types.DynType), func(o any) any { return o.(*celUser).Attrs }},
		"mfa":      {types.BoolType, func(o any) any { return o.(*celUser).MFA }},
		"auth_age": {types.DurationType, func(o any) any { return types.Duration{Duration: o.(*celUser).AuthAge} }},
	},
	requestTypeName: {
		"method": {types.StringType, func(o any) any { return o.(*celRequest).Method }},
		"path":   {types.StringType, func(o any) any { return o.(*celRequest).Path }},
		"params": {types.NewMapType(types.StringType, types.StringType), func(o any) any { return o.(*celRequest).Params }},
		"query":  {types.NewMapType(types.StringType, types.StringType), func(o any) any { return o.(*celRequest).Query() }},
		"header": {types.NewMapType(types.StringType, types.StringType), func(o any) any { return o.(*celRequest).Header() }},
	},
}

// objProvider adds the user and request types to CEL's type provider.
type objProvider struct {
	types.Provider
}

// FindStructType implements types.Provider.
func (p objProvider) FindStructType(name string) (*types.Type, bool) {
	if _, ok := objFields[name]; ok {
		return types.NewTypeTypeWithParam(types.NewObjectType(name)), true
	}
	return p.Provider.FindStructType(name)
}

// FindStructFieldNames implements types.Provider.
func (p objProvider) FindStructFieldNames(name string) ([]string, bool) {
	if fs, ok := objFields[name]; ok {
		return sortedKeys(fs), true
	}
	return p.Provider.FindStructFieldNames(name)
}

// FindStructFieldType implements types.Provider.
func (p objProvider) FindStructFieldType(name, field string) (*types.FieldType, bool) {
	fs, ok := objFields[name]
	if !ok {
		return p.Provider.FindStructFieldType(name, field)
	}
	f, ok := fs[field]
	if !ok {
		return nil, false
	}
	return &types.FieldType{
		Type:    f.t,
		IsSet:   func(o any) bool { _, ok := unwrapObj(o); return ok },
		GetFrom: func(o any) (any, error) { x, _ := unwrapObj(o); return f.get(x), nil },
	}, true
}

func unwrapObj(o any) (any, bool) {
	if v, ok := o.(ref.Val); ok {
		o = v.Value()
	}
	switch o.(type) {
	case *celUser, *celRequest:
		return o, true
	}
	return o, false
}

// NewValue implements types.Provider: user and request cannot be built
// in an expression.
func (p objProvider) NewValue(name string, fields map[string]ref.Val) ref.Val {
	if _, ok := objFields[name]; ok {
		return types.NewErr("%s values cannot be created in a rule", name)
	}
	return p.Provider.NewValue(name, fields)
}

func objTypesOption() cel.EnvOption {
	return func(e *cel.Env) (*cel.Env, error) {
		return cel.CustomTypeProvider(objProvider{Provider: e.CELTypeProvider()})(e)
	}
}
