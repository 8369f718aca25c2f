package caddymodule

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/crmguard/crmguard/caddymodule/authn"
	"github.com/crmguard/crmguard/caddymodule/notify"
	"github.com/crmguard/crmguard/caddymodule/store"
	"github.com/crmguard/crmguard/rules"
)

// Usage limits (the rule file's `limits:`). The rules say which limits
// apply to a request (rules.Decision.Limits) and under which key each is
// counted; the guard counts them here, on the state store's sliding
// windows, so every instance sharing a Redis store counts together.
//
//   - requests and exports are charged before the request goes upstream
//     (one each); denials are checked then (a window holding max denials
//     refuses) and charged once the rules refused a request;
//   - records are charged after the answer was rewritten, when the number
//     of records the client would receive is known, before a byte of it is
//     written: an answer that would take the count past max is refused
//     whole, and what was not sent is not charged.
//
// A hit is a request a limit refuses (block: 429 with Retry-After;
// step_up: a challenge for a fresh MFA sign-in), or, for alert, the
// request that takes the window past max (later ones while it stays past
// max are counted, not alerted again). Every hit is in the audit event's
// `limits`, counted on crmguard_limit_hits_total{limit,action} and sent to
// the notifier. A store that cannot be asked answers 503: a request a limit
// covers never passes uncounted.
//
// step_up keeps a hold record (namespace limitHoldNS, key: the counter
// key) saying since when the user must sign in again; a sign-in with MFA
// whose auth_time is after that (a fresh one) empties the window and ends
// the hold. The hold ends by itself after one window `per` (by then every
// event that counted towards the hit has expired).
//
// Decisions where the design was silent:
//   - Limits are checked in file order; the first that refuses ends the
//     check. With several enforcing limits on the same count, each is
//     checked (Count) before any is charged, so a refused answer charges
//     none; a race between two requests of the same user can still
//     charge one that a later limit then refuses (exact to within the
//     requests in flight, as across instances).
//   - In shadow mode block and step_up are counted like alert (the
//     records really reach the client) and every request past max is a
//     hit that would have been refused; nothing is refused.
//   - An answer larger than max on its own can never fit: it is refused
//     without Retry-After, and the reason says to ask for fewer records.

// limitHoldNS is the store namespace of step_up holds.
const limitHoldNS = "limits"

// LimitHit is one usage limit hit, an entry of the audit event's `limits`.
type LimitHit struct {
	// Limit is the limit's id.
	Limit string `json:"limit"`
	// Counts is what the limit counts (records, requests, exports,
	// denials).
	Counts string `json:"counts"`
	// Action is the limit's action (alert, step_up, block).
	Action string `json:"action"`
	// Count is the window's total: before this request when it was
	// refused (nothing was charged), after it when it passed.
	Count int64 `json:"count"`
	// Adding is what this request adds (or would have added) to the count.
	Adding int64 `json:"adding"`
	// Max is the limit's max.
	Max int64 `json:"max"`
	// Window is the limit's sliding window (`per`), e.g. "10m0s".
	Window string `json:"window"`
	// Refused is true when the limit refused the request (block,
	// step_up); false for alert and in shadow mode.
	Refused bool `json:"refused"`
	// RetryAfter is, for a block, the seconds after which the same
	// answer fits the window again (0: never, or not refused).
	RetryAfter int64 `json:"retry_after,omitempty"`
}

// MarshalLogObject writes the hit with its JSON keys.
func (h LimitHit) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	enc.AddString("limit", h.Limit)
	enc.AddString("counts", h.Counts)
	enc.AddString("action", h.Action)
	enc.AddInt64("count", h.Count)
	enc.AddInt64("adding", h.Adding)
	enc.AddInt64("max", h.Max)
	enc.AddString("window", h.Window)
	enc.AddBool("refused", h.Refused)
	if h.RetryAfter != 0 {
		enc.AddInt64("retry_after", h.RetryAfter)
	}
	return nil
}

