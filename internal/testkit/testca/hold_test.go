package testca_test

import (
	"testing"
	"time"

	"github.com/go-acme/lego/v4/acme"
	"github.com/go-acme/lego/v4/acme/api"
	"github.com/go-acme/lego/v4/challenge"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/certfetch/certfetch/internal/testkit/testca"
)

// holdTimeout bounds every wait for a held request to arrive or return.
const holdTimeout = 10 * time.Second

// step prepares an order up to one request of a kind and returns that
// request, to be sent while the kind is held, and a check of the CA's state
// after it was processed (processed false: dropped, never processed).
type step func(t *testing.T, ca *testca.CA) (send func() error, check func(t *testing.T, processed bool))

// steps are the requests of an order, one per holdable kind.
var steps = []struct {
	kind    testca.RequestKind
	prepare step
}{
	{kind: testca.NewAccount, prepare: func(t *testing.T, ca *testca.CA) (func() error, func(*testing.T, bool)) {
		c := newClient(t, ca)
		send := func() error { _, err := c.core.Accounts.New(acme.Account{TermsOfServiceAgreed: true}); return err }
		check := func(t *testing.T, processed bool) {
			_, err := newClientWithKey(t, ca, c.key).core.Accounts.New(acme.Account{OnlyReturnExisting: true})
			assert.Equal(t, processed, err == nil, "the account exists: %v", err)
		}
		return send, check
	}},
	{kind: testca.NewOrder, prepare: func(t *testing.T, ca *testca.CA) (func() error, func(*testing.T, bool)) {
		c := newAccountClient(t, ca)
		send := func() error { _, err := c.core.Orders.New([]string{"hold.example.test"}); return err }
		return send, func(*testing.T, bool) {} // Pebble lists no orders for an account
	}},
	{kind: testca.Challenge, prepare: func(t *testing.T, ca *testca.CA) (func() error, func(*testing.T, bool)) {
		c := newAccountClient(t, ca)
		order, err := c.core.Orders.New([]string{"hold.example.test"})
		require.NoError(t, err)
		authz, err := c.core.Authorizations.Get(order.Authorizations[0])
		require.NoError(t, err)
		chall := findChallenge(t, authz, string(challenge.HTTP01))
		send := func() error { _, err := c.core.Challenges.New(chall.URL); return err }
		check := func(t *testing.T, processed bool) {
			want := acme.StatusPending
			if processed {
				want = acme.StatusValid // AlwaysValid
			}
			assert.Eventually(t, func() bool {
				a, err := c.core.Authorizations.Get(order.Authorizations[0])
				return err == nil && a.Status == want
			}, holdTimeout, pollInterval, "authorization %s", want)
		}
		return send, check
	}},
	{kind: testca.AuthzPoll, prepare: func(t *testing.T, ca *testca.CA) (func() error, func(*testing.T, bool)) {
		c := newAccountClient(t, ca)
		order, err := c.core.Orders.New([]string{"hold.example.test"})
		require.NoError(t, err)
		send := func() error { _, err := c.core.Authorizations.Get(order.Authorizations[0]); return err }
		return send, func(*testing.T, bool) {}
	}},
	{kind: testca.Finalize, prepare: func(t *testing.T, ca *testca.CA) (func() error, func(*testing.T, bool)) {
		c := newAccountClient(t, ca)
		order, csr := c.readyOrder(t, "hold.example.test")
		send := func() error { _, err := c.core.Orders.UpdateForCSR(order.Finalize, csr); return err }
		return send, orderStatusCheck(c, order.Location, acme.StatusValid, acme.StatusReady)
	}},
	{kind: testca.OrderPoll, prepare: func(t *testing.T, ca *testca.CA) (func() error, func(*testing.T, bool)) {
		c := newAccountClient(t, ca)
		order, err := c.core.Orders.New([]string{"hold.example.test"})
		require.NoError(t, err)
		send := func() error { _, err := c.core.Orders.Get(order.Location); return err }
		return send, func(*testing.T, bool) {}
	}},
	{kind: testca.CertDownload, prepare: func(t *testing.T, ca *testca.CA) (func() error, func(*testing.T, bool)) {
		c := newAccountClient(t, ca)
		order, csr := c.readyOrder(t, "hold.example.test")
		certURL := c.finalize(t, order, csr)
		send := func() error { _, _, err := c.core.Certificates.Get(certURL, true); return err }
		return send, func(*testing.T, bool) {}
	}},
}

