package caddymodule

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/crmguard/crmguard/internal/mediatype"
	"github.com/crmguard/crmguard/rules"
)

// bufPool holds answer buffers; outPool holds rewrite outputs.
var (
	bufPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}
	outPool = sync.Pool{New: func() any { b := make([]byte, 0, 32<<10); return &b }}
)

// proxy passes the request on and treats the answer.
func (x *exchange) proxy(w http.ResponseWriter, next caddyhttp.Handler) (err error) {
	before := w.Header().Clone()
	var block *rules.Block
	buf := bufPool.Get().(*bytes.Buffer)
	buf.Reset()
	defer func() {
		if int64(buf.Cap()) <= 4*x.g.opt.MaxBody && buf.Cap() <= 64<<20 {
			bufPool.Put(buf)
		}
	}()
	rec := newRecorder(w, buf, x.g.opt.MaxBody, func(status int, h http.Header) bool {
		x.g.scrubber.scrubSetCookies(h, before["Set-Cookie"])
		if !x.d.Public && !x.shadow {
			privatise(h)
		}
		if x.rewrites && !x.shadow && x.r.Method == http.MethodHead {
			// A HEAD answer on a rewriting route describes the CRM's
			// bytes, not what a GET would return: no length, no
			// validators, no caching.
			delete(h, "Content-Length")
			dropValidators(h)
			h["Cache-Control"] = []string{"private, no-store"}
		}
		buffer, b := x.d.InspectResponse(status, h)
		if b != nil {
			block = b
			return true // hold the answer back: it must not reach the client
		}
		if buffer && x.r.Method != http.MethodHead && status != http.StatusNoContent && status != http.StatusNotModified {
			presize(buf, h.Get("Content-Length"), x.g.opt.MaxBody)
		}
		return buffer
	})
	rec.passOnOverflow = x.shadow
	var st *streamer
	if !x.shadow {
		rec.streamAt = x.streamFrom() // stream.go
		rec.startStream = func(buffered []byte) io.Writer {
			st = x.startStream(w, rec.status, buffered) // stream.go
			if st == nil {
				return nil
			}
			return st.pw
		}
	}

	err = x.callNext(rec, next)
	if st != nil {
		return x.endStream(w, st, before, err)
	}
	switch {
	case rec.overflow && !x.shadow:
		x.restore(w, before)
		return x.refuse(w, refusal{Status: http.StatusBadGateway, Rule: x.d.RouteID,
			Reason: fmt.Sprintf("The CRM's answer is larger than %d bytes and cannot be checked.", x.g.opt.MaxBody)}, "blocked")
	case err != nil:
		if rec.buffering {
			x.restore(w, before)
			var he caddyhttp.HandlerError
			if !errors.As(err, &he) || he.StatusCode == 0 {
				return x.refuse(w, refusal{Status: http.StatusBadGateway, Rule: x.d.RouteID, Reason: "The CRM's answer could not be read in full."}, "error", zap.Error(err))
			}
		}
		x.ev.Status = statusFromError(err)
		x.ev.Reason = err.Error()
		if x.ev.Decision == "allow" {
			x.ev.Decision = "error" // the upstream failed (docs/audit.md)
		}
		return err
	}
	if !rec.buffering {
		x.ev.Status = rec.status
		if x.ev.Status == 0 {
			x.ev.Status = http.StatusOK
		}
		return nil
	}
	if block != nil {
		if x.shadow {
			x.ev.Reason = "shadow: " + block.Reason
			return x.sendRaw(w, rec)
		}
		loc := w.Header().Get("Location")
		x.restore(w, before)
		if rec.status >= 300 && rec.status < 400 && loc != "" {
			// A withheld redirect still says where to go.
			w.Header().Set("Location", loc)
		}
		return x.refuse(w, refusal{Status: block.Status, Rule: x.d.RouteID, Reason: block.Reason, Message: block.Message}, "blocked")
	}
	return x.rewrite(w, rec, before)
}

// maxPresize bounds the room reserved ahead from a Content-Length: a CRM
// announcing more than it sends must not make the proxy hold memory for it.
const maxPresize = 1 << 20

// presize makes room in buf for an answer of the announced length (up to
// maxPresize, never over limit), so that buffering it copies it once
// instead of growing the buffer by doubling.
func presize(buf *bytes.Buffer, contentLength string, limit int64) {
	n, err := strconv.ParseInt(contentLength, 10, 64)
	if err != nil || n <= 0 || n > limit || n > maxPresize {
		return
	}
	buf.Grow(int(n))
}

// callNext runs the next handler, turning the reverse proxy's abort of a
// buffered copy (answer too large, upstream died mid-answer) into an error:
// nothing reached the client yet, so the guard can still answer.
func (x *exchange) callNext(rec *recorder, next caddyhttp.Handler) (err error) {
	defer func() {
		if p := recover(); p != nil {
			if p == http.ErrAbortHandler && rec.buffering {
				err = errors.New("caddymodule: the upstream answer was cut short")
				return
			}
			panic(p)
		}
	}()
	return next.ServeHTTP(rec, x.r)
}

// restore puts the client's headers back to their state before the
// upstream answered (refusals must not carry the CRM's headers).
func (x *exchange) restore(w http.ResponseWriter, before http.Header) {
	h := w.Header()
	for k := range h {
		delete(h, k)
	}
	for k, v := range before {
		h[k] = v
	}
}

