package fetcher_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/certfetch/certfetch/fetcher"
	"github.com/certfetch/certfetch/fetcher/config"
	"github.com/certfetch/certfetch/internal/testkit/testservers"
)

// stepCAWatch is how long TestStepCAValidationFailure watches the daemon: the issue asks
// for the attempts over five minutes.
const stepCAWatch = 5 * time.Minute

// TestStepCAValidationFailure runs the daemon against a real step-ca for a name whose
// HTTP-01 validation cannot succeed (step-ca dials 127.0.0.1:80, where nothing listens).
// step-ca keeps such a challenge pending with an error instead of failing it; certfetch
// must not take that for a slow CA: the CA's error text is in `status` after the first
// attempt, the reason is "authorization", the certificate needs attention, and the
// attempts back off (1, 2, 4 ... minutes) instead of repeating every deadline. It watches
// for five minutes of real time, in parallel with the rest of the package.
func TestStepCAValidationFailure(t *testing.T) {
	t.Parallel()
	ca := testservers.StartStepCA(t, testservers.StepCAOptions{})
	dir := t.TempDir()
	path := filepath.Join(dir, "certfetch.yml")
	require.NoError(t, os.WriteFile(path, []byte(fmt.Sprintf(`storage: %s
resolvers:
  stepca:
    caServer: %s
    caCertificates: [%s]
    httpChallenge: {stateless: true}
certificates:
  - domains: [unreachable.example.test]
output: {file: {directory: %s}}
`, strconv.Quote(filepath.Join(dir, "state")), ca.DirectoryURL, strconv.Quote(ca.RootFile), strconv.Quote(filepath.Join(dir, "out")))), 0o600))
	cfg, err := config.Load(path)
	require.NoError(t, err)
	st, err := fetcher.OpenStore(t.Context(), cfg.Storage)
	require.NoError(t, err)
	t.Cleanup(func() { st.Close() })

	var (
		mu       sync.Mutex
		attempts []time.Time
		failed   = make(chan struct{}, 100)
	)
	observe := func(e fetcher.Event) {
		switch e.Step {
		case fetcher.StepOrdering:
			mu.Lock()
			attempts = append(attempts, time.Now())
			mu.Unlock()
		case fetcher.StepFailed:
			failed <- struct{}{}
		}
	}
	d, err := fetcher.New(cfg, st, fetcher.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Observe: observe})
	require.NoError(t, err)
	t.Cleanup(d.Close)

	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), stepCAWatch)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx, nil) }()

	select {
	case <-failed:
	case <-time.After(cfg.Timeout + time.Minute):
		t.Fatal("no failure reported within one attempt")
	}
	firstFailure := time.Since(start)
	statuses, err := fetcher.Status(t.Context(), cfg, st, nil, time.Now())
	require.NoError(t, err)
	require.Len(t, statuses, 1)
	s := statuses[0]
	assert.Equal(t, "authorization", s.Reason)
	assert.Contains(t, s.LastError, "The server could not connect to validation target", "the CA's own words")
	assert.Contains(t, s.LastError, "unreachable.example.test", "the domain")
	assert.True(t, s.Trouble(), "a validation failure needs an operator")
	assert.Less(t, firstFailure, cfg.Timeout, "told apart from a slow CA before the deadline")

	require.NoError(t, <-done)
	mu.Lock()
	defer mu.Unlock()
	t.Logf("step-ca, HTTP-01 target unreachable: first failure after %s; %d attempts in %s, at %v",
		firstFailure.Round(time.Millisecond), len(attempts), stepCAWatch, offsets(start, attempts))
	// Back-off of 1, 2, 4 minutes with ±25 % jitter: at most attempts at 0, ≤1.25 and
	// ≤3.75 minutes, and one more only if the jitter is kind; never one per deadline.
	assert.LessOrEqual(t, len(attempts), 4, "attempts back off")
	assert.GreaterOrEqual(t, len(attempts), 2, "and are retried")
}

// offsets renders times as offsets from start.
func offsets(start time.Time, times []time.Time) []string {
	out := make([]string, len(times))
	for i, at := range times {
		out[i] = at.Sub(start).Round(time.Second).String()
	}
	return out
}
