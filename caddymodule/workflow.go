package caddymodule

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/crmguard/crmguard/caddymodule/authn"
	"github.com/crmguard/crmguard/caddymodule/workflow"
	"github.com/crmguard/crmguard/rules"
)

// This file is where the guard meets package workflow: the elevation a
// request runs with, the /.crmguard/approvals and /.crmguard/elevations
// API and pages, and the audit events of workflow steps.

// ElevationAudit is the `elevation` member of an audit event: the
// temporary access whose roles the request's decisions used.
type ElevationAudit struct {
	// ID identifies the elevation.
	ID string `json:"id"`
	// Name is the rule file's elevation.
	Name string `json:"name"`
	// Reason is why the user started it.
	Reason string `json:"reason"`
}

// elevate returns the user with the roles of the elevation active in the
// session, recording it in the audit event; user itself when none is.
// An error means the store could not say (the request is refused with
// 503: it may be elevated).
func (x *exchange) elevate(set *rules.Set, user *rules.User, id *authn.Identity) (*rules.User, error) {
	wf := x.g.opt.Workflow
	if wf == nil || user == nil {
		return user, nil
	}
	a, err := wf.ActiveFor(x.r.Context(), set, user, id)
	if err != nil || a == nil {
		return user, err
	}
	x.ev.Elevation = &ElevationAudit{ID: a.ID, Name: a.Name, Reason: a.Reason}
	return set.Elevate(user, a.Roles), nil
}

// serveWorkflow serves the workflow API and pages to the signed-in user
// (signedIn: roles of the sign-in; user: with an active elevation).
func (x *exchange) serveWorkflow(w http.ResponseWriter, set *rules.Set, signedIn, user *rules.User, id *authn.Identity) error {
	x.ev.Decision = "workflow"
	wf := x.g.opt.Workflow
	if wf == nil {
		return x.refuse(w, refusal{Status: http.StatusNotFound, Reason: "Approvals and temporary access are not set up on this site."}, "deny")
	}
	if signedIn == nil {
		x.ev.Decision = "sign_in"
		return x.ask(w, x.r, authn.Need{SignIn: true, Reason: "approvals and temporary access need a signed-in user",
			Message: "Sign in to see approvals and temporary access."}, "")
	}
	if mfa := set.MFA(); mfa.Required && !signedIn.MFA {
		x.ev.Decision = "step_up"
		return x.ask(w, x.r, authn.Need{StepUp: rules.StepUpNeed{MFA: true, ACR: mfa.ACR}, Reason: "approvals and temporary access need an MFA sign-in",
			Message: "Sign in again with your second factor to see approvals and temporary access."}, "")
	}
	forms, _ := x.g.opt.Provider.(authn.FormTokens)
	sw := &statusWriter{ResponseWriter: w}
	res := wf.ServeHTTP(sw, x.r, &workflow.Caller{User: signedIn, Effective: user, Identity: id, Set: set}, workflow.HTTP{
		HTML:  wantsHTML(x.r),
		Forms: forms,
		Challenge: func(w http.ResponseWriter, r *http.Request, need authn.Need) {
			x.ev.Decision = "step_up"
			_ = x.ask(w, r, need, "")
		},
	})
	if x.ev.Status == 0 {
		x.ev.Status = sw.status
	}
	x.ev.Workflow = res.Audit
	if res.Reason != "" {
		x.ev.Reason = res.Reason
	}
	switch s := x.ev.Status; {
	case x.ev.Decision == "step_up":
	case s == http.StatusServiceUnavailable || s >= 500:
		x.ev.Decision = "error"
		x.g.opt.Logger.Warn("workflow request failed", zap.String("path", x.ev.Path), zap.String("reason", res.Reason))
	case s >= 400:
		x.ev.Decision = "deny"
	}
	return nil
}

// approvalRefusal fills in f's link to the request form of the approval
// a refused request lacks, with the request named: an export by its
// method and target (its refusal has status 403), a write by its method,
// target and the values its approval binds (rules'
// Decision.ApprovalValues, set only when the write was refused for want
// of a usable grant). Nothing when none can be asked for.
func (x *exchange) approvalRefusal(d *rules.Decision, f refusal) refusal {
	if x.g.opt.Workflow == nil || d.Approval == "" || f.Status != http.StatusForbidden {
		return f
	}
	q := url.Values{"method": {x.r.Method}, "path": {x.r.URL.RequestURI()}}
	if values := d.ApprovalValues(); values != nil {
		var b strings.Builder
		enc := json.NewEncoder(&b)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(values); err != nil {
			return f
		}
		q.Set("values", strings.TrimSuffix(b.String(), "\n"))
		f.Change = true
	} else if d.Status != http.StatusForbidden || d.Outcome != rules.Deny {
		return f // not an export's refusal: a write refused for another reason
	}
	f.Approval = workflow.ApprovalsPath + "/new?" + q.Encode()
	return f
}

// startWorkflow starts the approvals and elevations of the handler on
// its state store, notifying through its notifier, and ends elevations
// with the sessions the provider ends.
func (h *Handler) startWorkflow(current func() *rules.Set, sink AuditSink) error {
	opt := workflow.Options{Store: h.state, Rules: current, Audit: workflowAuditor(sink, h.logger, time.Now), Logger: h.logger.Named("workflow")}
	if h.notifier != nil {
		opt.Notifier = h.notifier
	}
	wf, err := workflow.New(opt)
	if err != nil {
		return fmt.Errorf("caddymodule: crm_guard approvals and elevations: %w", err)
	}
	h.workflow = wf
	if sw, ok := h.provider.(authn.SessionWatcher); ok {
		logger := h.logger
		sw.OnSessionEnd(func(ctx context.Context, end authn.SessionEnd) {
			if _, err := wf.SessionEnded(ctx, end.SessionID, end.SID, end.Subject, end.Why); err != nil {
				// Its roles cannot be used any more (they are bound to the
				// session, which is gone); its record says active until it
				// expires.
				logger.Error("the temporary access of an ended session could not be ended", zap.Error(err), zap.String("why", end.Why))
			}
		})
	}
	return nil
}

// workflowAuditor writes the workflow steps the clock takes (an expiry
// found by the sweeper or a read) as audit events of their own.
func workflowAuditor(sink AuditSink, logger *zap.Logger, now func() time.Time) func(a *workflow.Audit) {
	return func(a *workflow.Audit) {
		if sink == nil {
			return
		}
		path := workflow.ApprovalsPath + "/" + a.ID
		if a.Kind == "elevation" {
			path = workflow.ElevationsPath + "/" + a.ID
		}
		ev := &AuditEvent{Time: now().UTC(), User: a.Requester, Path: path, Decision: "workflow", Workflow: a}
		if err := sink.Write(ev); err != nil {
			logger.Error("AUDIT EVENT LOST: could not write the workflow audit event", zap.Error(err),
				zap.String("kind", a.Kind), zap.String("id", a.ID), zap.String("action", a.Action))
		}
	}
}

// appendWorkflow appends the elevation and workflow members of ev (rare:
// encoded by reflection, the same bytes encoding/json writes).
func appendWorkflow(b []byte, ev *AuditEvent) []byte {
	if ev.Elevation != nil {
		b = appendMarshaled(b, "elevation", ev.Elevation)
	}
	if ev.Workflow != nil {
		b = appendMarshaled(b, "workflow", ev.Workflow)
	}
	return b
}
