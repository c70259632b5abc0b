//go:build e2e

package e2e

import (
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/certfetch/certfetch/acme"
	"github.com/certfetch/certfetch/internal/testkit/testca"
)

// The reported case (Traefik issues #11636, #10238, #11483): the CA needs 42 s
// after finalize and says so with Retry-After.
const (
	reportedDelay      = 42 * time.Second
	reportedRetryAfter = 5 * time.Second
	// builtinTimeout bounds the wait for Traefik's own resolver to give up:
	// authorization, finalize, then lego's fixed 30 s.
	builtinTimeout = 2 * time.Minute
)

var reportedCA = testca.Options{Mode: testca.Async, Delay: reportedDelay, RetryAfter: reportedRetryAfter}

// TestReportedSlowCA runs the reported case through Traefik and the plugin.
// The three cases take 30-45 s each and run in parallel.
func TestReportedSlowCA(t *testing.T) {
	t.Run("certfetch with a 60s deadline gets it in one attempt", func(t *testing.T) {
		t.Parallel()
		s := newSlowStack(t, "sixty.example.test", 60*time.Second)
		d := s.daemon(t)

		start := time.Now()
		require.NoError(t, once(t, d))
		assert.GreaterOrEqual(t, time.Since(start), reportedDelay, "the CA really took 42 s")
		assert.Equal(t, 1, s.ca.Stats().NewOrders)
		s.waitServed(t, s.name(), s.published(t))
	})

	t.Run("certfetch with a 30s deadline resumes the same order", func(t *testing.T) {
		t.Parallel()
		s := newSlowStack(t, "thirty.example.test", 30*time.Second)
		d := s.daemon(t)

		start := time.Now()
		err := once(t, d)
		elapsed := time.Since(start)
		var pending *acme.OrderPendingError
		require.ErrorAs(t, err, &pending, "the first attempt ends at the deadline with the order alive at the CA")
		assert.Equal(t, "processing", pending.Status)
		assert.True(t, elapsed >= 30*time.Second && elapsed < reportedDelay, "the attempt ended at its 30 s deadline, after %s", elapsed)
		assert.Equal(t, reportedRetryAfter, pending.RetryAfter, "the CA's Retry-After is kept")
		assert.NoFileExists(t, filepath.Join(s.watchDir, s.name()+".yml"), "nothing published yet")

		// The next attempt is due after the CA's Retry-After: move the
		// daemon's clock there rather than sleeping.
		s.clock.Advance(reportedRetryAfter + time.Second)
		require.NoError(t, once(t, d), "the second attempt resumes the order and collects the certificate")
		assert.Equal(t, 1, s.ca.Stats().NewOrders, "one order at the CA: no duplicate issuance")
		s.waitServed(t, s.name(), s.published(t))
	})

	t.Run("Traefik's own resolver gives up after 30s", func(t *testing.T) {
		t.Parallel()
		tr, ca := startBuiltinResolver(t, "builtin.example.test")
		line := tr.waitForLog(t, "time limit exceeded", builtinTimeout)
		t.Logf("Traefik: %s", line)
		assert.GreaterOrEqual(t, ca.Stats().Finalizes, 1, "Traefik finalized an order it then abandoned")
	})
}

// newSlowStack is a thumbprint-mode stack against the reported CA.
func newSlowStack(t testing.TB, domain string, timeout time.Duration) *stack {
	t.Helper()
	return newSiteStack(t, stackOptions{mode: thumbprintMode, ca: reportedCA, timeout: timeout, domains: []string{domain}},
		http.NotFoundHandler())
}

// startBuiltinResolver runs Traefik with its own ACME resolver against the
// reported CA and a router that asks it for domain (startTraefikResolver).
func startBuiltinResolver(t testing.TB, domain string) (*traefik, *testca.CA) {
	t.Helper()
	r := startTraefikResolver(t, traefikResolverOptions{ca: reportedCA, resolver: "slowca", routes: []route{{name: "app", host: domain}}})
	return r.tr, r.ca
}
