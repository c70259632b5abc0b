package fetcher_test

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/certfetch/certfetch/acme"
	"github.com/certfetch/certfetch/fetcher"
	"github.com/certfetch/certfetch/fetcher/store"
	"github.com/certfetch/certfetch/internal/testkit/testca"
	"github.com/certfetch/certfetch/internal/testkit/testsupport"
)

// TestLifecycleMisissuingCA: a CA that issues a certificate for another key than the
// order's: the certificate is refused (reason bad_certificate), nothing is published or
// stored, the order is forgotten, and the next attempt waits for the back-off; then a
// new order issues and publishes a certificate that matches its key.
func TestLifecycleMisissuingCA(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOptions{})
	const name = "mis"
	cfg := h.config(cert(name, "mis.example.test"))
	d := h.daemon(cfg)
	h.CA.IssueForAnotherKey(1)

	err := d.Once(t.Context())
	var mismatch *acme.CertificateMismatchError
	require.ErrorAs(t, err, &mismatch)
	t.Logf("once: %v", err)
	assert.NoFileExists(t, h.yml(name), "nothing published")
	rec := h.record(name)
	assert.Empty(t, rec.CertPEM, "nothing stored")
	assert.Equal(t, "bad_certificate", rec.Reason)
	assert.Equal(t, 1, rec.Failures)
	wait := rec.RetryAt.Sub(h.clock.Now())
	assert.True(t, wait > 40*time.Second && wait <= 75*time.Second, "back-off of about a minute, got %s", wait)
	assert.Empty(t, h.orders(), "the mis-issued order is forgotten")
	row := h.status(cfg, name)
	assert.Equal(t, "bad_certificate", row.Reason)
	assert.Contains(t, row.LastError, "public key is not the order's key")
	assert.True(t, row.Trouble())

	err = d.Once(t.Context())
	require.Error(t, err)
	assert.Contains(t, err.Error(), "waiting until")
	assert.Equal(t, 1, h.CA.Stats().NewOrders, "no attempt during the back-off")

	h.clock.Advance(wait + time.Second)
	require.NoError(t, d.Once(t.Context()))
	assert.Equal(t, 2, h.CA.Stats().NewOrders, "a new order")
	assert.Equal(t, serial(h.served(name)), recordSerial(t, h.record(name).CertPEM))
	assert.Equal(t, 1, h.failures("bad_certificate"))
	assert.False(t, h.status(cfg, name).Trouble())
}

