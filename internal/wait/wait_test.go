package wait_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/certfetch/certfetch/internal/wait"
)

func TestSleep(t *testing.T) {
	t.Parallel()
	require.NoError(t, wait.Sleep(context.Background(), time.Millisecond))

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	assert.ErrorIs(t, wait.Sleep(ctx, time.Hour), context.Canceled, "a cancelled context ends the wait at once")
}

func TestEvery(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	calls := make(chan struct{}, 10)
	done := make(chan struct{})
	go func() {
		wait.Every(ctx, time.Millisecond, func() {
			calls <- struct{}{}
			if len(calls) == 3 {
				cancel()
			}
		})
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Every did not return after its context ended")
	}
	assert.GreaterOrEqual(t, len(calls), 3)
}
