package caddymodule

import (
	"encoding/json"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/crmguard/crmguard/rules"
)

// ReloadAudit is the `reload` of the event a rule file reload writes:
// which versions, and what changed for each role (rules.DiffAccess, the
// permission matrix's view).
type ReloadAudit struct {
	// File is the rule file.
	File string `json:"file"`
	// OldVersion and NewVersion are the rule file's versions before and
	// after (rules.Set.Version).
	OldVersion string `json:"old_version"`
	NewVersion string `json:"new_version"`
	// Roles says, per role, the routes it may now call, may call no more,
	// and may call on other terms; roles without a change are left out.
	Roles []rules.RoleChange `json:"roles,omitempty"`
}

// appendWrite appends the members a write or a reload adds (rare: the
// maps and lists are encoded by encoding/json, the bytes it writes for
// the struct).
func appendWrite(b []byte, ev *AuditEvent) []byte {
	if len(ev.BodyFields) > 0 {
		b = appendKey(b, "body_fields")
		b = appendStrings(b, ev.BodyFields)
	}
	if len(ev.Changes) > 0 {
		b = appendMarshaled(b, "changes", ev.Changes)
	}
	if ev.Reload != nil {
		b = appendMarshaled(b, "reload", ev.Reload)
	}
	return b
}

// appendMarshaled appends the member key with v as encoding/json writes
// it, for the event's rare members; a value it cannot encode is left out.
func appendMarshaled(b []byte, key string, v any) []byte {
	j, err := json.Marshal(v)
	if err != nil {
		return b
	}
	return append(appendKey(b, key), j...)
}

// versionStamp writes events through sink, giving an event without a
// rules_version the running rule set's (the workflow steps the clock takes
// are decided by no request).
type versionStamp struct {
	AuditSink
	current func() *rules.Set
}

// Write stamps ev and writes it.
func (s versionStamp) Write(ev *AuditEvent) error {
	if ev.RulesVersion == "" {
		if set := s.current(); set != nil {
			ev.RulesVersion = set.Version()
		}
	}
	return s.AuditSink.Write(ev)
}

// reloadAuditor writes the event of a rule file reload to one handler's
// audit sink.
type reloadAuditor struct {
	sink   AuditSink
	logger *zap.Logger
	now    func() time.Time
}

// reloaded writes the reload event: old and new versions, and what
// changed for each role.
func (a *reloadAuditor) reloaded(file string, old, new *rules.Set) {
	ev := &AuditEvent{Time: a.now().UTC(), Decision: "reload", RulesVersion: new.Version(),
		Reload: &ReloadAudit{File: file, NewVersion: new.Version()}}
	if old != nil {
		ev.Reload.OldVersion = old.Version()
		ev.Reload.Roles = rules.DiffAccess(old, new)
	}
	if err := a.sink.Write(ev); err != nil {
		a.logger.Error("AUDIT EVENT LOST: could not write the rules reload event", zap.Error(err),
			zap.String("file", file), zap.String("new_version", new.Version()))
	}
}

// reloadListeners are the handlers told about a rule source's reloads.
type reloadListeners struct {
	mu sync.Mutex
	m  map[*Handler]func(file string, old, new *rules.Set)
}

func (l *reloadListeners) add(h *Handler, fn func(file string, old, new *rules.Set)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.m == nil {
		l.m = map[*Handler]func(string, *rules.Set, *rules.Set){}
	}
	l.m[h] = fn
}

func (l *reloadListeners) remove(h *Handler) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.m, h)
}

// notify tells every listener; a configuration shared by several handlers
// of one sink writes one event per handler.
func (l *reloadListeners) notify(file string, old, new *rules.Set) {
	l.mu.Lock()
	fns := make([]func(string, *rules.Set, *rules.Set), 0, len(l.m))
	for _, fn := range l.m {
		fns = append(fns, fn)
	}
	l.mu.Unlock()
	for _, fn := range fns {
		fn(file, old, new)
	}
}
