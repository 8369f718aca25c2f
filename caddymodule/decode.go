package caddymodule

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/zstd"
)

// errUnsupportedEncoding is wrapped by decode's error for a content coding
// the guard cannot decode; the answer is refused (fail closed).
var errUnsupportedEncoding = errors.New("the proxy cannot decode content coding")

// decode undoes the content codings of an answer (gzip, deflate, br, zstd,
// in the reverse of the order listed), capping the decoded size at limit.
// Any other coding is an error: the answer is refused, never passed raw.
// Errors are phrases for a refusal's reason ("... cannot be checked: " +
// err) and wrap what the decoder said (errors.Is(err, gzip.ErrHeader)) or
// errUnsupportedEncoding.
func decode(encoding string, body []byte, limit int64) ([]byte, error) {
	if encoding == "" {
		return body, nil
	}
	codings := strings.Split(encoding, ",")
	for i := len(codings) - 1; i >= 0; i-- {
		c := strings.ToLower(strings.TrimSpace(codings[i]))
		var rd io.Reader
		switch c {
		case "identity", "":
			continue
		case "gzip", "x-gzip":
			zr, err := gzip.NewReader(bytes.NewReader(body))
			if err != nil {
				return nil, fmt.Errorf("the gzip coding is corrupt: %w", err)
			}
			rd = zr
		case "deflate":
			// HTTP deflate is zlib-wrapped; some servers send raw deflate.
			if zr, err := zlib.NewReader(bytes.NewReader(body)); err == nil {
				rd = zr
			} else {
				rd = flate.NewReader(bytes.NewReader(body))
			}
		case "br":
			rd = brotli.NewReader(bytes.NewReader(body))
		case "zstd":
			zr, err := zstd.NewReader(bytes.NewReader(body), zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(uint64(limit)+1))
			if err != nil {
				return nil, fmt.Errorf("the zstd coding is corrupt: %w", err)
			}
			defer zr.Close()
			rd = zr
		default:
			return nil, fmt.Errorf("%w %q", errUnsupportedEncoding, c)
		}
		decoded, err := io.ReadAll(io.LimitReader(rd, limit+1))
		if err != nil {
			return nil, fmt.Errorf("the %s coding is corrupt: %w", c, err)
		}
		if int64(len(decoded)) > limit {
			return nil, fmt.Errorf("the answer decodes to more than %d bytes", limit)
		}
		body = decoded
	}
	return body, nil
}

// contentCoding returns the request's Content-Encoding when any of its
// lines names a coding other than identity ("" otherwise): a first line
// "identity" must not hide a second "gzip".
func contentCoding(h http.Header) string {
	for _, line := range h["Content-Encoding"] {
		for _, c := range strings.Split(line, ",") {
			if c = strings.TrimSpace(c); c != "" && !strings.EqualFold(c, "identity") {
				return strings.Join(h["Content-Encoding"], ", ")
			}
		}
	}
	return ""
}
