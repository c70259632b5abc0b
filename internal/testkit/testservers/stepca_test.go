package testservers

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-acme/lego/v4/acme"
	"github.com/go-acme/lego/v4/acme/api"
	"github.com/go-acme/lego/v4/certcrypto"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// stepCAConnection is the problem step-ca v0.30.2 stores on an HTTP-01
// challenge whose key authorization it could not fetch.
var stepCAConnection = &acme.ProblemDetails{
	Type:   "urn:ietf:params:acme:error:connection",
	Detail: "The server could not connect to validation target",
}

// stepCARejected is the problem it stores when the key authorization it
// fetched does not match.
var stepCARejected = &acme.ProblemDetails{
	Type:   "urn:ietf:params:acme:error:rejectedIdentifier",
	Detail: "The server will not issue certificates for the identifier",
}

// TestStepCAKeepsFailedChallengePending records, with lego's low-level ACME
// client, what step-ca does when HTTP-01 validation fails (StartStepCA's doc
// comment states it).
func TestStepCAKeepsFailedChallengePending(t *testing.T) {
	t.Parallel()
	tests := []struct {
		desc string
		// target answers HTTP-01 (nil: none, port 80 of 127.0.0.1 is closed).
		target func(token, keyAuth string) http.Handler
		// want* are the states after the challenge POST, and ever after.
		wantChallenge, wantAuthz, wantOrder string
		wantError                           *acme.ProblemDetails
	}{
		{
			desc:          "port 80 closed: pending, connection error",
			wantChallenge: acme.StatusPending, wantAuthz: acme.StatusPending, wantOrder: acme.StatusPending,
			wantError: stepCAConnection,
		},
		{
			desc:          "target answers 404: pending, connection error",
			target:        func(string, string) http.Handler { return http.NotFoundHandler() },
			wantChallenge: acme.StatusPending, wantAuthz: acme.StatusPending, wantOrder: acme.StatusPending,
			wantError: stepCAConnection,
		},
		{
			desc: "wrong key authorization: challenge invalid, authorization and order pending",
			target: func(token, _ string) http.Handler {
				return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, token+".wrong") })
			},
			wantChallenge: acme.StatusInvalid, wantAuthz: acme.StatusPending, wantOrder: acme.StatusPending,
			wantError: stepCARejected,
		},
		{
			desc: "right key authorization: valid, ready",
			target: func(_, keyAuth string) http.Handler {
				return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, keyAuth) })
			},
			wantChallenge: acme.StatusValid, wantAuthz: acme.StatusValid, wantOrder: acme.StatusReady,
		},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			t.Parallel()
			var opts StepCAOptions
			target := &switchableHandler{}
			if tt.target != nil {
				opts.HTTPPort = serveHTTP(t, target)
			}
			ca := StartStepCA(t, opts)
			c := newStepCAClient(t, ca)
			order, err := c.core.Orders.New([]string{"validation.example.test"})
			require.NoError(t, err)
			authzURL := order.Authorizations[0]
			authz, err := c.core.Authorizations.Get(authzURL)
			require.NoError(t, err)
			chall := httpChallenge(t, authz)
			if tt.target != nil {
				keyAuth, err := c.core.GetKeyAuthorization(chall.Token)
				require.NoError(t, err)
				target.set(tt.target(chall.Token, keyAuth))
			}

			posted, err := c.core.Challenges.New(chall.URL)
			require.NoError(t, err, "step-ca answers 200 whatever the validation's outcome")
			assert.Equal(t, tt.wantChallenge, posted.Status, "validated before the answer")
			assert.Equal(t, tt.wantError, posted.Error)
			if tt.wantError != nil {
				assert.NotContains(t, c.raw.last(chall.URL), `"status":400`, "the problem has no status member")
			}

			// Nothing changes over time: step-ca does not retry on its own.
			for poll := range 3 {
				if poll > 0 {
					time.Sleep(500 * time.Millisecond)
				}
				got, err := c.core.Authorizations.Get(authzURL)
				require.NoError(t, err)
				assert.Equal(t, tt.wantAuthz, got.Status, "authorization, poll %d", poll)
				assert.Equal(t, tt.wantChallenge, httpChallenge(t, got).Status, "challenge in the authorization, poll %d", poll)
				assert.Equal(t, tt.wantError, httpChallenge(t, got).Error, "poll %d", poll)
				assert.NotContains(t, topLevelKeys(t, c.raw.last(authzURL)), "error", "the authorization itself has no error")
				gotOrder, err := c.core.Orders.Get(order.Location)
				require.NoError(t, err)
				assert.Equal(t, tt.wantOrder, gotOrder.Status, "order, poll %d", poll)
				assert.Nil(t, gotOrder.Error, "the order has no error")
			}

			before := target.count()
			again, err := c.core.Challenges.New(chall.URL)
			require.NoError(t, err)
			assert.Equal(t, tt.wantChallenge, again.Status, "a new POST")
			if tt.target != nil && tt.wantChallenge != acme.StatusPending {
				assert.Equal(t, before, target.count(), "a challenge no longer pending is not validated again")
			}
		})
	}
}

