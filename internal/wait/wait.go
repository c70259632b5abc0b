// Package wait holds the two ways certfetch waits on a context: once (Sleep) and
// periodically (Every). Both end as soon as the context does, so that shutdown is never
// held up by a wait.
package wait

import (
	"context"
	"time"
)

// Sleep waits d, or until ctx ends; then it returns ctx's error.
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Every calls fn every d until ctx ends. The first call is d after Every starts.
func Every(ctx context.Context, d time.Duration, fn func()) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			fn()
		}
	}
}
