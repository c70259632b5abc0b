package fetcher_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/certfetch/certfetch/acme"
	"github.com/certfetch/certfetch/demo"
	"github.com/certfetch/certfetch/fetcher"
	"github.com/certfetch/certfetch/fetcher/config"
	"github.com/certfetch/certfetch/internal/testkit/testca"
	"github.com/certfetch/certfetch/internal/testkit/testservers"
	"github.com/certfetch/certfetch/internal/testkit/testsupport"
)

type env struct {
	sb    *demo.Sandbox
	cfg   *config.Config
	clock *testsupport.Clock
}

func newEnv(t *testing.T, ca testca.Options, timeout time.Duration, certs ...[]string) *env {
	t.Helper()
	sb, cfg, err := demo.Start(demo.Options{Dir: t.TempDir(), CA: ca, Timeout: timeout}, certs...)
	require.NoError(t, err)
	t.Cleanup(sb.Close)
	return &env{sb: sb, cfg: cfg, clock: &testsupport.Clock{}}
}

func (e *env) daemon(t *testing.T, cfg *config.Config) *fetcher.Daemon {
	t.Helper()
	d, err := fetcher.New(cfg, e.sb.Store, fetcher.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Now: e.clock.Now})
	require.NoError(t, err)
	t.Cleanup(d.Close)
	return d
}

// served reads the certificate Traefik would load for name from the output
// directory: the YAML, then the PEM pair it points at. It fails the test if
// the pair does not match or does not verify against the CA for domain.
func (e *env) served(t *testing.T, name, domain string) *x509.Certificate {
	t.Helper()
	pair, leaf := servedPair(t, e.sb.OutputDir(), name)

	rootsPEM, err := e.sb.CA.IssuerRootsPEM()
	require.NoError(t, err)
	roots := x509.NewCertPool()
	require.True(t, roots.AppendCertsFromPEM(rootsPEM))
	inter := x509.NewCertPool()
	for _, der := range pair.Certificate[1:] {
		c, err := x509.ParseCertificate(der)
		require.NoError(t, err)
		inter.AddCert(c)
	}
	_, err = leaf.Verify(x509.VerifyOptions{DNSName: domain, Roots: roots, Intermediates: inter, CurrentTime: leaf.NotBefore.Add(time.Minute)})
	require.NoError(t, err, "the served certificate must verify for %s", domain)
	return leaf
}

// servedPair reads the pair Traefik would load for name from the file output in dir:
// the YAML, then the PEM files it points at, which must match.
func servedPair(t *testing.T, dir, name string) (tls.Certificate, *x509.Certificate) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, name+".yml"))
	require.NoError(t, err)
	var doc struct {
		TLS struct {
			Certificates []struct {
				CertFile string `yaml:"certFile"`
				KeyFile  string `yaml:"keyFile"`
			} `yaml:"certificates"`
		} `yaml:"tls"`
	}
	require.NoError(t, yaml.Unmarshal(data, &doc))
	require.Len(t, doc.TLS.Certificates, 1)
	pair, err := tls.LoadX509KeyPair(doc.TLS.Certificates[0].CertFile, doc.TLS.Certificates[0].KeyFile)
	require.NoError(t, err, "the YAML must point at a matching pair")
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	require.NoError(t, err)
	return pair, leaf
}

func TestFirstIssuanceAndNothingMoreWhileValid(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testca.Options{}, 0, []string{"www.example.test", "example.test"})
	d := e.daemon(t, e.cfg)
	ctx := context.Background()

	require.NoError(t, d.Once(ctx))
	leaf := e.served(t, "www.example.test", "example.test")
	assert.ElementsMatch(t, []string{"www.example.test", "example.test"}, leaf.DNSNames)

	rec, err := e.sb.Store.LoadCertificate(t.Context(), "www.example.test")
	require.NoError(t, err)
	assert.Empty(t, rec.LastError)
	// A third of the lifetime left (the default) is when renewal is due,
	// unless the CA's renewal information says otherwise.
	assert.True(t, rec.RenewAt.After(leaf.NotBefore) && rec.RenewAt.Before(leaf.NotAfter))

	require.NoError(t, d.Once(ctx), "a valid certificate is not due")
	assert.Equal(t, 1, e.sb.CA.Stats().NewOrders)
	assert.Equal(t, leaf.SerialNumber, e.served(t, "www.example.test", "example.test").SerialNumber)
}

