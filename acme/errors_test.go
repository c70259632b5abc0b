package acme_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	legoacme "github.com/go-acme/lego/v4/acme"
	"github.com/go-acme/lego/v4/acme/api"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/certfetch/certfetch/acme"
	"github.com/certfetch/certfetch/acme/http01"
	"github.com/certfetch/certfetch/internal/testkit/testca"
)

// TestCAErrors checks that what goes wrong at the CA surfaces as the typed error, and
// that badNonce is retried.
func TestCAErrors(t *testing.T) {
	t.Parallel()

	const name = "errors.example.com"

	tests := []struct {
		desc string
		opts testca.Options
		// prepare runs on the CA after the client registered, and may replace the solver.
		prepare func(t *testing.T, s setup, cfg *acme.Config)
		check   func(t *testing.T, cert *acme.Certificate, err error)
	}{
		{
			desc:    "429 with Retry-After",
			prepare: func(_ *testing.T, s setup, _ *acme.Config) { s.ca.RateLimitNewOrders(1, 7*time.Second) },
			check: func(t *testing.T, _ *acme.Certificate, err error) {
				var rl *acme.RateLimitError
				require.ErrorAs(t, err, &rl)
				assert.Equal(t, 7*time.Second, rl.RetryAfter)
				assert.Equal(t, legoacme.RateLimitedErr, rl.Problem.Type)
			},
		},
		{
			desc: "half the nonces rejected",
			opts: testca.Options{NonceRejectPercent: 50},
			check: func(t *testing.T, cert *acme.Certificate, err error) {
				require.NoError(t, err)
				requireCert(t, cert, name)
			},
		},
		{
			desc: "authorization the CA cannot validate",
			prepare: func(_ *testing.T, _ setup, cfg *acme.Config) {
				cfg.Solver = http01.Stateless{} // the responder never learns the token
			},
			check: func(t *testing.T, _ *acme.Certificate, err error) {
				var ae *acme.AuthorizationError
				require.ErrorAs(t, err, &ae)
				assert.Equal(t, name, ae.Domain)
				assert.Equal(t, "invalid", ae.Status)
				require.NotNil(t, ae.Problem)
				assert.Contains(t, ae.Problem.Detail, "/.well-known/acme-challenge/")
				assert.Contains(t, ae.Problem.Detail, "404")
				assert.Contains(t, err.Error(), name)
			},
		},
		{
			desc:    "CA unavailable",
			prepare: func(_ *testing.T, s setup, _ *acme.Config) { s.ca.SetUnavailable(true) },
			check: func(t *testing.T, _ *acme.Certificate, err error) {
				var ue *acme.UnreachableError
				require.ErrorAs(t, err, &ue)
				assert.Equal(t, 503, ue.StatusCode)
				require.NotNil(t, ue.Problem)
				assert.NotEmpty(t, ue.Problem.Detail)
			},
		},
	}

	for _, test := range tests {
		t.Run(test.desc, func(t *testing.T) {
			t.Parallel()

			s := newSetup(t, test.opts)
			cfg := s.config(t)
			c := s.client(t, cfg)

			if test.prepare != nil {
				test.prepare(t, s, &cfg)
				// A client on the same account with the prepared configuration.
				cfg.Account.URL = c.AccountURL()
				c = s.client(t, cfg)
			}

			req := acme.Request{Names: []string{name}, Profile: testca.DefaultProfile}
			cert, _, err := obtain(t, c, req, 30*time.Second)
			test.check(t, cert, err)

			if err != nil {
				_, lerr := cfg.Journal.Load(context.Background(), req.Key())
				require.ErrorIs(t, lerr, acme.ErrNoRecord, "a failed order must not stay journaled")
			}
		})
	}
}

// TestUnreachable checks the error for a CA nobody answers for.
func TestUnreachable(t *testing.T) {
	t.Parallel()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)

	addr := ln.Addr().String()
	require.NoError(t, ln.Close())

	key, err := acme.GenerateKey(acme.EC256)
	require.NoError(t, err)

	_, err = acme.NewClient(context.Background(), acme.Config{
		DirectoryURL: "https://" + addr + "/dir",
		Account:      acme.Account{Key: key},
		Solver:       http01.Stateless{},
	})

	var ue *acme.UnreachableError
	require.ErrorAs(t, err, &ue)
	assert.Contains(t, ue.URL, addr)
	assert.Zero(t, ue.StatusCode)
}

