package store

import (
	"context"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/crmguard/crmguard/caddymodule/store/redistest"
)

// BenchmarkCounterAdd measures one usage-limit check per request (Add of
// one record to a 10-minute window, max 1e9): Bolt in memory, Redis over a
// unix socket, and as the baseline a map increment under a mutex (the
// least any in-process counter costs). 100 users share the store.
func BenchmarkCounterAdd(b *testing.B) {
	ctx := context.Background()
	keys := make([]string, 100)
	for i := range keys {
		keys[i] = "bulk_view:user:" + strconv.Itoa(i)
	}
	b.Run("baseline mutex map", func(b *testing.B) {
		var mu sync.Mutex
		m := map[string]int64{}
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			mu.Lock()
			m[keys[i%len(keys)]]++
			mu.Unlock()
			i++
		}
	})
	for _, s := range benchStores(b) {
		b.Run(s.name, func(b *testing.B) {
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if _, err := s.s.Add(ctx, keys[i%len(keys)], 1, 1e9, 10*time.Minute); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}

// BenchmarkRecordGet measures reading one session-sized record (1 KiB),
// what every signed-in request does.
func BenchmarkRecordGet(b *testing.B) {
	ctx := context.Background()
	val := make([]byte, 1024)
	for _, s := range benchStores(b) {
		if err := s.s.Create(ctx, "session", &Record{Key: "k", Value: val, Expires: time.Now().Add(time.Hour), Index: []string{"sub:zhang"}}); err != nil {
			b.Fatal(err)
		}
		b.Run(s.name, func(b *testing.B) {
			b.SetBytes(int64(len(val)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := s.s.Get(ctx, "session", "k"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

type benchStore struct {
	name string
	s    Store
}

// benchStores opens a Bolt file and a Redis server for a benchmark.
func benchStores(b *testing.B) []benchStore {
	bs, err := OpenBolt(filepath.Join(b.TempDir(), "state.db"), Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { bs.Close() })
	rs, err := OpenRedis(redistest.Start(b), Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { rs.Close() })
	return []benchStore{{"bolt", bs}, {"redis", rs}}
}
