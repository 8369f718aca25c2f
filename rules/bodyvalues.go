package rules

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/crmguard/crmguard/internal/mediatype"
)

// This file reads the values a request body sets, for the conditions that
// read them (`body` in a body guard's allow_if / deny_unless and a target's
// allow_if) and for the ids of a bulk target. A guard that judges a value
// must read the value the CRM will read, so the reader refuses every body
// two readers could read differently:
//
//   - JSON (application/json, */*+json): the body is one JSON object.
//     Strings are decoded as encoding/json decodes them (\u escapes
//     included: "owner\u005fid" is owner_id). Refused: anything but an
//     object at the top (an array, a JSON Patch), bytes that are not UTF-8
//     and \u escapes of unpaired UTF-16 surrogates (which libraries replace,
//     reject or keep), a key present twice in one object (libraries keep
//     the first, the last, or fail), and two keys of one object equal under
//     Unicode case folding ("owner_id" and "OWNER_ID": encoding/json binds
//     either to an owner_id field). A key that differs from a condition's
//     only in case is found, as encoding/json finds it (cond.Body).
//   - Forms (application/x-www-form-urlencoded, multipart/form-data): each
//     field is a string. Refused: a field given twice, two names equal under
//     case folding, names that frameworks rename or nest (holding ".", "[",
//     "]", a space or a control character: PHP reads "owner.id" as
//     owner_id, "owner_id[]" as an array), bytes that are not UTF-8, and a
//     urlencoded body that is JSON (many CRMs decode any body as JSON). A
//     multipart file field keeps its name (no other field may use it) but
//     its content is not a value.
//   - Any other type is refused; an empty body sets nothing (an empty map).

// readBodyValues reads the values a request body sets. The error says, as a
// phrase ("this JSON body ..."), why the body cannot be read with
// certainty.
func readBodyValues(contentType string, body []byte) (map[string]any, error) {
	if len(bytes.TrimSpace(body)) == 0 {
		return map[string]any{}, nil
	}
	if strings.TrimSpace(contentType) == "" {
		return nil, errors.New("this body has no Content-Type")
	}
	t, why := readBodyType(contentType) // body.go: one charset policy
	if why != "" {
		return nil, errors.New("this body " + why)
	}
	switch t.Kind {
	case mediatype.JSON:
		return decodeJSONObject(body)
	case mediatype.Form:
		return urlencodedValues(body)
	case mediatype.Multipart:
		return multipartValues(t.Param("boundary"), body)
	}
	return nil, fmt.Errorf("the values of %q bodies cannot be read (JSON objects, urlencoded and multipart forms only)", t.Essence)
}

// decodeJSONObject decodes a JSON object body strictly (see the file's
// comment).
func decodeJSONObject(b []byte) (map[string]any, error) {
	if tooDeep(b, maxBodyDepth) {
		return nil, fmt.Errorf("this body nests deeper than %d levels", maxBodyDepth)
	}
	if !utf8.Valid(b) {
		return nil, errors.New("this JSON body holds bytes that are not UTF-8")
	}
	if at := loneSurrogate(b); at >= 0 {
		return nil, fmt.Errorf("this JSON body escapes an unpaired UTF-16 surrogate at byte %d, which JSON libraries read differently", at)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return nil, fmt.Errorf("this JSON body is not valid JSON: %w", err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, errors.New("this JSON body is not an object (the values of an array or a JSON Patch cannot be judged)")
	}
	m, err := decodeObject(dec, "")
	if err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("this JSON body has data after its object")
	}
	return m, nil
}

// decodeObject reads the members of an object whose "{" was read; at names
// where the object sits, for messages.
func decodeObject(dec *json.Decoder, at string) (map[string]any, error) {
	m := map[string]any{}
	seen := map[string]string{} // folded key -> the key as written
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf("this JSON body is not valid JSON: %w", err)
		}
		k, _ := tok.(string)
		place := joinAt(at, k)
		if prev, dup := seen[foldKey(k)]; dup {
			if prev == k {
				return nil, fmt.Errorf("this JSON body sets %q twice; JSON libraries keep the first, the last or neither", place)
			}
			return nil, fmt.Errorf("this JSON body sets both %q and %q, which differ only in case; many JSON libraries read either as the other", joinAt(at, prev), place)
		}
		seen[foldKey(k)] = k
		v, err := decodeValue(dec, place)
		if err != nil {
			return nil, err
		}
		m[k] = v
	}
	if _, err := dec.Token(); err != nil { // the closing "}"
		return nil, fmt.Errorf("this JSON body is not valid JSON: %w", err)
	}
	return m, nil
}

// decodeValue reads one value.
func decodeValue(dec *json.Decoder, at string) (any, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, fmt.Errorf("this JSON body is not valid JSON: %w", err)
	}
	switch t := tok.(type) {
	case json.Delim:
		switch t {
		case '{':
			return decodeObject(dec, at)
		case '[':
			list := []any{}
			for i := 0; dec.More(); i++ {
				v, err := decodeValue(dec, joinAt(at, fmt.Sprint(i)))
				if err != nil {
					return nil, err
				}
				list = append(list, v)
			}
			if _, err := dec.Token(); err != nil {
				return nil, fmt.Errorf("this JSON body is not valid JSON: %w", err)
			}
			return list, nil
		}
		return nil, fmt.Errorf("this JSON body is not valid JSON: unexpected %q", t)
	}
	return tok, nil // string, json.Number, bool, nil
}

