package workflow

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/crmguard/crmguard/caddymodule/authn"
	"github.com/crmguard/crmguard/caddymodule/notify"
	"github.com/crmguard/crmguard/caddymodule/store"
	"github.com/crmguard/crmguard/rules"
)

// How elevations end (Elevation.EndReason).
const (
	EndExpired   = "expired"
	EndByUser    = "ended by the user"
	EndSignedOut = "signed out"
	EndWithdrawn = "withdrawn"
)

// --- records ---

func decodeElevation(r *store.Record) (*elevationRecord, error) {
	var e elevationRecord
	if err := json.Unmarshal(r.Value, &e); err != nil {
		return nil, fmt.Errorf("workflow: elevation %s: %w", r.Key, err)
	}
	return &e, nil
}

func (e *elevationRecord) open() bool { return e.Status == StatusPending || e.Status == StatusActive }

// term returns an index term, or "" when v cannot be one.
func term(prefix, v string) string {
	if v == "" || len(v) > store.MaxKeyLength-len(prefix) || strings.ContainsAny(v, "\x00\n") {
		return ""
	}
	return prefix + v
}

func (s *Service) elevationEntry(e *elevationRecord) (*store.Record, error) {
	b, err := json.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("workflow: encoding elevation %s: %w", e.ID, err)
	}
	idx := []string{"by:" + e.User}
	var until time.Time
	switch {
	case e.open():
		idx = append(idx, "open")
		for _, t := range []string{term("sess:", e.Session), term("sub:", e.Subject), term("sid:", e.SID)} {
			if t != "" {
				idx = append(idx, t)
			}
		}
		until = e.Expires.Add(s.opt.Retention)
	case e.needsReview():
		idx = append(idx, "review") // kept until reviewed
	default:
		until = e.Ended.Add(s.opt.Retention)
	}
	return &store.Record{Key: e.ID, Value: b, Index: idx, Expires: until}, nil
}

func (s *Service) getElevation(ctx context.Context, id string) (*elevationRecord, error) {
	if !validID(id) {
		return nil, &Error{Status: http.StatusNotFound, Message: "There is no temporary access with this id."}
	}
	r, err := s.opt.Store.Get(ctx, nsElevation, id)
	if err != nil {
		return nil, storeErr(err, "temporary access")
	}
	e, err := decodeElevation(r)
	if err != nil {
		return nil, unavailable(err)
	}
	return s.settleElevation(ctx, e)
}

func (s *Service) modifyElevation(ctx context.Context, id string, change func(e *elevationRecord) error) (*elevationRecord, error) {
	var out *elevationRecord
	_, err := store.Modify(ctx, s.opt.Store, nsElevation, id, func(cur *store.Record) (*store.Record, error) {
		e, err := decodeElevation(cur)
		if err != nil {
			return nil, err
		}
		if err := change(e); err != nil {
			return nil, err
		}
		out = e
		return s.elevationEntry(e)
	})
	if err != nil {
		return nil, storeErr(err, "temporary access")
	}
	return out, nil
}

