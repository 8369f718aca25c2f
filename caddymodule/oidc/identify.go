package oidc

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"go.uber.org/zap"
	"golang.org/x/oauth2"

	"github.com/crmguard/crmguard/caddymodule/authn"
	"github.com/crmguard/crmguard/caddymodule/session"
)

// Identify implements authn.Provider. A bearer token (Authorization:
// Bearer) is verified against the provider's keys; otherwise the session
// cookie is looked up in the store (every request: a revoked session
// stops working at once on every instance) and its tokens refreshed when
// they are about to expire. Anything invalid is nil ("signed out"); an
// error means the provider or the store could not be asked.
func (p *Provider) Identify(r *http.Request) (*authn.Identity, error) {
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, tok, ok := strings.Cut(h, " ")
		if !ok || !strings.EqualFold(scheme, "bearer") || p.cfg.DisableBearer {
			return nil, nil
		}
		return p.identifyBearer(r.Context(), strings.TrimSpace(tok))
	}
	d, err := p.sess.Load(r)
	if err != nil {
		return nil, fmt.Errorf("oidc: session store: %w", err)
	}
	if d == nil {
		return nil, nil
	}
	if p.needsRefresh(d) {
		if d, err = p.refresh(r.Context(), d); err != nil || d == nil {
			return nil, err
		}
	}
	if err := p.sess.Touch(r.Context(), d); err != nil {
		p.logger.Warn("could not extend the session's idle deadline", zap.Error(err))
	}
	return &authn.Identity{
		Subject: d.Subject, Claims: d.Claims, AMR: d.AMR, ACR: d.ACR, AuthTime: d.AuthTime,
		SessionID: sessionRef(d.ID),
	}, nil
}

// identifyBearer verifies a JWT access token: signature with an allowed
// algorithm, issuer, expiry, issue time and audience.
func (p *Provider) identifyBearer(ctx context.Context, raw string) (*authn.Identity, error) {
	if raw == "" || len(raw) > 16384 || strings.Count(raw, ".") != 2 {
		return nil, nil
	}
	d, err := p.discovery(ctx)
	if err != nil {
		return nil, err
	}
	t, err := d.bearer.Verify(ctx, raw)
	if err != nil {
		p.audit.Info("bearer token refused", zap.Error(err))
		return nil, nil
	}
	if !audienceMatches(t.Audience, p.cfg.BearerAudiences) {
		p.audit.Info("bearer token refused: wrong audience", zap.Strings("aud", t.Audience), zap.String("sub", t.Subject))
		return nil, nil
	}
	if !t.IssuedAt.IsZero() && t.IssuedAt.After(p.now().Add(time.Duration(p.cfg.ClockSkew))) {
		p.audit.Info("bearer token refused: issued in the future", zap.String("sub", t.Subject))
		return nil, nil
	}
	claims := map[string]any{}
	if err := t.Claims(&claims); err != nil {
		return nil, nil
	}
	if isIDToken(claims) {
		// An ID token tells a client who signed in; it is not a grant to
		// call an API. The proxy's own ID tokens carry its client id as
		// audience, so one leaked from a browser or a log must not
		// become an API key.
		p.audit.Info("bearer token refused: an ID token, not an access token", zap.String("sub", t.Subject))
		return nil, nil
	}
	amr, acr, authTime := authFacts(claims)
	return &authn.Identity{Subject: t.Subject, Claims: claims, AMR: amr, ACR: acr, AuthTime: authTime, Bearer: true}, nil
}

// isIDToken recognises an OpenID Connect ID token by the claims only ID
// tokens carry: nonce, at_hash, c_hash (OpenID Connect Core 2 and 3.3.2.11),
// s_hash (FAPI), or a `typ` claim of "ID" (Keycloak).
func isIDToken(claims map[string]any) bool {
	for _, k := range []string{"nonce", "at_hash", "c_hash", "s_hash"} {
		if _, ok := claims[k]; ok {
			return true
		}
	}
	typ, _ := claims["typ"].(string)
	return strings.EqualFold(typ, "ID")
}

func audienceMatches(have, want []string) bool {
	for _, h := range have {
		for _, w := range want {
			if h == w {
				return true
			}
		}
	}
	return false
}

func (p *Provider) needsRefresh(d *session.Data) bool {
	return d.RefreshToken != "" && !d.TokenExpiry.IsZero() &&
		!p.now().Add(time.Duration(p.cfg.RefreshBefore)).Before(d.TokenExpiry)
}

// refresh renews d's tokens once per session even under concurrent
// requests: singleflight in this process, a store lock across instances,
// and a re-read under the lock so a refresh another instance just did is
// not repeated. It returns nil when the provider refused (the session is
// ended) or the session is gone.
func (p *Provider) refresh(ctx context.Context, d *session.Data) (*session.Data, error) {
	v, err, _ := p.refreshes.Do(d.ID, func() (any, error) {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 20*time.Second)
		defer cancel()
		return p.refreshLocked(rctx, d)
	})
	if err != nil {
		return nil, err
	}
	nd, _ := v.(*session.Data)
	if nd == nil {
		return nil, nil
	}
	cp := *nd
	return &cp, nil
}

