package fetcher_test

import (
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/certfetch/certfetch/acme"
	"github.com/certfetch/certfetch/fetcher"
	"github.com/certfetch/certfetch/fetcher/output"
	"github.com/certfetch/certfetch/internal/testkit/testca"
)

// TestLifecyclePublicationFailureDoesNotBlockRenewal: the output directory refuses
// writes from the start. The certificate is issued and stored, its publication fails and
// is retried on its own back-off (1, then 2 minutes), and its renewal still happens when
// due: a second order, stored. Once the directory takes writes, the renewed certificate
// is published.
func TestLifecyclePublicationFailureDoesNotBlockRenewal(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOptions{})
	const name = "unpublished"
	cfg := h.config(cert(name, "unpublished.example.test"))
	d := h.daemon(cfg) // creates the output directories
	undo := immutable(t, h.outputDir(), filepath.Join(h.outputDir(), "certs"))

	err := d.Once(t.Context())
	require.Error(t, err)
	t.Logf("once: %v", err)
	assert.ErrorIs(t, err, fs.ErrPermission)
	first := recordSerial(t, h.record(name).CertPEM)
	assert.NoFileExists(t, h.yml(name))
	publishFailures := func() (at []time.Time) {
		for _, ev := range h.ev.of(name, fetcher.StepFailed) {
			if errors := ev.Err; errors != nil && strings.Contains(errors.Error(), "operation not permitted") {
				at = append(at, ev.at)
			}
		}
		return at
	}
	require.Len(t, publishFailures(), 1)
	row := h.status(cfg, name)
	assert.Equal(t, fetcher.StateIssued, row.State)
	assert.Equal(t, "not published", row.Problem)
	assert.True(t, row.Trouble())

	// The CA asks for a replacement now: renewal happens although the certificate in
	// the store was never published.
	now := time.Now()
	h.CA.SetRenewalWindow(now.Add(-time.Hour), now.Add(time.Hour))
	require.Error(t, d.Once(t.Context()))
	h.CA.ClearRenewalWindow()
	assert.Equal(t, 2, h.CA.Stats().NewOrders, "renewed")
	renewed := recordSerial(t, h.record(name).CertPEM)
	assert.NotEqual(t, first, renewed, "the renewal is stored")
	assert.Len(t, publishFailures(), 2, "the renewed certificate is tried at once")

	// Visits every 10 s of the test clock for 8 minutes: publication is tried again
	// after about 2, then 4 minutes (the output's failures go on counting).
	for range 48 {
		h.clock.Advance(10 * time.Second)
		require.Error(t, d.Once(t.Context()))
	}
	at := publishFailures()
	require.Len(t, at, 4)
	for i, want := range []time.Duration{2 * time.Minute, 4 * time.Minute} {
		gap := at[i+2].Sub(at[i+1])
		assert.True(t, gap >= want*3/4 && gap <= want*5/4+10*time.Second, "publication back-off %d: %s", i+2, gap)
	}
	assert.Equal(t, 4, h.failures("publish"))
	assert.Equal(t, 2, h.CA.Stats().NewOrders, "no order for a publication failure")

	undo()
	h.clock.Advance(15 * time.Minute) // past the publication back-off (8 minutes ±25 %)
	require.NoError(t, d.Once(t.Context()))
	assert.Equal(t, renewed, serial(h.served(name)), "the renewed certificate is published")
	assert.Equal(t, 2, h.CA.Stats().NewOrders)
	assert.False(t, h.status(cfg, name).Trouble())
}

