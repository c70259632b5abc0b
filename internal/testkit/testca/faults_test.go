package testca_test

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/go-acme/lego/v4/acme"
	"github.com/go-acme/lego/v4/certcrypto"
	"github.com/go-acme/lego/v4/certificate"
	"github.com/go-acme/lego/v4/challenge"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/certfetch/certfetch/internal/testkit/testca"
)

func TestDirectoryAdvertisesProfiles(t *testing.T) {
	t.Parallel()
	ca := startCA(t, testca.Options{AlwaysValid: true})
	profiles := newClient(t, ca).core.GetDirectory().Meta.Profiles
	for _, name := range []string{testca.DefaultProfile, testca.ShortLivedProfile, testca.MinuteProfile} {
		assert.Contains(t, profiles, name)
	}
	assert.Len(t, profiles, 3)
}

func TestRenewalInfoByProfile(t *testing.T) {
	t.Parallel()
	ca := startCA(t, testca.Options{AlwaysValid: true})
	tests := []struct {
		desc    string
		profile string
		// want returns the window expected for leaf and the Retry-After.
		want func(leaf *x509.Certificate) (start, end time.Time, retryAfter string)
	}{
		{
			desc:    "minute: from half to two thirds of the validity, ask again after a sixth",
			profile: testca.MinuteProfile,
			want: func(leaf *x509.Certificate) (time.Time, time.Time, string) {
				return leaf.NotBefore.Add(30 * time.Second), leaf.NotBefore.Add(40 * time.Second), "10"
			},
		},
		{
			desc:    "shortlived: Pebble's window, 24 h either side of two thirds of the validity",
			profile: testca.ShortLivedProfile,
			want: func(leaf *x509.Certificate) (time.Time, time.Time, string) {
				ideal := leaf.NotBefore.Add(4 * 24 * time.Hour)
				return ideal.Add(-24 * time.Hour), ideal.Add(24 * time.Hour), "21600"
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			t.Parallel()
			c := newAccountClient(t, ca)
			leaf := verifyChain(t, ca, c.issueWithProfile(t, "ari.example.test", tt.profile), "ari.example.test")
			certID, err := certificate.MakeARICertID(leaf)
			require.NoError(t, err)
			ariURL := c.core.GetDirectory().RenewalInfo + "/" + certID
			info, err := certificate.NewCertifier(c.core, nil, certificate.CertifierOptions{}).
				GetRenewalInfo(certificate.RenewalInfoRequest{Cert: leaf})
			require.NoError(t, err)

			wantStart, wantEnd, wantRetryAfter := tt.want(leaf)
			assert.WithinDuration(t, wantStart, info.SuggestedWindow.Start, time.Second)
			assert.WithinDuration(t, wantEnd, info.SuggestedWindow.End, time.Second)
			assert.Equal(t, wantRetryAfter, c.transport.lastRetryAfter(ariURL))
		})
	}
}

