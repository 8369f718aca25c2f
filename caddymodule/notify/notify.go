// Package notify is crmguard's one notifier: it tells people that
// something waits for them or happened to them (an export waits for your
// approval, yours was approved or denied, temporary access started or
// waits for review, a usage limit was hit) by posting a JSON event to each
// configured webhook (a chat bot, a ticket system, a mail gateway).
//
// How it works: Notify puts the event on the bounded queue of each
// webhook and returns at once; it never blocks a request and never
// fails it. One worker per webhook sends its events in order; a delivery
// that fails (a network error, a 5xx or 429 answer, a timeout) is tried
// again after a backoff that doubles (Options.Backoff, default 1s, 2s, 4s,
// ...) up to Config.Attempts times. An event that cannot be queued (the
// queue is full) or delivered (attempts used up, or a 4xx answer other
// than 408 and 429, which retrying cannot fix) is logged and counted on
// Options.Failures (the guard registers it as
// crmguard_notify_failures_total{reason}); the audit event of what
// happened is written by the caller before Notify and never depends on
// it.
//
// Event types are open strings ("approval.waiting", "limit.hit", ...):
// a receiver routes on Type and shows Text; new types need no change
// here.
//
// Decisions where the design was silent:
//   - Each webhook has its own queue and worker, so a slow or dead
//     receiver does not delay the others; events to one receiver keep
//     their order.
//   - A 4xx answer other than 408 (timeout) and 429 (slow down) is not
//     retried: the receiver refused this event and will refuse it again.
//   - Close gives the queued events Options.Drain (default 5s) to be
//     delivered and then abandons the rest (counted as "closed").
//   - The body names users by id and carries no personal data of
//     customers: text and links only, so a chat channel is no leak.
package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// Event types the guard sends. The type is an open string: receivers must
// ignore types they do not know.
const (
	// ApprovalWaiting: a request waits for the recipient's approval.
	ApprovalWaiting = "approval.waiting"
	// ApprovalApproved: the recipient's request was approved (all steps).
	ApprovalApproved = "approval.approved"
	// ApprovalDenied: the recipient's request was denied.
	ApprovalDenied = "approval.denied"
	// ElevationStarted: temporary access started.
	ElevationStarted = "elevation.started"
	// ElevationReview: finished temporary access waits for review.
	ElevationReview = "elevation.review"
	// LimitHit: a usage limit was hit (Data says which, by whom, how far).
	LimitHit = "limit.hit"
)

// Event is one notification, sent as the JSON body of a webhook POST.
type Event struct {
	// Type says what happened ("approval.waiting", ...; open).
	Type string `json:"type"`
	// Time is when it happened (UTC).
	Time time.Time `json:"time"`
	// Text is one sentence for the people notified, in plain words.
	Text string `json:"text"`
	// ID names the thing concerned (an approval request's or elevation's
	// id).
	ID string `json:"id,omitempty"`
	// Link is the path of the page where the recipients act on it
	// (relative to the guarded site).
	Link string `json:"link,omitempty"`
	// To says who should see it: user ids, and roles whose holders should.
	To Recipients `json:"to"`
	// Data holds the event's details (type-specific, flat strings).
	Data map[string]string `json:"data,omitempty"`
}

// Recipients say who an event is for.
type Recipients struct {
	// Users are user ids (the rule file's user.id).
	Users []string `json:"users,omitempty"`
	// Roles are roles whose holders should see it (approvers, reviewers).
	Roles []string `json:"roles,omitempty"`
}

// Defaults for Config and Options.
const (
	// DefaultQueue is each webhook's queue length.
	DefaultQueue = 1000
	// DefaultAttempts is how often a delivery is tried.
	DefaultAttempts = 5
	// DefaultTimeout bounds one delivery attempt.
	DefaultTimeout = 10 * time.Second
	// DefaultBackoff is the wait before the second attempt; it doubles.
	DefaultBackoff = time.Second
	// MaxBackoff caps the wait between attempts.
	MaxBackoff = 5 * time.Minute
	// DefaultDrain is how long Close waits for queued events.
	DefaultDrain = 5 * time.Second
)

