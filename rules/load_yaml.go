package rules

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// This file holds the small helpers that read yaml.Nodes strictly: every
// unknown key, wrong kind and duplicate key is an error with its position.

// diag collects errors and warnings while a file loads.
type diag struct {
	file  string
	errs  []*Error
	warns []Warning
}

func (d *diag) pos(n *yaml.Node, key string) Position {
	p := Position{File: d.file, Key: key}
	if n != nil {
		p.Line, p.Column = n.Line, n.Column
	}
	return p
}

func (d *diag) errorf(n *yaml.Node, key, format string, args ...any) {
	d.errs = append(d.errs, &Error{Position: d.pos(n, key), Msg: fmt.Sprintf(format, args...)})
}

func (d *diag) warnf(n *yaml.Node, key, format string, args ...any) {
	d.warns = append(d.warns, Warning{Position: d.pos(n, key), Msg: fmt.Sprintf(format, args...)})
}

func resolve(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	return n
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			return "null"
		}
		return fmt.Sprintf("%q", n.Value)
	}
	return "something else"
}

// entry is one key of a mapping.
type entry struct {
	name string
	key  *yaml.Node
	val  *yaml.Node
}

// entries reads a mapping in file order, reporting a node that is not a
// mapping and duplicate keys. allowed, when not nil, lists the accepted keys.
func (d *diag) entries(n *yaml.Node, key string, allowed ...string) ([]entry, bool) {
	n = resolve(n)
	if n == nil {
		return nil, false
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return nil, true
	}
	if n.Kind != yaml.MappingNode {
		d.errorf(n, key, "want a mapping, got %s", kindName(n))
		return nil, false
	}
	seen := map[string]bool{}
	var out []entry
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := resolve(n.Content[i]), resolve(n.Content[i+1])
		if k.Kind != yaml.ScalarNode {
			d.errorf(k, key, "a key must be a string")
			continue
		}
		if k.Tag == "!!merge" {
			d.errorf(k, key, "merge keys (<<) are not supported in rule files")
			continue
		}
		if seen[k.Value] {
			d.errorf(k, joinKey(key, k.Value), "duplicate key")
			continue
		}
		seen[k.Value] = true
		if allowed != nil && !contains(allowed, k.Value) {
			d.errorf(k, joinKey(key, k.Value), "unknown key (known here: %s)", strings.Join(allowed, ", "))
			continue
		}
		out = append(out, entry{name: k.Value, key: k, val: v})
	}
	return out, true
}

func joinKey(parent, child string) string {
	if parent == "" {
		return child
	}
	if strings.ContainsAny(child, ".[]\" ") || child == "" {
		return parent + "[" + strconv.Quote(child) + "]"
	}
	return parent + "." + child
}

func indexKey(parent string, i int) string { return fmt.Sprintf("%s[%d]", parent, i) }

func (d *diag) str(n *yaml.Node, key string) (string, bool) {
	n = resolve(n)
	if n.Kind != yaml.ScalarNode || n.Tag == "!!null" {
		d.errorf(n, key, "want a string, got %s", kindName(n))
		return "", false
	}
	return n.Value, true
}

func (d *diag) boolean(n *yaml.Node, key string) (bool, bool) {
	n = resolve(n)
	if n.Kind == yaml.ScalarNode && n.Tag == "!!bool" {
		var b bool
		if err := n.Decode(&b); err == nil {
			return b, true
		}
	}
	d.errorf(n, key, "want true or false, got %s", kindName(n))
	return false, false
}

func (d *diag) integer(n *yaml.Node, key string, min int) (int, bool) {
	n = resolve(n)
	if n.Kind == yaml.ScalarNode && n.Tag == "!!int" {
		v, err := strconv.Atoi(n.Value)
		if err == nil && v >= min {
			return v, true
		}
	}
	d.errorf(n, key, "want a whole number of at least %d, got %s", min, kindName(n))
	return 0, false
}

func (d *diag) duration(n *yaml.Node, key string) (time.Duration, bool) {
	s, ok := d.str(n, key)
	if !ok {
		return 0, false
	}
	v, err := time.ParseDuration(s)
	if err != nil || v < 0 {
		d.errorf(n, key, "want a duration such as 5m or 12h, got %q", s)
		return 0, false
	}
	return v, true
}

// strList reads a list of strings; a single string is a list of one.
func (d *diag) strList(n *yaml.Node, key string) ([]string, bool) {
	n = resolve(n)
	if n.Kind == yaml.ScalarNode && n.Tag != "!!null" {
		return []string{n.Value}, true
	}
	if n.Kind != yaml.SequenceNode {
		d.errorf(n, key, "want a list of strings, got %s", kindName(n))
		return nil, false
	}
	out := make([]string, 0, len(n.Content))
	ok := true
	for i, c := range n.Content {
		s, good := d.str(c, indexKey(key, i))
		ok = ok && good
		out = append(out, s)
	}
	return out, ok
}
