// Package demo sets up a complete certfetch installation on loopback, the
// layer above the daemon: a test CA (internal/testkit/testca), the plugin answering its HTTP-01 challenges in
// thumbprint mode (as Traefik's HTTP entry point would), a configuration
// file, a state directory and a Traefik output directory. `certfetch demo`
// and the daemon's tests share it.
package demo

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/certfetch/certfetch"
	"github.com/certfetch/certfetch/fetcher"
	"github.com/certfetch/certfetch/fetcher/config"
	"github.com/certfetch/certfetch/fetcher/store"
	"github.com/certfetch/certfetch/internal/testkit/testca"
)

// ResolverName is the configuration's single resolver.
const ResolverName = "testca"

// Options configure a sandbox.
type Options struct {
	// Dir holds everything; required (tests pass t.TempDir()).
	Dir string
	// CA configures the test CA; HTTPPort is filled in.
	CA testca.Options
	// Timeout is the configuration's order deadline; 0 means the default.
	Timeout time.Duration
	// MetricsListen is metrics.listen; empty: no metrics.
	MetricsListen string
	// Storage is the YAML value of `storage` (e.g. a Redis mapping);
	// empty: a state directory below Dir.
	Storage string
	// MaxConcurrentOrders is the resolver's maxConcurrentOrders; 0: default.
	MaxConcurrentOrders int
	// RequestsPerSecond, when not nil, is the resolver's requestsPerSecond (0: no limit);
	// nil: the default.
	RequestsPerSecond *float64
	// EABKID and EABHMAC, when set, go into the resolver's eab settings
	// (the CA requires them when CA.EABKeys is set).
	EABKID, EABHMAC string
	// Profile is the resolver's profile (e.g. testca.MinuteProfile for
	// 60-second certificates); empty: none, and the test CA issues
	// testca.DefaultProfile's.
	Profile string
}

// Sandbox is a running installation. Close releases it.
type Sandbox struct {
	CA         *testca.CA
	Dir        string
	ConfigPath string
	Store      *store.Store
	Thumbprint string

	opts     Options
	rootFile string
	httpAddr string
	server   *http.Server
}

// Start starts the CA and the plugin's HTTP-01 endpoint and writes a
// configuration for certificates (each a list of domains).
func Start(opts Options, certificates ...[]string) (*Sandbox, *config.Config, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, fmt.Errorf("sandbox: listen for HTTP-01: %w", err)
	}
	caOpts := opts.CA
	caOpts.HTTPPort = ln.Addr().(*net.TCPAddr).Port
	ca, err := testca.Start(caOpts)
	if err != nil {
		ln.Close()
		return nil, nil, fmt.Errorf("sandbox: %w", err)
	}
	s := &Sandbox{CA: ca, Dir: opts.Dir, ConfigPath: filepath.Join(opts.Dir, "certfetch.yml"), opts: opts, httpAddr: ln.Addr().String()}
	cfg, err := s.setup(ln, certificates)
	if err != nil {
		ln.Close()
		s.Close()
		return nil, nil, err
	}
	return s, cfg, nil
}

func (s *Sandbox) setup(ln net.Listener, certificates [][]string) (*config.Config, error) {
	var err error
	if s.rootFile, err = s.CA.WriteTLSRoot(s.Dir); err != nil {
		return nil, fmt.Errorf("sandbox: %w", err)
	}
	cfg, err := s.WriteConfig(certificates...)
	if err != nil {
		return nil, err
	}
	if s.Store, err = fetcher.OpenStore(context.Background(), cfg.Storage); err != nil {
		return nil, fmt.Errorf("sandbox: %w", err)
	}
	if s.Thumbprint, err = fetcher.Thumbprint(context.Background(), s.Store, cfg.Resolvers[ResolverName], false); err != nil {
		return nil, fmt.Errorf("sandbox: %w", err)
	}
	plugin, err := certfetch.New(context.Background(), http.NotFoundHandler(), &certfetch.Config{Thumbprint: s.Thumbprint}, "sandbox")
	if err != nil {
		return nil, fmt.Errorf("sandbox: %w", err)
	}
	s.server = &http.Server{Handler: plugin, ReadHeaderTimeout: 5 * time.Second}
	go s.server.Serve(ln) //nolint:errcheck // ends with Close
	return cfg, nil
}

// HTTPAddr is where the plugin answers HTTP-01 challenges.
func (s *Sandbox) HTTPAddr() string { return s.httpAddr }

// OutputDir is the directory Traefik's file provider would watch.
func (s *Sandbox) OutputDir() string { return filepath.Join(s.Dir, "traefik") }

// WriteConfig (re)writes the configuration file for certificates and loads it.
func (s *Sandbox) WriteConfig(certificates ...[]string) (*config.Config, error) {
	var b strings.Builder
	if s.opts.Timeout > 0 {
		fmt.Fprintf(&b, "timeout: %s\n", s.opts.Timeout)
	}
	if s.opts.MetricsListen != "" {
		fmt.Fprintf(&b, "metrics:\n  listen: %s\n", strconv.Quote(s.opts.MetricsListen))
	}
	storage := s.opts.Storage
	if storage == "" {
		storage = strconv.Quote(filepath.Join(s.Dir, "state"))
	}
	fmt.Fprintf(&b, "storage: %s\n", storage)
	fmt.Fprintf(&b, "resolvers:\n  %s:\n    caServer: %s\n    caCertificates: [%s]\n    httpChallenge:\n      stateless: true\n",
		ResolverName, s.CA.DirectoryURL(), strconv.Quote(s.rootFile))
	if s.opts.MaxConcurrentOrders > 0 {
		fmt.Fprintf(&b, "    maxConcurrentOrders: %d\n", s.opts.MaxConcurrentOrders)
	}
	if s.opts.RequestsPerSecond != nil {
		fmt.Fprintf(&b, "    requestsPerSecond: %g\n", *s.opts.RequestsPerSecond)
	}
	if s.opts.Profile != "" {
		fmt.Fprintf(&b, "    profile: %s\n", strconv.Quote(s.opts.Profile))
	}
	if s.opts.EABKID != "" {
		fmt.Fprintf(&b, "    eab:\n      kid: %s\n      hmacEncoded: %s\n", strconv.Quote(s.opts.EABKID), strconv.Quote(s.opts.EABHMAC))
	}
	b.WriteString("certificates:\n")
	for _, domains := range certificates {
		fmt.Fprintf(&b, "  - domains: [%s]\n", strings.Join(domains, ", "))
	}
	fmt.Fprintf(&b, "output:\n  file:\n    directory: %s\n", strconv.Quote(s.OutputDir()))
	if err := os.WriteFile(s.ConfigPath, []byte(b.String()), 0o600); err != nil {
		return nil, fmt.Errorf("sandbox: write configuration: %w", err)
	}
	cfg, err := config.Load(s.ConfigPath)
	if err != nil {
		return nil, fmt.Errorf("sandbox: %w", err)
	}
	return cfg, nil
}

// Close stops the plugin endpoint and the CA, and closes the store.
func (s *Sandbox) Close() {
	if s.server != nil {
		s.server.Close()
	}
	if s.Store != nil {
		s.Store.Close()
	}
	s.CA.Close()
}
