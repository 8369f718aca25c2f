package store

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis is the Store shared by several instances: every read-modify-write
// is one Lua script, atomic on the server. Key layout (prefix "crmguard:"):
//
//	r:<ns>:<key>       hash {v: version, d: value, x: expiry ms (0: none),
//	                   i: index terms joined by newlines}, expiring with
//	                   the record
//	n:<ns>             set of the namespace's record keys
//	x:<ns>:<term>      set of the keys of the records carrying term
//	o:<key>, l:<name>  Once markers and Locks: "<expiry ms>:<holder>"
//	cz:<key>, ct:<key> a counter: sorted set of events "<n>:<token>"
//	                   scored by time (ms), and the window's total
//
// The sets live as long as their longest-lived member (plus a minute);
// members whose record expired are skipped when read and dropped when
// their set is next written.
type Redis struct {
	c      *redis.Client
	prefix string
	name   string
	opt    Options
}

// OpenRedis makes a client for the server named by a redis://, rediss://
// or unix:// URL. It connects lazily: a server that is down makes calls
// fail with ErrUnavailable until it is back (Ping checks it).
func OpenRedis(rawURL string, opt Options) (*Redis, error) {
	o, err := parseRedisURL(rawURL)
	if err != nil {
		return nil, err
	}
	if o.DialerRetries == 0 {
		// One dial per attempt (go-redis makes 5 by default): a server
		// that is down answers 503 at once instead of after seconds.
		o.DialerRetries = 1
	}
	return &Redis{c: redis.NewClient(o), prefix: "crmguard:", name: redactURL(rawURL), opt: opt.withDefaults()}, nil
}

// Name implements Store: the server's URL without its password.
func (s *Redis) Name() string { return s.name }

func (s *Redis) now() time.Time { return s.opt.Now() }

func (s *Redis) unavailable(op string, err error) error {
	return fmt.Errorf("%w: %s at %s: %w", ErrUnavailable, op, s.name, err)
}

// Ping implements Store.
func (s *Redis) Ping(ctx context.Context) error {
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := s.c.Ping(pctx).Err(); err != nil {
		return s.unavailable("ping", err)
	}
	return nil
}

// Close implements Store: it closes the connection pool.
func (s *Redis) Close() error { return s.c.Close() }

// luaLib holds the helpers the record scripts share. ARGV[1] is always the
// key prefix, ARGV[2] the namespace.
const luaLib = `
local P, ns = ARGV[1], ARGV[2]
local function ms(x) return string.format('%.0f', x) end
local function rkey(k) return P .. 'r:' .. ns .. ':' .. k end
local function terms(s)
  local t = {}
  if s then for w in string.gmatch(s, '[^\n]+') do t[#t + 1] = w end end
  return t
end
local function has(s, term)
  for _, t in ipairs(terms(s)) do if t == term then return true end end
  return false
end
local function addmember(set, member, exp, now)
  local existed = redis.call('EXISTS', set) == 1
  local pttl = redis.call('PTTL', set)
  redis.call('SADD', set, member)
  if exp == 0 then
    redis.call('PERSIST', set)
  elseif not existed or (pttl >= 0 and now + pttl < exp + 60000) then
    redis.call('PEXPIREAT', set, ms(exp + 60000))
  end
end
local function unindex(k, termstr)
  redis.call('SREM', P .. 'n:' .. ns, k)
  for _, t in ipairs(terms(termstr)) do redis.call('SREM', P .. 'x:' .. ns .. ':' .. t, k) end
end
local function write(k, version, val, exp, now, termstr)
  local rk = rkey(k)
  redis.call('DEL', rk)
  if exp ~= 0 and exp <= now then return end
  redis.call('HSET', rk, 'v', version, 'd', val, 'x', ms(exp), 'i', termstr)
  if exp ~= 0 then redis.call('PEXPIREAT', rk, ms(exp)) end
  addmember(P .. 'n:' .. ns, k, exp, now)
  for _, t in ipairs(terms(termstr)) do addmember(P .. 'x:' .. ns .. ':' .. t, k, exp, now) end
end
local function alive(x, now)
  x = tonumber(x)
  return x == 0 or x > now
end
`

// ARGV: prefix, ns, key, value, expiry ms, now ms, terms. 1: created,
// 0: a live record exists.
var createScript = redis.NewScript(luaLib + `
local k, now = ARGV[3], tonumber(ARGV[6])
local h = redis.call('HMGET', rkey(k), 'v', 'x', 'i')
if h[1] then
  if alive(h[2], now) then return 0 end
  unindex(k, h[3])
end
write(k, 1, ARGV[4], tonumber(ARGV[5]), now, ARGV[7])
return 1`)

