package devidp

import (
	"context"
	"crypto/rsa"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
)

// authRequest is one authorization request and, after login, its result.
type authRequest struct {
	id            string
	clientID      string
	audience      []string
	redirectURI   string
	state         string
	nonce         string
	scopes        []string
	responseType  oidc.ResponseType
	responseMode  oidc.ResponseMode
	codeChallenge *oidc.CodeChallenge
	prompt        []string
	maxAge        *uint
	acrValues     []string
	created       time.Time

	pendingUser string // password checked, TOTP outstanding
	user        string
	done        bool
	authTime    time.Time
	amr         []string
	acr         string
	sid         string
}

// GetID implements op.AuthRequest.
func (a *authRequest) GetID() string { return a.id }

// GetACR implements op.AuthRequest.
func (a *authRequest) GetACR() string { return a.acr }

// GetAMR implements op.AuthRequest.
func (a *authRequest) GetAMR() []string { return a.amr }

// GetAudience implements op.AuthRequest.
func (a *authRequest) GetAudience() []string { return a.audience }

// GetAuthTime implements op.AuthRequest.
func (a *authRequest) GetAuthTime() time.Time { return a.authTime }

// GetClientID implements op.AuthRequest.
func (a *authRequest) GetClientID() string { return a.clientID }

// GetCodeChallenge implements op.AuthRequest.
func (a *authRequest) GetCodeChallenge() *oidc.CodeChallenge { return a.codeChallenge }

// GetNonce implements op.AuthRequest.
func (a *authRequest) GetNonce() string { return a.nonce }

// GetRedirectURI implements op.AuthRequest.
func (a *authRequest) GetRedirectURI() string { return a.redirectURI }

// GetResponseType implements op.AuthRequest.
func (a *authRequest) GetResponseType() oidc.ResponseType { return a.responseType }

// GetResponseMode implements op.AuthRequest.
func (a *authRequest) GetResponseMode() oidc.ResponseMode { return a.responseMode }

// GetScopes implements op.AuthRequest.
func (a *authRequest) GetScopes() []string { return a.scopes }

// GetState implements op.AuthRequest.
func (a *authRequest) GetState() string { return a.state }

// GetSubject implements op.AuthRequest.
func (a *authRequest) GetSubject() string { return a.user }

// Done implements op.AuthRequest.
func (a *authRequest) Done() bool { return a.done }

// wantsMFA reports whether the client asked for the MFA acr.
func (a *authRequest) wantsMFA() bool { return slices.Contains(a.acrValues, ACRMFA) }

// grant is what a refresh token (and the access tokens made from it) stand
// for: one sign-in of one user at one client.
type grant struct {
	user     string
	clientID string
	audience []string
	scopes   []string
	authTime time.Time
	amr      []string
	acr      string
	sid      string
}

// GetAMR implements op.RefreshTokenRequest.
func (g *grant) GetAMR() []string { return g.amr }

// GetAudience implements op.RefreshTokenRequest.
func (g *grant) GetAudience() []string { return g.audience }

// GetAuthTime implements op.RefreshTokenRequest.
func (g *grant) GetAuthTime() time.Time { return g.authTime }

// GetClientID implements op.RefreshTokenRequest.
func (g *grant) GetClientID() string { return g.clientID }

// GetScopes implements op.RefreshTokenRequest.
func (g *grant) GetScopes() []string { return g.scopes }

// GetSubject implements op.RefreshTokenRequest.
func (g *grant) GetSubject() string { return g.user }

// SetCurrentScopes implements op.RefreshTokenRequest.
func (g *grant) SetCurrentScopes(scopes []string) { g.scopes = scopes }

// ssoSession is a browser's sign-in at the provider.
type ssoSession struct {
	sid      string
	user     string
	authTime time.Time
	amr      []string
	acr      string
	clients  map[string]bool // clients that got tokens in this session
}

type signingKey struct {
	id  string
	key *rsa.PrivateKey
}

// SignatureAlgorithm implements op.SigningKey.
func (k *signingKey) SignatureAlgorithm() jose.SignatureAlgorithm { return jose.RS256 }

// Key implements op.SigningKey.
func (k *signingKey) Key() any { return k.key }

// ID implements op.SigningKey.
func (k *signingKey) ID() string { return k.id }

type publicKey struct{ signingKey }

// Algorithm implements op.Key.
func (k *publicKey) Algorithm() jose.SignatureAlgorithm { return jose.RS256 }

// Use implements op.Key.
func (k *publicKey) Use() string { return "sig" }

// Key implements op.Key.
func (k *publicKey) Key() any { return &k.key.PublicKey }

