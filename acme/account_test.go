package acme_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"math/big"
	"sync"
	"testing"
	"time"

	"github.com/go-acme/lego/v4/certcrypto"
	"github.com/go-acme/lego/v4/challenge"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/certfetch/certfetch/acme"
	"github.com/certfetch/certfetch/internal/testkit/testca"
)

// rfc7638 computes the JWK thumbprint of an EC or RSA public key by the letter of
// RFC 7638 §3 (required members, lexicographic order, no whitespace), independently of
// the engine's go-jose.
func rfc7638(t *testing.T, pub any) string {
	t.Helper()

	b64 := base64.RawURLEncoding.EncodeToString

	var jwk string

	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		size := (k.Curve.Params().BitSize + 7) / 8
		jwk = fmt.Sprintf(`{"crv":%q,"kty":"EC","x":%q,"y":%q}`, k.Curve.Params().Name,
			b64(k.X.FillBytes(make([]byte, size))), b64(k.Y.FillBytes(make([]byte, size))))
	case *rsa.PublicKey:
		jwk = fmt.Sprintf(`{"e":%q,"kty":"RSA","n":%q}`, b64(big.NewInt(int64(k.E)).Bytes()), b64(k.N.Bytes()))
	default:
		t.Fatalf("unexpected key type %T", pub)
	}

	sum := sha256.Sum256([]byte(jwk))

	return b64(sum[:])
}

func TestAccount(t *testing.T) {
	t.Parallel()

	s := newSetup(t, testca.Options{})

	tests := []struct {
		desc    string
		keyType acme.KeyType
	}{
		{desc: "EC P-256 account key", keyType: acme.EC256},
		{desc: "RSA account key", keyType: acme.RSA2048},
	}

	for _, test := range tests {
		t.Run(test.desc, func(t *testing.T) {
			t.Parallel()

			key, err := acme.GenerateKey(test.keyType)
			require.NoError(t, err)

			// The caller persists the key; a parsed copy must be the same account.
			parsed, err := acme.ParseKey(acme.MarshalKey(key))
			require.NoError(t, err)

			cfg := s.config(t)
			cfg.Account.Key = key
			c := s.client(t, cfg)
			assert.NotEmpty(t, c.AccountURL())
			assert.Equal(t, rfc7638(t, key.Public()), c.Thumbprint())

			offline, err := acme.Thumbprint(parsed)
			require.NoError(t, err)
			assert.Equal(t, c.Thumbprint(), offline, "the thumbprint needs no CA")

			cfg.Account.Key = parsed
			again := s.client(t, cfg)
			assert.Equal(t, c.AccountURL(), again.AccountURL(), "a known key registers as the existing account")
		})
	}
}

func TestAccountURLReused(t *testing.T) {
	t.Parallel()

	s := newSetup(t, testca.Options{})
	cfg := s.config(t)
	first := s.client(t, cfg)

	cfg.Account.URL = first.AccountURL()
	before := s.ca.Stats().Requests
	c := s.client(t, cfg)
	assert.Equal(t, before, s.ca.Stats().Requests, "a known account URL needs no registration")

	cert, _, err := obtain(t, c, acme.Request{Names: []string{"reuse.example.com"}, Profile: testca.DefaultProfile}, 30*time.Second)
	require.NoError(t, err)
	requireCert(t, cert, "reuse.example.com")
}

// recordingSolver remembers the key authorizations it published.
type recordingSolver struct {
	challenge.Provider

	mu       sync.Mutex
	keyAuths map[string]string // token -> key authorization
}

func (r *recordingSolver) Present(domain, token, keyAuth string) error {
	r.mu.Lock()
	r.keyAuths[token] = keyAuth
	r.mu.Unlock()

	return r.Provider.Present(domain, token, keyAuth)
}

