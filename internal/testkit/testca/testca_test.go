package testca_test

import (
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-acme/lego/v4/acme"
	"github.com/go-acme/lego/v4/acme/api"
	"github.com/go-acme/lego/v4/certificate"
	"github.com/go-acme/lego/v4/challenge"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/certfetch/certfetch/internal/testkit/testca"
)

// validityTolerance absorbs the inclusive NotAfter second (Pebble does not
// backdate NotBefore); the minute profile is checked to the second.
const validityTolerance = 2 * time.Second

func TestObtainWithHTTP01(t *testing.T) {
	t.Parallel()
	tests := []struct {
		desc         string
		profile      string
		wantValidity time.Duration
	}{
		{desc: "order without profile gets the default profile", profile: "", wantValidity: testca.DefaultProfileValidity},
		{desc: "default profile", profile: testca.DefaultProfile, wantValidity: testca.DefaultProfileValidity},
		{desc: "shortlived profile", profile: testca.ShortLivedProfile, wantValidity: testca.ShortLivedProfileValidity},
		{desc: "minute profile", profile: testca.MinuteProfile, wantValidity: testca.MinuteProfileValidity},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			t.Parallel()
			solver := startHTTP01Server(t)
			ca := startCA(t, testca.Options{HTTPPort: solver.port()})

			legoClient := newLegoClient(t, ca, solver)
			const domain = "www.example.test"
			res, err := legoClient.Certificate.Obtain(certificate.ObtainRequest{
				Domains: []string{domain}, Bundle: true, Profile: tt.profile,
			})
			require.NoError(t, err)

			assert.Positive(t, solver.servedCount(), "Pebble's VA really fetched the key authorization")
			leaf := verifyChain(t, ca, res.Certificate, domain)
			assert.InDelta(t, tt.wantValidity.Seconds(), leaf.NotAfter.Sub(leaf.NotBefore).Seconds(), validityTolerance.Seconds())
			stats := ca.Stats()
			assert.Equal(t, 1, stats.NewOrders)
			assert.Equal(t, 1, stats.Finalizes)
			assert.Equal(t, 1, stats.CertDownloads)
			assert.Positive(t, stats.AuthzPolls)
		})
	}
}

func TestStatsCountEveryRequestByKind(t *testing.T) {
	t.Parallel()
	ca := startCA(t, testca.Options{AlwaysValid: true})
	c := newAccountClient(t, ca)
	order, csr := c.readyOrder(t, "stats.example.test")
	_, err := c.core.Orders.UpdateForCSR(order.Finalize, csr)
	require.NoError(t, err)
	before := ca.Stats()

	const orderPolls, authzPolls, downloads = 3, 2, 2
	for range orderPolls {
		_, err := c.core.Orders.Get(order.Location)
		require.NoError(t, err)
	}
	for range authzPolls {
		_, err := c.core.Authorizations.Get(order.Authorizations[0])
		require.NoError(t, err)
	}
	waitPolls := 0
	var certURL string
	require.Eventually(t, func() bool {
		waitPolls++
		o, err := c.core.Orders.Get(order.Location)
		certURL = o.Certificate
		return err == nil && certURL != ""
	}, 10*time.Second, pollInterval)
	for range downloads {
		_, _, err := c.core.Certificates.Get(certURL, true)
		require.NoError(t, err)
	}

	after := ca.Stats()
	assert.Equal(t, 1, after.NewAccounts)
	assert.Equal(t, 1, after.NewOrders)
	assert.Equal(t, 1, after.Challenges)
	assert.Equal(t, 1, after.Finalizes)
	assert.Equal(t, orderPolls+waitPolls, after.OrderPolls-before.OrderPolls)
	assert.Equal(t, authzPolls, after.AuthzPolls-before.AuthzPolls)
	assert.Equal(t, downloads, after.CertDownloads)
	assert.Equal(t, c.transport.count(), after.Requests, "every request the client sent, directory and nonces included")
}

func TestAsyncReportsProcessingUntilDelay(t *testing.T) {
	t.Parallel()
	const delay = 2 * time.Second
	ca := startCA(t, testca.Options{Mode: testca.Async, Delay: delay, RetryAfter: 1500 * time.Millisecond, AlwaysValid: true})
	c := newAccountClient(t, ca)
	order, csr := c.readyOrder(t, "async.example.test")

	finalizedAt := time.Now()
	finalized, err := c.core.Orders.UpdateForCSR(order.Finalize, csr)
	require.NoError(t, err)
	assert.Equal(t, acme.StatusProcessing, finalized.Status)
	assert.Empty(t, finalized.Certificate)
	assert.Equal(t, "2", c.transport.lastRetryAfter(order.Finalize), "1.5 s rounds up")

	pollsBefore := ca.Stats().OrderPolls
	processingPolls, valid := pollUntilValid(t, c, order.Location, delay)
	validAt := time.Now()
	assert.GreaterOrEqual(t, validAt.Sub(finalizedAt), delay)
	assert.Positive(t, processingPolls)
	assert.Equal(t, processingPolls+1, ca.Stats().OrderPolls-pollsBefore)
	assert.Empty(t, c.transport.lastRetryAfter(order.Location), "a valid order carries no Retry-After")

	chain, _, err := c.core.Certificates.Get(valid.Certificate, true)
	require.NoError(t, err)
	verifyChain(t, ca, chain, "async.example.test")
}

