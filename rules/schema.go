package rules

import (
	"encoding/json"
)

// The rule file's JSON Schema (`crmguard rules schema`): every key the
// loader reads, with what it means. Editors use it for completion and
// checks while an operator types (docs/rules.md, "Editor support").
// TestSchemaKeysAreTheLoadersKeys keeps it and the loader in step.

// schemaNode is one node of the schema.
type schemaNode struct {
	doc    string
	typ    string // JSON Schema type; "" with oneOf
	enum   []any
	props  []schemaProp // an object's keys, in the order they are documented
	values *schemaNode  // a mapping with keys of the operator's choice
	items  *schemaNode
	oneOf  []*schemaNode
	req    []string
	min    *int
}

type schemaProp struct {
	name string
	node *schemaNode
}

func sStr(doc string) *schemaNode            { return &schemaNode{doc: doc, typ: "string"} }
func sInt(doc string, min int) *schemaNode   { return &schemaNode{doc: doc, typ: "integer", min: &min} }
func sBool(doc string) *schemaNode           { return &schemaNode{doc: doc, typ: "boolean"} }
func sEnum(doc string, v ...any) *schemaNode { return &schemaNode{doc: doc, enum: v} }
func sCEL(doc string) *schemaNode            { return sStr(doc + " (a CEL expression)") }
func sDur(doc string) *schemaNode            { return sStr(doc + " (a duration such as 10m, 24h)") }
func sList(doc string, items *schemaNode) *schemaNode {
	return &schemaNode{doc: doc, typ: "array", items: items}
}
func sMap(doc string, values *schemaNode) *schemaNode {
	return &schemaNode{doc: doc, typ: "object", values: values}
}
func sObj(doc string, props ...schemaProp) *schemaNode {
	return &schemaNode{doc: doc, typ: "object", props: props}
}
func sOne(doc string, alts ...*schemaNode) *schemaNode { return &schemaNode{doc: doc, oneOf: alts} }

// sStrs is one string or a list of strings (the loader takes both).
func sStrs(doc string) *schemaNode {
	return sOne(doc, &schemaNode{typ: "string"}, stringList)
}

// stringList is a list of strings, without a description of its own.
var stringList = &schemaNode{typ: "array", items: &schemaNode{typ: "string"}}

// matchValues is what a route's match.query and match.headers accept for
// a name: true (present), false (absent), a value or a list of values.
var matchValues = sOne("accepted values", &schemaNode{typ: "boolean"}, &schemaNode{typ: "string"}, stringList)

func p(name string, n *schemaNode) schemaProp { return schemaProp{name: name, node: n} }

func withReq(n *schemaNode, keys ...string) *schemaNode { n.req = keys; return n }

// messageNode is a `message:` key.
func messageNode(what string) *schemaNode {
	return sStr("the sentence a refused user reads " + what + " (instead of the generated one)")
}

func mfaAgeNode(doc string) *schemaNode {
	return sObj(doc, p("max_age", sDur("how recent the MFA sign-in must be")))
}

// fieldRuleNode is an entry of `fields` or `answer`.
func fieldRuleNode(where string) *schemaNode {
	return sOne("what to do with the field "+where+": remove, hash, null, or a mapping",
		sEnum("remove the field, hash its value (keyed HMAC, needs hash_key) or set it to null", "remove", "hash", "null"),
		sObj("the field's treatment and for whom",
			p("remove", sBool("remove the field (write remove: true)")),
			p("mask", sStr("mask the value with a built-in mask (phone, id_card, bank_card, email, name, all) or one declared under masks")),
			p("hash", sBool("replace the value by its keyed HMAC (hash_key in the Caddyfile)")),
			p("null", sBool("set the value to null")),
			p("replace", &schemaNode{doc: "replace the value by this value (any YAML value, written as JSON)"}),
			p("for", sStrs("the rule applies only to these roles")),
			p("except", sStrs("the rule applies to everyone but these roles")),
			p("when", sCEL("the rule applies only when this holds (may read record in fields, not in answer)")),
			p("unless", sCEL("the rule does not apply when this holds")),
		))
}

