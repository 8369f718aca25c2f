package caddymodule

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/crmguard/crmguard/rules"
)

// A route's `target` (rules/target.go) judges a request against the stored
// record it changes. Before the request is forwarded, the guard GETs that
// record through the same next handler (the same reverse_proxy, so the
// same upstream, TLS and load balancing) as the same user, and lets the
// rules decide on it. The request is never forwarded unless the rules
// allowed it on the record they saw.

// targetFetchKey marks the context of the guard's own record fetch.
type targetFetchKey struct{}

// IsTargetFetch reports whether r is the guard's fetch of the stored
// record a request changes (a route's `target`), not the client's request.
// Handlers after crm_guard (and the `rules test` runner's fake CRM) can
// tell the two apart with it.
func IsTargetFetch(r *http.Request) bool {
	v, _ := r.Context().Value(targetFetchKey{}).(bool)
	return v
}

// targetHeaders are the request headers the record fetch carries over
// from the (already scrubbed) client request: who the user is, as the CRM
// would see it on the request itself. Nothing else is copied: a method
// override, a conditional (If-Match) or a body header must not change
// what the GET does.
var targetHeaders = []string{HeaderUser, HeaderRoles, "Cookie", "Authorization", "User-Agent", "Accept-Language"}

// judgeTarget fetches and judges the stored record the request changes,
// when its route has a target. done is true when the guard answered (the
// request must not be forwarded).
func (x *exchange) judgeTarget(w http.ResponseWriter, next caddyhttp.Handler) (done bool, err error) {
	d := x.d
	t := d.Target()
	if t == nil {
		return false, nil
	}
	if done, err := x.checkTargetBody(w); done {
		return true, err
	}
	answers := x.fetchTargets(d.TargetFetches(), d.TargetConcurrency(), next)
	block := d.JudgeTargets(answers)
	x.ev.Target = d.Audit.Target
	if block == nil {
		if a := d.Audit.Target; a != nil && !a.Allowed {
			// Shadow mode: the audit says what would have happened.
			x.ev.Reason = a.Reason
			x.ev.Decision = d.Audit.Decision
			return false, nil
		}
		if t.IfMatch && !x.shadow && len(answers) == 1 {
			return x.conditionalWrite(w, answers[0].Header.Get("ETag"))
		}
		return false, nil
	}
	decision := "deny"
	if block.Status == http.StatusBadGateway {
		decision = "error"
	}
	if x.shadow {
		// The handler runs in shadow mode over an enforcing rule file.
		x.ev.Reason = "shadow: " + block.Reason
		x.ev.Decision = decision
		return false, nil
	}
	return true, x.refuse(w, x.approvalRefusal(d, refusal{Status: block.Status, Rule: d.RouteID, Reason: block.Reason, Message: block.Message}), decision)
}

// conditionalWrite makes the write apply only to the version of the record
// the rules judged (`if_match`): its If-Match becomes the fetch answer's
// ETag. A client If-Match that names neither that version nor "*" is
// refused with 412, as the CRM would refuse it.
func (x *exchange) conditionalWrite(w http.ResponseWriter, etag string) (done bool, err error) {
	r := x.r
	if vs := r.Header.Values("If-Match"); len(vs) > 0 {
		ok := false
		for _, v := range vs {
			for _, tag := range strings.Split(v, ",") {
				if tag = strings.TrimSpace(tag); tag == "*" || tag == etag {
					ok = true
				}
			}
		}
		if !ok {
			return true, x.refuse(w, refusal{Status: http.StatusPreconditionFailed, Rule: x.d.RouteID,
				Reason: "The record changed: its current version is not the one the request's If-Match names."}, "deny")
		}
	}
	r.Header["If-Match"] = []string{etag}
	return false, nil
}