// pollUntilValid polls the order every pollInterval, asserting that each
// answer before it turns valid is "processing" with Retry-After and no
// certificate. It gives up at twice delay.
func pollUntilValid(t *testing.T, c *client, orderURL string, delay time.Duration) (processingPolls int, valid acme.ExtendedOrder) {
	t.Helper()
	deadline := time.Now().Add(2 * delay)
	ticker := time.NewTicker(pollInterval)
	defer ticker.Stop()
	for {
		o, err := c.core.Orders.Get(orderURL)
		require.NoError(t, err)
		if o.Status == acme.StatusValid {
			require.NotEmpty(t, o.Certificate)
			return processingPolls, o
		}
		processingPolls++
		require.Equal(t, acme.StatusProcessing, o.Status)
		require.Empty(t, o.Certificate)
		require.Equal(t, "2", c.transport.lastRetryAfter(orderURL))
		require.True(t, time.Now().Before(deadline), "order still processing after %s", 2*delay)
		<-ticker.C
	}
}

func TestSyncHoldsFinalize(t *testing.T) {
	t.Parallel()
	const delay = 2 * time.Second
	ca := startCA(t, testca.Options{Mode: testca.Sync, Delay: delay, RetryAfter: 2 * time.Second, AlwaysValid: true})

	t.Run("patient client gets the valid order from finalize", func(t *testing.T) {
		t.Parallel()
		c := newAccountClient(t, ca)
		order, csr := c.readyOrder(t, "sync.example.test")
		start := time.Now()
		finalized, err := c.core.Orders.UpdateForCSR(order.Finalize, csr)
		require.NoError(t, err)
		assert.GreaterOrEqual(t, time.Since(start), delay)
		assert.Equal(t, acme.StatusValid, finalized.Status)
		require.NotEmpty(t, finalized.Certificate)
		chain, _, err := c.core.Certificates.Get(finalized.Certificate, true)
		require.NoError(t, err)
		verifyChain(t, ca, chain, "sync.example.test")
	})

	t.Run("order completes at the CA after the client gave up", func(t *testing.T) {
		t.Parallel()
		c := newAccountClient(t, ca)
		order, csr := c.readyOrder(t, "gaveup.example.test")
		impatientHTTP := ca.HTTPClient()
		impatientHTTP.Timeout = 200 * time.Millisecond // far below delay
		impatient, err := api.New(impatientHTTP, userAgent, ca.DirectoryURL(), c.accountURL, c.key)
		require.NoError(t, err)

		finalizedAt := time.Now()
		_, err = impatient.Orders.UpdateForCSR(order.Finalize, csr)
		require.Error(t, err)

		processingPolls, _ := pollUntilValid(t, c, order.Location, delay)
		assert.GreaterOrEqual(t, time.Since(finalizedAt), delay)
		assert.Positive(t, processingPolls)
	})
}

func TestRateLimitNewOrders(t *testing.T) {
	t.Parallel()
	ca := startCA(t, testca.Options{AlwaysValid: true})
	c := newAccountClient(t, ca)

	ca.RateLimitNewOrders(2, 90*time.Second)
	for range 2 {
		_, err := c.core.Orders.New([]string{"limited.example.test"})
		var limited *acme.RateLimitedError
		require.ErrorAs(t, err, &limited)
		assert.Equal(t, "90", limited.RetryAfter)
		assert.Equal(t, http.StatusTooManyRequests, limited.HTTPStatus)
	}
	order, err := c.core.Orders.New([]string{"limited.example.test"})
	require.NoError(t, err, "the limit covers only the next 2 orders")
	assert.Equal(t, acme.StatusPending, order.Status)
	assert.Equal(t, 3, ca.Stats().NewOrders)
}