// TestLifecycleValidationErrorKeptPending: a CA that keeps a failed challenge pending
// with an error (step-ca) for a name nobody answers. The attempt fails fast, well before
// its deadline, with reason authorization and the CA's own words in LastError and Status;
// the challenge is asked again twice, then given up; attempts back off (no request at
// all to the CA in between) and the certificate in service is untouched.
func TestLifecycleValidationErrorKeptPending(t *testing.T) {
	t.Parallel()
	const deadline = 2 * time.Minute
	h := newHarness(t, harnessOptions{Timeout: deadline})
	const name, domain = "svc", "svc.example.test"
	cfg := h.config(cert(name, domain))
	d := h.daemon(cfg)
	require.NoError(t, d.Once(t.Context()))
	inService, err := os.ReadFile(h.yml(name))
	require.NoError(t, err)
	issued := serial(h.served(name))

	// The route to the name is gone; the CA wants the certificate replaced now.
	h.refuse(domain)
	h.CA.KeepFailedChallengesPending(true)
	now := time.Now()
	h.CA.SetRenewalWindow(now.Add(-time.Hour), now.Add(time.Hour))

	before := h.CA.Stats()
	start := time.Now()
	err = d.Once(t.Context())
	took := time.Since(start)
	var authz *acme.AuthorizationError
	require.ErrorAs(t, err, &authz)
	t.Logf("once after %s: %v", took.Round(time.Millisecond), err)
	assert.Less(t, took, deadline/4, "a validation error ends the attempt long before the deadline")
	after := h.CA.Stats()
	assert.Equal(t, 1, after.NewOrders-before.NewOrders)
	assert.Equal(t, 3, after.Challenges-before.Challenges, "the challenge is asked once, then twice again")

	const detail = "The server could not connect to validation target"
	rec := h.record(name)
	assert.Equal(t, "authorization", rec.Reason)
	assert.Contains(t, rec.LastError, detail)
	assert.Contains(t, rec.LastError, domain)
	row := h.status(cfg, name)
	assert.Equal(t, "authorization", row.Reason)
	assert.Contains(t, row.LastError, detail)
	assert.True(t, row.Trouble())
	assert.Empty(t, h.orders(), "the dead order is forgotten")

	// Visits every 15 s of the test clock: no request to the CA until the back-off
	// (about a minute) is over, then one more attempt, then about two minutes.
	attempts := []time.Time{h.ev.of(name, fetcher.StepFailed)[0].at}
	requests := h.CA.Stats().Requests
	for range 12 {
		h.clock.Advance(15 * time.Second)
		err := d.Once(t.Context())
		require.Error(t, err)
		failed := h.ev.of(name, fetcher.StepFailed)
		if len(failed) > len(attempts) {
			attempts = append(attempts, failed[len(failed)-1].at)
			requests = h.CA.Stats().Requests
			if len(attempts) == 2 {
				rec := h.record(name)
				assert.Equal(t, 2, rec.Failures)
				gap := rec.RetryAt.Sub(attempts[1])
				assert.True(t, gap >= 90*time.Second && gap <= 150*time.Second, "second back-off of about 2 minutes, got %s", gap)
			}
			continue
		}
		assert.Equal(t, requests, h.CA.Stats().Requests, "no request to the CA during the back-off")
	}
	require.GreaterOrEqual(t, len(attempts), 2)
	assert.LessOrEqual(t, len(attempts), 3, "3 minutes of the test clock: at most 3 attempts")
	gap := attempts[1].Sub(attempts[0])
	assert.True(t, gap >= 45*time.Second && gap <= 90*time.Second, "first back-off of about a minute, got %s", gap)
	assert.Equal(t, len(attempts), h.CA.Stats().NewOrders-before.NewOrders)

	got, err := os.ReadFile(h.yml(name))
	require.NoError(t, err)
	assert.Equal(t, string(inService), string(got), "the certificate in service is untouched")
	assert.Equal(t, issued, serial(h.served(name)))
}

