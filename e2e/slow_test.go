//go:build e2e

package e2e

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
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

// startBuiltinResolver runs Traefik with README's static configuration plus
// its own ACME resolver (caServer = the test CA, httpChallenge on web,
// LEGO_CA_CERTIFICATES = the CA's TLS root) and a router that asks it for
// domain. The CA must exist before Traefik (static configuration) and dial
// Traefik's web port, so the ports are picked first and the pair is
// restarted if Traefik finds one taken.
func startBuiltinResolver(t testing.TB, domain string) (*traefik, *testca.CA) {
	t.Helper()
	backend := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(backend.Close)
	for attempt := 1; ; attempt++ {
		p := freePorts(t, 3)
		ports := [3]int{p[0], p[1], p[2]}
		opts := reportedCA
		opts.HTTPPort = ports[0]
		ca, err := testca.Start(opts)
		require.NoError(t, err)
		t.Cleanup(func() { ca.Close() })
		dir := t.TempDir()
		rootFile, err := ca.WriteTLSRoot(dir)
		require.NoError(t, err)
		watchDir := filepath.Join(dir, "dynamic")
		require.NoError(t, os.Mkdir(watchDir, 0o755))
		app := appConfig(backend.URL, route{name: "app", host: domain})
		mapAt(t, mapAt(t, mapAt(t, app, "http"), "routers"), "app")["tls"] = map[string]any{"certResolver": "slowca"}
		writeYAML(t, filepath.Join(watchDir, "app.yml"), app)

		tr, err := tryStartTraefik(t, traefikOptions{
			watchDir: watchDir,
			ports:    &ports,
			static: map[string]any{"certificatesResolvers": map[string]any{"slowca": map[string]any{"acme": map[string]any{
				"caServer":      ca.DirectoryURL(),
				"email":         "e2e@example.test",
				"storage":       filepath.Join(dir, "acme.json"),
				"httpChallenge": map[string]any{"entryPoint": "web"},
			}}}},
			env: []string{"LEGO_CA_CERTIFICATES=" + rootFile},
		})
		if err == errPortTaken && attempt < startAttempts {
			ca.Close()
			continue
		}
		require.NoError(t, err, fmt.Sprintf("attempt %d", attempt))
		return tr, ca
	}
}
