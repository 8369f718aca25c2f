package store

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// openTestBolt opens a Bolt in a temporary directory whose background
// flush and sweep never run on their own (tests call Flush and Sweep).
func openTestBolt(t *testing.T, path string, c *clock) *Bolt {
	t.Helper()
	s, err := OpenBolt(path, Options{Now: c.Now, FlushInterval: time.Hour, SweepInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestBolt(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "crmguard", "state.db")
	c := newClock()
	s := openTestBolt(t, path, c)
	t.Cleanup(func() { s.Close() })
	t.Run("the Store contract holds", func(t *testing.T) { testContract(t, s, c) })

	t.Run("the file and its directory are private to the user", func(t *testing.T) {
		fi, err := os.Stat(path)
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("file mode %v %v", fi.Mode(), err)
		}
		di, err := os.Stat(filepath.Dir(path))
		if err != nil || di.Mode().Perm() != 0o700 {
			t.Fatalf("directory mode %v %v", di.Mode(), err)
		}
	})

	t.Run("records, markers and counters survive a restart", func(t *testing.T) {
		_ = s.Create(ctx, "session", &Record{Key: "s1", Value: []byte("zhang"), Index: []string{"sub:zhang"}})
		_, _ = s.Once(ctx, "jti:1", time.Hour)
		_, _ = s.Add(ctx, "restart", 7, 100, time.Hour)
		_, _ = s.Add(ctx, "restart", 5, 100, time.Hour)
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		s = openTestBolt(t, path, c)
		if r, err := s.Get(ctx, "session", "s1"); err != nil || string(r.Value) != "zhang" {
			t.Fatalf("record: %+v %v", r, err)
		}
		if got := keys(t, s, "session", "sub:zhang"); len(got) != 1 {
			t.Fatalf("index: %v", got)
		}
		if ok, _ := s.Once(ctx, "jti:1", time.Hour); ok {
			t.Fatal("a marker was forgotten")
		}
		if u, _ := s.Count(ctx, "restart", time.Hour); u.Total != 12 {
			t.Fatalf("counter after restart: %d, want 12", u.Total)
		}
		if u, _ := s.Add(ctx, "restart", 89, 100, time.Hour); u.Added {
			t.Fatal("the restarted window let an add past max")
		}
	})

	t.Run("a crash loses at most the counter increments since the last flush, and nothing committed", func(t *testing.T) {
		_, _ = s.Add(ctx, "crash", 10, 0, time.Hour)
		if err := s.Flush(); err != nil {
			t.Fatal(err)
		}
		_, _ = s.Add(ctx, "crash", 1, 0, time.Hour) // not flushed
		_ = s.Create(ctx, "grant", &Record{Key: "g", Value: []byte{1}})
		_ = s.Reset(ctx, "restart")
		// What a crash now leaves on disk: the file as of its last commit.
		crashed := filepath.Join(t.TempDir(), "crashed.db")
		copyFile(t, path, crashed)
		cs := openTestBolt(t, crashed, c)
		defer cs.Close()
		if u, _ := cs.Count(ctx, "crash", time.Hour); u.Total != 10 {
			t.Fatalf("counter after a crash: %d, want 10 (the flushed part)", u.Total)
		}
		if _, err := cs.Get(ctx, "grant", "g"); err != nil {
			t.Fatalf("a committed grant was lost: %v", err)
		}
		if u, _ := cs.Count(ctx, "restart", time.Hour); u.Total != 0 {
			t.Fatalf("a committed reset was lost: %d", u.Total)
		}
	})

	t.Run("a flush after a reset does not bring the window back", func(t *testing.T) {
		_, _ = s.Add(ctx, "reset-flush", 3, 0, time.Hour)
		_ = s.Reset(ctx, "reset-flush")
		_ = s.Flush()
		_ = s.Close()
		s = openTestBolt(t, path, c)
		if u, _ := s.Count(ctx, "reset-flush", time.Hour); u.Total != 0 {
			t.Fatalf("%d", u.Total)
		}
	})

	t.Run("Sweep removes expired records with their index entries, markers and empty windows", func(t *testing.T) {
		_ = s.Create(ctx, "sweep", &Record{Key: "old", Value: []byte("x"), Expires: c.Now().Add(time.Minute), Index: []string{"sub:sun"}})
		_ = s.Create(ctx, "sweep", &Record{Key: "new", Value: []byte("x"), Index: []string{"sub:sun"}})
		_, _ = s.Once(ctx, "sweep-marker", time.Minute)
		_, _ = s.Add(ctx, "sweep-counter", 1, 0, time.Minute)
		_ = s.Flush()
		c.Advance(2 * time.Minute)
		if err := s.Sweep(); err != nil {
			t.Fatal(err)
		}
		err := s.db.View(func(tx *bolt.Tx) error {
			if tx.Bucket(recordBucket("sweep")).Get([]byte("old")) != nil {
				t.Error("the expired record is still in the file")
			}
			if tx.Bucket(indexBucket("sweep")).Get(indexKey("sub:sun", "old")) != nil {
				t.Error("its index entry is still in the file")
			}
			if tx.Bucket(indexBucket("sweep")).Get(indexKey("sub:sun", "new")) == nil {
				t.Error("the live record's index entry went too")
			}
			if tx.Bucket(bucketOnce).Get([]byte("sweep-marker")) != nil {
				t.Error("the expired marker is still in the file")
			}
			if tx.Bucket(bucketCounters).Get([]byte("sweep-counter")) != nil {
				t.Error("the empty window is still in the file")
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})

	t.Run("a second process cannot open the file: a clear error after the timeout", func(t *testing.T) {
		// bbolt's file lock is per open file, so a second OpenBolt in this
		// process meets it just as another process would.
		_, err := OpenBolt(path, Options{})
		if err == nil || !strings.Contains(err.Error(), "is in use by another process") {
			t.Fatalf("err = %v", err)
		}
	})

	t.Run("a corrupt record is an error, never not-found or a default", func(t *testing.T) {
		_ = s.db.Update(func(tx *bolt.Tx) error {
			b, _ := tx.CreateBucketIfNotExists(recordBucket("corrupt"))
			return b.Put([]byte("k"), []byte{1, 0xff})
		})
		if _, err := s.Get(ctx, "corrupt", "k"); !errors.Is(err, ErrUnavailable) {
			t.Fatalf("err = %v", err)
		}
	})

	t.Run("a closed store is unavailable and says bbolt's cause", func(t *testing.T) {
		_ = s.Close()
		_, err := s.Get(ctx, "session", "s1")
		if !errors.Is(err, ErrUnavailable) || !errors.Is(err, bolt.ErrDatabaseNotOpen) {
			t.Fatalf("err = %v, want ErrUnavailable wrapping bolt.ErrDatabaseNotOpen", err)
		}
		s = openTestBolt(t, path, c)
	})
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestRecordAndWindowEncodings(t *testing.T) {
	t.Run("a record round-trips", func(t *testing.T) {
		r := &Record{Key: "k", Value: []byte("v\x00"), Version: 42, Expires: time.UnixMilli(1700000000123), Index: []string{"a", "b:c"}}
		got, err := decodeRecord("k", encodeRecord(r))
		if err != nil || got.Version != 42 || !got.Expires.Equal(r.Expires) || string(got.Value) != "v\x00" || strings.Join(got.Index, ",") != "a,b:c" {
			t.Fatalf("%+v %v", got, err)
		}
	})
	t.Run("truncated or foreign record bytes are refused", func(t *testing.T) {
		full := encodeRecord(&Record{Key: "k", Value: []byte("v"), Version: 3, Index: []string{"term"}})
		for _, b := range [][]byte{nil, {2}, full[:2], full[:4], {1, 2, 0, 9, 1}, {1, 2, 0, 1, 200, 'a'}} {
			if _, err := decodeRecord("k", b); err == nil {
				t.Errorf("%x decoded", b)
			}
		}
	})
	t.Run("a window round-trips with its span and events", func(t *testing.T) {
		w := &window{}
		w.add(1000, 60000, 5, 0)
		w.add(1000, 60000, 2, 0)
		w.add(2500, 60000, 1, 0)
		got, err := decodeWindow(w.encode())
		if err != nil || got.total != 8 || got.span != 60000 || len(got.events) != 2 || got.events[1].at != 2500 {
			t.Fatalf("%+v %v", got, err)
		}
	})
	t.Run("truncated or padded window bytes are refused", func(t *testing.T) {
		w := &window{}
		w.add(1000, 60000, 5, 0)
		b := w.encode()
		for _, bad := range [][]byte{nil, b[:len(b)-1], append(bytes.Clone(b), 0), {2, 200}} {
			if _, err := decodeWindow(bad); err == nil {
				t.Errorf("%x decoded", bad)
			}
		}
	})
}
