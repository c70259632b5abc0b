package main

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/certfetch/certfetch/demo"
	"github.com/certfetch/certfetch/internal/testkit/testca"
)

// The scheduling figures of the lifecycle issue, measured on the real binary. Times come
// from the daemon's own log lines (slog's text handler stamps each line with the
// wall-clock time to the millisecond) and, for a kill, from the test's clock just before
// the signal: both read the same system clock, and a log line is written when the step
// it reports has happened (an order is "resuming" once the CA answered the order's read).
// No hook in the daemon is needed, so the figures are those of the shipped code path.

// TestScheduleRetryAfterIsNotHeldUp: a certificate whose order outlives its 2 s deadline
// with the CA's Retry-After of 1 s is resumed within 2 s, while another certificate's
// 30 s attempt runs in the same daemon.
func TestScheduleRetryAfterIsNotHeldUp(t *testing.T) {
	t.Parallel()
	const long, short = "long.example.test", "short.example.test"
	// The CA takes a minute after finalize: neither order completes during the test.
	sb := startSandbox(t, demo.Options{CA: testca.Options{Mode: testca.Async, Delay: time.Minute, RetryAfter: time.Second}}, []string{long})
	cfg := newConfigWriter(t, sb)
	cfg.write(t, sb.ConfigPath, "",
		certSpec{domains: []string{long}, timeout: 30 * time.Second},
		certSpec{domains: []string{short}, timeout: 2 * time.Second})

	p := startProc(t, nil, "run", "--config", sb.ConfigPath)
	var pending, resumed logLine
	require.Eventually(t, func() bool {
		var ok bool
		out := p.stderr.String()
		if pending, ok = findLog(out, time.Time{}, `msg="deadline passed; the order stays alive at the CA and is resumed"`, "name="+short); !ok {
			return false
		}
		resumed, ok = findLog(out, pending.at, `msg="resuming order"`, short)
		return ok
	}, processTimeout, tick, "the short certificate's order is resumed")
	out := p.stderr.String()
	longStarted, ok := findLog(out, time.Time{}, `msg="ordering certificate"`, "name="+long, "deadline=30s")
	require.True(t, ok)
	_, longEnded := findLog(out, time.Time{}, `msg="deadline passed`, "name="+long)
	_, longIssued := findLog(out, time.Time{}, `msg="certificate issued"`, "name="+long)
	require.False(t, longEnded || longIssued, "the long attempt still runs")
	require.True(t, longStarted.at.Before(pending.at), "the long attempt started before")

	gap := resumed.at.Sub(pending.at)
	t.Logf("Retry-After 1 s: resumed %s after the deadline passed, while the other certificate's 30 s attempt had run %s",
		gap.Round(time.Millisecond), resumed.at.Sub(longStarted.at).Round(time.Millisecond))
	assert.LessOrEqual(t, gap, 2*time.Second, "resumed within 2 s")
	assert.GreaterOrEqual(t, gap, time.Second, "not before the CA's Retry-After")
	assert.Equal(t, 2, sb.CA.Stats().NewOrders, "one order per certificate")
}

// TestScheduleTakeoverIsNotHeldUp: two instances share a store (lockTTL 3 s). The
// instance that holds a certificate's lease is SIGKILLed in the middle of its order,
// while the other instance is busy with another certificate's long order: the survivor
// resumes the killed holder's order within lockTTL + 1 s of the kill, on Redis and on
// etcd, and the CA sees one order for that certificate.
func TestScheduleTakeoverIsNotHeldUp(t *testing.T) {
	t.Parallel()
	const lockTTL = 3 * time.Second
	backends := []struct {
		desc    string
		storage func(t *testing.T) string
		// takeoverSlack is how long after the holder's lease ran out the survivor may
		// resume: the target of the issue, 1 s. Redis: the lock's PTTL is exact to the
		// millisecond (measured: 3.0 s after the kill). etcd: the survivor learns the
		// time left in whole seconds, as a lower bound (it comes back early rather than
		// late, and asks again), and etcd revokes an expired lease on its lessor's
		// 500 ms tick (measured: 3.17 to 3.28 s after the kill; with the upper bound
		// it was 3.2 to 4.3 s).
		takeoverSlack time.Duration
	}{
		{desc: "redis", storage: sharedBackends[0].storage, takeoverSlack: time.Second},
		{desc: "etcd", storage: sharedBackends[1].storage, takeoverSlack: time.Second},
	}
	for _, backend := range backends {
		t.Run(backend.desc, func(t *testing.T) {
			t.Parallel()
			const orphan, busy = "orphan.shared.test", "busy.shared.test"
			// The CA needs 12 s after finalize: both orders outlast the takeover.
			sb := startSandbox(t, demo.Options{
				Storage: backend.storage(t),
				CA:      testca.Options{Mode: testca.Async, Delay: 12 * time.Second, RetryAfter: time.Second},
				Timeout: 30 * time.Second,
			}, []string{orphan})
			cfg := newConfigWriter(t, sb)
			// The holder is configured with the orphan only, so that it is the one to
			// hold that lease; the survivor with both.
			holderConfig := filepath.Join(sb.Dir, "holder.yml")
			cfg.write(t, holderConfig, "", certSpec{domains: []string{orphan}})
			cfg.write(t, sb.ConfigPath, "", certSpec{domains: []string{orphan}}, certSpec{domains: []string{busy}})

			holder := startProc(t, nil, "run", "--config", holderConfig)
			require.Eventually(t, holder.logged(`msg="waiting for the CA"`, orphan, "status=processing"), processTimeout, tick,
				"the holder's order is at the CA")
			created, ok := findLog(holder.stderr.String(), time.Time{}, `msg="order created"`, orphan)
			require.True(t, ok)

			survivor := startProc(t, nil, "run", "--config", sb.ConfigPath)
			require.Eventually(t, survivor.logged(`msg="waiting for the CA"`, busy, "status=processing"), processTimeout, tick,
				"the survivor is busy with the other certificate's order")
			killed := time.Now()
			holder.kill(t)

			var resumed logLine
			require.Eventually(t, func() bool {
				resumed, ok = findLog(survivor.stderr.String(), killed.Add(-time.Millisecond), `msg="resuming order"`, orphan)
				return ok
			}, processTimeout, tick, "the survivor takes the order over")
			assert.Contains(t, resumed.text, orderOf(created.text), "the holder's order")

			require.Eventually(t, published(sb, orphan), processTimeout, tick)
			require.Eventually(t, published(sb, busy), processTimeout, tick)
			busyIssued, ok := findLog(survivor.stderr.String(), time.Time{}, `msg="certificate issued"`, "name="+busy)
			require.True(t, ok)
			require.True(t, busyIssued.at.After(resumed.at), "the survivor was still busy with the other order when it took over")

			took := resumed.at.Sub(killed)
			t.Logf("%s, lockTTL %s: the killed holder's order resumed %s after the kill, while the survivor's own order ran",
				backend.desc, lockTTL, took.Round(time.Millisecond))
			assert.LessOrEqual(t, took, lockTTL+backend.takeoverSlack, "within lockTTL + %s", backend.takeoverSlack)
			survivor.stop(t)
			servedCertificate(t, sb, orphan, orphan)
			servedCertificate(t, sb, busy, busy)
			assert.Equal(t, 2, sb.CA.Stats().NewOrders, "one order per certificate: the orphan's was resumed")
			journalEmpty(t, sb)
		})
	}
}

// orderOf returns the order=... attribute of a log line.
func orderOf(line string) string {
	for _, f := range strings.Fields(line) {
		if strings.HasPrefix(f, "order=") {
			return f
		}
	}
	return "order=?"
}
