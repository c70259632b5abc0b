//go:build e2e

package e2e

import (
	"context"
	"crypto/x509"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestLiveRenewalWithoutFailedHandshakes renews a certificate while a client
// keeps making verified HTTPS handshakes against Traefik. Traefik must switch
// to the new certificate without a restart (the file provider reloads the
// YAML certfetch replaced), and no handshake may fail in between: no moment
// with Traefik's default certificate, no mismatched key. It logs how long
// Traefik took to serve the new certificate after certfetch published it.
func TestLiveRenewalWithoutFailedHandshakes(t *testing.T) {
	t.Parallel()
	const domain = "renew.example.test"
	s := newSiteStack(t, stackOptions{mode: thumbprintMode, domains: []string{domain}}, http.NotFoundHandler())
	d := s.daemon(t)
	require.NoError(t, once(t, d))
	first := s.published(t)
	s.waitServed(t, domain, first)

	loop := startHandshakeLoop(s, domain)
	t.Cleanup(loop.stop)
	loop.waitForCount(t, 20) // the loop is really running before the renewal

	// The CA's renewal information says: replace it now.
	now := time.Now()
	s.ca.SetRenewalWindow(now.Add(-time.Hour), now.Add(-time.Minute))
	require.NoError(t, once(t, d))
	second := s.published(t)
	require.NotEqual(t, first.SerialNumber, second.SerialNumber, "certfetch renewed")
	info, err := os.Stat(filepath.Join(s.watchDir, s.name()+".yml"))
	require.NoError(t, err)
	published := info.ModTime()

	var switched time.Time
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		at, ok := loop.firstSeen(second)
		require.True(c, ok, "the loop has not seen the renewed certificate yet")
		switched = at
	}, reloadTimeout, tick, "Traefik never served the renewed certificate")
	beyond := loop.count() + 20
	loop.waitForCount(t, beyond) // keep handshaking after the switch, too
	loop.stop()

	total, failures, firstErr := loop.result()
	assert.Zero(t, failures, "handshakes failed during the renewal (of %d); first: %v", total, firstErr)
	t.Logf("live renewal: %d handshakes, %d failed; Traefik served the new certificate %s after certfetch replaced %s.yml",
		total, failures, switched.Sub(published).Round(time.Millisecond), s.name())
	last, err := s.handshake(domain)
	require.NoError(t, err)
	assert.Equal(t, second.SerialNumber, last.SerialNumber)
}

// handshakeLoop makes verified TLS handshakes back to back and records
// failures and when each certificate was first seen.
type handshakeLoop struct {
	cancel context.CancelFunc
	done   chan struct{}
	n      atomic.Int64

	mu       sync.Mutex
	failures int
	firstErr error
	seen     map[string]time.Time // serial → first time served
}

func startHandshakeLoop(s *stack, domain string) *handshakeLoop {
	ctx, cancel := context.WithCancel(context.Background())
	l := &handshakeLoop{cancel: cancel, done: make(chan struct{}), seen: map[string]time.Time{}}
	go func() {
		defer close(l.done)
		for ctx.Err() == nil {
			leaf, err := s.handshake(domain)
			now := time.Now()
			l.mu.Lock()
			if err != nil {
				l.failures++
				if l.firstErr == nil {
					l.firstErr = err
				}
			} else if _, ok := l.seen[leaf.SerialNumber.String()]; !ok {
				l.seen[leaf.SerialNumber.String()] = now
			}
			l.mu.Unlock()
			l.n.Add(1)
		}
	}()
	return l
}

// stop ends the loop and waits for it; safe to call twice.
func (l *handshakeLoop) stop() {
	l.cancel()
	<-l.done
}

func (l *handshakeLoop) count() int64 { return l.n.Load() }

// waitForCount waits until the loop has made n handshakes.
func (l *handshakeLoop) waitForCount(t testing.TB, n int64) {
	t.Helper()
	require.Eventually(t, func() bool { return l.n.Load() >= n }, reloadTimeout, tick/10, "handshake loop stalled")
}

func (l *handshakeLoop) firstSeen(cert *x509.Certificate) (time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	at, ok := l.seen[cert.SerialNumber.String()]
	return at, ok
}

func (l *handshakeLoop) result() (total int64, failures int, firstErr error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.n.Load(), l.failures, l.firstErr
}
