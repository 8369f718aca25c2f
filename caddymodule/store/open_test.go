package store

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseLocation(t *testing.T) {
	data := t.TempDir()
	dir := t.TempDir()
	wd, _ := os.Getwd()
	for _, tc := range []struct {
		name, spec string
		want       Location
		err        string
	}{
		{name: "no setting is the default file under the data directory", spec: "", want: Location{Path: filepath.Join(data, "crmguard", "state.db")}},
		{name: "file is the default file", spec: "file", want: Location{Path: filepath.Join(data, "crmguard", "state.db")}},
		{name: "file:<dir> (the former session setting) is state.db in that directory", spec: "file:" + dir, want: Location{Path: filepath.Join(dir, "state.db")}},
		{name: "a path is that file", spec: "/var/lib/crmguard/state.db", want: Location{Path: "/var/lib/crmguard/state.db"}},
		{name: "a relative path is made absolute", spec: "state.db", want: Location{Path: filepath.Join(wd, "state.db")}},
		{name: "a redis URL is Redis", spec: "redis://:pw@10.0.0.5:6379/0", want: Location{URL: "redis://:pw@10.0.0.5:6379/0"}},
		{name: "a rediss URL is Redis over TLS", spec: "rediss://10.0.0.5:6380/1", want: Location{URL: "rediss://10.0.0.5:6380/1"}},
		{name: "a unix socket URL is Redis", spec: "unix:///run/redis.sock", want: Location{URL: "unix:///run/redis.sock"}},
		{name: "a directory is refused with the file to name instead", spec: dir, err: "is a directory"},
		{name: "file: without a directory is refused", spec: "file:", err: "names no directory"},
		{name: "another scheme is refused", spec: "memcached://x", err: "unknown store"},
		{name: "a broken redis URL is refused without its password", spec: "redis://:secret@[x", err: "redis URL redis://***@[x"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseLocation(tc.spec, data)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) || strings.Contains(err.Error(), "secret") {
					t.Fatalf("err = %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("%+v %v, want %+v", got, err, tc.want)
			}
		})
	}
	t.Run("a location's name hides a Redis password", func(t *testing.T) {
		if s := (Location{URL: "redis://:pw@h:1/0"}).String(); strings.Contains(s, "pw") {
			t.Fatal(s)
		}
	})
}

func TestOpenSharesOneHandlePerLocation(t *testing.T) {
	ctx := context.Background()
	loc := Location{Path: filepath.Join(t.TempDir(), "state.db")}
	a, err := Open(loc, Options{})
	if err != nil {
		t.Fatal(err)
	}
	// A config reload opens the store again before the old config lets
	// go of it: bbolt's file lock would refuse a second handle.
	b, err := Open(loc, Options{})
	if err != nil {
		t.Fatalf("a second Open of the same file: %v", err)
	}
	t.Run("both see the same records", func(t *testing.T) {
		_ = a.Create(ctx, "ns", &Record{Key: "k", Value: []byte("v")})
		if _, err := b.Get(ctx, "ns", "k"); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("closing one use (twice) leaves the other working", func(t *testing.T) {
		_ = a.Close()
		_ = a.Close()
		if _, err := b.Get(ctx, "ns", "k"); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("the last Close releases the file", func(t *testing.T) {
		_ = b.Close()
		s, err := OpenBolt(loc.Path, Options{})
		if err != nil {
			t.Fatalf("the file is still locked: %v", err)
		}
		s.Close()
	})
}

func TestLazy(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	loc := Location{Path: filepath.Join(dir, "sub", "state.db")}
	s := Lazy(loc, Options{})
	defer s.Close()
	t.Run("nothing is created before the first use", func(t *testing.T) {
		if _, err := os.Stat(filepath.Dir(loc.Path)); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("stat: %v", err)
		}
		if s.Name() != loc.Path {
			t.Fatalf("name %q", s.Name())
		}
	})
	t.Run("the first use opens the file", func(t *testing.T) {
		if u, err := s.Add(ctx, "k", 1, 0, time.Minute); err != nil || u.Total != 1 {
			t.Fatalf("%+v %v", u, err)
		}
		if _, err := os.Stat(loc.Path); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("a store that cannot be opened is unavailable, and a closed one too", func(t *testing.T) {
		blocker := filepath.Join(dir, "file")
		_ = os.WriteFile(blocker, nil, 0o600)
		bad := Lazy(Location{Path: filepath.Join(blocker, "state.db")}, Options{}) // its directory is a file
		if err := bad.Ping(ctx); !errors.Is(err, ErrUnavailable) {
			t.Fatalf("err = %v", err)
		}
		_ = s.Close()
		if _, err := s.Get(ctx, "ns", "k"); !errors.Is(err, ErrUnavailable) {
			t.Fatalf("after Close: %v", err)
		}
	})
}
