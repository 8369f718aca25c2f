package session

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisStore keeps sessions in Redis so several proxy instances share them
// (and their revocation). Keys: <prefix>s:<id> is a hash {v: version,
// d: JSON} expiring at the session's deadline; <prefix>sid:<sid> and
// <prefix>sub:<sub> are sets of session ids; <prefix>lock:<name> and
// <prefix>once:<key> are plain keys with a TTL.
type RedisStore struct {
	c      *redis.Client
	prefix string
	addr   string
}

// NewRedisStore makes a client for the server named by a redis://,
// rediss:// or unix:// URL. It connects lazily: a server that is down now
// makes store operations fail (requests answer 503) until it is back; use
// Ping to check it.
func NewRedisStore(_ context.Context, rawURL string) (*RedisStore, error) {
	opts, err := redis.ParseURL(rawURL)
	if err != nil {
		return nil, fmt.Errorf("session: redis store URL: %w", err)
	}
	return &RedisStore{c: redis.NewClient(opts), prefix: "crmguard:", addr: opts.Addr}, nil
}

// Ping checks that the server answers.
func (s *RedisStore) Ping(ctx context.Context) error {
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := s.c.Ping(pctx).Err(); err != nil {
		return fmt.Errorf("session: redis store %s does not answer: %w", s.addr, err)
	}
	return nil
}

func (s *RedisStore) key(kind, id string) string { return s.prefix + kind + ":" + id }

var updateScript = redis.NewScript(`
local v = redis.call('HGET', KEYS[1], 'v')
if not v then return -1 end
if v ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'v', ARGV[2], 'd', ARGV[3])
redis.call('PEXPIREAT', KEYS[1], ARGV[4])
return 1`)

var indexScript = redis.NewScript(`
redis.call('SADD', KEYS[1], ARGV[1])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 1`)

var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`)

func deadlineMillis(d *Data) int64 { return d.Deadline().UnixMilli() }

// Create implements Store.
func (s *RedisStore) Create(ctx context.Context, d *Data) error {
	d.Version = 1
	b, err := json.Marshal(d)
	if err != nil {
		return fmt.Errorf("session: encoding session: %w", err)
	}
	k := s.key("s", d.ID)
	pipe := s.c.TxPipeline()
	pipe.HSet(ctx, k, "v", d.Version, "d", b)
	pipe.PExpireAt(ctx, k, d.Deadline())
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("session: redis create: %w", err)
	}
	// The sid and sub indexes live as long as their longest session.
	for kind, v := range map[string]string{"sid": d.SID, "sub": d.Subject} {
		if v == "" {
			continue
		}
		if err := indexScript.Run(ctx, s.c, []string{s.key(kind, v)}, d.ID, max(time.Until(d.Expires).Milliseconds(), 1000)).Err(); err != nil {
			return fmt.Errorf("session: redis index: %w", err)
		}
	}
	return nil
}

// Get implements Store.
func (s *RedisStore) Get(ctx context.Context, id string) (*Data, error) {
	b, err := s.c.HGet(ctx, s.key("s", id), "d").Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("session: redis get: %w", err)
	}
	var d Data
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, fmt.Errorf("session: redis session %q is corrupt: %w", id, err)
	}
	if !time.Now().Before(d.Deadline()) {
		return nil, ErrNotFound
	}
	return &d, nil
}

// Update implements Store (compare-and-swap in a Lua script).
func (s *RedisStore) Update(ctx context.Context, d *Data) error {
	next := *d
	next.Version = d.Version + 1
	b, err := json.Marshal(&next)
	if err != nil {
		return fmt.Errorf("session: encoding session: %w", err)
	}
	r, err := updateScript.Run(ctx, s.c, []string{s.key("s", d.ID)}, d.Version, next.Version, b, deadlineMillis(d)).Int()
	if err != nil {
		return fmt.Errorf("session: redis update: %w", err)
	}
	switch r {
	case -1:
		return ErrNotFound
	case 0:
		return ErrConflict
	}
	d.Version = next.Version
	return nil
}

// Delete implements Store.
func (s *RedisStore) Delete(ctx context.Context, id string) error {
	d, err := s.Get(ctx, id)
	pipe := s.c.TxPipeline()
	pipe.Del(ctx, s.key("s", id))
	if err == nil {
		if d.SID != "" {
			pipe.SRem(ctx, s.key("sid", d.SID), id)
		}
		if d.Subject != "" {
			pipe.SRem(ctx, s.key("sub", d.Subject), id)
		}
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("session: redis delete: %w", err)
	}
	return nil
}

func (s *RedisStore) deleteSet(ctx context.Context, set string) (int, error) {
	ids, err := s.c.SMembers(ctx, set).Result()
	if err != nil {
		return 0, fmt.Errorf("session: redis revoke: %w", err)
	}
	if len(ids) == 0 {
		return 0, nil
	}
	keys := make([]string, 0, len(ids)+1)
	for _, id := range ids {
		keys = append(keys, s.key("s", id))
	}
	n, err := s.c.Del(ctx, keys...).Result()
	if err != nil {
		return 0, fmt.Errorf("session: redis revoke: %w", err)
	}
	s.c.SRem(ctx, set, toAny(ids)...)
	return int(n), nil
}

func toAny(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

// DeleteBySID implements Store.
func (s *RedisStore) DeleteBySID(ctx context.Context, sid string) (int, error) {
	if sid == "" {
		return 0, nil
	}
	return s.deleteSet(ctx, s.key("sid", sid))
}

// DeleteBySubject implements Store.
func (s *RedisStore) DeleteBySubject(ctx context.Context, sub string) (int, error) {
	if sub == "" {
		return 0, nil
	}
	return s.deleteSet(ctx, s.key("sub", sub))
}

// Lock implements Store with SET NX PX and a token-checked release.
func (s *RedisStore) Lock(ctx context.Context, name string, ttl time.Duration) (func(), bool, error) {
	token := RandomID(12)
	k := s.key("lock", name)
	ok, err := s.c.SetNX(ctx, k, token, ttl).Result()
	if err != nil {
		return func() {}, false, fmt.Errorf("session: redis lock: %w", err)
	}
	if !ok {
		return func() {}, false, nil
	}
	return func() {
		_ = releaseScript.Run(context.Background(), s.c, []string{k}, token).Err()
	}, true, nil
}

// Once implements Store with SET NX PX.
func (s *RedisStore) Once(ctx context.Context, key string, ttl time.Duration) (bool, error) {
	ok, err := s.c.SetNX(ctx, s.key("once", key), 1, ttl).Result()
	if err != nil {
		return false, fmt.Errorf("session: redis once: %w", err)
	}
	return ok, nil
}

// Close closes the connection pool.
func (s *RedisStore) Close() error { return s.c.Close() }

var _ Store = (*RedisStore)(nil)
