package oidc

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sync"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
)

func init() {
	caddy.RegisterModule(AdminAPI{})
}

// live are the providers of the running configuration(s), for the admin
// API.
var live = struct {
	sync.Mutex
	m map[*Provider]struct{}
}{m: map[*Provider]struct{}{}}

func register(p *Provider) {
	live.Lock()
	defer live.Unlock()
	live.m[p] = struct{}{}
}

func unregister(p *Provider) {
	live.Lock()
	defer live.Unlock()
	delete(live.m, p)
}

// AdminAPI is the Caddy admin API module admin.api.crm_guard. It serves
//
//	POST /crm_guard/revoke  {"sub": "<subject>"} or {"sid": "<provider session id>"}
//
// which ends every matching session in every crm_guard session store of
// the running configuration ("employee left", "phone lost") and answers
// {"revoked": <count>}. A revoked session stops working at its next
// request on every instance that shares the store.
type AdminAPI struct{}

// CaddyModule returns the Caddy module information.
func (AdminAPI) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.crm_guard",
		New: func() caddy.Module { return new(AdminAPI) },
	}
}

// Routes returns the admin routes.
func (a AdminAPI) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{{Pattern: "/crm_guard/revoke", Handler: caddy.AdminHandlerFunc(a.revoke)}}
}

// RevokeRequest is the body of POST /crm_guard/revoke.
type RevokeRequest struct {
	// Sub revokes every session of this subject.
	Sub string `json:"sub,omitempty"`
	// SID revokes the sessions of this provider session.
	SID string `json:"sid,omitempty"`
}

func (AdminAPI) revoke(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodPost {
		return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: fmt.Errorf("oidc: method %s not allowed; POST {\"sub\": ...}", r.Method)}
	}
	var req RevokeRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: fmt.Errorf("oidc: reading the revoke request body: %w", err)}
	}
	if req.Sub == "" && req.SID == "" {
		return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: fmt.Errorf("oidc: revoke needs \"sub\" or \"sid\"")}
	}
	n, err := RevokeAll(r, req)
	if err != nil {
		return caddy.APIError{HTTPStatus: http.StatusServiceUnavailable, Err: err}
	}
	w.Header().Set("Content-Type", "application/json")
	return json.NewEncoder(w).Encode(map[string]int{"revoked": n})
}

// RevokeAll revokes matching sessions in every live provider's store
// (each distinct store once) and returns how many ended.
func RevokeAll(r *http.Request, req RevokeRequest) (int, error) {
	live.Lock()
	ps := make([]*Provider, 0, len(live.m))
	for p := range live.m {
		ps = append(ps, p)
	}
	live.Unlock()
	seen := map[string]bool{} // by the state store's name: two guards may share one
	total := 0
	for _, p := range ps {
		st := p.sess.Store().Backend().Name()
		if seen[st] {
			continue
		}
		seen[st] = true
		n, err := p.Revoke(r.Context(), req.Sub, req.SID)
		if err != nil {
			return total, fmt.Errorf("oidc: revoking sessions: %w", err)
		}
		total += n
		p.audit.Info("sessions revoked by the admin API", zap.String("sub", req.Sub), zap.String("sid", req.SID), zap.Int("sessions_ended", n))
	}
	return total, nil
}

// Interface guard.
var _ caddy.AdminRouter = AdminAPI{}
