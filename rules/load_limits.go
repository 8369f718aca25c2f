package rules

import (
	"path"
	"strings"
	"time"

	"github.com/crmguard/crmguard/rules/internal/cond"
	"go.yaml.in/yaml/v3"
)

// This file reads the `limits:` block at load time and lints it; the
// per-request side (which limits apply to a request, their counter keys)
// is in limits.go.

// limitKeys are the keys a limit may hold.
var limitKeys = []string{"id", "description", "routes", "count", "max", "per", "key", "for", "except", "when", "action", "notify", "message"}

// minLimitWindow is the shortest `per`: the store keeps windows in
// milliseconds, and a window shorter than a second limits nothing a person
// does.
const minLimitWindow = time.Second

// limits reads `limits:`. It runs after routes, whose ids the globs are
// matched against.
func (l *loader) limits(n *yaml.Node) {
	if n == nil {
		return
	}
	n = resolve(n)
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return
	}
	if n.Kind != yaml.SequenceNode {
		l.errorf(n, "limits", "want a list of limits, got %s", kindName(n))
		return
	}
	ids := map[string]bool{}
	for i, ln := range n.Content {
		key := indexKey("limits", i)
		lim := l.limit(resolve(ln), key)
		if lim == nil {
			continue
		}
		if ids[lim.ID] {
			l.errorf(ln, joinKey(key, "id"), "duplicate limit id %q", lim.ID)
			continue
		}
		ids[lim.ID] = true
		l.set.limits = append(l.set.limits, lim)
	}
	// Each route keeps the limits that cover it, in file order, so a
	// request finds its own without matching globs.
	for _, lim := range l.set.limits {
		if lim.Routes == nil {
			l.set.anyRouteLimits = append(l.set.anyRouteLimits, lim)
		}
		for _, rt := range l.set.routes {
			if lim.covers(rt.id) {
				rt.limits = append(rt.limits, lim)
			}
		}
	}
}

