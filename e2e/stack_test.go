//go:build e2e

package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/certfetch/certfetch/fetcher"
	"github.com/certfetch/certfetch/fetcher/config"
	"github.com/certfetch/certfetch/fetcher/store"
	"github.com/certfetch/certfetch/internal/testkit/testca"
	"github.com/certfetch/certfetch/internal/testkit/testsupport"
)

// resolverName is the single resolver of the certfetch configurations here.
const resolverName = "testca"

// challengeMode is one way the plugin answers HTTP-01, with the matching
// certfetch httpChallenge setting.
type challengeMode string

const (
	thumbprintMode challengeMode = "thumbprint"
	webrootMode    challengeMode = "webroot"
	upstreamMode   challengeMode = "upstream"
)

// stackOptions configure a stack.
type stackOptions struct {
	mode challengeMode
	ca   testca.Options // HTTPPort is set to Traefik's web port
	// timeout is certfetch's order deadline; 0: certfetch's default.
	timeout time.Duration
	// domains of the one certificate certfetch manages.
	domains []string
	// dynamic holds extra dynamic-configuration files (name → content)
	// written into the watched directory before Traefik starts.
	dynamic map[string]any
	// traefik configures the Traefik process (env, catalog); newStack sets
	// its watchDir.
	traefik traefikOptions
}

// stack is Traefik (with the plugin) + the test CA + certfetch, wired as
// README describes: the CA validates through Traefik's web entry point,
// certfetch writes into the directory Traefik's file provider watches.
type stack struct {
	opts     stackOptions
	dir      string
	watchDir string // providers.file.directory = certfetch output.file.directory
	webroot  string // webroot mode: the directory plugin and certfetch share
	traefik  *traefik
	ca       *testca.CA
	roots    *x509.CertPool // the CA's issuing roots
	cfg      *config.Config
	store    *store.Store
	clock    *testsupport.Clock
	log      *testsupport.SyncBuffer // certfetch's log, printed when a test fails
}

// newStack starts Traefik, then the CA (whose validator must dial Traefik's
// web port), then configures certfetch and the plugin's dynamic file from
// README's, and waits until Traefik routes challenges to the plugin. It
// issues nothing: tests drive the daemon.
func newStack(t testing.TB, opts stackOptions) *stack {
	t.Helper()
	s := &stack{opts: opts, dir: t.TempDir(), clock: &testsupport.Clock{}}
	s.watchDir = filepath.Join(s.dir, "traefik-dynamic")
	s.webroot = filepath.Join(s.dir, "webroot")
	require.NoError(t, os.MkdirAll(s.watchDir, 0o755))
	require.NoError(t, os.MkdirAll(s.webroot, 0o755))
	for name, content := range opts.dynamic {
		writeYAML(t, filepath.Join(s.watchDir, name), content)
	}
	s.log = &testsupport.SyncBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("certfetch log:\n%s", tail(s.log.String(), 100))
		}
	})

	trOpts := opts.traefik
	trOpts.watchDir = s.watchDir
	s.traefik = startTraefik(t, trOpts)

	caOpts := opts.ca
	caOpts.HTTPPort = s.traefik.web
	ca, err := testca.Start(caOpts)
	require.NoError(t, err)
	t.Cleanup(func() { ca.Close() })
	s.ca = ca
	s.roots = issuerRoots(t, ca)
	return s
}

// newSiteStack is a stack whose Traefik also has a TLS router on websecure
// for the certificate's first domain, to a backend serving handler: without
// a TLS router Traefik serves no certificate on that entry point.
func newSiteStack(t testing.TB, opts stackOptions, handler http.Handler) *stack {
	t.Helper()
	backend := httptest.NewServer(handler)
	t.Cleanup(backend.Close)
	opts.dynamic = map[string]any{"app.yml": appConfig(backend.URL, route{name: "app", host: opts.domains[0]})}
	return newStack(t, opts)
}

