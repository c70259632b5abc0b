package store

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"time"
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
	// seconds, so Expires may be up to a second late, never early). Zero
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

// defaultPrefix is Options.Prefix's default, the configuration's default
// storage rootKey.
const defaultPrefix = "certfetch/"

// remote is what the Redis and etcd backends share.
type remote struct {
	prefix   string
	instance string
	desc     string // for errors and String: no credentials
}

// newRemote applies the defaults to o; server names the connection.
func newRemote(o Options, server fmt.Stringer) remote {
	r := remote{prefix: o.Prefix, instance: o.Instance}
	if r.prefix == "" {
		r.prefix = defaultPrefix
	}
	if r.instance == "" {
		r.instance = defaultInstance()
	}
	r.desc = fmt.Sprintf("%s prefix %q", server, r.prefix)
	return r
}

func (r *remote) String() string { return r.desc }

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
