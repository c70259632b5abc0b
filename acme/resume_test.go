package acme_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-acme/lego/v4/challenge"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/certfetch/certfetch/acme"
	"github.com/certfetch/certfetch/internal/testkit/testca"
)

// crashJournal is a MemoryJournal that can lose Deletes, like a process that crashed
// right before it forgot an order.
type crashJournal struct {
	*acme.MemoryJournal

	dropDeletes atomic.Bool
}

func (j *crashJournal) Delete(ctx context.Context, key string) error {
	if j.dropDeletes.Load() {
		return nil
	}

	return j.MemoryJournal.Delete(ctx, key)
}

// switchSolver publishes through next unless muted, in which case the CA's validator
// finds nothing; unmute publishes what was presented while muted (a route fixed late).
type switchSolver struct {
	next  challenge.Provider
	muted atomic.Bool

	mu      sync.Mutex
	skipped [][3]string
}

func (s *switchSolver) Present(domain, token, keyAuth string) error {
	if s.muted.Load() {
		s.mu.Lock()
		s.skipped = append(s.skipped, [3]string{domain, token, keyAuth})
		s.mu.Unlock()

		return nil
	}

	return s.next.Present(domain, token, keyAuth)
}

func (s *switchSolver) unmute() error {
	s.mu.Lock()
	defer s.mu.Unlock()

	s.muted.Store(false)

	for _, p := range s.skipped {
		if err := s.next.Present(p[0], p[1], p[2]); err != nil {
			return err
		}
	}

	s.skipped = nil

	return nil
}

func (s *switchSolver) CleanUp(domain, token, keyAuth string) error {
	return s.next.CleanUp(domain, token, keyAuth)
}

// TestResume walks every row of the resume table: the first attempt ends with the order
// in a given state (cut at a chosen request, as a deadline would), the second resumes it,
// or forgets it and starts afresh when it is dead at the CA.
func TestResume(t *testing.T) {
	t.Parallel()

	tests := []struct {
		desc string
		opts testca.Options
		// The first attempt ends at the first request whose path contains cutPath
		// (Pebble's URL layout), before it is sent or, with cutAfter, after its answer.
		cutPath  string
		cutAfter bool
		// authzFails: the first attempt publishes nothing, so the CA invalidates the
		// order, and the journal loses the Delete (a crash): the record points at an
		// invalid order.
		authzFails bool
		// forget: the CA purges the order between the attempts.
		forget        bool
		wantStatus    string
		wantNewOrders int
	}{
		{desc: "valid: download", cutPath: "/certZ/", wantStatus: "valid", wantNewOrders: 1},
		{desc: "processing: poll", opts: testca.Options{Mode: testca.Async, Delay: 3 * time.Second, RetryAfter: time.Second}, cutPath: "/finalize-order/", cutAfter: true, wantStatus: "processing", wantNewOrders: 1},
		{desc: "ready: finalize with the journaled CSR", cutPath: "/finalize-order/", wantStatus: "ready", wantNewOrders: 1},
		{desc: "pending: continue the authorizations", cutPath: "/chalZ/", wantStatus: "pending", wantNewOrders: 1},
		{desc: "invalid: start fresh", authzFails: true, wantNewOrders: 2},
		{desc: "gone: start fresh", cutPath: "/finalize-order/", forget: true, wantStatus: "ready", wantNewOrders: 2},
	}

	for _, test := range tests {
		t.Run(test.desc, func(t *testing.T) {
			t.Parallel()

			s := newSetup(t, test.opts)
			cfg := s.config(t)
			cut := &cutTransport{next: cfg.Transport, path: test.cutPath, after: test.cutAfter}
			cfg.Transport = cut
			journal := &crashJournal{MemoryJournal: acme.NewMemoryJournal()}
			cfg.Journal = journal
			solver := &switchSolver{next: s.responder}
			cfg.Solver = solver
			c := s.client(t, cfg)
			req := acme.Request{Names: []string{"resume.example.com", "www.resume.example.com"}, Profile: testca.DefaultProfile}

			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()

			if test.authzFails {
				solver.muted.Store(true)
				journal.dropDeletes.Store(true)

				_, err := c.Obtain(ctx, req)

				var ae *acme.AuthorizationError
				require.ErrorAs(t, err, &ae)
				solver.muted.Store(false)
				journal.dropDeletes.Store(false)
			} else {
				_, err := c.Obtain(cut.arm(ctx), req)
				pe := requirePending(t, err, context.Canceled)
				assert.Equal(t, test.wantStatus, pe.Status)
			}

			rec, err := journal.Load(ctx, req.Key())
			require.NoError(t, err, "the first order must be journaled")

			if test.forget {
				require.NoError(t, s.ca.ForgetOrder(rec.OrderURL))
			}

			cert, err := c.Obtain(ctx, req)
			require.NoError(t, err)
			requireCert(t, cert, req.Names...)

			if test.wantNewOrders == 1 {
				assert.Equal(t, rec.OrderURL, cert.OrderURL)
				assert.Equal(t, rec.PrivateKeyPEM, string(cert.PrivateKeyPEM), "a resumed order must use the journaled key and CSR")
			} else {
				assert.NotEqual(t, rec.OrderURL, cert.OrderURL)
			}

			stats := s.ca.Stats()
			assert.Equal(t, test.wantNewOrders, stats.NewOrders)
			assert.LessOrEqual(t, stats.Finalizes, test.wantNewOrders, "one finalize per order at most")

			kept, err := journal.Load(ctx, req.Key())
			require.NoError(t, err, "the order stays journaled until the caller has stored its certificate")
			assert.Equal(t, string(cert.ChainPEM), kept.CertificatePEM)

			require.NoError(t, c.Collected(ctx, cert))
			_, err = journal.Load(ctx, req.Key())
			require.ErrorIs(t, err, acme.ErrNoRecord, "a collected order must be forgotten")
		})
	}
}