func (s *Service) listElevations(ctx context.Context, term string) ([]*elevationRecord, error) {
	recs, err := s.opt.Store.List(ctx, nsElevation, term)
	if err != nil {
		return nil, unavailable(err)
	}
	out := make([]*elevationRecord, 0, len(recs))
	for _, r := range recs {
		e, err := decodeElevation(r)
		if err != nil {
			s.opt.Logger.Error("unreadable elevation record", zap.String("id", r.Key), zap.Error(err))
			continue
		}
		if e, err = s.settleElevation(ctx, e); err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, nil
}

// settleElevation ends an elevation whose time ran out (once, audited).
func (s *Service) settleElevation(ctx context.Context, e *elevationRecord) (*elevationRecord, error) {
	now := s.opt.Now()
	if !e.open() || now.Before(e.Expires) {
		return e, nil
	}
	if e.Status == StatusPending {
		// Its approval request expires with it (and settles it).
		if e.Approval != "" {
			if _, err := s.getApproval(ctx, e.Approval); err != nil && !isNotFound(err) {
				return nil, err
			}
		}
		f, err := s.modifyElevation(ctx, e.ID, func(cur *elevationRecord) error {
			if cur.Status != StatusPending || now.Before(cur.Expires) {
				return errSettled
			}
			cur.Status, cur.Ended, cur.EndReason = StatusExpired, cur.Expires, "the approval was not given in time"
			return nil
		})
		if errors.Is(err, errSettled) {
			return s.rereadElevation(ctx, e.ID)
		}
		return f, err
	}
	f, err := s.end(ctx, e.ID, EndExpired, "", e.Expires)
	if errors.Is(err, errSettled) {
		return s.rereadElevation(ctx, e.ID)
	}
	if err != nil {
		return nil, err
	}
	s.audit(elevationAudit(f, "ended", "", EndExpired))
	return f, nil
}

func isNotFound(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Status == http.StatusNotFound
}

func (s *Service) rereadElevation(ctx context.Context, id string) (*elevationRecord, error) {
	r, err := s.opt.Store.Get(ctx, nsElevation, id)
	if err != nil {
		return nil, storeErr(err, "temporary access")
	}
	e, err := decodeElevation(r)
	if err != nil {
		return nil, unavailable(err)
	}
	return e, nil
}

func elevationAudit(e *elevationRecord, action, by, note string) *Audit {
	return &Audit{Kind: "elevation", ID: e.ID, Action: action, Status: e.Status, Policy: e.Name, Requester: e.User, By: by, Reason: e.Reason, Note: note}
}

// --- the request path ---

// mayElevate reports whether u holds a role some elevation is for: only
// those users can have one active, so only they cost a store read.
func mayElevate(set *rules.Set, u *rules.User) bool {
	if u == nil {
		return false
	}
	for _, name := range set.Elevations() {
		e, _ := set.Elevation(name)
		for _, r := range e.For {
			if u.HasRole(r) {
				return true
			}
		}
	}
	return false
}

// ActiveFor returns the elevation active in the session of id, or nil.
// Users holding no role any elevation is for, and identities without a
// session (bearer tokens), are answered without asking the store. An
// error means the store could not be asked (the request is refused with
// 503: it may be elevated, and nothing is decided on a guess).
func (s *Service) ActiveFor(ctx context.Context, set *rules.Set, u *rules.User, id *authn.Identity) (*Active, error) {
	if id == nil || id.SessionID == "" || !mayElevate(set, u) {
		return nil, nil
	}
	r, err := s.opt.Store.Get(ctx, nsSessions, id.SessionID)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("workflow: reading the session's temporary access: %w", err)
	}
	var a Active
	if err := json.Unmarshal(r.Value, &a); err != nil {
		return nil, fmt.Errorf("workflow: the session's temporary access is unreadable: %w", err)
	}
	if a.User != u.ID || !s.opt.Now().Before(a.Expires) {
		return nil, nil
	}
	return &a, nil
}

// activate binds an active elevation to its session.
func (s *Service) activate(ctx context.Context, e *elevationRecord) error {
	a := Active{ID: e.ID, Name: e.Name, Reason: e.Reason, User: e.User, Roles: e.Roles, Expires: e.Expires}
	b, err := json.Marshal(a)
	if err != nil {
		return err
	}
	return s.opt.Store.Create(ctx, nsSessions, &store.Record{Key: e.Session, Value: b, Expires: e.Expires})
}

// deactivate removes the session binding of elevation id (when it is
// that elevation's).
func (s *Service) deactivate(ctx context.Context, session, id string) error {
	if session == "" {
		return nil
	}
	r, err := s.opt.Store.Get(ctx, nsSessions, session)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	var a Active
	if json.Unmarshal(r.Value, &a) == nil && a.ID != id {
		return nil
	}
	return s.opt.Store.Delete(ctx, nsSessions, session)
}

