package authn

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/crmguard/crmguard/rules"
)

func TestWriteChallenge(t *testing.T) {
	for _, c := range []struct {
		name   string
		method string
		auth   string
		need   Need
		header string
		body   string
	}{
		{name: "a request without credentials gets the realm alone and error unauthorized in the body",
			need:   Need{SignIn: true, Reason: "route customers.list needs a signed-in user"},
			header: `Bearer realm="crmguard"`,
			body:   `{"error":"unauthorized","reason":"route customers.list needs a signed-in user"}`},
		{name: "a sign-in need says nothing about step-up even when the route asks for MFA",
			need:   Need{SignIn: true, StepUp: rules.StepUpNeed{MFA: true, MaxAge: time.Hour, ACR: []string{"urn:mfa"}}},
			header: `Bearer realm="crmguard"`,
			body:   `{"error":"unauthorized","reason":"sign-in required"}`},
		{name: "a Basic authorization header counts as no credentials", auth: "Basic dTpw",
			need:   Need{SignIn: true, Reason: "r"},
			header: `Bearer realm="crmguard"`,
			body:   `{"error":"unauthorized","reason":"r"}`},
		{name: "a refused bearer token gets invalid_token", auth: "Bearer abc",
			need:   Need{SignIn: true},
			header: `Bearer realm="crmguard", error="invalid_token", error_description="the bearer token is invalid, expired or not for this service"`,
			body:   `{"error":"invalid_token","reason":"the bearer token is invalid, expired or not for this service"}`},
		{name: "the bearer scheme is matched without regard to case", auth: "bEaReR abc",
			need:   Need{SignIn: true, Reason: "bad token"},
			header: `Bearer realm="crmguard", error="invalid_token", error_description="bad token"`,
			body:   `{"error":"invalid_token","reason":"bad token"}`},
		{name: "a sign-in without MFA gets insufficient_user_authentication with the acr values",
			need:   Need{StepUp: rules.StepUpNeed{MFA: true, ACR: []string{"urn:example:mfa", "phr"}}, Reason: "this sign-in did not use multi-factor authentication"},
			header: `Bearer realm="crmguard", error="insufficient_user_authentication", error_description="this sign-in did not use multi-factor authentication", acr_values="urn:example:mfa phr"`,
			body:   `{"error":"insufficient_user_authentication","reason":"this sign-in did not use multi-factor authentication"}`},
		{name: "a sign-in without MFA and no acr values gets no acr_values parameter",
			need:   Need{StepUp: rules.StepUpNeed{MFA: true}},
			header: `Bearer realm="crmguard", error="insufficient_user_authentication", error_description="a stronger or more recent sign-in is required"`,
			body:   `{"error":"insufficient_user_authentication","reason":"a stronger or more recent sign-in is required"}`},
		{name: "an old sign-in with MFA gets max_age in seconds and no acr values",
			need:   Need{StepUp: rules.StepUpNeed{MaxAge: 5 * time.Minute, ACR: []string{"urn:mfa"}}, Reason: "too old"},
			header: `Bearer realm="crmguard", error="insufficient_user_authentication", error_description="too old", max_age=300`,
			body:   `{"error":"insufficient_user_authentication","reason":"too old"}`},
		{name: "a sign-in lacking both gets acr_values and max_age", auth: "Bearer abc",
			need:   Need{StepUp: rules.StepUpNeed{MFA: true, MaxAge: 90 * time.Second, ACR: []string{"gold"}}, Reason: "r"},
			header: `Bearer realm="crmguard", error="insufficient_user_authentication", error_description="r", acr_values="gold", max_age=90`,
			body:   `{"error":"insufficient_user_authentication","reason":"r"}`},
		{name: "a HEAD request gets the headers and no body", method: http.MethodHead,
			need:   Need{SignIn: true, Reason: "r"},
			header: `Bearer realm="crmguard"`,
			body:   `{"error":"unauthorized","reason":"r"}`},
	} {
		t.Run(c.name, func(t *testing.T) {
			method := c.method
			if method == "" {
				method = http.MethodGet
			}
			req := httptest.NewRequest(method, "/api/x", nil)
			if c.auth != "" {
				req.Header.Set("Authorization", c.auth)
			}
			rec := httptest.NewRecorder()
			WriteChallenge(rec, req, c.need)
			if rec.Code != http.StatusUnauthorized {
				t.Errorf("status: want 401, got %d", rec.Code)
			}
			if got := rec.Header().Values("WWW-Authenticate"); len(got) != 1 || got[0] != c.header {
				t.Errorf("WWW-Authenticate:\nwant %q\ngot  %q", c.header, got)
			}
			if got := ChallengeHeader(req, c.need); got != c.header {
				t.Errorf("ChallengeHeader:\nwant %q\ngot  %q", c.header, got)
			}
			wantBody := c.body + "\n"
			if method == http.MethodHead {
				wantBody = ""
			}
			if got := rec.Body.String(); got != wantBody {
				t.Errorf("body:\nwant %q\ngot  %q", wantBody, got)
			}
			for name, want := range map[string]string{
				"Content-Type":           "application/json",
				"Cache-Control":          "no-store",
				"X-Content-Type-Options": "nosniff",
				"Content-Length":         fmt.Sprint(len(c.body) + 1),
			} {
				if got := rec.Header().Get(name); got != want {
					t.Errorf("%s: want %q, got %q", name, want, got)
				}
			}
		})
	}
}