// TestLifecycleNeverOlder: the store restored from a backup holds an older certificate
// than the one the output serves. The newer one stays served (ErrOlder, reason publish);
// nothing is ordered before the old record's own renewal time; then it is renewed and the
// renewal, newer than both, is published.
func TestLifecycleNeverOlder(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOptions{})
	const name = "backup"
	cfg := h.config(cert(name, "backup.example.test"))
	d := h.daemon(cfg)
	require.NoError(t, d.Once(t.Context()))
	backup := h.record(name)
	old := h.served(name)

	// The renewal must be issued at a later second than the backup's certificate:
	// certificates carry their issuance time to the second.
	time.Sleep(time.Until(old.NotBefore.Add(time.Second)))
	now := time.Now()
	h.CA.SetRenewalWindow(now.Add(-time.Hour), now.Add(time.Hour))
	require.NoError(t, d.Once(t.Context()))
	h.CA.ClearRenewalWindow()
	newer := serial(h.served(name))
	require.NotEqual(t, serial(old), newer)
	d.Close()
	served, err := os.ReadFile(h.yml(name))
	require.NoError(t, err)

	require.NoError(t, h.Store.SaveCertificate(t.Context(), backup)) // the restore
	d = h.daemon(cfg)
	err = d.Once(t.Context())
	require.ErrorIs(t, err, output.ErrOlder)
	t.Logf("once: %v", err)
	got, err := os.ReadFile(h.yml(name))
	require.NoError(t, err)
	assert.Equal(t, string(served), string(got), "the newer certificate stays served")
	assert.Equal(t, newer, serial(h.served(name)))
	row := h.status(cfg, name)
	assert.Equal(t, "an output serves another certificate", row.Problem)
	assert.True(t, row.Trouble())

	renewAt := h.record(name).RenewAt
	require.True(t, renewAt.After(h.clock.Now().Add(24*time.Hour)), "the backup is not due for weeks")
	for range 3 {
		h.clock.Advance(2 * time.Hour)
		assert.ErrorIs(t, d.Once(t.Context()), output.ErrOlder)
	}
	assert.Equal(t, 2, h.ev.count(name, fetcher.StepOrdering), "nothing ordered before the renewal time")
	assert.Equal(t, newer, serial(h.served(name)))

	h.clock.Advance(renewAt.Sub(h.clock.Now()) + time.Minute)
	require.NoError(t, d.Once(t.Context()))
	// The renewal names the backup's certificate as the one it replaces (ARI), which
	// the CA may refuse as already replaced; lego then sends the order again without it:
	// count the certificates issued.
	assert.Equal(t, 3, h.CA.Stats().Finalizes, "renewed on the backup's schedule")
	assert.Equal(t, 1, h.ev.count(name, fetcher.StepOrdering)-2, "one attempt")
	third := serial(h.served(name))
	assert.NotEqual(t, newer, third)
	assert.Equal(t, third, recordSerial(t, h.record(name).CertPEM))
}

// TestLifecycleReloadDuringAnOrder: a reload that adds a certificate and changes the log
// level while an order is at the CA (its finalize held there) leaves that order alone:
// it completes, the added certificate is issued meanwhile, both are published; two
// orders in all.
func TestLifecycleReloadDuringAnOrder(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOptions{})
	d := h.daemon(h.config(cert("first", "first.example.test")))
	hold := h.CA.HoldNext(testca.Finalize)
	h.run(d)
	select {
	case <-hold.Reached():
	case <-time.After(30 * time.Second):
		t.Fatal("the order did not reach finalize")
	}

	h.opts.Extra = "log:\n  level: debug\n"
	cfg := h.config(cert("first", "first.example.test"), cert("added", "added.example.test"))
	require.Equal(t, slog.LevelDebug, cfg.Log.Level)
	require.NoError(t, d.Reload(t.Context(), cfg))
	h.ev.wait(t, "added", fetcher.StepPublished, 1)
	assert.Zero(t, h.ev.count("first", fetcher.StepPublished), "still held at the CA")

	hold.Release()
	h.ev.wait(t, "first", fetcher.StepPublished, 1)
	h.served("first")
	h.served("added")
	assert.Equal(t, 2, h.CA.Stats().NewOrders)
	assert.Equal(t, 1, h.ev.count("first", fetcher.StepOrdering), "the order in flight went on")
	assert.Zero(t, h.ev.count("first", fetcher.StepFailed))
	assert.Empty(t, h.orders())
}

// TestLifecycleShutdownDuringAnOrder: the daemon stops (SIGTERM: its context ends) while
// its order is at the CA. That is no failure: nothing recorded, no retry time; the order
// stays journaled and the next daemon resumes it at once, whether the CA processed the
// request the stopped daemon had sent or not. One order.
func TestLifecycleShutdownDuringAnOrder(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		desc   string
		settle func(*testca.Hold)
	}{
		{desc: "the CA processes the finalize", settle: (*testca.Hold).Release},
		{desc: "the finalize never reaches the CA", settle: (*testca.Hold).Drop},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, harnessOptions{})
			const name = "stopped"
			cfg := h.config(cert(name, "stopped.example.test"))
			d := h.daemon(cfg)
			hold := h.CA.HoldNext(testca.Finalize)
			stop := h.run(d)
			select {
			case <-hold.Reached():
			case <-time.After(30 * time.Second):
				t.Fatal("the order did not reach finalize")
			}
			stop()
			tc.settle(hold)
			d.Close()

			rec := h.record(name)
			assert.Empty(t, rec.LastError, "a shutdown is no failure")
			assert.Empty(t, rec.Reason)
			assert.Zero(t, rec.Failures)
			assert.True(t, rec.RetryAt.IsZero(), "no retry time: %s", rec.RetryAt)
			assert.Zero(t, h.ev.count(name, fetcher.StepFailed))
			assert.Zero(t, h.ev.count(name, fetcher.StepPending))
			assert.Len(t, h.orders(), 1, "the order stays journaled")
			assert.Zero(t, h.failures("deadline")+h.failures("other"))
			row := h.status(cfg, name)
			assert.Equal(t, fetcher.StateOrdering, row.State)
			assert.NotEmpty(t, row.Order)

			start := time.Now()
			require.NoError(t, h.daemon(cfg).Once(t.Context()), "resumed at once")
			assert.Less(t, time.Since(start), 15*time.Second)
			assert.Equal(t, 1, h.CA.Stats().NewOrders, "the same order")
			h.served(name)
			assert.Empty(t, h.orders())
		})
	}
}

