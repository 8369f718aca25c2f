package session

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// testStoreContract checks what every Store must do, on an empty store s:
// TestFileStore and TestRedisStore run it, then test what only their
// store does.
func testStoreContract(t *testing.T, s Store) {
	ctx := context.Background()
	d, other, third := newData("c-zhang", "c-sid-1"), newData("c-zhang", "c-sid-2"), newData("c-wang", "c-sid-3")
	for _, x := range []*Data{d, other, third} {
		if err := s.Create(ctx, x); err != nil {
			t.Fatal(err)
		}
	}
	t.Run("a created session reads back at version 1", func(t *testing.T) {
		got, err := s.Get(ctx, d.ID)
		if err != nil || got.Subject != "c-zhang" || got.Version != 1 {
			t.Fatalf("%+v %v", got, err)
		}
	})
	t.Run("an update with a stale version is a conflict", func(t *testing.T) {
		a, _ := s.Get(ctx, d.ID)
		b, _ := s.Get(ctx, d.ID)
		if err := s.Update(ctx, a); err != nil {
			t.Fatal(err)
		}
		if err := s.Update(ctx, b); !errors.Is(err, ErrConflict) {
			t.Fatalf("err = %v, want ErrConflict", err)
		}
	})
	t.Run("concurrent updates of one version: exactly one wins, the others conflict", func(t *testing.T) {
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
		x := newData("c-sun", "")
		_ = s.Create(ctx, x)
		_ = s.Delete(ctx, x.ID)
		if err := s.Update(ctx, x); !errors.Is(err, ErrNotFound) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("revoking by sid ends only that session", func(t *testing.T) {
		if n, err := s.DeleteBySID(ctx, "c-sid-2"); n != 1 || err != nil {
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
		_ = s.Create(ctx, newData("c-zhang", ""))
		if n, err := s.DeleteBySubject(ctx, "c-zhang"); n != 2 || err != nil {
			t.Fatalf("%d %v", n, err)
		}
		if _, err := s.Get(ctx, third.ID); err != nil {
			t.Fatal("wang's session went too")
		}
	})
	t.Run("a session past its deadline is gone", func(t *testing.T) {
		x := newData("c-li", "")
		x.IdleUntil = time.Now().Add(-time.Second)
		x.Expires = time.Now().Add(-time.Second)
		_ = s.Create(ctx, x)
		if _, err := s.Get(ctx, x.ID); !errors.Is(err, ErrNotFound) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("Once reports a key only the first time", func(t *testing.T) {
		if ok, _ := s.Once(ctx, "c-k", time.Minute); !ok {
			t.Fatal("first")
		}
		if ok, _ := s.Once(ctx, "c-k", time.Minute); ok {
			t.Fatal("second")
		}
	})
	t.Run("a lock is exclusive until released", func(t *testing.T) {
		rel, ok, _ := s.Lock(ctx, "c-l", time.Minute)
		if !ok {
			t.Fatal("not taken")
		}
		if _, ok2, _ := s.Lock(ctx, "c-l", time.Minute); ok2 {
			t.Fatal("taken twice")
		}
		rel()
		if _, ok3, _ := s.Lock(ctx, "c-l", time.Minute); !ok3 {
			t.Fatal("not released")
		}
	})
}
