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

// step-ca v0.30.2's problem documents (testservers.StartStepCA).
var (
	stepCAConnection = &acme.ProblemDetails{
		Type:   "urn:ietf:params:acme:error:connection",
		Detail: "The server could not connect to validation target",
	}
	stepCARejected = &acme.ProblemDetails{
		Type:   "urn:ietf:params:acme:error:rejectedIdentifier",
		Detail: "The server will not issue certificates for the identifier",
	}
)

func TestKeepFailedChallengesPending(t *testing.T) {
	t.Parallel()
	tests := []struct {
		desc string
		keep bool
		// target prepares what answers the CA's HTTP-01 requests.
		target func(t *testing.T, s *http01Server, token string)
		// want* are the states after the challenge POST.
		wantChallenge, wantAuthz, wantOrder string
		wantError                           *acme.ProblemDetails // nil: only wantErrorType is checked
		wantErrorType                       string
	}{
		{
			desc: "connection refused: all pending, step-ca's connection error",
			keep: true, target: refuseConnections,
			wantChallenge: acme.StatusPending, wantAuthz: acme.StatusPending, wantOrder: acme.StatusPending,
			wantError: stepCAConnection,
		},
		{
			desc: "404: all pending, step-ca's connection error",
			keep: true, target: func(*testing.T, *http01Server, string) {}, // the server knows no token
			wantChallenge: acme.StatusPending, wantAuthz: acme.StatusPending, wantOrder: acme.StatusPending,
			wantError: stepCAConnection,
		},
		{
			desc: "wrong key authorization: challenge invalid, authorization and order pending",
			keep: true, target: wrongKeyAuthorization,
			wantChallenge: acme.StatusInvalid, wantAuthz: acme.StatusPending, wantOrder: acme.StatusPending,
			wantError: stepCARejected,
		},
		{
			desc: "off: connection refused makes all invalid, as in Pebble",
			keep: false, target: refuseConnections,
			wantChallenge: acme.StatusInvalid, wantAuthz: acme.StatusInvalid, wantOrder: acme.StatusInvalid,
			wantErrorType: "urn:ietf:params:acme:error:connection",
		},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			t.Parallel()
			solver := startHTTP01Server(t)
			ca := startCA(t, testca.Options{HTTPPort: solver.port()})
			ca.KeepFailedChallengesPending(tt.keep)
			c := newAccountClient(t, ca)
			order, err := c.core.Orders.New([]string{"pending.example.test"})
			require.NoError(t, err)
			authzURL := order.Authorizations[0]
			authz, err := c.core.Authorizations.Get(authzURL)
			require.NoError(t, err)
			chall := findChallenge(t, authz, string(challenge.HTTP01))
			tt.target(t, solver, chall.Token)

			answered, err := c.core.Challenges.New(chall.URL)
			require.NoError(t, err)
			if tt.keep {
				assert.Equal(t, tt.wantChallenge, answered.Status, "answered after the validation, as by step-ca")
			} else {
				assert.Equal(t, acme.StatusProcessing, answered.Status, "Pebble validates after answering")
				require.Eventually(t, func() bool {
					a, err := c.core.Authorizations.Get(authzURL)
					return err == nil && a.Status != acme.StatusPending
				}, 10*time.Second, pollInterval)
			}

			got, err := c.core.Authorizations.Get(authzURL)
			require.NoError(t, err)
			assert.Equal(t, tt.wantAuthz, got.Status, "authorization")
			gotChall := findChallenge(t, got, string(challenge.HTTP01))
			assert.Equal(t, tt.wantChallenge, gotChall.Status, "challenge")
			require.NotNil(t, gotChall.Error)
			if tt.wantError != nil {
				assert.Equal(t, tt.wantError, gotChall.Error)
				assert.Equal(t, tt.wantError, answered.Error)
			} else {
				assert.Equal(t, tt.wantErrorType, gotChall.Error.Type)
			}
			gotOrder, err := c.core.Orders.Get(order.Location)
			require.NoError(t, err)
			assert.Equal(t, tt.wantOrder, gotOrder.Status, "order")
			if tt.wantOrder == acme.StatusPending {
				assert.Nil(t, gotOrder.Error)
			}
			if tt.keep {
				again, err := c.core.Challenges.New(chall.URL)
				require.NoError(t, err, "step-ca answers every POST to a challenge with 200")
				assert.Equal(t, tt.wantChallenge, again.Status)
			}
		})
	}
}

// vaFetches is how many requests Pebble's VA sends per HTTP-01 validation
// (va.concurrentValidations).
const vaFetches = 3

// TestKeepFailedChallengesPendingRevalidates: every POST to the challenge
// URL validates again, POST-as-GET included; polls do not; a validation
// succeeds once the target answers.
func TestKeepFailedChallengesPendingRevalidates(t *testing.T) {
	t.Parallel()
	solver := startHTTP01Server(t) // knows no token yet: 404
	ca := startCA(t, testca.Options{HTTPPort: solver.port()})
	ca.KeepFailedChallengesPending(true)
	c := newAccountClient(t, ca)
	order, err := c.core.Orders.New([]string{"again.example.test"})
	require.NoError(t, err)
	authzURL := order.Authorizations[0]
	authz, err := c.core.Authorizations.Get(authzURL)
	require.NoError(t, err)
	chall := findChallenge(t, authz, string(challenge.HTTP01))

	requests := []struct {
		desc         string
		send         func() (acme.ExtendedChallenge, error)
		wantValidate bool
	}{
		{desc: "POST", send: func() (acme.ExtendedChallenge, error) { return c.core.Challenges.New(chall.URL) }, wantValidate: true},
		{desc: "POST-as-GET", send: func() (acme.ExtendedChallenge, error) { return c.core.Challenges.Get(chall.URL) }, wantValidate: true},
		{desc: "authorization poll", send: func() (acme.ExtendedChallenge, error) {
			a, err := c.core.Authorizations.Get(authzURL)
			return acme.ExtendedChallenge{Challenge: findChallenge(t, a, string(challenge.HTTP01))}, err
		}},
		{desc: "order poll", send: func() (acme.ExtendedChallenge, error) {
			_, err := c.core.Orders.Get(order.Location)
			return acme.ExtendedChallenge{Challenge: acme.Challenge{Status: acme.StatusPending, Error: stepCAConnection}}, err
		}},
	}
	for _, req := range requests {
		before := solver.requestCount()
		got, err := req.send()
		require.NoError(t, err, req.desc)
		assert.Equal(t, acme.StatusPending, got.Status, req.desc)
		assert.Equal(t, stepCAConnection, got.Error, req.desc)
		// Pebble's VA fetches from vaFetches goroutines and settles at the
		// first failure: let the others arrive before counting.
		require.Eventually(t, func() bool { return solver.requestCount()%vaFetches == 0 }, 10*time.Second, pollInterval)
		assert.Equal(t, req.wantValidate, solver.requestCount() > before, "%s validates: %t", req.desc, req.wantValidate)
	}

	keyAuth, err := c.core.GetKeyAuthorization(chall.Token)
	require.NoError(t, err)
	require.NoError(t, solver.Present("", chall.Token, keyAuth))
	answered, err := c.core.Challenges.New(chall.URL)
	require.NoError(t, err)
	assert.Equal(t, acme.StatusValid, answered.Status)
	assert.Nil(t, answered.Error, "a success clears the error")
	got, err := c.core.Orders.Get(order.Location)
	require.NoError(t, err)
	assert.Equal(t, acme.StatusReady, got.Status)
	assert.Equal(t, 3, ca.Stats().Challenges)
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
