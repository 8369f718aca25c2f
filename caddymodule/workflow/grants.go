package workflow

import (
	"context"
	"errors"
	"fmt"

	"github.com/crmguard/crmguard/caddymodule/store"
	"github.com/crmguard/crmguard/rules"
)

// bound reports whether grant a is for exactly q: requester, route,
// policy and canonical request (an export's, or a write's with the values
// it sets).
func bound(a *approvalRecord, q rules.GrantQuery) bool {
	return (a.Kind == KindExport || a.Kind == KindWrite) && a.Requester == q.Requester && a.Route == q.Route && a.Policy == q.Policy && a.Request == q.Request
}

// usable reports whether a may be used at q.Now.
func usable(a *approvalRecord, q rules.GrantQuery) bool {
	return a.Status == StatusApproved && a.UsesLeft > 0 && q.Now.Before(a.Expires)
}

func grantOf(a *approvalRecord) *rules.Grant {
	return &rules.Grant{ID: a.ID, Policy: a.Policy, Purpose: a.Purpose, Approvers: a.approvers(), UsesLeft: a.UsesLeft, Expires: a.Expires}
}

// FindGrant implements rules.GrantSource: the requester's usable grant
// bound to exactly q (the one expiring first when there are several).
// It reads the requester's records only; a store failure is an error
// (the export is refused with 503).
func (s *Service) FindGrant(ctx context.Context, q rules.GrantQuery) (*rules.Grant, error) {
	recs, err := s.opt.Store.List(ctx, nsApprovals, "by:"+q.Requester)
	if err != nil {
		return nil, fmt.Errorf("workflow: reading the grants of %s: %w", q.Requester, err)
	}
	var best *approvalRecord
	for _, r := range recs {
		a, err := decodeApproval(r)
		if err != nil {
			return nil, err
		}
		if bound(a, q) && usable(a, q) && (best == nil || a.Expires.Before(best.Expires)) {
			best = a
		}
	}
	if best == nil {
		return nil, nil
	}
	return grantOf(best), nil
}

// UseGrant implements rules.GrantSource: it consumes one use of grant id
// with compare and swap, after checking again that it is bound to q and
// usable. Of any number of concurrent uses of the last use, on any number
// of instances sharing the store, exactly one succeeds. The last use
// makes the grant "used".
func (s *Service) UseGrant(ctx context.Context, q rules.GrantQuery, id string) (*rules.Grant, error) {
	var used *approvalRecord
	_, err := store.Modify(ctx, s.opt.Store, nsApprovals, id, func(cur *store.Record) (*store.Record, error) {
		a, err := decodeApproval(cur)
		if err != nil {
			return nil, err
		}
		if !bound(a, q) || !usable(a, q) {
			return nil, fmt.Errorf("workflow: grant %s (%s, %d uses left): %w", id, a.Status, a.UsesLeft, rules.ErrGrantGone)
		}
		a.UsesLeft--
		a.LastUsed = q.Now
		if a.UsesLeft == 0 {
			a.Status, a.Ended = StatusUsed, q.Now
		}
		used = a
		return s.approvalEntry(a)
	})
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("workflow: grant %s: %w", id, rules.ErrGrantGone)
	}
	if err != nil {
		return nil, err
	}
	return grantOf(used), nil
}

// Interface guard.
var _ rules.GrantSource = (*Service)(nil)