func TestSetUnavailable(t *testing.T) {
	t.Parallel()
	ca := startCA(t, testca.Options{AlwaysValid: true})
	c := newAccountClient(t, ca)
	order, err := c.core.Orders.New([]string{"down.example.test"})
	require.NoError(t, err)

	ca.SetUnavailable(true)
	_, err = c.core.Orders.Get(order.Location)
	assert.Equal(t, http.StatusServiceUnavailable, problem(t, err).HTTPStatus)
	resp, err := ca.HTTPClient().Get(ca.DirectoryURL())
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)

	ca.SetUnavailable(false)
	got, err := c.core.Orders.Get(order.Location)
	require.NoError(t, err, "the CA recovers with its orders")
	assert.Equal(t, acme.StatusPending, got.Status)
}

func TestExternalAccountBinding(t *testing.T) {
	t.Parallel()
	const kid, hmacKey = "kid-1", "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W"
	ca := startCA(t, testca.Options{AlwaysValid: true, EABKeys: map[string]string{kid: hmacKey}})
	tests := []struct {
		desc     string
		register func(*client) error
		wantErr  bool
	}{
		{
			desc: "right key registers",
			register: func(c *client) error {
				_, err := c.core.Accounts.NewEAB(acme.Account{TermsOfServiceAgreed: true}, kid, hmacKey)
				return err
			},
		},
		{
			desc: "wrong key fails",
			register: func(c *client) error {
				_, err := c.core.Accounts.NewEAB(acme.Account{TermsOfServiceAgreed: true}, kid, "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXk")
				return err
			},
			wantErr: true,
		},
		{
			desc: "unknown kid fails",
			register: func(c *client) error {
				_, err := c.core.Accounts.NewEAB(acme.Account{TermsOfServiceAgreed: true}, "kid-unknown", hmacKey)
				return err
			},
			wantErr: true,
		},
		{
			desc: "no binding fails",
			register: func(c *client) error {
				_, err := c.core.Accounts.New(acme.Account{TermsOfServiceAgreed: true})
				return err
			},
			wantErr: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			t.Parallel()
			err := tt.register(newClient(t, ca))
			if tt.wantErr {
				assert.Error(t, err)
				return
			}
			assert.NoError(t, err)
		})
	}
	assert.True(t, newClient(t, ca).core.GetDirectory().Meta.ExternalAccountRequired)
}

func TestForgetOrder(t *testing.T) {
	t.Parallel()
	ca := startCA(t, testca.Options{AlwaysValid: true})
	c := newAccountClient(t, ca)
	forgotten, err := c.core.Orders.New([]string{"gone.example.test"})
	require.NoError(t, err)
	kept, err := c.core.Orders.New([]string{"kept.example.test"})
	require.NoError(t, err)

	require.NoError(t, ca.ForgetOrder(forgotten.Location))

	_, err = c.core.Orders.Get(forgotten.Location)
	prob := problem(t, err)
	assert.Equal(t, http.StatusNotFound, prob.HTTPStatus)
	assert.Equal(t, "urn:ietf:params:acme:error:malformed", prob.Type)
	_, err = c.core.Orders.UpdateForCSR(forgotten.Finalize, newCSR(t, "gone.example.test"))
	assert.Equal(t, http.StatusNotFound, problem(t, err).HTTPStatus, "finalize URL is gone too")
	_, err = c.core.Orders.Get(kept.Location)
	assert.NoError(t, err, "other orders stay")

	assert.Error(t, ca.ForgetOrder(ca.DirectoryURL()), "not an order URL")
}

func TestRenewalWindow(t *testing.T) {
	t.Parallel()
	ca := startCA(t, testca.Options{AlwaysValid: true})
	c := newAccountClient(t, ca)
	const domain = "ari.example.test"
	leaf := verifyChain(t, ca, c.issue(t, domain), domain)
	renewalInfo := func() acme.Window {
		t.Helper()
		// lego's Certifier needs only the core for ARI.
		info, err := certificate.NewCertifier(c.core, nil, certificate.CertifierOptions{}).
			GetRenewalInfo(certificate.RenewalInfoRequest{Cert: leaf})
		require.NoError(t, err)
		return info.SuggestedWindow
	}

	pebbleWindow := renewalInfo()
	assert.True(t, pebbleWindow.Start.After(leaf.NotBefore), "Pebble's own window lies inside the validity")

	start := time.Now().Add(-time.Hour).Truncate(time.Second).UTC()
	end := start.Add(2 * time.Hour)
	ca.SetRenewalWindow(start, end)
	forced := renewalInfo()
	assert.True(t, start.Equal(forced.Start), "start %s, want %s", forced.Start, start)
	assert.True(t, end.Equal(forced.End), "end %s, want %s", forced.End, end)

	ca.ClearRenewalWindow()
	assert.Equal(t, pebbleWindow, renewalInfo())
}