// orderStatusCheck checks that the order's status is processed or, if the
// request was dropped, notProcessed.
func orderStatusCheck(c *client, orderURL, processed, notProcessed string) func(*testing.T, bool) {
	return func(t *testing.T, wasProcessed bool) {
		want := notProcessed
		if wasProcessed {
			want = processed
		}
		// Pebble completes a finalized order asynchronously (at once).
		assert.Eventually(t, func() bool {
			got, err := c.core.Orders.Get(orderURL)
			return err == nil && got.Status == want
		}, holdTimeout, pollInterval, "order %s", want)
	}
}

func TestHoldNext(t *testing.T) {
	t.Parallel()
	for _, s := range steps {
		for _, drop := range []bool{false, true} {
			desc := s.kind.String() + " released"
			if drop {
				desc = s.kind.String() + " dropped"
			}
			t.Run(desc, func(t *testing.T) {
				t.Parallel()
				ca := startCA(t, testca.Options{AlwaysValid: true})
				send, check := s.prepare(t, ca)
				before := kindCount(ca.Stats(), s.kind)

				hold := ca.HoldNext(s.kind)
				assert.Equal(t, s.kind, hold.Kind())
				result := sendAsync(send)
				waitReached(t, hold)
				select {
				case err := <-result:
					require.FailNow(t, "the held request was answered", "error: %v", err)
				default:
				}
				assert.Equal(t, before+1, kindCount(ca.Stats(), s.kind), "a held request is counted on arrival")

				if drop {
					hold.Drop()
					require.Error(t, receive(t, result), "a dropped request gets no answer")
				} else {
					hold.Release()
					// Release returned: the CA has answered.
					require.NoError(t, receive(t, result))
				}
				check(t, !drop)
			})
		}
	}
}

// TestHoldNextClientGone is the crash case the hook exists for: the client
// dies while its finalize is held; released, the finalize is processed
// anyway (the CA got it, the client never saw the answer); dropped, it is
// not (it never reached the CA).
func TestHoldNextClientGone(t *testing.T) {
	t.Parallel()
	tests := []struct {
		desc string
		drop bool
	}{
		{desc: "released after the client left: processed"},
		{desc: "dropped after the client left: never processed", drop: true},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			t.Parallel()
			ca := startCA(t, testca.Options{AlwaysValid: true})
			c := newAccountClient(t, ca)
			order, csr := c.readyOrder(t, "gone.example.test")
			doomedHTTP := ca.HTTPClient()
			doomedHTTP.Timeout = time.Second // stands in for SIGKILL: the connection goes away
			doomed, err := api.New(doomedHTTP, userAgent, ca.DirectoryURL(), c.accountURL, c.key)
			require.NoError(t, err)

			hold := ca.HoldNext(testca.Finalize)
			result := sendAsync(func() error { _, err := doomed.Orders.UpdateForCSR(order.Finalize, csr); return err })
			waitReached(t, hold)
			require.Error(t, receive(t, result), "the client gave up while its request was held")
			if tt.drop {
				hold.Drop()
			} else {
				hold.Release()
			}

			orderStatusCheck(c, order.Location, acme.StatusValid, acme.StatusReady)(t, !tt.drop)
			assert.Equal(t, 1, ca.Stats().Finalizes)
		})
	}
}