// storage implements op.Storage in memory.
type storage struct {
	server *Server

	mu            sync.Mutex
	users         map[string]*User
	clients       map[string]*Client
	requests      map[string]*authRequest
	codes         map[string]string // code -> request id
	refresh       map[string]*grant // refresh token -> grant
	access        map[string]*grant // access token id -> grant
	sessions      map[string]*ssoSession
	keys          []*signingKey // [0] signs
	accessTTL     time.Duration
	refreshes     int
	lastTOTPSteps map[string]uint64
}

func newStorage(cfg Config, key *rsa.PrivateKey) *storage {
	s := &storage{
		users: map[string]*User{}, clients: map[string]*Client{},
		requests: map[string]*authRequest{}, codes: map[string]string{},
		refresh: map[string]*grant{}, access: map[string]*grant{},
		sessions: map[string]*ssoSession{}, lastTOTPSteps: map[string]uint64{},
		accessTTL: cfg.AccessTokenLifetime,
	}
	for i := range cfg.Users {
		u := cfg.Users[i]
		s.users[u.Username] = &u
	}
	for i := range cfg.Clients {
		c := cfg.Clients[i]
		s.clients[c.ID] = &c
	}
	s.keys = []*signingKey{{id: randomID()[:12], key: key}}
	return s
}

func (s *storage) rotate(key *rsa.PrivateKey) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keys = append([]*signingKey{{id: randomID()[:12], key: key}}, s.keys[0])
}

func (s *storage) setDisabled(username string, disabled bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	u, ok := s.users[username]
	if !ok {
		return fmt.Errorf("devidp: no user %q", username)
	}
	u.Disabled = disabled
	return nil
}

func (s *storage) refreshCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.refreshes
}

func (s *storage) setAccessLifetime(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.accessTTL = d
}

func (s *storage) user(name string) (User, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	u, ok := s.users[name]
	if !ok {
		return User{}, false
	}
	return *u, true
}

// --- op.AuthStorage ---

// CreateAuthRequest implements op.Storage.
func (s *storage) CreateAuthRequest(_ context.Context, req *oidc.AuthRequest, _ string) (op.AuthRequest, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.clients[req.ClientID]
	if !ok {
		return nil, fmt.Errorf("devidp: unknown client %q", req.ClientID)
	}
	a := &authRequest{
		id: randomID(), clientID: req.ClientID, redirectURI: req.RedirectURI,
		state: req.State, nonce: req.Nonce, scopes: req.Scopes,
		responseType: req.ResponseType, responseMode: req.ResponseMode,
		prompt: req.Prompt, maxAge: req.MaxAge, acrValues: req.ACRValues,
		audience: append([]string{req.ClientID}, c.Audience...),
		created:  time.Now(),
	}
	if req.CodeChallenge != "" {
		a.codeChallenge = &oidc.CodeChallenge{Challenge: req.CodeChallenge, Method: req.CodeChallengeMethod}
	}
	s.requests[a.id] = a
	return a, nil
}

func (s *storage) request(id string) (*authRequest, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, ok := s.requests[id]
	if !ok || time.Since(a.created) > 30*time.Minute {
		return nil, fmt.Errorf("devidp: unknown or expired auth request")
	}
	return a, nil
}

// AuthRequestByID implements op.Storage.
func (s *storage) AuthRequestByID(_ context.Context, id string) (op.AuthRequest, error) {
	return s.request(id)
}

// AuthRequestByCode implements op.Storage.
func (s *storage) AuthRequestByCode(_ context.Context, code string) (op.AuthRequest, error) {
	s.mu.Lock()
	id, ok := s.codes[code]
	s.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("devidp: unknown code")
	}
	return s.request(id)
}

// SaveAuthCode implements op.Storage.
func (s *storage) SaveAuthCode(_ context.Context, id, code string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.codes[code] = id
	return nil
}

// DeleteAuthRequest implements op.Storage.
func (s *storage) DeleteAuthRequest(_ context.Context, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.requests, id)
	for code, rid := range s.codes {
		if rid == id {
			delete(s.codes, code)
		}
	}
	return nil
}

// grantOf turns any token request into the grant it stands for and
// records the client in the provider session.
func (s *storage) grantOf(req op.TokenRequest) *grant {
	switch r := req.(type) {
	case *authRequest:
		if ss, ok := s.sessions[r.sid]; ok {
			ss.clients[r.clientID] = true
		}
		return &grant{user: r.user, clientID: r.clientID, audience: r.audience, scopes: r.scopes, authTime: r.authTime, amr: r.amr, acr: r.acr, sid: r.sid}
	case *grant:
		g := *r
		return &g
	}
	return &grant{user: req.GetSubject(), audience: req.GetAudience(), scopes: req.GetScopes()}
}

