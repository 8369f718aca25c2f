package caddymodule

import (
	"sort"
	"strconv"
	"time"
	"unicode/utf8"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/crmguard/crmguard/caddymodule/workflow"
	"github.com/crmguard/crmguard/rules"
)

// AuditEvent is one request's audit record, written as one JSON line. The
// schema is documented in docs/audit.md.
type AuditEvent struct {
	// Time is when the request arrived (RFC 3339 with nanoseconds, UTC).
	Time time.Time `json:"time"`
	// RequestID is Caddy's request id (the {http.request.uuid} placeholder).
	RequestID string `json:"request_id,omitempty"`
	// User is the verified user's id ("" for an anonymous request).
	User string `json:"user,omitempty"`
	// Roles are the user's effective roles.
	Roles []string `json:"roles,omitempty"`
	// Method is the HTTP method.
	Method string `json:"method"`
	// Path is the normalised request path the rules judged.
	Path string `json:"path"`
	// Route is the id of the matched route ("" when none matched).
	Route string `json:"route,omitempty"`
	// RulesVersion names the rule file's content the request was decided
	// by (rules.Set.Version).
	RulesVersion string `json:"rules_version,omitempty"`
	// Decision is what happened: allow, deny, sign_in, step_up, limited,
	// blocked, cut, provider, workflow, error, reload (docs/audit.md).
	Decision string `json:"decision"`
	// Reason is a sentence a person can read.
	Reason string `json:"reason,omitempty"`
	// Status is the HTTP status the client received.
	Status int `json:"status"`
	// RecordsIn counts the records in the CRM's answer.
	RecordsIn int `json:"records_in"`
	// RecordsOut counts the records the client received.
	RecordsOut int `json:"records_out"`
	// RecordIDs names the records the client received (audit_id); of a
	// streamed answer, the first rules.MaxStreamedIDs.
	RecordIDs []string `json:"record_ids,omitempty"`
	// RecordIDsOmitted counts the received records' ids a streamed
	// answer's RecordIDs leaves out.
	RecordIDsOmitted int `json:"record_ids_omitted,omitempty"`
	// Fields counts treated fields per "action:path".
	Fields map[string]int `json:"fields,omitempty"`
	// EvalErrors counts rule conditions that failed to evaluate.
	EvalErrors int `json:"eval_errors,omitempty"`
	// Export says why the exchange counted as an export and what became of it.
	Export rules.ExportFlags `json:"export"`
	// Shadow is true when the rule set only reports (nothing was enforced).
	Shadow bool `json:"shadow,omitempty"`
	// Rewritten is true when the answer body was rewritten.
	Rewritten bool `json:"rewritten,omitempty"`
	// Streamed is true when the answer was rewritten while it streamed
	// (larger than max_body; stream.go).
	Streamed bool `json:"streamed,omitempty"`
	// Target is what the fetch of the stored record the request changes
	// found (routes with a target only).
	Target *rules.TargetAudit `json:"target,omitempty"`
	// Grant is the export grant the request used: id, policy, purpose and
	// approvers.
	Grant *rules.GrantAudit `json:"grant,omitempty"`
	// Elevation is the temporary access active for the user: every
	// decision of the request used its roles.
	Elevation *ElevationAudit `json:"elevation,omitempty"`
	// Workflow is the step of an approval or elevation the request took
	// (requested, approved, denied, ...), or the clock took (expired).
	Workflow *workflow.Audit `json:"workflow,omitempty"`
	// Limits are the usage limits the request hit (limits.go).
	Limits []LimitHit `json:"limits,omitempty"`
	// LimitsReset names the step_up limits whose window a fresh MFA
	// sign-in emptied on this request.
	LimitsReset []string `json:"limits_reset,omitempty"`
	// BodyFields are the fields the request body set, on requests whose
	// body the rules read.
	BodyFields []string `json:"body_fields,omitempty"`
	// Changes are the old and new values of the route's audit_changes
	// fields the request set.
	Changes map[string]rules.Change `json:"changes,omitempty"`
	// Reload is set on the event a rule file reload writes (decision
	// "reload").
	Reload *ReloadAudit `json:"reload,omitempty"`
	// DurationMS is the time spent on the request, in milliseconds.
	DurationMS float64 `json:"duration_ms"`
}

// AuditSink receives audit events. Implementations are safe for concurrent
// use.
type AuditSink interface {
	// Write records one event.
	Write(ev *AuditEvent) error
}

// loggerSink writes events to a zap logger (crm_guard.audit by default).
type loggerSink struct{ log *zap.Logger }

// Write logs ev at INFO under the key "event".
func (s loggerSink) Write(ev *AuditEvent) error {
	s.log.Info("request", zap.Object("event", ev))
	return nil
}

