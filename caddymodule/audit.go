package caddymodule

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

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
	// Decision is what happened: allow, deny, sign_in, step_up, blocked,
	// error, provider.
	Decision string `json:"decision"`
	// Reason is a sentence a person can read.
	Reason string `json:"reason,omitempty"`
	// Status is the HTTP status the client received.
	Status int `json:"status"`
	// RecordsIn counts the records in the CRM's answer.
	RecordsIn int `json:"records_in"`
	// RecordsOut counts the records the client received.
	RecordsOut int `json:"records_out"`
	// RecordIDs names the records the client received (audit_id).
	RecordIDs []string `json:"record_ids,omitempty"`
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

func (s loggerSink) Write(ev *AuditEvent) error {
	s.log.Info("request", zap.Any("event", ev))
	return nil
}

// fileSink appends one JSON line per event to a file. One write call per
// line under a mutex keeps lines whole under concurrency.
type fileSink struct {
	path string
	mu   sync.Mutex
	f    *os.File
}

// Write appends ev as one line.
func (s *fileSink) Write(ev *AuditEvent) error {
	line, err := json.Marshal(ev)
	if err != nil {
		return fmt.Errorf("caddymodule: encoding audit event: %w", err)
	}
	line = append(line, '\n')
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		return fmt.Errorf("caddymodule: audit file %s is closed", s.path)
	}
	if _, err := s.f.Write(line); err != nil {
		return fmt.Errorf("caddymodule: writing audit event to %s: %w", s.path, err)
	}
	return nil
}

// Destruct closes the file when the last configuration using it is gone.
func (s *fileSink) Destruct() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		return nil
	}
	err := s.f.Close()
	s.f = nil
	return err
}

// auditFiles shares one open file per path across config reloads.
var auditFiles = caddy.NewUsagePool()

// openAuditFile returns the shared sink for path, opening the file for
// appending (created with mode 0600, parent directories 0700) on first use.
func openAuditFile(path string) (*fileSink, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("caddymodule: audit file %q: %w", path, err)
	}
	v, _, err := auditFiles.LoadOrNew(abs, func() (caddy.Destructor, error) {
		if err := os.MkdirAll(filepath.Dir(abs), 0o700); err != nil {
			return nil, fmt.Errorf("caddymodule: creating the audit directory: %w", err)
		}
		f, err := os.OpenFile(abs, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			return nil, fmt.Errorf("caddymodule: opening audit file: %w", err)
		}
		return &fileSink{path: abs, f: f}, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*fileSink), nil
}

// releaseAuditFile drops one use of the file at path.
func releaseAuditFile(path string) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return
	}
	_, _ = auditFiles.Delete(abs)
}
