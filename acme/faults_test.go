package acme_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/certfetch/certfetch/acme"
	"github.com/certfetch/certfetch/internal/testkit/testca"
)

// TestMisissuedCertificateIsRefused: a CA that issues the certificate for another key
// gets a *CertificateMismatchError; the order is forgotten (it can only ever produce that
// certificate) and the next attempt gets a matching certificate from a new order.
func TestMisissuedCertificateIsRefused(t *testing.T) {
	t.Parallel()

	s := newSetup(t, testca.Options{})
	cfg := s.config(t)
	c := s.client(t, cfg)
	req := acme.Request{Names: []string{"misissued.example.com"}, Profile: testca.DefaultProfile}

	s.ca.IssueForAnotherKey(1)

	_, _, err := obtain(t, c, req, 30*time.Second)

	var mismatch *acme.CertificateMismatchError
	require.ErrorAs(t, err, &mismatch)
	assert.Contains(t, mismatch.Reason, "public key is not the order's key")

	_, err = cfg.Journal.Load(context.Background(), req.Key())
	require.ErrorIs(t, err, acme.ErrNoRecord, "an order that produced a wrong certificate is forgotten")

	cert, _, err := obtain(t, c, req, 30*time.Second)
	require.NoError(t, err)
	requireCert(t, cert, req.Names...)
	assert.Equal(t, 2, s.ca.Stats().NewOrders)
}

// TestValidationErrorsKeptPending: a CA that keeps a failed challenge pending with an
// error (step-ca) is asked again maxChallengeRetries (2) times; then the attempt fails at
// once with the CA's problem, the authorization is deactivated and the order forgotten,
// instead of waiting for the deadline as if the CA were slow. A failure that goes away
// before a retry (the route fixed meanwhile) ends in a certificate from the same order.
func TestValidationErrorsKeptPending(t *testing.T) {
	t.Parallel()

	t.Run("failing every time", func(t *testing.T) {
		t.Parallel()

		s, cfg, _, c := keptPendingSetup(t)
		req := acme.Request{Names: []string{"unreachable.example.com"}, Profile: testca.DefaultProfile}

		_, took, err := obtain(t, c, req, time.Minute)

		var ae *acme.AuthorizationError
		require.ErrorAs(t, err, &ae)
		assert.NotErrorIs(t, err, context.DeadlineExceeded)
		assert.Equal(t, "unreachable.example.com", ae.Domain)
		assert.Equal(t, "pending", ae.Status)
		require.NotNil(t, ae.Problem)
		assert.Equal(t, "urn:ietf:params:acme:error:connection", ae.Problem.Type)
		assert.Contains(t, err.Error(), "The server could not connect to validation target")
		assert.Less(t, took, 30*time.Second, "a validation failure is not a slow CA")

		assert.Equal(t, 3, s.ca.Stats().Challenges, "one validation request and two retries")

		_, err = cfg.Journal.Load(context.Background(), req.Key())
		require.ErrorIs(t, err, acme.ErrNoRecord)
	})

	t.Run("fixed before the retry", func(t *testing.T) {
		t.Parallel()

		s, _, solver, c := keptPendingSetup(t)

		first := s.ca.HoldNext(testca.Challenge)
		retry := s.ca.HoldNext(testca.Challenge)

		var fixed atomic.Bool

		go func() {
			<-first.Reached()
			first.Release() // validated while muted: fails, stays pending

			<-retry.Reached()
			// The route is fixed: the challenge is published now, and the retry validates.
			fixed.Store(solver.unmute() == nil)
			retry.Release()
		}()

		req := acme.Request{Names: []string{"flaky.example.com"}, Profile: testca.DefaultProfile}
		cert, _, err := obtain(t, c, req, time.Minute)
		require.NoError(t, err)
		require.True(t, fixed.Load())
		requireCert(t, cert, req.Names...)
		assert.Equal(t, 1, s.ca.Stats().NewOrders)
	})
}

// keptPendingSetup is a CA that keeps failed challenges pending (as step-ca does) and a
// client whose challenges are not published until the solver is unmuted.
func keptPendingSetup(t *testing.T) (setup, acme.Config, *switchSolver, *acme.Client) {
	t.Helper()

	s := newSetup(t, testca.Options{})
	s.ca.KeepFailedChallengesPending(true)

	cfg := s.config(t)
	solver := &switchSolver{next: s.responder}
	solver.muted.Store(true)
	cfg.Solver = solver

	return s, cfg, solver, s.client(t, cfg)
}

// TestForgottenAccountIsRegisteredAgain: a CA that no longer knows the account answers
// accountDoesNotExist; the client registers the same key again (the thumbprint stays),
// reports the account URL, and the attempt succeeds.
func TestForgottenAccountIsRegisteredAgain(t *testing.T) {
	t.Parallel()

	s := newSetup(t, testca.Options{})
	cfg := s.config(t)

	var reported atomic.Value

	cfg.OnAccountURL = func(url string) { reported.Store(url) }
	c := s.client(t, cfg)
	thumbprint := c.Thumbprint()

	_, _, err := obtain(t, c, acme.Request{Names: []string{"before.example.com"}, Profile: testca.DefaultProfile}, 30*time.Second)
	require.NoError(t, err)

	require.NoError(t, s.ca.ForgetAccount(c.AccountURL()))
	accounts := s.ca.Stats().NewAccounts

	cert, _, err := obtain(t, c, acme.Request{Names: []string{"after.example.com"}, Profile: testca.DefaultProfile}, 30*time.Second)
	require.NoError(t, err)
	requireCert(t, cert, "after.example.com")
	assert.Equal(t, accounts+1, s.ca.Stats().NewAccounts, "registered once more")
	assert.Equal(t, c.AccountURL(), reported.Load())
	assert.Equal(t, thumbprint, c.Thumbprint(), "the same key")
}
