package auditcli

import (
	"strconv"
	"strings"
	"time"
	"unsafe"

	"github.com/tidwall/gjson"
)

// event is what the commands read of one audit event. Its strings view
// the line being read: anything kept past the line must be copied
// (collector.intern).
type event struct {
	time       time.Time
	user       string
	method     string
	path       string
	route      string
	decision   string
	reason     string
	status     int
	recordsIn  int
	recordsOut int
	shadow     bool
	exportFlag struct{ route, download, approved, blocked bool }
	roles      gjson.Result
	recordIDs  gjson.Result
	fields     gjson.Result
	grant      gjson.Result
	elevation  gjson.Result
	flow       gjson.Result // `workflow`: an approval or elevation step
	reload     gjson.Result // `reload`: a rule file reload's versions and role changes
	bodyFields gjson.Result
	changes    gjson.Result
	version    string
	badTime    bool
}

// parseEvent reads raw, an audit event object, in one pass over its
// members (its time too unless timeKnown). Members are found by
// forEachMember, which skips values at the speed of a validator; only the
// values the report uses are decoded, objects and arrays by gjson.
func parseEvent(raw []byte, e *event, timeKnown bool) {
	*e = event{}
	s := unsafe.String(unsafe.SliceData(raw), len(raw))
	ok := forEachMember(s, func(k, v string) {
		switch k {
		case "time":
			if !timeKnown {
				t, err := time.Parse(time.RFC3339Nano, jsonString(v))
				e.time, e.badTime = t, err != nil
			}
		case "user":
			e.user = jsonString(v)
		case "roles":
			e.roles = gjson.Parse(v)
		case "method":
			e.method = jsonString(v)
		case "path":
			e.path = jsonString(v)
		case "route":
			e.route = jsonString(v)
		case "decision":
			e.decision = jsonString(v)
		case "reason":
			e.reason = jsonString(v)
		case "status":
			e.status = jsonInt(v)
		case "records_in":
			e.recordsIn = jsonInt(v)
		case "records_out":
			e.recordsOut = jsonInt(v)
		case "record_ids":
			e.recordIDs = gjson.Parse(v)
		case "fields":
			e.fields = gjson.Parse(v)
		case "export":
			if v != "{}" {
				x := gjson.Parse(v)
				e.exportFlag.route = x.Get("route").Bool()
				e.exportFlag.download = x.Get("download").Bool()
				e.exportFlag.approved = x.Get("approved").Bool()
				e.exportFlag.blocked = x.Get("blocked").Bool()
			}
		case "shadow":
			e.shadow = v == "true"
		case "grant":
			e.grant = gjson.Parse(v)
		case "elevation":
			e.elevation = gjson.Parse(v)
		case "workflow":
			e.flow = gjson.Parse(v)
		case "reload":
			e.reload = gjson.Parse(v)
		case "body_fields":
			e.bodyFields = gjson.Parse(v)
		case "changes":
			e.changes = gjson.Parse(v)
		case "rules_version":
			e.version = jsonString(v)
		}
	})
	if !ok || (e.time.IsZero() && !timeKnown) {
		e.badTime = true
	}
}

// jsonString decodes a JSON string value (views the input unless it has
// escapes); anything else gives "".
func jsonString(v string) string {
	if len(v) < 2 || v[0] != '"' {
		return ""
	}
	if strings.IndexByte(v, '\\') < 0 {
		return v[1 : len(v)-1]
	}
	return gjson.Parse(v).Str
}

// jsonInt decodes a JSON number as an int (0 when it is none).
func jsonInt(v string) int {
	if n, err := strconv.Atoi(v); err == nil {
		return n
	}
	return int(gjson.Parse(v).Int())
}

// forEachMember calls fn with the key (decoded) and the raw value of each
// member of the JSON object s, in order. It returns false when s is not a
// well-formed object as far as it read (it stops there); it does not
// validate what it skips inside strings and nested values.
func forEachMember(s string, fn func(key, value string)) bool {
	i := skipSpace(s, 0)
	if i >= len(s) || s[i] != '{' {
		return false
	}
	i = skipSpace(s, i+1)
	if i < len(s) && s[i] == '}' {
		return true
	}
	for i < len(s) {
		if s[i] != '"' {
			return false
		}
		end := stringEnd(s, i)
		if end < 0 {
			return false
		}
		key := jsonString(s[i:end])
		i = skipSpace(s, end)
		if i >= len(s) || s[i] != ':' {
			return false
		}
		i = skipSpace(s, i+1)
		vend := valueEnd(s, i)
		if vend < 0 {
			return false
		}
		fn(key, s[i:vend])
		i = skipSpace(s, vend)
		if i >= len(s) {
			return false
		}
		switch s[i] {
		case '}':
			return true
		case ',':
			i = skipSpace(s, i+1)
		default:
			return false
		}
	}
	return false
}

