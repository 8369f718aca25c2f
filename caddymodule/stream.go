package caddymodule

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"go.uber.org/zap"

	"github.com/crmguard/crmguard/rules"
)

// An answer larger than streamAt (1 MiB, or max_body when smaller) on a
// route whose rewrite can stream (rules.Decision.Streamable) is rewritten
// while it arrives instead of being buffered (and refused over max_body):
// the recorder hands the bytes it buffered, then every later
// one, through a pipe to the rewrite, which runs on its own goroutine and
// writes the rewritten answer to the client (no Content-Length, so chunked
// on HTTP/1.1). Nothing is sent before its records were rewritten. When the
// rewrite fails after the client got part of the answer (invalid JSON or
// CSV, the upstream cut off, a record over the cap, a usage limit reached),
// the answer is cut: the handler panics with http.ErrAbortHandler, so the
// client gets no final chunk (HTTP/1.1) or a reset stream (HTTP/2), and the
// audit event says "cut". Before anything was sent, the guard still answers
// (502, or the limit's 429).

// streamAt is the size from which an answer that can stream does: up to
// it (or max_body when smaller) answers are buffered and rewritten whole,
// as every answer that cannot stream is up to max_body.
const streamAt = 1 << 20

// heldBytes bounds what a stream holds back before its first record (the
// document's start): until then a failure can still be answered 502.
const heldBytes = 64 << 10

// errStreamStopped is what the recorder's writes get once the rewrite
// stopped reading.
var errStreamStopped = errors.New("caddymodule: the streamed rewrite stopped")

// errStreamLimited stops a stream whose first records a usage limit
// refuses: nothing was sent, so the guard answers the refusal.
var errStreamLimited = errors.New("caddymodule: a usage limit refuses the answer")

// streamer is one streamed rewrite.
type streamer struct {
	x       *exchange
	w       http.ResponseWriter
	status  int
	pw      *io.PipeWriter
	done    chan error
	started time.Time
	// set by the rewrite's goroutine, read once done has given its error
	wrote  bool   // the client has the status and part of the answer
	held   []byte // the answer's start, until the first records
	ref    *limitRefusal
	failed *rules.Limit // a limit that could not be counted
	limErr error
	limits []*rules.Limit // the records limits to charge
}

// streamFrom is the size from which this request's answer streams, when
// it can: streamAt, or max_body when a records limit enforces (block,
// step_up). Such a limit refuses an answer that would pass it whole, with
// nothing of it sent, up to max_body (docs/workflows.md); only over
// max_body, which would be refused anyway, is it cut where it crosses.
func (x *exchange) streamFrom() int64 {
	if x.d != nil && x.user != nil {
		for _, lim := range x.d.Limits() {
			if lim.Count == rules.CountRecords && lim.Enforces() {
				return x.g.opt.MaxBody
			}
		}
	}
	return streamAt
}

// startStream prepares the client's headers for a streamed answer and
// starts its rewrite; nil when the answer cannot stream (the caller
// refuses it as too large).
func (x *exchange) startStream(w http.ResponseWriter, status int, buffered []byte) *streamer {
	h := w.Header()
	if x.d == nil || !x.d.Streamable(status, h) || status == 0 || h.Get("Content-Range") != "" {
		return nil
	}
	s := &streamer{x: x, w: w, status: status, done: make(chan error, 1), started: time.Now()}
	for _, lim := range x.d.Limits() {
		if lim.Count == rules.CountRecords && x.user != nil {
			s.limits = append(s.limits, lim)
		}
	}
	delete(h, "Content-Length")
	delete(h, "Trailer")
	rewrittenHeader(h) // proxy.go
	pr, pw := io.Pipe()
	s.pw = pw
	hdr := h.Clone() // the rewrite reads its own copy: the proxy may still set the recorder's
	go func() {
		var err error
		defer func() {
			if p := recover(); p != nil {
				err = fmt.Errorf("caddymodule: the streamed rewrite failed: %v", p)
			}
			_ = pr.CloseWithError(errStreamStopped) // the proxy's next write fails
			s.done <- err
		}()
		body := io.MultiReader(bytes.NewReader(buffered), pr)
		err = x.d.RewriteStream(status, hdr, body, rules.MaxStreamRecord, s.write)
		if err == nil {
			err = s.send(nil)
		}
	}()
	return s
}