// TestLifecycleDeadlinesInARowBackOff: a CA far slower than the deadline. Every attempt
// ends at its deadline with the order alive; the next resumes it after pendingWait: the
// first two after the CA's Retry-After, then 15, 30, 60 s (±25 %), never sooner than
// Retry-After. One order in all.
func TestLifecycleDeadlinesInARowBackOff(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		desc       string
		retryAfter time.Duration
	}{
		{desc: "Retry-After 1s", retryAfter: time.Second},
		{desc: "Retry-After 20s, longer than the deadline", retryAfter: 20 * time.Second},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, harnessOptions{
				CA:      testca.Options{Mode: testca.Async, Delay: time.Hour, RetryAfter: tc.retryAfter},
				Timeout: 2 * time.Second,
			})
			const name = "slow"
			cfg := h.config(cert(name, "slow.example.test"))
			d := h.daemon(cfg)

			const attempts = 5
			var waits []time.Duration
			for n := 1; n <= attempts; n++ {
				err := d.Once(t.Context())
				var pe *acme.OrderPendingError
				require.ErrorAs(t, err, &pe, "attempt %d", n)
				pending := h.ev.of(name, fetcher.StepPending)
				require.Len(t, pending, n)
				require.ErrorAs(t, pending[n-1].Err, &pe)
				rec := h.record(name)
				wait := rec.RetryAt.Sub(pending[n-1].at)
				waits = append(waits, wait)
				assert.Equal(t, n, rec.Deadlines)
				assert.Equal(t, "deadline", rec.Reason)

				const slack = 100 * time.Millisecond
				floor := max(pe.RetryAfter, time.Second)
				assert.GreaterOrEqual(t, wait, pe.RetryAfter-slack, "attempt %d: never sooner than Retry-After", n)
				if n <= 2 {
					assert.InDelta(t, floor.Seconds(), wait.Seconds(), slack.Seconds(), "attempt %d follows Retry-After", n)
				} else {
					grown := 15 * time.Second << (n - 3)
					assert.GreaterOrEqual(t, wait, max(floor, grown*3/4)-slack, "attempt %d", n)
					assert.LessOrEqual(t, wait, max(floor, grown*5/4)+slack, "attempt %d", n)
				}
				if n >= 2 {
					assert.Equal(t, tc.retryAfter, pe.RetryAfter, "the resumed order is processing")
				}

				// A wait longer than the deadline: once does not wait, nor touch the CA.
				if wait > cfg.Timeout {
					requests := h.CA.Stats().Requests
					err := d.Once(t.Context())
					require.Error(t, err)
					assert.Contains(t, err.Error(), "waiting until", "once does not wait longer than the deadline")
					assert.Equal(t, requests, h.CA.Stats().Requests)
				}
				h.clock.Advance(wait + 10*time.Millisecond)
			}
			t.Logf("waits between resumes: %v", waits)
			if tc.retryAfter == time.Second {
				assert.Less(t, waits[2], waits[3])
				assert.Less(t, waits[3], waits[4])
			}
			assert.Equal(t, 1, h.CA.Stats().NewOrders, "one order, resumed")
			assert.Equal(t, 1, h.CA.Stats().Finalizes)
			assert.Len(t, h.orders(), 1)
			row := h.status(cfg, name)
			assert.Equal(t, fetcher.StateOrdering, row.State)
			assert.False(t, row.Trouble(), "a slow CA's order is not trouble: %+v", row)
		})
	}
}

// TestLifecycleCAForgotTheAccount: the CA no longer knows the account
// (accountDoesNotExist). The daemon registers the same key again, once even when several
// certificates find out together, stores the URL the CA answers, and issues; the
// thumbprint the plugin answers with does not change.
func TestLifecycleCAForgotTheAccount(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		desc string
		// forget makes the CA, or the stored account, lose the account; it returns the
		// URL the store must hold afterwards.
		forget func(t *testing.T, h *harness, acct *store.Account) string
	}{
		{
			desc: "forgotten by the CA",
			forget: func(t *testing.T, h *harness, acct *store.Account) string {
				require.NoError(t, h.CA.ForgetAccount(acct.URL))
				return acct.URL
			},
		},
		{
			desc: "stored URL unknown to the CA",
			forget: func(t *testing.T, h *harness, acct *store.Account) string {
				stale := *acct
				stale.URL = acct.URL[:strings.LastIndex(acct.URL, "/")+1] + "gone"
				require.NoError(t, h.Store.SaveAccount(t.Context(), resolverName, &stale))
				return acct.URL
			},
		},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, harnessOptions{})
			cfg := h.config(cert("one", "one.example.test"), cert("two", "two.example.test"))
			rc := cfg.Resolvers[resolverName]
			thumbprint, err := fetcher.Thumbprint(t.Context(), h.Store, rc, false)
			require.NoError(t, err)
			first := h.daemon(cfg)
			require.NoError(t, first.Once(t.Context()))
			first.Close()
			assert.Equal(t, 1, h.CA.Stats().NewAccounts)
			acct, err := h.Store.LoadAccount(t.Context(), resolverName, rc.CAServer)
			require.NoError(t, err)
			want := tc.forget(t, h, acct)

			// Both certificates are due at once (the CA asks for their replacement), and
			// both find out that the account is gone together: their new-order requests
			// are held until both arrived.
			now := time.Now()
			h.CA.SetRenewalWindow(now.Add(-time.Hour), now.Add(time.Hour))
			holds := []*testca.Hold{h.CA.HoldNext(testca.NewOrder), h.CA.HoldNext(testca.NewOrder)}
			d := h.daemon(cfg)
			done := make(chan error, 1)
			go func() { done <- d.Once(t.Context()) }()
			for _, hold := range holds {
				select {
				case <-hold.Reached():
				case <-time.After(30 * time.Second):
					t.Fatal("the renewals did not reach the CA")
				}
			}
			for _, hold := range holds {
				go hold.Release()
			}
			require.NoError(t, <-done)
			h.CA.ClearRenewalWindow()
			assert.Equal(t, 2+2+2, h.CA.Stats().NewOrders, "two orders, two refused for the account, two renewals")
			assert.Equal(t, 2, h.CA.Stats().NewAccounts, "registered again, once")
			for _, name := range []string{"one", "two"} {
				assert.Equal(t, recordSerial(t, h.record(name).CertPEM), serial(h.served(name)))
			}
			saved, err := h.Store.LoadAccount(t.Context(), resolverName, rc.CAServer)
			require.NoError(t, err)
			assert.Equal(t, want, saved.URL, "the URL the CA answered is stored")
			assert.Equal(t, acct.KeyPEM, saved.KeyPEM, "the same key")
			after, err := fetcher.Thumbprint(t.Context(), h.Store, rc, false)
			require.NoError(t, err)
			assert.Equal(t, thumbprint, after, "the plugin's thumbprint is unchanged")

			h.clock.Advance(time.Hour)
			require.NoError(t, d.Once(t.Context()))
			assert.Equal(t, 2, h.CA.Stats().NewAccounts, "no more registrations")
		})
	}
}

