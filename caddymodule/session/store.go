package session

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/crmguard/crmguard/caddymodule/store"
)

// ErrNotFound means the session does not exist (any more): never created,
// expired, logged out or revoked. It is store.ErrNotFound.
var ErrNotFound = store.ErrNotFound

// ErrConflict means a session was changed by someone else since it was
// read (compare-and-swap on Data.Version failed). It is store.ErrConflict.
var ErrConflict = store.ErrConflict

// Namespace is the state store namespace that holds the sessions.
const Namespace = "session"

// Data is one signed-in browser session as kept in the store. The cookie
// carries only the encrypted ID.
type Data struct {
	// ID is the random session id (the store key).
	ID string `json:"id"`
	// Subject is the provider's `sub` for the user.
	Subject string `json:"sub"`
	// SID is the provider's session id (`sid` claim), used by back-channel
	// logout.
	SID string `json:"sid,omitempty"`
	// Claims are the verified ID token claims (merged with userinfo).
	Claims map[string]any `json:"claims,omitempty"`
	// AMR is the verified `amr` of the sign-in.
	AMR []string `json:"amr,omitempty"`
	// ACR is the verified `acr` of the sign-in.
	ACR string `json:"acr,omitempty"`
	// AuthTime is the verified `auth_time` of the sign-in.
	AuthTime time.Time `json:"auth_time"`
	// IDToken is the raw ID token (for id_token_hint at logout).
	IDToken string `json:"id_token,omitempty"`
	// AccessToken is the current access token.
	AccessToken string `json:"access_token,omitempty"`
	// RefreshToken is the current refresh token ("" when none was issued).
	RefreshToken string `json:"refresh_token,omitempty"`
	// TokenExpiry is when AccessToken expires (zero: unknown).
	TokenExpiry time.Time `json:"token_expiry"`
	// Created is when the session was created.
	Created time.Time `json:"created"`
	// LastSeen is the last request that used the session (updated coarsely).
	LastSeen time.Time `json:"last_seen"`
	// Expires is the absolute end of the session (Created + lifetime).
	Expires time.Time `json:"expires"`
	// IdleUntil is when the session ends without further requests.
	IdleUntil time.Time `json:"idle_until"`
	// Version counts updates; Store.Update compares it. It is the store
	// record's version (not kept in the record's value).
	Version int64 `json:"-"`
	// Sealed holds IDToken, AccessToken and RefreshToken encrypted with
	// the session keys while the session is in the store (Manager seals
	// and opens it), so the store never holds the tokens in clear.
	Sealed string `json:"sealed,omitempty"`
}

// Deadline is when the store may forget the session.
func (d *Data) Deadline() time.Time {
	if d.IdleUntil.IsZero() || d.Expires.Before(d.IdleUntil) {
		return d.Expires
	}
	return d.IdleUntil
}

// Store is the typed session API over the guard's state store: each
// session is one record of Namespace, keyed by its id, expiring at its
// Deadline and indexed by "sid:<sid>" and "sub:<subject>" (so back-channel
// logout and revocation find them). The store is the truth about whether
// a session is valid, so a revocation takes effect at the next request on
// every instance sharing the store. Safe for concurrent use.
type Store struct {
	st store.Store
}

// NewStore returns the session API over st.
func NewStore(st store.Store) *Store { return &Store{st: st} }

// Backend is the state store the sessions live in.
func (s *Store) Backend() store.Store { return s.st }

func (s *Store) record(d *Data) (*store.Record, error) {
	b, err := json.Marshal(d)
	if err != nil {
		return nil, fmt.Errorf("session: encoding session: %w", err)
	}
	r := &store.Record{Key: d.ID, Value: b, Version: d.Version, Expires: d.Deadline()}
	if d.SID != "" {
		r.Index = append(r.Index, "sid:"+d.SID)
	}
	if d.Subject != "" {
		r.Index = append(r.Index, "sub:"+d.Subject)
	}
	return r, nil
}

// Create stores a new session (Version is set to 1).
func (s *Store) Create(ctx context.Context, d *Data) error {
	if !validID(d.ID) {
		return fmt.Errorf("session: invalid session id")
	}
	r, err := s.record(d)
	if err != nil {
		return err
	}
	if err := s.st.Create(ctx, Namespace, r); err != nil {
		return fmt.Errorf("session: creating session: %w", err)
	}
	d.Version = r.Version
	return nil
}

// Get returns the session or ErrNotFound (also when past its Deadline).
func (s *Store) Get(ctx context.Context, id string) (*Data, error) {
	if !validID(id) {
		return nil, ErrNotFound
	}
	r, err := s.st.Get(ctx, Namespace, id)
	if err != nil {
		return nil, err
	}
	var d Data
	if err := json.Unmarshal(r.Value, &d); err != nil || d.ID != id {
		return nil, fmt.Errorf("session: stored session is corrupt: %w", err)
	}
	d.Version = r.Version
	return &d, nil
}

// Update replaces the session if its stored Version equals d.Version,
// then increments d.Version; ErrConflict otherwise, ErrNotFound when it
// is gone.
func (s *Store) Update(ctx context.Context, d *Data) error {
	r, err := s.record(d)
	if err != nil {
		return err
	}
	if err := s.st.Update(ctx, Namespace, r); err != nil {
		return err
	}
	d.Version = r.Version
	return nil
}

// Delete removes the session (no error when it is already gone).
func (s *Store) Delete(ctx context.Context, id string) error {
	if !validID(id) {
		return nil
	}
	return s.st.Delete(ctx, Namespace, id)
}

// DeleteBySID removes every session with this provider session id and
// returns how many there were.
func (s *Store) DeleteBySID(ctx context.Context, sid string) (int, error) {
	if sid == "" {
		return 0, nil
	}
	return s.st.DeleteIndexed(ctx, Namespace, "sid:"+sid)
}

// DeleteBySubject removes every session of the user and returns how
// many there were.
func (s *Store) DeleteBySubject(ctx context.Context, sub string) (int, error) {
	if sub == "" {
		return 0, nil
	}
	return s.st.DeleteIndexed(ctx, Namespace, "sub:"+sub)
}

// Lock takes a named lock for at most ttl (see store.Store.Lock).
func (s *Store) Lock(ctx context.Context, name string, ttl time.Duration) (release func(), ok bool, err error) {
	return s.st.Lock(ctx, name, ttl)
}

// Once records key for ttl and reports whether it was new (replay
// protection for sign-in states and logout token ids).
func (s *Store) Once(ctx context.Context, key string, ttl time.Duration) (bool, error) {
	return s.st.Once(ctx, key, ttl)
}

// validID accepts only the URL-safe base64 ids this package makes.
func validID(id string) bool {
	if len(id) < 16 || len(id) > 128 {
		return false
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}
