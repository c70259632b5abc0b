package output

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/certfetch/certfetch/fetcher/config"
)

// RedisOptions configure a Redis KVOutput.
type RedisOptions struct {
	// Address is host:port of a single Redis server (the one Traefik's
	// providers.redis.endpoints names).
	Address  string
	Username string
	// Password is revealed only to the Redis client; never logged.
	Password config.Secret
	DB       int
	// TLS is nil for plain TCP.
	TLS *tls.Config
	// RootKey is Traefik's providers.redis.rootKey.
	RootKey string
	// Timeout bounds one transaction attempt; 0 means
	// config.DefaultKVTimeout.
	Timeout time.Duration
	// Logger receives one line per change; nil means slog.Default().
	Logger *slog.Logger
}

// NewRedisOutput returns a KVOutput writing to Redis. It does not connect:
// the first publication does, so that certfetch starts (and keeps its
// certificates stored) while Redis is down.
//
// Each publication is one MULTI/EXEC under WATCH: the index key, then every
// key of the list, are watched before they are read, so EXEC applies the
// whole new list only if no other client changed what it was computed from
// (Redis has no multi-key compare-and-set otherwise, and MULTI/EXEC alone
// would not notice a concurrent writer). Traefik's Redis provider re-reads
// the list with SCAN then one MGET after each keyspace notification; MGET
// is atomic against EXEC, so a node never loads a certificate with another
// one's key.
func NewRedisOutput(opts RedisOptions) (*KVOutput, error) {
	if opts.Address == "" {
		return nil, errors.New("redis output: address is required")
	}
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = config.DefaultKVTimeout
	}
	client := redis.NewClient(&redis.Options{
		Addr:                  opts.Address,
		Username:              opts.Username,
		Password:              opts.Password.Reveal(),
		DB:                    opts.DB,
		TLSConfig:             opts.TLS,
		DialTimeout:           timeout,
		ContextTimeoutEnabled: true,
		// One transaction at a time per output (KVOutput serialises).
		PoolSize: 2,
		// The client library's identity and maintenance-notification
		// handshakes need Redis 7.2+ and are of no use here.
		DisableIdentity:          true,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
	})
	return newKVOutput("redis", opts.Address, opts.RootKey, timeout, opts.Logger, &redisBackend{client: client}), nil
}

// newKVOutput applies the defaults shared by both stores.
func newKVOutput(store, endpoint, rootKey string, timeout time.Duration, logger *slog.Logger, b kvBackend) *KVOutput {
	if rootKey == "" {
		rootKey = config.DefaultRootKey
	}
	if logger == nil {
		logger = slog.Default()
	}
	return &KVOutput{store: store, endpoint: endpoint, layout: kvLayout{root: rootKey}, timeout: timeout, logger: logger, backend: b}
}

type redisBackend struct {
	client *redis.Client
}

func (b *redisBackend) attempt(ctx context.Context, l kvLayout, change kvChange) (bool, error) {
	wrote := false
	err := b.client.Watch(ctx, func(tx *redis.Tx) error {
		raw, err := tx.Get(ctx, l.indexKey()).Bytes()
		if err != nil && !errors.Is(err, redis.Nil) {
			return fmt.Errorf("read index: %w", err)
		}
		names, err := decodeIndex(raw)
		if err != nil {
			return err
		}
		keys, err := scanPrefix(ctx, tx, l.certsPrefix())
		if err != nil {
			return err
		}
		// The positions the index names are read (and watched) even when
		// the scan did not return them, so that a key created meanwhile
		// fails the transaction instead of being overwritten unseen.
		keys = appendMissing(keys, l.indexKeys(len(names)))
		current := map[string]string{}
		if len(keys) > 0 {
			if err := tx.Watch(ctx, keys...).Err(); err != nil {
				return fmt.Errorf("watch list: %w", err)
			}
			values, err := tx.MGet(ctx, keys...).Result()
			if err != nil {
				return fmt.Errorf("read list: %w", err)
			}
			for i, v := range values {
				if s, ok := v.(string); ok {
					current[keys[i]] = s
				}
			}
		}
		published := l.recoverPublished(names, current)
		if !change(published) {
			return nil
		}
		p := l.plan(current, published)
		_, err = tx.TxPipelined(ctx, func(pipe redis.Pipeliner) error {
			for k, v := range p.puts {
				pipe.Set(ctx, k, v, 0)
			}
			if len(p.dels) > 0 {
				pipe.Del(ctx, p.dels...)
			}
			pipe.Set(ctx, l.indexKey(), p.index, 0)
			return nil
		})
		if err != nil {
			return err
		}
		wrote = true
		return nil
	}, l.indexKey())
	if errors.Is(err, redis.TxFailedErr) {
		return false, errConflict
	}
	return wrote, err
}

// scanPrefix returns every key starting with prefix. SCAN is not atomic,
// which is fine here: the keys are watched before they are read, and every
// certfetch writer also changes the watched index key.
func scanPrefix(ctx context.Context, tx *redis.Tx, prefix string) ([]string, error) {
	var keys []string
	var cursor uint64
	for {
		batch, next, err := tx.Scan(ctx, cursor, globEscape(prefix)+"*", 100).Result()
		if err != nil {
			return nil, fmt.Errorf("scan list: %w", err)
		}
		keys = appendMissing(keys, batch) // SCAN may return a key twice
		if next == 0 {
			return keys, nil
		}
		cursor = next
	}
}

// appendMissing appends the keys of add not yet in keys.
func appendMissing(keys, add []string) []string {
	seen := make(map[string]bool, len(keys))
	for _, k := range keys {
		seen[k] = true
	}
	for _, k := range add {
		if !seen[k] {
			seen[k] = true
			keys = append(keys, k)
		}
	}
	return keys
}

// globEscape quotes SCAN MATCH's special characters.
func globEscape(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `*`, `\*`, `?`, `\?`, `[`, `\[`, `]`, `\]`)
	return r.Replace(s)
}

// unavailable: anything but an answer from the server (connection refused or
// reset, timeouts, a full pool) means Redis was not reached; so do the
// replies of a server that cannot serve yet (still loading its data, a
// replica without its primary).
func (b *redisBackend) unavailable(err error) bool {
	if errors.Is(err, redis.ErrClosed) {
		return false
	}
	var rerr redis.Error
	if errors.As(err, &rerr) {
		for _, prefix := range []string{"LOADING", "MASTERDOWN", "TRYAGAIN", "BUSY"} {
			if redis.HasErrorPrefix(err, prefix) {
				return true
			}
		}
		return false
	}
	return true
}

func (b *redisBackend) close() error { return b.client.Close() }