// TestLifecycleAccountFileDeleted: the account key file is gone while the store holds
// certificates obtained with it. No new key is made behind the user's back (it would
// change the plugin's thumbprint): the attempt fails with reason account and says how to
// recover; the certificate in service stays. AccountKey with newKey makes a new key.
func TestLifecycleAccountFileDeleted(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOptions{})
	cfg := h.config(cert("kept", "kept.example.test"))
	rc := cfg.Resolvers[resolverName]
	old, err := fetcher.Thumbprint(t.Context(), h.Store, rc, false)
	require.NoError(t, err)
	first := h.daemon(cfg)
	require.NoError(t, first.Once(t.Context()))
	first.Close()
	issued := serial(h.served("kept"))

	accounts := filepath.Join(h.stateDir(), "accounts")
	files, err := filepath.Glob(filepath.Join(accounts, "*.json"))
	require.NoError(t, err)
	require.Len(t, files, 1)
	require.NoError(t, os.Remove(files[0]))

	cfg = h.config(cert("kept", "kept.example.test"), cert("added", "added.example.test"))
	d := h.daemon(cfg)
	err = d.Once(t.Context())
	require.Error(t, err)
	t.Logf("once: %v", err)
	assert.Contains(t, err.Error(), "certificate added")
	assert.Contains(t, err.Error(), "the account key is missing")
	assert.Contains(t, err.Error(), "restore the account from a backup")
	assert.Contains(t, err.Error(), "certfetch thumbprint --new-key "+resolverName)
	rec := h.record("added")
	assert.Equal(t, "account", rec.Reason)
	row := h.status(cfg, "added")
	assert.Equal(t, "account", row.Reason)
	assert.True(t, row.Trouble())
	left, err := os.ReadDir(accounts)
	require.NoError(t, err)
	assert.Empty(t, left, "no new account key")
	assert.Equal(t, 1, h.CA.Stats().NewOrders)
	assert.Equal(t, 1, h.CA.Stats().NewAccounts)
	assert.Equal(t, issued, serial(h.served("kept")), "the certificate in service stays")

	_, err = fetcher.AccountKey(t.Context(), h.Store, rc, false)
	require.ErrorContains(t, err, "--new-key", "no key without newKey")

	acct, err := fetcher.AccountKey(t.Context(), h.Store, rc, true)
	require.NoError(t, err)
	assert.NotEmpty(t, acct.KeyPEM)
	left, err = os.ReadDir(accounts)
	require.NoError(t, err)
	assert.Len(t, left, 1, "newKey creates the key")
	fresh, err := fetcher.Thumbprint(t.Context(), h.Store, rc, false)
	require.NoError(t, err)
	assert.NotEqual(t, old, fresh, "a new key: a new thumbprint for the plugin")
}

