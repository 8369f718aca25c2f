package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// clock is a test clock that only moves when told.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Now().Truncate(time.Millisecond)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// grant is what a one-use grant looks like to the contract test.
const grantNS = "c-grant"

// useGrant consumes one use of the grant key: the value is the number of
// uses left, as one byte.
func useGrant(ctx context.Context, s Store, key string) error {
	_, err := Modify(ctx, s, grantNS, key, func(cur *Record) (*Record, error) {
		if len(cur.Value) != 1 || cur.Value[0] == 0 {
			return nil, errUsedUp
		}
		next := *cur
		next.Value = []byte{cur.Value[0] - 1}
		return &next, nil
	})
	return err
}

var errUsedUp = errors.New("no use left")

// testContract checks what every Store must do, on an empty store s whose
// clock is c: TestBolt and TestRedis run it, then test what only their
// store does.
func testContract(t *testing.T, s Store, c *clock) {
	ctx := context.Background()
	t.Run("records", func(t *testing.T) { testRecords(t, ctx, s, c) })
	t.Run("one-use grants", func(t *testing.T) {
		t.Run("50 goroutines using a one-use grant: exactly one succeeds", func(t *testing.T) {
			if err := s.Create(ctx, grantNS, &Record{Key: "g-once", Value: []byte{1}}); err != nil {
				t.Fatal(err)
			}
			wins, used := usedConcurrently(ctx, t, []Store{s}, "g-once", 50)
			if wins != 1 || used != 49 {
				t.Fatalf("%d succeeded, %d were told it is used up, want 1 and 49", wins, used)
			}
		})
		t.Run("a grant of three uses is used three times", func(t *testing.T) {
			if err := s.Create(ctx, grantNS, &Record{Key: "g-three", Value: []byte{3}}); err != nil {
				t.Fatal(err)
			}
			if wins, _ := usedConcurrently(ctx, t, []Store{s}, "g-three", 20); wins != 3 {
				t.Fatalf("%d uses, want 3", wins)
			}
		})
		t.Run("a grant that expired cannot be used", func(t *testing.T) {
			_ = s.Create(ctx, grantNS, &Record{Key: "g-old", Value: []byte{1}, Expires: c.Now().Add(time.Minute)})
			c.Advance(time.Minute)
			if err := useGrant(ctx, s, "g-old"); !errors.Is(err, ErrNotFound) {
				t.Fatalf("err = %v, want ErrNotFound", err)
			}
		})
	})
	t.Run("counters", func(t *testing.T) { testCounters(t, ctx, s, c) })
	t.Run("Once reports a key only the first time, until its ttl has passed", func(t *testing.T) {
		for i, want := range []bool{true, false} {
			if ok, err := s.Once(ctx, "c-k", time.Minute); ok != want || err != nil {
				t.Fatalf("call %d: %v %v, want %v", i+1, ok, err, want)
			}
		}
		c.Advance(time.Minute)
		if ok, err := s.Once(ctx, "c-k", time.Minute); !ok || err != nil {
			t.Fatalf("after the ttl: %v %v", ok, err)
		}
	})
	t.Run("Once under 20 concurrent callers: one is first", func(t *testing.T) {
		var firsts atomic.Int32
		var wg sync.WaitGroup
		for range 20 {
			wg.Go(func() {
				if ok, err := s.Once(ctx, "c-race", time.Minute); ok && err == nil {
					firsts.Add(1)
				}
			})
		}
		wg.Wait()
		if firsts.Load() != 1 {
			t.Fatalf("%d firsts", firsts.Load())
		}
	})
	t.Run("locks", func(t *testing.T) {
		t.Run("a lock is exclusive until released", func(t *testing.T) {
			rel, ok, err := s.Lock(ctx, "c-l", time.Minute)
			if !ok || err != nil {
				t.Fatalf("not taken: %v", err)
			}
			if _, ok2, _ := s.Lock(ctx, "c-l", time.Minute); ok2 {
				t.Fatal("taken twice")
			}
			rel()
			rel3, ok3, _ := s.Lock(ctx, "c-l", time.Minute)
			if !ok3 {
				t.Fatal("not released")
			}
			rel3()
		})
		t.Run("a lock held past its ttl is free, and the late holder's release leaves the new holder's lock alone", func(t *testing.T) {
			late, ok, _ := s.Lock(ctx, "c-ttl", time.Second)
			if !ok {
				t.Fatal("not taken")
			}
			c.Advance(time.Second)
			now, ok, _ := s.Lock(ctx, "c-ttl", time.Minute)
			if !ok {
				t.Fatal("an expired lock was not free")
			}
			late()
			if _, ok, _ := s.Lock(ctx, "c-ttl", time.Minute); ok {
				t.Fatal("the late release freed the new holder's lock")
			}
			now()
		})
	})
	t.Run("names the store cannot keep apart are refused", func(t *testing.T) {
		long := string(make([]byte, MaxKeyLength+1))
		for _, tc := range []struct {
			name string
			err  error
		}{
			{"an empty namespace", s.Create(ctx, "", &Record{Key: "k"})},
			{"a namespace with a colon", s.Create(ctx, "a:b", &Record{Key: "k"})},
			{"an upper-case namespace", s.Create(ctx, "Session", &Record{Key: "k"})},
			{"an empty key", s.Create(ctx, "c-ns", &Record{Key: ""})},
			{"a key with a NUL byte", s.Create(ctx, "c-ns", &Record{Key: "a\x00b"})},
			{"a key over the limit", s.Create(ctx, "c-ns", &Record{Key: long})},
			{"an index term with a newline", s.Create(ctx, "c-ns", &Record{Key: "k", Index: []string{"a\nb"}})},
			{"a counter key with a newline", func() error { _, err := s.Add(ctx, "a\nb", 1, 0, time.Minute); return err }()},
			{"a counter window under a millisecond", func() error { _, err := s.Add(ctx, "k", 1, 0, time.Microsecond); return err }()},
			{"a negative increment", func() error { _, err := s.Add(ctx, "k", -1, 0, time.Minute); return err }()},
		} {
			if !errors.Is(tc.err, ErrInvalid) {
				t.Errorf("%s: err = %v, want ErrInvalid", tc.name, tc.err)
			}
		}
	})
	t.Run("the store answers Ping", func(t *testing.T) {
		if err := s.Ping(ctx); err != nil {
			t.Fatal(err)
		}
	})
}

