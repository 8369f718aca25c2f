package rules

import (
	"net/http"
	"net/url"
	"testing"
	"time"
)

// shanghaiWorkday is a Tuesday 10:00 in Asia/Shanghai (inside business_hours).
var shanghaiWorkday = time.Date(2026, 11, 24, 10, 0, 0, 0, time.FixedZone("CST", 8*3600))

func request(method, target string) *Request {
	u, err := url.ParseRequestURI(target)
	if err != nil {
		panic(err)
	}
	return &Request{Method: method, URL: u, Header: http.Header{}, Now: shanghaiWorkday}
}

func TestSmokeRewrite(t *testing.T) {
	s := loadExample(t)
	u := s.UserFromRoles("zhang", []string{"sales"}, map[string]any{"teams": []any{"east"}}, true, shanghaiWorkday.Add(-time.Minute))
	d := s.Decide(u, request("GET", "/api/customers"))
	if d.Outcome != Allow {
		t.Fatalf("%+v", d)
	}
	body := `{"list":[{"id":1,"owner_id":"zhang","phone":"13812345678","last_contact_at":"2026-10-01T00:00:00Z"},{"id":2,"owner_id":"li","team":"west","phone":"13812345678","last_contact_at":"2026-10-01T00:00:00Z"}]}`
	buf, blk := d.InspectResponse(200, http.Header{"Content-Type": {"application/json"}})
	out, blk2, err := d.Rewrite(nil, 200, nil, []byte(body))
	t.Logf("%v %v %s %v %v %+v", buf, blk, out, blk2, err, d.Audit)
}