const refreshLockTTL = 30 * time.Second

func (p *Provider) refreshLocked(ctx context.Context, d *session.Data) (*session.Data, error) {
	store := p.sess.Store()
	release, ok, err := store.Lock(ctx, "refresh:"+d.ID, refreshLockTTL)
	if err != nil {
		return nil, fmt.Errorf("oidc: session store: %w", err)
	}
	if !ok {
		return p.awaitRefresh(ctx, d)
	}
	defer release()
	cur, done, err := p.rereadSession(ctx, d.ID)
	if done {
		return cur, err
	}
	disc, err := p.discovery(ctx)
	if err != nil {
		return p.graceOrFail(cur, err)
	}
	tok, err := disc.oauth.TokenSource(p.oauthCtx(ctx), &oauth2.Token{RefreshToken: cur.RefreshToken}).Token()
	if err != nil {
		var re *oauth2.RetrieveError
		if errors.As(err, &re) && re.Response != nil && re.Response.StatusCode >= 400 && re.Response.StatusCode < 500 {
			if derr := store.Delete(ctx, cur.ID); derr != nil {
				return nil, fmt.Errorf("oidc: ending refused session: %w", derr)
			}
			p.audit.Warn("session ended: the identity provider refused to refresh it (user disabled, logged out or token revoked)",
				zap.String("sub", cur.Subject), zap.String("session", sessionRef(cur.ID)), zap.String("error", re.ErrorCode))
			return nil, nil
		}
		return p.graceOrFail(cur, fmt.Errorf("%w: refresh: %w", ErrUnavailable, err))
	}
	if raw, _ := tok.Extra("id_token").(string); raw != "" {
		idt, err := disc.idTokens.Verify(ctx, raw)
		if err != nil || idt.Subject != cur.Subject {
			_ = store.Delete(ctx, cur.ID)
			p.audit.Warn("session ended: the refreshed ID token did not verify or names another subject", zap.String("sub", cur.Subject), zap.Error(err))
			return nil, nil
		}
		claims := map[string]any{}
		if idt.Claims(&claims) == nil {
			// The sign-in facts (amr, acr, auth_time) stay those of the
			// sign-in; the other claims (groups, ...) are the provider's
			// current view.
			for _, k := range []string{"amr", "acr", "auth_time", "sid", "nonce"} {
				if v, ok := cur.Claims[k]; ok {
					claims[k] = v
				} else {
					delete(claims, k)
				}
			}
			cur.Claims = claims
		}
		cur.IDToken = raw
	}
	cur.AccessToken = tok.AccessToken
	if tok.RefreshToken != "" {
		cur.RefreshToken = tok.RefreshToken
	}
	cur.TokenExpiry = tok.Expiry
	for range 5 {
		err = p.sess.Update(ctx, cur)
		if !errors.Is(err, session.ErrConflict) {
			break
		}
		latest, gerr := p.sess.Get(ctx, cur.ID)
		if gerr != nil {
			return nil, nil
		}
		latest.AccessToken, latest.RefreshToken, latest.TokenExpiry = cur.AccessToken, cur.RefreshToken, cur.TokenExpiry
		latest.IDToken, latest.Claims = cur.IDToken, cur.Claims
		cur = latest
	}
	if errors.Is(err, session.ErrNotFound) {
		return nil, nil // revoked meanwhile
	}
	if err != nil {
		return nil, fmt.Errorf("oidc: session store: %w", err)
	}
	p.logger.Debug("session tokens refreshed", zap.String("session", sessionRef(cur.ID)))
	return cur, nil
}

// awaitRefresh waits (bounded) for another instance holding the refresh
// lock to store new tokens.
func (p *Provider) awaitRefresh(ctx context.Context, d *session.Data) (*session.Data, error) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	deadline := time.Now().Add(refreshLockTTL)
	for time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return p.graceOrFail(d, ctx.Err())
		case <-t.C:
		}
		if cur, done, err := p.rereadSession(ctx, d.ID); done {
			return cur, err
		}
	}
	return p.graceOrFail(d, fmt.Errorf("%w: another instance did not finish refreshing", ErrUnavailable))
}

// rereadSession reads session id again once a refresh may have happened:
// done when there is nothing left to refresh, with the stored session when
// another request renewed it, nil when it is gone, or the store's error.
func (p *Provider) rereadSession(ctx context.Context, id string) (cur *session.Data, done bool, err error) {
	cur, err = p.sess.Get(ctx, id)
	switch {
	case errors.Is(err, session.ErrNotFound):
		return nil, true, nil
	case err != nil:
		return nil, true, fmt.Errorf("oidc: session store: %w", err)
	}
	return cur, !p.needsRefresh(cur), nil
}

// graceOrFail keeps using a session whose access token has not expired yet
// when the provider cannot be reached; after expiry it is an error (503).
func (p *Provider) graceOrFail(d *session.Data, err error) (*session.Data, error) {
	if p.now().Before(d.TokenExpiry) {
		p.logger.Warn("token refresh postponed: identity provider unreachable", zap.Error(err))
		return d, nil
	}
	return nil, err
}
