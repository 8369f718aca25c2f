package authn

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Challenge error codes (RFC 6750 section 3.1, RFC 9470 section 3). A
// request without credentials gets no error code in the header and
// ErrUnauthorized in the body.
const (
	ErrUnauthorized                   = "unauthorized"
	ErrInvalidToken                   = "invalid_token"
	ErrInsufficientUserAuthentication = "insufficient_user_authentication"
)

// WriteChallenge answers an API client whose sign-in is missing or too
// weak: 401, a Bearer WWW-Authenticate challenge (ChallengeHeader) and the
// JSON body {"error": ..., "reason": ...} with need.Reason in full. It is
// the one writer of this answer: the OIDC provider, the crm_guard handler
// without a provider and `crmguard rules test` all answer with it, so a
// test case's 401 is the server's. need.StepUp.ACR is what the challenge
// names; a provider with a default list fills it in before calling.
func WriteChallenge(w http.ResponseWriter, r *http.Request, need Need) {
	code, reason := challengeError(r, need)
	if need.Message != "" {
		// The body speaks to the user; the header keeps the reason.
		reason = need.Message
	}
	body, _ := json.Marshal(struct {
		Error  string `json:"error"`
		Reason string `json:"reason"`
	}{code, reason})
	body = append(body, '\n')
	h := w.Header()
	h.Set("WWW-Authenticate", ChallengeHeader(r, need))
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusUnauthorized)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}

// ChallengeHeader is the WWW-Authenticate value WriteChallenge sends:
//
//	Bearer realm="crmguard"                                   no credentials
//	Bearer realm="crmguard", error="invalid_token", error_description="..."
//	Bearer realm="crmguard", error="insufficient_user_authentication",
//	       error_description="...", acr_values="a b", max_age=300
//
// acr_values is sent when the sign-in lacks MFA and need.StepUp.ACR is not
// empty, max_age when need.StepUp.MaxAge is set. The value is one valid
// header line whatever the reason and acr values hold.
func ChallengeHeader(r *http.Request, need Need) string {
	code, reason := challengeError(r, need)
	var b strings.Builder
	b.WriteString(`Bearer realm="crmguard"`)
	if code == ErrUnauthorized {
		// RFC 6750 section 3.1: no error code when the request carries
		// no credentials.
		return b.String()
	}
	b.WriteString(`, error="` + code + `", error_description=`)
	writeQuoted(&b, description(reason))
	if code != ErrInsufficientUserAuthentication {
		return b.String()
	}
	if need.StepUp.MFA && len(need.StepUp.ACR) > 0 {
		b.WriteString(", acr_values=")
		writeQuoted(&b, strings.Join(need.StepUp.ACR, " "))
	}
	if need.StepUp.MaxAge > 0 {
		b.WriteString(", max_age=" + strconv.FormatInt(int64(need.StepUp.MaxAge/time.Second), 10))
	}
	return b.String()
}

// challengeError is the error code and the reason (need.Reason, or a
// default sentence) of a challenge.
func challengeError(r *http.Request, need Need) (code, reason string) {
	reason = need.Reason
	switch {
	case !need.SignIn:
		code = ErrInsufficientUserAuthentication
		if reason == "" {
			reason = "a stronger or more recent sign-in is required"
		}
	case hasBearer(r):
		code = ErrInvalidToken
		if reason == "" {
			reason = "the bearer token is invalid, expired or not for this service"
		}
	default:
		code = ErrUnauthorized
		if reason == "" {
			reason = "sign-in required"
		}
	}
	return code, reason
}

// hasBearer reports whether r carries an Authorization: Bearer header.
func hasBearer(r *http.Request) bool {
	scheme, _, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	return ok && strings.EqualFold(scheme, "bearer")
}

// description maps s to the characters RFC 6750 section 3 allows in
// error_description (%x20-21 / %x23-5B / %x5D-7E: printable ASCII without
// '"' and '\'): '"' becomes '\”, '\' becomes '/', control characters a
// space and every other character (non-ASCII, or a byte that is not
// UTF-8) '?'. The body's reason keeps the full text.
func description(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	for _, c := range s {
		switch {
		case c == '"':
			b.WriteByte('\'')
		case c == '\\':
			b.WriteByte('/')
		case c < 0x20 || c == 0x7f:
			b.WriteByte(' ')
		case c < 0x7f:
			b.WriteRune(c)
		default: // non-ASCII, and utf8.RuneError for each invalid byte
			b.WriteByte('?')
		}
	}
	return b.String()
}

// writeQuoted writes s as an HTTP quoted-string (RFC 9110 section 5.6.4):
// '"' and '\' as quoted-pairs; control characters, which have no
// representation in a header, as a space; a byte that is not UTF-8 as '?'.
// Other non-ASCII text is kept (obs-text), so an acr value is sent as the
// rule file spells it.
func writeQuoted(b *strings.Builder, s string) {
	b.WriteByte('"')
	for i := 0; i < len(s); {
		c, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(byte(c))
		case c < 0x20 || c == 0x7f:
			b.WriteByte(' ')
		case c == utf8.RuneError && size == 1:
			b.WriteByte('?')
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	b.WriteByte('"')
}