// daemon writes certfetch's configuration for the stack's mode, creates the
// daemon (in upstream mode it binds the responder the plugin forwards to),
// then points the plugin at it (README's acme-challenge.yml with the mode's
// setting) and waits until Traefik serves the plugin on the challenge path.
func (s *stack) daemon(t testing.TB) *fetcher.Daemon {
	t.Helper()
	rootFile, err := s.ca.WriteTLSRoot(s.dir)
	require.NoError(t, err)
	var d *fetcher.Daemon
	var plugin map[string]any
	for attempt := 1; d == nil; attempt++ {
		var challenge string
		switch s.opts.mode {
		case thumbprintMode:
			challenge = "stateless: true"
		case webrootMode:
			challenge = "webroot: " + strconv.Quote(s.webroot)
			plugin = map[string]any{"webroot": s.webroot}
		case upstreamMode:
			// The responder binds the port itself: pick one, retry if taken.
			addr := fmt.Sprintf("127.0.0.1:%d", freePorts(t, 1)[0])
			challenge = "listen: " + strconv.Quote(addr)
			plugin = map[string]any{"upstream": "http://" + addr}
		default:
			t.Fatalf("unknown mode %q", s.opts.mode)
		}
		s.cfg = s.writeConfig(t, rootFile, challenge)
		if s.store == nil {
			s.store, err = store.Open(s.cfg.Storage.Directory)
			require.NoError(t, err)
		}
		d, err = s.newDaemon(s.cfg)
		if err != nil && strings.Contains(err.Error(), "address already in use") && attempt < startAttempts {
			continue
		}
		require.NoError(t, err)
	}
	t.Cleanup(d.Close)
	if s.opts.mode == thumbprintMode {
		tp, err := fetcher.Thumbprint(t.Context(), s.store, s.cfg.Resolvers[resolverName], false)
		require.NoError(t, err)
		plugin = map[string]any{"thumbprint": tp}
	}
	s.routeChallenges(t, plugin)
	return d
}

// routeChallenges writes README's dynamic file with the plugin's settings
// and waits until Traefik answers the challenge path with the plugin.
func (s *stack) routeChallenges(t testing.TB, plugin map[string]any) {
	t.Helper()
	s.writeChallengeRouter(t, plugin)
	s.traefik.waitForPlugin(t)
}

