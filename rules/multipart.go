package rules

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"strings"
)

// maxMultipartParts bounds the parts of a multipart body the proxy reads:
// more is refused rather than judged in part.
const maxMultipartParts = 10000

// formPart is one field of a multipart/form-data body.
type formPart struct {
	// name is the field name of the part's Content-Disposition (file
	// uploads included).
	name string
	// part reads the value (quoted-printable already decoded).
	part *multipart.Part
}

// eachFormPart calls fn for every part of a multipart/form-data body, in
// order, until fn returns stop or an error. A body the proxy cannot read
// with certainty is an error: no boundary, a malformed part, a part whose
// Content-Disposition is missing, repeated or unreadable (a server reading
// the second name, or the last of two name parameters, would see another
// field than the proxy), more than maxMultipartParts parts.
func eachFormPart(boundary string, body []byte, fn func(p formPart) (stop bool, err error)) error {
	if boundary == "" {
		return errors.New("the multipart body has no boundary parameter")
	}
	mr := multipart.NewReader(bytes.NewReader(body), boundary)
	for n := 0; ; n++ {
		part, err := mr.NextPart()
		if err == io.EOF {
			// The reader also ends quietly when the body stops right
			// after a boundary line: a cut-short body is refused.
			if !closed(body, boundary) {
				return errors.New("the multipart body ends before its closing boundary")
			}
			return nil
		}
		if err != nil {
			return fmt.Errorf("the multipart body cannot be read: %w", err)
		}
		if n == maxMultipartParts {
			return fmt.Errorf("the multipart body has more than %d parts", maxMultipartParts)
		}
		cds := part.Header.Values("Content-Disposition")
		if len(cds) != 1 {
			return fmt.Errorf("part %d of the multipart body has %d Content-Disposition lines, not one", n+1, len(cds))
		}
		disp, dp, err := mime.ParseMediaType(cds[0])
		if err != nil {
			return fmt.Errorf("the Content-Disposition of part %d of the multipart body cannot be read: %w", n+1, err)
		}
		if !strings.EqualFold(disp, "form-data") {
			return fmt.Errorf("part %d of the multipart body is %q, not form-data", n+1, disp)
		}
		stop, err := fn(formPart{name: dp["name"], part: part})
		if err != nil || stop {
			return err
		}
	}
}

// closed reports whether body holds the closing boundary line of a
// multipart body ("--boundary--" at the start of a line).
func closed(body []byte, boundary string) bool {
	end := []byte("--" + boundary + "--")
	for off := 0; ; {
		i := bytes.Index(body[off:], end)
		if i < 0 {
			return false
		}
		if at := off + i; at == 0 || body[at-1] == '\n' {
			return true
		}
		off += i + 1
	}
}

// isMethodField reports a form field name that frameworks read as the
// _method override (any case, PHP's leading-space and dot rules).
func isMethodField(name string) bool {
	return strings.EqualFold(phpFormName(name), "_method") || strings.EqualFold(strings.TrimSpace(name), "_method")
}