// limit reads one entry of `limits:`; nil when it cannot be used.
func (l *loader) limit(n *yaml.Node, key string) *Limit {
	es, ok := l.entries(n, key, limitKeys...)
	if !ok {
		return nil
	}
	lim := &Limit{Key: LimitKeyUser, node: n, key: key}
	seen := map[string]*yaml.Node{}
	var maxNode *yaml.Node
	for _, e := range es {
		fk := joinKey(key, e.name)
		seen[e.name] = e.val
		switch e.name {
		case "id":
			if v, ok := l.str(e.val, fk); ok {
				if !validName(v) {
					l.errorf(e.val, fk, "%q cannot be a limit id (letters, digits, _ - . only)", v)
				}
				lim.ID = v
			}
		case "description":
			lim.Description, _ = l.str(e.val, fk)
		case "message":
			lim.Message, _ = l.str(e.val, fk)
		case "routes":
			globs, ok := l.strList(e.val, fk)
			if !ok {
				break
			}
			if len(globs) == 0 {
				l.errorf(e.val, fk, "an empty list: the limit would cover no route (leave routes out to cover every request)")
			}
			for i, g := range globs {
				if _, err := path.Match(g, ""); err != nil || g == "" {
					at := e.val
					if e.val.Kind == yaml.SequenceNode && i < len(e.val.Content) {
						at = e.val.Content[i]
					}
					l.errorf(at, indexKey(fk, i), "%q is not a route id glob (* matches any run of characters, ? one, [a-z] a class)", g)
				}
			}
			lim.Routes = append([]string{}, globs...)
			lim.routesNode = e.val
		case "count":
			if v, ok := l.str(e.val, fk); ok {
				switch c := LimitCount(v); c {
				case CountRecords, CountRequests, CountExports, CountDenials:
					lim.Count = c
				default:
					l.errorf(e.val, fk, "want records, requests, exports or denials, got %q", v)
				}
			}
		case "max":
			maxNode = e.val
			if v, ok := l.integer(e.val, fk, 0); ok {
				lim.Max = int64(v)
			}
		case "per":
			if v, ok := l.duration(e.val, fk); ok {
				if v < minLimitWindow {
					l.errorf(e.val, fk, "a window of %s is too short: at least %s", v, minLimitWindow)
				}
				lim.Per = v
			}
		case "key":
			if v, ok := l.str(e.val, fk); ok {
				switch k := LimitKey(v); k {
				case LimitKeyUser, LimitKeyUserRoute:
					lim.Key = k
				default:
					l.errorf(e.val, fk, "want user or user+route, got %q", v)
				}
			}
		case "for":
			lim.For, _ = l.strList(e.val, fk)
			if len(lim.For) == 0 {
				l.errorf(e.val, fk, "an empty list: the limit would apply to nobody (leave for out to apply it to everyone)")
			}
			l.useRoles(e.val, fk, lim.For)
		case "except":
			lim.Except, _ = l.strList(e.val, fk)
			l.useRoles(e.val, fk, lim.Except)
		case "when":
			if x := l.guardCondition(e.val, fk, cond.RequestScope); x != nil {
				lim.When, lim.when = x.Source(), x
			}
		case "action":
			if v, ok := l.str(e.val, fk); ok {
				switch a := LimitAction(v); a {
				case ActionAlert, ActionStepUp, ActionBlock:
					lim.Action = a
				default:
					l.errorf(e.val, fk, "want alert, step_up or block, got %q", v)
				}
			}
		case "notify":
			lim.Notify, _ = l.strList(e.val, fk)
			l.useRoles(e.val, fk, lim.Notify)
		}
	}
	for _, need := range []string{"id", "count", "max", "per", "action"} {
		if seen[need] == nil {
			l.errorf(n, joinKey(key, need), "missing: a limit needs id, count (records, requests, exports or denials), max, per (the window) and action (alert, step_up or block)")
		}
	}
	if lim.Max == 0 && maxNode != nil && lim.Action != "" && lim.Action != ActionAlert {
		l.errorf(maxNode, joinKey(key, "max"), "max 0 with action %s would refuse every request; use a route's allow or when for that (max 0 is for alert: the first use in a window alerts)", lim.Action)
	}
	if lim.ID == "" {
		return nil
	}
	return lim
}

// lintLimits warns about globs that match no route and limits that can
// count nothing on the routes they cover. It runs once every route and
// limit is known.
func (l *loader) lintLimits() {
	for _, lim := range l.set.limits {
		if lim.Routes == nil {
			continue
		}
		for i, g := range lim.Routes {
			matched := false
			for _, rt := range l.set.routes {
				if ok, _ := path.Match(g, rt.id); ok {
					matched = true
					break
				}
			}
			if !matched {
				at := lim.routesNode
				if at.Kind == yaml.SequenceNode && i < len(at.Content) {
					at = at.Content[i]
				}
				l.warnf(at, indexKey(joinKey(lim.key, "routes"), i), "limit %s: the glob %q matches no route id", lim.ID, g)
			}
		}
		var covered, counting []string
		for _, rt := range l.set.routes {
			if !lim.covers(rt.id) {
				continue
			}
			covered = append(covered, rt.id)
			switch lim.Count {
			case CountRecords:
				if rt.rewrites {
					counting = append(counting, rt.id)
				}
			case CountExports:
				if rt.export != nil {
					counting = append(counting, rt.id)
				}
			default:
				counting = append(counting, rt.id)
			}
		}
		if len(covered) == 0 || len(counting) > 0 {
			continue
		}
		switch lim.Count {
		case CountRecords:
			l.warnf(lim.routesNode, joinKey(lim.key, "routes"), "limit %s counts records, but none of its routes (%s) has records or record, so no answer is ever counted", lim.ID, strings.Join(covered, ", "))
		case CountExports:
			l.warnf(lim.routesNode, joinKey(lim.key, "routes"), "limit %s counts exports, but none of its routes (%s) is marked export", lim.ID, strings.Join(covered, ", "))
		}
	}
}
