package caddymodule

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"go.uber.org/zap"
)

// checkBody reads and checks the request body on routes with body guards
// and on POSTs that could carry a _method override. It sets x.ev.Status
// when it answered.
func (x *exchange) checkBody(w http.ResponseWriter) error {
	d, r := x.d, x.r
	if !d.ReadsBody(r.Header.Get("Content-Type")) {
		return nil
	}
	body, checked, done, err := x.readBody(w, "on this route")
	if !checked || done {
		return err
	}
	if be := d.CheckBody(r.Header.Get("Content-Type"), body); be != nil {
		x.ev.Reason = be.Reason
		if x.shadow {
			x.ev.Decision = "deny"
			return nil
		}
		status := be.Status
		if status == 0 {
			status = http.StatusForbidden
		}
		return x.refuse(w, x.approvalRefusal(d, refusal{Status: status, Rule: d.RouteID, Reason: be.Reason, Message: be.Message}), "deny")
	}
	return nil
}

// readBody reads the request body once, at most max_body bytes, and puts it
// back for the upstream; a second call returns the same bytes. A body that
// cannot be checked (several Content-Type lines, a Content-Encoding, over
// max_body, unreadable) is refused: the client has its answer and done is
// true. In shadow mode nothing is refused: checked is false and the body
// goes on unchecked. where ends the refusal's sentence ("on this route").
func (x *exchange) readBody(w http.ResponseWriter, where string) (body []byte, checked, done bool, err error) {
	r, d := x.r, x.d
	if x.bodyRead {
		return x.body, true, false, nil
	}
	if r.Body == nil || r.Body == http.NoBody {
		x.bodyRead = true
		return nil, true, false, nil
	}
	refuse := func(status int, reason, decision string, fields ...zap.Field) ([]byte, bool, bool, error) {
		if x.shadow && status != http.StatusBadRequest {
			x.ev.Reason = "shadow: would be refused: " + reason
			return nil, false, false, nil
		}
		return nil, false, true, x.refuse(w, refusal{Status: status, Rule: d.RouteID, Reason: reason}, decision, fields...)
	}
	if cts := r.Header.Values("Content-Type"); len(cts) > 1 {
		// The guard would read one and the CRM perhaps the other.
		if x.shadow {
			x.ev.Reason = "shadow: would be refused: a request body with several Content-Type headers"
			return nil, false, false, nil
		}
		return refuse(http.StatusBadRequest, "Request bodies with more than one Content-Type header cannot be checked "+where+".", "deny")
	}
	if ce := contentCoding(r.Header); ce != "" {
		return refuse(http.StatusUnsupportedMediaType, "Request bodies with Content-Encoding "+ce+" cannot be checked "+where+"; send them uncompressed.", "deny")
	}
	limit := x.g.opt.MaxBody
	b, rerr := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if rerr != nil {
		return refuse(http.StatusBadRequest, "The request body could not be read.", "error", zap.Error(rerr))
	}
	if int64(len(b)) > limit {
		if x.shadow {
			// Never block: pass the whole body on, unchecked.
			r.Body = struct {
				io.Reader
				io.Closer
			}{io.MultiReader(bytes.NewReader(b), r.Body), r.Body}
			x.ev.Reason = fmt.Sprintf("shadow: would be refused: a request body over %d bytes", limit)
			return nil, false, false, nil
		}
		return refuse(http.StatusRequestEntityTooLarge, fmt.Sprintf("The request body is larger than %d bytes.", limit), "deny")
	}
	_ = r.Body.Close()
	r.Body = io.NopCloser(bytes.NewReader(b))
	r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
	r.ContentLength = int64(len(b))
	r.Header.Set("Content-Length", strconv.Itoa(len(b)))
	r.Header.Del("Transfer-Encoding")
	r.TransferEncoding = nil
	x.body, x.bodyRead = b, true
	return b, true, false, nil
}
