package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/certfetch/certfetch/internal/kvclient"
)

// redisBackend keeps records as Redis strings under prefix+key, with a set
// per directory (prefix+"index/"+dir) listing its names, updated in the same
// script as the record. Locks are prefix+"locks/"+name, their fencing
// counters prefix+"fence/"+name.
type redisBackend struct {
	remote
	c *kvclient.Redis
}

func (r *redisBackend) Get(ctx context.Context, key string) ([]byte, error) {
	data, found, err := r.c.Get(ctx, r.prefix+key)
	if err != nil {
		return nil, r.fail("get", key, err)
	}
	if !found {
		return nil, r.fail("get", key, ErrNotFound)
	}
	return data, nil
}

// putScript sets KEYS[1] to ARGV[1] and adds ARGV[2] to the index KEYS[2];
// with KEYS[3], only if that lock's value is ARGV[3] (the fencing check).
var putScript = kvclient.NewScript(`
if #KEYS == 3 and redis.call('GET', KEYS[3]) ~= ARGV[3] then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SADD', KEYS[2], ARGV[2])
return 1`)

// createScript is putScript without fencing, only when KEYS[1] is absent.
var createScript = kvclient.NewScript(`
if not redis.call('SET', KEYS[1], ARGV[1], 'NX') then return 0 end
redis.call('SADD', KEYS[2], ARGV[2])
return 1`)

// deleteScript is putScript's counterpart for DEL and SREM.
var deleteScript = kvclient.NewScript(`
if #KEYS == 3 and redis.call('GET', KEYS[3]) ~= ARGV[2] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[1])
return 1`)

func (r *redisBackend) split(key string) (index, name string) {
	dir, name, _ := strings.Cut(key, "/")
	return r.prefix + "index/" + dir, name
}

func (r *redisBackend) Put(ctx context.Context, key string, value []byte) error {
	index, name := r.split(key)
	keys, args := []string{r.prefix + key, index}, []any{value, name}
	return r.write(ctx, "put", key, putScript, keys, args)
}

func (r *redisBackend) Create(ctx context.Context, key string, value []byte) (bool, error) {
	index, name := r.split(key)
	n, err := r.c.EvalInt(ctx, createScript, []string{r.prefix + key, index}, value, name)
	if err != nil {
		return false, r.fail("create", key, err)
	}
	return n == 1, nil
}

func (r *redisBackend) Delete(ctx context.Context, key string) error {
	index, name := r.split(key)
	keys, args := []string{r.prefix + key, index}, []any{name}
	return r.write(ctx, "delete", key, deleteScript, keys, args)
}

func (r *redisBackend) write(ctx context.Context, op, key string, script *kvclient.Script, keys []string, args []any) error {
	l, err := fence(ctx, r, "redis "+op, r.prefix+key)
	if err != nil {
		return err
	}
	if l != nil {
		rl := l.ops.(*redisLease)
		keys, args = append(keys, rl.key), append(args, rl.value)
	}
	n, err := r.c.EvalInt(ctx, script, keys, args...)
	if err != nil {
		return r.fail(op, key, err)
	}
	if n == 0 {
		return lostError("redis "+op, r.prefix+key, l)
	}
	return nil
}

func (r *redisBackend) List(ctx context.Context, dir string) ([]string, error) {
	names, err := r.c.SMembers(ctx, r.prefix+"index/"+dir)
	if err != nil {
		return nil, r.fail("list", dir, err)
	}
	keys := make([]string, len(names))
	for i, n := range names {
		keys[i] = dir + "/" + n
	}
	slices.Sort(keys)
	return keys, nil
}

