package acme_test

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/certfetch/certfetch/acme"
	"github.com/certfetch/certfetch/internal/testkit/testca"
)

// reportedDelay is what the CA in the reported case (Traefik #11636) needs after finalize.
const reportedDelay = 42 * time.Second

// deadlineSlack is how far past its deadline an attempt may end: the time to unwind one
// cancelled request on a loaded 2-core machine.
const deadlineSlack = 1500 * time.Millisecond

// TestReportedCase replays the reported case with its real numbers in both slow modes:
// a 30 s deadline ends the attempt with the typed error and the next attempt resumes the
// same order; a 60 s deadline gets the certificate in one attempt. Either way the CA sees
// one new-order and one finalize. The per-request timeouts are set far below 42 s, so the
// synchronous finalize only succeeds because it is exempt from them.
func TestReportedCase(t *testing.T) {
	t.Parallel()

	type reportedCase struct {
		desc       string
		mode       testca.SlowMode
		retryAfter time.Duration
		deadline   time.Duration
		// wantStatus is the order's last status when the first attempt ends ("" if it succeeds).
		wantStatus string
	}

	tests := []reportedCase{
		{desc: "async, deadline 30s: resumed by the next attempt", mode: testca.Async, retryAfter: 5 * time.Second, deadline: 30 * time.Second, wantStatus: "processing"},
		{desc: "async, deadline 60s: one attempt", mode: testca.Async, retryAfter: 5 * time.Second, deadline: 60 * time.Second},
		{desc: "sync, deadline 30s: resumed by the next attempt", mode: testca.Sync, deadline: 30 * time.Second, wantStatus: "ready"},
		{desc: "sync, deadline 60s: one attempt", mode: testca.Sync, deadline: 60 * time.Second},
	}

	runWaiting(t, tests, func(tc reportedCase) string { return tc.desc }, func(t *testing.T, test reportedCase) {
		s := newSetup(t, testca.Options{Mode: test.mode, Delay: reportedDelay, RetryAfter: test.retryAfter})
		cfg := s.config(t)
		cfg.Timeouts = acme.Timeouts{ResponseHeader: 5 * time.Second, Request: 10 * time.Second}
		c := s.client(t, cfg)
		req := acme.Request{Names: []string{"slow.example.com"}, Profile: testca.DefaultProfile}

		cert, took, err := obtain(t, c, req, test.deadline)

		if test.wantStatus != "" {
			pe := requirePending(t, err, context.DeadlineExceeded)
			assert.Equal(t, test.wantStatus, pe.Status)
			assert.Equal(t, test.retryAfter, pe.RetryAfter)
			assert.GreaterOrEqual(t, took, test.deadline)
			assert.Less(t, took, test.deadline+deadlineSlack)

			cert, _, err = obtain(t, c, req, test.deadline)
			require.NoError(t, err)
			assert.Equal(t, pe.OrderURL, cert.OrderURL, "the next attempt must resume the same order")
		} else {
			require.NoError(t, err)
			assert.Greater(t, took, reportedDelay)
		}

		requireCert(t, cert, "slow.example.com")

		stats := s.ca.Stats()
		assert.Equal(t, 1, stats.NewOrders)
		assert.Equal(t, 1, stats.Finalizes)
	})
}

// TestPolling checks the order polls against the CA's Retry-After: with it honoured the
// number of polls follows from the delay, and polling ends at the deadline.
func TestPolling(t *testing.T) {
	t.Parallel()

	type pollCase struct {
		desc       string
		delay      time.Duration
		retryAfter time.Duration
		deadline   time.Duration
	}

	tests := []pollCase{
		// Without Retry-After the schedule 1, 2, 4, 8 s would poll 4 times for a 9 s delay;
		// with Retry-After 4 s it polls 3 times.
		{desc: "Retry-After honoured", delay: 9 * time.Second, retryAfter: 4 * time.Second, deadline: 30 * time.Second},
		{desc: "polling stops at the deadline", delay: time.Minute, retryAfter: 4 * time.Second, deadline: 10 * time.Second},
	}

	runWaiting(t, tests, func(tc pollCase) string { return tc.desc }, func(t *testing.T, test pollCase) {
		s := newSetup(t, testca.Options{Mode: testca.Async, Delay: test.delay, RetryAfter: test.retryAfter})
		cfg := s.config(t)
		c := s.client(t, cfg)
		req := acme.Request{Names: []string{"poll.example.com"}, Profile: testca.DefaultProfile}

		cert, took, err := obtain(t, c, req, test.deadline)

		// One read of the order per Retry-After after finalize (none after the
		// authorizations: the order is ready once they are valid).
		waited := min(test.delay, test.deadline)
		wantPolls := int(math.Ceil(waited.Seconds() / test.retryAfter.Seconds()))

		if test.delay < test.deadline {
			require.NoError(t, err)
			requireCert(t, cert, "poll.example.com")
			assert.Equal(t, wantPolls, s.ca.Stats().OrderPolls)

			return
		}

		pe := requirePending(t, err, context.DeadlineExceeded)
		assert.Equal(t, "processing", pe.Status)
		assert.Equal(t, test.retryAfter, pe.RetryAfter)
		assert.GreaterOrEqual(t, took, test.deadline)
		assert.Less(t, took, test.deadline+deadlineSlack)
		assert.LessOrEqual(t, s.ca.Stats().OrderPolls, wantPolls)

		_, err = cfg.Journal.Load(context.Background(), req.Key())
		require.NoError(t, err, "the order must stay journaled")
	})
}
