package store

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/crmguard/crmguard/caddymodule/store/redistest"
)

func openTestRedis(t *testing.T, url string, c *clock) *Redis {
	t.Helper()
	s, err := OpenRedis(url, Options{Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestRedis(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Run(t)
	c := newClock()
	a, b := openTestRedis(t, srv.URL, c), openTestRedis(t, srv.URL, c)
	t.Run("the Store contract holds", func(t *testing.T) { testContract(t, a, c) })

	t.Run("two instances on one server", func(t *testing.T) {
		t.Run("a one-use grant used from both, 50 goroutines: exactly one succeeds", func(t *testing.T) {
			if err := a.Create(ctx, grantNS, &Record{Key: "shared", Value: []byte{1}}); err != nil {
				t.Fatal(err)
			}
			wins, used := usedConcurrently(ctx, t, []Store{a, b}, "shared", 50)
			if wins != 1 || used != 49 {
				t.Fatalf("%d succeeded, %d used up", wins, used)
			}
		})
		t.Run("counters are summed across both and max holds across both", func(t *testing.T) {
			var wg sync.WaitGroup
			for i := range 40 {
				s := []*Redis{a, b}[i%2]
				wg.Go(func() { _, _ = s.Add(ctx, "both", 5, 150, time.Minute) })
			}
			wg.Wait()
			ua, _ := a.Count(ctx, "both", time.Minute)
			ub, _ := b.Count(ctx, "both", time.Minute)
			if ua.Total != 150 || ub.Total != 150 {
				t.Fatalf("totals %d and %d, want 150 on both", ua.Total, ub.Total)
			}
		})
		t.Run("a session revoked on one is gone on the other", func(t *testing.T) {
			_ = a.Create(ctx, "session", &Record{Key: "s", Value: []byte("v"), Index: []string{"sub:qian"}})
			if n, err := b.DeleteIndexed(ctx, "session", "sub:qian"); n != 1 || err != nil {
				t.Fatalf("%d %v", n, err)
			}
			if _, err := a.Get(ctx, "session", "s"); !errors.Is(err, ErrNotFound) {
				t.Fatalf("err = %v", err)
			}
		})
	})

	t.Run("records expire on the server too, and their keys leave the namespace set", func(t *testing.T) {
		real := &clock{t: time.Now()}
		s := openTestRedis(t, srv.URL, real)
		_ = s.Create(ctx, "exp", &Record{Key: "k", Value: []byte("v"), Expires: time.Now().Add(-time.Second)})
		if n := s.c.Exists(ctx, s.prefix+"r:exp:k").Val(); n != 0 {
			t.Fatal("a record created already expired is kept on the server")
		}
		if got := keys(t, s, "exp", ""); len(got) != 0 {
			t.Fatalf("%v", got)
		}
	})

	t.Run("an index set lives as long as its longest-lived record", func(t *testing.T) {
		real := &clock{t: time.Now()}
		s := openTestRedis(t, srv.URL, real)
		_ = s.Create(ctx, "ttl", &Record{Key: "long", Value: []byte("v"), Expires: time.Now().Add(48 * time.Hour), Index: []string{"sub:qian"}})
		_ = s.Create(ctx, "ttl", &Record{Key: "short", Value: []byte("v"), Expires: time.Now().Add(time.Hour), Index: []string{"sub:qian"}})
		if ttl := s.c.PTTL(ctx, s.prefix+"x:ttl:sub:qian").Val(); ttl < 47*time.Hour {
			t.Fatalf("index set TTL %s, want about 48h", ttl)
		}
		_ = s.Create(ctx, "ttl", &Record{Key: "forever", Value: []byte("v"), Index: []string{"sub:qian"}})
		if ttl := s.c.PTTL(ctx, s.prefix+"x:ttl:sub:qian").Val(); ttl != -1 {
			t.Fatalf("a set holding a record without expiry has TTL %s, want none", ttl)
		}
	})

	t.Run("a server stopped mid-test: every call is ErrUnavailable, never not-found or an empty answer", func(t *testing.T) {
		other := redistest.Run(t)
		s := openTestRedis(t, other.URL, c)
		_ = s.Create(ctx, "session", &Record{Key: "s", Value: []byte("v"), Index: []string{"sub:x"}})
		other.Stop()
		for name, err := range map[string]error{
			"Get":           func() error { _, err := s.Get(ctx, "session", "s"); return err }(),
			"Create":        s.Create(ctx, "session", &Record{Key: "t"}),
			"Update":        s.Update(ctx, "session", &Record{Key: "s", Version: 1}),
			"Delete":        s.Delete(ctx, "session", "s"),
			"List":          func() error { _, err := s.List(ctx, "session", ""); return err }(),
			"DeleteIndexed": func() error { _, err := s.DeleteIndexed(ctx, "session", "sub:x"); return err }(),
			"Once":          func() error { _, err := s.Once(ctx, "k", time.Minute); return err }(),
			"Lock":          func() error { _, _, err := s.Lock(ctx, "k", time.Minute); return err }(),
			"Add":           func() error { _, err := s.Add(ctx, "k", 1, 10, time.Minute); return err }(),
			"Count":         func() error { _, err := s.Count(ctx, "k", time.Minute); return err }(),
			"Reset":         s.Reset(ctx, "k"),
			"Ping":          s.Ping(ctx),
		} {
			if !errors.Is(err, ErrUnavailable) {
				t.Errorf("%s: err = %v, want ErrUnavailable", name, err)
			}
		}
	})

	t.Run("a URL that is not a Redis URL is refused, without its password", func(t *testing.T) {
		_, err := OpenRedis("redis://:hunter2@[bad", Options{})
		if err == nil || strings.Contains(err.Error(), "hunter2") {
			t.Fatalf("err = %v", err)
		}
	})
}
