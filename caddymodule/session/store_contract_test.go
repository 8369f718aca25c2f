package session

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/crmguard/crmguard/caddymodule/store"
	"github.com/crmguard/crmguard/caddymodule/store/redistest"
)

// testStoreContract checks the session API on an empty state store s:
// TestStore runs it on both implementations of package store (whose own
// contract test covers records, grants, counters, markers and locks).
func testStoreContract(t *testing.T, s *Store) {
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
	t.Run("creating a session id that exists is refused", func(t *testing.T) {
		dup := newData("c-qian", "")
		dup.ID = third.ID
		if err := s.Create(ctx, dup); err == nil {
			t.Fatal("accepted")
		}
		if got, _ := s.Get(ctx, third.ID); got.Subject != "c-wang" {
			t.Fatalf("overwritten by %q", got.Subject)
		}
	})
	t.Run("ids that are not session ids are not found", func(t *testing.T) {
		for _, id := range []string{"../../etc/passwd", "", "a/b", strings.Repeat("a", 300), "short"} {
			if _, err := s.Get(ctx, id); !errors.Is(err, ErrNotFound) {
				t.Fatalf("Get(%q) = %v", id, err)
			}
		}
	})
	t.Run("Once and Lock are the store's", func(t *testing.T) {
		if ok, _ := s.Once(ctx, "c-k", time.Minute); !ok {
			t.Fatal("first")
		}
		if ok, _ := s.Once(ctx, "c-k", time.Minute); ok {
			t.Fatal("second")
		}
		rel, ok, _ := s.Lock(ctx, "c-l", time.Minute)
		if !ok {
			t.Fatal("not taken")
		}
		if _, ok2, _ := s.Lock(ctx, "c-l", time.Minute); ok2 {
			t.Fatal("taken twice")
		}
		rel()
	})
}

func TestStore(t *testing.T) {
	ctx := context.Background()
	t.Run("on the embedded store", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "state.db")
		st := must(store.OpenBolt(path, store.Options{}))
		s := NewStore(st)
		t.Run("the session contract holds", func(t *testing.T) { testStoreContract(t, s) })
		t.Run("sessions survive a restart", func(t *testing.T) {
			d := newData("zhang", "sid-1")
			if err := s.Create(ctx, d); err != nil {
				t.Fatal(err)
			}
			_ = st.Close()
			st = must(store.OpenBolt(path, store.Options{}))
			s = NewStore(st)
			got, err := s.Get(ctx, d.ID)
			if err != nil || got.Subject != "zhang" || got.Version != 1 {
				t.Fatalf("%+v %v", got, err)
			}
			if n, err := s.DeleteBySID(ctx, "sid-1"); n != 1 || err != nil {
				t.Fatalf("the sid index after a restart: %d %v", n, err)
			}
		})
		_ = st.Close()
	})
	t.Run("on Redis", func(t *testing.T) {
		st := must(store.OpenRedis(redistest.Start(t), store.Options{}))
		defer st.Close()
		testStoreContract(t, NewStore(st))
	})
}