// ARGV: prefix, ns, key, value, expiry ms, now ms, terms, expected
// version. The new version, 0: another version is stored, -1: not found.
var updateScript = redis.NewScript(luaLib + `
local k, now = ARGV[3], tonumber(ARGV[6])
local h = redis.call('HMGET', rkey(k), 'v', 'x', 'i')
if not h[1] or not alive(h[2], now) then return -1 end
if h[1] ~= ARGV[8] then return 0 end
unindex(k, h[3])
local v = tonumber(h[1]) + 1
write(k, v, ARGV[4], tonumber(ARGV[5]), now, ARGV[7])
return v`)

// ARGV: prefix, ns, key.
var deleteScript = redis.NewScript(luaLib + `
local k = ARGV[3]
local h = redis.call('HMGET', rkey(k), 'i')
unindex(k, h[1])
return redis.call('DEL', rkey(k))`)

// ARGV: prefix, ns, term, now ms. The number of live records deleted.
var deleteIndexedScript = redis.NewScript(luaLib + `
local term, now = ARGV[3], tonumber(ARGV[4])
local set = P .. 'x:' .. ns .. ':' .. term
local n = 0
for _, k in ipairs(redis.call('SMEMBERS', set)) do
  local h = redis.call('HMGET', rkey(k), 'v', 'x', 'i')
  if h[1] and has(h[3], term) then
    if alive(h[2], now) then n = n + 1 end
    unindex(k, h[3])
    redis.call('DEL', rkey(k))
  end
end
redis.call('DEL', set)
return n`)

// ARGV: prefix, ns, members to drop from the namespace set (records gone).
var forgetScript = redis.NewScript(luaLib + `
for i = 3, #ARGV do
  if redis.call('EXISTS', rkey(ARGV[i])) == 0 then redis.call('SREM', P .. 'n:' .. ns, ARGV[i]) end
end
return 0`)

