package rules

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"maps"
	"slices"
	"strings"

	"github.com/tidwall/gjson"
)

// What a write's audit event says about the request body: the fields it
// set (body_fields) and, for a route's audit_changes, their values before
// (from the stored record its target fetched) and after.

// noteBodyAudit records the fields a checked body sets and the new values
// of the route's audit_changes fields.
func (d *Decision) noteBodyAudit(contentType string, body []byte) {
	vals := d.values
	if vals == nil {
		if len(bytes.TrimSpace(body)) == 0 {
			return
		}
		v, err := readBodyValues(contentType, body)
		if err != nil {
			return // a body the guards could read otherwise: no field list
		}
		vals = v
	}
	if len(vals) > 0 {
		d.Audit.BodyFields = slices.Sorted(maps.Keys(vals))
	}
	rt := d.route
	if rt == nil || len(rt.auditChanges) == 0 {
		return
	}
	for _, c := range rt.auditChanges {
		v, ok := bodyValueAt(vals, c.keys)
		if !ok {
			continue // not set by this request: not changed
		}
		if d.Audit.Changes == nil {
			d.Audit.Changes = map[string]Change{}
		}
		d.Audit.Changes[c.path] = Change{New: d.changeValue(c, bodyValueText(v))}
	}
}

// noteOldValues records the stored record's values of the fields whose
// change is recorded (a single target, once the write is allowed).
func (d *Decision) noteOldValues(raw []byte) {
	if d.route == nil {
		return
	}
	for _, c := range d.route.auditChanges {
		ch, ok := d.Audit.Changes[c.path]
		if !ok {
			continue
		}
		r := gjson.GetBytes(raw, gjsonPath(c.keys))
		ch.Old = d.changeValue(c, recordValueText(r))
		d.Audit.Changes[c.path] = ch
	}
}

// valueText is a value as JSON and as the text its hash is taken of: a
// string's own text, any other value's JSON (null: not hashed).
type valueText struct {
	json []byte
	text string
	null bool
}

func bodyValueText(v any) valueText {
	raw, err := json.Marshal(v)
	if err != nil {
		raw = []byte("null")
	}
	if s, ok := v.(string); ok {
		return valueText{json: raw, text: s}
	}
	return valueText{json: raw, text: string(raw), null: v == nil}
}

func recordValueText(r gjson.Result) valueText {
	switch {
	case !r.Exists() || r.Type == gjson.Null:
		return valueText{json: []byte("null"), null: true}
	case r.Type == gjson.String:
		raw, _ := json.Marshal(r.Str)
		return valueText{json: raw, text: r.Str}
	}
	var b bytes.Buffer
	if json.Compact(&b, []byte(r.Raw)) != nil {
		b.Reset()
		b.WriteString(r.Raw)
	}
	return valueText{json: b.Bytes(), text: b.String()}
}

// changeValue is the JSON recorded for a value: itself for a plain field,
// otherwise the hex HMAC-SHA256 of its text under the hash key (null stays
// null).
func (d *Decision) changeValue(c auditChange, v valueText) json.RawMessage {
	if c.plain || v.null {
		return v.json
	}
	m := hmac.New(sha256.New, d.set.hashKey)
	m.Write([]byte(v.text))
	return json.RawMessage(`"` + hex.EncodeToString(m.Sum(nil)) + `"`)
}

// gjsonPath writes keys as a gjson path, each key's special characters
// escaped.
func gjsonPath(keys []string) string {
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteByte('.')
		}
		for _, r := range k {
			if strings.ContainsRune(`.*?|#@\!=<>%`, r) {
				b.WriteByte('\\')
			}
			b.WriteRune(r)
		}
	}
	return b.String()
}