// checkTargetBody refuses a body that names another record than the path
// (rules.Decision.CheckTargetBody). The body is read by readBody, once,
// whether or not the body guards read it already (fail closed above
// max_body or when compressed).
func (x *exchange) checkTargetBody(w http.ResponseWriter) (done bool, err error) {
	body, checked, done, err := x.readBody(w, "on a route with a target")
	if !checked || done {
		return done, err
	}
	be := x.d.CheckTargetBody(x.r.Header.Get("Content-Type"), body)
	if be == nil {
		return false, nil
	}
	if x.shadow {
		x.ev.Decision = "deny"
		x.ev.Reason = "shadow: " + be.Reason
		return false, nil
	}
	return true, x.refuse(w, refusal{Status: be.Status, Rule: x.d.RouteID, Reason: be.Reason, Message: be.Message}, "deny")
}

// fetchTargets makes the record fetches (one, or one per record of a bulk
// write), at most concurrency at once, and returns their answers in order.
// The answers share one byte budget, max_body: a bulk write's records are
// never held in memory beyond what one answer may take.
func (x *exchange) fetchTargets(fetches []rules.TargetFetch, concurrency int, next caddyhttp.Handler) []rules.TargetAnswer {
	answers := make([]rules.TargetAnswer, len(fetches))
	budget := &atomic.Int64{}
	budget.Store(x.g.opt.MaxBody)
	if len(fetches) == 1 || concurrency <= 1 {
		for i, f := range fetches {
			answers[i] = x.fetchTarget(f.Path, next, budget)
		}
		return answers
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, concurrency)
	for i, f := range fetches {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			answers[i] = x.fetchTarget(f.Path, next, budget)
		}()
	}
	wg.Wait()
	return answers
}

// fetchTarget GETs path from the next handler as the request's user and
// returns the decoded answer. budget is what is left of the bytes the
// request's fetches may hold together; the answer's bytes are taken from it.
func (x *exchange) fetchTarget(path string, next caddyhttp.Handler, budget *atomic.Int64) rules.TargetAnswer {
	r := x.r
	u, err := url.Parse(path)
	if err != nil || u.Scheme != "" || u.Host != "" || !strings.HasPrefix(u.Path, "/") {
		return rules.TargetAnswer{Err: fmt.Errorf("caddymodule: the record path %q is not a path", path)}
	}
	fr := r.Clone(context.WithValue(r.Context(), targetFetchKey{}, true))
	fr.Method = http.MethodGet
	fr.URL.Path, fr.URL.RawPath, fr.URL.RawQuery, fr.URL.Fragment = u.Path, u.RawPath, u.RawQuery, ""
	fr.RequestURI = fr.URL.RequestURI()
	fr.Body, fr.GetBody, fr.ContentLength = http.NoBody, nil, 0
	fr.TransferEncoding, fr.Trailer, fr.Close = nil, nil, false
	h := make(http.Header, len(targetHeaders)+2)
	for _, k := range targetHeaders {
		if vs := r.Header.Values(k); len(vs) > 0 {
			h[http.CanonicalHeaderKey(k)] = append([]string(nil), vs...)
		}
	}
	h.Set("Accept", "application/json")
	h.Set("Accept-Encoding", "identity") // decoded below when the CRM compresses anyway
	// The owner must be read now, not from a cache between the guard and
	// the CRM (RFC 9111 5.2.1.4).
	h.Set("Cache-Control", "no-cache")
	h.Set("Pragma", "no-cache")
	fr.Header = h

	fw := &fetchWriter{header: http.Header{}, budget: budget}
	if err := callFetch(fw, fr, next); err != nil {
		// The detail (addresses, handler traces) goes to the log, not to
		// the client.
		x.g.opt.Logger.Warn("the stored record a request changes could not be fetched",
			zap.Error(err), zap.String("fetch", path), zap.String("route", x.d.RouteID))
		return rules.TargetAnswer{Status: fw.status, Err: errors.New("the CRM could not be reached")}
	}
	if fw.over {
		return rules.TargetAnswer{Status: fw.status, Err: fmt.Errorf("the answers to the record fetches are larger than %d bytes together", x.g.opt.MaxBody)}
	}
	if fw.status == 0 {
		return rules.TargetAnswer{Err: errors.New("the CRM sent no answer")}
	}
	if fw.status == http.StatusPartialContent || fw.header.Get("Content-Range") != "" {
		return rules.TargetAnswer{Status: fw.status, Err: errors.New("the CRM sent a partial answer")}
	}
	body, err := decode(strings.Join(fw.header.Values("Content-Encoding"), ","), fw.buf.Bytes(), max(budget.Load(), 0)+int64(fw.buf.Len()))
	if err != nil {
		return rules.TargetAnswer{Status: fw.status, Err: err}
	}
	return rules.TargetAnswer{Status: fw.status, Header: fw.header, Body: body}
}

