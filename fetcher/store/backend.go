package store

import (
	"context"
	"fmt"
	"time"
)

// backend is what a Store's records and locks sit on. Keys are
// "<dir>/<name>" with dir one of accounts, orders, certificates.
// Implementations are safe for concurrent use.
type backend interface {
	// Get returns the value of key, or an error wrapping ErrNotFound.
	Get(ctx context.Context, key string) ([]byte, error)
	// Put stores value under key atomically: readers see the old value or
	// the new one. A lease in ctx (WithLease) fences it: ErrLeaseLost when
	// the lease no longer holds its lock, checked atomically with the write.
	Put(ctx context.Context, key string, value []byte) error
	// Create stores value under key only if key does not exist, atomically
	// with the check, and reports whether it did. Unfenced.
	Create(ctx context.Context, key string, value []byte) (bool, error)
	// Delete removes key, fenced like Put; a missing key is not an error.
	Delete(ctx context.Context, key string) error
	// List returns the keys in dir ("orders"), sorted.
	List(ctx context.Context, dir string) ([]string, error)
	// TryLock takes the lock name without waiting; see Store.TryLock.
	TryLock(ctx context.Context, name string, ttl time.Duration) (*Lease, error)
	// Close releases connections.
	Close() error
	// String names the backend and location, without credentials.
	String() string
}

// LockedError is the error TryLock returns when another holder has the lock;
// errors.Is(err, ErrLocked) holds for it.
type LockedError struct {
	// Lock is the lock's name.
	Lock string
	// Holder names the instance that holds it (OpenRedis/OpenEtcd's
	// Instance, host:pid by default); empty when unknown.
	Holder string
}

func (e *LockedError) Error() string {
	if e.Holder == "" {
		return fmt.Sprintf("lock %s: held by another holder", e.Lock)
	}
	return fmt.Sprintf("lock %s: held by %s", e.Lock, e.Holder)
}

// Is makes errors.Is(err, ErrLocked) true.
func (e *LockedError) Is(target error) bool { return target == ErrLocked }