func TestTLSRoot(t *testing.T) {
	t.Parallel()
	ca := startCA(t, testca.Options{AlwaysValid: true})
	path, err := ca.WriteTLSRoot(t.TempDir())
	require.NoError(t, err)
	assert.Equal(t, testca.TLSRootFileName, filepath.Base(path))
	written, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, ca.TLSRootPEM(), written)

	block, _ := pem.Decode(written)
	require.NotNil(t, block)
	root, err := x509.ParseCertificate(block.Bytes)
	require.NoError(t, err)
	assert.True(t, root.IsCA)

	resp, err := ca.HTTPClient().Get(ca.DirectoryURL())
	require.NoError(t, err, "HTTPClient trusts the root")
	require.NoError(t, resp.Body.Close())
	assert.Equal(t, http.StatusOK, resp.StatusCode)

	_, err = http.DefaultClient.Get(ca.DirectoryURL())
	assert.Error(t, err, "the system roots do not know the test root")
}

func TestStartRejectsInvalidOptions(t *testing.T) {
	t.Parallel()
	tests := []struct {
		desc string
		opts testca.Options
	}{
		{desc: "no HTTP port and not always valid", opts: testca.Options{}},
		{desc: "HTTP port out of range", opts: testca.Options{HTTPPort: 70000}},
		{desc: "negative delay", opts: testca.Options{AlwaysValid: true, Delay: -time.Second}},
		{desc: "negative retry-after", opts: testca.Options{AlwaysValid: true, RetryAfter: -time.Second}},
		{desc: "unknown mode", opts: testca.Options{AlwaysValid: true, Mode: testca.Sync + 1}},
		{desc: "nonce reject 100", opts: testca.Options{AlwaysValid: true, NonceRejectPercent: 100}},
		{desc: "authz reuse negative", opts: testca.Options{AlwaysValid: true, AuthzReusePercent: -1}},
		{desc: "EAB key not base64url", opts: testca.Options{AlwaysValid: true, EABKeys: map[string]string{"kid": "not base64!"}}},
		{desc: "DNS server without a port", opts: testca.Options{DNSServer: "127.0.0.1"}},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			t.Parallel()
			ca, err := testca.Start(tt.opts)
			assert.Error(t, err)
			assert.Nil(t, ca)
		})
	}
}

// TestAmbientPebbleEnvironment is not parallel: it sets process environment
// variables (Go runs it before every parallel test).
func TestAmbientPebbleEnvironment(t *testing.T) {
	t.Setenv("PEBBLE_VA_ALWAYS_VALID", "1")
	t.Setenv("PEBBLE_WFE_NONCEREJECT", "99")
	solver := startHTTP01Server(t) // knows no token: every validation fails
	ca := startCA(t, testca.Options{HTTPPort: solver.port()})
	assert.Equal(t, "1", os.Getenv("PEBBLE_VA_ALWAYS_VALID"), "Start restores the environment")
	assert.Equal(t, "99", os.Getenv("PEBBLE_WFE_NONCEREJECT"))
	_, set := os.LookupEnv("PEBBLE_VA_NOSLEEP")
	assert.False(t, set, "Start leaves no variable of its own behind")

	c := newAccountClient(t, ca)
	before := c.transport.count()
	order, err := c.core.Orders.New([]string{"ambient.example.test"})
	require.NoError(t, err)
	assert.Equal(t, 1, c.transport.count()-before, "no badNonce retry: NonceRejectPercent 0 wins over the environment")

	authz, err := c.core.Authorizations.Get(order.Authorizations[0])
	require.NoError(t, err)
	_, err = c.core.Challenges.New(findChallenge(t, authz, string(challenge.HTTP01)).URL)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		authz, err := c.core.Authorizations.Get(order.Authorizations[0])
		return err == nil && authz.Status == acme.StatusInvalid
	}, 10*time.Second, pollInterval, "the VA validated for real and failed: AlwaysValid false wins over the environment")
}

// TestNoAuthzReuse: with AuthzReusePercent 0 (the default), every new order for a name
// the account holds a valid authorization for comes with a pending one. Pebble alone
// reuses the valid one for about 1 order in 100 at 0%; 500 orders would all have come
// out pending only 0.7% of the time. The valid authorization stays valid, and the
// order it completed stays ready.
func TestNoAuthzReuse(t *testing.T) {
	t.Parallel()
	ca := startCA(t, testca.Options{AlwaysValid: true})
	c := newAccountClient(t, ca)
	const domain = "reuse.example.test"
	first, _ := c.readyOrder(t, domain)

	for i := range 500 {
		order, err := c.core.Orders.New([]string{domain})
		require.NoError(t, err)
		require.Equal(t, acme.StatusPending, order.Status, "order %d reused a valid authorization", i)
	}
	ready, err := c.core.Orders.Get(first.Location)
	require.NoError(t, err)
	assert.Equal(t, acme.StatusReady, ready.Status)
}