// limitHits logs the hits of an event.
type limitHits []LimitHit

// MarshalLogArray implements zapcore.ArrayMarshaler.
func (a limitHits) MarshalLogArray(enc zapcore.ArrayEncoder) error {
	for _, h := range a {
		if err := enc.AppendObject(h); err != nil {
			return err
		}
	}
	return nil
}

// appendLimitHits appends the event's `limits` (nothing when there are
// none), as encoding/json would.
func appendLimitHits(b []byte, hits []LimitHit) []byte {
	if len(hits) == 0 {
		return b
	}
	b = appendKey(b, "limits")
	b = append(b, '[')
	for i, h := range hits {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"limit":`...)
		b = appendString(b, h.Limit)
		b = append(b, `,"counts":`...)
		b = appendString(b, h.Counts)
		b = append(b, `,"action":`...)
		b = appendString(b, h.Action)
		b = append(b, `,"count":`...)
		b = strconv.AppendInt(b, h.Count, 10)
		b = append(b, `,"adding":`...)
		b = strconv.AppendInt(b, h.Adding, 10)
		b = append(b, `,"max":`...)
		b = strconv.AppendInt(b, h.Max, 10)
		b = append(b, `,"window":`...)
		b = appendString(b, h.Window)
		b = append(b, `,"refused":`...)
		b = strconv.AppendBool(b, h.Refused)
		if h.RetryAfter != 0 {
			b = append(b, `,"retry_after":`...)
			b = strconv.AppendInt(b, h.RetryAfter, 10)
		}
		b = append(b, '}')
	}
	return append(b, ']')
}

// limitRefusal is a limit that refused the request.
type limitRefusal struct {
	lim   *rules.Limit
	usage store.Usage
	n     int64
}

// limitsBefore runs what the request's limits decide before it goes
// upstream: step_up holds, full denial windows, and the charge of
// requests and exports. It runs right after the decision. done is true
// when the guard answered.
func (x *exchange) limitsBefore(w http.ResponseWriter) (done bool, err error) {
	lims := x.d.Limits()
	if len(lims) == 0 {
		return false, nil
	}
	st := x.g.opt.Store
	if st == nil {
		return x.limitUnavailable(w, lims[0], errNoStore)
	}
	ctx := x.r.Context()
	var buf [4]*rules.Limit // a request rarely has more limits: no allocation
	charge := buf[:0]
	for _, lim := range lims {
		if lim.Action != rules.ActionStepUp && (lim.Count == rules.CountRecords || lim.Count == rules.CountDenials && lim.Action == rules.ActionAlert) {
			continue // nothing to decide before the request goes upstream
		}
		var key string // what the charge below does not count itself
		if lim.Action == rules.ActionStepUp || lim.Count == rules.CountDenials {
			key = lim.CounterKey(x.user.ID, x.d.RouteID)
		}
		if lim.Action == rules.ActionStepUp {
			since, err := x.heldSince(ctx, st, key)
			if err != nil {
				return x.limitUnavailable(w, lim, err)
			}
			if !since.IsZero() {
				if x.user.MFA && x.user.AuthTime.After(since) {
					// A fresh MFA sign-in since the hit: a fresh window.
					if err := x.releaseHold(ctx, st, key); err != nil {
						return x.limitUnavailable(w, lim, err)
					}
					x.ev.LimitsReset = append(x.ev.LimitsReset, lim.ID)
				} else {
					u, err := st.Count(ctx, key, lim.Per)
					if err != nil {
						return x.limitUnavailable(w, lim, err)
					}
					if x.shadow {
						x.hit(lim, u.Total, 0, false, 0)
						continue
					}
					return true, x.limitStepUp(w, lim, u.Total, 0, since)
				}
			}
		}
		switch lim.Count {
		case rules.CountDenials:
			if lim.Action == rules.ActionAlert {
				continue
			}
			u, err := st.Count(ctx, key, lim.Per)
			if err != nil {
				return x.limitUnavailable(w, lim, err)
			}
			if u.Total < lim.Max {
				continue
			}
			if x.shadow {
				x.hit(lim, u.Total, 0, false, 0)
				continue
			}
			if lim.Action == rules.ActionStepUp {
				return true, x.limitStepUp(w, lim, u.Total, 0, time.Time{})
			}
			// The window's oldest denial expires within Per: a bound,
			// since Count does not say which one.
			return true, x.limitBlock(w, limitRefusal{lim: lim, usage: store.Usage{Total: u.Total, RetryAt: x.g.opt.Now().Add(lim.Per)}})
		case rules.CountRequests:
			if x.d.Outcome == rules.Allow {
				charge = append(charge, lim)
			}
		case rules.CountExports:
			if x.d.IsExport() {
				charge = append(charge, lim)
			}
		}
	}
	if len(charge) == 0 {
		return false, nil
	}
	ref, failed, err := x.charge(ctx, st, charge, 1)
	if err != nil {
		return x.limitUnavailable(w, failed, err)
	}
	if ref != nil {
		return true, x.limitRefuse(w, *ref)
	}
	return false, nil
}

// limitRecords charges the n records of a rewritten answer about to be
// written to the records limits of the request. refused is true when the
// guard answered instead (the caller writes nothing of the answer).
func (x *exchange) limitRecords(w http.ResponseWriter, before http.Header, n int) (refused bool, err error) {
	if x.d == nil || x.user == nil {
		return false, nil
	}
	var buf [4]*rules.Limit // a request rarely has more limits: no allocation
	charge := x.limitsCounting(buf[:0], rules.CountRecords)
	if len(charge) == 0 || n == 0 {
		return false, nil
	}
	st := x.g.opt.Store
	failed, err := charge[0], errNoStore
	var ref *limitRefusal
	if st != nil {
		ref, failed, err = x.charge(x.r.Context(), st, charge, int64(n))
	}
	if err != nil {
		if !x.shadow {
			x.restore(w, before)
			x.withheld = true
		}
		return x.limitUnavailable(w, failed, err)
	}
	if ref != nil {
		x.restore(w, before)
		x.withheld = true
		return true, x.limitRefuse(w, *ref)
	}
	return false, nil
}

// countDenial charges a request the rules refused to the request's
// denials limits. It runs once the client has its answer; a store failure
// is logged (the request was refused anyway).
func (x *exchange) countDenial() {
	if x.d == nil || x.user == nil || (x.ev.Decision != "deny" && x.ev.Decision != "blocked") {
		return
	}
	var buf [4]*rules.Limit // a request rarely has more limits: no allocation
	charge := x.limitsCounting(buf[:0], rules.CountDenials)
	if len(charge) == 0 {
		return
	}
	st := x.g.opt.Store
	if st == nil {
		x.g.opt.Logger.Error("a refused request was not counted under its denials limit", zap.Error(errNoStore),
			zap.String("limit", charge[0].ID), zap.String("user", x.user.ID))
		return
	}
	for _, lim := range charge {
		// Unbounded: the denial happened. A full window refuses the
		// requests that follow (limitsBefore).
		u, err := st.Add(x.r.Context(), lim.CounterKey(x.user.ID, x.d.RouteID), 1, 0, lim.Per)
		if err != nil {
			x.g.opt.Logger.Error("a refused request was not counted under its denials limit", zap.Error(err),
				zap.String("limit", lim.ID), zap.String("user", x.user.ID))
			continue
		}
		if lim.Action == rules.ActionAlert && u.Total > lim.Max && u.Total-1 <= lim.Max {
			// The denial that took the window past max. (A full window
			// of an enforcing limit refuses the requests that follow,
			// each a hit, in limitsBefore.)
			x.hit(lim, u.Total, 1, false, 0)
		}
	}
}

// limitsCounting appends to buf the request's limits that count c.
func (x *exchange) limitsCounting(buf []*rules.Limit, c rules.LimitCount) []*rules.Limit {
	for _, lim := range x.d.Limits() {
		if lim.Count == c {
			buf = append(buf, lim)
		}
	}
	return buf
}

// charge adds n to the windows of lims. Enforcing limits (outside shadow
// mode) are charged only up to their max: the first that cannot take n
// is returned as the refusal, and then nothing of n is charged anywhere
// (see the decisions above for the one race). The others are charged
// whatever the count, and a hit is recorded where n takes the window past
// max. failed names the limit whose store call failed with err.
func (x *exchange) charge(ctx context.Context, st store.Store, lims []*rules.Limit, n int64) (ref *limitRefusal, failed *rules.Limit, err error) {
	var ebuf, obuf [4]*rules.Limit
	var abuf [4]bool
	enforcing, others := ebuf[:0], obuf[:0]
	for _, lim := range lims {
		if lim.Enforces() && !x.shadow {
			enforcing = append(enforcing, lim)
		} else {
			others = append(others, lim)
		}
	}
	var kbuf [4]string
	added, keys := abuf[:0], kbuf[:0]
	for _, lim := range enforcing {
		added = append(added, false)
		keys = append(keys, lim.CounterKey(x.user.ID, x.d.RouteID))
	}
	if len(enforcing) > 1 {
		// Check all before charging any: a refusal must charge none.
		for i, lim := range enforcing {
			key := keys[i]
			u, err := st.Count(ctx, key, lim.Per)
			if err != nil {
				return nil, lim, err
			}
			if u.Total+n <= lim.Max {
				continue
			}
			// It does not fit: Add says so again with the time it will
			// (or adds n, when the window has just moved on).
			if u, err = st.Add(ctx, key, n, lim.Max, lim.Per); err != nil {
				return nil, lim, err
			}
			if !u.Added {
				return &limitRefusal{lim: lim, usage: u, n: n}, nil, nil
			}
			added[i] = true
		}
	}
	for i, lim := range enforcing {
		if added[i] {
			continue
		}
		u, err := st.Add(ctx, keys[i], n, lim.Max, lim.Per)
		if err != nil {
			return nil, lim, err
		}
		if !u.Added {
			return &limitRefusal{lim: lim, usage: u, n: n}, nil, nil
		}
	}
	for _, lim := range others {
		u, err := st.Add(ctx, lim.CounterKey(x.user.ID, x.d.RouteID), n, 0, lim.Per)
		if err != nil {
			return nil, lim, err
		}
		crossed := u.Total > lim.Max && u.Total-n <= lim.Max
		if crossed || (u.Total > lim.Max && lim.Enforces()) {
			// alert: the request that took the window past max; in
			// shadow mode every one an enforcing limit would refuse.
			x.hit(lim, u.Total, n, false, 0)
		}
	}
	return nil, nil, nil
}

// limitRefuse answers a refusal of lim: 429 for block, a challenge for a
// fresh MFA sign-in for step_up.
func (x *exchange) limitRefuse(w http.ResponseWriter, ref limitRefusal) error {
	if ref.lim.Action == rules.ActionStepUp {
		return x.limitStepUp(w, ref.lim, ref.usage.Total, ref.n, time.Time{})
	}
	return x.limitBlock(w, ref)
}

// limitBlock answers 429 with Retry-After and a reason naming the limit.
func (x *exchange) limitBlock(w http.ResponseWriter, ref limitRefusal) error {
	lim, now := ref.lim, x.g.opt.Now()
	var retry int64
	if !ref.usage.RetryAt.IsZero() {
		retry = int64(ref.usage.RetryAt.Sub(now).Round(time.Second) / time.Second)
		if retry < 1 {
			retry = 1
		}
	}
	x.hit(lim, ref.usage.Total, ref.n, true, retry)
	reason := fmt.Sprintf("usage limit %s: %s", lim.ID, limitSituation(lim, ref.usage.Total, ref.n))
	msg := lim.Message
	switch {
	case retry > 0:
		w.Header().Set("Retry-After", strconv.FormatInt(retry, 10))
		reason += fmt.Sprintf("; try again in %s", time.Duration(retry)*time.Second)
		if msg == "" {
			msg = fmt.Sprintf("You have reached a usage limit (%s). Try again in %s.", limitWhat(lim), waitWords(time.Duration(retry)*time.Second))
		}
	default:
		reason += fmt.Sprintf("; this answer alone holds more than %d %s, so it never fits: ask for fewer", lim.Max, lim.Count)
		if msg == "" {
			msg = fmt.Sprintf("This answer holds more than a usage limit allows (%s). Ask for fewer records at a time.", limitWhat(lim))
		}
	}
	return x.refuse(w, refusal{Status: http.StatusTooManyRequests, Rule: lim.ID, Reason: reason, Message: msg}, "limited")
}

// limitStepUp asks for a fresh MFA sign-in: it records the hold (since
// zero: now, a new hit) and challenges the client.
func (x *exchange) limitStepUp(w http.ResponseWriter, lim *rules.Limit, total, n int64, since time.Time) error {
	now := x.g.opt.Now()
	if since.IsZero() {
		since = now
		if err := x.hold(x.r.Context(), x.g.opt.Store, lim, since); err != nil {
			_, rerr := x.limitUnavailable(w, lim, err)
			return rerr
		}
	}
	x.hit(lim, total, n, true, 0)
	maxAge := now.Sub(since).Truncate(time.Second)
	if maxAge < time.Second {
		maxAge = time.Second
	}
	reason := fmt.Sprintf("usage limit %s: %s; a fresh sign-in with multi-factor authentication starts a new window", lim.ID, limitSituation(lim, total, n))
	msg := lim.Message
	if msg == "" {
		msg = fmt.Sprintf("You have reached a usage limit (%s). Sign in again with your second factor to go on.", limitWhat(lim))
	}
	x.ev.Reason = reason
	x.ev.Decision = "step_up"
	return x.ask(w, x.r, authn.Need{StepUp: rules.StepUpNeed{MFA: true, MaxAge: maxAge, ACR: x.set.MFA().ACR}, Reason: reason, Message: msg}, lim.ID)
}

// errNoStore: the guard was built without a state store.
var errNoStore = errors.New("caddymodule: no state store is configured")

// limitUnavailable answers 503 (done): a limit covers the request and the
// store that counts it could not be asked. In shadow mode nothing is
// refused: the audit reason says what would have happened.
func (x *exchange) limitUnavailable(w http.ResponseWriter, lim *rules.Limit, err error) (done bool, rerr error) {
	reason := fmt.Sprintf("usage limit %s cannot be counted, so the request is refused: %v", lim.ID, err)
	if x.shadow {
		x.ev.Reason = "shadow: " + reason
		x.g.opt.Logger.Warn("usage limit not counted (shadow mode)", zap.Error(err), zap.String("limit", lim.ID))
		return false, nil
	}
	return true, x.refuse(w, refusal{Status: http.StatusServiceUnavailable, Rule: lim.ID, Reason: reason,
		Message: "Your usage cannot be checked right now. Try again in a few minutes."}, "error", zap.Error(err))
}

// heldSince returns since when key's step_up hold asks for a fresh
// sign-in (zero: no hold).
func (x *exchange) heldSince(ctx context.Context, st store.Store, key string) (time.Time, error) {
	r, err := st.Get(ctx, limitHoldNS, key)
	if errors.Is(err, store.ErrNotFound) {
		return time.Time{}, nil
	}
	if err != nil {
		return time.Time{}, err
	}
	ms, err := strconv.ParseInt(string(r.Value), 10, 64)
	if err != nil {
		// Unreadable: hold (fail closed) since the record was written.
		return x.g.opt.Now(), nil
	}
	return time.UnixMilli(ms), nil
}

// hold records that lim's counter for this user asks for a fresh sign-in
// since since, for one window at most. An existing hold is kept (it is
// older).
func (x *exchange) hold(ctx context.Context, st store.Store, lim *rules.Limit, since time.Time) error {
	key := lim.CounterKey(x.user.ID, x.d.RouteID)
	err := st.Create(ctx, limitHoldNS, &store.Record{Key: key, Value: strconv.AppendInt(nil, since.UnixMilli(), 10), Expires: since.Add(lim.Per)})
	if errors.Is(err, store.ErrExists) {
		return nil
	}
	return err
}

// releaseHold ends a hold after a fresh sign-in: the window starts empty.
func (x *exchange) releaseHold(ctx context.Context, st store.Store, key string) error {
	if err := st.Reset(ctx, key); err != nil {
		return err
	}
	return st.Delete(ctx, limitHoldNS, key)
}

// hit records a hit of lim: the audit event, the metric (counted in
// finish) and a notification.
func (x *exchange) hit(lim *rules.Limit, total, n int64, refused bool, retryAfter int64) {
	h := LimitHit{Limit: lim.ID, Counts: string(lim.Count), Action: string(lim.Action), Count: total, Adding: n,
		Max: lim.Max, Window: lim.Per.String(), Refused: refused, RetryAfter: retryAfter}
	x.ev.Limits = append(x.ev.Limits, h)
	what := "the request passed"
	switch {
	case refused && lim.Action == rules.ActionStepUp:
		what = "the request was refused until a fresh MFA sign-in"
	case refused:
		what = "the request was refused (429)"
	case x.shadow && lim.Enforces():
		what = "shadow mode: it would have been refused"
	}
	text := fmt.Sprintf("%s hit usage limit %s (%s) on %s %s: %s.", x.user.ID, lim.ID, limitSituation(lim, total, n), x.ev.Method, x.ev.Path, what)
	x.g.opt.Notifier.Notify(notify.Event{
		Type: notify.LimitHit, Time: x.ev.Time, Text: text, ID: lim.ID,
		To: notify.Recipients{Roles: lim.Notify},
		Data: map[string]string{
			"limit": lim.ID, "user": x.user.ID, "action": string(lim.Action), "counts": string(lim.Count),
			"count": strconv.FormatInt(total, 10), "adding": strconv.FormatInt(n, 10), "max": strconv.FormatInt(lim.Max, 10),
			"window": lim.Per.String(), "route": x.d.RouteID, "refused": strconv.FormatBool(refused), "shadow": strconv.FormatBool(x.shadow),
		},
	})
}

// limitSituation says where the count stands: "420 records in the last
// 10m0s, this answer 120 more, max 500".
func limitSituation(lim *rules.Limit, total, n int64) string {
	s := fmt.Sprintf("%d %s in the last %s", total, lim.Count, lim.Per)
	if n > 0 {
		s += fmt.Sprintf(", this request %d more", n)
	}
	return s + fmt.Sprintf(", max %d", lim.Max)
}

// limitWhat names a limit for the user: its description or what it
// counts.
func limitWhat(lim *rules.Limit) string {
	if lim.Description != "" {
		return lim.Description
	}
	return fmt.Sprintf("at most %d %s in %s", lim.Max, lim.Count, lim.Per)
}

// waitWords says a wait in words: "about 3 minutes", "20 seconds".
func waitWords(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%d seconds", int(d/time.Second))
	case d < 2*time.Minute:
		return "about a minute"
	case d < time.Hour:
		return fmt.Sprintf("about %d minutes", int((d+30*time.Second)/time.Minute))
	}
	return fmt.Sprintf("about %d hours", int((d+30*time.Minute)/time.Hour))
}