// TestCertificateOptions obtains certificates with each option of Request from one client
// used concurrently.
func TestCertificateOptions(t *testing.T) {
	t.Parallel()

	s := newSetup(t, testca.Options{})
	cfg := s.config(t)
	solver := &recordingSolver{Provider: s.responder, keyAuths: map[string]string{}}
	cfg.Solver = solver
	c := s.client(t, cfg)

	rootsPEM, err := s.ca.IssuerRootsPEM()
	require.NoError(t, err)

	roots, err := certcrypto.ParsePEMBundle(rootsPEM)
	require.NoError(t, err)

	root := roots[0].Subject.CommonName

	tests := []struct {
		desc  string
		req   acme.Request
		check func(t *testing.T, cert *acme.Certificate)
	}{
		{desc: "default key type is EC P-256", req: acme.Request{}, check: ecKey(256)},
		{desc: "EC384", req: acme.Request{KeyType: acme.EC384}, check: ecKey(384)},
		{desc: "RSA2048", req: acme.Request{KeyType: acme.RSA2048}, check: rsaKey(2048)},
		{desc: "RSA3072", req: acme.Request{KeyType: acme.RSA3072}, check: rsaKey(3072)},
		{desc: "RSA4096", req: acme.Request{KeyType: acme.RSA4096}, check: rsaKey(4096)},
		{
			desc: "shortlived profile",
			req:  acme.Request{Profile: testca.ShortLivedProfile},
			check: func(t *testing.T, cert *acme.Certificate) {
				assert.InDelta(t, testca.ShortLivedProfileValidity.Hours(), cert.Leaf.NotAfter.Sub(cert.Leaf.NotBefore).Hours(), 1)
			},
		},
		{desc: "preferred chain", req: acme.Request{PreferredChain: root}, check: chainEndsAt(root)},
		{desc: "unknown preferred chain falls back to the default", req: acme.Request{PreferredChain: "No Such Root"}, check: chainEndsAt(root)},
	}

	for i, test := range tests {
		t.Run(test.desc, func(t *testing.T) {
			t.Parallel()

			req := test.req
			req.Names = []string{fmt.Sprintf("opt%d.example.com", i), fmt.Sprintf("www.opt%d.example.com", i)}

			if req.Profile == "" {
				req.Profile = testca.DefaultProfile
			}

			cert, _, err := obtain(t, c, req, 30*time.Second)
			require.NoError(t, err)
			requireCert(t, cert, req.Names...)
			test.check(t, cert)
		})
	}

	t.Cleanup(func() {
		// The plugin's thumbprint mode answers token + "." + Thumbprint(): it must be what
		// the engine publishes.
		solver.mu.Lock()
		defer solver.mu.Unlock()

		require.NotEmpty(t, solver.keyAuths)

		for token, keyAuth := range solver.keyAuths {
			assert.Equal(t, token+"."+c.Thumbprint(), keyAuth)
		}
	})
}

func ecKey(bits int) func(t *testing.T, cert *acme.Certificate) {
	return func(t *testing.T, cert *acme.Certificate) {
		pub, ok := cert.Leaf.PublicKey.(*ecdsa.PublicKey)
		require.True(t, ok, "%T", cert.Leaf.PublicKey)
		assert.Equal(t, bits, pub.Curve.Params().BitSize)
	}
}

func rsaKey(bits int) func(t *testing.T, cert *acme.Certificate) {
	return func(t *testing.T, cert *acme.Certificate) {
		pub, ok := cert.Leaf.PublicKey.(*rsa.PublicKey)
		require.True(t, ok, "%T", cert.Leaf.PublicKey)
		assert.Equal(t, bits, pub.N.BitLen())
	}
}

// chainEndsAt checks that the chain's last certificate was issued by root.
func chainEndsAt(root string) func(t *testing.T, cert *acme.Certificate) {
	return func(t *testing.T, cert *acme.Certificate) {
		chain, err := certcrypto.ParsePEMBundle(cert.ChainPEM)
		require.NoError(t, err)
		require.Greater(t, len(chain), 1, "leaf and intermediates")
		assert.Equal(t, root, chain[len(chain)-1].Issuer.CommonName)
	}
}

// TestRenewal covers ARI: the renewal window, and renewal orders that replace a
// certificate, also when the CA answers 409 alreadyReplaced.
func TestRenewal(t *testing.T) {
	t.Parallel()

	s := newSetup(t, testca.Options{})
	c := s.client(t, s.config(t))
	req := acme.Request{Names: []string{"renew.example.com"}, Profile: testca.DefaultProfile}

	first, _, err := obtain(t, c, req, 30*time.Second)
	require.NoError(t, err)

	ctx := context.Background()

	info, err := c.RenewalInfo(ctx, first.ChainPEM)
	require.NoError(t, err)
	assert.True(t, info.Start.Before(info.End))
	assert.True(t, info.End.Before(first.Leaf.NotAfter))

	start := time.Now().Add(time.Hour).Truncate(time.Second)
	s.ca.SetRenewalWindow(start, start.Add(time.Hour))

	info, err = c.RenewalInfo(ctx, first.ChainPEM)
	require.NoError(t, err)
	assert.WithinDuration(t, start, info.Start, time.Second)
	assert.WithinDuration(t, start.Add(time.Hour), info.End, time.Second)

	req.Replaces, err = acme.ARICertID(first.ChainPEM)
	require.NoError(t, err)

	tests := []struct {
		desc          string
		wantNewOrders int
	}{
		{desc: "renewal order replaces the certificate", wantNewOrders: 1},
		{desc: "409 alreadyReplaced: ordered again without replaces", wantNewOrders: 2},
	}

	for _, test := range tests {
		t.Run(test.desc, func(t *testing.T) {
			before := s.ca.Stats().NewOrders

			cert, _, err := obtain(t, c, req, 30*time.Second)
			require.NoError(t, err)
			requireCert(t, cert, req.Names...)
			assert.NotEqual(t, first.Leaf.SerialNumber, cert.Leaf.SerialNumber)
			assert.Equal(t, test.wantNewOrders, s.ca.Stats().NewOrders-before)
		})
	}
}
