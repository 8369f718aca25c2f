package rules

import (
	"strings"

	"go.yaml.in/yaml/v3"
)

// This file reads the operator's `message:` keys (message.go uses them).

// message reads a `message:`: a non-empty sentence for the refused user.
func (l *loader) message(n *yaml.Node, key string) (string, bool) {
	v, ok := l.str(n, key)
	if !ok {
		return "", false
	}
	if strings.TrimSpace(v) == "" {
		l.errorf(n, key, "an empty message: remove the key to get the generated one")
		return "", false
	}
	return strings.TrimSpace(v), true
}

// conditionWithMessage reads a condition written either as a CEL string
// or as {if: CEL, message: "..."}. It returns the source with the node and
// key to report its errors at; msg receives the message.
func (l *loader) conditionWithMessage(n *yaml.Node, key string, msg *string) (src string, at *yaml.Node, atKey string, ok bool) {
	n = resolve(n)
	if n.Kind != yaml.MappingNode {
		src, ok = l.str(n, key)
		return src, n, key, ok
	}
	es, good := l.entries(n, key, "if", "message")
	if !good {
		return "", n, key, false
	}
	for _, e := range es {
		ek := joinKey(key, e.name)
		switch e.name {
		case "if":
			src, ok = l.str(e.val, ek)
			at, atKey = e.val, ek
		case "message":
			*msg, _ = l.message(e.val, ek)
		}
	}
	if at == nil {
		l.errorf(n, joinKey(key, "if"), "missing: write the condition under if")
		return "", n, key, false
	}
	return src, at, atKey, ok
}