// end ends elevation id: the session binding goes first (what grants the
// roles), then the record says ended. errSettled when it was not open.
func (s *Service) end(ctx context.Context, id, reason, by string, at time.Time) (*elevationRecord, error) {
	e, err := s.rereadElevation(ctx, id)
	if err != nil {
		return nil, err
	}
	if !e.open() {
		return nil, errSettled
	}
	if err := s.deactivate(ctx, e.Session, e.ID); err != nil {
		return nil, unavailable(err)
	}
	f, err := s.modifyElevation(ctx, id, func(cur *elevationRecord) error {
		if !cur.open() {
			return errSettled
		}
		if cur.Status == StatusPending {
			cur.Status, cur.Ended, cur.EndReason = StatusEnded, at, EndWithdrawn
			return nil
		}
		cur.Status, cur.Ended, cur.EndReason = StatusEnded, at, reason
		return nil
	})
	if err != nil {
		return nil, err
	}
	if f.EndReason != EndWithdrawn {
		s.notifyReview(f)
	}
	return f, nil
}

// --- the API ---

// StartElevation starts the elevation name for the caller's session with
// a reason, for duration (0: the longest allowed), or asks for its
// approval when its policy needs one.
func (s *Service) StartElevation(ctx context.Context, c *Caller, name, reason string, duration time.Duration) (*Elevation, *Audit, error) {
	reason = strings.TrimSpace(reason)
	if err := checkText("reason", reason, MaxPurpose); err != nil {
		return nil, nil, err
	}
	el, ok := c.Set.Elevation(name)
	if !ok {
		return nil, nil, &Error{Status: http.StatusBadRequest, Message: fmt.Sprintf("There is no temporary access called %q.", name)}
	}
	if c.Identity == nil || c.Identity.SessionID == "" {
		return nil, nil, &Error{Status: http.StatusBadRequest, Message: "Temporary access is bound to a browser sign-in; start it from the CRM in your browser."}
	}
	now := s.opt.Now()
	dur, err := el.MayStart(c.User, reason, duration, now)
	if err != nil {
		return nil, nil, err
	}
	open, err := s.listElevations(ctx, term("sess:", c.Identity.SessionID))
	if err != nil {
		return nil, nil, err
	}
	for _, o := range open {
		if o.open() {
			return nil, nil, &Error{Status: http.StatusConflict, Message: fmt.Sprintf("You have temporary access %s %s already; end it first.", o.Name, o.Status)}
		}
	}
	e := &elevationRecord{
		Elevation: Elevation{ID: newID("el-"), Name: el.Name, User: c.User.ID, Roles: slices.Clone(el.Grant), Reason: reason,
			Duration: dur.String(), Requested: now, ReviewBy: slices.Clone(el.ReviewBy)},
		Session: c.Identity.SessionID, Subject: c.Identity.Subject, SID: claimString(c.Identity.Claims, "sid"), DurationNS: dur,
	}
	if el.Approval == "" {
		e.Status, e.Started, e.Expires = StatusActive, now, now.Add(dur)
		if err := s.createElevation(ctx, e); err != nil {
			return nil, nil, err
		}
		if err := s.activate(ctx, e); err != nil {
			// Not bound to the session: it grants nothing. Say so in the
			// record rather than leave it "active".
			_, _ = s.modifyElevation(context.WithoutCancel(ctx), e.ID, func(cur *elevationRecord) error {
				cur.Status, cur.Ended, cur.EndReason = StatusEnded, now, "could not be started"
				return nil
			})
			return nil, nil, unavailable(err)
		}
		s.notifyStarted(e)
		return s.viewElevation(e), elevationAudit(e, "started", e.User, ""), nil
	}
	pol, ok := c.Set.ApprovalPolicy(el.Approval)
	if !ok {
		return nil, nil, &Error{Status: http.StatusConflict, Message: fmt.Sprintf("The approval policy %s of this temporary access is not in the rule file.", el.Approval)}
	}
	if err := pol.CheckPurpose(reason); err != nil {
		return nil, nil, err
	}
	a := &approvalRecord{
		Approval: Approval{ID: newID("ap-"), Kind: KindElevation, Status: StatusPending, Requester: c.User.ID, Policy: pol.Name,
			Purpose: reason, Elevation: e.ID, Steps: stepsOf(pol), Uses: 1, UsesLeft: 1, Created: now, Expires: now.Add(PendingFor)},
		RequesterRoles: c.User.Roles, RequesterAttrs: c.User.Attrs,
	}
	e.Status, e.Expires, e.Approval = StatusPending, a.Expires, a.ID
	if err := s.createElevation(ctx, e); err != nil {
		return nil, nil, err
	}
	if err := s.createApproval(ctx, a); err != nil {
		_ = s.opt.Store.Delete(context.WithoutCancel(ctx), nsElevation, e.ID)
		return nil, nil, err
	}
	s.notifyWaiting(&a.Approval)
	return s.viewElevation(e), elevationAudit(e, "requested", e.User, "approval "+a.ID), nil
}

