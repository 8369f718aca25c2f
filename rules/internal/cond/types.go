package cond

import (
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
)

// User is `user` in expressions.
type User struct {
	ID      string         // user.id
	Roles   []string       // user.roles
	Attrs   map[string]any // user.attrs
	MFA     bool           // user.mfa
	AuthAge time.Duration  // user.auth_age
}

// AnonymousUser is `user` for a request without a signed-in user: no id,
// no roles, no attributes.
func AnonymousUser() User {
	return User{Roles: []string{}, Attrs: map[string]any{}}
}

// SignedInUser is `user` for a signed-in user at now. roles and attrs may
// be nil (they read as empty). An unknown (zero) authTime makes auth_age
// the largest duration, so that max-age checks in conditions fail closed.
func SignedInUser(id string, roles []string, attrs map[string]any, mfa bool, authTime, now time.Time) User {
	u := User{ID: id, Roles: roles, Attrs: attrs, MFA: mfa}
	if u.Roles == nil {
		u.Roles = []string{}
	}
	if u.Attrs == nil {
		u.Attrs = map[string]any{}
	}
	if !authTime.IsZero() {
		u.AuthAge = now.Sub(authTime)
	} else {
		u.AuthAge = time.Duration(1<<63 - 1)
	}
	return u
}

// Request is `request` in expressions. Set it with Init.
type Request struct {
	method string            // request.method
	path   string            // request.path
	params map[string]string // request.params

	// request.query and request.header are built from rawQuery and
	// rawHeader when an expression first reads them: most rule files never
	// do, and most requests need not pay for two maps.
	rawQuery  url.Values
	rawHeader http.Header
	once      sync.Once
	query     map[string]string
	header    map[string]string
}

// Init sets r for one request: its method (upper case), normalised path,
// path parameters, parsed query and headers.
func (r *Request) Init(method, path string, params map[string]string, query url.Values, header http.Header) {
	*r = Request{method: method, path: path, params: params, rawQuery: query, rawHeader: header}
}

// maps builds request.query and request.header once.
func (r *Request) maps() {
	r.once.Do(func() {
		r.query = single(r.rawQuery)
		r.header = singleHeader(r.rawHeader)
	})
}

// Query is request.query: each parameter given once (or always with the
// same value) by name.
func (r *Request) Query() map[string]string { r.maps(); return r.query }

// Header is request.header: header values by lower-case name, a repeated
// header's values joined by ", ".
func (r *Request) Header() map[string]string { r.maps(); return r.header }

// single keeps the query parameters that have one value (or the same value
// repeated); a parameter given with different values is left out, so a
// condition reading it fails and counts as false.
func single(q url.Values) map[string]string {
	out := make(map[string]string, len(q))
	for k, vs := range q {
		if v, ok := oneValue(vs); ok {
			out[k] = v
		}
	}
	return out
}

// singleHeader gives header values by lower-case name, joined by ", " when
// a header is repeated (as HTTP allows).
func singleHeader(h http.Header) map[string]string {
	out := make(map[string]string, len(h))
	for k, vs := range h {
		out[strings.ToLower(k)] = strings.Join(vs, ", ")
	}
	return out
}

func oneValue(vs []string) (string, bool) {
	if len(vs) == 0 {
		return "", false
	}
	for _, v := range vs[1:] {
		if v != vs[0] {
			return "", false
		}
	}
	return vs[0], true
}

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
		"id":       {types.StringType, func(o any) any { return o.(*User).ID }},
		"roles":    {types.NewListType(types.StringType), func(o any) any { return o.(*User).Roles }},
		"attrs":    {types.NewMapType(types.StringType, types.DynType), func(o any) any { return o.(*User).Attrs }},
		"mfa":      {types.BoolType, func(o any) any { return o.(*User).MFA }},
		"auth_age": {types.DurationType, func(o any) any { return types.Duration{Duration: o.(*User).AuthAge} }},
	},
	requestTypeName: {
		"method": {types.StringType, func(o any) any { return o.(*Request).method }},
		"path":   {types.StringType, func(o any) any { return o.(*Request).path }},
		"params": {types.NewMapType(types.StringType, types.StringType), func(o any) any { return o.(*Request).params }},
		"query":  {types.NewMapType(types.StringType, types.StringType), func(o any) any { return o.(*Request).Query() }},
		"header": {types.NewMapType(types.StringType, types.StringType), func(o any) any { return o.(*Request).Header() }},
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
		return slices.Sorted(maps.Keys(fs)), true
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
	case *User, *Request:
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
