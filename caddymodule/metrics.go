package caddymodule

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// guardMetrics are the handler's Prometheus collectors, registered on
// Caddy's registry for the running configuration.
type guardMetrics struct {
	// decisions counts requests by route and outcome.
	decisions *prometheus.CounterVec
	// fields counts treated fields by route and action.
	fields *prometheus.CounterVec
	// exportsBlocked counts blocked exports by route.
	exportsBlocked *prometheus.CounterVec
	// rewriteSeconds observes the time spent decoding and rewriting a
	// buffered answer.
	rewriteSeconds *prometheus.HistogramVec
	// limitHits counts usage limit hits by limit and action (no user
	// label: the audit event names the user).
	limitHits *prometheus.CounterVec

	// children caches the labelled series (a childKey to a
	// prometheus.Counter or prometheus.Observer): a label lookup hashes
	// the values and takes a lock on every request. The map is never
	// changed once published: a new series copies it under mu (rare), so
	// a lookup takes no lock and boxes no key. It stops growing at
	// maxCachedChildren (label values come from the rule file, but a
	// bound keeps a surprise from holding memory).
	children atomic.Pointer[map[childKey]any]
	mu       sync.Mutex
}

// maxCachedChildren bounds guardMetrics.children.
const maxCachedChildren = 4096

// childKey names one labelled series of one collector.
type childKey struct {
	vec       int // 0 decisions, 1 fields, 2 exportsBlocked, 3 rewriteSeconds, 4 limitHits (route: the limit)
	route, v2 string
}

// newGuardMetrics creates the collectors and registers them on reg. When
// another crm_guard handler of the same configuration registered them
// already, the registered collectors are shared.
func newGuardMetrics(reg prometheus.Registerer) (*guardMetrics, error) {
	m := &guardMetrics{
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "crmguard", Name: "decisions_total",
			Help: "Requests judged by crm_guard, by route and outcome.",
		}, []string{"route", "outcome"}),
		fields: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "crmguard", Name: "fields_treated_total",
			Help: "Fields removed, masked, hashed or replaced in answers, by route and action.",
		}, []string{"route", "action"}),
		exportsBlocked: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "crmguard", Name: "exports_blocked_total",
			Help: "Exports refused, by route.",
		}, []string{"route"}),
		rewriteSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "crmguard", Name: "rewrite_duration_seconds",
			Help:    "Time spent decoding and rewriting buffered answers, by route.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}, []string{"route"}),
		limitHits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "crmguard", Name: "limit_hits_total",
			Help: "Usage limit hits (refused requests, and alerts raised), by limit and action.",
		}, []string{"limit", "action"}),
	}
	if reg == nil {
		return m, nil
	}
	var err error
	if m.decisions, err = register(reg, m.decisions); err != nil {
		return nil, err
	}
	if m.fields, err = register(reg, m.fields); err != nil {
		return nil, err
	}
	if m.exportsBlocked, err = register(reg, m.exportsBlocked); err != nil {
		return nil, err
	}
	if m.rewriteSeconds, err = register(reg, m.rewriteSeconds); err != nil {
		return nil, err
	}
	if m.limitHits, err = register(reg, m.limitHits); err != nil {
		return nil, err
	}
	return m, nil
}

// register registers c on reg, returning the already registered collector
// when there is one.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing, nil
			}
		}
		return c, fmt.Errorf("caddymodule: registering metrics: %w", err)
	}
	return c, nil
}

// counter returns the series of a counter vector for route (and v2, the
// second label of decisions and fields).
func (m *guardMetrics) counter(vec int, route, v2 string) prometheus.Counter {
	k := childKey{vec: vec, route: route, v2: v2}
	if c, ok := m.child(k); ok {
		return c.(prometheus.Counter)
	}
	var c prometheus.Counter
	switch vec {
	case 0:
		c = m.decisions.WithLabelValues(route, v2)
	case 1:
		c = m.fields.WithLabelValues(route, v2)
	case 4:
		c = m.limitHits.WithLabelValues(route, v2)
	default:
		c = m.exportsBlocked.WithLabelValues(route)
	}
	m.remember(k, c)
	return c
}

// rewriteObserver returns the rewrite duration series for route.
func (m *guardMetrics) rewriteObserver(route string) prometheus.Observer {
	k := childKey{vec: 3, route: route}
	if o, ok := m.child(k); ok {
		return o.(prometheus.Observer)
	}
	o := m.rewriteSeconds.WithLabelValues(route)
	m.remember(k, o)
	return o
}

// child returns the cached series of k.
func (m *guardMetrics) child(k childKey) (any, bool) {
	if cur := m.children.Load(); cur != nil {
		c, ok := (*cur)[k]
		return c, ok
	}
	return nil, false
}

// remember caches a series unless the cache is full.
func (m *guardMetrics) remember(k childKey, series any) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var cur map[childKey]any
	if p := m.children.Load(); p != nil {
		cur = *p
	}
	if _, ok := cur[k]; ok || len(cur) >= maxCachedChildren {
		return
	}
	next := make(map[childKey]any, len(cur)+1)
	for key, v := range cur {
		next[key] = v
	}
	next[k] = series
	m.children.Store(&next)
}

// observe counts one finished request; rewrote says the answer went
// through the rewriter, which took rewriteTime.
func (m *guardMetrics) observe(ev *AuditEvent, rewrote bool, rewriteTime time.Duration) {
	if m == nil {
		return
	}
	route := ev.Route
	if route == "" {
		route = "(none)"
	}
	m.counter(0, route, ev.Decision).Inc()
	for key, n := range ev.Fields {
		action, _, _ := strings.Cut(key, ":")
		m.counter(1, route, action).Add(float64(n))
	}
	if ev.Export.Blocked && !ev.Shadow {
		m.counter(2, route, "").Inc()
	}
	if rewrote {
		m.rewriteObserver(route).Observe(rewriteTime.Seconds())
	}
	for _, h := range ev.Limits {
		m.counter(4, h.Limit, h.Action).Inc()
	}
}

// notifyFailures returns the counter of notifications given up, by reason
// (crmguard_notify_failures_total), registered on reg (shared with other
// handlers of the same configuration). A nil reg gives an unregistered
// counter.
func notifyFailures(reg prometheus.Registerer) (*prometheus.CounterVec, error) {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "crmguard", Name: "notify_failures_total",
		Help: "Notifications not delivered to a webhook, by reason (queue_full, undeliverable, closed).",
	}, []string{"reason"})
	if reg == nil {
		return c, nil
	}
	return register(reg, c)
}
