package caddymodule

import (
	"net/http"
	"reflect"
	"testing"
)

func TestScrubSetCookies(t *testing.T) {
	s := newHeaderScrubber(nil, []string{DefaultCookiePrefix})
	own := DefaultCookiePrefix + "session=attacker; Path=/"
	tests := []struct {
		name  string
		lines []string
		keep  []string
		want  []string
	}{
		{name: "a CRM cookie passes", lines: []string{"crm_lang=zh; Path=/"}, want: []string{"crm_lang=zh; Path=/"}},
		{name: "the proxy's cookie set by the CRM is dropped", lines: []string{own, "crm_lang=zh"}, want: []string{"crm_lang=zh"}},
		{name: "a __Host- prefixed proxy cookie set by the CRM is dropped", lines: []string{"__Host-" + own}, want: nil},
		{name: "a proxy cookie in another case is dropped", lines: []string{"CRMGUARD_x=1"}, want: nil},
		{name: "a proxy cookie the proxy itself set before the upstream answered stays", lines: []string{own}, keep: []string{own}, want: []string{own}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{"Set-Cookie": append([]string(nil), tt.lines...)}
			s.scrubSetCookies(h, tt.keep)
			if got := h["Set-Cookie"]; !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
}
