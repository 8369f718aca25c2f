package rules

import (
	"net/http"
	"strings"

	"github.com/crmguard/crmguard/rules/internal/cond"
	"github.com/crmguard/crmguard/rules/internal/urlpath"
	"go.yaml.in/yaml/v3"
)

var routeKeys = []string{"id", "description", "match", "allow", "deny", "when", "mfa", "records", "record", "visible", "expose", "fields", "max_records", "audit_id", "answer", "answer_headers", "body", "export", "target", "audit_changes", "message", "query", "forward_query"}

func (l *loader) routes(n *yaml.Node) {
	n = resolve(n)
	if n.Kind != yaml.SequenceNode {
		l.errorf(n, "routes", "want a list of routes, got %s", kindName(n))
		return
	}
	ids := map[string]bool{}
	for i, rn := range n.Content {
		key := indexKey("routes", i)
		r := l.route(resolve(rn), key)
		if r == nil {
			continue
		}
		if ids[r.id] {
			l.errorf(rn, joinKey(key, "id"), "duplicate route id %q", r.id)
		}
		ids[r.id] = true
		l.set.routes = append(l.set.routes, r)
	}
}

func (l *loader) route(n *yaml.Node, key string) *route {
	es, ok := l.entries(n, key, routeKeys...)
	if !ok {
		return nil
	}
	r := &route{node: n, key: key}
	by := map[string]entry{}
	for _, e := range es {
		by[e.name] = e
	}
	if e, ok := by["id"]; ok {
		r.id, _ = l.str(e.val, joinKey(key, "id"))
	}
	if r.id == "" {
		l.errorf(n, joinKey(key, "id"), "every route needs an id (it names the route in denials and the audit log)")
	}
	if e, ok := by["description"]; ok {
		r.description, _ = l.str(e.val, joinKey(key, "description"))
	}
	if e, ok := by["message"]; ok {
		r.message, _ = l.message(e.val, joinKey(key, "message"))
	}
	if e, ok := by["match"]; ok {
		l.match(r, e.val, joinKey(key, "match"))
	} else {
		l.errorf(n, joinKey(key, "match"), "missing: a route needs a match with at least a path")
	}
	_, hasAllow := by["allow"]
	_, hasDeny := by["deny"]
	switch {
	case hasAllow && hasDeny:
		l.errorf(by["deny"].key, joinKey(key, "deny"), "a route has either allow or deny, not both")
	case !hasAllow && !hasDeny:
		l.errorf(n, joinKey(key, "allow"), "missing: say who may call the route (allow: [roles], authenticated or public) or deny: <reason>")
	}
	if e, ok := by["allow"]; ok {
		ak := joinKey(key, "allow")
		if list, ok := l.strList(e.val, ak); ok {
			for _, a := range list {
				switch a {
				case allowPublic:
					r.public = true
				case allowAuthenticated:
					r.anyUser = true
				default:
					r.allow = append(r.allow, a)
				}
			}
			if r.public && len(list) > 1 {
				l.errorf(e.val, ak, "public cannot be combined with other entries")
			}
			if len(list) == 0 {
				l.errorf(e.val, ak, "an empty allow list admits nobody; write deny: <reason> to close a route")
			}
			l.useRoles(e.val, ak, r.allow)
		}
	}
	if e, ok := by["deny"]; ok {
		if v, ok := l.str(e.val, joinKey(key, "deny")); ok {
			r.deny = v
			if strings.TrimSpace(v) == "" || v == "true" {
				r.deny = "the rule file denies this route"
			}
		}
	}
	if e, ok := by["when"]; ok {
		wk := joinKey(key, "when")
		if src, sn, sk, ok := l.conditionWithMessage(e.val, wk, &r.whenMessage); ok {
			r.when = l.expr(sn, sk, src, cond.RequestScope, true)
			if r.when != nil {
				l.lintRoleLiterals(sn, sk, r.when)
			}
		}
	}
	if e, ok := by["mfa"]; ok {
		mk := joinKey(key, "mfa")
		fs, _ := l.entries(e.val, mk, "required", "max_age", "message")
		for _, f := range fs {
			switch f.name {
			case "message":
				r.mfaMessage, _ = l.message(f.val, joinKey(mk, "message"))
			case "required":
				if b, ok := l.boolean(f.val, joinKey(mk, "required")); ok {
					r.mfaReq = &b
				}
			case "max_age":
				r.maxAge, _ = l.duration(f.val, joinKey(mk, "max_age"))
			}
		}
	}
	if r.public && (r.mfaReq != nil || r.maxAge > 0) {
		l.errorf(by["mfa"].key, joinKey(key, "mfa"), "a public route needs no sign-in, so it cannot ask for MFA")
	}
	_, hasRecords := by["records"]
	_, hasRecord := by["record"]
	if hasRecords && hasRecord {
		l.errorf(by["record"].key, joinKey(key, "record"), "use records (a list) or record (one record), not both")
	}
	if e, ok := by["records"]; ok {
		rk := joinKey(key, "records")
		if p, ok := l.str(e.val, rk); ok {
			if path, ok := l.path(e.val, rk, p); ok {
				r.records, r.recPath = p, path
			}
		}
	}
	if e, ok := by["record"]; ok {
		rk := joinKey(key, "record")
		if p, ok := l.str(e.val, rk); ok {
			if path, ok := l.path(e.val, rk, p); ok {
				r.record, r.recPath, r.single = p, path, true
			}
		}
	}
	needRecords := func(name string) {
		if !hasRecords && !hasRecord {
			l.errorf(by[name].key, joinKey(key, name), "needs records or record to say where the records are in the answer")
		}
	}
	if e, ok := by["visible"]; ok {
		needRecords("visible")
		vk := joinKey(key, "visible")
		if src, ok := l.str(e.val, vk); ok {
			r.visible = l.condition(e.val, vk, src)
		}
	}
	if e, ok := by["expose"]; ok {
		needRecords("expose")
		xk := joinKey(key, "expose")
		if list, ok := l.strList(e.val, xk); ok {
			for i, p := range list {
				if path, ok := l.path(resolve(e.val), indexKey(xk, i), p); ok {
					r.expose = append(r.expose, path)
				}
			}
			if len(list) == 0 {
				l.errorf(e.val, xk, "an empty expose list would drop every field; remove the key or list fields")
			}
		}
	}
	if e, ok := by["fields"]; ok {
		needRecords("fields")
		r.fields = l.fields(r, e.val, joinKey(key, "fields"), false)
	}
	if e, ok := by["answer"]; ok {
		needRecords("answer")
		r.answer = l.fields(r, e.val, joinKey(key, "answer"), true)
	}
	if e, ok := by["answer_headers"]; ok {
		hk := joinKey(key, "answer_headers")
		if list, ok := l.strList(e.val, hk); ok {
			for i, h := range list {
				if h == "" || strings.ContainsAny(h, " \t\r\n:") {
					l.errorf(resolve(e.val), indexKey(hk, i), "%q is not a header name", h)
					continue
				}
				r.answerHeaders = append(r.answerHeaders, http.CanonicalHeaderKey(h))
			}
		}
	}
	if e, ok := by["max_records"]; ok {
		needRecords("max_records")
		r.maxRec, _ = l.integer(e.val, joinKey(key, "max_records"), 1)
	}
	if e, ok := by["audit_id"]; ok {
		needRecords("audit_id")
		ak := joinKey(key, "audit_id")
		if p, ok := l.str(e.val, ak); ok {
			if path, ok := l.path(e.val, ak, p); ok {
				r.auditID = path
			}
		}
	}
	if e, ok := by["body"]; ok {
		l.bodyGuards(r, e.val, joinKey(key, "body"))
	}
	if e, ok := by["export"]; ok {
		ek := joinKey(key, "export")
		fs, _ := l.entries(e.val, ek, "approval", "without_approval", "message")
		r.export = &exportSpec{approval: true}
		for _, f := range fs {
			switch f.name {
			case "approval":
				l.exportApproval(r.export, f.val, joinKey(ek, "approval")) // load_approvals.go
			case "message":
				r.export.message, _ = l.message(f.val, joinKey(ek, "message"))
			case "without_approval":
				wk := joinKey(ek, "without_approval")
				r.export.withoutApproval, _ = l.strList(f.val, wk)
				l.useRoles(f.val, wk, r.export.withoutApproval)
			}
		}
	}
	if e, ok := by["target"]; ok {
		l.target(r, e.val, joinKey(key, "target")) // target.go
	}
	if e, ok := by["audit_changes"]; ok {
		l.auditChanges(r, e.val, joinKey(key, "audit_changes")) // load_audit.go
	}
	l.checkBodyReads(r, key) // load_body.go
	if e, ok := by["query"]; ok {
		l.query(r, e.val, joinKey(key, "query")) // load_query.go
	}
	if e, ok := by["forward_query"]; ok {
		l.forwardQuery(r, e.val, joinKey(key, "forward_query")) // load_query.go
	}
	r.rewrites = r.records != "" || r.record != ""
	l.finishRoute(r)
	return r
}