// sendRaw writes a buffered answer unchanged (shadow mode).
func (x *exchange) sendRaw(w http.ResponseWriter, rec *recorder) error {
	x.ev.Status = rec.status
	w.WriteHeader(rec.status)
	if _, err := w.Write(rec.buf.Bytes()); err != nil {
		return nil // the client went away; nothing left to do
	}
	return nil
}

// rewrite decodes a buffered answer, rewrites it and writes the result.
func (x *exchange) rewrite(w http.ResponseWriter, rec *recorder, before http.Header) error {
	d, r := x.d, x.r
	h := w.Header()
	status := rec.status
	fail := func(reason string) error {
		if x.shadow {
			x.ev.Reason = "shadow: " + reason
			return x.sendRaw(w, rec)
		}
		x.restore(w, before)
		return x.refuse(w, refusal{Status: http.StatusBadGateway, Rule: d.RouteID, Reason: reason}, "blocked")
	}
	if status == http.StatusPartialContent || h.Get("Content-Range") != "" {
		return fail("The CRM sent a partial answer, which cannot be checked.")
	}
	bodyless := r.Method == http.MethodHead || status == http.StatusNoContent || status == http.StatusNotModified ||
		(status >= 100 && status < 200)
	if bodyless {
		if !x.shadow {
			dropValidators(h)
			delete(h, "Content-Length")
		}
		x.ev.Status = status
		w.WriteHeader(status)
		return nil
	}
	started := time.Now()
	body, err := decode(strings.Join(h["Content-Encoding"], ","), rec.buf.Bytes(), x.g.opt.MaxBody)
	if err != nil {
		return fail("The CRM's answer could not be checked: " + err.Error())
	}
	if len(bytes.TrimSpace(body)) == 0 {
		// Nothing to rewrite and nothing to leak (a PATCH answered with
		// an empty 200, say): pass the status on without a body.
		if x.shadow {
			return x.sendRaw(w, rec)
		}
		delete(h, "Content-Encoding")
		dropValidators(h)
		h["Content-Length"] = []string{"0"}
		x.ev.Status = status
		w.WriteHeader(status)
		return nil
	}
	out := outPool.Get().(*[]byte)
	res, block, err := d.Rewrite((*out)[:0], status, h, body)
	defer func() {
		if cap(res) <= 64<<20 {
			*out = res[:0]
		}
		outPool.Put(out)
	}()
	x.rewrote, x.rewriteTime = true, time.Since(started)
	if err != nil {
		return fail("The CRM's answer could not be checked: " + err.Error())
	}
	if block != nil {
		if x.shadow {
			x.ev.Reason = "shadow: " + block.Reason
			return x.sendRaw(w, rec)
		}
		x.restore(w, before)
		return x.refuse(w, refusal{Status: block.Status, Rule: d.RouteID, Reason: block.Reason, Message: block.Message}, "blocked")
	}
	// The answer is known and nothing of it is written yet: the records
	// limits charge what the client would receive, or refuse it whole.
	if refused, err := x.limitRecords(w, before, d.Audit.RecordsOut); refused { // limits.go
		return err
	}
	if x.shadow {
		return x.sendRaw(w, rec)
	}
	x.ev.Rewritten = true
	rewrittenHeader(h)
	h["Content-Length"] = []string{strconv.Itoa(len(res))}
	x.ev.Status = status
	w.WriteHeader(status)
	if _, err := w.Write(res); err == nil {
		// Send the tail now: the audit line and the metrics that follow
		// need not hold the client's answer back.
		_ = http.NewResponseController(w).Flush()
	}
	return nil
}

// rewrittenHeader makes h describe the rewritten answer instead of the
// CRM's bytes, on the buffered and the streamed path alike.
func rewrittenHeader(h http.Header) {
	delete(h, "Content-Encoding")
	dropValidators(h)
	// The rewritten body is UTF-8 JSON, or a UTF-8 CSV/TSV the rules read
	// as a table, whatever else the CRM called it: a JSON answer labelled
	// text/html would run a script held in a record.
	if !mediatype.Label(h["Content-Type"]) {
		h["Content-Type"] = []string{"application/json"}
	}
	h["X-Content-Type-Options"] = []string{"nosniff"}
	// The answer is now this user's view: no cache may keep or share it.
	h["Cache-Control"] = []string{"private, no-store"}
}

// statusFromError is the status Caddy will answer for err.
func statusFromError(err error) int {
	var he caddyhttp.HandlerError
	if errors.As(err, &he) && he.StatusCode != 0 {
		return he.StatusCode
	}
	return http.StatusInternalServerError
}

// asksUpgrade reports any sign of a protocol switch: an Upgrade header, or
// an upgrade token on any Connection line.
func asksUpgrade(r *http.Request) bool {
	if len(r.Header.Values("Upgrade")) > 0 {
		return true
	}
	for _, line := range r.Header.Values("Connection") {
		for _, tok := range strings.Split(line, ",") {
			if strings.EqualFold(strings.TrimSpace(tok), "upgrade") {
				return true
			}
		}
	}
	return false
}

func isUpgrade(r *http.Request) bool {
	return r.Header.Get("Upgrade") != "" && strings.Contains(strings.ToLower(r.Header.Get("Connection")), "upgrade")
}
