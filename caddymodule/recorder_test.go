package caddymodule

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestRecorder(t *testing.T) {
	tests := []struct {
		name        string
		buffer      bool
		limit       int64
		pass        bool
		write       func(rr *recorder) error
		wantClient  string // bytes the client got
		wantCode    int    // status the client got (0: none yet)
		wantBuf     string
		wantOverflw bool
	}{
		{name: "a streamed answer goes straight to the client", buffer: false, limit: 10,
			write: func(rr *recorder) error {
				rr.WriteHeader(201)
				_, err := rr.Write([]byte("hello world, longer than the limit"))
				return err
			},
			wantClient: "hello world, longer than the limit", wantCode: 201},
		{name: "a buffered answer reaches nobody until the guard writes it", buffer: true, limit: 100,
			write: func(rr *recorder) error {
				rr.WriteHeader(200)
				_, err := rr.Write([]byte("secret"))
				_ = rr.FlushError() // a flush must not leak the header or the body
				return err
			},
			wantBuf: "secret"},
		{name: "io.Copy into a buffered answer respects the limit", buffer: true, limit: 8,
			write: func(rr *recorder) error {
				rr.WriteHeader(200)
				_, err := io.Copy(rr, strings.NewReader("0123456789abcdef"))
				return err
			},
			wantOverflw: true},
		{name: "a buffered answer over the limit is dropped, not sent", buffer: true, limit: 4,
			write: func(rr *recorder) error {
				rr.WriteHeader(200)
				if _, err := rr.Write([]byte("abc")); err != nil {
					return err
				}
				_, err := rr.Write([]byte("defgh"))
				return err
			},
			wantOverflw: true},
		{name: "in shadow mode an answer over the limit streams through whole", buffer: true, limit: 4, pass: true,
			write: func(rr *recorder) error {
				rr.WriteHeader(200)
				if _, err := rr.Write([]byte("abc")); err != nil {
					return err
				}
				_, err := rr.Write([]byte("defgh"))
				return err
			},
			wantClient: "abcdefgh", wantCode: 200, wantOverflw: true},
		{name: "an informational answer always passes", buffer: true, limit: 4,
			write:    func(rr *recorder) error { rr.WriteHeader(103); return nil },
			wantCode: 103},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client := httptest.NewRecorder()
			client.Code = 0
			var buf bytes.Buffer
			rr := newRecorder(client, &buf, tt.limit, func(int, http.Header) bool { return tt.buffer })
			rr.passOnOverflow = tt.pass
			err := tt.write(rr)
			if tt.wantOverflw != rr.overflow {
				t.Errorf("overflow: want %v, got %v", tt.wantOverflw, rr.overflow)
			}
			if tt.wantOverflw && !tt.pass && !errors.Is(err, errAnswerTooLarge) {
				t.Errorf("want errAnswerTooLarge, got %v", err)
			}
			if got := client.Body.String(); got != tt.wantClient {
				t.Errorf("client got %q, want %q", got, tt.wantClient)
			}
			if client.Code != tt.wantCode {
				t.Errorf("client status %d, want %d", client.Code, tt.wantCode)
			}
			if tt.wantBuf != "" && buf.String() != tt.wantBuf {
				t.Errorf("buffer %q, want %q", buf.String(), tt.wantBuf)
			}
			if tt.buffer && !tt.pass && tt.wantCode == 0 && client.Flushed {
				t.Errorf("a flush reached the client while buffering")
			}
		})
	}
}