// TestLifecycleOnce: `certfetch once` does what `run` does, in one pass: it renews a
// certificate whose renewal time has come (60-second certificates), resumes an order
// whose Retry-After ends within the deadline instead of failing with "waiting until",
// and withdraws (and later prunes) a certificate removed from the configuration.
func TestLifecycleOnce(t *testing.T) {
	t.Parallel()
	t.Run("renews", func(t *testing.T) {
		t.Parallel()
		for _, tc := range []struct {
			desc  string
			extra string
		}{
			{desc: "renewal information"},
			{desc: "lifetime only", extra: "renewal:\n  ari: false\n"},
		} {
			t.Run(tc.desc, func(t *testing.T) {
				t.Parallel()
				h := newHarness(t, harnessOptions{Profile: testca.MinuteProfile, Extra: tc.extra})
				const name = "minute"
				cfg := h.config(cert(name, "minute.example.test"))
				require.NoError(t, h.daemon(cfg).Once(t.Context()))
				first := h.served(name)
				require.Equal(t, 59*time.Second, first.NotAfter.Sub(first.NotBefore))

				h.clock.Advance(15 * time.Second)
				require.NoError(t, h.daemon(cfg).Once(t.Context()))
				assert.Equal(t, 1, h.CA.Stats().NewOrders, "not due yet")

				h.clock.Advance(30 * time.Second) // 45 s of 60
				require.NoError(t, h.daemon(cfg).Once(t.Context()))
				assert.Equal(t, 2, h.CA.Stats().NewOrders, "renewed")
				renewed := h.served(name)
				assert.NotEqual(t, serial(first), serial(renewed))
				assert.Equal(t, serial(renewed), recordSerial(t, h.record(name).CertPEM))
			})
		}
	})
	t.Run("resumes", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, harnessOptions{
			CA:      testca.Options{Mode: testca.Async, Delay: 3 * time.Second, RetryAfter: time.Second},
			Timeout: 3 * time.Second,
		})
		const name = "resumed"
		cfg := h.config(cert(name, "resumed.example.test"))
		err := h.daemon(cfg).Once(t.Context())
		var pe *acme.OrderPendingError
		require.ErrorAs(t, err, &pe, "the deadline passes while the CA works")
		require.LessOrEqual(t, pe.RetryAfter, cfg.Timeout)

		require.NoError(t, h.daemon(cfg).Once(t.Context()), "a second once waits for Retry-After and resumes")
		assert.Equal(t, 1, h.CA.Stats().NewOrders)
		assert.Equal(t, 2, h.ev.count(name, fetcher.StepOrdering))
		h.served(name)
		assert.Empty(t, h.orders())
	})
	t.Run("withdraws", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, harnessOptions{})
		require.NoError(t, h.daemon(h.config(cert("kept", "kept.example.test"), cert("gone", "gone.example.test"))).Once(t.Context()))
		h.served("gone")

		cfg := h.config(cert("kept", "kept.example.test"))
		require.NoError(t, h.daemon(cfg).Once(t.Context()))
		assert.NoFileExists(t, h.yml("gone"), "withdrawn")
		h.served("kept")
		assert.Equal(t, 1, h.ev.count("gone", fetcher.StepWithdrawn))
		assert.NotEmpty(t, h.record("gone").CertPEM, "its record stays")
		assert.Equal(t, 2, h.CA.Stats().NewOrders)

		h.clock.Advance(11 * time.Minute) // past the grace period
		require.NoError(t, h.daemon(cfg).Once(t.Context()))
		left, err := filepath.Glob(filepath.Join(h.outputDir(), "certs", "gone-*"))
		require.NoError(t, err)
		assert.Empty(t, left, "its files are pruned after the grace period")
	})
}