// loneSurrogate returns the offset of the first \u escape of an unpaired
// UTF-16 surrogate in the strings of a JSON text, or -1.
func loneSurrogate(b []byte) int {
	hex4 := func(i int) (rune, bool) {
		if i+6 > len(b) || b[i] != '\\' || b[i+1] != 'u' {
			return 0, false
		}
		var r rune
		for _, c := range b[i+2 : i+6] {
			switch {
			case '0' <= c && c <= '9':
				r = r<<4 | rune(c-'0')
			case 'a' <= c && c <= 'f':
				r = r<<4 | rune(c-'a'+10)
			case 'A' <= c && c <= 'F':
				r = r<<4 | rune(c-'A'+10)
			default:
				return 0, false
			}
		}
		return r, true
	}
	inString := false
	for i := 0; i < len(b); i++ {
		c := b[i]
		if !inString {
			inString = c == '"'
			continue
		}
		switch c {
		case '"':
			inString = false
		case '\\':
			r, ok := hex4(i)
			if !ok {
				i++ // a one-character escape
				continue
			}
			switch {
			case 0xD800 <= r && r <= 0xDBFF:
				if lo, ok := hex4(i + 6); ok && 0xDC00 <= lo && lo <= 0xDFFF {
					i += 11
					continue
				}
				return i
			case 0xDC00 <= r && r <= 0xDFFF:
				return i
			}
			i += 5
		}
	}
	return -1
}

// foldKey is a key in a form that compares equal for every two keys
// strings.EqualFold finds equal: each rune becomes the smallest rune of its
// Unicode simple case-folding orbit.
func foldKey(k string) string {
	ascii := true
	for i := 0; i < len(k); i++ {
		if k[i] >= utf8.RuneSelf {
			ascii = false
			break
		}
	}
	if ascii {
		// The smallest rune of {a, A} is A; of {k, K, U+212A} K; of
		// {s, S, U+017F} S.
		return upperASCII(k)
	}
	var b strings.Builder
	for _, r := range k {
		low := r
		for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
			low = min(low, f)
		}
		b.WriteRune(low)
	}
	return b.String()
}

func upperASCII(s string) string {
	for i := 0; i < len(s); i++ {
		if 'a' <= s[i] && s[i] <= 'z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if 'a' <= b[j] && b[j] <= 'z' {
					b[j] -= 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}

// formValues collects form fields, refusing what the file's comment lists.
type formValues struct {
	m     map[string]any
	seen  map[string]string // folded name -> the name as written
	where string            // "this form body" or "this multipart body"
}

func newFormValues(where string) *formValues {
	return &formValues{m: map[string]any{}, seen: map[string]string{}, where: where}
}

// add records one field; value is nil for a file field.
func (f *formValues) add(name string, value *string) error {
	if !plainFormName(name) {
		return fmt.Errorf("%s names a field %q, which frameworks rename or nest (a name with \".\", \"[\", \"]\", a space or a control character); its value cannot be judged", f.where, name)
	}
	if prev, dup := f.seen[foldKey(name)]; dup {
		if prev == name {
			return fmt.Errorf("%s sets %q twice; servers keep the first, the last or all", f.where, name)
		}
		return fmt.Errorf("%s sets both %q and %q, which differ only in case; many servers read either as the other", f.where, prev, name)
	}
	f.seen[foldKey(name)] = name
	if value != nil {
		if !utf8.ValidString(*value) {
			return fmt.Errorf("%s sets %q to bytes that are not UTF-8", f.where, name)
		}
		f.m[name] = *value
	}
	return nil
}

// plainFormName reports a form field name that no framework renames or
// nests: not empty, valid UTF-8, without ".", "[", "]", spaces or control
// characters.
func plainFormName(name string) bool {
	if name == "" || !utf8.ValidString(name) {
		return false
	}
	for _, r := range name {
		if r == '.' || r == '[' || r == ']' || unicode.IsSpace(r) || unicode.IsControl(r) {
			return false
		}
	}
	return true
}

// urlencodedValues reads an application/x-www-form-urlencoded body.
func urlencodedValues(body []byte) (map[string]any, error) {
	if t := bytes.TrimSpace(body); t[0] == '{' || t[0] == '[' {
		return nil, errors.New("this form body is JSON, which many CRMs decode as JSON whatever its label; send it as application/json")
	}
	vals, err := url.ParseQuery(string(body))
	if err != nil {
		return nil, fmt.Errorf("this form body cannot be read: %w", err)
	}
	f := newFormValues("this form body")
	for name, vs := range vals {
		if len(vs) > 1 {
			return nil, fmt.Errorf("this form body sets %q %d times; servers keep the first, the last or all", name, len(vs))
		}
		if err := f.add(name, &vs[0]); err != nil {
			return nil, err
		}
	}
	return f.m, nil
}

// multipartValues reads a multipart/form-data body (eachFormPart reads the
// parts, as the body guards do).
func multipartValues(boundary string, body []byte) (map[string]any, error) {
	f := newFormValues("this multipart body")
	err := eachFormPart(boundary, body, func(p formPart) (bool, error) {
		if p.part.FileName() != "" {
			return false, f.add(p.name, nil)
		}
		v, err := io.ReadAll(p.part)
		if err != nil {
			return false, fmt.Errorf("the multipart body cannot be read: %w", err)
		}
		s := string(v)
		return false, f.add(p.name, &s)
	})
	if err != nil {
		return nil, err
	}
	return f.m, nil
}

// bodyValueAt finds the value at keys (a body guard's path) in the body's
// values, each key found as cond.Body finds it (exact, then case-folded).
func bodyValueAt(m map[string]any, keys []string) (any, bool) {
	var cur any = m
	for _, k := range keys {
		obj, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		v, ok := obj[k]
		if !ok {
			for have, hv := range obj {
				if strings.EqualFold(have, k) {
					v, ok = hv, true
					break
				}
			}
		}
		if !ok {
			return nil, false
		}
		cur = v
	}
	return cur, true
}