// usedConcurrently has n goroutines, spread over the stores, use the grant
// key once each, and counts successes and "used up" refusals.
func usedConcurrently(ctx context.Context, t *testing.T, stores []Store, key string, n int) (wins, usedUp int) {
	t.Helper()
	var mu sync.Mutex
	var others []error
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		s := stores[i%len(stores)]
		wg.Go(func() {
			<-start
			err := useGrant(ctx, s, key)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				wins++
			case errors.Is(err, errUsedUp):
				usedUp++
			default:
				others = append(others, err)
			}
		})
	}
	close(start)
	wg.Wait()
	if len(others) > 0 {
		t.Fatalf("unexpected errors: %v", others)
	}
	return wins, usedUp
}

func testRecords(t *testing.T, ctx context.Context, s Store, c *clock) {
	const ns = "c-rec"
	exp := c.Now().Add(time.Hour)
	a := &Record{Key: "a", Value: []byte(`{"x":1}`), Expires: exp, Index: []string{"sub:zhang", "sid:1"}}
	if err := s.Create(ctx, ns, a); err != nil || a.Version != 1 {
		t.Fatalf("Create: %v, version %d", err, a.Version)
	}
	t.Run("a created record reads back at version 1 with its value, expiry and index terms", func(t *testing.T) {
		got, err := s.Get(ctx, ns, "a")
		if err != nil || string(got.Value) != `{"x":1}` || got.Version != 1 || !got.Expires.Equal(exp) ||
			!slices.Equal(got.Index, []string{"sub:zhang", "sid:1"}) {
			t.Fatalf("%+v %v", got, err)
		}
	})
	t.Run("creating a live key again is ErrExists and changes nothing", func(t *testing.T) {
		if err := s.Create(ctx, ns, &Record{Key: "a", Value: []byte("other")}); !errors.Is(err, ErrExists) {
			t.Fatalf("err = %v", err)
		}
		if got, _ := s.Get(ctx, ns, "a"); string(got.Value) != `{"x":1}` {
			t.Fatalf("value %q", got.Value)
		}
	})
	t.Run("an unknown key is ErrNotFound", func(t *testing.T) {
		if _, err := s.Get(ctx, ns, "nope"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("err = %v", err)
		}
		if _, err := s.Get(ctx, "c-other", "a"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("another namespace: err = %v", err)
		}
	})
	t.Run("an update with a stale version is a conflict and the first update stays", func(t *testing.T) {
		x, _ := s.Get(ctx, ns, "a")
		y, _ := s.Get(ctx, ns, "a")
		x.Value = []byte("first")
		if err := s.Update(ctx, ns, x); err != nil || x.Version != 2 {
			t.Fatalf("%v version %d", err, x.Version)
		}
		y.Value = []byte("second")
		if err := s.Update(ctx, ns, y); !errors.Is(err, ErrConflict) || y.Version != 1 {
			t.Fatalf("err = %v, version %d", err, y.Version)
		}
		if got, _ := s.Get(ctx, ns, "a"); string(got.Value) != "first" || got.Version != 2 {
			t.Fatalf("%+v", got)
		}
	})
	t.Run("16 concurrent updates of one version: exactly one wins, the others conflict", func(t *testing.T) {
		base, _ := s.Get(ctx, ns, "a")
		var wins, conflicts atomic.Int32
		var wg sync.WaitGroup
		for i := range 16 {
			wg.Go(func() {
				r := *base
				r.Value = fmt.Appendf(nil, "writer %d", i)
				switch err := s.Update(ctx, ns, &r); {
				case err == nil:
					wins.Add(1)
				case errors.Is(err, ErrConflict):
					conflicts.Add(1)
				}
			})
		}
		wg.Wait()
		if wins.Load() != 1 || conflicts.Load() != 15 {
			t.Fatalf("%d wins, %d conflicts", wins.Load(), conflicts.Load())
		}
	})
	t.Run("updating a deleted record is ErrNotFound and does not bring it back", func(t *testing.T) {
		x := &Record{Key: "gone", Value: []byte("v")}
		_ = s.Create(ctx, ns, x)
		if err := s.Delete(ctx, ns, "gone"); err != nil {
			t.Fatal(err)
		}
		if err := s.Update(ctx, ns, x); !errors.Is(err, ErrNotFound) {
			t.Fatalf("err = %v", err)
		}
		if _, err := s.Get(ctx, ns, "gone"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("err = %v", err)
		}
		if err := s.Delete(ctx, ns, "gone"); err != nil {
			t.Fatalf("deleting again: %v", err)
		}
	})
	t.Run("an update replaces the index terms", func(t *testing.T) {
		b := &Record{Key: "b", Value: []byte("b"), Index: []string{"team:east"}}
		_ = s.Create(ctx, ns, b)
		b.Index = []string{"team:west"}
		if err := s.Update(ctx, ns, b); err != nil {
			t.Fatal(err)
		}
		if got := keys(t, s, ns, "team:east"); len(got) != 0 {
			t.Fatalf("still listed under the old term: %v", got)
		}
		if got := keys(t, s, ns, "team:west"); !slices.Equal(got, []string{"b"}) {
			t.Fatalf("under the new term: %v", got)
		}
	})
	t.Run("List gives a namespace's live records in key order, or those carrying a term", func(t *testing.T) {
		_ = s.Create(ctx, "c-other", &Record{Key: "z", Value: []byte("elsewhere"), Index: []string{"sub:zhang"}})
		_ = s.Create(ctx, ns, &Record{Key: "c", Value: []byte("c"), Index: []string{"sub:zhang"}})
		if got := keys(t, s, ns, ""); !slices.Equal(got, []string{"a", "b", "c"}) {
			t.Fatalf("all: %v", got)
		}
		if got := keys(t, s, ns, "sub:zhang"); !slices.Equal(got, []string{"a", "c"}) {
			t.Fatalf("sub:zhang: %v", got)
		}
		if got := keys(t, s, ns, "sub:nobody"); len(got) != 0 {
			t.Fatalf("sub:nobody: %v", got)
		}
	})
	t.Run("DeleteIndexed removes only the records carrying the term and counts them", func(t *testing.T) {
		n, err := s.DeleteIndexed(ctx, ns, "sub:zhang")
		if n != 2 || err != nil {
			t.Fatalf("%d %v", n, err)
		}
		if got := keys(t, s, ns, ""); !slices.Equal(got, []string{"b"}) {
			t.Fatalf("left: %v", got)
		}
		if got := keys(t, s, "c-other", "sub:zhang"); !slices.Equal(got, []string{"z"}) {
			t.Fatalf("another namespace lost records: %v", got)
		}
		if n, err := s.DeleteIndexed(ctx, ns, "sub:zhang"); n != 0 || err != nil {
			t.Fatalf("again: %d %v", n, err)
		}
	})
	t.Run("a record past its expiry is gone for Get, Update, List and DeleteIndexed, and its key is free", func(t *testing.T) {
		e := &Record{Key: "e", Value: []byte("e"), Expires: c.Now().Add(time.Minute), Index: []string{"sub:li"}}
		if err := s.Create(ctx, ns, e); err != nil {
			t.Fatal(err)
		}
		c.Advance(time.Minute)
		if _, err := s.Get(ctx, ns, "e"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Get: %v", err)
		}
		if err := s.Update(ctx, ns, e); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Update: %v", err)
		}
		if got := keys(t, s, ns, "sub:li"); len(got) != 0 {
			t.Fatalf("List: %v", got)
		}
		if n, _ := s.DeleteIndexed(ctx, ns, "sub:li"); n != 0 {
			t.Fatalf("DeleteIndexed counted %d", n)
		}
		if err := s.Create(ctx, ns, &Record{Key: "e", Value: []byte("new"), Index: []string{"sub:li"}}); err != nil {
			t.Fatalf("Create again: %v", err)
		}
		if got := keys(t, s, ns, "sub:li"); !slices.Equal(got, []string{"e"}) {
			t.Fatalf("List after re-create: %v", got)
		}
	})
	t.Run("an update can set and clear the expiry", func(t *testing.T) {
		r, _ := s.Get(ctx, ns, "b")
		r.Expires = c.Now().Add(time.Second)
		if err := s.Update(ctx, ns, r); err != nil {
			t.Fatal(err)
		}
		r.Expires = time.Time{}
		if err := s.Update(ctx, ns, r); err != nil {
			t.Fatal(err)
		}
		c.Advance(2 * time.Second)
		if _, err := s.Get(ctx, ns, "b"); err != nil {
			t.Fatalf("a record without expiry expired: %v", err)
		}
	})
	t.Run("values are kept byte for byte", func(t *testing.T) {
		v := []byte{0, 1, 2, 255, '\n', ':', 0}
		_ = s.Create(ctx, ns, &Record{Key: "bin:\xff", Value: v})
		if got, err := s.Get(ctx, ns, "bin:\xff"); err != nil || string(got.Value) != string(v) {
			t.Fatalf("%q %v", got.Value, err)
		}
	})
}