func (s *Service) createElevation(ctx context.Context, e *elevationRecord) error {
	r, err := s.elevationEntry(e)
	if err != nil {
		return err
	}
	if err := s.opt.Store.Create(ctx, nsElevation, r); err != nil {
		return unavailable(err)
	}
	return nil
}

// elevationApproved starts the elevation its approval request asked for.
func (s *Service) elevationApproved(ctx context.Context, a *approvalRecord) {
	now := s.opt.Now()
	e, err := s.modifyElevation(ctx, a.Elevation, func(cur *elevationRecord) error {
		if cur.Status != StatusPending {
			return errSettled
		}
		cur.Status, cur.Started, cur.Expires = StatusActive, now, now.Add(cur.DurationNS)
		return nil
	})
	if err != nil {
		s.opt.Logger.Warn("an approved elevation could not be started", zap.String("elevation", a.Elevation), zap.Error(err))
		return
	}
	if err := s.activate(ctx, e); err != nil {
		reason := "could not be started"
		if errors.Is(err, store.ErrExists) {
			reason = "another temporary access was active in the session"
		}
		_, _ = s.modifyElevation(ctx, e.ID, func(cur *elevationRecord) error {
			cur.Status, cur.Ended, cur.EndReason = StatusEnded, now, reason
			return nil
		})
		s.audit(elevationAudit(e, "ended", "", reason))
		return
	}
	s.audit(elevationAudit(e, "started", e.User, "approval "+a.ID))
	s.notifyStarted(e)
}

// elevationDenied marks the elevation of a denied approval request.
func (s *Service) elevationDenied(ctx context.Context, a *approvalRecord) {
	now := s.opt.Now()
	if _, err := s.modifyElevation(ctx, a.Elevation, func(cur *elevationRecord) error {
		if cur.Status != StatusPending {
			return errSettled
		}
		cur.Status, cur.Ended, cur.EndReason = StatusDenied, now, "denied by "+a.EndedBy
		return nil
	}); err != nil && !errors.Is(err, errSettled) {
		s.opt.Logger.Warn("a denied elevation could not be marked", zap.String("elevation", a.Elevation), zap.Error(err))
	}
}

// EndElevation ends the caller's elevation id early (or withdraws it
// while it waits for approval).
func (s *Service) EndElevation(ctx context.Context, c *Caller, id string) (*Elevation, *Audit, error) {
	e, err := s.getElevation(ctx, id)
	if err != nil {
		return nil, nil, err
	}
	if e.User != c.User.ID {
		return nil, nil, &Error{Status: http.StatusNotFound, Message: "There is no temporary access of yours with this id."}
	}
	if !e.open() {
		return nil, nil, &Error{Status: http.StatusConflict, Message: fmt.Sprintf("This temporary access is %s already.", e.Status)}
	}
	f, err := s.end(ctx, id, EndByUser, c.User.ID, s.opt.Now())
	if errors.Is(err, errSettled) {
		return nil, nil, &Error{Status: http.StatusConflict, Message: "This temporary access ended meanwhile."}
	}
	if err != nil {
		return nil, nil, err
	}
	if f.Approval != "" && f.EndReason == EndWithdrawn {
		_, _ = s.modifyApproval(ctx, f.Approval, func(cur *approvalRecord) error {
			if !cur.open() {
				return errSettled
			}
			cur.Status, cur.Ended, cur.EndedBy, cur.Note = StatusRevoked, f.Ended, c.User.ID, "withdrawn"
			return nil
		})
	}
	return s.viewElevation(f), elevationAudit(f, "ended", c.User.ID, f.EndReason), nil
}

