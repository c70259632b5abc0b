package main

import (
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/certfetch/certfetch/demo"
	"github.com/certfetch/certfetch/fetcher"
	"github.com/certfetch/certfetch/internal/testkit/testca"
)

// TestCrashAtEachStep SIGKILLs `certfetch run` at each step of a first issuance, starts
// it again, and checks that nothing was lost: the certificate ends published and
// verifies, the CA saw one order, no file in Traefik's directory is torn, and the order
// journal is empty at the end.
//
// Two ways to stop the process at a step: a request held inside the CA (the process is
// killed while the request is in flight, then the CA processes it for a client that is
// gone: the request reached the CA, the answer never came back), and
// CERTFETCH_TEST_KILL_AT, which makes the process kill itself at one of the daemon's
// steps (TestMain).
func TestCrashAtEachStep(t *testing.T) {
	t.Parallel()
	cases := []struct {
		desc   string
		hold   testca.RequestKind // held while the process is killed
		killAt fetcher.Step       // the process kills itself there
		// orders is how many new-order requests the CA sees in all.
		orders int
		// resumed is what the restarted daemon logs when it picks up the order; empty:
		// there is nothing to pick up.
		resumed string
		// leftover: the crash left the order journaled after its certificate was
		// stored; the restarted daemon forgets it. After any other step the order is
		// forgotten by the attempt that stores the certificate (acme Client.Collected).
		leftover bool
	}{
		// The one step where a second order cannot be avoided: the CA created an order
		// whose URL only the lost answer carried (RFC 8555 newOrder is not idempotent).
		// That order stays pending at the CA until it expires.
		{desc: "newOrder in flight", hold: testca.NewOrder, orders: 2, resumed: `msg="order created"`},
		{desc: "challenge in flight", hold: testca.Challenge, orders: 1, resumed: `msg="resuming order"`},
		{desc: "finalize in flight", hold: testca.Finalize, orders: 1, resumed: `msg="resuming order"`},
		{desc: "download in flight", hold: testca.CertDownload, orders: 1, resumed: `msg="resuming order"`},
		{desc: "obtained", killAt: fetcher.StepObtained, orders: 1, resumed: `msg="returning the certificate the journaled order already produced"`},
		{desc: "stored", killAt: fetcher.StepStored, orders: 1, leftover: true},
		{desc: "collected", killAt: fetcher.StepCollected, orders: 1},
		{desc: "published", killAt: fetcher.StepPublished, orders: 1},
	}
	for _, tc := range cases {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			const domain = "crash.example.test"
			sb := startSandbox(t, demo.Options{}, []string{domain})

			var env []string
			var hold *testca.Hold
			if tc.killAt != "" {
				env = []string{"CERTFETCH_TEST_KILL_AT=" + string(tc.killAt)}
			} else {
				hold = sb.CA.HoldNext(tc.hold)
			}
			first := startProc(t, env, "run", "--config", sb.ConfigPath)
			if hold != nil {
				select {
				case <-hold.Reached():
				case <-time.After(processTimeout):
					t.Fatalf("no %s request reached the CA; stderr:\n%s", tc.hold, first.stderr.String())
				}
				first.kill(t)
				hold.Release() // returns once the CA has processed the request
			} else {
				first.wait(t, processTimeout)
				require.True(t, first.killedBy(syscall.SIGKILL), "killed itself; stderr:\n%s", first.stderr.String())
				require.Contains(t, first.stderr.String(), "test: SIGKILL at step "+string(tc.killAt))
			}
			noTornFiles(t, sb)

			second := startProc(t, nil, "run", "--config", sb.ConfigPath)
			require.Eventually(t, published(sb, domain), processTimeout, tick, "published after the restart")
			if tc.resumed != "" {
				assert.Eventually(t, second.logged(tc.resumed), processTimeout, tick, "the restarted daemon picks up the order")
			}
			// The restarted daemon has nothing left to do once it reports the certificate
			// published and in order.
			require.Eventually(t, func() bool {
				_, ok := findLog(second.stderr.String(), time.Time{}, `msg="certfetch running"`)
				return ok && sb.CA.Stats().NewOrders >= tc.orders
			}, processTimeout, tick)
			second.stop(t)
			_, forgot := findLog(second.stderr.String(), time.Time{}, `msg="forgot the journaled order of the certificate already stored`)
			assert.Equal(t, tc.leftover, forgot, "the restarted daemon had to forget an order left in the journal")

			servedCertificate(t, sb, domain, domain)
			assert.Equal(t, tc.orders, sb.CA.Stats().NewOrders, "new-order requests at the CA")
			noTornFiles(t, sb)
			journalEmpty(t, sb)
			st, table := status(t, sb.ConfigPath, exitOK)
			assert.Equal(t, fetcher.StatePublished, st[domain].State, table)
			assert.Empty(t, st[domain].Order, "no order journaled")
			assert.Empty(t, st[domain].LastError, "the crash is no failure of the certificate")
		})
	}
}

// TestSIGTERMInTheMiddleOfAnOrder: SIGTERM while the finalize request is at the CA stops
// the daemon cleanly (exit 0) without counting a failure; the restarted daemon resumes
// the same order at once, not after a failure's back-off (a minute or more).
func TestSIGTERMInTheMiddleOfAnOrder(t *testing.T) {
	t.Parallel()
	const domain = "term.example.test"
	sb := startSandbox(t, demo.Options{}, []string{domain})
	hold := sb.CA.HoldNext(testca.Finalize)
	first := startProc(t, nil, "run", "--config", sb.ConfigPath)
	select {
	case <-hold.Reached():
	case <-time.After(processTimeout):
		t.Fatalf("no finalize; stderr:\n%s", first.stderr.String())
	}
	first.stop(t)
	assert.Contains(t, first.stderr.String(), "certfetch stopped")
	hold.Release()

	st, table := status(t, sb.ConfigPath, exitOK)
	s := st[domain]
	assert.Equal(t, fetcher.StateOrdering, s.State, table)
	assert.NotEmpty(t, s.Order, "the order stays journaled")
	assert.Empty(t, s.LastError, "a shutdown is no failure")
	assert.Empty(t, s.Reason)
	assert.Zero(t, s.Failures)
	assert.True(t, s.RetryAt.IsZero(), "no back-off: %s", s.RetryAt)
	assert.Equal(t, "-", statusRow(t, table, domain)[colProblem])

	started := time.Now()
	second := startProc(t, nil, "run", "--config", sb.ConfigPath)
	require.Eventually(t, second.logged(`msg="resuming order"`, s.Order), processTimeout, tick)
	line, _ := findLog(second.stderr.String(), time.Time{}, `msg="resuming order"`, s.Order)
	resumedAfter := line.at.Sub(started)
	t.Logf("the restarted daemon resumed the order %s after it was started", resumedAfter.Round(time.Millisecond))
	assert.Less(t, resumedAfter, 5*time.Second, "resumed at once, not after a back-off")
	require.Eventually(t, published(sb, domain), processTimeout, tick)
	second.stop(t)
	servedCertificate(t, sb, domain, domain)
	assert.Equal(t, 1, sb.CA.Stats().NewOrders, "the same order")
	journalEmpty(t, sb)
	status(t, sb.ConfigPath, exitOK)
}
