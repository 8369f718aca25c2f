package caddymodule

import (
	"errors"
	"strings"

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
		return c, errors.Join(errors.New("caddymodule: registering metrics"), err)
	}
	return c, nil
}

// observe counts one finished request.
func (m *guardMetrics) observe(ev *AuditEvent) {
	if m == nil {
		return
	}
	route := ev.Route
	if route == "" {
		route = "(none)"
	}
	m.decisions.WithLabelValues(route, ev.Decision).Inc()
	for key, n := range ev.Fields {
		action, _, _ := strings.Cut(key, ":")
		m.fields.WithLabelValues(route, action).Add(float64(n))
	}
	if ev.Export.Blocked && !ev.Shadow {
		m.exportsBlocked.WithLabelValues(route).Inc()
	}
}
