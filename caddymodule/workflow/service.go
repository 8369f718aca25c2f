package workflow

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/crmguard/crmguard/caddymodule/notify"
	"github.com/crmguard/crmguard/caddymodule/store"
	"github.com/crmguard/crmguard/rules"
)

// Store namespaces.
const (
	nsApprovals = "approvals"
	nsElevation = "elevations"
	nsSessions  = "elevation_sessions"
)

// Notifier receives notifications (*notify.Notifier implements it).
type Notifier interface {
	// Notify queues ev and returns at once.
	Notify(ev notify.Event)
}

// Options configure a Service.
type Options struct {
	// Store keeps the requests, grants and elevations (required).
	Store store.Store
	// Rules returns the running rule set (required; the sweeper reads the
	// policies' roles from it for notifications).
	Rules func() *rules.Set
	// Notifier receives notifications (nil: nobody is notified).
	Notifier Notifier
	// Audit receives the changes the clock makes (a request or grant that
	// expired, an elevation that ran out), which no request carries. nil
	// drops them.
	Audit func(a *Audit)
	// Logger receives the sweeper's failures (nil: none).
	Logger *zap.Logger
	// Now is the clock (nil: time.Now).
	Now func() time.Time
	// Retention is how long ended records stay readable (0:
	// DefaultRetention).
	Retention time.Duration
	// SweepEvery is how often expiries are looked for (0:
	// DefaultSweepEvery; negative: never, they are still found when read).
	SweepEvery time.Duration
}

// Service keeps approvals and elevations. It is safe for concurrent use
// and implements rules.GrantSource.
type Service struct {
	opt  Options
	stop chan struct{}
	wg   sync.WaitGroup
	once sync.Once
}

// New returns a Service and starts its sweeper. Call Close when done.
func New(opt Options) (*Service, error) {
	if opt.Store == nil {
		return nil, errors.New("workflow: no state store")
	}
	if opt.Rules == nil {
		return nil, errors.New("workflow: no rule set")
	}
	if opt.Logger == nil {
		opt.Logger = zap.NewNop()
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	if opt.Retention <= 0 {
		opt.Retention = DefaultRetention
	}
	if opt.SweepEvery == 0 {
		opt.SweepEvery = DefaultSweepEvery
	}
	s := &Service{opt: opt, stop: make(chan struct{})}
	if opt.SweepEvery > 0 {
		s.wg.Add(1)
		go s.sweeper()
	}
	return s, nil
}

// Close stops the sweeper. The store is its opener's to close.
func (s *Service) Close() error {
	s.once.Do(func() { close(s.stop) })
	s.wg.Wait()
	return nil
}

// sweeper looks for expiries every SweepEvery.
func (s *Service) sweeper() {
	defer s.wg.Done()
	t := time.NewTicker(s.opt.SweepEvery)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), s.opt.SweepEvery)
			if err := s.Sweep(ctx); err != nil {
				s.opt.Logger.Warn("workflow sweep failed; expiries are applied when the records are next read", zap.Error(err))
			}
			cancel()
		}
	}
}

// Sweep applies every expiry that is due: pending requests and grants
// whose time passed, elevations that ran out. Each is audited once, also
// with several instances sweeping the same store.
func (s *Service) Sweep(ctx context.Context) error {
	if set := s.opt.Rules(); set == nil || len(set.ApprovalPolicies()) == 0 && len(set.Elevations()) == 0 {
		return nil // nothing to expire; the store is not even opened
	}
	// Listing settles every record it reads (each expiry applied and
	// audited once, whichever instance gets there first).
	if _, err := s.listApprovals(ctx, "open"); err != nil {
		return fmt.Errorf("workflow: sweeping approvals: %w", err)
	}
	if _, err := s.listElevations(ctx, "open"); err != nil {
		return fmt.Errorf("workflow: sweeping elevations: %w", err)
	}
	return nil
}

// Error is a refusal of the workflow API: an HTTP status and a sentence
// for the user. rules.WorkflowError is the other kind the API returns.
type Error struct {
	// Status is the HTTP status.
	Status int
	// Message is a sentence for the user.
	Message string
	// Err is the cause, for logs (nil when none).
	Err error
}