// SessionEnded ends the elevations bound to a session that ended: the
// proxy session ref, or every session of the provider session sid, or
// of the subject sub (back-channel logout, admin revoke). why says how
// ("signed out", "session revoked"). It returns how many ended.
func (s *Service) SessionEnded(ctx context.Context, ref, sid, sub, why string) (int, error) {
	seen := map[string]bool{}
	n := 0
	for _, t := range []string{term("sess:", ref), term("sid:", sid), term("sub:", sub)} {
		if t == "" {
			continue
		}
		open, err := s.opt.Store.List(ctx, nsElevation, t)
		if err != nil {
			return n, fmt.Errorf("workflow: finding the elevations of an ended session: %w", err)
		}
		for _, r := range open {
			if seen[r.Key] {
				continue
			}
			seen[r.Key] = true
			f, err := s.end(ctx, r.Key, why, "", s.opt.Now())
			if errors.Is(err, errSettled) {
				continue
			}
			if err != nil {
				return n, err
			}
			n++
			s.audit(elevationAudit(f, "ended", "", f.EndReason))
		}
	}
	return n, nil
}

// ReviewElevation records the caller's review of a finished elevation.
func (s *Service) ReviewElevation(ctx context.Context, c *Caller, id, note string) (*Elevation, *Audit, error) {
	note = strings.TrimSpace(note)
	if err := checkText("note", note, MaxNote); err != nil {
		return nil, nil, err
	}
	if note == "" {
		return nil, nil, &Error{Status: http.StatusBadRequest, Message: "Write what you found: a review needs a note."}
	}
	e, err := s.getElevation(ctx, id)
	if err != nil {
		return nil, nil, err
	}
	if !reviewer(c.User, &e.Elevation) {
		return nil, nil, &Error{Status: http.StatusNotFound, Message: "There is no temporary access with this id for you to review."}
	}
	if e.User == c.User.ID {
		return nil, nil, &rules.WorkflowError{Status: http.StatusForbidden, Message: "Nobody reviews their own temporary access."}
	}
	now := s.opt.Now()
	f, err := s.modifyElevation(ctx, id, func(cur *elevationRecord) error {
		switch {
		case cur.Review != nil:
			return &Error{Status: http.StatusConflict, Message: fmt.Sprintf("This temporary access was reviewed by %s already.", cur.Review.By)}
		case cur.open():
			return &Error{Status: http.StatusConflict, Message: "This temporary access has not ended yet; review it once it has."}
		case cur.Status != StatusEnded:
			return &Error{Status: http.StatusConflict, Message: fmt.Sprintf("This temporary access was %s; there is nothing to review.", cur.Status)}
		}
		cur.Review = &Review{By: c.User.ID, At: now, Note: note}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	return s.viewElevation(f), elevationAudit(f, "reviewed", c.User.ID, note), nil
}

// reviewer reports whether u holds a role that reviews e.
func reviewer(u *rules.User, e *Elevation) bool {
	for _, r := range e.ReviewBy {
		if u.HasRole(r) {
			return true
		}
	}
	return false
}

// GetElevation returns one elevation: the caller's own, or one they
// review.
func (s *Service) GetElevation(ctx context.Context, c *Caller, id string) (*Elevation, error) {
	e, err := s.getElevation(ctx, id)
	if err != nil {
		return nil, err
	}
	if e.User != c.User.ID && !reviewer(c.User, &e.Elevation) {
		return nil, &Error{Status: http.StatusNotFound, Message: "There is no temporary access with this id."}
	}
	return s.viewElevation(e), nil
}

// ElevationLists are what GET /.crmguard/elevations answers.
type ElevationLists struct {
	// Mine are the caller's elevations, newest first.
	Mine []*Elevation `json:"mine"`
	// Review are finished elevations waiting for the caller's review,
	// oldest first.
	Review []*Elevation `json:"review"`
	// Available are the elevations the caller may start.
	Available []Available `json:"available"`
}

// Available is an elevation the caller may start.
type Available struct {
	// Name is its key under elevations.
	Name string `json:"elevation"`
	// Description says what it is for.
	Description string `json:"description,omitempty"`
	// Roles are the roles it adds.
	Roles []string `json:"roles"`
	// Max is the longest it lasts ("30m0s").
	Max string `json:"max"`
	// NeedsApproval is true when someone must approve it first.
	NeedsApproval bool `json:"needs_approval"`
}

// ListElevations returns the caller's elevations, those waiting for
// their review, and those they may start.
func (s *Service) ListElevations(ctx context.Context, c *Caller) (*ElevationLists, error) {
	mine, err := s.listElevations(ctx, "by:"+c.User.ID)
	if err != nil {
		return nil, err
	}
	out := &ElevationLists{Mine: []*Elevation{}, Review: []*Elevation{}, Available: []Available{}}
	for _, e := range mine {
		out.Mine = append(out.Mine, s.viewElevation(e))
	}
	slices.SortFunc(out.Mine, func(x, y *Elevation) int { return y.Requested.Compare(x.Requested) })
	review, err := s.listElevations(ctx, "review")
	if err != nil {
		return nil, err
	}
	for _, e := range review {
		if e.needsReview() && e.User != c.User.ID && reviewer(c.User, &e.Elevation) {
			out.Review = append(out.Review, s.viewElevation(e))
		}
	}
	slices.SortFunc(out.Review, func(x, y *Elevation) int { return x.Ended.Compare(y.Ended) })
	for _, name := range c.Set.Elevations() {
		el, _ := c.Set.Elevation(name)
		for _, r := range el.For {
			if c.User.HasRole(r) {
				out.Available = append(out.Available, Available{Name: el.Name, Description: el.Description, Roles: slices.Clone(el.Grant),
					Max: el.Max.String(), NeedsApproval: el.Approval != ""})
				break
			}
		}
	}
	return out, nil
}

func (s *Service) viewElevation(e *elevationRecord) *Elevation {
	cp := e.Elevation
	cp.Roles = slices.Clone(e.Roles)
	cp.ReviewBy = slices.Clone(e.ReviewBy)
	if e.Review != nil {
		r := *e.Review
		cp.Review = &r
	}
	return &cp
}

func claimString(claims map[string]any, k string) string {
	v, _ := claims[k].(string)
	return v
}

// --- notifications ---

func elevationLink(id string) string { return "/.crmguard/elevations/" + id }

func (s *Service) notifyStarted(e *elevationRecord) {
	s.notify(notify.Event{Type: notify.ElevationStarted, ID: e.ID, Link: elevationLink(e.ID),
		Text: fmt.Sprintf("%s started temporary access %s (roles %s) until %s. Reason: %s", e.User, e.Name, strings.Join(e.Roles, ", "), e.Expires.UTC().Format("15:04 MST"), e.Reason),
		To:   notify.Recipients{Users: []string{e.User}, Roles: slices.Clone(e.ReviewBy)},
		Data: map[string]string{"user": e.User, "elevation": e.Name}})
}

func (s *Service) notifyReview(e *elevationRecord) {
	if len(e.ReviewBy) == 0 {
		return
	}
	s.notify(notify.Event{Type: notify.ElevationReview, ID: e.ID, Link: elevationLink(e.ID),
		Text: fmt.Sprintf("%s's temporary access %s has ended (%s) and waits for your review. Reason given: %s", e.User, e.Name, e.EndReason, e.Reason),
		To:   notify.Recipients{Roles: slices.Clone(e.ReviewBy)},
		Data: map[string]string{"user": e.User, "elevation": e.Name}})
}
