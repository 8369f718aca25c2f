package session

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/crmguard/crmguard/caddymodule/store/redistest"
)

func TestRedisStore(t *testing.T) {
	ctx := context.Background()
	s, err := NewRedisStore(ctx, redistest.Start(t))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	t.Run("the Store contract holds", func(t *testing.T) { testStoreContract(t, s) })
	t.Run("the sub index lives as long as the user's longest session", func(t *testing.T) {
		long, short := newData("qian", ""), newData("qian", "")
		long.Expires = time.Now().Add(48 * time.Hour)
		short.Expires = time.Now().Add(time.Hour)
		_ = s.Create(ctx, long)
		_ = s.Create(ctx, short)
		ttl := s.c.PTTL(ctx, s.key("sub", "qian")).Val()
		if ttl < 47*time.Hour {
			t.Fatalf("sub index TTL %s, want about 48h", ttl)
		}
	})
	t.Run("a server that does not answer gives clear errors, not a failed start", func(t *testing.T) {
		down, err := NewRedisStore(ctx, "redis://127.0.0.1:1/0")
		if err != nil {
			t.Fatal(err)
		}
		defer down.Close()
		if err := down.Ping(ctx); err == nil || !strings.HasPrefix(err.Error(), "session: redis store 127.0.0.1:1 does not answer") {
			t.Fatalf("Ping: %v", err)
		}
		if _, err := down.Get(ctx, RandomID(32)); err == nil || errors.Is(err, ErrNotFound) || !strings.HasPrefix(err.Error(), "session: ") {
			t.Fatalf("Get: %v", err)
		}
	})
	t.Run("a URL that is not a Redis URL is refused", func(t *testing.T) {
		if _, err := NewRedisStore(ctx, "redis://[bad"); err == nil {
			t.Fatal("accepted")
		}
	})
}