// ruleFileSchema is the whole schema.
var ruleFileSchema = withReq(sObj("A crmguard rule file: who may call which CRM route, which records and fields they see (docs/rules.md).",
	p("version", sEnum("the rule file format's version (required)", 1)),
	p("default", sEnum("what happens to a request no route matches (default deny)", "deny", "allow")),
	p("mode", sEnum("enforce (default), or shadow: decide and audit, never block or rewrite", "enforce", "shadow")),
	p("subject", sObj("how a user is read from the verified token's claims",
		p("id", sCEL("the user's id, over claims (default claims.sub)")),
		p("roles", sCEL("the user's groups or roles, over claims, a list of strings (default the groups claim)")),
		p("attrs", sMap("named user attributes (user.attrs.NAME), each a CEL expression over claims", sCEL("the attribute's value, over claims"))),
	)),
	p("role_map", sMap("identity-provider group -> role or roles", sStrs("the role(s) the group gives"))),
	p("roles", sMap("the declared roles (required); a role may inherit others",
		sObj("a role",
			p("inherits", sStrs("roles whose rights this role also has")),
			p("description", sStr("what the role is for, for people")),
		))),
	p("mfa", sObj("what counts as a multi-factor sign-in, and whether routes require it",
		p("required", sBool("routes need an MFA sign-in unless they say otherwise")),
		p("amr", sStrs("amr values of which any one shows MFA (RFC 8176)")),
		p("acr", sStrs("acr values of which any one shows MFA")),
	)),
	p("schedules", sMap("named time windows for in_schedule(\"NAME\")",
		sObj("a schedule",
			p("days", sStr("days of the week: mon-fri, mon,wed,fri, daily")),
			p("hours", sStr("times of day: 08:00-20:00, 22:00-06:00, several separated by commas")),
			p("tz", sStr("the IANA time zone, e.g. Asia/Shanghai (default UTC)")),
		))),
	p("masks", sMap("custom masks, used by name in a field's mask",
		sObj("a mask: keeps characters at both ends and hides the rest",
			p("keep_start", sInt("characters kept at the start", 0)),
			p("keep_end", sInt("characters kept at the end", 0)),
			p("char", sStr("the character that hides the others (default *)")),
		))),
	p("approvals", sMap("named export approval policies (export: {approval: NAME})",
		sObj("an approval policy",
			p("description", sStr("what the approval is, for the requester (default: the steps' descriptions)")),
			p("purpose", sEnum("whether the requester must say why (default required)", "required", "optional")),
			p("valid_for", sDur("how long a grant lasts (default 24h)")),
			p("uses", sInt("how many requests a grant allows (default 1)", 1)),
			p("steps", sList("the approvals needed, all of them, in order",
				sObj("an approval step",
					p("name", sStr("the step's name")),
					p("description", sStr("who approves, for the requester (default: the approver roles)")),
					p("approvers", sStrs("roles of which one, on the approver's current sign-in, may approve")),
					p("when", sCEL("a condition over approver, requester and now, e.g. the requester's own manager")),
				))),
			p("approver_mfa", mfaAgeNode("approving needs an MFA sign-in this recent")),
		))),
	p("elevations", sMap("named break-glass elevations: more roles for a short time, with a reason, reviewed afterwards",
		sObj("an elevation",
			p("description", sStr("what the elevation is for")),
			p("for", sStrs("the roles that may ask for it")),
			p("grant", sStrs("the roles added while it lasts")),
			p("max", sDur("how long it lasts at most (required)")),
			p("reason", sEnum("whether the user must give a reason (default required)", "required", "optional")),
			p("mfa", mfaAgeNode("starting it needs an MFA sign-in this recent")),
			p("approval", sStr("none (default), or the approval policy that must grant it")),
			p("review_by", sStrs("the roles that review it afterwards")),
		))),
	p("routes", sList("the routes, in match order: the first that matches a request decides (required)", routeSchema)),
	p("limits", sList("usage limits: how much one user may do in a sliding window, counted on the guard's state store", limitSchema)),
), "version", "roles", "routes")

