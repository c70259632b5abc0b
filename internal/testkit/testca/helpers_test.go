package testca_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-acme/lego/v4/acme"
	"github.com/go-acme/lego/v4/acme/api"
	"github.com/go-acme/lego/v4/certcrypto"
	"github.com/go-acme/lego/v4/challenge"
	"github.com/go-acme/lego/v4/lego"
	"github.com/go-acme/lego/v4/registration"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/certfetch/certfetch/internal/testkit/testca"
)

const userAgent = "certfetch-testca-test"

// pollInterval paces the tests' own polling loops: short enough that a 2 s
// delay is measured to within a few percent, long enough not to load the CA.
const pollInterval = 50 * time.Millisecond

// startCA starts a CA that the test closes on cleanup.
func startCA(t *testing.T, opts testca.Options) *testca.CA {
	t.Helper()
	ca, err := testca.Start(opts)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, ca.Close()) })
	return ca
}

// recordingTransport counts the requests a client sends and remembers the
// last Retry-After header and status code per URL (lego's Orders.Get drops
// the first, and lego never shows the second).
type recordingTransport struct {
	next http.RoundTripper

	mu         sync.Mutex
	requests   int
	retryAfter map[string]string
	status     map[string]int
}

func (rt *recordingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := rt.next.RoundTrip(req)
	rt.mu.Lock()
	defer rt.mu.Unlock()
	rt.requests++
	if err == nil {
		rt.retryAfter[req.URL.String()] = resp.Header.Get("Retry-After")
		rt.status[req.URL.String()] = resp.StatusCode
	}
	return resp, err
}

func (rt *recordingTransport) lastStatus(url string) int {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	return rt.status[url]
}

func (rt *recordingTransport) lastRetryAfter(url string) string {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	return rt.retryAfter[url]
}

func (rt *recordingTransport) count() int {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	return rt.requests
}

// client is a lego low-level ACME client with its account key.
type client struct {
	core       *api.Core
	key        crypto.Signer
	accountURL string // empty until registered
	transport  *recordingTransport
}

// newClient creates a client without an account.
func newClient(t *testing.T, ca *testca.CA) *client {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	return newClientWithKey(t, ca, key)
}

// newClientWithKey creates a client for an account key, that signs with the
// key itself (JWK) until it registers: how a client that lost its account
// URL, or was told the account does not exist, starts again.
func newClientWithKey(t *testing.T, ca *testca.CA, key crypto.Signer) *client {
	t.Helper()
	httpClient := ca.HTTPClient()
	transport := &recordingTransport{next: httpClient.Transport, retryAfter: map[string]string{}, status: map[string]int{}}
	httpClient.Transport = transport
	core, err := api.New(httpClient, userAgent, ca.DirectoryURL(), "", key)
	require.NoError(t, err)
	return &client{core: core, key: key, transport: transport}
}

// newAccountClient creates a client with a registered account.
func newAccountClient(t *testing.T, ca *testca.CA) *client {
	t.Helper()
	c := newClient(t, ca)
	account, err := c.core.Accounts.New(acme.Account{TermsOfServiceAgreed: true})
	require.NoError(t, err)
	c.accountURL = account.Location
	return c
}

// readyOrder creates an order for domain, solves its authorizations on an
// AlwaysValid CA and returns the order once it is ready, with a CSR for it.
func (c *client) readyOrder(t *testing.T, domain string) (acme.ExtendedOrder, []byte) {
	t.Helper()
	order := c.readyOrderWithProfile(t, domain, "")
	return order, newCSR(t, domain)
}

// readyOrderWithProfile is readyOrder for an order that names profile ("":
// none), without the CSR.
func (c *client) readyOrderWithProfile(t *testing.T, domain, profile string) acme.ExtendedOrder {
	t.Helper()
	order, err := c.core.Orders.NewWithOptions([]string{domain}, &api.OrderOptions{Profile: profile})
	require.NoError(t, err)
	for _, authzURL := range order.Authorizations {
		authz, err := c.core.Authorizations.Get(authzURL)
		require.NoError(t, err)
		chall := findChallenge(t, authz, string(challenge.HTTP01))
		_, err = c.core.Challenges.New(chall.URL)
		require.NoError(t, err)
		require.Eventually(t, func() bool {
			authz, err := c.core.Authorizations.Get(authzURL)
			return err == nil && authz.Status == acme.StatusValid
		}, 10*time.Second, pollInterval, "authorization %s never became valid", authzURL)
	}
	ready, err := c.core.Orders.Get(order.Location)
	require.NoError(t, err)
	require.Equal(t, acme.StatusReady, ready.Status)
	return order
}

// finalize finalizes a ready order with csr on an Instant CA and returns
// its certificate URL.
func (c *client) finalize(t *testing.T, order acme.ExtendedOrder, csr []byte) string {
	t.Helper()
	_, err := c.core.Orders.UpdateForCSR(order.Finalize, csr)
	require.NoError(t, err)
	var certURL string
	require.Eventually(t, func() bool {
		o, err := c.core.Orders.Get(order.Location)
		certURL = o.Certificate
		return err == nil && o.Status == acme.StatusValid
	}, 10*time.Second, pollInterval)
	return certURL
}

