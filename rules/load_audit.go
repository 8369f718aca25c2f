package rules

import (
	"go.yaml.in/yaml/v3"
)

// auditChange is one entry of a route's `audit_changes`: a field whose
// old and new values a write's audit event records.
type auditChange struct {
	path  string   // as written
	keys  []string // the path's keys, in the body and in the stored record
	plain bool     // record the values as they are; otherwise their HMAC
}

// auditChanges reads a route's `audit_changes`: a list whose entries are
// a field path (values recorded hashed) or {field: PATH, plain: true}.
func (l *loader) auditChanges(r *route, n *yaml.Node, key string) {
	n = resolve(n)
	r.auditChanges = []auditChange{} // present, even when empty: body_fields are recorded
	r.readsBody = true
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return
	}
	if n.Kind != yaml.SequenceNode {
		l.errorf(n, key, "want a list of fields (a field, or {field: FIELD, plain: true}), got %s", kindName(n))
		return
	}
	seen := map[string]bool{}
	for i, en := range n.Content {
		ek := indexKey(key, i)
		en = resolve(en)
		c := auditChange{}
		switch en.Kind {
		case yaml.ScalarNode:
			c.path, _ = l.str(en, ek)
		case yaml.MappingNode:
			fs, _ := l.entries(en, ek, "field", "plain")
			for _, f := range fs {
				fk := joinKey(ek, f.name)
				switch f.name {
				case "field":
					c.path, _ = l.str(f.val, fk)
				case "plain":
					c.plain, _ = l.boolean(f.val, fk)
				}
			}
		default:
			l.errorf(en, ek, "want a field, or {field: FIELD, plain: true}, got %s", kindName(en))
			continue
		}
		if c.path == "" {
			l.errorf(en, ek, "missing: the field whose change is recorded")
			continue
		}
		keys, err := splitKeyPath(c.path, "*?#@|[]{}()", "audit_changes names a field by its keys (a.b)")
		if err != nil {
			l.errorf(en, ek, "%v", err)
			continue
		}
		if seen[c.path] {
			l.errorf(en, ek, "%s is listed twice", c.path)
			continue
		}
		seen[c.path] = true
		if !c.plain && len(l.cfg.hashKey) == 0 {
			l.errorf(en, ek, "the values of %s are recorded hashed, which needs a secret key (the handler's hash_key setting); give one, or write {field: %s, plain: true}", c.path, c.path)
			continue
		}
		c.keys = keys
		r.auditChanges = append(r.auditChanges, c)
	}
}
