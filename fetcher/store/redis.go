package store

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// DefaultPrefix is the key prefix of the Redis and etcd backends.
const DefaultPrefix = "certfetch/"

// DefaultTimeout bounds one Redis or etcd operation when the options set
// none: operations take milliseconds on a healthy server, and 5 s rides out
// a slow fsync or a short failover while keeping a daemon pass from hanging
// on a dead server.
const DefaultTimeout = 5 * time.Second

// RedisOptions configure OpenRedis.
type RedisOptions struct {
	// Address is host:port of the Redis server (a single primary; Redis
	// Cluster is not supported).
	Address string
	// Username and Password authenticate (Redis 6 ACL user, or Password
	// alone for requirepass). The caller reads the password from a file;
	// it never appears in errors or String.
	Username, Password string
	// DB is the database number.
	DB int
	// TLS, when set, encrypts the connection (and may carry a client
	// certificate).
	TLS *tls.Config
	// Prefix is put before every key; default DefaultPrefix.
	Prefix string
	// Timeout bounds each operation; default DefaultTimeout.
	Timeout time.Duration
	// Instance names this certfetch instance in lock records and
	// LockedError; default host:pid.
	Instance string
}

// redisBackend keeps records as Redis strings under prefix+key, with a set
// per directory (prefix+"index/"+dir) listing its names, updated in the same
// script as the record. Locks are prefix+"locks/"+name, their fencing
// counters prefix+"fence/"+name.
type redisBackend struct {
	remote
	c *redis.Client
}

// OpenRedis connects to Redis and checks the connection and credentials
// with PING, so that a wrong address or password fails here with a clear
// error. Close the Store when done.
func OpenRedis(ctx context.Context, o RedisOptions) (*Store, error) {
	if o.Address == "" {
		return nil, errors.New("open redis: empty address")
	}
	rem := newRemote(o.Prefix, o.Timeout, o.Instance)
	scheme := "redis"
	if o.TLS != nil {
		scheme = "rediss"
	}
	r := &redisBackend{
		c: redis.NewClient(&redis.Options{
			Addr: o.Address, Username: o.Username, Password: o.Password, DB: o.DB, TLSConfig: o.TLS,
			DialTimeout: rem.timeout,
			// Deadlines come from each operation's context (Timeout).
			ContextTimeoutEnabled: true,
			// No client-side retries: every write is a script whose retry
			// could be mistaken for a second writer; the daemon retries
			// whole attempts instead.
			MaxRetries: -1,
			// Redis 7.0 does not know CLIENT SETINFO.
			DisableIdentity: true,
		}),
		remote: rem,
	}
	r.desc = fmt.Sprintf("%s://%s/%d prefix %q", scheme, o.Address, o.DB, rem.prefix)
	octx, cancel := r.op(ctx)
	defer cancel()
	if err := r.c.Ping(octx).Err(); err != nil {
		r.c.Close()
		return nil, r.fail(ctx, "open", "", err)
	}
	return &Store{b: r}, nil
}

func (r *redisBackend) Close() error { return r.c.Close() }

// fail wraps a client error: ErrUnavailable unless the server answered with
// an error or the caller's context ended.
func (r *redisBackend) fail(ctx context.Context, op, key string, err error) error {
	subject := r.subject(key)
	var rerr redis.Error
	if errors.As(err, &rerr) || ctx.Err() != nil {
		return fmt.Errorf("redis %s %s: %w", op, subject, err)
	}
	return fmt.Errorf("redis %s %s: %w: %w", op, subject, ErrUnavailable, err)
}

func (r *redisBackend) Get(ctx context.Context, key string) ([]byte, error) {
	octx, cancel := r.op(ctx)
	defer cancel()
	data, err := r.c.Get(octx, r.prefix+key).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("redis get %s on %s: %w", r.prefix+key, r.desc, ErrNotFound)
	}
	if err != nil {
		return nil, r.fail(ctx, "get", key, err)
	}
	return data, nil
}

// putScript sets KEYS[1] to ARGV[1] and adds ARGV[2] to the index KEYS[2];
// with KEYS[3], only if that lock's value is ARGV[3] (the fencing check).
var putScript = redis.NewScript(`
if #KEYS == 3 and redis.call('GET', KEYS[3]) ~= ARGV[3] then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SADD', KEYS[2], ARGV[2])
return 1`)