// TestLifecycleTwoResolversOneListenAddress: two resolvers (two CAs) with the same
// httpChallenge.listen address share one responder: the daemon starts and both issue.
// After a reload drops one resolver, the responder keeps serving the other.
func TestLifecycleTwoResolversOneListenAddress(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	listen := ln.Addr().String()
	port := ln.Addr().(*net.TCPAddr).Port
	require.NoError(t, ln.Close()) // the daemon binds it

	type ca struct {
		name string
		ca   *testca.CA
		root string
	}
	cas := []*ca{{name: "first"}, {name: "second"}}
	for _, c := range cas {
		c.ca, err = testca.Start(testca.Options{HTTPPort: port})
		require.NoError(t, err)
		t.Cleanup(func() { c.ca.Close() })
		c.root, err = c.ca.WriteTLSRoot(t.TempDir())
		require.NoError(t, err)
	}
	configFor := func(cas ...*ca) string {
		var b strings.Builder
		fmt.Fprintf(&b, "storage: %s\nresolvers:\n", strconv.Quote(filepath.Join(dir, "state")))
		for _, c := range cas {
			fmt.Fprintf(&b, "  %s:\n    caServer: %s\n    caCertificates: [%s]\n    httpChallenge:\n      listen: %s\n",
				c.name, c.ca.DirectoryURL(), strconv.Quote(c.root), strconv.Quote(listen))
		}
		b.WriteString("certificates:\n")
		for _, c := range cas {
			fmt.Fprintf(&b, "  - name: %s\n    domains: [%s.example.test]\n    resolver: %s\n", c.name, c.name, c.name)
		}
		fmt.Fprintf(&b, "output:\n  file:\n    directory: %s\n", strconv.Quote(filepath.Join(dir, "traefik")))
		return b.String()
	}
	path := filepath.Join(dir, "certfetch.yml")
	cfg := loadConfig(t, path, configFor(cas...))
	st, err := fetcher.OpenStore(t.Context(), cfg.Storage)
	require.NoError(t, err)
	t.Cleanup(func() { st.Close() })
	var logs testsupport.SyncBuffer
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("daemon logs:\n%s", logs.String())
		}
	})
	d, err := fetcher.New(cfg, st, fetcher.Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	require.NoError(t, err, "two resolvers on one address start")
	t.Cleanup(d.Close)

	require.NoError(t, d.Once(t.Context()))
	for _, c := range cas {
		assert.Equal(t, 1, c.ca.Stats().NewOrders, c.name)
		_, err := os.Stat(filepath.Join(dir, "traefik", c.name+".yml"))
		assert.NoError(t, err, "%s published", c.name)
	}

	second := cas[1]
	require.NoError(t, d.Reload(t.Context(), loadConfig(t, path, configFor(second))))
	now := time.Now()
	second.ca.SetRenewalWindow(now.Add(-time.Hour), now.Add(time.Hour))
	require.NoError(t, d.Once(t.Context()), "the responder still answers for the remaining resolver")
	assert.Equal(t, 2, second.ca.Stats().NewOrders)
	_, err = os.Stat(filepath.Join(dir, "traefik", "first.yml"))
	assert.True(t, errors.Is(err, os.ErrNotExist), "the dropped resolver's certificate is withdrawn")
}
