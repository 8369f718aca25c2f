package caddymodule

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
)

// errAnswerTooLarge is returned by recorder.Write once a buffered answer
// passes the size cap; the reverse proxy then aborts the copy.
var errAnswerTooLarge = errors.New("caddymodule: upstream answer is larger than max_body")

// recorder is the response writer handed to the next handler. It decides
// at WriteHeader time, through shouldBuffer, whether the answer streams
// straight to the client (the default: SSE, websockets, downloads that need
// no rewrite) or is held in memory, up to limit bytes, for a rewrite.
//
// caddyhttp.NewResponseRecorder is not used because its buffer has no cap:
// an oversize answer would be held in memory in full before it could be
// refused.
type recorder struct {
	w            http.ResponseWriter
	header       http.Header
	shouldBuffer func(status int, h http.Header) bool
	limit        int64
	// passOnOverflow makes an answer over limit stream through instead of
	// being refused (shadow mode never blocks).
	passOnOverflow bool
	// startStream, when set, takes over a buffered answer that passes
	// streamAt (or limit) instead of buffering on: it gets the bytes
	// buffered so far and returns the writer every later byte goes to
	// (stream.go), or nil when this answer cannot stream (it is then
	// buffered up to limit, as without startStream).
	startStream func(buffered []byte) io.Writer
	streamAt    int64
	// streamTo is the writer startStream returned, once the answer streams.
	streamTo io.Writer

	buf         *bytes.Buffer
	status      int
	wroteHeader bool
	buffering   bool
	overflow    bool
	size        int64
}

func newRecorder(w http.ResponseWriter, buf *bytes.Buffer, limit int64, shouldBuffer func(int, http.Header) bool) *recorder {
	return &recorder{w: w, header: w.Header(), buf: buf, limit: limit, shouldBuffer: shouldBuffer}
}

// Header returns the response headers (the client's, shared until a
// buffered answer is finished).
func (rr *recorder) Header() http.Header { return rr.header }

// WriteHeader decides between streaming and buffering. 1xx answers
// (including 101 Switching Protocols for websockets) always pass.
func (rr *recorder) WriteHeader(status int) {
	if rr.wroteHeader {
		return
	}
	if status >= 100 && status <= 199 {
		rr.status = status
		rr.w.WriteHeader(status)
		return
	}
	rr.status = status
	rr.wroteHeader = true
	rr.buffering = rr.shouldBuffer != nil && rr.shouldBuffer(status, rr.header)
	if !rr.buffering {
		rr.w.WriteHeader(status)
	}
}

// Write streams or buffers p.
func (rr *recorder) Write(p []byte) (int, error) {
	if !rr.wroteHeader {
		rr.WriteHeader(http.StatusOK)
	}
	if !rr.buffering {
		n, err := rr.w.Write(p)
		rr.size += int64(n)
		return n, err
	}
	if rr.streamTo != nil {
		n, err := rr.streamTo.Write(p)
		rr.size += int64(n)
		return n, err
	}
	if rr.overflow {
		return 0, errAnswerTooLarge
	}
	if rr.startStream != nil && int64(rr.buf.Len())+int64(len(p)) > min(rr.streamAt, rr.limit) {
		if rr.streamTo = rr.startStream(rr.buf.Bytes()); rr.streamTo != nil {
			// What the next handler sets from now on (trailers) stays
			// with it: the client's headers belong to the stream.
			rr.header = rr.header.Clone()
			return rr.Write(p)
		}
		rr.startStream = nil // this answer cannot stream: buffered up to limit
	}
	if int64(rr.buf.Len())+int64(len(p)) > rr.limit {
		if rr.passOnOverflow {
			return rr.switchToStreaming(p)
		}
		rr.overflow = true
		rr.buf.Reset()
		return 0, errAnswerTooLarge
	}
	n, _ := rr.buf.Write(p)
	rr.size += int64(n)
	return n, nil
}

// switchToStreaming sends what was buffered so far and p, then streams the
// rest (shadow mode only).
func (rr *recorder) switchToStreaming(p []byte) (int, error) {
	rr.buffering = false
	rr.overflow = true
	rr.w.WriteHeader(rr.status)
	if _, err := rr.w.Write(rr.buf.Bytes()); err != nil {
		return 0, err
	}
	rr.buf.Reset()
	n, err := rr.w.Write(p)
	rr.size += int64(n)
	return n, err
}

// ReadFrom keeps io.Copy from bypassing the buffer decision.
func (rr *recorder) ReadFrom(r io.Reader) (int64, error) {
	if !rr.wroteHeader {
		rr.WriteHeader(http.StatusOK)
	}
	if !rr.buffering {
		if rf, ok := rr.w.(io.ReaderFrom); ok {
			n, err := rf.ReadFrom(r)
			rr.size += n
			return n, err
		}
	}
	return io.Copy(writerOnly{rr}, r)
}

// FlushError flushes a streamed answer; a buffered one is held until the
// rewrite.
func (rr *recorder) FlushError() error {
	if rr.buffering {
		return nil
	}
	if !rr.wroteHeader && rr.status == 0 {
		// Nothing written yet: flushing would send a 200 the next handler
		// may not mean; the caller writes headers first.
		return nil
	}
	return http.NewResponseController(rr.w).Flush()
}

// Hijack hands the connection over (websockets). A buffered answer cannot
// be hijacked.
func (rr *recorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if rr.buffering {
		return nil, nil, errors.New("caddymodule: cannot hijack a buffered answer")
	}
	return http.NewResponseController(rr.w).Hijack()
}

// Unwrap returns the client's writer, for http.ResponseController.
func (rr *recorder) Unwrap() http.ResponseWriter { return rr.w }

// writerOnly hides ReadFrom so io.Copy calls Write.
type writerOnly struct{ io.Writer }