func TestIssueForAnotherKey(t *testing.T) {
	t.Parallel()
	tests := []struct {
		desc string
		n    int
		// wantOwnKey says, per download, whether the leaf carries the CSR's key.
		wantOwnKey []bool
	}{
		{desc: "off", n: 0, wantOwnKey: []bool{true, true}},
		{desc: "one download", n: 1, wantOwnKey: []bool{false, true, true}},
		{desc: "two downloads", n: 2, wantOwnKey: []bool{false, false, true}},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			t.Parallel()
			ca := startCA(t, testca.Options{AlwaysValid: true})
			c := newAccountClient(t, ca)
			const domain = "misissued.example.test"
			order := c.readyOrderWithProfile(t, domain, testca.MinuteProfile)
			csr, key := newCSRWithKey(t, domain)
			certURL := c.finalize(t, order, csr)

			ca.IssueForAnotherKey(tt.n)
			var genuineSerial string
			for i, wantOwn := range tt.wantOwnKey {
				chain, _, err := c.core.Certificates.Get(certURL, true)
				require.NoError(t, err)
				leaf := verifyChain(t, ca, chain, domain)
				certs, err := certcrypto.ParsePEMBundle(chain)
				require.NoError(t, err)
				assert.Len(t, certs, 2, "leaf and intermediate, like a genuine download")
				assert.Equal(t, []string{domain}, leaf.DNSNames)
				assert.InDelta(t, testca.MinuteProfileValidity.Seconds(), leaf.NotAfter.Sub(leaf.NotBefore).Seconds(), 1, "same profile")

				_, pairErr := tls.X509KeyPair(chain, certcrypto.PEMEncode(key))
				if wantOwn {
					require.NoError(t, pairErr, "download %d", i)
					if genuineSerial == "" {
						genuineSerial = leaf.SerialNumber.String()
					}
					assert.Equal(t, genuineSerial, leaf.SerialNumber.String(), "download %d is the genuine certificate", i)
					continue
				}
				require.Error(t, pairErr, "download %d: only the key check notices", i)
				assert.Contains(t, pairErr.Error(), "private key does not match public key")
				assert.NotEqual(t, key.Public(), leaf.PublicKey)
			}
			assert.Equal(t, len(tt.wantOwnKey), ca.Stats().CertDownloads)
		})
	}
}

// TestIssueForAnotherKeyUncheckedByLego shows the fault against lego's own
// Obtain, which does not compare the certificate's key with its own.
func TestIssueForAnotherKeyUncheckedByLego(t *testing.T) {
	t.Parallel()
	solver := startHTTP01Server(t)
	ca := startCA(t, testca.Options{HTTPPort: solver.port()})
	legoClient := newLegoClient(t, ca, solver)
	ca.IssueForAnotherKey(1)

	res, err := legoClient.Certificate.Obtain(certificate.ObtainRequest{
		Domains: []string{"lego.example.test"}, Bundle: true, Profile: testca.DefaultProfile,
	})
	require.NoError(t, err, "lego accepts the mis-issued certificate")
	verifyChain(t, ca, res.Certificate, "lego.example.test")
	_, err = tls.X509KeyPair(res.Certificate, res.PrivateKey)
	require.ErrorContains(t, err, "private key does not match public key")
}

