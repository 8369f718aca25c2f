package caddymodule

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestRefusalsShowTheUsersMessageAndKeepTheTechnicalReasonOut(t *testing.T) {
	f := refusal{Status: http.StatusForbidden, Rule: "customers.export",
		Reason:  "route customers.export: the condition `in_schedule(\"business_hours\")` does not hold",
		Message: "Exports are open Monday to Friday, 08:00-20:00 (Asia/Shanghai)."}
	t.Run("an API client gets the message as the reason, with the rule", func(t *testing.T) {
		rec := httptest.NewRecorder()
		writeRefusal(rec, httptest.NewRequest("GET", "/api/customers/export", nil), f)
		var got struct{ Error, Rule, Reason string }
		if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
			t.Fatal(err)
		}
		if got.Error != "forbidden" || got.Rule != "customers.export" || got.Reason != f.Message {
			t.Errorf("refusal %s", rec.Body.Bytes())
		}
		if strings.Contains(rec.Body.String(), "in_schedule") || strings.Contains(rec.Body.String(), `\"`) {
			t.Errorf("the technical reason reached the client: %s", rec.Body.Bytes())
		}
	})
	t.Run("a browser gets a page with the message and the rule id in small print", func(t *testing.T) {
		rec := httptest.NewRecorder()
		r := httptest.NewRequest("GET", "/api/customers/export", nil)
		r.Header.Set("Accept", "text/html")
		writeRefusal(rec, r, f)
		page := rec.Body.String()
		if !strings.Contains(page, "<p>Exports are open Monday to Friday, 08:00-20:00 (Asia/Shanghai).</p>") ||
			!strings.Contains(page, "<small>") || !strings.Contains(page, "<code>customers.export</code>") {
			t.Errorf("page %s", page)
		}
		if strings.Contains(page, "in_schedule") {
			t.Errorf("the technical reason is on the page: %s", page)
		}
	})
	t.Run("a refusal without a message shows its reason", func(t *testing.T) {
		rec := httptest.NewRecorder()
		writeRefusal(rec, httptest.NewRequest("GET", "/", nil), refusal{Status: http.StatusServiceUnavailable, Reason: "No rule set is loaded."})
		if !strings.Contains(rec.Body.String(), `"reason":"No rule set is loaded."`) {
			t.Errorf("refusal %s", rec.Body.Bytes())
		}
	})
}