// write takes a rewritten piece of the answer holding records records:
// it charges them to the records limits and sends it, or holds it while
// no record came yet.
func (s *streamer) write(b []byte, records int) error {
	if !s.wrote && records == 0 && len(s.held)+len(b) <= heldBytes {
		s.held = append(s.held, b...)
		return nil
	}
	if records > 0 && len(s.limits) > 0 {
		if err := s.charge(records); err != nil {
			return err
		}
	}
	return s.send(b)
}

// send writes what was held and b to the client, the status first.
func (s *streamer) send(b []byte) error {
	if !s.wrote {
		s.wrote = true
		s.w.WriteHeader(s.status)
		if len(s.held) > 0 {
			if _, err := s.w.Write(s.held); err != nil {
				return fmt.Errorf("caddymodule: writing to the client: %w", err)
			}
		}
	}
	if len(b) > 0 {
		if _, err := s.w.Write(b); err != nil {
			return fmt.Errorf("caddymodule: writing to the client: %w", err)
		}
	}
	return nil
}

// charge counts n records about to be sent under the records limits. A
// refusal stops the stream: before anything was sent the guard answers
// it; after, the answer is cut there and only what was sent is counted.
func (s *streamer) charge(n int) error {
	x := s.x
	st := x.g.opt.Store
	failed, err := s.limits[0], errNoStore
	var ref *limitRefusal
	if st != nil {
		ref, failed, err = x.charge(x.r.Context(), st, s.limits, int64(n))
	}
	switch {
	case err != nil && !s.wrote:
		s.failed, s.limErr = failed, err
		return errStreamLimited
	case err != nil:
		return fmt.Errorf("usage limit %s cannot be counted: %w", failed.ID, err)
	case ref != nil && !s.wrote:
		s.ref = ref
		return errStreamLimited
	case ref != nil:
		x.hit(ref.lim, ref.usage.Total, ref.n, true, 0)
		return fmt.Errorf("usage limit %s: the next %d records would pass its max of %d %s", ref.lim.ID, n, ref.lim.Max, ref.lim.Count)
	}
	return nil
}

// endStream finishes a streamed answer once the next handler returned
// (err: its error): it waits for the rewrite and records the outcome; a
// cut answer ends in panic(http.ErrAbortHandler).
func (x *exchange) endStream(w http.ResponseWriter, s *streamer, before http.Header, err error) error {
	_ = s.pw.CloseWithError(err) // nil: the answer ended (io.EOF)
	serr := <-s.done
	x.rewrote, x.rewriteTime = true, time.Since(s.started)
	if serr == nil {
		x.ev.Status = s.status
		x.ev.Rewritten = true
		_ = http.NewResponseController(w).Flush()
		return nil
	}
	if !s.wrote {
		// Nothing reached the client: the guard can still answer.
		x.restore(w, before)
		switch {
		case s.ref != nil:
			return x.limitRefuse(w, *s.ref)
		case s.failed != nil:
			_, rerr := x.limitUnavailable(w, s.failed, s.limErr)
			return rerr
		}
		return x.refuse(w, refusal{Status: http.StatusBadGateway, Rule: x.d.RouteID,
			Reason: "The CRM's answer could not be checked: " + serr.Error()}, "blocked")
	}
	// Part of the answer was sent: cut it, so the client sees it is
	// incomplete. The audit event (written on the way out) says why.
	x.ev.Decision = "cut"
	x.ev.Status = s.status
	x.ev.Rewritten = true
	x.ev.Reason = x.d.Audit.Reason
	x.g.opt.Logger.Warn("a streamed answer was cut", zap.Error(serr), zap.String("path", x.ev.Path))
	_ = http.NewResponseController(w).Flush()
	panic(http.ErrAbortHandler)
}
