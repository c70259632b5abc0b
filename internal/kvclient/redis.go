package kvclient

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/certfetch/certfetch/internal/secret"
)

// RedisOptions say how to reach one Redis server.
type RedisOptions struct {
	// Address is host:port of a single Redis server (a primary; Redis
	// Cluster and Sentinel are not supported).
	Address string
	// Username is the ACL user; empty for the default user (requirepass).
	Username string
	// Password is revealed only to the Redis client; never logged.
	Password secret.Secret
	// DB is the database number.
	DB int
	// TLS, when set, encrypts the connection (and may carry a client
	// certificate); nil for plain TCP.
	TLS *tls.Config
	// Timeout bounds each operation and each dial; 0 means DefaultTimeout.
	Timeout time.Duration
}

// Redis is a client of one Redis server. It dials on first use and again
// after a connection fails; it is safe for concurrent use.
type Redis struct {
	c       *redis.Client
	timeout time.Duration
	desc    string
}

// NewRedis returns a client for o without connecting.
func NewRedis(o RedisOptions) (*Redis, error) {
	if o.Address == "" {
		return nil, errors.New("redis: empty address")
	}
	scheme := "redis"
	if o.TLS != nil {
		scheme = "rediss"
	}
	timeout := timeoutOrDefault(o.Timeout)
	c := redis.NewClient(&redis.Options{
		Addr: o.Address, Username: o.Username, Password: o.Password.Reveal(), DB: o.DB, TLSConfig: o.TLS,
		DialTimeout: timeout,
		// Deadlines come from each operation's context (Timeout).
		ContextTimeoutEnabled: true,
		// No client-side retries: every write is a script or a MULTI/EXEC,
		// whose blind re-send could apply twice or outside its WATCH; the
		// callers retry whole operations instead.
		MaxRetries: -1,
		// The pool keeps its default size (10 per CPU): connections are
		// dialled on demand, so a publisher (one transaction at a time)
		// uses one or two and the store as many as it has jobs and lease
		// renewals in flight.
		//
		// The client library's identity and maintenance-notification
		// handshakes need Redis 7.2+ and are of no use here.
		DisableIdentity:          true,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
	})
	return &Redis{c: c, timeout: timeout, desc: fmt.Sprintf("%s://%s/%d", scheme, o.Address, o.DB)}, nil
}

// String names the server ("redis://host:port/db", "rediss://" with TLS),
// never the credentials.
func (r *Redis) String() string { return r.desc }

// Close closes the connections; later calls fail (not with ErrUnavailable).
func (r *Redis) Close() error { return r.c.Close() }

// op bounds one operation by the timeout.
func (r *Redis) op(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, r.timeout)
}

// fail classifies a client error for a caller whose context is ctx.
func (r *Redis) fail(ctx context.Context, err error) error {
	return classify(ctx, err, redisDown(err))
}

// redisDown: anything but an answer from the server (connection refused or
// reset, timeouts, a full pool) means Redis was not reached; so do the
// replies of a server that cannot serve yet (still loading its data, a
// replica without its primary, a script running too long). A closed client
// is this process's doing, not an outage.
func redisDown(err error) bool {
	if errors.Is(err, redis.ErrClosed) {
		return false
	}
	var rerr redis.Error
	if !errors.As(err, &rerr) {
		return true
	}
	for _, prefix := range []string{"LOADING", "MASTERDOWN", "TRYAGAIN", "BUSY"} {
		if redis.HasErrorPrefix(err, prefix) {
			return true
		}
	}
	return false
}

// Ping checks the connection and the credentials.
func (r *Redis) Ping(ctx context.Context) error {
	octx, cancel := r.op(ctx)
	defer cancel()
	return r.fail(ctx, r.c.Ping(octx).Err())
}

// Get returns the value of key; found is false when key does not exist.
func (r *Redis) Get(ctx context.Context, key string) (value []byte, found bool, err error) {
	octx, cancel := r.op(ctx)
	defer cancel()
	return get(ctx, r, r.c.Get(octx, key))
}

// get reads a GET reply.
func get(ctx context.Context, r *Redis, cmd *redis.StringCmd) ([]byte, bool, error) {
	data, err := cmd.Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, r.fail(ctx, err)
	}
	return data, true, nil
}

// SMembers returns the members of the set key (none when it does not
// exist), in no particular order.
func (r *Redis) SMembers(ctx context.Context, key string) ([]string, error) {
	octx, cancel := r.op(ctx)
	defer cancel()
	members, err := r.c.SMembers(octx, key).Result()
	return members, r.fail(ctx, err)
}