// CreateAccessToken implements op.Storage.
func (s *storage) CreateAccessToken(_ context.Context, req op.TokenRequest) (string, time.Time, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	id := randomID()
	s.access[id] = s.grantOf(req)
	return id, time.Now().Add(s.accessTTL), nil
}

// CreateAccessAndRefreshTokens implements op.Storage.
func (s *storage) CreateAccessAndRefreshTokens(_ context.Context, req op.TokenRequest, current string) (string, string, time.Time, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.grantOf(req)
	if current != "" {
		if _, ok := s.refresh[current]; !ok {
			return "", "", time.Time{}, oidc.ErrInvalidGrant().WithDescription("refresh token already used or revoked")
		}
		delete(s.refresh, current)
		s.refreshes++
	}
	id, rt := randomID(), randomID()
	s.access[id] = g
	s.refresh[rt] = g
	return id, rt, time.Now().Add(s.accessTTL), nil
}

// TokenRequestByRefreshToken implements op.Storage.
func (s *storage) TokenRequestByRefreshToken(_ context.Context, rt string) (op.RefreshTokenRequest, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	g, ok := s.refresh[rt]
	if !ok {
		return nil, oidc.ErrInvalidGrant().WithDescription("unknown refresh token")
	}
	if u, ok := s.users[g.user]; !ok || u.Disabled {
		delete(s.refresh, rt)
		return nil, oidc.ErrInvalidGrant().WithDescription("the user is disabled")
	}
	if g.sid != "" {
		if _, ok := s.sessions[g.sid]; !ok {
			delete(s.refresh, rt)
			return nil, oidc.ErrInvalidGrant().WithDescription("the session has ended")
		}
	}
	c := *g
	return &c, nil
}

// TerminateSession implements op.Storage.
func (s *storage) TerminateSession(ctx context.Context, userID, clientID string) error {
	for _, sid := range s.sessionsOf(userID) {
		s.endSession(ctx, sid)
	}
	return nil
}

// TerminateSessionFromRequest ends the provider session named by the
// id_token_hint's sid (or every session of its user) and notifies the
// clients over the back channel before redirecting.
func (s *storage) TerminateSessionFromRequest(ctx context.Context, req *op.EndSessionRequest) (string, error) {
	if req.IDTokenHintClaims != nil && req.IDTokenHintClaims.SessionID != "" {
		s.endSession(ctx, req.IDTokenHintClaims.SessionID)
	} else if req.UserID != "" {
		for _, sid := range s.sessionsOf(req.UserID) {
			s.endSession(ctx, sid)
		}
	}
	return req.RedirectURI, nil
}

// RevokeToken implements op.Storage.
func (s *storage) RevokeToken(_ context.Context, token, _, _ string) *oidc.Error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.refresh, token)
	delete(s.access, token)
	return nil
}

// GetRefreshTokenInfo implements op.Storage.
func (s *storage) GetRefreshTokenInfo(_ context.Context, _ string, token string) (string, string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	g, ok := s.refresh[token]
	if !ok {
		return "", "", op.ErrInvalidRefreshToken
	}
	return g.user, token, nil
}

// SigningKey implements op.Storage.
func (s *storage) SigningKey(context.Context) (op.SigningKey, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.keys[0], nil
}

// SignatureAlgorithms implements op.Storage.
func (s *storage) SignatureAlgorithms(context.Context) ([]jose.SignatureAlgorithm, error) {
	return []jose.SignatureAlgorithm{jose.RS256}, nil
}

// KeySet implements op.Storage.
func (s *storage) KeySet(context.Context) ([]op.Key, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]op.Key, 0, len(s.keys))
	for _, k := range s.keys {
		out = append(out, &publicKey{*k})
	}
	return out, nil
}

// --- op.OPStorage ---

// GetClientByClientID implements op.Storage.
func (s *storage) GetClientByClientID(_ context.Context, id string) (op.Client, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.clients[id]
	if !ok {
		return nil, fmt.Errorf("devidp: unknown client %q", id)
	}
	return &client{c: *c, issuer: s.server.cfg.Issuer, idTTL: s.server.cfg.IDTokenLifetime}, nil
}

// AuthorizeClientIDSecret implements op.Storage.
func (s *storage) AuthorizeClientIDSecret(_ context.Context, id, secret string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.clients[id]
	if !ok || c.Secret != secret {
		return errors.New("devidp: invalid client credentials")
	}
	return nil
}