func TestHoldNextQueuesPerKind(t *testing.T) {
	t.Parallel()
	ca := startCA(t, testca.Options{AlwaysValid: true})
	c := newAccountClient(t, ca)
	order, err := c.core.Orders.New([]string{"queue.example.test"})
	require.NoError(t, err)
	poll := func() error { _, err := c.core.Orders.Get(order.Location); return err }

	first, second := ca.HoldNext(testca.OrderPoll), ca.HoldNext(testca.OrderPoll)
	authzHold := ca.HoldNext(testca.AuthzPoll)
	firstResult := sendAsync(poll)
	waitReached(t, first)
	secondResult := sendAsync(poll)
	waitReached(t, second)

	second.Release()
	require.NoError(t, receive(t, secondResult), "holds are independent")
	select {
	case <-firstResult:
		require.FailNow(t, "the first poll is still held")
	default:
	}
	first.Release()
	require.NoError(t, receive(t, firstResult))
	require.NoError(t, poll(), "two holds catch two requests, not a third")
	select {
	case <-authzHold.Reached():
		require.FailNow(t, "a hold catches its own kind only")
	default:
	}
	authzHold.Release()
}

func TestHoldNextReleasedBeforeArrival(t *testing.T) {
	t.Parallel()
	tests := []struct {
		desc    string
		drop    bool
		wantErr bool
	}{
		{desc: "release: the request passes"},
		{desc: "drop: the request is dropped on arrival", drop: true, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			t.Parallel()
			ca := startCA(t, testca.Options{AlwaysValid: true})
			c := newAccountClient(t, ca)
			hold := ca.HoldNext(testca.NewOrder)
			if tt.drop {
				hold.Drop()
			} else {
				hold.Release()
			}
			_, err := c.core.Orders.New([]string{"early.example.test"})
			assert.Equal(t, tt.wantErr, err != nil, "error: %v", err)
			waitReached(t, hold)
		})
	}
}

func TestCloseReleasesHolds(t *testing.T) {
	t.Parallel()
	ca, err := testca.Start(testca.Options{AlwaysValid: true})
	require.NoError(t, err)
	c := newAccountClient(t, ca)
	held := ca.HoldNext(testca.NewOrder)
	neverCaught := ca.HoldNext(testca.CertDownload)
	result := sendAsync(func() error { _, err := c.core.Orders.New([]string{"close.example.test"}); return err })
	waitReached(t, held)

	require.NoError(t, ca.Close())
	require.NoError(t, receive(t, result), "the held request was processed and answered")
	neverCaught.Release() // no-op, returns at once
	held.Release()
}

func TestHoldNextRejectsOtherKinds(t *testing.T) {
	t.Parallel()
	ca := startCA(t, testca.Options{AlwaysValid: true})
	for _, kind := range []testca.RequestKind{0, testca.Revocation + 1, -1} {
		assert.Panics(t, func() { ca.HoldNext(kind) }, "kind %d", int(kind))
	}
}

// kindCount is the Stats counter of kind.
func kindCount(s testca.Stats, kind testca.RequestKind) int {
	switch kind {
	case testca.NewAccount:
		return s.NewAccounts
	case testca.NewOrder:
		return s.NewOrders
	case testca.Challenge:
		return s.Challenges
	case testca.AuthzPoll:
		return s.AuthzPolls
	case testca.Finalize:
		return s.Finalizes
	case testca.OrderPoll:
		return s.OrderPolls
	case testca.CertDownload:
		return s.CertDownloads
	default:
		panic("no counter for " + kind.String())
	}
}

func sendAsync(send func() error) <-chan error {
	result := make(chan error, 1)
	go func() { result <- send() }()
	return result
}

func waitReached(t *testing.T, hold *testca.Hold) {
	t.Helper()
	select {
	case <-hold.Reached():
	case <-time.After(holdTimeout):
		require.FailNow(t, "the held request never arrived", "kind %s", hold.Kind())
	}
}

func receive(t *testing.T, result <-chan error) error {
	t.Helper()
	select {
	case err := <-result:
		return err
	case <-time.After(holdTimeout):
		require.FailNow(t, "no answer")
		return nil
	}
}
