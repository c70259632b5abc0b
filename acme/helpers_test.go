package acme_test

import (
	"bytes"
	"context"
	"crypto"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/certfetch/certfetch/acme"
	"github.com/certfetch/certfetch/acme/http01"
	"github.com/certfetch/certfetch/internal/testkit/testca"
)

// testLogger sends the engine's logs to the test log, so a failing test shows its story.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))

	return len(p), nil
}

// startResponder runs an HTTP-01 responder on a loopback port, closed on cleanup.
func startResponder(t *testing.T) *http01.Responder {
	t.Helper()

	r := http01.NewResponder()
	require.NoError(t, r.Listen("127.0.0.1:0"))
	t.Cleanup(func() { assert.NoError(t, r.Close(context.Background())) })

	return r
}

// startCA starts a test CA whose validator dials addr's port, closed on cleanup.
func startCA(t *testing.T, opts testca.Options, addr net.Addr) *testca.CA {
	t.Helper()

	opts.HTTPPort = addr.(*net.TCPAddr).Port

	ca, err := testca.Start(opts)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, ca.Close()) })

	return ca
}

// setup is a CA, the responder it validates against, and how to build clients for it.
type setup struct {
	ca        *testca.CA
	responder *http01.Responder
}

func newSetup(t *testing.T, opts testca.Options) setup {
	t.Helper()

	r := startResponder(t)

	return setup{ca: startCA(t, opts, r.Addr()), responder: r}
}

// config returns caConfig for the setup's CA with the responder as solver.
func (s setup) config(t *testing.T) acme.Config {
	t.Helper()

	cfg := caConfig(t, s.ca)
	cfg.Solver = s.responder

	return cfg
}

// caConfig returns a client configuration for ca with a fresh EC256 account key, a
// memory journal, and the CA's TLS root trusted through NewTransport; no solver.
func caConfig(t *testing.T, ca *testca.CA) acme.Config {
	t.Helper()

	key, err := acme.GenerateKey(acme.EC256)
	require.NoError(t, err)

	rootFile, err := ca.WriteTLSRoot(t.TempDir())
	require.NoError(t, err)

	tr, err := acme.NewTransport(acme.TransportOptions{RootCAFiles: []string{rootFile}})
	require.NoError(t, err)

	return acme.Config{
		DirectoryURL: ca.DirectoryURL(),
		Account:      acme.Account{Key: key},
		Transport:    tr,
		Journal:      acme.NewMemoryJournal(),
		Logger:       testLogger(t),
	}
}

func (s setup) client(t *testing.T, cfg acme.Config) *acme.Client {
	t.Helper()

	c, err := acme.NewClient(context.Background(), cfg)
	require.NoError(t, err)

	return c
}

// obtain runs one Obtain with the given deadline and returns its result and duration. It
// acts as a caller that stores the certificate: on success it confirms it (Collected), so
// that the journal forgets the order.
func obtain(t *testing.T, c *acme.Client, req acme.Request, deadline time.Duration) (*acme.Certificate, time.Duration, error) {
	t.Helper()

	// start is read before the deadline is set, so that an attempt cut off by the
	// deadline never measures as shorter than it (under load the two reads are
	// microseconds apart, and took came out 4 µs short of 30 s).
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()

	cert, err := c.Obtain(ctx, req)
	took := time.Since(start)

	if err == nil {
		require.NoError(t, c.Collected(context.Background(), cert))
	}

	return cert, took, err
}

// requirePending asserts that err is an *OrderPendingError wrapping ctxErr.
func requirePending(t *testing.T, err, ctxErr error) *acme.OrderPendingError {
	t.Helper()

	var pe *acme.OrderPendingError
	require.ErrorAs(t, err, &pe)
	require.ErrorIs(t, err, ctxErr)
	require.NotEmpty(t, pe.OrderURL)

	return pe
}

// requireCert asserts that cert is a certificate for names whose key is the one returned.
func requireCert(t *testing.T, cert *acme.Certificate, names ...string) {
	t.Helper()

	require.NotNil(t, cert)
	assert.ElementsMatch(t, names, cert.Leaf.DNSNames)

	key, err := acme.ParseKey(cert.PrivateKeyPEM)
	require.NoError(t, err)
	assert.True(t, key.Public().(interface{ Equal(x crypto.PublicKey) bool }).Equal(cert.Leaf.PublicKey), "certificate does not match its private key")
}

// cutTransport ends an Obtain attempt at a chosen request, as a deadline or a crash
// would: when armed, the first request whose path contains path cancels the attempt,
// either before it is sent or after its response arrived.
type cutTransport struct {
	next  http.RoundTripper
	path  string
	after bool

	mu     sync.Mutex
	cancel context.CancelFunc
}

// arm makes the next matching request cancel ctx's attempt; the returned context is the
// one to pass to Obtain.
func (c *cutTransport) arm(ctx context.Context) context.Context {
	ctx, cancel := context.WithCancel(ctx)

	c.mu.Lock()
	c.cancel = cancel
	c.mu.Unlock()

	return ctx
}

func (c *cutTransport) take(req *http.Request) context.CancelFunc {
	c.mu.Lock()
	defer c.mu.Unlock()

	cancel := c.cancel
	if cancel == nil || !strings.Contains(req.URL.Path, c.path) {
		return nil
	}

	c.cancel = nil

	return cancel
}

func (c *cutTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	cancel := c.take(req)
	if cancel != nil && !c.after {
		cancel()

		return nil, req.Context().Err()
	}

	resp, err := c.next.RoundTrip(req)
	if cancel == nil || err != nil {
		return resp, err
	}

	// Read the body before cancelling, so the client sees the whole response.
	body, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(body))

	cancel()

	return resp, err
}

// runWaiting runs fn as one subtest per case, all at the same time. It is for cases that
// spend tens of seconds idle, waiting on a slow CA: as t.Parallel subtests they would run
// -parallel at a time (GOMAXPROCS, 2 on the team's machine), so the four reported cases
// alone would take two rounds of 45 s. Package testing allows t.Run from several
// goroutines; the subtests then overlap while the parent holds one parallel slot.
func runWaiting[T any](t *testing.T, cases []T, name func(T) string, fn func(t *testing.T, tc T)) {
	t.Helper()

	var wg sync.WaitGroup

	for _, tc := range cases {
		wg.Go(func() { t.Run(name(tc), func(t *testing.T) { fn(t, tc) }) })
	}

	wg.Wait()
}