// oddValues are reasons (which carry rule ids and request paths) and acr
// values an attacker or a careless rule file could put into a challenge.
var oddValues = []struct {
	name string
	s    string
}{
	{"a double quote that would end the quoted-string", `customers."list`},
	{"a parameter injection", `x", error="invalid_request", realm="evil`},
	{"a backslash before the closing quote", `route\`},
	{"backslashes and quotes mixed", `a\"b\\"c\\\`},
	{"CR LF that would start a new header", "x\r\nSet-Cookie: crmguard_session=evil"},
	{"a lone LF", "x\ny"},
	{"a NUL byte", "x\x00y"},
	{"a tab and DEL", "x\ty\x7fz"},
	{"Chinese text", "路由 客户.敏感 需要登录"},
	{"an emoji", "route 🔒 needs MFA"},
	{"a byte that is not UTF-8", "x\xffy\xc3"},
	{"a C1 control character", "x\u0085y"},
	{"an empty value", ""},
	{"a long value", strings.Repeat(`"\`, 2000)},
}

func TestChallengeWithOddValues(t *testing.T) {
	for _, v := range oddValues {
		for _, c := range []struct {
			kind string
			auth string
			need Need
		}{
			{"in the reason of a refused token", "Bearer abc", Need{SignIn: true, Reason: v.s}},
			{"in the reason of a step-up", "", Need{StepUp: rules.StepUpNeed{MFA: true, ACR: []string{"urn:mfa"}}, Reason: v.s}},
			{"in an acr value", "", Need{StepUp: rules.StepUpNeed{MFA: true, MaxAge: time.Minute, ACR: []string{"urn:mfa", v.s}}, Reason: "MFA needed"}},
		} {
			t.Run(v.name+" "+c.kind+" keeps the header one valid challenge and the body valid JSON", func(t *testing.T) {
				req := httptest.NewRequest(http.MethodGet, "/api/x", nil)
				if c.auth != "" {
					req.Header.Set("Authorization", c.auth)
				}
				rec := httptest.NewRecorder()
				WriteChallenge(rec, req, c.need)
				h := rec.Header().Values("WWW-Authenticate")
				if len(h) != 1 {
					t.Fatalf("want one WWW-Authenticate, got %q", h)
				}
				params, err := parseChallenge(h[0])
				if err != nil {
					t.Fatalf("%v in %q", err, h[0])
				}
				checkParams(t, params, c.need)
				if len(rec.Header()) != 5 {
					t.Errorf("headers: want the 5 the writer sets, got %d", len(rec.Header()))
				}

				body := rec.Body.Bytes()
				if !json.Valid(body) {
					t.Fatalf("body is not JSON: %q", body)
				}
				var got map[string]string
				if err := json.Unmarshal(body, &got); err != nil {
					t.Fatalf("body: %v: %q", err, body)
				}
				if len(got) != 2 || got["error"] == "" {
					t.Errorf("body: want error and reason, got %q", body)
				}
				if utf8.ValidString(c.need.Reason) && c.need.Reason != "" && got["reason"] != c.need.Reason {
					t.Errorf("body reason: want %q, got %q", c.need.Reason, got["reason"])
				}
				if !utf8.ValidString(got["reason"]) {
					t.Errorf("body reason is not UTF-8: %q", got["reason"])
				}
			})
		}
	}
}

// checkParams checks a parsed challenge against need: the parameters RFC
// 6750 and RFC 9470 name, once each and in order; error_description in
// RFC 6750's character set; acr_values carrying every value that a header
// can carry exactly as given.
func checkParams(t *testing.T, params []param, need Need) {
	t.Helper()
	names := make([]string, len(params))
	values := map[string]string{}
	for i, p := range params {
		names[i] = p.name
		values[p.name] = p.value
	}
	want := []string{"realm", "error", "error_description"}
	if !need.SignIn {
		if need.StepUp.MFA && len(need.StepUp.ACR) > 0 {
			want = append(want, "acr_values")
		}
		if need.StepUp.MaxAge > 0 {
			want = append(want, "max_age")
		}
	}
	if strings.Join(names, " ") != strings.Join(want, " ") {
		t.Fatalf("parameters: want %v, got %v", want, names)
	}
	if values["realm"] != "crmguard" {
		t.Errorf("realm: got %q", values["realm"])
	}
	if e := values["error"]; e != ErrInvalidToken && e != ErrInsufficientUserAuthentication {
		t.Errorf("error: got %q", e)
	}
	for _, c := range []byte(values["error_description"]) {
		if c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			t.Errorf("error_description holds %q, outside RFC 6750's set: %q", c, values["error_description"])
			break
		}
	}
	if need.StepUp.MaxAge > 0 && values["max_age"] != fmt.Sprint(int(need.StepUp.MaxAge/time.Second)) {
		t.Errorf("max_age: got %q", values["max_age"])
	}
	if acr, ok := values["acr_values"]; ok {
		joined := strings.Join(need.StepUp.ACR, " ")
		representable := utf8.ValidString(joined) && !strings.ContainsFunc(joined, func(r rune) bool { return r < 0x20 || r == 0x7f })
		if representable && acr != joined {
			t.Errorf("acr_values: want %q, got %q", joined, acr)
		}
		if !representable && !strings.HasPrefix(acr, "urn:mfa ") {
			t.Errorf("acr_values lost the value before the odd one: %q", acr)
		}
	}
}

