package acme

import (
	"context"
	"sync"
	"time"
)

// Polling schedule for orders and authorizations.
//
// When the CA sends Retry-After, it is honoured (RFC 8555 §7.4), clamped to
// [minPoll, maxPoll]: minPoll keeps a "Retry-After: 0" or a date in the past from becoming
// a busy loop, maxPoll keeps a misconfigured CA from parking an order for hours (the order
// deadline bounds the wait anyway).
//
// Without Retry-After the CA gives no hint, so the wait starts at firstBlindPoll and
// doubles up to maxBlindPoll: a fast CA (Pebble, Boulder: well under a second) costs one or
// two short waits, and a slow one is noticed at most maxBlindPoll after it is done while
// costing one request per maxBlindPoll, against lego's one per Timeout/60.
const (
	minPoll        = 500 * time.Millisecond
	maxPoll        = 5 * time.Minute
	firstBlindPoll = time.Second
	maxBlindPoll   = 8 * time.Second
)

// pollDelay returns the wait before poll number attempt (0-based), given the CA's last
// Retry-After (zero: none).
func pollDelay(retryAfter time.Duration, attempt int) time.Duration {
	if retryAfter > 0 {
		return min(max(retryAfter, minPoll), maxPoll)
	}

	d := firstBlindPoll
	for i := 0; i < attempt && d < maxBlindPoll; i++ {
		d *= 2
	}

	return min(d, maxBlindPoll)
}

// keyLocks serializes Obtain calls for the same request key inside one process, so that
// two concurrent calls never create two orders for one request: the second waits and then
// resumes (or reuses nothing and starts fresh) from the Journal.
type keyLocks struct {
	mu   sync.Mutex
	busy map[string]chan struct{}
}

// lock takes the lock for key, or returns ctx's error if ctx ends first. The returned
// function releases it.
func (l *keyLocks) lock(ctx context.Context, key string) (func(), error) {
	for {
		l.mu.Lock()

		if l.busy == nil {
			l.busy = map[string]chan struct{}{}
		}

		held, ok := l.busy[key]
		if !ok {
			done := make(chan struct{})
			l.busy[key] = done
			l.mu.Unlock()

			return func() {
				l.mu.Lock()
				delete(l.busy, key)
				l.mu.Unlock()
				close(done)
			}, nil
		}

		l.mu.Unlock()

		select {
		case <-held:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}