// TestStepCARevalidatesOnEveryChallengePost: each POST to the challenge URL
// (POST-as-GET included) validates again; polls of the authorization and
// the order do not; once the target answers, the next POST succeeds and a
// certificate can be issued, valid for StepCAOptions.CertDuration.
func TestStepCARevalidatesOnEveryChallengePost(t *testing.T) {
	t.Parallel()
	target := &switchableHandler{}
	target.set(http.NotFoundHandler())
	const certDuration = 2 * time.Minute
	ca := StartStepCA(t, StepCAOptions{HTTPPort: serveHTTP(t, target), CertDuration: certDuration})
	c := newStepCAClient(t, ca)
	const domain = "again.example.test"
	order, err := c.core.Orders.New([]string{domain})
	require.NoError(t, err)
	authzURL := order.Authorizations[0]
	authz, err := c.core.Authorizations.Get(authzURL)
	require.NoError(t, err)
	chall := httpChallenge(t, authz)

	requests := []struct {
		desc         string
		send         func() error
		wantValidate bool
	}{
		{desc: "POST {}", send: func() error { _, err := c.core.Challenges.New(chall.URL); return err }, wantValidate: true},
		{desc: "POST-as-GET", send: func() error { _, err := c.core.Challenges.Get(chall.URL); return err }, wantValidate: true},
		{desc: "authorization poll", send: func() error { _, err := c.core.Authorizations.Get(authzURL); return err }},
		{desc: "order poll", send: func() error { _, err := c.core.Orders.Get(order.Location); return err }},
		{desc: "POST {} again", send: func() error { _, err := c.core.Challenges.New(chall.URL); return err }, wantValidate: true},
	}
	for _, req := range requests {
		before := target.count()
		require.NoError(t, req.send(), req.desc)
		want := before
		if req.wantValidate {
			want++ // step-ca sends one GET per validation
		}
		assert.Equal(t, want, target.count(), req.desc)
	}

	keyAuth, err := c.core.GetKeyAuthorization(chall.Token)
	require.NoError(t, err)
	target.set(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, keyAuth) }))
	posted, err := c.core.Challenges.New(chall.URL)
	require.NoError(t, err)
	assert.Equal(t, acme.StatusValid, posted.Status)
	assert.Nil(t, posted.Error, "success clears the error")
	ready, err := c.core.Orders.Get(order.Location)
	require.NoError(t, err)
	require.Equal(t, acme.StatusReady, ready.Status)

	certKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	csr, err := certcrypto.CreateCSR(certKey, certcrypto.CSROptions{Domain: domain})
	require.NoError(t, err)
	finalized, err := c.core.Orders.UpdateForCSR(order.Finalize, csr)
	require.NoError(t, err)
	require.Equal(t, acme.StatusValid, finalized.Status, "step-ca signs during finalize")
	chainPEM, _, err := c.core.Certificates.Get(finalized.Certificate, true)
	require.NoError(t, err)
	chain, err := certcrypto.ParsePEMBundle(chainPEM)
	require.NoError(t, err)
	require.Len(t, chain, 2, "leaf and intermediate")
	roots := x509.NewCertPool()
	require.True(t, roots.AppendCertsFromPEM(ca.RootPEM))
	intermediates := x509.NewCertPool()
	intermediates.AddCert(chain[1])
	_, err = chain[0].Verify(x509.VerifyOptions{DNSName: domain, Roots: roots, Intermediates: intermediates})
	require.NoError(t, err)
	assert.WithinDuration(t, time.Now().Add(certDuration), chain[0].NotAfter, 30*time.Second)
}

