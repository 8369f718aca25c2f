package rulescli

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/crmguard/crmguard/caddymodule/store"
	"github.com/crmguard/crmguard/rules"
)

// caseStore is the state store of one case when the rule file has usage
// limits: the server's own embedded store (bbolt) in a temporary
// directory, on the case's clock, opened at its first use. The case's
// `usage` (limit id → count) is added to the user's counters through the
// same Store.Add the guard counts with, at the case's time, so a case can
// start just below a limit. Every case starts from an empty store.
type caseStore struct {
	store.Store
	dir string
}

// newCaseStore makes the store of case c; nil (and no error) when the rule
// file has no limits. user is the case's resolved user (nil: anonymous).
func newCaseStore(set *rules.Set, c Case, user *rules.User, now time.Time) (*caseStore, error) {
	if len(set.Limits()) == 0 {
		if len(c.Usage) > 0 {
			return nil, fmt.Errorf("usage: the rule file has no limits")
		}
		return nil, nil
	}
	if len(c.Usage) > 0 && user == nil {
		return nil, fmt.Errorf("usage: the case has no user whose usage it could be")
	}
	dir, err := os.MkdirTemp("", "crmguard-rules-test-")
	if err != nil {
		return nil, fmt.Errorf("rulescli: a directory for the case's state store: %w", err)
	}
	cs := &caseStore{dir: dir, Store: store.Lazy(store.Location{Path: filepath.Join(dir, "state.db")},
		store.Options{Now: func() time.Time { return now }, FlushInterval: time.Hour})}
	if err := cs.seed(set, c, user, now); err != nil {
		cs.Close()
		return nil, err
	}
	return cs, nil
}

// seed adds the case's usage to the user's counters. A limit keyed by
// user+route is seeded for the route the case's request matches.
func (cs *caseStore) seed(set *rules.Set, c Case, user *rules.User, now time.Time) error {
	if len(c.Usage) == 0 {
		return nil
	}
	route := ""
	req, err := buildRequest(c.Request)
	if err != nil {
		return err
	}
	route = set.Decide(user, &rules.Request{Method: req.Method, URL: req.URL, Header: req.Header, Now: now}).RouteID
	ids := make([]string, 0, len(c.Usage))
	for id := range c.Usage {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		n := c.Usage[id]
		lim := set.Limit(id)
		if lim == nil {
			var known []string
			for _, l := range set.Limits() {
				known = append(known, l.ID)
			}
			return fmt.Errorf("usage: unknown limit %q (limits: %s)", id, strings.Join(known, ", "))
		}
		if n < 0 {
			return fmt.Errorf("usage: %s: a count cannot be negative, got %d", id, n)
		}
		if n == 0 {
			continue
		}
		if _, err := cs.Add(context.Background(), lim.CounterKey(user.ID, route), n, 0, lim.Per); err != nil {
			return fmt.Errorf("usage: %s: %w", id, err)
		}
	}
	return nil
}

// Close releases the store and removes its directory.
func (cs *caseStore) Close() error {
	if cs == nil {
		return nil
	}
	err := cs.Store.Close()
	if rerr := os.RemoveAll(cs.dir); err == nil {
		err = rerr
	}
	return err
}