func findChallenge(t *testing.T, authz acme.Authorization, challengeType string) acme.Challenge {
	t.Helper()
	for _, chall := range authz.Challenges {
		if chall.Type == challengeType {
			return chall
		}
	}
	require.FailNow(t, "no challenge of the wanted type", "type %s in %+v", challengeType, authz.Challenges)
	return acme.Challenge{}
}

func newCSR(t *testing.T, domain string) []byte {
	t.Helper()
	csr, _ := newCSRWithKey(t, domain)
	return csr
}

// newCSRWithKey returns a CSR for domain and the P-256 key it carries.
func newCSRWithKey(t *testing.T, domain string) ([]byte, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	csr, err := certcrypto.CreateCSR(key, certcrypto.CSROptions{Domain: domain, SAN: []string{domain}})
	require.NoError(t, err)
	return csr, key
}

// issue runs a whole order on an AlwaysValid Instant CA and returns the
// issued chain (leaf first) as PEM.
func (c *client) issue(t *testing.T, domain string) []byte {
	t.Helper()
	return c.issueWithProfile(t, domain, "")
}

// issueWithProfile is issue for an order that names profile.
func (c *client) issueWithProfile(t *testing.T, domain, profile string) []byte {
	t.Helper()
	order := c.readyOrderWithProfile(t, domain, profile)
	certURL := c.finalize(t, order, newCSR(t, domain))
	chain, _, err := c.core.Certificates.Get(certURL, true)
	require.NoError(t, err)
	return chain
}

// verifyChain checks that chainPEM (leaf first) verifies against the CA's
// issuer roots for domain, and returns the leaf.
func verifyChain(t *testing.T, ca *testca.CA, chainPEM []byte, domain string) *x509.Certificate {
	t.Helper()
	certs, err := certcrypto.ParsePEMBundle(chainPEM)
	require.NoError(t, err)
	require.NotEmpty(t, certs)
	rootsPEM, err := ca.IssuerRootsPEM()
	require.NoError(t, err)
	roots := x509.NewCertPool()
	require.True(t, roots.AppendCertsFromPEM(rootsPEM))
	intermediates := x509.NewCertPool()
	for _, cert := range certs[1:] {
		intermediates.AddCert(cert)
	}
	_, err = certs[0].Verify(x509.VerifyOptions{DNSName: domain, Roots: roots, Intermediates: intermediates})
	require.NoError(t, err)
	return certs[0]
}

// problem returns the ACME problem document err carries.
func problem(t *testing.T, err error) *acme.ProblemDetails {
	t.Helper()
	var prob *acme.ProblemDetails
	require.ErrorAs(t, err, &prob)
	return prob
}

// http01Server answers HTTP-01 challenges on a listener bound before the CA
// starts, so that the CA's HTTPPort is known without a race. It implements
// lego's challenge.Provider.
type http01Server struct {
	listener net.Listener
	mu       sync.Mutex
	keyAuths map[string]string // token -> key authorization
	served   int               // key authorizations served
	requests int               // every request
}

func startHTTP01Server(t *testing.T) *http01Server {
	t.Helper()
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	s := &http01Server{listener: listener, keyAuths: map[string]string{}}
	server := &http.Server{Handler: s, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = server.Serve(listener) }() // returns ErrServerClosed on Close
	t.Cleanup(func() { _ = server.Close() })
	return s
}

func (s *http01Server) port() int { return s.listener.Addr().(*net.TCPAddr).Port }

func (s *http01Server) requestCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests
}

func (s *http01Server) servedCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.served
}

func (s *http01Server) Present(_, token, keyAuth string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keyAuths[token] = keyAuth
	return nil
}

func (s *http01Server) CleanUp(_, token, _ string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.keyAuths, token)
	return nil
}

func (s *http01Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	token, ok := strings.CutPrefix(r.URL.Path, "/.well-known/acme-challenge/")
	s.mu.Lock()
	s.requests++
	keyAuth, known := s.keyAuths[token]
	if ok && known {
		s.served++
	}
	s.mu.Unlock()
	if !ok || !known {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	_, _ = w.Write([]byte(keyAuth))
}

// legoUser is the account lego's high-level client works with.
type legoUser struct {
	key          crypto.PrivateKey
	registration *registration.Resource
}

func (u *legoUser) GetEmail() string                        { return "" }
func (u *legoUser) GetRegistration() *registration.Resource { return u.registration }
func (u *legoUser) GetPrivateKey() crypto.PrivateKey        { return u.key }

// newLegoClient returns lego's high-level client with a registered account,
// solving HTTP-01 with solver.
func newLegoClient(t *testing.T, ca *testca.CA, solver *http01Server) *lego.Client {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	user := &legoUser{key: key}
	config := lego.NewConfig(user)
	config.CADirURL = ca.DirectoryURL()
	config.HTTPClient = ca.HTTPClient()
	config.Certificate.KeyType = certcrypto.EC256
	legoClient, err := lego.NewClient(config)
	require.NoError(t, err)
	require.NoError(t, legoClient.Challenge.SetHTTP01Provider(solver))
	user.registration, err = legoClient.Registration.Register(registration.RegisterOptions{TermsOfServiceAgreed: true})
	require.NoError(t, err)
	return legoClient
}