// SetUserinfoFromScopes implements op.Storage.
func (s *storage) SetUserinfoFromScopes(context.Context, *oidc.UserInfo, string, string, []string) error {
	return nil
}

func (s *storage) fillUserinfo(info *oidc.UserInfo, username string, scopes []string) error {
	u, ok := s.user(username)
	if !ok {
		return fmt.Errorf("devidp: no user %q", username)
	}
	info.Subject = u.Username
	for _, sc := range scopes {
		switch sc {
		case oidc.ScopeProfile:
			info.PreferredUsername = u.Username
			info.Name = u.Name
		case oidc.ScopeEmail:
			info.Email = u.Email
			info.EmailVerified = true
		}
	}
	info.AppendClaims("groups", u.Groups)
	info.AppendClaims("teams", u.Teams)
	if len(u.Reports) > 0 {
		info.AppendClaims("direct_reports", u.Reports)
	}
	return nil
}

// SetUserinfoFromRequest fills ID token claims: profile, groups, teams,
// direct_reports, sid.
func (s *storage) SetUserinfoFromRequest(_ context.Context, info *oidc.UserInfo, req op.IDTokenRequest, scopes []string) error {
	if err := s.fillUserinfo(info, req.GetSubject(), scopes); err != nil {
		return err
	}
	switch r := req.(type) {
	case *authRequest:
		info.AppendClaims("sid", r.sid)
	case *grant:
		info.AppendClaims("sid", r.sid)
		if r.acr != "" {
			info.AppendClaims("acr", r.acr)
		}
	}
	return nil
}

// SetUserinfoFromToken implements op.Storage.
func (s *storage) SetUserinfoFromToken(_ context.Context, info *oidc.UserInfo, tokenID, subject, _ string) error {
	s.mu.Lock()
	g, ok := s.access[tokenID]
	s.mu.Unlock()
	if !ok {
		return errors.New("devidp: unknown access token")
	}
	return s.fillUserinfo(info, g.user, g.scopes)
}

// SetIntrospectionFromToken implements op.Storage.
func (s *storage) SetIntrospectionFromToken(_ context.Context, resp *oidc.IntrospectionResponse, tokenID, subject, clientID string) error {
	s.mu.Lock()
	g, ok := s.access[tokenID]
	s.mu.Unlock()
	if !ok {
		return errors.New("devidp: unknown access token")
	}
	resp.Active = true
	resp.Subject = g.user
	resp.ClientID = g.clientID
	resp.Audience = g.audience
	return nil
}

// GetPrivateClaimsFromScopes implements op.Storage.
func (s *storage) GetPrivateClaimsFromScopes(_ context.Context, userID, _ string, _ []string) (map[string]any, error) {
	u, ok := s.user(userID)
	if !ok {
		return nil, nil
	}
	claims := map[string]any{"groups": u.Groups, "teams": u.Teams, "preferred_username": u.Username}
	if len(u.Reports) > 0 {
		claims["direct_reports"] = u.Reports
	}
	return claims, nil
}

// GetPrivateClaimsFromRequest puts the sign-in facts into JWT access
// tokens, so bearer clients can be checked for MFA and step-up.
func (s *storage) GetPrivateClaimsFromRequest(ctx context.Context, req op.TokenRequest, scopes []string) (map[string]any, error) {
	claims, _ := s.GetPrivateClaimsFromScopes(ctx, req.GetSubject(), "", scopes)
	if claims == nil {
		claims = map[string]any{}
	}
	var g *grant
	switch r := req.(type) {
	case *authRequest:
		g = &grant{authTime: r.authTime, amr: r.amr, acr: r.acr, sid: r.sid}
	case *grant:
		g = r
	}
	if g != nil {
		claims["amr"] = g.amr
		claims["acr"] = g.acr
		claims["auth_time"] = g.authTime.Unix()
		claims["sid"] = g.sid
	}
	return claims, nil
}

// GetKeyByIDAndClientID implements op.Storage.
func (s *storage) GetKeyByIDAndClientID(context.Context, string, string) (*jose.JSONWebKey, error) {
	return nil, errors.New("devidp: JWT profile grants are not supported")
}

// ValidateJWTProfileScopes implements op.Storage.
func (s *storage) ValidateJWTProfileScopes(_ context.Context, _ string, scopes []string) ([]string, error) {
	return scopes, nil
}

// Health implements op.Storage.
func (s *storage) Health(context.Context) error { return nil }

// --- sessions ---