// acquireScript takes lock KEYS[1] for ARGV[1] ms when free, with the value
// "<token> <nonce> <instance>", token from INCR of KEYS[2]. It returns
// {1, value} when taken (also when the lock already carries this attempt's
// nonce: a re-sent request), or {0, holder's value, the lock's PTTL}, read
// in the same atomic step as the refusal. An ACL written before certfetch
// read PTTL refuses it: the PTTL is then -1, unknown, and the refusal stands.
var acquireScript = kvclient.NewScript(`
local cur = redis.call('GET', KEYS[1])
if cur then
  local _, nonce = string.match(cur, '^(%d+) (%x+) ')
  if nonce == ARGV[2] then return {1, cur} end
  local ttl = redis.pcall('PTTL', KEYS[1])
  if type(ttl) ~= 'number' then ttl = -1 end
  return {0, cur, ttl}
end
local tok = redis.call('INCR', KEYS[2])
local val = tok .. ' ' .. ARGV[2] .. ' ' .. ARGV[3]
redis.call('SET', KEYS[1], val, 'PX', ARGV[1])
return {1, val}`)

// renewScript extends lock KEYS[1] to ARGV[2] ms if its value is ARGV[1].
var renewScript = kvclient.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0`)

// releaseScript deletes lock KEYS[1] if its value is ARGV[1].
var releaseScript = kvclient.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`)

func (r *redisBackend) Acquire(ctx context.Context, name string, ttl time.Duration) (*Lease, error) {
	nonce := make([]byte, 8)
	_, _ = rand.Read(nonce) // never fails (crypto/rand)
	lockKey := r.prefix + "locks/" + name
	keys := []string{lockKey, r.prefix + "fence/" + name}
	ms := max(ttl.Milliseconds(), 1)
	sent := time.Now()
	reply, err := r.c.Eval(ctx, acquireScript, keys, ms, hex.EncodeToString(nonce), r.instance)
	// The holder's PTTL is counted from when the server ran the script,
	// which is before now: its lease runs out no later than now+PTTL, plus
	// a millisecond (Redis expires a key once its millisecond clock is past
	// the expiry).
	received := time.Now()
	if err != nil {
		return nil, r.fail("lock", "locks/"+name, err)
	}
	res, _ := reply.([]any)
	if len(res) < 2 {
		return nil, fmt.Errorf("redis lock %s on %s: unexpected reply %v", lockKey, r.desc, reply)
	}
	ok, _ := res[0].(int64)
	value, _ := res[1].(string)
	token, nonceHex, instance := parseLockValue(value)
	if ok != 1 {
		held := &LeaseHeldError{Lock: name, Holder: instance}
		if len(res) == 3 {
			if pttl, _ := res[2].(int64); pttl >= 0 { // -1: a lock without expiry
				held.Expires = received.Add(time.Duration(pttl+1) * time.Millisecond)
			}
		}
		return nil, fmt.Errorf("redis lock %s on %s: %w", lockKey, r.desc, held)
	}
	if token == 0 || nonceHex == "" {
		return nil, fmt.Errorf("redis lock %s on %s: malformed lock value", lockKey, r.desc)
	}
	rl := &redisLease{r: r, key: lockKey, value: value, ttl: ttl}
	return newLease(r, name, token, instance, ttl, rl, sent, true), nil
}

// parseLockValue splits "<token> <nonce> <instance>".
func parseLockValue(v string) (token int64, nonce, instance string) {
	parts := strings.SplitN(v, " ", 3)
	if len(parts) != 3 {
		return 0, "", ""
	}
	token, _ = strconv.ParseInt(parts[0], 10, 64)
	return token, parts[1], parts[2]
}

// redisLease is a Redis lease's leaseOps: the lock key and the value that
// proves ownership.
type redisLease struct {
	r     *redisBackend
	key   string
	value string
	ttl   time.Duration
}

func (l *redisLease) renew(ctx context.Context) error {
	n, err := l.r.c.EvalInt(ctx, renewScript, []string{l.key}, l.value, max(l.ttl.Milliseconds(), 1))
	if err != nil {
		return l.r.fail("renew", strings.TrimPrefix(l.key, l.r.prefix), err)
	}
	if n == 0 {
		return fmt.Errorf("redis renew %s: lock expired or taken: %w", l.key, ErrLeaseLost)
	}
	return nil
}

func (l *redisLease) release(ctx context.Context) error {
	if _, err := l.r.c.Eval(ctx, releaseScript, []string{l.key}, l.value); err != nil {
		return l.r.fail("unlock", strings.TrimPrefix(l.key, l.r.prefix), err)
	}
	return nil
}
