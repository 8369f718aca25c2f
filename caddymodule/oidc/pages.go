package oidc

import (
	"encoding/json"
	"html/template"
	"net/http"
)

var pageTmpl = template.Must(template.New("page").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>{{.Title}}</title>
<style>body{font-family:system-ui,sans-serif;max-width:36em;margin:3em auto;padding:0 1em;line-height:1.5}</style>
</head><body>
<h1 id="title">{{.Title}}</h1>
<p id="message">{{.Message}}</p>
{{if .Form}}<form method="post" action="{{.Form}}">
<input type="hidden" name="csrf" value="{{.CSRF}}">
<button type="submit" id="confirm">{{.Button}}</button>
</form>{{end}}
{{if .Link}}<p><a href="{{.Link}}" id="link">{{.LinkText}}</a></p>{{end}}
</body></html>`))

// page is a small HTML answer of the proxy itself.
type page struct {
	Title, Message string
	Link, LinkText string
	Form, CSRF     string
	Button         string
}

func writePage(w http.ResponseWriter, status int, pg page) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'")
	w.WriteHeader(status)
	_ = pageTmpl.Execute(w, pg)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// unavailable answers 503 because the provider cannot be reached.
func (p *Provider) unavailable(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Retry-After", "10")
	if isBrowser(r) {
		writePage(w, http.StatusServiceUnavailable, page{
			Title:   "Sign-in is unavailable",
			Message: "The identity provider cannot be reached at the moment. Please try again in a minute; if this persists, tell your administrator.",
			Link:    safeReturn(r.URL.RequestURI()), LinkText: "Try again",
		})
		return
	}
	writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "identity_provider_unavailable", "reason": "the identity provider cannot be reached"})
}