// MarshalLogObject writes the event as a structured log object with the
// same keys as its JSON form, without reflection.
func (ev *AuditEvent) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	enc.AddString("time", ev.Time.Format(time.RFC3339Nano))
	if ev.RequestID != "" {
		enc.AddString("request_id", ev.RequestID)
	}
	if ev.User != "" {
		enc.AddString("user", ev.User)
	}
	if len(ev.Roles) > 0 {
		_ = enc.AddArray("roles", stringArray(ev.Roles))
	}
	enc.AddString("method", ev.Method)
	enc.AddString("path", ev.Path)
	if ev.Route != "" {
		enc.AddString("route", ev.Route)
	}
	if ev.RulesVersion != "" {
		enc.AddString("rules_version", ev.RulesVersion)
	}
	enc.AddString("decision", ev.Decision)
	if ev.Reason != "" {
		enc.AddString("reason", ev.Reason)
	}
	enc.AddInt("status", ev.Status)
	enc.AddInt("records_in", ev.RecordsIn)
	enc.AddInt("records_out", ev.RecordsOut)
	if len(ev.RecordIDs) > 0 {
		_ = enc.AddArray("record_ids", stringArray(ev.RecordIDs))
	}
	if ev.RecordIDsOmitted > 0 {
		enc.AddInt("record_ids_omitted", ev.RecordIDsOmitted)
	}
	if len(ev.Fields) > 0 {
		_ = enc.AddObject("fields", fieldCounts(ev.Fields))
	}
	if ev.EvalErrors != 0 {
		enc.AddInt("eval_errors", ev.EvalErrors)
	}
	_ = enc.AddObject("export", exportFlags(ev.Export))
	if ev.Shadow {
		enc.AddBool("shadow", true)
	}
	if ev.Rewritten {
		enc.AddBool("rewritten", true)
	}
	if ev.Streamed {
		enc.AddBool("streamed", true)
	}
	if ev.Target != nil {
		_ = enc.AddObject("target", targetAudit(*ev.Target))
	}
	if ev.Grant != nil {
		_ = enc.AddObject("grant", grantAudit(*ev.Grant))
	}
	if ev.Elevation != nil {
		_ = enc.AddReflected("elevation", ev.Elevation)
	}
	if ev.Workflow != nil {
		_ = enc.AddReflected("workflow", ev.Workflow)
	}
	if len(ev.Limits) > 0 {
		_ = enc.AddArray("limits", limitHits(ev.Limits))
	}
	if len(ev.LimitsReset) > 0 {
		_ = enc.AddArray("limits_reset", stringArray(ev.LimitsReset))
	}
	if len(ev.BodyFields) > 0 {
		_ = enc.AddArray("body_fields", stringArray(ev.BodyFields))
	}
	if len(ev.Changes) > 0 {
		_ = enc.AddReflected("changes", ev.Changes)
	}
	if ev.Reload != nil {
		_ = enc.AddReflected("reload", ev.Reload)
	}
	enc.AddFloat64("duration_ms", ev.DurationMS)
	return nil
}

// stringArray logs a list of strings.
type stringArray []string

// MarshalLogArray implements zapcore.ArrayMarshaler.
func (a stringArray) MarshalLogArray(enc zapcore.ArrayEncoder) error {
	for _, s := range a {
		enc.AppendString(s)
	}
	return nil
}

// fieldCounts logs the fields treated, keys sorted.
type fieldCounts map[string]int

// MarshalLogObject implements zapcore.ObjectMarshaler.
func (m fieldCounts) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		enc.AddInt(k, m[k])
	}
	return nil
}

// exportFlags logs the export flags that are set.
type exportFlags rules.ExportFlags

// MarshalLogObject implements zapcore.ObjectMarshaler.
func (f exportFlags) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	for _, x := range []struct {
		name string
		on   bool
	}{{"route", f.Route}, {"download", f.Download}, {"too_many", f.TooMany}, {"approved", f.Approved}, {"blocked", f.Blocked}} {
		if x.on {
			enc.AddBool(x.name, true)
		}
	}
	return nil
}

// grantAudit logs rules.GrantAudit with its JSON keys.
type grantAudit rules.GrantAudit

// MarshalLogObject implements zapcore.ObjectMarshaler.
func (g grantAudit) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	enc.AddString("id", g.ID)
	enc.AddString("policy", g.Policy)
	if g.Purpose != "" {
		enc.AddString("purpose", g.Purpose)
	}
	if len(g.Approvers) > 0 {
		_ = enc.AddArray("approvers", stringArray(g.Approvers))
	}
	return nil
}

// MarshalJSON encodes the event without reflection: one event is written
// per request, so this is on the hot path. The output is the same as
// encoding/json's for the struct tags above (a test checks it).
func (ev *AuditEvent) MarshalJSON() ([]byte, error) {
	return ev.appendJSON(make([]byte, 0, 512)), nil
}

