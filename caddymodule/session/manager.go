package session

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/crmguard/crmguard/caddymodule/store"
)

// Manager ties the session cookie to the store: it seals the session id
// into the cookie, loads and checks sessions, and ends them.
type Manager struct {
	cfg    Config
	codec  *Codec
	tokens *Codec
	store  *Store
	// Now is the clock (tests move it); nil means time.Now.
	Now func() time.Time
}

// NewManager derives the cookie keys and keeps sessions in st, the
// guard's state store (which the caller opened and closes).
func NewManager(cfg Config, st store.Store) (*Manager, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if st == nil {
		return nil, fmt.Errorf("session: no state store")
	}
	codec, err := NewCodec(cfg.Secrets, "session cookie")
	if err != nil {
		return nil, err
	}
	tokens, err := NewCodec(cfg.Secrets, "session tokens")
	if err != nil {
		return nil, err
	}
	return &Manager{cfg: cfg, codec: codec, tokens: tokens, store: NewStore(st)}, nil
}

// Check reports whether the store answers.
func (m *Manager) Check(ctx context.Context) error { return m.store.Backend().Ping(ctx) }

// Store is the session store. Its Data carries the tokens sealed; use
// Manager.Get and Manager.Update to read and write them in clear.
func (m *Manager) Store() *Store { return m.store }

type sealedTokens struct {
	ID      string `json:"i,omitempty"`
	Access  string `json:"a,omitempty"`
	Refresh string `json:"r,omitempty"`
}

func tokensAAD(id string) []byte { return []byte("session tokens " + id) }

// seal returns a copy of d whose tokens are only in Sealed.
func (m *Manager) seal(d *Data) *Data {
	c := *d
	b, _ := json.Marshal(sealedTokens{ID: d.IDToken, Access: d.AccessToken, Refresh: d.RefreshToken})
	c.Sealed = m.tokens.Seal(b, tokensAAD(d.ID))
	c.IDToken, c.AccessToken, c.RefreshToken = "", "", ""
	return &c
}

// open puts the tokens of a stored session back in clear; a session whose
// tokens no configured key opens is ErrNotFound.
func (m *Manager) open(d *Data) (*Data, error) {
	if d.Sealed == "" {
		return d, nil
	}
	b, err := m.tokens.Open(d.Sealed, tokensAAD(d.ID))
	if err != nil {
		return nil, ErrNotFound
	}
	var t sealedTokens
	if json.Unmarshal(b, &t) != nil {
		return nil, ErrNotFound
	}
	d.IDToken, d.AccessToken, d.RefreshToken, d.Sealed = t.ID, t.Access, t.Refresh, ""
	return d, nil
}

// Get reads a session with its tokens in clear (ErrNotFound when it is
// gone or its tokens were sealed with a key no longer configured).
func (m *Manager) Get(ctx context.Context, id string) (*Data, error) {
	d, err := m.store.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	return m.open(d)
}

// Update writes d (tokens sealed) if nobody changed it since it was read;
// see Store.Update.
func (m *Manager) Update(ctx context.Context, d *Data) error {
	c := m.seal(d)
	err := m.store.Update(ctx, c)
	d.Version = c.Version
	return err
}

// Config is the effective configuration (defaults applied).
func (m *Manager) Config() Config { return m.cfg }

// Codec is the cookie codec (also used for the sign-in cookie and CSRF
// tokens, with their own aad).
func (m *Manager) Codec() *Codec { return m.codec }

func (m *Manager) now() time.Time {
	if m.Now != nil {
		return m.Now()
	}
	return time.Now()
}

// Secure reports whether the proxy's cookies for r get the Secure flag:
// the request came over TLS, or secure_cookie says TLS ends in front of
// Caddy; never with insecure_cookie.
func (m *Manager) Secure(r *http.Request) bool {
	return !m.cfg.InsecureCookie && (r.TLS != nil || m.cfg.SecureCookie)
}

// HostPrefix starts the names of the proxy's cookies over HTTPS. A
// browser keeps a "__Host-" cookie only when it is Secure, has Path=/ and
// no Domain, and was set by this very host over HTTPS, so a sibling
// subdomain (or a plain-http page) cannot plant or overwrite one: no
// session fixation, no forced sign-out through a cookie for the parent
// domain.
const HostPrefix = "__Host-"