func TestKeepFailedChallengesPending(t *testing.T) {
	t.Parallel()
	// stepCAError is what step-ca v0.30.2 stores (testservers.StartStepCA).
	stepCAError := &acme.ProblemDetails{
		Type:   "urn:ietf:params:acme:error:connection",
		Detail: "The server could not connect to validation target",
	}
	tests := []struct {
		desc string
		keep bool
		// target is what answers the CA's HTTP-01 request.
		target       func(t *testing.T, s *http01Server, token string)
		wantStatus   string // challenge and authorization after the POST
		wantError    *acme.ProblemDetails
		wantErrorTyp string // when wantError is nil: the error type Pebble stores
		wantOrder    string
	}{
		{
			desc: "connection refused stays pending",
			keep: true, target: refuseConnections,
			wantStatus: acme.StatusPending, wantError: stepCAError, wantOrder: acme.StatusPending,
		},
		{
			desc: "404 stays pending",
			keep: true, target: func(*testing.T, *http01Server, string) {}, // the server knows no token
			wantStatus: acme.StatusPending, wantError: stepCAError, wantOrder: acme.StatusPending,
		},
		{
			desc: "wrong key authorization is invalid, as in step-ca",
			keep: true, target: wrongKeyAuthorization,
			wantStatus: acme.StatusInvalid, wantErrorTyp: "urn:ietf:params:acme:error:unauthorized", wantOrder: acme.StatusInvalid,
		},
		{
			desc: "off: connection refused is invalid, as in Pebble",
			keep: false, target: refuseConnections,
			wantStatus: acme.StatusInvalid, wantErrorTyp: "urn:ietf:params:acme:error:connection", wantOrder: acme.StatusInvalid,
		},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			t.Parallel()
			solver := startHTTP01Server(t)
			ca := startCA(t, testca.Options{HTTPPort: solver.port()})
			ca.KeepFailedChallengesPending(tt.keep)
			c := newAccountClient(t, ca)
			const domain = "pending.example.test"
			order, err := c.core.Orders.New([]string{domain})
			require.NoError(t, err)
			authz, err := c.core.Authorizations.Get(order.Authorizations[0])
			require.NoError(t, err)
			chall := findChallenge(t, authz, string(challenge.HTTP01))
			tt.target(t, solver, chall.Token)

			answered, err := c.core.Challenges.New(chall.URL)
			require.NoError(t, err)
			if !tt.keep {
				// Pebble answers "processing" and validates afterwards.
				require.Eventually(t, func() bool {
					a, err := c.core.Authorizations.Get(order.Authorizations[0])
					return err == nil && a.Status != acme.StatusPending
				}, 10*time.Second, pollInterval)
			} else {
				assert.Equal(t, tt.wantStatus, answered.Status, "the POST is answered after the validation, as by step-ca")
			}

			got, err := c.core.Authorizations.Get(order.Authorizations[0])
			require.NoError(t, err)
			assert.Equal(t, tt.wantStatus, got.Status, "authorization")
			gotChall := findChallenge(t, got, string(challenge.HTTP01))
			assert.Equal(t, tt.wantStatus, gotChall.Status, "challenge")
			require.NotNil(t, gotChall.Error)
			if tt.wantError != nil {
				assert.Equal(t, tt.wantError, gotChall.Error)
			} else {
				assert.Equal(t, tt.wantErrorTyp, gotChall.Error.Type)
			}
			gotOrder, err := c.core.Orders.Get(order.Location)
			require.NoError(t, err)
			assert.Equal(t, tt.wantOrder, gotOrder.Status, "order")
			if tt.wantOrder == acme.StatusPending {
				assert.Nil(t, gotOrder.Error)
			}
		})
	}
}

// TestKeepFailedChallengesPendingRevalidates: a new POST to the challenge
// validates again, and succeeds once the target answers.
func TestKeepFailedChallengesPendingRevalidates(t *testing.T) {
	t.Parallel()
	solver := startHTTP01Server(t)
	ca := startCA(t, testca.Options{HTTPPort: solver.port()})
	ca.KeepFailedChallengesPending(true)
	c := newAccountClient(t, ca)
	order, err := c.core.Orders.New([]string{"again.example.test"})
	require.NoError(t, err)
	authz, err := c.core.Authorizations.Get(order.Authorizations[0])
	require.NoError(t, err)
	chall := findChallenge(t, authz, string(challenge.HTTP01))

	const failures = 3
	for i := range failures {
		answered, err := c.core.Challenges.New(chall.URL)
		require.NoError(t, err, "attempt %d", i)
		assert.Equal(t, acme.StatusPending, answered.Status)
		require.NotNil(t, answered.Error)
		assert.Equal(t, "The server could not connect to validation target", answered.Error.Detail)
	}
	assert.Zero(t, solver.servedCount())

	keyAuth, err := c.core.GetKeyAuthorization(chall.Token)
	require.NoError(t, err)
	require.NoError(t, solver.Present("", chall.Token, keyAuth))
	answered, err := c.core.Challenges.New(chall.URL)
	require.NoError(t, err)
	assert.Equal(t, acme.StatusValid, answered.Status)
	assert.Positive(t, solver.servedCount(), "Pebble's VA fetched the key authorization (three times: it validates from 3 goroutines)")

	got, err := c.core.Orders.Get(order.Location)
	require.NoError(t, err)
	assert.Equal(t, acme.StatusReady, got.Status)
	assert.Equal(t, failures+1, ca.Stats().Challenges)
}

