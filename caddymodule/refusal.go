package caddymodule

import (
	"encoding/json"
	"html/template"
	"net/http"
	"strconv"
	"strings"
)

// refusal is an answer the proxy writes itself instead of the CRM's.
type refusal struct {
	// Status is the HTTP status.
	Status int
	// Error is a short machine-readable code ("forbidden", "bad_gateway").
	Error string
	// Rule is the id of the rule that decided ("" when none did).
	Rule string
	// Reason is a sentence a person can read: the technical reason, for
	// the audit event (the client gets Message).
	Reason string
	// Message is the sentence for the user (rules' Decision.Message); ""
	// when Reason is already written for the user.
	Message string
	// Approval is the page where the user asks for the approval this
	// request lacks ("" when none can be asked for).
	Approval string
	// Change is true when Approval asks for a write's approval (bound to
	// the values it sets), false for an export's.
	Change bool
}

// errorCode is the "error" value of a refusal with the given status.
func errorCode(status int) string {
	switch status {
	case http.StatusBadRequest:
		return "bad_request"
	case http.StatusUnauthorized:
		return "unauthorized"
	case http.StatusForbidden:
		return "forbidden"
	case http.StatusNotFound:
		return "not_found"
	case http.StatusRequestEntityTooLarge:
		return "request_too_large"
	case http.StatusUnsupportedMediaType:
		return "unsupported_media_type"
	case http.StatusBadGateway:
		return "bad_gateway"
	case http.StatusServiceUnavailable:
		return "unavailable"
	}
	return strings.ToLower(strings.ReplaceAll(http.StatusText(status), " ", "_"))
}

// wantsHTML reports whether the client is a browser that prefers a page
// over JSON: its Accept header names text/html before (or without) JSON.
func wantsHTML(r *http.Request) bool {
	accept := r.Header.Get("Accept")
	html := strings.Index(accept, "text/html")
	if html < 0 {
		return false
	}
	jsonAt := strings.Index(accept, "application/json")
	return jsonAt < 0 || html < jsonAt
}

var refusalPage = template.Must(template.New("refusal").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.Status}} {{.Title}}</title>
<style>body{font-family:system-ui,sans-serif;max-width:38em;margin:4em auto;padding:0 1em;color:#222}
h1{font-size:1.4em}code{background:#f2f2f2;padding:0 .3em}</style></head>
<body><h1>{{.Title}}</h1><p>{{.Message}}</p>
{{if .Approval}}<p><a href="{{.Approval}}" id="request-approval">Ask for approval of this {{if .Change}}change{{else}}export{{end}}</a></p>{{end}}
{{if .Rule}}<p><small>If you think you should have access, ask your CRM administrator and quote the rule <code>{{.Rule}}</code>.</small></p>{{end}}
</body></html>
`))

// writeRefusal answers with f, as JSON {"error","rule","reason"} (and
// "request_approval", the page where the missing approval is asked for,
// when there is one) for API
// clients and as a short page for browsers. Both say f.Message (f.Reason
// when there is none), in words for the user, and the rule id (small on
// the page); the technical reason stays in the audit event. Headers the upstream may have
// set are dropped first (the caller restores the pre-upstream set).
func writeRefusal(w http.ResponseWriter, r *http.Request, f refusal) {
	h := w.Header()
	for _, k := range []string{"Content-Encoding", "Content-Length", "ETag", "Last-Modified", "Accept-Ranges", "Content-Range", "Content-Disposition"} {
		h.Del(k)
	}
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	if f.Error == "" {
		f.Error = errorCode(f.Status)
	}
	if f.Message == "" {
		f.Message = f.Reason
	}
	var body []byte
	if wantsHTML(r) {
		h.Set("Content-Type", "text/html; charset=utf-8")
		var sb strings.Builder
		_ = refusalPage.Execute(&sb, struct {
			Status   int
			Title    string
			Rule     string
			Message  string
			Approval string
			Change   bool
		}{f.Status, http.StatusText(f.Status), f.Rule, f.Message, f.Approval, f.Change})
		body = []byte(sb.String())
	} else {
		h.Set("Content-Type", "application/json")
		body, _ = json.Marshal(struct {
			Error    string `json:"error"`
			Rule     string `json:"rule"`
			Reason   string `json:"reason"`
			Approval string `json:"request_approval,omitempty"`
		}{f.Error, f.Rule, f.Message, f.Approval})
		body = append(body, '\n')
	}
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(f.Status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}
