package devidp

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/zitadel/oidc/v3/pkg/crypto"
	"github.com/zitadel/oidc/v3/pkg/oidc"
)

// sendLogoutToken posts an OIDC Back-Channel Logout token for (user, sid)
// to the client's back-channel URI.
func (s *Server) sendLogoutToken(ctx context.Context, key *signingKey, c Client, user, sid string) error {
	claims := oidc.NewLogoutTokenClaims(s.cfg.Issuer, user, oidc.Audience{c.ID}, time.Now().Add(2*time.Minute), randomID(), sid, 0)
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: key.key},
		(&jose.SignerOptions{}).WithType("logout+jwt").WithHeader("kid", key.id))
	if err != nil {
		return fmt.Errorf("devidp: logout token signer: %w", err)
	}
	token, err := crypto.Sign(claims, signer)
	if err != nil {
		return fmt.Errorf("devidp: signing logout token: %w", err)
	}
	req, err := http.NewRequestWithContext(context.WithoutCancel(ctx), http.MethodPost, c.BackchannelLogoutURI,
		strings.NewReader(url.Values{"logout_token": {token}}.Encode()))
	if err != nil {
		return fmt.Errorf("devidp: back-channel request: %w", err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := s.cfg.HTTPClient.Do(req)
	if err != nil {
		return fmt.Errorf("devidp: back-channel logout to %s: %w", c.BackchannelLogoutURI, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("devidp: back-channel logout to %s answered %d: %s", c.BackchannelLogoutURI, resp.StatusCode, body)
	}
	s.cfg.Logger.Info("devidp: back-channel logout sent", "client", c.ID, "user", user, "sid", sid)
	return nil
}
