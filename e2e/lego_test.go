//go:build e2e

package e2e

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-acme/lego/v4/certcrypto"
	"github.com/go-acme/lego/v4/certificate"
	"github.com/go-acme/lego/v4/lego"
	"github.com/go-acme/lego/v4/providers/http/webroot"
	"github.com/go-acme/lego/v4/registration"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestLegoWebrootThroughPlugin shows the plugin serves ACME clients other
// than certfetch: lego's own library, with its webroot provider writing into
// the plugin's webroot, gets a certificate validated through Traefik (behind
// the redirect). Published to the file provider as inline PEM, Traefik then
// presents it.
func TestLegoWebrootThroughPlugin(t *testing.T) {
	t.Parallel()
	const domain = "lego.example.test"
	s := newSiteStack(t, stackOptions{mode: webrootMode, domains: []string{domain}}, http.NotFoundHandler())
	s.routeChallenges(t, map[string]any{"webroot": s.webroot})

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	user := &legoUser{key: key}
	cfg := lego.NewConfig(user)
	cfg.CADirURL = s.ca.DirectoryURL()
	cfg.HTTPClient = s.ca.HTTPClient()
	cfg.HTTPClient.Timeout = time.Minute
	cfg.Certificate.KeyType = certcrypto.EC256
	client, err := lego.NewClient(cfg)
	require.NoError(t, err)
	provider, err := webroot.NewHTTPProvider(s.webroot)
	require.NoError(t, err)
	require.NoError(t, client.Challenge.SetHTTP01Provider(provider))
	user.reg, err = client.Registration.Register(registration.RegisterOptions{TermsOfServiceAgreed: true})
	require.NoError(t, err)

	res, err := client.Certificate.Obtain(certificate.ObtainRequest{Domains: []string{domain}, Bundle: true})
	require.NoError(t, err, "lego's HTTP-01 validation through Traefik and the plugin's webroot mode")
	assert.Equal(t, 1, s.ca.Stats().NewOrders)
	block, _ := pem.Decode(res.Certificate)
	require.NotNil(t, block)
	leaf, err := x509.ParseCertificate(block.Bytes)
	require.NoError(t, err)
	assert.Equal(t, []string{domain}, leaf.DNSNames)

	writeYAML(t, filepath.Join(s.watchDir, "lego.yml"), map[string]any{"tls": map[string]any{
		"certificates": []map[string]any{{"certFile": string(res.Certificate), "keyFile": string(res.PrivateKey)}},
	}})
	s.waitServed(t, domain, leaf)
}

// legoUser is the minimal registration.User lego needs.
type legoUser struct {
	key crypto.PrivateKey
	reg *registration.Resource
}

func (u *legoUser) GetEmail() string                        { return "" }
func (u *legoUser) GetRegistration() *registration.Resource { return u.reg }
func (u *legoUser) GetPrivateKey() crypto.PrivateKey        { return u.key }
