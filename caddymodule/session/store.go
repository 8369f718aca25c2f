package session

import (
	"context"
	"errors"
	"time"
)

// ErrNotFound means the session does not exist (any more): never created,
// expired, logged out or revoked.
var ErrNotFound = errors.New("session: not found")

// ErrConflict means a session was changed by someone else since it was
// read (compare-and-swap on Data.Version failed).
var ErrConflict = errors.New("session: changed concurrently")

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
	// Version counts updates; Store.Update compares it.
	Version int64 `json:"version"`
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

// Store keeps sessions. Implementations are safe for concurrent use; the
// store is the truth about whether a session is valid, so revocations take
// effect at the next request on every instance sharing the store.
type Store interface {
	// Create stores a new session (Version is set to 1).
	Create(ctx context.Context, d *Data) error
	// Get returns the session or ErrNotFound (also when past its Deadline).
	Get(ctx context.Context, id string) (*Data, error)
	// Update replaces the session if its stored Version equals d.Version,
	// then increments d.Version; ErrConflict otherwise, ErrNotFound when
	// it is gone.
	Update(ctx context.Context, d *Data) error
	// Delete removes the session (no error when it is already gone).
	Delete(ctx context.Context, id string) error
	// DeleteBySID removes every session with this provider session id and
	// returns how many there were.
	DeleteBySID(ctx context.Context, sid string) (int, error)
	// DeleteBySubject removes every session of the user and returns how
	// many there were.
	DeleteBySubject(ctx context.Context, sub string) (int, error)
	// Lock takes a named lock for at most ttl. ok is false when someone
	// else holds it; release frees it (only if still held by this caller).
	Lock(ctx context.Context, name string, ttl time.Duration) (release func(), ok bool, err error)
	// Once records key for ttl and reports whether it was new (replay
	// protection for sign-in states and logout token ids).
	Once(ctx context.Context, key string, ttl time.Duration) (bool, error)
	// Close releases the store's resources.
	Close() error
}
