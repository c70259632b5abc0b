package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// leaseOps are a backend's operations on one lease it granted.
type leaseOps interface {
	// renew extends the lease by its TTL; an error wrapping ErrLeaseLost
	// when the lock is gone or held by someone else.
	renew(ctx context.Context) error
	// release deletes the lock only if this lease still holds it.
	release(ctx context.Context) error
}

// Lease is a held lock, from Store.AcquireLease. Its methods are safe for
// concurrent use.
//
// While the lease is held, a goroutine renews it every TTL/3: one failed
// renewal (server briefly unreachable, a slow failover) is retried at the
// next tick, still a third of the TTL before the lease would expire, and a
// renewal may take up to TTL/3 (and at most the connection's timeout)
// without endangering the lease. The lease is lost when a renewal finds the
// lock gone or held by another (ErrLeaseLost), or when no renewal has
// succeeded within TTL of the last successful one (counted from when that
// renewal was sent, so the holder gives up no later than the server expires
// the lock). A lost lease is never renewed again: its contexts (Context)
// end, the holder must stop working on the locked certificate, and writes
// made under it fail with ErrLeaseLost.
type Lease struct {
	name   string
	token  int64
	holder string
	owner  backend
	ops    leaseOps
	ttl    time.Duration

	mu      sync.Mutex
	err     error                            // why the lease ended; nil while held
	cancels map[*int]context.CancelCauseFunc // of the live Contexts

	stop     chan struct{} // closed to stop renewing
	stopOnce sync.Once
	done     chan struct{} // closed when the renewal goroutine returns
	// renewCtx is cancelled with stop, so that Release does not wait for a
	// renewal stuck on an unreachable server.
	renewCtx    context.Context
	cancelRenew context.CancelFunc

	releaseOnce sync.Once
	releaseErr  error
}

// errReleased is a Lease's Err after Release.
var errReleased = fmt.Errorf("lease released: %w", ErrLeaseLost)

// newLease returns a held lease and, when ops can renew, starts renewing it;
// sent is when the request that acquired it was sent.
func newLease(owner backend, name string, token int64, holder string, ttl time.Duration, ops leaseOps, sent time.Time, renews bool) *Lease {
	l := &Lease{
		name: name, token: token, holder: holder, owner: owner, ops: ops, ttl: ttl,
		stop: make(chan struct{}), done: make(chan struct{}), cancels: map[*int]context.CancelCauseFunc{},
	}
	l.renewCtx, l.cancelRenew = context.WithCancel(context.Background())
	if renews {
		go l.keepAlive(sent)
	} else {
		close(l.done)
	}
	return l
}

// Name returns the lock's name.
func (l *Lease) Name() string { return l.name }

// Token returns the lease's fencing token: every lease of the same lock name
// gets a higher token than the ones granted before it (Redis: a counter per
// name; etcd: the lock key's create revision; file: a counter in memory).
func (l *Lease) Token() int64 { return l.token }

// Holder names the instance holding the lease.
func (l *Lease) Holder() string { return l.holder }

// Err returns nil while the lease is held, and once it is lost or released
// an error wrapping ErrLeaseLost saying why.
func (l *Lease) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

// markLost ends the lease once, recording why, and cancels its contexts
// before it returns.
func (l *Lease) markLost(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil {
		return
	}
	l.err = err
	for _, cancel := range l.cancels {
		cancel(err)
	}
	clear(l.cancels)
}

// Context returns the context for work under the lease: derived from
// parent, it carries the lease, so that the Store's writes made with it (or
// with context.WithoutCancel of it) happen only while the lease holds its
// lock, and it ends when parent does or when the lease is lost or released
// (with Err as its context.Cause; before Release returns). Call cancel when
// the work is done.
func (l *Lease) Context(parent context.Context) (ctx context.Context, cancel context.CancelFunc) {
	ctx, cancelCause := context.WithCancelCause(context.WithValue(parent, leaseKey{}, l))
	key := new(int)
	l.mu.Lock()
	if l.err != nil {
		cancelCause(l.err)
	} else {
		l.cancels[key] = cancelCause
	}
	l.mu.Unlock()
	return ctx, func() {
		l.mu.Lock()
		delete(l.cancels, key)
		l.mu.Unlock()
		cancelCause(context.Canceled)
	}
}

// stopRenewing stops the renewal goroutine and waits for it.
func (l *Lease) stopRenewing() {
	l.stopOnce.Do(func() {
		close(l.stop)
		l.cancelRenew()
	})
	<-l.done
}

// Release stops renewing the lease and deletes the lock if, and only if,
// this lease still holds it (compare-and-delete): a holder whose lease
// expired and was taken by another instance leaves the new holder's lock
// alone and gets nil. A second Release returns the first one's result. An
// error (server unreachable) leaves the lock to expire after its TTL.
func (l *Lease) Release(ctx context.Context) error {
	l.releaseOnce.Do(func() {
		l.stopRenewing()
		l.markLost(errReleased)
		// Compare-and-delete is safe even after the lease was lost, and
		// frees the lock at once when it was lost only locally (renewals
		// that could not reach the server).
		if err := l.ops.release(ctx); err != nil {
			l.releaseErr = fmt.Errorf("release lock %s (token %d): %w", l.name, l.token, err)
		}
	})
	return l.releaseErr
}

func (l *Lease) keepAlive(sent time.Time) {
	defer close(l.done)
	expires := sent.Add(l.ttl)
	timer := time.NewTimer(l.ttl / 3)
	defer timer.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-timer.C:
		}
		sent := time.Now()
		// No renewal is worth waiting for past the lease's expiry.
		ctx, cancel := context.WithDeadline(l.renewCtx, expires)
		err := l.ops.renew(ctx)
		cancel()
		switch {
		case err == nil:
			expires = sent.Add(l.ttl)
		case errors.Is(err, ErrLeaseLost):
			l.markLost(fmt.Errorf("renew lock %s (token %d): %w", l.name, l.token, err))
			return
		case !time.Now().Before(expires):
			l.markLost(fmt.Errorf("renew lock %s (token %d): no renewal within the %s TTL: %w: %w", l.name, l.token, l.ttl, ErrLeaseLost, err))
			return
		}
		timer.Reset(min(l.ttl/3, time.Until(expires)))
	}
}

type leaseKey struct{}

// leaseFrom returns the lease in ctx, or nil.
func leaseFrom(ctx context.Context) *Lease {
	l, _ := ctx.Value(leaseKey{}).(*Lease)
	return l
}

// fence returns ctx's lease, checked to come from owner and to be held
// locally; nil without a lease. The backend still checks it on the server.
func fence(ctx context.Context, owner backend, op, key string) (*Lease, error) {
	l := leaseFrom(ctx)
	if l == nil {
		return nil, nil
	}
	if l.owner != owner {
		return nil, fmt.Errorf("%s %s: lease on lock %s comes from %s, not %s", op, key, l.name, l.owner, owner)
	}
	if err := l.Err(); err != nil {
		return nil, fmt.Errorf("%s %s under lock %s (token %d): %w", op, key, l.name, l.token, err)
	}
	return l, nil
}

// lostError is the error of a fenced write the server refused.
func lostError(op, key string, l *Lease) error {
	return fmt.Errorf("%s %s under lock %s (token %d): %w", op, key, l.name, l.token, ErrLeaseLost)
}