var limitSchema = withReq(sObj("a usage limit",
	p("id", sStr("the limit's id, named in refusals, the audit event, metrics and counters (required)")),
	p("description", sStr("what the limit is, in words (the refusal's message uses it)")),
	p("routes", sStrs("route id globs it covers (* any run of characters, ? one, [a-z] a class); default: every request")),
	p("count", sEnum("what it counts (required)", "records", "requests", "exports", "denials")),
	p("max", sInt("the most the count may reach within per (required; 0 only with alert)", 0)),
	p("per", sDur("the sliding window, at least 1s (required)")),
	p("key", sEnum("whose usage is counted together (default user)", "user", "user+route")),
	p("for", sStrs("it applies only to these roles")),
	p("except", sStrs("it never applies to these roles")),
	p("when", sCEL("it applies only when this holds (over user, request, now)")),
	p("action", sEnum("what a hit does (required): alert passes and raises an alert, step_up asks for a fresh MFA sign-in, block refuses with 429", "alert", "step_up", "block")),
	p("notify", sStrs("roles told of every hit (through the Caddyfile's notify webhooks)")),
	p("message", messageNode("when the limit refuses")),
), "id", "count", "max", "per", "action")

var routeSchema = withReq(sObj("a route: the requests it matches, who may call it, and what is done to its answers",
	p("id", sStr("the route's id, named in denials, the audit log and metrics (required)")),
	p("description", sStr("what the route is, in the operator's words (used in messages)")),
	p("match", withReq(sObj("which requests the route matches",
		p("methods", sStrs("HTTP methods (default: every method)")),
		p("path", sStr("the path pattern: literal segments, {name} captures, * one segment, ** the rest (required)")),
		p("query", sMap("query parameters the request must have: a value, a list of values, or true (present) / false (absent)",
			matchValues)),
		p("headers", sMap("request headers the request must have: a value, a list of values, or true (present) / false (absent)",
			matchValues)),
	), "path")),
	p("allow", sStrs("who may call it: roles, authenticated (any signed-in user) or public (anyone)")),
	p("deny", sStr("the route refuses everyone, with this reason")),
	p("query", sObj("the query parameters the route accepts (only listed ones pass) and what each filters or sorts on",
		p("params", sMap("parameter name (filter[{field}], status[], where[*][attribute], ...) -> who may send it and what it does",
			sObj("an accepted query parameter ({} accepts it from everyone)",
				p("deny", sStrs("these roles may not send it")),
				p("deny_unless", sCEL("it may be sent only when this holds (over user, request, now)")),
				p("filters", sStrs("the record fields it filters or searches on, or \"{value}\" / \"{field}\" / \"{expr}\"")),
				p("sorts", sStrs("the record fields it sorts on, or \"{value}\" / \"{field}\" / \"{expr}\"")),
				p("message", messageNode("when the parameter is refused")),
			))),
		p("message", messageNode("when a query parameter is refused")),
	)),
	p("forward_query", sMap("parameters the proxy sets on the request to the CRM (the client's own of that name are removed): name -> a CEL value or a mapping",
		sOne("the value to send",
			sCEL("the value, over user, request, now"),
			sObj("the value and for whom",
				p("value", sCEL("the value, over user, request, now")),
				p("for", sStrs("the parameter is set only for these roles")),
				p("except", sStrs("the parameter is set for everyone but these roles")),
				p("when", sCEL("the parameter is set only when this holds")),
			)))),
	p("when", sOne("a condition on the request that must hold (over user, request, now)",
		sCEL("the condition"),
		sObj("the condition with its own message",
			p("if", sCEL("the condition")),
			p("message", messageNode("when the condition does not hold")),
		))),
	p("mfa", sObj("the sign-in this route needs",
		p("required", sBool("an MFA sign-in is needed (default: the file's mfa.required)")),
		p("max_age", sDur("the sign-in must be this recent (a step-up otherwise)")),
		p("message", messageNode("when a step-up is needed")),
	)),
	p("records", sStr("where the records are in the answer: a path to a list, or @this")),
	p("record", sStr("where the one record is in the answer: a path, or @this")),
	p("visible", sCEL("which records the user sees (over record, user, request, now); the others are dropped")),
	p("expose", sStrs("the only fields of each record that are passed (all others are dropped)")),
	p("fields", sMap("field rules: a field path of each record -> what to do with it", fieldRuleNode("in each record"))),
	p("max_records", sInt("an answer with more records is refused (or needs an export approval)", 1)),
	p("audit_id", sStr("the field that names a record in the audit event's record_ids")),
	p("answer", sMap("field rules for the answer outside the records (paths from the answer's root)", fieldRuleNode("in the answer"))),
	p("answer_headers", sStrs("response headers removed from every answer of the route")),
	p("body", sMap("request-body guards: a field path of the request body -> who may not set it",
		sObj("a body guard",
			p("deny", sStrs("these roles may not set the field")),
			p("deny_unless", sCEL("the field may be set only when this holds (over user, request, now, body)")),
			p("allow_if", sCEL("the value set must make this hold (over user, request, now, body, and record on a target route)")),
			p("approval", sStr("an approval policy whose grant, bound to the value, lets through a value allow_if refuses")),
			p("message", messageNode("when the guard refuses the request")),
		))),
	p("export", sObj("the route is an export: it needs an approval unless the role is exempt",
		p("approval", sOne("true (a grant is needed but none can be asked for), false (no approval), or the approval policy that grants it",
			&schemaNode{typ: "boolean"}, &schemaNode{typ: "string"})),
		p("without_approval", sStrs("roles that export without a grant")),
		p("message", messageNode("when the export is refused")),
	)),
	p("target", sObj("judge a write against the stored record it changes, fetched first",
		p("fetch", sStr("the path to GET the stored record from, with the route's {params}; for a bulk write one GET per id, a {parameter} the path does not capture taking each id")),
		p("ids", sStr("a bulk write: where the body names the records, e.g. ids.# or items.#.id")),
		p("fetch_many", sObj("a bulk write: one GET for all the ids instead of fetch",
			p("path", sStr("the path, with {ids} as one query value (the ids joined with ,)")),
			p("records", sStr("where the list of records sits in the answer (default @this)")),
			p("id", sStr("the key of each record's id (default id)")),
		)),
		p("max_ids", sInt("a bulk write naming more ids is refused (default 100, at most 1000)", 1)),
		p("concurrency", sInt("a bulk write's GETs at once (default 4, at most 16)", 1)),
		p("record", sStr("where the record sits in that answer (default @this)")),
		p("allow_if", sCEL("the write goes through only when this holds (over record, user, request, now, body)")),
		p("visible", sCEL("a stored record for which this is false is answered as not found (over record, user, request, now)")),
		p("id_fields", sMap("fetch parameter -> the request keys that name the same record (default: the parameter's own name)", sStrs("request keys"))),
		p("if_match", sBool("make the write conditional on the version judged (If-Match with its ETag)")),
	)),
	p("audit_changes", sList("fields whose values before and after a write the audit event records (hashed unless plain; the value before from the target's stored record); the event then also lists the fields the body sets (body_fields): [] for those only",
		sOne("a field",
			sStr("a field path (a.b) in the request body and the stored record; its values are recorded hashed (needs hash_key)"),
			sObj("a field and how its values are recorded",
				p("field", sStr("the field path (a.b)")),
				p("plain", sBool("record the values as they are, not hashed")),
			)))),
	p("message", messageNode("whenever the route refuses")),
), "id", "match")

