package store

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"github.com/certfetch/certfetch/internal/kvclient"
)

// backend is what a Store's records and locks sit on. Keys are
// "<dir>/<name>" with dir one of accounts, orders, certificates.
// Implementations are safe for concurrent use.
type backend interface {
	// Get returns the value of key, or an error wrapping ErrNotFound.
	Get(ctx context.Context, key string) ([]byte, error)
	// Put stores value under key atomically: readers see the old value or
	// the new one. A lease in ctx (Lease.Context) fences it: ErrLeaseLost
	// when the lease no longer holds its lock, checked atomically with the
	// write.
	Put(ctx context.Context, key string, value []byte) error
	// Create stores value under key only if key does not exist, atomically
	// with the check, and reports whether it did. Unfenced.
	Create(ctx context.Context, key string, value []byte) (bool, error)
	// Delete removes key, fenced like Put; a missing key is not an error.
	Delete(ctx context.Context, key string) error
	// List returns the keys in dir ("orders"), sorted.
	List(ctx context.Context, dir string) ([]string, error)
	// Acquire takes the lease name without waiting; see Store.AcquireLease.
	Acquire(ctx context.Context, name string, ttl time.Duration) (*Lease, error)
	// Close releases connections.
	Close() error
	// String names the backend and location, without credentials.
	String() string
	// Locate names where key is kept, for messages: a file's path, or the
	// key on its server.
	Locate(key string) string
}

// LeaseHeldError is the error AcquireLease returns when another holder has
// the lease; errors.Is(err, ErrLeaseHeld) holds for it.
type LeaseHeldError struct {
	// Lock is the lease's name.
	Lock string
	// Holder names the instance that holds it (Options.Instance, host:pid
	// by default); empty when unknown.
	Holder string
	// Expires is when the holder's lease runs out unless the holder renews
	// it: a holder that died leaves the lock free from then on. Redis
	// reports it in the same script that refused the acquisition (the
	// lock's PTTL); etcd right after (the lock's lease TimeToLive, in whole
	// seconds: Expires is the earliest the lease can run out, up to a
	// second early, so that a waiter coming back at it takes over a dead
	// holder's lock as soon as etcd frees it; an early one finds the lock
	// still held and gets a new Expires). Zero
	// when unknown: on the file backend (leases die with the process), or
	// for a lock without expiry.
	Expires time.Time
}

func (e *LeaseHeldError) Error() string {
	holder := e.Holder
	if holder == "" {
		holder = "another holder"
	}
	if e.Expires.IsZero() {
		return fmt.Sprintf("lease %s: held by %s", e.Lock, holder)
	}
	return fmt.Sprintf("lease %s: held by %s until %s", e.Lock, holder, e.Expires.UTC().Format(time.RFC3339Nano))
}

// Is makes errors.Is(err, ErrLeaseHeld) true.
func (e *LeaseHeldError) Is(target error) bool { return target == ErrLeaseHeld }

// Options are what a shared store (OpenRedis, OpenEtcd) adds to the
// connection: where its keys live and how its instance is named.
type Options struct {
	// Prefix is put before every key; default "certfetch/".
	Prefix string
	// Instance names this certfetch instance in lock records and
	// LeaseHeldError; default host:pid.
	Instance string
}

// OpenRedis connects to Redis and checks the connection and credentials
// with PING, so that a wrong address or password fails here with a clear
// error (wrapping kvclient.ErrUnavailable when the server was not reached).
// Close the Store when done.
func OpenRedis(ctx context.Context, conn kvclient.RedisOptions, o Options) (*Store, error) {
	c, err := kvclient.NewRedis(conn)
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	r := &redisBackend{remote: newRemote("redis", o, c), c: c}
	return r.open(ctx, r, c.Ping)
}

// OpenEtcd connects to etcd and reads one key (the prefix itself), so that
// a wrong endpoint, credentials or permissions fail here with a clear error
// (wrapping kvclient.ErrUnavailable when the cluster was not reached). Close
// the Store when done.
func OpenEtcd(ctx context.Context, conn kvclient.EtcdOptions, o Options) (*Store, error) {
	c, err := kvclient.NewEtcd(conn)
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	e := &etcdBackend{remote: newRemote("etcd", o, c), c: c}
	return e.open(ctx, e, func(ctx context.Context) error {
		_, _, err := c.Get(ctx, e.prefix)
		return err
	})
}

// defaultPrefix is Options.Prefix's default, the configuration's default
// storage rootKey.
const defaultPrefix = "certfetch/"

// remote is what the Redis and etcd backends share.
type remote struct {
	kind     string // "redis" or "etcd", for errors
	prefix   string
	instance string
	desc     string // for errors and String: no credentials
	client   io.Closer
}

// newRemote applies the defaults to o for client.
func newRemote(kind string, o Options, client interface {
	io.Closer
	fmt.Stringer
}) remote {
	r := remote{kind: kind, prefix: o.Prefix, instance: o.Instance, client: client}
	if r.prefix == "" {
		r.prefix = defaultPrefix
	}
	if r.instance == "" {
		r.instance = defaultInstance()
	}
	r.desc = fmt.Sprintf("%s prefix %q", client, r.prefix)
	return r
}

// open returns the Store on b (whose remote r is) once check passed, so
// that a wrong address, credentials or permissions fail at once; it closes
// the client otherwise.
func (r *remote) open(ctx context.Context, b backend, check func(context.Context) error) (*Store, error) {
	if err := check(ctx); err != nil {
		r.client.Close()
		return nil, r.fail("open", "", err)
	}
	return &Store{b: b}, nil
}

func (r *remote) String() string { return r.desc }

func (r *remote) Close() error { return r.client.Close() }

// fail names the operation and its subject in a client error.
func (r *remote) fail(op, key string, err error) error {
	return fmt.Errorf("%s %s %s: %w", r.kind, op, r.subject(key), err)
}

// Locate implements backend.
func (r *remote) Locate(key string) string { return r.subject(key) }

// subject names key (relative to the prefix) on the server in errors; the
// server alone without a key.
func (r *remote) subject(key string) string {
	if key == "" {
		return r.desc
	}
	return r.prefix + key + " on " + r.desc
}

// defaultInstance names this process in lock records: host:pid.
func defaultInstance() string {
	host, err := os.Hostname()
	if err != nil {
		host = "unknown-host"
	}
	return host + ":" + strconv.Itoa(os.Getpid())
}