// TestDownloadedCertificateSurvivesUntilCollected is a caller that crashed (or could not
// store the certificate) after Obtain returned: the next Obtain returns the very same
// certificate from the journal without a request to the CA, and only Collected forgets it.
// Collected for an older certificate leaves a newer order alone.
func TestDownloadedCertificateSurvivesUntilCollected(t *testing.T) {
	t.Parallel()

	s := newSetup(t, testca.Options{})
	cfg := s.config(t)
	c := s.client(t, cfg)
	req := acme.Request{Names: []string{"kept.example.com"}, Profile: testca.DefaultProfile}
	ctx := context.Background()

	first, err := c.Obtain(ctx, req)
	require.NoError(t, err)

	before := s.ca.Stats()
	again, err := c.Obtain(ctx, req)
	require.NoError(t, err)
	assert.Equal(t, first.ChainPEM, again.ChainPEM, "the journaled certificate comes back")
	assert.Equal(t, first.PrivateKeyPEM, again.PrivateKeyPEM)
	assert.Equal(t, before.Requests, s.ca.Stats().Requests, "without asking the CA")

	require.NoError(t, c.Collected(ctx, again))

	second, _, err := obtain(t, c, req, 30*time.Second)
	require.NoError(t, err)
	assert.NotEqual(t, first.Leaf.SerialNumber, second.Leaf.SerialNumber, "after Collected, a new order")
	assert.Equal(t, 2, s.ca.Stats().NewOrders)

	third, err := c.Obtain(ctx, req)
	require.NoError(t, err)
	require.NoError(t, c.Collected(ctx, first), "a stale confirmation is not an error")

	rec, err := cfg.Journal.Load(ctx, req.Key())
	require.NoError(t, err, "and it leaves the newer order journaled")
	assert.Equal(t, third.OrderURL, rec.OrderURL)
}

// TestSameRequestConcurrently starts two attempts for one request at once, the first with
// a deadline shorter than the CA needs. Whichever runs first, the other waits for it and
// then resumes its order (or the first's deadline passes while it waits): the CA sees one
// order, where two unserialized attempts would create two.
func TestSameRequestConcurrently(t *testing.T) {
	t.Parallel()

	s := newSetup(t, testca.Options{Mode: testca.Async, Delay: 4 * time.Second, RetryAfter: time.Second})
	c := s.client(t, s.config(t))
	req := acme.Request{Names: []string{"twice.example.com"}, Profile: testca.DefaultProfile}

	var (
		wg         sync.WaitGroup
		shortErr   error
		cert       *acme.Certificate
		patientErr error
	)

	wg.Go(func() { _, _, shortErr = obtain(t, c, req, 2*time.Second) })
	wg.Go(func() { cert, _, patientErr = obtain(t, c, req, 30*time.Second) })
	wg.Wait()

	require.ErrorIs(t, shortErr, context.DeadlineExceeded)
	require.NoError(t, patientErr)
	requireCert(t, cert, req.Names...)
	assert.Equal(t, 1, s.ca.Stats().NewOrders)
}