// TestStepCAKillAndStart: the database survives a crash, like Redis's and
// etcd's data.
func TestStepCAKillAndStart(t *testing.T) {
	t.Parallel()
	ca := StartStepCA(t, StepCAOptions{})
	c := newStepCAClient(t, ca)
	order, err := c.core.Orders.New([]string{"restart.example.test"})
	require.NoError(t, err)

	ca.Kill()
	_, err = c.core.Orders.Get(order.Location)
	require.Error(t, err, "a killed CA does not answer")
	ca.Start()
	got, err := c.core.Orders.Get(order.Location)
	require.NoError(t, err, "same URL, same account, same order")
	assert.Equal(t, acme.StatusPending, got.Status)
}

// TestStepCABinRequired: without STEPCA_BIN the test fails (never skips)
// and says to run it through make. Not parallel: it sets the environment.
func TestStepCABinRequired(t *testing.T) {
	tests := []struct {
		desc, value, want string
	}{
		{desc: "unset", value: "", want: "run the tests through make"},
		{desc: "missing file", value: "/nonexistent/step-ca", want: "make test-go"},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			t.Setenv(StepCABinEnv, tt.value)
			tb := &fatalTB{TB: t}
			assert.Empty(t, stepCABin(tb))
			assert.Contains(t, tb.msg, tt.want)
			assert.Contains(t, tb.msg, StepCABinEnv)
		})
	}
}

// stepCAClient is lego's low-level ACME client with a registered account.
type stepCAClient struct {
	core *api.Core
	raw  *rawBodies
}

func newStepCAClient(t *testing.T, ca *StepCA) stepCAClient {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	httpClient := ca.HTTPClient()
	raw := &rawBodies{next: httpClient.Transport, bodies: map[string]string{}}
	httpClient.Transport = raw
	httpClient.Timeout = 30 * time.Second
	core, err := api.New(httpClient, "certfetch-testservers", ca.DirectoryURL, "", key)
	require.NoError(t, err)
	_, err = core.Accounts.New(acme.Account{TermsOfServiceAgreed: true})
	require.NoError(t, err)
	return stepCAClient{core: core, raw: raw}
}

func httpChallenge(t *testing.T, authz acme.Authorization) acme.Challenge {
	t.Helper()
	for _, chall := range authz.Challenges {
		if chall.Type == "http-01" {
			return chall
		}
	}
	require.FailNow(t, "no http-01 challenge", "%+v", authz.Challenges)
	return acme.Challenge{}
}

// rawBodies remembers the last response body per URL: lego's types drop
// members (an authorization's "error", a problem's absent "status").
type rawBodies struct {
	next   http.RoundTripper
	mu     sync.Mutex
	bodies map[string]string
}

func (rb *rawBodies) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := rb.next.RoundTrip(req)
	if err != nil {
		return resp, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	rb.mu.Lock()
	defer rb.mu.Unlock()
	rb.bodies[req.URL.String()] = string(body)
	return resp, nil
}

func (rb *rawBodies) last(url string) string {
	rb.mu.Lock()
	defer rb.mu.Unlock()
	return rb.bodies[url]
}

// topLevelKeys returns the member names of a JSON object.
func topLevelKeys(t *testing.T, body string) []string {
	t.Helper()
	var object map[string]json.RawMessage
	require.NoError(t, json.Unmarshal([]byte(body), &object), body)
	keys := make([]string, 0, len(object))
	for k := range object {
		keys = append(keys, k)
	}
	return keys
}

// switchableHandler is an HTTP-01 target whose answer a test changes, and
// that counts the requests it gets.
type switchableHandler struct {
	mu       sync.Mutex
	handler  http.Handler
	requests int
}

func (s *switchableHandler) set(h http.Handler) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.handler = h
}

func (s *switchableHandler) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests
}

func (s *switchableHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.requests++
	h := s.handler
	s.mu.Unlock()
	if h == nil || !strings.HasPrefix(r.URL.Path, "/.well-known/acme-challenge/") {
		http.NotFound(w, r)
		return
	}
	h.ServeHTTP(w, r)
}

// serveHTTP serves h on a free loopback port until the test ends and
// returns the port.
func serveHTTP(t *testing.T, h http.Handler) int {
	t.Helper()
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	server := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = server.Serve(listener) }() // returns ErrServerClosed on Close
	t.Cleanup(func() { _ = server.Close() })
	return listener.Addr().(*net.TCPAddr).Port
}
