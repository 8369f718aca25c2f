package caddymodule

import (
	"bytes"
	"compress/gzip"
	"compress/zlib"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/zstd"
)

func gz(b []byte) []byte {
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	_, _ = w.Write(b)
	_ = w.Close()
	return buf.Bytes()
}

func zl(b []byte) []byte {
	var buf bytes.Buffer
	w := zlib.NewWriter(&buf)
	_, _ = w.Write(b)
	_ = w.Close()
	return buf.Bytes()
}

func br(b []byte) []byte {
	var buf bytes.Buffer
	w := brotli.NewWriter(&buf)
	_, _ = w.Write(b)
	_ = w.Close()
	return buf.Bytes()
}

func zs(b []byte) []byte {
	enc, _ := zstd.NewWriter(nil)
	defer enc.Close()
	return enc.EncodeAll(b, nil)
}

func TestDecode(t *testing.T) {
	plain := []byte(`{"list":[]}`)
	tests := []struct {
		name     string
		encoding string
		body     []byte
		limit    int64
		want     string // the decoded body, when no error is expected
		wantIs   error  // an error errors.Is must find in the result
		wantText string // a phrase the error must hold
	}{
		{name: "no coding returns the body as it is", body: plain, want: string(plain)},
		{name: "identity returns the body as it is", encoding: "identity", body: plain, want: string(plain)},
		{name: "gzip then br are undone from the last listed", encoding: "gzip, br", body: br(gz(plain)), want: string(plain)},
		{name: "codings are read without regard to case or spacing", encoding: " GZIP ,Identity", body: gz(plain), want: string(plain)},
		{name: "a zlib-wrapped deflate body is decoded", encoding: "deflate", body: zl(plain), want: string(plain)},
		{name: "a zstd body is decoded", encoding: "zstd", body: zs(plain), want: string(plain)},
		{name: "a gzip body with a corrupt header wraps gzip's header error", encoding: "gzip", body: plain, wantIs: gzip.ErrHeader, wantText: "gzip coding is corrupt"},
		{name: "a gzip body cut short wraps the unexpected end of input", encoding: "gzip", body: gz(plain)[:20], wantIs: io.ErrUnexpectedEOF, wantText: "gzip coding is corrupt"},
		{name: "a gzip body with a wrong checksum wraps gzip's checksum error", encoding: "gzip", body: flipCRC(gz(plain)), wantIs: gzip.ErrChecksum, wantText: "gzip coding is corrupt"},
		{name: "a body that is not zstd wraps zstd's error", encoding: "zstd", body: plain, wantIs: zstd.ErrMagicMismatch, wantText: "zstd coding is corrupt"},
		{name: "a corrupt br body is an error naming br", encoding: "br", body: plain, wantText: "br coding is corrupt"},
		{name: "an unknown coding wraps errUnsupportedEncoding and names the coding", encoding: "compress", body: plain, wantIs: errUnsupportedEncoding, wantText: `"compress"`},
		{name: "an unknown coding under a known one is refused too", encoding: "compress, gzip", body: gz(plain), wantIs: errUnsupportedEncoding},
		{name: "a gzip bomb over the limit is refused naming the limit", encoding: "gzip", body: gz(bytes.Repeat([]byte(" "), 4096)), limit: 1024, wantText: "more than 1024 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			limit := tt.limit
			if limit == 0 {
				limit = DefaultMaxBody
			}
			got, err := decode(tt.encoding, tt.body, limit)
			if tt.wantIs == nil && tt.wantText == "" {
				if err != nil || string(got) != tt.want {
					t.Fatalf("decode(%q) = %q, %v; want %q", tt.encoding, got, err, tt.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("decode(%q) = %q, want an error", tt.encoding, got)
			}
			if got != nil {
				t.Errorf("decode(%q) returned %d bytes with its error", tt.encoding, len(got))
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("decode(%q): errors.Is(%q, %q) is false", tt.encoding, err, tt.wantIs)
			}
			if !strings.Contains(err.Error(), tt.wantText) {
				t.Errorf("decode(%q): error %q does not say %q", tt.encoding, err, tt.wantText)
			}
			if first, _ := utf8.DecodeRuneInString(err.Error()); !unicode.IsLower(first) {
				t.Errorf("decode(%q): error %q does not start in lower case", tt.encoding, err)
			}
		})
	}
}

// flipCRC returns a gzip stream whose CRC-32 trailer no longer matches.
func flipCRC(b []byte) []byte {
	b = bytes.Clone(b)
	b[len(b)-8] ^= 0xff
	return b
}

// TestDecodeErrorFeedsTheRefusal shows how a corrupt answer reads to the
// client: the refusal's reason frames decode's error.
func TestDecodeErrorFeedsTheRefusal(t *testing.T) {
	g, sink := newTestGuard(t, guardSetup{user: zhang})
	up := &upstream{header: http.Header{"Content-Type": {"application/json"}, "Content-Encoding": {"gzip"}}, body: []byte(customers)}
	rec := serve(t, g, httptest.NewRequest("GET", "/api/customers", nil), up)
	if rec.Code != http.StatusBadGateway {
		t.Fatalf("status: want 502, got %d: %s", rec.Code, rec.Body)
	}
	want := "The CRM's answer could not be checked: the gzip coding is corrupt: " + gzip.ErrHeader.Error()
	if ev := sink.last(t); ev.Reason != want {
		t.Errorf("audit reason:\nwant %q\ngot  %q", want, ev.Reason)
	}
	if !strings.Contains(rec.Body.String(), "the gzip coding is corrupt") {
		t.Errorf("the refusal does not say why: %s", rec.Body)
	}
}