// Error returns the message and the cause.
func (e *Error) Error() string {
	if e.Err != nil {
		return e.Message + ": " + e.Err.Error()
	}
	return e.Message
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// unavailable wraps a store failure: 503.
func unavailable(err error) error {
	return &Error{Status: http.StatusServiceUnavailable, Message: "Approvals and temporary access cannot be reached right now. Try again in a few minutes.", Err: err}
}

// storeErr turns a store error into the API's error.
func storeErr(err error, what string) error {
	if errors.Is(err, store.ErrNotFound) {
		return &Error{Status: http.StatusNotFound, Message: fmt.Sprintf("There is no %s with this id.", what)}
	}
	if errors.Is(err, errSettled) {
		return err
	}
	var e *Error
	if errors.As(err, &e) {
		return err
	}
	var we *rules.WorkflowError
	if errors.As(err, &we) {
		return err
	}
	return unavailable(err)
}

func newID(prefix string) string { return prefix + strings.ToLower(rand.Text()) }

// --- approval records ---

func decodeApproval(r *store.Record) (*approvalRecord, error) {
	var a approvalRecord
	if err := json.Unmarshal(r.Value, &a); err != nil {
		return nil, fmt.Errorf("workflow: approval %s: %w", r.Key, err)
	}
	return &a, nil
}

// approvalEntry builds the store record of a.
func (s *Service) approvalEntry(a *approvalRecord) (*store.Record, error) {
	b, err := json.Marshal(a)
	if err != nil {
		return nil, fmt.Errorf("workflow: encoding approval %s: %w", a.ID, err)
	}
	idx := []string{"by:" + a.Requester}
	until := a.Ended
	if a.open() {
		idx = append(idx, "open")
		until = a.Expires
	}
	if a.Status == StatusPending {
		idx = append(idx, "pending")
	}
	return &store.Record{Key: a.ID, Value: b, Index: idx, Expires: until.Add(s.opt.Retention)}, nil
}

func (s *Service) createApproval(ctx context.Context, a *approvalRecord) error {
	r, err := s.approvalEntry(a)
	if err != nil {
		return err
	}
	if err := s.opt.Store.Create(ctx, nsApprovals, r); err != nil {
		return unavailable(err)
	}
	return nil
}

func (s *Service) getApproval(ctx context.Context, id string) (*approvalRecord, error) {
	if !validID(id) {
		return nil, &Error{Status: http.StatusNotFound, Message: "There is no approval request with this id."}
	}
	r, err := s.opt.Store.Get(ctx, nsApprovals, id)
	if err != nil {
		return nil, storeErr(err, "approval request")
	}
	a, err := decodeApproval(r)
	if err != nil {
		return nil, unavailable(err)
	}
	return s.settleApproval(ctx, a)
}

// modifyApproval applies change to the stored request with compare and
// swap, retrying on concurrent changes; change sees the latest state and
// may refuse with an error.
func (s *Service) modifyApproval(ctx context.Context, id string, change func(a *approvalRecord) error) (*approvalRecord, error) {
	var out *approvalRecord
	_, err := store.Modify(ctx, s.opt.Store, nsApprovals, id, func(cur *store.Record) (*store.Record, error) {
		a, err := decodeApproval(cur)
		if err != nil {
			return nil, err
		}
		if err := change(a); err != nil {
			return nil, err
		}
		out = a
		return s.approvalEntry(a)
	})
	if err != nil {
		return nil, storeErr(err, "approval request")
	}
	return out, nil
}

func (s *Service) listApprovals(ctx context.Context, term string) ([]*approvalRecord, error) {
	recs, err := s.opt.Store.List(ctx, nsApprovals, term)
	if err != nil {
		return nil, unavailable(err)
	}
	out := make([]*approvalRecord, 0, len(recs))
	for _, r := range recs {
		a, err := decodeApproval(r)
		if err != nil {
			s.opt.Logger.Error("unreadable approval record", zap.String("id", r.Key), zap.Error(err))
			continue
		}
		if a, err = s.settleApproval(ctx, a); err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, nil
}

// errSettled stops a Modify whose record was settled meanwhile.
var errSettled = errors.New("workflow: already settled")

// settleApproval applies a due expiry to a (once, with compare and swap,
// audited) and returns the current state.
func (s *Service) settleApproval(ctx context.Context, a *approvalRecord) (*approvalRecord, error) {
	now := s.opt.Now()
	if !a.open() || now.Before(a.Expires) {
		return a, nil
	}
	var was string
	b, err := s.modifyApproval(ctx, a.ID, func(cur *approvalRecord) error {
		if !cur.open() || now.Before(cur.Expires) {
			return errSettled
		}
		was = cur.Status
		cur.Status, cur.Ended = StatusExpired, cur.Expires
		for i := range cur.Steps {
			if cur.Steps[i].Status == StepWaiting {
				cur.Steps[i].Status = StepLater
			}
		}
		return nil
	})
	if errors.Is(err, errSettled) {
		return s.reread(ctx, a.ID)
	}
	if err != nil {
		return nil, err
	}
	note := "nobody decided in time"
	if was == StatusApproved {
		note = "the grant's validity passed"
	}
	s.audit(&Audit{Kind: "approval", ID: b.ID, Action: "expired", Status: b.Status, Policy: b.Policy, Requester: b.Requester,
		Route: b.Route, Request: b.Request, Purpose: b.Purpose, Note: note})
	if b.Kind == KindElevation && b.Elevation != "" && was == StatusPending {
		if _, err := s.modifyElevation(ctx, b.Elevation, func(e *elevationRecord) error {
			if e.Status != StatusPending {
				return errSettled
			}
			e.Status, e.Ended, e.EndReason = StatusExpired, now, "the approval was not given in time"
			return nil
		}); err != nil && !errors.Is(err, errSettled) {
			return nil, err
		}
	}
	return b, nil
}

// reread returns the stored request (after a change that found it
// settled).
func (s *Service) reread(ctx context.Context, id string) (*approvalRecord, error) {
	r, err := s.opt.Store.Get(ctx, nsApprovals, id)
	if err != nil {
		return nil, storeErr(err, "approval request")
	}
	a, err := decodeApproval(r)
	if err != nil {
		return nil, unavailable(err)
	}
	return a, nil
}

// audit hands a change made by the clock to Options.Audit.
func (s *Service) audit(a *Audit) {
	if s.opt.Audit != nil {
		s.opt.Audit(a)
	}
}

// notify sends ev when a notifier is configured.
func (s *Service) notify(ev notify.Event) {
	if s.opt.Notifier != nil {
		if ev.Time.IsZero() {
			ev.Time = s.opt.Now()
		}
		s.opt.Notifier.Notify(ev)
	}
}

// validID accepts the ids newID makes (and nothing that could be a path
// trick or an index term).
func validID(id string) bool {
	if len(id) < 4 || len(id) > 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}
