package rules

import (
	"fmt"
	"io"
	"net/http"

	"github.com/crmguard/crmguard/internal/mediatype"
	"github.com/crmguard/crmguard/rules/rewrite"
)

// MaxStreamRecord is the largest record (or table row) a streamed answer
// may hold.
const MaxStreamRecord = rewrite.DefaultMaxRecord

// MaxStreamedIDs bounds the record ids the audit event of a streamed
// answer names; Audit.RecordIDsOmitted counts the others.
const MaxStreamedIDs = 1000

// Streamable reports whether the answer InspectResponse asked to buffer
// may instead be rewritten while it streams (RewriteStream), when it is
// too large to hold: a 2xx JSON, CSV or TSV list on a `records` route
// whose `answer` fields (if any) only remove, not compressed, not in shadow mode, and either
// an export this user may run or a route without max_records (an answer
// max_records could refuse whole must be seen whole). Every other answer
// keeps the buffered path (and its max_body).
func (d *Decision) Streamable(status int, h http.Header) bool {
	rt := d.route
	if d.Outcome != Allow || d.Shadow || rt == nil || !rt.rewrites || rt.single || d.head() {
		return false
	}
	for _, f := range rt.answer {
		if f.action != "remove" {
			return false // only a removal is done while the answer streams
		}
	}
	if status < 200 || status > 299 || status == http.StatusNoContent || status == http.StatusPartialContent {
		return false
	}
	if rt.maxRec > 0 && !d.exportOK {
		return false
	}
	for _, v := range h.Values("Content-Encoding") {
		if v != "" && v != "identity" {
			return false
		}
	}
	t, err := mediatype.Lines(h["Content-Type"])
	return err == nil && t.Kind != mediatype.Sheet
}

// StreamCut is the error RewriteStream returns when the answer could not be
// rewritten to its end: what was written already was rewritten, the rest
// must not reach the client, and the client must see the answer is cut.
type StreamCut struct {
	// Records counts the records written before the cut.
	Records int
	// Err is what cut the answer.
	Err error
}

// Error says where and why the answer was cut.
func (c *StreamCut) Error() string {
	return fmt.Sprintf("the answer was cut after %d records: %v", c.Records, c.Err)
}

// Unwrap returns what cut the answer.
func (c *StreamCut) Unwrap() error { return c.Err }

// RewriteStream rewrites the answer read from body while it streams (the
// caller asked Streamable first), handing the rewritten bytes to write with
// the number of records each piece holds; an error from write (a usage
// limit refusing the next piece, the client gone) stops the stream. A
// record larger than maxRecord bytes stops it too. The audit counts what
// was written. Any error is a *StreamCut, also recorded in the audit
// (decision "cut").
func (d *Decision) RewriteStream(status int, h http.Header, body io.Reader, maxRecord int, write func(b []byte, records int) error) error {
	t, err := mediatype.Lines(h["Content-Type"])
	if err != nil || !d.Streamable(status, h) {
		return d.cut(0, fmt.Errorf("route %s: the answer cannot be rewritten as it streams", d.RouteID))
	}
	p, release, err := d.plan()
	if err != nil {
		return d.cut(0, fmt.Errorf("building the rewrite plan: %w", err))
	}
	defer release()
	if !p.Streams() {
		return d.cut(0, fmt.Errorf("route %s: the answer needs its answer fields and cannot be rewritten as it streams", d.RouteID))
	}
	var st rewrite.Stats
	// what the client received: the records and ids of the pieces write
	// took (st counts also those of a piece it refused)
	sent, ids, omitted := 0, 0, 0
	s := &rewrite.Stream{MaxRecord: maxRecord, MaxIDs: MaxStreamedIDs, Write: func(b []byte, records int) error {
		if err := write(b, records); err != nil {
			return err
		}
		sent, ids, omitted = sent+records, len(st.IDs), st.IDsOmitted
		return nil
	}}
	switch t.Kind {
	case mediatype.CSV:
		err = p.RewriteTableStream(s, body, ',', &st)
	case mediatype.TSV:
		err = p.RewriteTableStream(s, body, '\t', &st)
	default:
		err = p.RewriteStream(s, body, &st)
	}
	d.Audit.Streamed = true
	d.Audit.RecordsIn += st.RecordsIn
	d.Audit.EvalErrors += st.EvalErrors
	d.Audit.RecordIDs = append(d.Audit.RecordIDs, st.IDs[:ids]...)
	d.Audit.RecordIDsOmitted += omitted
	for k, v := range st.Fields {
		if d.Audit.Fields == nil {
			d.Audit.Fields = map[string]int{}
		}
		d.Audit.Fields[k] += v
	}
	d.Audit.RecordsOut += sent
	if err != nil {
		return d.cut(sent, err)
	}
	if rt := d.route; rt.maxRec > 0 && sent > rt.maxRec {
		d.Audit.Export.TooMany = true // an approved export (Streamable)
	}
	return nil
}

// cut records an answer cut after sent records and returns the cut.
func (d *Decision) cut(sent int, err error) error {
	d.Audit.Decision = "cut"
	d.Audit.Reason = fmt.Sprintf("route %s: the streamed answer was cut after %d records: %v", d.RouteID, sent, err)
	return &StreamCut{Records: sent, Err: err}
}
