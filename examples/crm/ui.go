package crm

import (
	"embed"
	"html/template"
	"net/http"
	"strconv"
	"strings"
)

//go:embed ui
var uiFiles embed.FS

var pages = template.Must(template.ParseFS(uiFiles, "ui/*.html"))

// shell is what the HTML pages are rendered with.
type shell struct {
	// User is the X-CRM-User the proxy sent ("" when called directly).
	User string
	// Roles is the X-CRM-Roles the proxy sent.
	Roles string
	// CustomerID is the customer of the sensitive-data page.
	CustomerID int
}

func (s *Server) uiRoutes() {
	s.mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		s.page(w, r, "index.html", shell{})
	})
	s.mux.HandleFunc("GET /customers/{id}/sensitive", func(w http.ResponseWriter, r *http.Request) {
		id, err := strconv.Atoi(r.PathValue("id"))
		if err != nil {
			http.Error(w, "customer id must be a number", http.StatusBadRequest)
			return
		}
		s.page(w, r, "sensitive.html", shell{CustomerID: id})
	})
	s.mux.HandleFunc("GET /static/{file}", func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("file")
		b, err := uiFiles.ReadFile("ui/" + name)
		if err != nil || strings.HasSuffix(name, ".html") {
			http.NotFound(w, r)
			return
		}
		switch {
		case strings.HasSuffix(name, ".js"):
			w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
		case strings.HasSuffix(name, ".css"):
			w.Header().Set("Content-Type", "text/css; charset=utf-8")
		}
		w.Header().Set("Cache-Control", "no-cache")
		_, _ = w.Write(b)
	})
}

func (s *Server) page(w http.ResponseWriter, r *http.Request, name string, data shell) {
	data.User, data.Roles = r.Header.Get("X-CRM-User"), r.Header.Get("X-CRM-Roles")
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if err := pages.ExecuteTemplate(w, name, data); err != nil {
		s.log.Printf("crm: rendering %s: %v", name, err)
	}
}
