package caddymodule

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/crmguard/crmguard/rules"
)

func TestAuditEventJSONMatchesEncodingJSON(t *testing.T) {
	// plainEvent has the same fields and tags without the MarshalJSON
	// method, so encoding/json encodes it by reflection.
	type plainEvent AuditEvent
	tests := []struct {
		name string
		ev   AuditEvent
	}{
		{name: "an empty event keeps its required keys", ev: AuditEvent{}},
		{name: "a full event encodes every field", ev: AuditEvent{
			Time: time.Date(2026, 11, 20, 10, 0, 0, 123456789, time.UTC), RequestID: "r-1", User: "zhang",
			Roles: []string{"sales", "sales_manager"}, Method: "GET", Path: "/api/customers", Route: "customers.list",
			Decision: "allow", Reason: "role sales is allowed", Status: 200, RecordsIn: 9, RecordsOut: 3,
			RecordIDs: []string{"1", "4"}, Fields: map[string]int{"mask:phone": 3, "remove:bank_account": 3},
			EvalErrors: 2, Export: rules.ExportFlags{Route: true, Blocked: true}, Shadow: true, Rewritten: true, DurationMS: 1.234,
			Grant: &rules.GrantAudit{ID: "g-1", Policy: "export", Purpose: "Q4 \"review\"", Approvers: []string{"wang", "zhou"}},
			Limits: []LimitHit{{Limit: "bulk_view", Counts: "records", Action: "block", Count: 420, Adding: 120, Max: 500, Window: "10m0s", Refused: true, RetryAfter: 95},
				{Limit: "off_hours", Counts: "requests", Action: "alert", Count: 1, Adding: 1, Max: 0, Window: "1h0m0s"}},
			LimitsReset: []string{"deep_read"},
		}},
		{name: "a cut streamed answer names the ids it kept and counts the rest", ev: AuditEvent{
			Method: "GET", Path: "/api/customers/export", Decision: "cut", Reason: "route export: the streamed answer was cut after 3 records",
			Status: 200, RecordsIn: 5, RecordsOut: 3, RecordIDs: []string{"1"}, RecordIDsOmitted: 2, Rewritten: true, Streamed: true,
		}},
		{name: "a grant without purpose or approvers leaves them out", ev: AuditEvent{Grant: &rules.GrantAudit{ID: "g-2", Policy: "export"}}},
		{name: "a write's rules version, fields and changes, and a reload, encode like encoding/json", ev: AuditEvent{
			Method: "PATCH", Path: "/api/customers/1", RulesVersion: "0123456789abcdef", Decision: "allow",
			BodyFields: []string{"notes", "stage"},
			Changes:    map[string]rules.Change{"stage": {Old: []byte(`"lead"`), New: []byte(`"won"`)}, "owner_id": {New: []byte(`"5e88"`)}},
			Reload: &ReloadAudit{File: "rules.yaml", OldVersion: "a", NewVersion: "b",
				Roles: []rules.RoleChange{{Role: "sales", Added: []string{"x"}, Changed: []rules.RouteChange{{Route: "y", What: []string{"records"}}}}}},
		}},
		{name: "strings with quotes, controls, HTML, bad UTF-8 and separators are escaped like encoding/json",
			ev: AuditEvent{User: "a\"b\\c\n\t\x01<script>&\xff\u2028张三", Path: "/x?<y>", Reason: "\x7f end"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := json.Marshal(&tt.ev)
			if err != nil {
				t.Fatal(err)
			}
			want, err := json.Marshal(plainEvent(tt.ev))
			if err != nil {
				t.Fatal(err)
			}
			var g, w any
			if err := json.Unmarshal(got, &g); err != nil {
				t.Fatalf("not JSON: %v: %s", err, got)
			}
			_ = json.Unmarshal(want, &w)
			if !reflect.DeepEqual(g, w) {
				t.Errorf("\ngot  %s\nwant %s", got, want)
			}
		})
	}
}

func TestAuditLoggerSinkWritesTheSameObject(t *testing.T) {
	ev := AuditEvent{Time: time.Date(2026, 11, 20, 2, 0, 0, 0, time.UTC), RequestID: "r", User: "zhang", Roles: []string{"sales"},
		Method: "GET", Path: "/api/customers", Route: "customers.list", Decision: "allow", Status: 200, RecordsIn: 2, RecordsOut: 1,
		RecordIDs: []string{"1"}, Fields: map[string]int{"mask:phone": 1}, Export: rules.ExportFlags{Download: true}, Shadow: true, DurationMS: 0.5,
		Grant: &rules.GrantAudit{ID: "g-1", Policy: "export", Purpose: "Q4 review", Approvers: []string{"wang", "zhou"}},
		Limits: []LimitHit{{Limit: "bulk_view", Counts: "records", Action: "block", Count: 420, Adding: 120, Max: 500, Window: "10m0s", Refused: true, RetryAfter: 95},
			{Limit: "off_hours", Counts: "requests", Action: "alert", Count: 1, Adding: 1, Window: "1h0m0s"}},
		LimitsReset:  []string{"deep_read"},
		RulesVersion: "0123456789abcdef", BodyFields: []string{"stage"}, Changes: map[string]rules.Change{"stage": {Old: []byte(`"a"`), New: []byte(`"b"`)}},
		Reload: &ReloadAudit{File: "r.yaml", OldVersion: "a", NewVersion: "b"}}
	var buf bytes.Buffer
	enc := zapcore.NewJSONEncoder(zapcore.EncoderConfig{MessageKey: "msg"})
	core := zapcore.NewCore(enc, zapcore.AddSync(&buf), zapcore.InfoLevel)
	if err := (loggerSink{log: zap.New(core)}).Write(&ev); err != nil {
		t.Fatal(err)
	}
	var line struct {
		Event map[string]any `json:"event"`
	}
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatalf("log line is not JSON: %v: %s", err, buf.String())
	}
	want, _ := json.Marshal(&ev)
	var w map[string]any
	_ = json.Unmarshal(want, &w)
	if !reflect.DeepEqual(line.Event, w) {
		t.Errorf("logger event\n got %v\nwant %v", line.Event, w)
	}
}