func (s *storage) startSession(user string, amr []string, acr string) *ssoSession {
	s.mu.Lock()
	defer s.mu.Unlock()
	ss := &ssoSession{sid: randomID(), user: user, authTime: s.server.cfg.Now().Truncate(time.Second), amr: amr, acr: acr, clients: map[string]bool{}}
	s.sessions[ss.sid] = ss
	return ss
}

func (s *storage) session(sid string) (ssoSession, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ss, ok := s.sessions[sid]
	if !ok {
		return ssoSession{}, false
	}
	return *ss, true
}

func (s *storage) sessionsOf(user string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for sid, ss := range s.sessions {
		if ss.user == user {
			out = append(out, sid)
		}
	}
	return out
}

// complete marks an auth request as authenticated by session ss.
func (s *storage) complete(a *authRequest, ss *ssoSession) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a.user, a.authTime, a.amr, a.acr, a.sid, a.done = ss.user, ss.authTime, ss.amr, ss.acr, ss.sid, true
	a.pendingUser = ""
}

// endSession removes a provider session, revokes its refresh tokens and
// sends logout tokens to the clients that took part in it.
func (s *storage) endSession(ctx context.Context, sid string) {
	s.mu.Lock()
	ss, ok := s.sessions[sid]
	if !ok {
		s.mu.Unlock()
		return
	}
	delete(s.sessions, sid)
	for rt, g := range s.refresh {
		if g.sid == sid {
			delete(s.refresh, rt)
		}
	}
	var targets []Client
	for id := range ss.clients {
		if c, ok := s.clients[id]; ok && c.BackchannelLogoutURI != "" {
			targets = append(targets, *c)
		}
	}
	key := s.keys[0]
	s.mu.Unlock()
	for _, c := range targets {
		if err := s.server.sendLogoutToken(ctx, key, c, ss.user, sid); err != nil {
			s.server.cfg.Logger.Warn("devidp: back-channel logout failed", "client", c.ID, "error", err)
		}
	}
}

// client implements op.Client.
type client struct {
	c      Client
	issuer string
	idTTL  time.Duration
}

// GetID implements op.Client.
func (c *client) GetID() string { return c.c.ID }

// RedirectURIs implements op.Client.
func (c *client) RedirectURIs() []string { return c.c.RedirectURIs }

// PostLogoutRedirectURIs implements op.Client.
func (c *client) PostLogoutRedirectURIs() []string { return c.c.PostLogoutRedirectURIs }

// ApplicationType implements op.Client.
func (c *client) ApplicationType() op.ApplicationType { return op.ApplicationTypeWeb }

// AuthMethod implements op.Client.
func (c *client) AuthMethod() oidc.AuthMethod { return oidc.AuthMethodBasic }

// ResponseTypes implements op.Client.
func (c *client) ResponseTypes() []oidc.ResponseType {
	return []oidc.ResponseType{oidc.ResponseTypeCode}
}

// GrantTypes implements op.Client.
func (c *client) GrantTypes() []oidc.GrantType {
	return []oidc.GrantType{oidc.GrantTypeCode, oidc.GrantTypeRefreshToken}
}

// LoginURL implements op.Client.
func (c *client) LoginURL(id string) string { return c.issuer + "/login?authRequestID=" + id }

// AccessTokenType implements op.Client.
func (c *client) AccessTokenType() op.AccessTokenType { return op.AccessTokenTypeJWT }

// IDTokenLifetime implements op.Client.
func (c *client) IDTokenLifetime() time.Duration { return c.idTTL }

// DevMode implements op.Client.
func (c *client) DevMode() bool { return true }

// RestrictAdditionalIdTokenScopes implements op.Client.
func (c *client) RestrictAdditionalIdTokenScopes() func([]string) []string {
	return func(s []string) []string { return s }
}

// RestrictAdditionalAccessTokenScopes implements op.Client.
func (c *client) RestrictAdditionalAccessTokenScopes() func([]string) []string {
	return func(s []string) []string { return s }
}

// IsScopeAllowed implements op.Client.
func (c *client) IsScopeAllowed(string) bool { return true }

// IDTokenUserinfoClaimsAssertion implements op.Client.
func (c *client) IDTokenUserinfoClaimsAssertion() bool { return true }

// ClockSkew implements op.Client.
func (c *client) ClockSkew() time.Duration { return 0 }

var (
	_ op.Storage                        = (*storage)(nil)
	_ op.CanSetUserinfoFromRequest      = (*storage)(nil)
	_ op.CanGetPrivateClaimsFromRequest = (*storage)(nil)
	_ op.CanTerminateSessionFromRequest = (*storage)(nil)
	_ op.Client                         = (*client)(nil)
	_ op.RefreshTokenRequest            = (*grant)(nil)
)
