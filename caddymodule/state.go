package caddymodule

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/crmguard/crmguard/caddymodule/store"
)

// stateLocation resolves where the guard keeps its state: the crm_guard
// block's `store`, or the former `session { store ... }`, or the default
// file under Caddy's data directory. Both given and naming different
// stores is an error: `store` replaced the session setting.
func (h *Handler) stateLocation(repl *caddy.Replacer, dataDir string) (store.Location, error) {
	spec := repl.ReplaceKnown(h.Store, "")
	loc, err := store.ParseLocation(spec, dataDir)
	if err != nil {
		return store.Location{}, fmt.Errorf("caddymodule: crm_guard store: %w", err)
	}
	if h.Session == nil || h.Session.Store == "" {
		return loc, nil
	}
	old, err := store.ParseLocation(repl.ReplaceKnown(h.Session.Store, ""), dataDir)
	if err != nil {
		return store.Location{}, fmt.Errorf("caddymodule: crm_guard session store: %w", err)
	}
	if spec != "" && old != loc {
		return store.Location{}, fmt.Errorf("caddymodule: crm_guard: `store` in the crm_guard block replaced `session { store ... }`, "+
			"and the two name different stores (%s and %s); keep only `store %s` in the crm_guard block", loc, old, h.Store)
	}
	return old, nil
}

// openState opens the guard's state store. With OIDC it is opened now
// (sessions need it from the first request, and a file another process
// holds fails the load); otherwise at its first use, so a guard whose
// rules need no state never creates or locks the file. Either way one
// handle per location is shared by the config generations (a reload does
// not open a bbolt file twice).
func (h *Handler) openState(repl *caddy.Replacer) (store.Store, error) {
	loc, err := h.stateLocation(repl, caddy.AppDataDir())
	if err != nil {
		return nil, err
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

// Store is the guard's state store (GuardOptions.Store): sessions,
// approval requests and grants, elevations, usage counters. nil when the
// guard was built without one (tests, `crmguard rules test`); a feature
// that needs state must then refuse, as when the store is unreachable.
func (g *Guard) Store() store.Store { return g.opt.Store }

// unavailable answers 503 to a request that needed the identity provider
// or the state store and could not ask it: nothing that needed them
// passes. The client reads which one failed; the audit event (and the
// log) also says why.
func (x *exchange) unavailable(w http.ResponseWriter, err error) error {
	f := refusal{Status: http.StatusServiceUnavailable, Reason: "The sign-in service could not be reached; try again shortly."}
	if errors.Is(err, store.ErrUnavailable) {
		f.Reason = "The guard's state store could not be reached, so this request cannot be checked; try again shortly."
	}
	rerr := x.refuse(w, f, "error", zap.Error(err))
	x.ev.Reason = f.Reason + " Cause: " + err.Error()
	return rerr
}
