package rules

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/url"
	"sort"
	"strings"

	"github.com/crmguard/crmguard/rules/internal/urlpath"
)

// CanonicalRequest is the one canonical form of a request that export
// grants are bound to. It is used both when a grant is asked for (POST
// /.crmguard/approvals names a method and a request target) and when a
// request is checked against a grant, so the two always agree.
//
// target is the request target as sent: the escaped path with an optional
// query ("/api/customers/export?team=east"). The form is
//
//		METHOD SP PATH [ "?" QUERY ]
//
//	  - METHOD in upper case;
//	  - PATH normalised as routes see it (percent-decoding, dot segments,
//	    duplicate and trailing slashes; a path the rules refuse is an error),
//	    then each segment escaped again with url.PathEscape;
//	  - QUERY: every key=value pair decoded (form rules: "+" and "%20" are
//	    both a space, hex case does not matter), sorted by key, stable, so
//	    repeated keys keep their order (a=1&a=2 and a=2&a=1 differ: servers
//	    read the first or the last), and encoded again with url.QueryEscape.
//	    Empty pairs are dropped; "a" and "a=" are the same; an empty query
//	    is no query. Keys, values and path segments keep their case.
//
// A target whose query cannot be decoded (a bad escape, a ";" separator,
// which servers read differently) is an error: it could not be bound.
func CanonicalRequest(method, target string) (string, error) {
	m := strings.ToUpper(strings.TrimSpace(method))
	if !validMethod(m) {
		return "", fmt.Errorf("rules: canonical request: the method %q is not a method", method)
	}
	if i := strings.IndexByte(target, '#'); i >= 0 {
		return "", fmt.Errorf("rules: canonical request: %q has a fragment, which is never sent", target)
	}
	rawPath, rawQuery, _ := strings.Cut(target, "?")
	_, segs, err := urlpath.Normalize(rawPath)
	if err != nil {
		return "", fmt.Errorf("rules: canonical request: %w", err)
	}
	var b strings.Builder
	b.WriteString(m)
	b.WriteString(" ")
	if len(segs) == 0 {
		b.WriteString("/")
	}
	for _, s := range segs {
		b.WriteString("/")
		b.WriteString(url.PathEscape(s))
	}
	q, err := canonicalQuery(rawQuery)
	if err != nil {
		return "", fmt.Errorf("rules: canonical request: %w", err)
	}
	if q != "" {
		b.WriteString("?")
		b.WriteString(q)
	}
	return b.String(), nil
}

// canonicalQuery decodes, sorts (stably, by key) and re-encodes a raw
// query string.
func canonicalQuery(raw string) (string, error) {
	type pair struct{ k, v string }
	var pairs []pair
	for _, part := range strings.Split(raw, "&") {
		if part == "" {
			continue
		}
		if strings.ContainsRune(part, ';') {
			return "", fmt.Errorf("the query part %q holds a \";\", which servers read differently", part)
		}
		rk, rv, _ := strings.Cut(part, "=")
		k, err := url.QueryUnescape(rk)
		if err != nil {
			return "", fmt.Errorf("the query key %q cannot be decoded: %w", rk, err)
		}
		v, err := url.QueryUnescape(rv)
		if err != nil {
			return "", fmt.Errorf("the query value %q cannot be decoded: %w", rv, err)
		}
		pairs = append(pairs, pair{k, v})
	}
	sort.SliceStable(pairs, func(i, j int) bool { return pairs[i].k < pairs[j].k })
	var b strings.Builder
	for i, p := range pairs {
		if i > 0 {
			b.WriteByte('&')
		}
		b.WriteString(url.QueryEscape(p.k))
		b.WriteByte('=')
		b.WriteString(url.QueryEscape(p.v))
	}
	return b.String(), nil
}

// boundIDsKey is the key under which CanonicalWrite binds the ids a bulk
// write names (a body guard's path never holds "@").
const boundIDsKey = "@ids"

// CanonicalWrite is the canonical form of a write whose approval is bound to
// the values it sets (a handover approved for owner_id "wang" never allows
// owner_id "li"): CanonicalRequest(method, target), a space, and values as
// one JSON object with sorted keys and no HTML escaping. values maps each
// bound body guard's path ("owner_id", "deal.stage") to the value the body
// sets, as the body reader decoded it (strings, json.Number, bool, nil,
// lists, objects); "@ids" holds the ids a bulk write names. A form's values
// are strings, so owner_id=wang and {"owner_id":"wang"} bind alike. With
// no values it is CanonicalRequest.
//
// This is the one place the binding is written: the guard checks a request
// against it, and the approval workflow asks for a grant with it
// (Decision.WriteGrantQuery).
func CanonicalWrite(method, target string, values map[string]any) (string, error) {
	req, err := CanonicalRequest(method, target)
	if err != nil || len(values) == 0 {
		return req, err
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(values); err != nil { // encoding/json sorts map keys
		return "", fmt.Errorf("rules: canonical request: the values set cannot be written: %w", err)
	}
	return req + " " + strings.TrimSuffix(b.String(), "\n"), nil
}