// newDaemon builds a daemon on the stack's store, clock and log file.
func (s *stack) newDaemon(cfg *config.Config) (*fetcher.Daemon, error) {
	logger := slog.New(slog.NewTextHandler(s.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	return fetcher.New(cfg, s.store, fetcher.Options{Logger: logger, Now: s.clock.Now})
}

// writeConfig writes and loads certfetch's configuration.
func (s *stack) writeConfig(t testing.TB, rootFile, challenge string) *config.Config {
	t.Helper()
	var b strings.Builder
	if s.opts.timeout > 0 {
		fmt.Fprintf(&b, "timeout: %s\n", s.opts.timeout)
	}
	fmt.Fprintf(&b, "storage: %s\n", strconv.Quote(filepath.Join(s.dir, "state")))
	fmt.Fprintf(&b, "log:\n  level: debug\n")
	fmt.Fprintf(&b, "resolvers:\n  %s:\n    caServer: %s\n    caCertificates: [%s]\n    httpChallenge:\n      %s\n",
		resolverName, s.ca.DirectoryURL(), strconv.Quote(rootFile), challenge)
	fmt.Fprintf(&b, "certificates:\n  - domains: [%s]\n", strings.Join(s.opts.domains, ", "))
	fmt.Fprintf(&b, "output:\n  file:\n    directory: %s\n", strconv.Quote(s.watchDir))
	path := filepath.Join(s.dir, "certfetch.yml")
	require.NoError(t, os.WriteFile(path, []byte(b.String()), 0o600))
	cfg, err := config.Load(path)
	require.NoError(t, err)
	return cfg
}

// writeChallengeRouter writes README's dynamic file (testdata/traefik/
// certfetch/acme-challenge.yml) into the watched directory, with the
// plugin's settings replaced by the mode's.
func (s *stack) writeChallengeRouter(t testing.TB, plugin map[string]any) {
	t.Helper()
	cfg := readYAML(t, filepath.Join(repoRoot, "testdata", "traefik", "certfetch", "acme-challenge.yml"))
	mw := mapAt(t, mapAt(t, mapAt(t, cfg, "http"), "middlewares"), middlewareName)
	settings := mapAt(t, mw, "plugin")
	_ = mapAt(t, settings, pluginName)
	settings[pluginName] = plugin
	writeYAML(t, filepath.Join(s.watchDir, "acme-challenge.yml"), cfg)
}

// name is the certificate's name: its first domain.
func (s *stack) name() string { return s.opts.domains[0] }

// published returns the leaf certfetch published for Traefik: the PEM the
// certificate's YAML in the watched directory points at.
func (s *stack) published(t testing.TB) *x509.Certificate {
	t.Helper()
	doc := readYAML(t, filepath.Join(s.watchDir, s.name()+".yml"))
	certs, ok := mapAt(t, doc, "tls")["certificates"].([]any)
	require.True(t, ok && len(certs) == 1, "one certificate in %v", doc)
	entry, ok := certs[0].(map[string]any)
	require.True(t, ok)
	certFile, ok := entry["certFile"].(string)
	require.True(t, ok)
	data, err := os.ReadFile(certFile)
	require.NoError(t, err)
	block, _ := pem.Decode(data)
	require.NotNil(t, block, "PEM in %s", certFile)
	leaf, err := x509.ParseCertificate(block.Bytes)
	require.NoError(t, err)
	return leaf
}

// handshake connects to Traefik's websecure entry point with SNI domain and
// verifies the chain Traefik presents against the CA's issuing roots for
// domain (no InsecureSkipVerify anywhere). It returns the leaf.
func (s *stack) handshake(domain string) (*x509.Certificate, error) {
	return handshake(s.traefik.websecure, domain, s.roots)
}

func handshake(port int, domain string, roots *x509.CertPool) (*x509.Certificate, error) {
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	conn, err := tls.DialWithDialer(dialer, "tcp", fmt.Sprintf("127.0.0.1:%d", port), &tls.Config{
		ServerName: domain,
		RootCAs:    roots,
		MinVersion: tls.VersionTLS12,
	})
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0], nil
}

// httpsClient sends every request to Traefik's websecure entry point,
// whatever the URL's host, and verifies certificates against the CA's
// issuing roots for that host. Redirects are returned, not followed.
func (s *stack) httpsClient() *http.Client {
	addr := fmt.Sprintf("127.0.0.1:%d", s.traefik.websecure)
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	return &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return dialer.DialContext(ctx, network, addr)
			},
			TLSClientConfig: &tls.Config{RootCAs: s.roots, MinVersion: tls.VersionTLS12},
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// waitServed waits until Traefik presents want for domain on HTTPS, and
// returns when it first did.
func (s *stack) waitServed(t testing.TB, domain string, want *x509.Certificate) time.Time {
	t.Helper()
	var at time.Time
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		leaf, err := s.handshake(domain)
		require.NoError(c, err, "TLS handshake verified against the CA's roots for %s", domain)
		require.Equal(c, want.SerialNumber.String(), leaf.SerialNumber.String(), "serial served for %s", domain)
		at = time.Now()
	}, reloadTimeout, tick, "Traefik never presented certfetch's certificate for %s", domain)
	return at
}

// issuerRoots is the pool of the CA's issuing roots.
func issuerRoots(t testing.TB, ca *testca.CA) *x509.CertPool {
	t.Helper()
	pemRoots, err := ca.IssuerRootsPEM()
	require.NoError(t, err)
	pool := x509.NewCertPool()
	require.True(t, pool.AppendCertsFromPEM(pemRoots))
	return pool
}

// once runs one daemon pass with a bound well above any deadline used here,
// so a hung pass fails the test instead of the whole run.
func once(t testing.TB, d *fetcher.Daemon) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	return d.Once(ctx)
}