func TestForgetAccount(t *testing.T) {
	t.Parallel()
	ca := startCA(t, testca.Options{AlwaysValid: true})
	forgotten := newAccountClient(t, ca)
	other := newAccountClient(t, ca)
	order, err := forgotten.core.Orders.New([]string{"forgotten.example.test"})
	require.NoError(t, err)

	require.NoError(t, ca.ForgetAccount(forgotten.accountURL))
	requests := []struct {
		desc string
		send func() error
	}{
		{desc: "newOrder", send: func() error { _, err := forgotten.core.Orders.New([]string{"x.example.test"}); return err }},
		{desc: "order poll", send: func() error { _, err := forgotten.core.Orders.Get(order.Location); return err }},
		{desc: "authorization poll", send: func() error { _, err := forgotten.core.Authorizations.Get(order.Authorizations[0]); return err }},
		{desc: "newAccount signed with the kid", send: func() error {
			_, err := forgotten.core.Accounts.New(acme.Account{TermsOfServiceAgreed: true})
			return err
		}},
		{desc: "account look-up by key", send: func() error {
			_, err := newClientWithKey(t, ca, forgotten.key).core.Accounts.New(acme.Account{OnlyReturnExisting: true})
			return err
		}},
	}
	for _, req := range requests {
		prob := problem(t, req.send())
		assert.Equal(t, http.StatusBadRequest, prob.HTTPStatus, req.desc)
		assert.Equal(t, "urn:ietf:params:acme:error:accountDoesNotExist", prob.Type, req.desc)
	}
	_, err = other.core.Orders.New([]string{"other.example.test"})
	require.NoError(t, err, "other accounts are not forgotten")

	before := ca.Stats().NewAccounts
	restarted := newClientWithKey(t, ca, forgotten.key)
	newAccountURL := restarted.core.GetDirectory().NewAccountURL
	recreated, err := restarted.core.Accounts.New(acme.Account{TermsOfServiceAgreed: true})
	require.NoError(t, err)
	assert.Equal(t, http.StatusCreated, restarted.transport.lastStatus(newAccountURL), "answered as a creation")
	assert.Equal(t, forgotten.accountURL, recreated.Location, "Pebble keeps the account's URL")
	assert.Equal(t, before+1, ca.Stats().NewAccounts)
	got, err := forgotten.core.Orders.Get(order.Location)
	require.NoError(t, err, "the re-created account works again, orders included")
	assert.Equal(t, acme.StatusPending, got.Status)

	next := newClientWithKey(t, ca, forgotten.key)
	again, err := next.core.Accounts.New(acme.Account{TermsOfServiceAgreed: true})
	require.NoError(t, err)
	assert.Equal(t, http.StatusOK, next.transport.lastStatus(newAccountURL), "an existing account again")
	assert.Equal(t, forgotten.accountURL, again.Location)
}

func TestForgetAccountRejectsOtherURLs(t *testing.T) {
	t.Parallel()
	ca := startCA(t, testca.Options{AlwaysValid: true})
	c := newAccountClient(t, ca)
	tests := []struct {
		desc, url string
	}{
		{desc: "directory", url: ca.DirectoryURL()},
		{desc: "unknown account", url: c.accountURL + "0"},
		{desc: "not a URL path", url: "%zz"},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			t.Parallel()
			assert.Error(t, ca.ForgetAccount(tt.url))
		})
	}
}

// refuseConnections points the CA's HTTP-01 requests at a port nobody
// listens on: the server's listener is closed.
func refuseConnections(t *testing.T, s *http01Server, _ string) {
	t.Helper()
	require.NoError(t, s.listener.Close())
	_, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port())), time.Second)
	require.Error(t, err, "the port refuses connections")
}

// wrongKeyAuthorization makes the server answer the token with a key
// authorization of another account.
func wrongKeyAuthorization(t *testing.T, s *http01Server, token string) {
	t.Helper()
	require.NoError(t, s.Present("", token, token+".not-the-thumbprint"))
}
