package caddymodule

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"

	"github.com/crmguard/crmguard/rules"
)

const changesRules = `version: 1
roles: {sales: {}, service: {}}
routes:
  - id: customers.update
    match: {methods: [PATCH], path: "/api/customers/{id}"}
    allow: [sales, service]
    target:
      fetch: "/api/customers/{id}"
      allow_if: record.owner_id == user.id || "service" in user.roles
    audit_changes: [owner_id, {field: stage, plain: true}]
`

func TestAWritesEventCarriesItsFieldsChangesAndRulesVersion(t *testing.T) {
	set, err := rules.Load("changes.yaml", []byte(changesRules), rules.WithHashKey([]byte("k")))
	if err != nil {
		t.Fatal(err)
	}
	sink := &memSink{}
	g, err := NewGuard(GuardOptions{Rules: func() *rules.Set { return set }, Audit: sink, Provider: &testProvider{user: &testUser{id: "zhang", roles: []string{"sales"}}}})
	if err != nil {
		t.Fatal(err)
	}
	crm := &targetCRM{fetch: answerJSON(200, `{"id":1,"owner_id":"zhang","stage":"lead"}`)}
	rec := httptest.NewRecorder()
	if err := g.ServeHTTP(rec, patch("/api/customers/1", `{"stage":"won","notes":"called"}`), crm.handler()); err != nil || rec.Code != 200 {
		t.Fatalf("status %d, %v", rec.Code, err)
	}
	if len(sink.events) != 1 {
		t.Fatalf("%d events", len(sink.events))
	}
	ev := sink.events[0]
	line, _ := json.Marshal(&ev)
	var got struct {
		RulesVersion string                     `json:"rules_version"`
		BodyFields   []string                   `json:"body_fields"`
		Changes      map[string]json.RawMessage `json:"changes"`
	}
	if err := json.Unmarshal(line, &got); err != nil {
		t.Fatal(err)
	}
	if got.RulesVersion != set.Version() || len(got.RulesVersion) != 16 {
		t.Errorf("rules_version %q, want %q", got.RulesVersion, set.Version())
	}
	if !slices.Equal(got.BodyFields, []string{"notes", "stage"}) {
		t.Errorf("body_fields %v", got.BodyFields)
	}
	if string(got.Changes["stage"]) != `{"old":"lead","new":"won"}` || len(got.Changes) != 1 {
		t.Errorf("changes %s", line)
	}
}

// TestARulesReloadWritesAnEventWithTheChangesPerRole changes the rule file
// under a provisioned handler and reads the reload event from its audit
// file.
func TestARulesReloadWritesAnEventWithTheChangesPerRole(t *testing.T) {
	dir := t.TempDir()
	rulesFile := filepath.Join(dir, "rules.yaml")
	auditFile := filepath.Join(dir, "audit.jsonl")
	v1 := "version: 1\nroles: {sales: {}, service: {}}\nroutes:\n  - id: customers.list\n    match: {methods: [GET], path: /api/customers}\n    allow: [sales]\n"
	if err := os.WriteFile(rulesFile, []byte(v1), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	h := &Handler{Rules: rulesFile, Audit: auditFile, AuditChainKey: "chain", ReloadInterval: -1}
	if err := h.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	defer h.Cleanup()
	oldVersion := h.source.Current().Version()
	// A comment only: the content is the same, the version too, no event.
	if err := os.WriteFile(rulesFile, []byte("# reviewed\n"+v1), 0o600); err != nil {
		t.Fatal(err)
	}
	h.source.check()
	v2 := strings.Replace(v1, "allow: [sales]", "allow: [sales, service]", 1)
	if err := os.WriteFile(rulesFile, []byte(v2), 0o600); err != nil {
		t.Fatal(err)
	}
	h.source.check()
	newVersion := h.source.Current().Version()
	if newVersion == oldVersion {
		t.Fatal("the version did not change")
	}
	data, err := os.ReadFile(auditFile)
	if err != nil {
		t.Fatal(err)
	}
	var reloads []AuditEvent
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		var ev AuditEvent
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("%v: %s", err, line)
		}
		if ev.Decision == "reload" {
			reloads = append(reloads, ev)
		}
	}
	// The comment-only edit installs a set (the bytes changed) with the
	// same version: its event says so, with no role changes.
	if len(reloads) != 2 {
		t.Fatalf("%d reload events in\n%s", len(reloads), data)
	}
	last := reloads[1]
	if last.RulesVersion != newVersion || last.Reload.OldVersion != oldVersion || last.Reload.NewVersion != newVersion || last.Reload.File != rulesFile {
		t.Errorf("reload event %+v %+v", last, last.Reload)
	}
	if len(last.Reload.Roles) != 1 || last.Reload.Roles[0].Role != "service" || !slices.Equal(last.Reload.Roles[0].Added, []string{"customers.list"}) {
		t.Errorf("role changes %+v", last.Reload.Roles)
	}
	if first := reloads[0]; first.Reload.OldVersion != first.Reload.NewVersion || len(first.Reload.Roles) != 0 {
		t.Errorf("a comment-only edit: %+v", first.Reload)
	}
	if res := verifyFiles(t, [][]byte{[]byte("chain")}, auditFile); res.Problem != nil {
		t.Errorf("the reload events broke the chain: %v", res.Problem)
	}
}