// Schema returns the rule file's JSON Schema (draft-07), every key with
// its meaning.
func Schema() []byte {
	root := ruleFileSchema.json()
	root["$schema"] = "http://json-schema.org/draft-07/schema#"
	root["title"] = "crmguard rule file"
	b, err := json.MarshalIndent(root, "", "  ")
	if err != nil {
		panic(err) // the schema is a literal of this package
	}
	return append(b, '\n')
}

func (n *schemaNode) json() map[string]any {
	out := map[string]any{}
	if n.doc != "" {
		out["description"] = n.doc
	}
	if n.typ != "" {
		out["type"] = n.typ
	}
	if n.enum != nil {
		out["enum"] = n.enum
	}
	if n.min != nil {
		out["minimum"] = *n.min
	}
	if n.props != nil {
		props := map[string]any{}
		for _, p := range n.props {
			props[p.name] = p.node.json()
		}
		out["properties"] = props
		out["additionalProperties"] = false
	}
	if n.values != nil {
		out["additionalProperties"] = n.values.json()
	}
	if n.items != nil {
		out["items"] = n.items.json()
	}
	if n.oneOf != nil {
		var alts []any
		for _, a := range n.oneOf {
			alts = append(alts, a.json())
		}
		out["oneOf"] = alts
	}
	if n.req != nil {
		out["required"] = n.req
	}
	return out
}