// TestEAB registers against a CA that requires External Account Binding.
func TestEAB(t *testing.T) {
	t.Parallel()

	const kid = "kid-1"

	hmac := make([]byte, 32)
	_, err := rand.Read(hmac)
	require.NoError(t, err)

	wrong := make([]byte, 32)
	_, err = rand.Read(wrong)
	require.NoError(t, err)

	s := newSetup(t, testca.Options{EABKeys: map[string]string{kid: base64.RawURLEncoding.EncodeToString(hmac)}})

	tests := []struct {
		desc    string
		eab     *acme.EAB
		wantErr bool
	}{
		{desc: "right key, unpadded", eab: &acme.EAB{KID: kid, HMAC: base64.RawURLEncoding.EncodeToString(hmac)}},
		{desc: "right key, padded", eab: &acme.EAB{KID: kid, HMAC: base64.URLEncoding.EncodeToString(hmac)}},
		{desc: "wrong key", eab: &acme.EAB{KID: kid, HMAC: base64.RawURLEncoding.EncodeToString(wrong)}, wantErr: true},
		{desc: "unknown key ID", eab: &acme.EAB{KID: "kid-2", HMAC: base64.RawURLEncoding.EncodeToString(hmac)}, wantErr: true},
		{desc: "no binding", wantErr: true},
	}

	for _, test := range tests {
		t.Run(test.desc, func(t *testing.T) {
			t.Parallel()

			cfg := s.config(t)
			cfg.Account.EAB = test.eab

			c, err := acme.NewClient(context.Background(), cfg)
			if !test.wantErr {
				require.NoError(t, err)
				assert.NotEmpty(t, c.AccountURL())

				return
			}

			var pd *legoacme.ProblemDetails
			require.ErrorAs(t, err, &pd, "the CA's problem must be in the error")
			assert.Contains(t, err.Error(), "register account")

			if test.eab != nil {
				assert.Contains(t, err.Error(), fmt.Sprintf("external account binding (kid %q)", test.eab.KID))
				assert.NotContains(t, err.Error(), test.eab.HMAC, "the HMAC key is a secret")
			}
		})
	}
}

// invalidatingTransport deactivates the order's first authorization just before the
// finalize request goes out, so the CA turns the order invalid during the attempt.
type invalidatingTransport struct {
	next       http.RoundTripper
	deactivate func(authzURL string) error

	mu    sync.Mutex
	authz string
}

func (it *invalidatingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	it.mu.Lock()
	defer it.mu.Unlock()

	switch {
	case strings.Contains(req.URL.Path, "/authZ/") && it.authz == "":
		it.authz = req.URL.String()
	case strings.Contains(req.URL.Path, "/finalize-order/"):
		if err := it.deactivate(it.authz); err != nil {
			return nil, err
		}
	}

	return it.next.RoundTrip(req)
}

func TestOrderInvalid(t *testing.T) {
	t.Parallel()

	s := newSetup(t, testca.Options{})
	cfg := s.config(t)
	c := s.client(t, cfg)

	// The account deactivates its own authorization through lego, behind the engine's back.
	core, err := api.New(s.ca.HTTPClient(), "certfetch-test", s.ca.DirectoryURL(), c.AccountURL(), cfg.Account.Key)
	require.NoError(t, err)

	cfg.Account.URL = c.AccountURL()
	cfg.Transport = &invalidatingTransport{next: cfg.Transport, deactivate: core.Authorizations.Deactivate}
	c = s.client(t, cfg)

	req := acme.Request{Names: []string{"invalid.example.com"}, Profile: testca.DefaultProfile}
	_, _, err = obtain(t, c, req, 30*time.Second)

	var oe *acme.OrderInvalidError
	require.ErrorAs(t, err, &oe)
	assert.Contains(t, oe.OrderURL, "/my-order/")

	_, err = cfg.Journal.Load(context.Background(), req.Key())
	require.ErrorIs(t, err, acme.ErrNoRecord, "an invalid order must be forgotten")
}