// param is one auth-param of a challenge, its value unquoted.
type param struct{ name, value string }

// parseChallenge parses a Bearer challenge strictly (RFC 9110 section
// 11.2: auth-scheme 1*SP auth-param *( OWS "," OWS auth-param ), values a
// token or a quoted-string, no control characters anywhere).
func parseChallenge(h string) ([]param, error) {
	rest, ok := strings.CutPrefix(h, "Bearer ")
	if !ok {
		return nil, fmt.Errorf("no Bearer scheme")
	}
	var params []param
	for {
		i := 0
		for i < len(rest) && isTchar(rest[i]) {
			i++
		}
		if i == 0 || i == len(rest) || rest[i] != '=' {
			return nil, fmt.Errorf("bad parameter name at %q", rest)
		}
		p := param{name: rest[:i]}
		rest = rest[i+1:]
		if strings.HasPrefix(rest, `"`) {
			var b strings.Builder
			j := 1
			for ; j < len(rest) && rest[j] != '"'; j++ {
				c := rest[j]
				if c == '\\' {
					j++
					if j == len(rest) {
						return nil, fmt.Errorf("quoted-pair at the end")
					}
					c = rest[j]
				}
				if (c < 0x20 && c != '\t') || c == 0x7f {
					return nil, fmt.Errorf("control character %q in a quoted-string", c)
				}
				b.WriteByte(c)
			}
			if j == len(rest) {
				return nil, fmt.Errorf("unterminated quoted-string")
			}
			p.value, rest = b.String(), rest[j+1:]
		} else {
			j := 0
			for j < len(rest) && isTchar(rest[j]) {
				j++
			}
			if j == 0 {
				return nil, fmt.Errorf("empty token value for %s", p.name)
			}
			p.value, rest = rest[:j], rest[j:]
		}
		params = append(params, p)
		if rest == "" {
			return params, nil
		}
		if !strings.HasPrefix(rest, ", ") {
			return nil, fmt.Errorf("want \", \" between parameters, got %q", rest)
		}
		rest = rest[2:]
	}
}

func isTchar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// TestChallengeOverHTTP sends challenges with odd values (given in the
// query, so that any byte reaches the writer) through real HTTP/1.1 and
// HTTP/2 servers: the client gets one intact WWW-Authenticate (an HTTP/2
// server drops a header it finds invalid) and no header the values tried
// to add.
func TestChallengeOverHTTP(t *testing.T) {
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		v := r.URL.Query().Get("v")
		WriteChallenge(w, r, Need{StepUp: rules.StepUpNeed{MFA: true, ACR: []string{"urn:mfa", v}}, Reason: "no route matches " + v})
	})
	h1 := httptest.NewServer(handler)
	defer h1.Close()
	h2 := httptest.NewUnstartedServer(handler)
	h2.EnableHTTP2 = true
	h2.StartTLS()
	defer h2.Close()
	for _, srv := range []struct {
		proto int
		srv   *httptest.Server
	}{{1, h1}, {2, h2}} {
		for _, v := range oddValues {
			t.Run(fmt.Sprintf("%s arrives as one valid challenge over HTTP/%d", v.name, srv.proto), func(t *testing.T) {
				resp, err := srv.srv.Client().Get(srv.srv.URL + "/api/x?v=" + url.QueryEscape(v.s))
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				if resp.ProtoMajor != srv.proto {
					t.Fatalf("want HTTP/%d, got %s", srv.proto, resp.Proto)
				}
				checkArrived(t, resp)
			})
		}
	}
}

func checkArrived(t *testing.T, resp *http.Response) {
	t.Helper()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("status %d", resp.StatusCode)
	}
	h := resp.Header.Values("WWW-Authenticate")
	if len(h) != 1 {
		t.Fatalf("want one WWW-Authenticate, got %q", h)
	}
	params, err := parseChallenge(h[0])
	if err != nil {
		t.Fatalf("%v in %q", err, h[0])
	}
	if len(params) != 4 || params[3].name != "acr_values" || !strings.HasPrefix(params[3].value, "urn:mfa ") {
		t.Errorf("params: %q", params)
	}
	if resp.Header.Get("Set-Cookie") != "" {
		t.Errorf("a value added a Set-Cookie header: %q", resp.Header.Get("Set-Cookie"))
	}
	var body map[string]string
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || body["error"] != ErrInsufficientUserAuthentication {
		t.Errorf("body: %v %v", body, err)
	}
}