func TestRenewalForcedByARI(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testca.Options{}, 0, []string{"ari.example.test"})
	d := e.daemon(t, e.cfg)
	ctx := context.Background()
	require.NoError(t, d.Once(ctx))
	first := e.served(t, "ari.example.test", "ari.example.test")

	// The CA says: replace it now (e.g. after a mis-issuance).
	now := time.Now()
	e.sb.CA.SetRenewalWindow(now.Add(-time.Hour), now.Add(time.Hour))
	require.NoError(t, d.Once(ctx))

	second := e.served(t, "ari.example.test", "ari.example.test")
	assert.NotEqual(t, first.SerialNumber, second.SerialNumber, "renewed")
	assert.Equal(t, 2, e.sb.CA.Stats().NewOrders)
}

func TestReloadAddsAndRemovesCertificates(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testca.Options{}, 0, []string{"a.example.test"})
	d := e.daemon(t, e.cfg)
	ctx := context.Background()
	require.NoError(t, d.Once(ctx))
	e.served(t, "a.example.test", "a.example.test")

	cfg, err := e.sb.WriteConfig([]string{"b.example.test"})
	require.NoError(t, err)
	require.NoError(t, d.Reload(t.Context(), cfg))
	require.NoError(t, d.Once(ctx))

	e.served(t, "b.example.test", "b.example.test")
	assert.NoFileExists(t, filepath.Join(e.sb.OutputDir(), "a.example.test.yml"), "a removed certificate is unpublished")
}

func TestRestartMidOrderResumesTheSameOrder(t *testing.T) {
	t.Parallel()
	const caNeeds = 3 * time.Second
	e := newEnv(t, testca.Options{Mode: testca.Async, Delay: caNeeds, RetryAfter: time.Second}, time.Second, []string{"slow.example.test"})
	ctx := context.Background()

	first := e.daemon(t, e.cfg)
	err := first.Once(ctx)
	var pending *acme.OrderPendingError
	require.ErrorAs(t, err, &pending, "the 1 s deadline ends the attempt while the CA works")
	first.Close() // the process stops; the journal stays on disk

	orders, err := e.sb.Store.Orders(t.Context())
	require.NoError(t, err)
	require.Len(t, orders, 1)
	assert.Equal(t, pending.OrderURL, orders[0].OrderURL)

	longer, err := e.sb.WriteConfig([]string{"slow.example.test"})
	require.NoError(t, err)
	longer.Timeout = 2 * caNeeds
	second := e.daemon(t, longer)
	e.clock.Advance(time.Minute) // past the Retry-After the first run recorded
	require.NoError(t, second.Once(ctx))

	e.served(t, "slow.example.test", "slow.example.test")
	assert.Equal(t, 1, e.sb.CA.Stats().NewOrders, "the restarted daemon resumed the order")
	orders, err = e.sb.Store.Orders(t.Context())
	require.NoError(t, err)
	assert.Empty(t, orders, "a finished order leaves the journal")
}

func TestCAOutageKeepsTheCertificateInService(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testca.Options{}, 0, []string{"keep.example.test"})
	d := e.daemon(t, e.cfg)
	ctx := context.Background()
	require.NoError(t, d.Once(ctx))
	yml := filepath.Join(e.sb.OutputDir(), "keep.example.test.yml")
	before, err := os.ReadFile(yml)
	require.NoError(t, err)
	old := e.served(t, "keep.example.test", "keep.example.test")

	// Renewal is due (two thirds of the lifetime gone) and the CA is down.
	e.clock.Advance(old.NotAfter.Sub(time.Now()) * 2 / 3)
	e.sb.CA.SetUnavailable(true)
	for range 2 {
		err := d.Once(ctx)
		require.Error(t, err)
		after, readErr := os.ReadFile(yml)
		require.NoError(t, readErr)
		assert.Equal(t, string(before), string(after), "a failure never touches the published certificate")
		assert.Equal(t, old.SerialNumber, e.served(t, "keep.example.test", "keep.example.test").SerialNumber)
		e.clock.Advance(2 * time.Hour) // past the back-off
	}
	rec, err := e.sb.Store.LoadCertificate(t.Context(), "keep.example.test")
	require.NoError(t, err)
	assert.Equal(t, 2, rec.Failures)
	assert.NotEmpty(t, rec.LastError)

	e.sb.CA.SetUnavailable(false)
	require.NoError(t, d.Once(ctx), "the CA is back")
	renewed := e.served(t, "keep.example.test", "keep.example.test")
	assert.NotEqual(t, old.SerialNumber, renewed.SerialNumber)
	rec, err = e.sb.Store.LoadCertificate(t.Context(), "keep.example.test")
	require.NoError(t, err)
	assert.Zero(t, rec.Failures)
	assert.Empty(t, rec.LastError)
}