// Failure reasons, the values of the failures metric's label.
const (
	// ReasonQueueFull: the webhook's queue was full; the event was dropped.
	ReasonQueueFull = "queue_full"
	// ReasonUndeliverable: every attempt failed, or the receiver refused
	// the event with a 4xx answer.
	ReasonUndeliverable = "undeliverable"
	// ReasonClosed: the notifier closed before the event was delivered.
	ReasonClosed = "closed"
)

// Options are the notifier's collaborators (not configuration).
type Options struct {
	// Client sends the webhooks (nil: a client with Config.Timeout).
	Client *http.Client
	// Logger receives delivery failures (nil: none).
	Logger *zap.Logger
	// Failures counts events given up, by reason (a counter vector with
	// the one label "reason"); nil counts nothing.
	Failures *prometheus.CounterVec
	// Backoff is the wait before attempt n+1 after n failed attempts (nil:
	// DefaultBackoff doubled per attempt, at most MaxBackoff).
	Backoff func(n int) time.Duration
	// Drain is how long Close waits for queued events (0: DefaultDrain).
	Drain time.Duration
}

// Notifier delivers events to webhooks. It is safe for concurrent use.
// The zero value is not usable; a nil *Notifier drops every event.
type Notifier struct {
	hooks  []*hook
	opt    Options
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.RWMutex // guards closed against Notify's sends
	closed bool
}

// hook is one webhook with its queue.
type hook struct {
	url      string
	redacted string // for logs: the URL without credentials or query
	header   http.Header
	queue    chan []byte
	attempts int
}