func skipSpace(s string, i int) int {
	for i < len(s) && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r') {
		i++
	}
	return i
}

// stringEnd returns the index after the string that starts at s[i] ('"'),
// or -1.
func stringEnd(s string, i int) int {
	for j := i + 1; j < len(s); j++ {
		switch s[j] {
		case '\\':
			j++
		case '"':
			return j + 1
		}
	}
	return -1
}

// valueEnd returns the index after the value that starts at s[i], or -1.
func valueEnd(s string, i int) int {
	if i >= len(s) {
		return -1
	}
	switch s[i] {
	case '"':
		return stringEnd(s, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(s); j++ {
			switch s[j] {
			case '"':
				end := stringEnd(s, j)
				if end < 0 {
					return -1
				}
				j = end - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1
				}
			}
		}
		return -1
	default:
		j := i
		for j < len(s) && s[j] != ',' && s[j] != '}' && s[j] != ']' && s[j] != ' ' && s[j] != '\t' && s[j] != '\n' && s[j] != '\r' {
			j++
		}
		if j == i {
			return -1
		}
		return j
	}
}

// eachString calls fn with each string of a JSON array of strings. Plain
// strings are read directly (record ids are many); one with an escape
// goes through gjson.
func eachString(arr gjson.Result, fn func(string)) {
	raw := arr.Raw
	if len(raw) < 2 || raw[0] != '[' {
		return
	}
	if strings.IndexByte(raw, '\\') >= 0 {
		arr.ForEach(func(_, v gjson.Result) bool { fn(v.String()); return true })
		return
	}
	for i := 1; i < len(raw); i++ {
		switch raw[i] {
		case '"':
			j := i + 1 + strings.IndexByte(raw[i+1:], '"')
			if j <= i {
				return
			}
			fn(raw[i+1 : j])
			i = j
		case ']':
			return
		}
	}
}

// leadingTime reads the time of an event written by crm_guard, whose
// first key is "time"; ok is false for any other shape.
func leadingTime(raw []byte) (time.Time, bool) {
	const prefix = `{"time":"`
	if len(raw) < len(prefix)+20 || string(raw[:len(prefix)]) != prefix {
		return time.Time{}, false
	}
	rest := raw[len(prefix):]
	end := 0
	for end < len(rest) && end < 40 && rest[end] != '"' {
		end++
	}
	t, err := time.Parse(time.RFC3339Nano, unsafe.String(unsafe.SliceData(rest), end))
	return t, err == nil
}

// isWrite reports whether the event is a write the CRM carried out.
func (e *event) isWrite() bool {
	switch e.method {
	case "POST", "PUT", "PATCH", "DELETE":
	default:
		return false
	}
	return e.decision == "allow" && e.status < 400 && !strings.HasPrefix(e.path, "/.crmguard/")
}

// isExport reports whether the client received an export.
func (e *event) isExport() bool {
	return (e.exportFlag.route || e.exportFlag.download) && e.decision == "allow" && !e.exportFlag.blocked
}

// isDenial reports whether the request was refused: by the rules, by a
// usage limit (429), or its answer was.
func (e *event) isDenial() bool {
	return e.decision == "deny" || e.decision == "blocked" || e.decision == "limited"
}

// workflow names the approval or elevation step an event records
// ("approval requested", "elevation reviewed", ...) with the request's or
// elevation's id and its status after the step: from the event's
// `workflow` object, or, for events written before it existed, from the
// workflow pages' method and path with a 2xx status (no status then).
// action is "" for other events.
func (e *event) workflow() (action, id, status string) {
	if e.flow.IsObject() {
		return e.flow.Get("kind").Str + " " + e.flow.Get("action").Str, e.flow.Get("id").Str, e.flow.Get("status").Str
	}
	action, id = e.pageAction()
	return action, id, ""
}

// pageAction infers a workflow step from the page a request used.
func (e *event) pageAction() (action, id string) {
	if e.status < 200 || e.status > 299 {
		return "", ""
	}
	rest, ok := strings.CutPrefix(e.path, "/.crmguard/")
	if !ok {
		return "", ""
	}
	kind, rest, _ := strings.Cut(rest, "/")
	id, verb, _ := strings.Cut(rest, "/")
	switch {
	case kind == "approvals" && id == "" && e.method == "POST":
		return "approval requested", ""
	case kind == "approvals" && e.method == "POST" && (verb == "approve" || verb == "deny" || verb == "revoke"):
		return map[string]string{"approve": "approval approved", "deny": "approval denied", "revoke": "approval revoked"}[verb], id
	case kind == "elevations" && id == "" && e.method == "POST":
		return "elevation requested", ""
	case kind == "elevations" && id != "" && verb == "review" && e.method == "POST":
		return "elevation reviewed", id
	case kind == "elevations" && id != "" && verb == "" && e.method == "DELETE":
		return "elevation ended", id
	}
	return "", ""
}