// callFetch runs the next handler for the record fetch; an aborted copy
// (http.ErrAbortHandler) is an error like any other.
func callFetch(fw *fetchWriter, fr *http.Request, next caddyhttp.Handler) (err error) {
	defer func() {
		if p := recover(); p != nil {
			if p != http.ErrAbortHandler {
				panic(p)
			}
			err = errors.New("caddymodule: the answer was cut short")
		}
	}()
	return next.ServeHTTP(fw, fr)
}

// fetchWriter holds the answer to a record fetch in memory, taking its
// bytes from budget (shared by a request's fetches). It never writes to
// the client.
type fetchWriter struct {
	header http.Header
	status int
	buf    bytes.Buffer
	budget *atomic.Int64
	over   bool
}

// Header returns the answer's headers.
func (f *fetchWriter) Header() http.Header { return f.header }

// WriteHeader keeps the first final status; informational (1xx) answers
// are skipped.
func (f *fetchWriter) WriteHeader(status int) {
	if f.status != 0 || status >= 100 && status <= 199 {
		return
	}
	f.status = status
}

// Write buffers p, refusing everything past the limit.
func (f *fetchWriter) Write(p []byte) (int, error) {
	if f.status == 0 {
		f.status = http.StatusOK
	}
	if f.over || f.budget.Add(-int64(len(p))) < 0 {
		f.over = true
		return 0, errAnswerTooLarge
	}
	return f.buf.Write(p)
}

// targetAudit logs rules.TargetAudit with its JSON keys.
type targetAudit rules.TargetAudit

// MarshalLogObject implements zapcore.ObjectMarshaler.
func (t targetAudit) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	enc.AddString("fetched", t.Fetched)
	enc.AddInt("status", t.Status)
	enc.AddBool("allowed", t.Allowed)
	if t.Reason != "" {
		enc.AddString("reason", t.Reason)
	}
	if len(t.IDs) > 0 {
		_ = enc.AddArray("ids", zapcore.ArrayMarshalerFunc(func(ae zapcore.ArrayEncoder) error {
			for _, id := range t.IDs {
				ae.AppendString(id)
			}
			return nil
		}))
	}
	if t.Fetches != 0 {
		enc.AddInt("fetches", t.Fetches)
	}
	if t.Refused != "" {
		enc.AddString("refused", t.Refused)
	}
	return nil
}

// appendTarget appends the audit event's "target" member, if any, as
// encoding/json would write it.
func appendTarget(b []byte, t *rules.TargetAudit) []byte {
	if t == nil {
		return b
	}
	b = appendKey(b, "target")
	b = append(b, `{"fetched":`...)
	b = appendString(b, t.Fetched)
	b = append(b, `,"status":`...)
	b = strconv.AppendInt(b, int64(t.Status), 10)
	b = append(b, `,"allowed":`...)
	b = strconv.AppendBool(b, t.Allowed)
	if t.Reason != "" {
		b = append(b, `,"reason":`...)
		b = appendString(b, t.Reason)
	}
	if len(t.IDs) > 0 {
		b = append(b, `,"ids":[`...)
		for i, id := range t.IDs {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, id)
		}
		b = append(b, ']')
	}
	if t.Fetches != 0 {
		b = append(b, `,"fetches":`...)
		b = strconv.AppendInt(b, int64(t.Fetches), 10)
	}
	if t.Refused != "" {
		b = append(b, `,"refused":`...)
		b = appendString(b, t.Refused)
	}
	return append(b, '}')
}