// New starts a notifier for cfg, which must have passed Validate (its
// placeholders already replaced). A cfg without webhooks gives a notifier
// that drops every event.
func New(cfg Config, opt Options) (*Notifier, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	queue := cfg.Queue
	if queue <= 0 {
		queue = DefaultQueue
	}
	attempts := cfg.Attempts
	if attempts <= 0 {
		attempts = DefaultAttempts
	}
	if opt.Client == nil {
		timeout := time.Duration(cfg.Timeout)
		if timeout <= 0 {
			timeout = DefaultTimeout
		}
		opt.Client = &http.Client{Timeout: timeout, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	if opt.Logger == nil {
		opt.Logger = zap.NewNop()
	}
	if opt.Backoff == nil {
		opt.Backoff = doubling
	}
	if opt.Drain <= 0 {
		opt.Drain = DefaultDrain
	}
	n := &Notifier{opt: opt}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	for _, w := range cfg.Webhooks {
		h := &hook{url: w.URL, redacted: redact(w.URL), header: http.Header{}, queue: make(chan []byte, queue), attempts: attempts}
		for k, v := range w.Headers {
			h.header.Set(k, v)
		}
		n.hooks = append(n.hooks, h)
	}
	for _, h := range n.hooks {
		n.wg.Add(1)
		go n.run(h)
	}
	return n, nil
}

// doubling is the default backoff: DefaultBackoff doubled per failed
// attempt, at most MaxBackoff.
func doubling(n int) time.Duration {
	d := DefaultBackoff
	for i := 1; i < n && d < MaxBackoff; i++ {
		d *= 2
	}
	return min(d, MaxBackoff)
}

// Notify queues ev for every webhook and returns at once. A full queue
// drops the event for that webhook (logged and counted). A zero Time is
// set to now.
func (n *Notifier) Notify(ev Event) {
	if n == nil || len(n.hooks) == 0 {
		return
	}
	if ev.Time.IsZero() {
		ev.Time = time.Now()
	}
	ev.Time = ev.Time.UTC()
	body, err := json.Marshal(ev)
	if err != nil {
		n.fail(nil, ev.Type, ReasonUndeliverable, fmt.Errorf("notify: encoding the %s event: %w", ev.Type, err))
		return
	}
	n.mu.RLock()
	defer n.mu.RUnlock()
	for _, h := range n.hooks {
		if n.closed {
			n.fail(h, ev.Type, ReasonClosed, fmt.Errorf("notify: the notifier is closed"))
			continue
		}
		select {
		case h.queue <- body:
		default:
			n.fail(h, ev.Type, ReasonQueueFull, fmt.Errorf("notify: the queue of %d events is full", cap(h.queue)))
		}
	}
}

// Close stops accepting events, waits up to Options.Drain for the queued
// ones to be delivered and abandons the rest. Calling it again does
// nothing.
func (n *Notifier) Close() error {
	if n == nil {
		return nil
	}
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	for _, h := range n.hooks {
		close(h.queue)
	}
	n.mu.Unlock()
	done := make(chan struct{})
	go func() { n.wg.Wait(); close(done) }()
	t := time.NewTimer(n.opt.Drain)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		n.cancel()
		<-done
	}
	n.cancel()
	return nil
}

// run delivers h's queue in order until it is closed.
func (n *Notifier) run(h *hook) {
	defer n.wg.Done()
	for body := range h.queue {
		if n.ctx.Err() != nil {
			n.fail(h, eventType(body), ReasonClosed, fmt.Errorf("notify: the notifier closed before delivery"))
			continue
		}
		n.deliver(h, body)
	}
}

// deliver tries body up to h.attempts times with backoff in between.
func (n *Notifier) deliver(h *hook, body []byte) {
	var err error
	for attempt := 1; attempt <= h.attempts; attempt++ {
		var retry bool
		retry, err = n.post(h, body)
		if err == nil {
			return
		}
		if n.ctx.Err() != nil {
			n.fail(h, eventType(body), ReasonClosed, err)
			return
		}
		if !retry || attempt == h.attempts {
			break
		}
		t := time.NewTimer(n.opt.Backoff(attempt))
		select {
		case <-t.C:
		case <-n.ctx.Done():
			t.Stop()
			n.fail(h, eventType(body), ReasonClosed, fmt.Errorf("notify: the notifier closed while retrying: %w", err))
			return
		}
	}
	n.fail(h, eventType(body), ReasonUndeliverable, err)
}

// post sends body once. retry says whether another attempt may succeed.
func (n *Notifier) post(h *hook, body []byte) (retry bool, err error) {
	req, err := http.NewRequestWithContext(n.ctx, http.MethodPost, h.url, bytes.NewReader(body))
	if err != nil {
		return false, fmt.Errorf("notify: building the request to %s: %w", h.redacted, err)
	}
	for k, v := range h.header {
		req.Header[k] = v
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "crmguard-notify")
	resp, err := n.opt.Client.Do(req)
	if err != nil {
		return true, fmt.Errorf("notify: posting to %s: %w", h.redacted, err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
	switch s := resp.StatusCode; {
	case s >= 200 && s < 300:
		return false, nil
	case s == http.StatusRequestTimeout || s == http.StatusTooManyRequests || s >= 500:
		return true, fmt.Errorf("notify: %s answered %d", h.redacted, s)
	default:
		return false, fmt.Errorf("notify: %s refused the event with %d", h.redacted, s)
	}
}

// fail logs and counts an event given up.
func (n *Notifier) fail(h *hook, typ, reason string, err error) {
	if n.opt.Failures != nil {
		n.opt.Failures.WithLabelValues(reason).Inc()
	}
	target := ""
	if h != nil {
		target = h.redacted
	}
	n.opt.Logger.Warn("notification not delivered", zap.String("webhook", target), zap.String("event", typ),
		zap.String("reason", reason), zap.Error(err))
}

// eventType reads the type back from an encoded event (for logs).
func eventType(body []byte) string {
	var ev struct {
		Type string `json:"type"`
	}
	_ = json.Unmarshal(body, &ev)
	return ev.Type
}

// redact returns the URL without user info and query (which may hold a
// token), for logs.
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(invalid URL)"
	}
	u.User, u.RawQuery, u.Fragment = nil, "", ""
	return u.String()
}