func (l *loader) match(r *route, n *yaml.Node, key string) {
	es, ok := l.entries(n, key, "methods", "path", "query", "headers")
	if !ok {
		return
	}
	hasPath := false
	for _, e := range es {
		fk := joinKey(key, e.name)
		switch e.name {
		case "methods":
			if ms, ok := l.strList(e.val, fk); ok {
				for _, m := range ms {
					u := strings.ToUpper(m)
					if !validMethod(u) {
						l.errorf(e.val, fk, "%q is not an HTTP method", m)
						continue
					}
					r.methods = append(r.methods, u)
				}
				if len(ms) == 0 {
					l.errorf(e.val, fk, "an empty methods list matches nothing; remove the key to match every method")
				}
			}
		case "path":
			hasPath = true
			if p, ok := l.str(e.val, fk); ok {
				pat, err := urlpath.ParsePattern(p)
				if err != nil {
					l.errorf(e.val, fk, "%v", err)
				} else {
					r.pattern = pat
				}
			}
		case "query", "headers":
			ms, _ := l.entries(e.val, fk)
			for _, m := range ms {
				mk := joinKey(fk, m.name)
				mt := matcher{name: lowerASCII(m.name)}
				v := resolve(m.val)
				switch {
				case v.Kind == yaml.ScalarNode && v.Tag == "!!bool":
					mt.present, _ = l.boolean(v, mk)
				default:
					vals, ok := l.strList(v, mk)
					if !ok {
						continue
					}
					if len(vals) == 0 {
						l.errorf(v, mk, "an empty list matches nothing")
						continue
					}
					mt.values = vals
				}
				if e.name == "headers" {
					r.headers = append(r.headers, mt)
				} else {
					r.query = append(r.query, mt)
				}
			}
		}
	}
	if !hasPath {
		l.errorf(n, joinKey(key, "path"), "missing: a route must match a path (use /** for every path)")
	}
}