// Script is a Lua script, sent by its SHA-1 (EVALSHA) and in full only when
// the server does not know it yet.
type Script struct{ s *redis.Script }

// NewScript returns the script src.
func NewScript(src string) *Script { return &Script{s: redis.NewScript(src)} }

// Eval runs s with keys and args and returns its reply: int64 for a Lua
// number, string, []any for a table.
func (r *Redis) Eval(ctx context.Context, s *Script, keys []string, args ...any) (any, error) {
	octx, cancel := r.op(ctx)
	defer cancel()
	reply, err := s.s.Run(octx, r.c, keys, args...).Result()
	return reply, r.fail(ctx, err)
}

// EvalInt is Eval for a script that returns a number.
func (r *Redis) EvalInt(ctx context.Context, s *Script, keys []string, args ...any) (int64, error) {
	reply, err := r.Eval(ctx, s, keys, args...)
	if err != nil {
		return 0, err
	}
	n, ok := reply.(int64)
	if !ok {
		return 0, fmt.Errorf("redis: script replied %v, want a number", reply)
	}
	return n, nil
}

// Watch runs fn on one connection that WATCHes keys, for an optimistic
// transaction: fn reads (and may watch more keys), then Exec applies its
// writes only if no watched key changed meanwhile. The timeout bounds the
// whole of it. Errors of the RedisTx methods are classified like the other
// methods'; an error fn makes up itself is returned as is.
func (r *Redis) Watch(ctx context.Context, keys []string, fn func(*RedisTx) error) error {
	octx, cancel := r.op(ctx)
	defer cancel()
	var fnErr error
	err := r.c.Watch(octx, func(tx *redis.Tx) error {
		fnErr = fn(&RedisTx{r: r, tx: tx, ctx: octx, caller: ctx})
		return fnErr
	}, keys...)
	if fnErr != nil {
		return fnErr
	}
	return r.fail(ctx, err)
}

// RedisTx is the connection of a Watch call. Its methods run under that
// call's context and timeout; it must not be used after fn returns.
type RedisTx struct {
	r      *Redis
	tx     *redis.Tx
	ctx    context.Context // the operation's, bounded by the timeout
	caller context.Context // the caller's, for classification
}

// Get is Redis.Get on the transaction's connection.
func (t *RedisTx) Get(key string) (value []byte, found bool, err error) {
	return get(t.caller, t.r, t.tx.Get(t.ctx, key))
}

// Watch adds keys to the watched ones.
func (t *RedisTx) Watch(keys ...string) error {
	return t.r.fail(t.caller, t.tx.Watch(t.ctx, keys...).Err())
}

// MGet returns the values of keys read in one atomic step; missing keys are
// absent from the map.
func (t *RedisTx) MGet(keys ...string) (map[string]string, error) {
	values, err := t.tx.MGet(t.ctx, keys...).Result()
	if err != nil {
		return nil, t.r.fail(t.caller, err)
	}
	out := make(map[string]string, len(values))
	for i, v := range values {
		if s, ok := v.(string); ok {
			out[keys[i]] = s
		}
	}
	return out, nil
}

// ScanPrefix returns every key that starts with prefix, each once. SCAN is
// not atomic: watch what it returns before reading it, and have every writer
// change a key watched from the start.
func (t *RedisTx) ScanPrefix(prefix string) ([]string, error) {
	pattern := strings.NewReplacer(`\`, `\\`, `*`, `\*`, `?`, `\?`, `[`, `\[`, `]`, `\]`).Replace(prefix) + "*"
	seen := map[string]bool{}
	var keys []string
	var cursor uint64
	for {
		batch, next, err := t.tx.Scan(t.ctx, cursor, pattern, 100).Result()
		if err != nil {
			return nil, t.r.fail(t.caller, err)
		}
		for _, k := range batch {
			if !seen[k] { // SCAN may return a key twice
				seen[k] = true
				keys = append(keys, k)
			}
		}
		if next == 0 {
			return keys, nil
		}
		cursor = next
	}
}

// Exec sets every key of set and deletes del in one MULTI/EXEC. It returns
// false, writing nothing, when a watched key changed since it was watched.
func (t *RedisTx) Exec(set map[string]string, del []string) (bool, error) {
	_, err := t.tx.TxPipelined(t.ctx, func(pipe redis.Pipeliner) error {
		for k, v := range set {
			pipe.Set(t.ctx, k, v, 0)
		}
		if len(del) > 0 {
			pipe.Del(t.ctx, del...)
		}
		return nil
	})
	if errors.Is(err, redis.TxFailedErr) {
		return false, nil
	}
	if err != nil {
		return false, t.r.fail(t.caller, err)
	}
	return true, nil
}