// CookieNameFor returns the name the proxy's cookie called name has on r:
// HostPrefix+name when the cookie is Secure (the request came over TLS and
// insecure_cookie is off), name itself over plain http (the loopback
// demo) or when name already starts with "__Host-" or "__Secure-". Only
// this spelling is read: a cookie of the other spelling is ignored.
func (m *Manager) CookieNameFor(r *http.Request, name string) string {
	if !m.Secure(r) || strings.HasPrefix(name, HostPrefix) || strings.HasPrefix(name, "__Secure-") {
		return name
	}
	return HostPrefix + name
}

// SetCookie writes one of the proxy's cookies: HttpOnly, Path=/,
// SameSite=Lax, Secure over TLS, named by CookieNameFor. maxAge < 0
// deletes it.
func (m *Manager) SetCookie(w http.ResponseWriter, r *http.Request, name, value string, maxAge int) {
	m.SetCookiePath(w, r, name, value, "/", maxAge)
}

// SetCookiePath is SetCookie for a cookie sent only to path and below
// over plain http; a "__Host-" cookie (over HTTPS) always has Path=/, as
// browsers require.
func (m *Manager) SetCookiePath(w http.ResponseWriter, r *http.Request, name, value, path string, maxAge int) {
	name = m.CookieNameFor(r, name)
	if strings.HasPrefix(name, HostPrefix) {
		path = "/"
	}
	http.SetCookie(w, &http.Cookie{
		Name:     name,
		Value:    value,
		Path:     path,
		MaxAge:   maxAge,
		HttpOnly: true,
		Secure:   m.Secure(r),
		SameSite: http.SameSiteLaxMode,
	})
}

// cookieID returns the session id sealed in r's session cookie, or "".
func (m *Manager) cookieID(r *http.Request) string {
	c, err := r.Cookie(m.CookieNameFor(r, m.cfg.CookieName))
	if err != nil {
		return ""
	}
	id, err := m.codec.Open(c.Value, []byte(m.cfg.CookieName))
	if err != nil || !validID(string(id)) {
		return ""
	}
	return string(id)
}

// Load returns the live session named by r's cookie, or nil when there is
// none or it is tampered, unknown, revoked, idle too long or past its
// lifetime. An error means the store could not be asked.
func (m *Manager) Load(r *http.Request) (*Data, error) {
	id := m.cookieID(r)
	if id == "" {
		return nil, nil
	}
	d, err := m.Get(r.Context(), id)
	if errors.Is(err, ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	now := m.now()
	if !now.Before(d.Expires) || !now.Before(d.IdleUntil) {
		_ = m.store.Delete(r.Context(), id)
		return nil, nil
	}
	return d, nil
}

// Touch extends the idle deadline of d when at least a twentieth of the
// idle timeout passed since the last extension (so not every request
// writes to the store). A concurrent change is not an error.
func (m *Manager) Touch(ctx context.Context, d *Data) error {
	now := m.now()
	idle := time.Duration(m.cfg.IdleTimeout)
	if now.Sub(d.LastSeen) < idle/20 {
		return nil
	}
	d.LastSeen = now
	d.IdleUntil = now.Add(idle)
	if err := m.Update(ctx, d); err != nil && !errors.Is(err, ErrConflict) {
		return err
	}
	return nil
}

// Start stores d as a new session (setting its id and deadlines) and
// sets the cookie.
func (m *Manager) Start(w http.ResponseWriter, r *http.Request, d *Data) error {
	now := m.now()
	d.ID = RandomID(32)
	d.Created, d.LastSeen = now, now
	d.Expires = now.Add(time.Duration(m.cfg.Lifetime))
	d.IdleUntil = now.Add(time.Duration(m.cfg.IdleTimeout))
	c := m.seal(d)
	if err := m.store.Create(r.Context(), c); err != nil {
		return err
	}
	d.Version = c.Version
	m.SetCookie(w, r, m.cfg.CookieName, m.codec.Seal([]byte(d.ID), []byte(m.cfg.CookieName)), int(time.Duration(m.cfg.Lifetime)/time.Second))
	return nil
}

// Forget deletes the session named by r's cookie (if any) from the store
// and leaves the cookie alone (a new session's cookie replaces it).
func (m *Manager) Forget(r *http.Request) error {
	if id := m.cookieID(r); id != "" {
		return m.store.Delete(r.Context(), id)
	}
	return nil
}

// End deletes the session named by r's cookie (if any) and clears the
// cookie.
func (m *Manager) End(w http.ResponseWriter, r *http.Request) error {
	m.SetCookie(w, r, m.cfg.CookieName, "", -1)
	if id := m.cookieID(r); id != "" {
		return m.store.Delete(r.Context(), id)
	}
	return nil
}
