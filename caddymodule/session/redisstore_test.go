package session

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/crmguard/crmguard/caddymodule/session/redistest"
)

func TestRedisStore(t *testing.T) {
	ctx := context.Background()
	s, err := NewRedisStore(ctx, redistest.Start(t))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	d, other, third := newData("zhang", "sid-1"), newData("zhang", "sid-2"), newData("wang", "sid-3")
	for _, x := range []*Data{d, other, third} {
		if err := s.Create(ctx, x); err != nil {
			t.Fatal(err)
		}
	}
	t.Run("a created session reads back", func(t *testing.T) {
		got, err := s.Get(ctx, d.ID)
		if err != nil || got.Subject != "zhang" || got.Version != 1 {
			t.Fatalf("%+v %v", got, err)
		}
	})
	t.Run("concurrent updates of one version: exactly one wins", func(t *testing.T) {
		base, _ := s.Get(ctx, d.ID)
		var wg sync.WaitGroup
		var mu sync.Mutex
		wins, conflicts := 0, 0
		for range 16 {
			wg.Go(func() {
				c := *base
				err := s.Update(ctx, &c)
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					wins++
				case errors.Is(err, ErrConflict):
					conflicts++
				}
			})
		}
		wg.Wait()
		if wins != 1 || conflicts != 15 {
			t.Fatalf("%d wins, %d conflicts", wins, conflicts)
		}
	})
	t.Run("updating a deleted session is ErrNotFound", func(t *testing.T) {
		x := newData("sun", "")
		_ = s.Create(ctx, x)
		_ = s.Delete(ctx, x.ID)
		if err := s.Update(ctx, x); !errors.Is(err, ErrNotFound) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("revoking by sid ends only that session", func(t *testing.T) {
		if n, err := s.DeleteBySID(ctx, "sid-2"); n != 1 || err != nil {
			t.Fatalf("%d %v", n, err)
		}
		if _, err := s.Get(ctx, other.ID); !errors.Is(err, ErrNotFound) {
			t.Fatal("still there")
		}
		if _, err := s.Get(ctx, d.ID); err != nil {
			t.Fatal("another session went too")
		}
	})
	t.Run("revoking by subject ends all of the user's sessions", func(t *testing.T) {
		_ = s.Create(ctx, newData("zhang", ""))
		if n, err := s.DeleteBySubject(ctx, "zhang"); n != 2 || err != nil {
			t.Fatalf("%d %v", n, err)
		}
		if _, err := s.Get(ctx, third.ID); err != nil {
			t.Fatal("wang's session went too")
		}
	})
	t.Run("a session past its deadline is gone", func(t *testing.T) {
		x := newData("li", "")
		x.IdleUntil = time.Now().Add(-time.Second)
		x.Expires = time.Now().Add(-time.Second)
		_ = s.Create(ctx, x)
		if _, err := s.Get(ctx, x.ID); !errors.Is(err, ErrNotFound) {
			t.Fatalf("err = %v", err)
		}
	})
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
	t.Run("Once and Lock are exclusive", func(t *testing.T) {
		if ok, _ := s.Once(ctx, "k", time.Minute); !ok {
			t.Fatal("first")
		}
		if ok, _ := s.Once(ctx, "k", time.Minute); ok {
			t.Fatal("second")
		}
		rel, ok, _ := s.Lock(ctx, "l", time.Minute)
		if !ok {
			t.Fatal("not taken")
		}
		if _, ok2, _ := s.Lock(ctx, "l", time.Minute); ok2 {
			t.Fatal("taken twice")
		}
		rel()
		if _, ok3, _ := s.Lock(ctx, "l", time.Minute); !ok3 {
			t.Fatal("not released")
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
		if _, err := down.Get(ctx, d.ID); err == nil || errors.Is(err, ErrNotFound) || !strings.HasPrefix(err.Error(), "session: ") {
			t.Fatalf("Get: %v", err)
		}
	})
	t.Run("a URL that is not a Redis URL is refused", func(t *testing.T) {
		if _, err := NewRedisStore(ctx, "redis://[bad"); err == nil {
			t.Fatal("accepted")
		}
	})
}