func keys(t *testing.T, s Store, ns, term string) []string {
	t.Helper()
	rs, err := s.List(context.Background(), ns, term)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range rs {
		out = append(out, r.Key)
	}
	return out
}

func testCounters(t *testing.T, ctx context.Context, s Store, c *clock) {
	const w = 10 * time.Minute
	t.Run("adds count until max; the add that would exceed it is refused whole and says when it fits", func(t *testing.T) {
		t0 := c.Now()
		for i, n := range []int64{300, 150} {
			u, err := s.Add(ctx, "c-user:zhang", n, 500, w)
			if err != nil || !u.Added {
				t.Fatalf("add %d: %+v %v", i, u, err)
			}
			c.Advance(time.Minute)
		}
		u, err := s.Add(ctx, "c-user:zhang", 100, 500, w)
		if err != nil || u.Added || u.Total != 450 {
			t.Fatalf("%+v %v", u, err)
		}
		// 450+100 > 500 until the 300 of t0 leaves the window.
		if !u.RetryAt.Equal(t0.Add(w)) {
			t.Fatalf("RetryAt %s, want %s", u.RetryAt, t0.Add(w))
		}
		if u, _ := s.Add(ctx, "c-user:zhang", 50, 500, w); !u.Added || u.Total != 500 {
			t.Fatalf("an add up to max exactly: %+v", u)
		}
	})
	t.Run("the window slides: an event stops counting once the window has passed it", func(t *testing.T) {
		// Events at t0 (300) and t0+1m (150, 50 at t0+2m); now is t0+2m.
		c.Advance(8*time.Minute - time.Millisecond)
		if u, _ := s.Count(ctx, "c-user:zhang", w); u.Total != 500 {
			t.Fatalf("just before t0+10m: %d", u.Total)
		}
		c.Advance(time.Millisecond)
		if u, _ := s.Count(ctx, "c-user:zhang", w); u.Total != 200 {
			t.Fatalf("at t0+10m: %d", u.Total)
		}
		if u, _ := s.Add(ctx, "c-user:zhang", 100, 500, w); !u.Added || u.Total != 300 {
			t.Fatalf("the refused add fits now: %+v", u)
		}
	})
	t.Run("Count reads without adding, and other keys are apart", func(t *testing.T) {
		for range 3 {
			if u, _ := s.Count(ctx, "c-user:zhang", w); u.Total != 300 || u.Added {
				t.Fatalf("%+v", u)
			}
		}
		if u, _ := s.Count(ctx, "c-user:wang", w); u.Total != 0 {
			t.Fatalf("wang: %+v", u)
		}
	})
	t.Run("Reset opens a fresh window", func(t *testing.T) {
		if err := s.Reset(ctx, "c-user:zhang"); err != nil {
			t.Fatal(err)
		}
		if u, _ := s.Count(ctx, "c-user:zhang", w); u.Total != 0 {
			t.Fatalf("after reset: %d", u.Total)
		}
		if u, _ := s.Add(ctx, "c-user:zhang", 500, 500, w); !u.Added || u.Total != 500 {
			t.Fatalf("a full window after reset: %+v", u)
		}
		if err := s.Reset(ctx, "c-never-used"); err != nil {
			t.Fatalf("resetting an unknown key: %v", err)
		}
	})
	t.Run("an add larger than max is refused and never fits", func(t *testing.T) {
		u, err := s.Add(ctx, "c-big", 501, 500, w)
		if err != nil || u.Added || !u.RetryAt.IsZero() || u.Total != 0 {
			t.Fatalf("%+v %v", u, err)
		}
	})
	t.Run("without max every add counts", func(t *testing.T) {
		for range 3 {
			_, _ = s.Add(ctx, "c-alert", 1000, 0, w)
		}
		if u, _ := s.Count(ctx, "c-alert", w); u.Total != 3000 {
			t.Fatalf("%d", u.Total)
		}
	})
	t.Run("50 concurrent adds never exceed max", func(t *testing.T) {
		var added atomic.Int64
		var wg sync.WaitGroup
		for range 50 {
			wg.Go(func() {
				u, err := s.Add(ctx, "c-race", 3, 100, w)
				if err == nil && u.Added {
					added.Add(3)
				}
			})
		}
		wg.Wait()
		u, _ := s.Count(ctx, "c-race", w)
		if u.Total != 99 || added.Load() != 99 {
			t.Fatalf("total %d, adds reported %d, want 99 (33 adds of 3)", u.Total, added.Load())
		}
	})
}
