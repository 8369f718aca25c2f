package caddymodule

import (
	"fmt"

	"github.com/caddyserver/caddy/v2"

	"github.com/crmguard/crmguard/caddymodule/store"
)

// openState opens the guard's state store. With OIDC it is opened now
// (sessions need it from the first request, and a file another process
// holds fails the load); otherwise at its first use, so a guard whose
// rules need no state never creates or locks the file.
func (h *Handler) openState(repl *caddy.Replacer) (store.Store, error) {
	spec := ""
	if h.Session != nil {
		spec = repl.ReplaceKnown(h.Session.Store, "")
	}
	loc, err := store.ParseLocation(spec, caddy.AppDataDir())
	if err != nil {
		return nil, fmt.Errorf("caddymodule: crm_guard store: %w", err)
	}
	if h.OIDC == nil {
		return store.Lazy(loc, store.Options{}), nil
	}
	st, err := store.Open(loc, store.Options{})
	if err != nil {
		return nil, fmt.Errorf("caddymodule: crm_guard store: %w", err)
	}
	return st, nil
}