func (ev *AuditEvent) appendJSON(b []byte) []byte {
	b = append(b, `{"time":`...)
	b = append(b, '"')
	b = ev.Time.AppendFormat(b, time.RFC3339Nano)
	b = append(b, '"')
	if ev.RequestID != "" {
		b = appendKey(b, "request_id")
		b = appendString(b, ev.RequestID)
	}
	if ev.User != "" {
		b = appendKey(b, "user")
		b = appendString(b, ev.User)
	}
	if len(ev.Roles) > 0 {
		b = appendKey(b, "roles")
		b = appendStrings(b, ev.Roles)
	}
	b = appendKey(b, "method")
	b = appendString(b, ev.Method)
	b = appendKey(b, "path")
	b = appendString(b, ev.Path)
	if ev.Route != "" {
		b = appendKey(b, "route")
		b = appendString(b, ev.Route)
	}
	if ev.RulesVersion != "" {
		b = appendKey(b, "rules_version")
		b = appendString(b, ev.RulesVersion)
	}
	b = appendKey(b, "decision")
	b = appendString(b, ev.Decision)
	if ev.Reason != "" {
		b = appendKey(b, "reason")
		b = appendString(b, ev.Reason)
	}
	b = appendKey(b, "status")
	b = strconv.AppendInt(b, int64(ev.Status), 10)
	b = appendKey(b, "records_in")
	b = strconv.AppendInt(b, int64(ev.RecordsIn), 10)
	b = appendKey(b, "records_out")
	b = strconv.AppendInt(b, int64(ev.RecordsOut), 10)
	if len(ev.RecordIDs) > 0 {
		b = appendKey(b, "record_ids")
		b = appendStrings(b, ev.RecordIDs)
	}
	if ev.RecordIDsOmitted > 0 {
		b = appendKey(b, "record_ids_omitted")
		b = strconv.AppendInt(b, int64(ev.RecordIDsOmitted), 10)
	}
	if len(ev.Fields) > 0 {
		b = appendKey(b, "fields")
		keys := make([]string, 0, len(ev.Fields))
		for k := range ev.Fields {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		b = append(b, '{')
		for i, k := range keys {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, k)
			b = append(b, ':')
			b = strconv.AppendInt(b, int64(ev.Fields[k]), 10)
		}
		b = append(b, '}')
	}
	if ev.EvalErrors != 0 {
		b = appendKey(b, "eval_errors")
		b = strconv.AppendInt(b, int64(ev.EvalErrors), 10)
	}
	b = appendKey(b, "export")
	b = append(b, '{')
	first := true
	for _, f := range []struct {
		name string
		on   bool
	}{{"route", ev.Export.Route}, {"download", ev.Export.Download}, {"too_many", ev.Export.TooMany}, {"approved", ev.Export.Approved}, {"blocked", ev.Export.Blocked}} {
		if !f.on {
			continue
		}
		if !first {
			b = append(b, ',')
		}
		first = false
		b = appendString(b, f.name)
		b = append(b, ":true"...)
	}
	b = append(b, '}')
	if ev.Shadow {
		b = append(b, `,"shadow":true`...)
	}
	if ev.Rewritten {
		b = append(b, `,"rewritten":true`...)
	}
	if ev.Streamed {
		b = append(b, `,"streamed":true`...)
	}
	b = appendTarget(b, ev.Target) // target.go
	if g := ev.Grant; g != nil {
		b = appendKey(b, "grant")
		b = append(b, `{"id":`...)
		b = appendString(b, g.ID)
		b = append(b, `,"policy":`...)
		b = appendString(b, g.Policy)
		if g.Purpose != "" {
			b = append(b, `,"purpose":`...)
			b = appendString(b, g.Purpose)
		}
		if len(g.Approvers) > 0 {
			b = append(b, `,"approvers":`...)
			b = appendStrings(b, g.Approvers)
		}
		b = append(b, '}')
	}
	b = appendWorkflow(b, ev)         // workflow.go
	b = appendLimitHits(b, ev.Limits) // limits.go
	if len(ev.LimitsReset) > 0 {
		b = appendKey(b, "limits_reset")
		b = appendStrings(b, ev.LimitsReset)
	}
	b = appendWrite(b, ev) // audit_version.go
	b = appendKey(b, "duration_ms")
	b = strconv.AppendFloat(b, ev.DurationMS, 'f', -1, 64)
	return append(b, '}')
}

func appendKey(b []byte, k string) []byte {
	b = append(b, ',', '"')
	b = append(b, k...)
	return append(b, '"', ':')
}

func appendStrings(b []byte, ss []string) []byte {
	b = append(b, '[')
	for i, s := range ss {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, s)
	}
	return append(b, ']')
}

// appendString appends s as a JSON string the way encoding/json does
// (HTML-safe escapes, invalid UTF-8 replaced by U+FFFD).
func appendString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