func millis(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

// recordArgs are the common arguments of createScript and updateScript.
func (s *Redis) recordArgs(ns string, r *Record, now time.Time) []any {
	return []any{s.prefix, ns, r.Key, r.Value, millis(r.Expires), now.UnixMilli(), strings.Join(uniqueTerms(r.Index), "\n")}
}

// Create implements Store.
func (s *Redis) Create(ctx context.Context, ns string, r *Record) error {
	if err := checkRecord(ns, r); err != nil {
		return err
	}
	res, err := createScript.Run(ctx, s.c, []string{s.prefix + "r:" + ns + ":" + r.Key}, s.recordArgs(ns, r, s.now())...).Int()
	if err != nil {
		return s.unavailable("create", err)
	}
	if res == 0 {
		return fmt.Errorf("%w: %s/%.40q", ErrExists, ns, r.Key)
	}
	r.Version = 1
	return nil
}

// Update implements Store.
func (s *Redis) Update(ctx context.Context, ns string, r *Record) error {
	if err := checkRecord(ns, r); err != nil {
		return err
	}
	args := append(s.recordArgs(ns, r, s.now()), strconv.FormatInt(r.Version, 10))
	v, err := updateScript.Run(ctx, s.c, []string{s.prefix + "r:" + ns + ":" + r.Key}, args...).Int64()
	if err != nil {
		return s.unavailable("update", err)
	}
	switch v {
	case -1:
		return ErrNotFound
	case 0:
		return ErrConflict
	}
	r.Version = v
	return nil
}

// Delete implements Store.
func (s *Redis) Delete(ctx context.Context, ns, key string) error {
	if err := checkNS(ns); err != nil {
		return err
	}
	if err := deleteScript.Run(ctx, s.c, []string{s.prefix + "r:" + ns + ":" + key}, s.prefix, ns, key).Err(); err != nil {
		return s.unavailable("delete", err)
	}
	return nil
}

// parseRecord reads the fields v, d, x, i of a record hash; nil when the
// record is absent or expired at now.
func parseRecord(key string, vals []any, now time.Time) (*Record, error) {
	if len(vals) != 4 || vals[0] == nil {
		return nil, nil
	}
	str := func(v any) string { s, _ := v.(string); return s }
	r := &Record{Key: key, Value: []byte(str(vals[1]))}
	var err error
	if r.Version, err = strconv.ParseInt(str(vals[0]), 10, 64); err != nil {
		return nil, fmt.Errorf("record %.40q has a bad version: %w", key, err)
	}
	x, err := strconv.ParseInt(str(vals[2]), 10, 64)
	if err != nil {
		return nil, fmt.Errorf("record %.40q has a bad expiry: %w", key, err)
	}
	if x != 0 {
		r.Expires = time.UnixMilli(x)
	}
	if t := str(vals[3]); t != "" {
		r.Index = strings.Split(t, "\n")
	}
	if !live(r.Expires, now) {
		return nil, nil
	}
	return r, nil
}

// Get implements Store.
func (s *Redis) Get(ctx context.Context, ns, key string) (*Record, error) {
	if err := checkNS(ns); err != nil {
		return nil, err
	}
	vals, err := s.c.HMGet(ctx, s.prefix+"r:"+ns+":"+key, "v", "d", "x", "i").Result()
	if err != nil {
		return nil, s.unavailable("get", err)
	}
	r, err := parseRecord(key, vals, s.now())
	if err != nil {
		return nil, s.unavailable("get", err)
	}
	if r == nil {
		return nil, ErrNotFound
	}
	return r, nil
}

// List implements Store: the set's members, each record read in one
// pipeline.
func (s *Redis) List(ctx context.Context, ns, term string) ([]*Record, error) {
	if err := checkNS(ns); err != nil {
		return nil, err
	}
	set := s.prefix + "n:" + ns
	if term != "" {
		if err := checkKey("index term", term); err != nil {
			return nil, err
		}
		set = s.prefix + "x:" + ns + ":" + term
	}
	keys, err := s.c.SMembers(ctx, set).Result()
	if err != nil {
		return nil, s.unavailable("list", err)
	}
	if len(keys) == 0 {
		return nil, nil
	}
	slices.Sort(keys)
	pipe := s.c.Pipeline()
	cmds := make([]*redis.SliceCmd, len(keys))
	for i, k := range keys {
		cmds[i] = pipe.HMGet(ctx, s.prefix+"r:"+ns+":"+k, "v", "d", "x", "i")
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, s.unavailable("list", err)
	}
	now := s.now()
	var out []*Record
	var gone []any
	for i, c := range cmds {
		r, err := parseRecord(keys[i], c.Val(), now)
		if err != nil {
			return nil, s.unavailable("list", err)
		}
		if r == nil {
			gone = append(gone, keys[i])
			continue
		}
		if term != "" && !slices.Contains(r.Index, term) {
			continue
		}
		out = append(out, r)
	}
	if len(gone) > 0 && term == "" {
		// Records that expired on the server leave their key in the
		// namespace set; drop those that are really gone.
		_ = forgetScript.Run(ctx, s.c, []string{set}, append([]any{s.prefix, ns}, gone...)...).Err()
	}
	return out, nil
}

// DeleteIndexed implements Store.
func (s *Redis) DeleteIndexed(ctx context.Context, ns, term string) (int, error) {
	if err := checkNS(ns); err != nil {
		return 0, err
	}
	if err := checkKey("index term", term); err != nil {
		return 0, err
	}
	n, err := deleteIndexedScript.Run(ctx, s.c, []string{s.prefix + "x:" + ns + ":" + term}, s.prefix, ns, term, s.now().UnixMilli()).Int()
	if err != nil {
		return 0, s.unavailable("delete indexed", err)
	}
	return n, nil
}

// markScript is Once and Lock: KEYS[1] holds "<expiry ms>:<holder>";
// ARGV: now ms, the new value, its time to live on the server (ms). 1 when
// the key was free (absent or expired by the caller's clock) and is now
// taken, 0 otherwise.
var markScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if v then
  local exp = tonumber(string.match(v, '^(%d+):'))
  if exp and exp > tonumber(ARGV[1]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1`)

// mark takes key until now+ttl for holder (see markScript).
func (s *Redis) mark(ctx context.Context, key, holder string, ttl time.Duration) (string, bool, error) {
	now := s.now()
	val := strconv.FormatInt(now.Add(ttl).UnixMilli(), 10) + ":" + holder
	// The server keeps the key a minute longer than the caller's clock
	// needs it, so clocks a little apart never free it early.
	ok, err := markScript.Run(ctx, s.c, []string{key}, now.UnixMilli(), val, max(ttl, 0).Milliseconds()+60000).Int()
	return val, ok == 1, err
}

// Once implements Store.
func (s *Redis) Once(ctx context.Context, key string, ttl time.Duration) (bool, error) {
	if err := checkKey("marker key", key); err != nil {
		return false, err
	}
	_, ok, err := s.mark(ctx, s.prefix+"o:"+key, "", ttl)
	if err != nil {
		return false, s.unavailable("once", err)
	}
	return ok, nil
}

var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`)

// Lock implements Store; release deletes the lock only while it still
// holds this caller's value.
func (s *Redis) Lock(ctx context.Context, name string, ttl time.Duration) (func(), bool, error) {
	if err := checkKey("lock name", name); err != nil {
		return func() {}, false, err
	}
	k := s.prefix + "l:" + name
	val, ok, err := s.mark(ctx, k, randomToken(), ttl)
	if err != nil {
		return func() {}, false, s.unavailable("lock", err)
	}
	if !ok {
		return func() {}, false, nil
	}
	return func() {
		rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = releaseScript.Run(rctx, s.c, []string{k}, val).Err()
	}, true, nil
}

// counterScript is Add and Count. KEYS: the events (sorted set) and the
// total. ARGV: now ms, window ms, n, max, event token, "1" to only count.
// Returns {added 0|1, total, retry-at ms (0: never or not refused)}.
var counterScript = redis.NewScript(`
local z, t = KEYS[1], KEYS[2]
local now, span, n, max = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local function ms(x) return string.format('%.0f', x) end
local function amount(m) return tonumber(string.match(m, '^(%d+):')) end
local cut = ms(now - span)
local total = redis.call('GET', t)
local old = redis.call('ZRANGEBYSCORE', z, '-inf', cut)
if #old > 0 then redis.call('ZREMRANGEBYSCORE', z, '-inf', cut) end
if total and #old == 0 then
  total = tonumber(total)
elseif redis.call('ZCARD', z) == 0 then
  total = 0
  redis.call('DEL', t)
else
  -- some events expired (or the total was lost): add up what is left
  total = 0
  for _, m in ipairs(redis.call('ZRANGE', z, 0, -1)) do total = total + amount(m) end
  redis.call('SET', t, total, 'KEEPTTL')
end
if ARGV[6] == '1' then return {0, total, 0} end
if max > 0 and total + n > max then
  local retry = 0
  if n <= max then
    local excess = total + n - max
    local evs = redis.call('ZRANGE', z, 0, -1, 'WITHSCORES')
    for i = 1, #evs, 2 do
      excess = excess - amount(evs[i])
      if excess <= 0 then retry = tonumber(evs[i + 1]) + span break end
    end
  end
  return {0, total, retry}
end
if n > 0 then
  redis.call('ZADD', z, ms(now), ARGV[3] .. ':' .. ARGV[5])
  total = total + n
  redis.call('SET', t, total, 'PX', ms(span + 60000))
  redis.call('PEXPIRE', z, ms(span + 60000))
end
return {1, total, 0}`)

func (s *Redis) counter(ctx context.Context, op, key string, n, max int64, window time.Duration, countOnly bool) (Usage, error) {
	if err := checkCounter(key, n, window); err != nil {
		return Usage{}, err
	}
	only := "0"
	if countOnly {
		only = "1"
	}
	res, err := counterScript.Run(ctx, s.c, []string{s.prefix + "cz:" + key, s.prefix + "ct:" + key},
		s.now().UnixMilli(), window.Milliseconds(), n, max, randomToken(), only).Int64Slice()
	if err != nil {
		return Usage{}, s.unavailable(op, err)
	}
	if len(res) != 3 {
		return Usage{}, s.unavailable(op, fmt.Errorf("counter script answered %v", res))
	}
	u := Usage{Total: res[1], Added: res[0] == 1}
	if res[2] > 0 {
		u.RetryAt = time.UnixMilli(res[2])
	}
	return u, nil
}

// Add implements Store: atomic on the server.
func (s *Redis) Add(ctx context.Context, key string, n, max int64, window time.Duration) (Usage, error) {
	return s.counter(ctx, "add", key, n, max, window, false)
}

// Count implements Store.
func (s *Redis) Count(ctx context.Context, key string, window time.Duration) (Usage, error) {
	return s.counter(ctx, "count", key, 0, 0, window, true)
}

// Reset implements Store.
func (s *Redis) Reset(ctx context.Context, key string) error {
	if err := checkKey("counter key", key); err != nil {
		return err
	}
	if err := s.c.Del(ctx, s.prefix+"cz:"+key, s.prefix+"ct:"+key).Err(); err != nil {
		return s.unavailable("reset", err)
	}
	return nil
}

// parseRedisURL parses a Redis URL; its errors never repeat the URL's
// password.
func parseRedisURL(raw string) (*redis.Options, error) {
	o, err := redis.ParseURL(raw)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("store: redis URL %s: %w", redactURL(raw), err)
	}
	return o, nil
}

// redactURL hides a URL's password (for messages).
func redactURL(raw string) string {
	i := strings.Index(raw, "://")
	at := strings.LastIndex(raw, "@")
	if i < 0 || at < i {
		return raw
	}
	return raw[:i+3] + "***@" + raw[at+1:]
}

// Interface guard.
var _ Store = (*Redis)(nil)