// createScript is putScript without fencing, only when KEYS[1] is absent.
var createScript = redis.NewScript(`
if not redis.call('SET', KEYS[1], ARGV[1], 'NX') then return 0 end
redis.call('SADD', KEYS[2], ARGV[2])
return 1`)

// deleteScript is putScript's counterpart for DEL and SREM.
var deleteScript = redis.NewScript(`
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
	octx, cancel := r.op(ctx)
	defer cancel()
	n, err := createScript.Run(octx, r.c, []string{r.prefix + key, index}, value, name).Int()
	if err != nil {
		return false, r.fail(ctx, "create", key, err)
	}
	return n == 1, nil
}

func (r *redisBackend) Delete(ctx context.Context, key string) error {
	index, name := r.split(key)
	keys, args := []string{r.prefix + key, index}, []any{name}
	return r.write(ctx, "delete", key, deleteScript, keys, args)
}

func (r *redisBackend) write(ctx context.Context, op, key string, script *redis.Script, keys []string, args []any) error {
	l, err := fence(ctx, r, "redis "+op, r.prefix+key)
	if err != nil {
		return err
	}
	if l != nil {
		rl := l.ops.(*redisLease)
		keys, args = append(keys, rl.key), append(args, rl.value)
	}
	octx, cancel := r.op(ctx)
	defer cancel()
	n, err := script.Run(octx, r.c, keys, args...).Int()
	if err != nil {
		return r.fail(ctx, op, key, err)
	}
	if n == 0 {
		return lostError("redis "+op, r.prefix+key, l)
	}
	return nil
}

func (r *redisBackend) List(ctx context.Context, dir string) ([]string, error) {
	octx, cancel := r.op(ctx)
	defer cancel()
	names, err := r.c.SMembers(octx, r.prefix+"index/"+dir).Result()
	if err != nil {
		return nil, r.fail(ctx, "list", dir, err)
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
// nonce: a re-sent request), or {0, holder's value}.
var acquireScript = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if cur then
  local _, nonce = string.match(cur, '^(%d+) (%x+) ')
  if nonce == ARGV[2] then return {1, cur} end
  return {0, cur}
end
local tok = redis.call('INCR', KEYS[2])
local val = tok .. ' ' .. ARGV[2] .. ' ' .. ARGV[3]
redis.call('SET', KEYS[1], val, 'PX', ARGV[1])
return {1, val}`)

// renewScript extends lock KEYS[1] to ARGV[2] ms if its value is ARGV[1].
var renewScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0`)

// releaseScript deletes lock KEYS[1] if its value is ARGV[1].
var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`)

func (r *redisBackend) TryLock(ctx context.Context, name string, ttl time.Duration) (*Lease, error) {
	nonce := make([]byte, 8)
	_, _ = rand.Read(nonce) // never fails (crypto/rand)
	lockKey := r.prefix + "locks/" + name
	keys := []string{lockKey, r.prefix + "fence/" + name}
	ms := max(ttl.Milliseconds(), 1)
	sent := time.Now()
	octx, cancel := r.op(ctx)
	defer cancel()
	res, err := acquireScript.Run(octx, r.c, keys, ms, hex.EncodeToString(nonce), r.instance).Slice()
	if err != nil {
		return nil, r.fail(ctx, "lock", "locks/"+name, err)
	}
	if len(res) != 2 {
		return nil, fmt.Errorf("redis lock %s on %s: unexpected reply %v", lockKey, r.desc, res)
	}
	ok, _ := res[0].(int64)
	value, _ := res[1].(string)
	token, nonceHex, instance := parseLockValue(value)
	if ok != 1 {
		return nil, fmt.Errorf("redis lock %s on %s: %w", lockKey, r.desc, &LockedError{Lock: name, Holder: instance})
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
	n, err := renewScript.Run(ctx, l.r.c, []string{l.key}, l.value, max(l.ttl.Milliseconds(), 1)).Int()
	if err != nil {
		return l.r.fail(ctx, "renew", strings.TrimPrefix(l.key, l.r.prefix), err)
	}
	if n == 0 {
		return fmt.Errorf("redis renew %s: lock expired or taken: %w", l.key, ErrLeaseLost)
	}
	return nil
}

func (l *redisLease) release(ctx context.Context) error {
	octx, cancel := l.r.op(ctx)
	defer cancel()
	if err := releaseScript.Run(octx, l.r.c, []string{l.key}, l.value).Err(); err != nil {
		return l.r.fail(ctx, "unlock", strings.TrimPrefix(l.key, l.r.prefix), err)
	}
	return nil
}