// TestSecretsNeverLogged runs an issuance with External Account Binding and
// debug logging, and looks for the HMAC key in everything logged.
func TestSecretsNeverLogged(t *testing.T) {
	t.Parallel()
	const kid, hmac = "kid-1", "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W"
	sb, cfg, err := demo.Start(demo.Options{
		Dir: t.TempDir(), CA: testca.Options{EABKeys: map[string]string{kid: hmac}},
		EABKID: kid, EABHMAC: hmac,
	}, []string{"eab.example.test"})
	require.NoError(t, err)
	t.Cleanup(sb.Close)
	var logs testsupport.SyncBuffer
	d, err := fetcher.New(cfg, sb.Store, fetcher.Options{Logger: slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	require.NoError(t, err)
	t.Cleanup(d.Close)

	require.NoError(t, d.Once(context.Background()), "EAB with the right key registers")
	assert.Contains(t, logs.String(), "ordering certificate", "the debug log is not empty")
	assert.NotContains(t, logs.String(), hmac)
	assert.NotContains(t, logs.String(), hmac[:20])
}

// TestStoreRestartMidRenewal restarts the shared store (a real Redis, same
// data) while an order is being processed at the CA: certfetch retries,
// nothing is lost (one order at the CA, the journal and the records intact)
// and nothing is half written (the published pair matches).
func TestStoreRestartMidRenewal(t *testing.T) {
	t.Parallel()
	srv, _ := testservers.StartRedis(t)
	sb, cfg, err := demo.Start(demo.Options{
		Dir:     t.TempDir(),
		Storage: fmt.Sprintf("{redis: {address: %q}, lockTTL: 3s}", srv.Addr()),
		CA:      testca.Options{Mode: testca.Async, Delay: 4 * time.Second, RetryAfter: time.Second},
		Timeout: 30 * time.Second,
	}, []string{"restart.example.test"})
	require.NoError(t, err)
	t.Cleanup(sb.Close)
	clock := &testsupport.Clock{}
	d, err := fetcher.New(cfg, sb.Store, fetcher.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Now: clock.Now, LockTTL: cfg.Storage.LockTTL})
	require.NoError(t, err)
	t.Cleanup(d.Close)

	e := &env{sb: sb, cfg: cfg, clock: clock}
	require.NoError(t, d.Once(context.Background()))
	old := e.served(t, "restart.example.test", "restart.example.test")

	// The CA asks for a renewal; the store restarts while the renewal order
	// is processing at the CA.
	now := time.Now()
	sb.CA.SetRenewalWindow(now.Add(-time.Hour), now.Add(time.Hour))
	renewal := make(chan error, 1)
	go func() { renewal <- d.Once(context.Background()) }()
	require.Eventually(t, func() bool { return sb.CA.Stats().Finalizes == 2 }, time.Minute, 20*time.Millisecond,
		"the renewal order is processing at the CA")
	srv.Restart()

	err = <-renewal
	for attempt := 0; err != nil && attempt < 5; attempt++ {
		t.Logf("attempt after the restart failed (retried): %v", err)
		clock.Advance(2 * time.Hour) // past any back-off
		err = d.Once(context.Background())
	}
	require.NoError(t, err, "certfetch recovers once the store is back")
	renewed := e.served(t, "restart.example.test", "restart.example.test")
	assert.NotEqual(t, old.SerialNumber, renewed.SerialNumber)
	assert.Equal(t, 2, sb.CA.Stats().NewOrders, "one renewal order: it survived the restart")
	rec, err := sb.Store.LoadCertificate(t.Context(), "restart.example.test")
	require.NoError(t, err)
	assert.NotEmpty(t, rec.CertPEM)
	assert.Empty(t, rec.LastError)
}
