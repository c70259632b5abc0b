package fetcher_test

// The lifecycle suite drives the daemon in-process through the paths of the certificate
// lifecycle (issue 9) against the in-process CA: what fails, what the user sees (the
// files Traefik reads, Status, the errors of Once) and how many orders the CA saw.
// Time is the test clock (testsupport.Clock): back-offs and renewals are reached by
// moving it, never by waiting. Faults of the disk are real: chattr +i (EPERM) and a
// full tmpfs (ENOSPC), which need root.
//
// This file holds the harness and the tests of the state store; lifecycle_ca_test.go
// the CA's faults; lifecycle_run_test.go the daemon's run, reload, shutdown and once.

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/certfetch/certfetch"
	"github.com/certfetch/certfetch/acme"
	"github.com/certfetch/certfetch/fetcher"
	"github.com/certfetch/certfetch/fetcher/config"
	"github.com/certfetch/certfetch/fetcher/metrics"
	"github.com/certfetch/certfetch/fetcher/output"
	"github.com/certfetch/certfetch/fetcher/store"
	"github.com/certfetch/certfetch/internal/testkit/testca"
	"github.com/certfetch/certfetch/internal/testkit/testsupport"
)

// resolverName is the harness's single resolver.
const resolverName = "testca"

// harnessOptions configure a harness.
type harnessOptions struct {
	// CA configures the test CA; HTTPPort is the harness's challenge front.
	CA testca.Options
	// Timeout is the configuration's order deadline; 0: the default.
	Timeout time.Duration
	// Profile is the resolver's profile; empty: the CA's default (90 days).
	Profile string
	// StateOnTmpfs mounts a 64 KiB tmpfs on the state directory before the store opens
	// it, so that a test can fill it (a full disk).
	StateOnTmpfs bool
	// Extra is appended to the configuration file as is (say, "renewal: {ari: false}").
	Extra string
	// Challenge is the resolver's challenge block, indented by four spaces; empty: the
	// plugin's stateless HTTP-01.
	Challenge string
}

// harness is one certfetch installation on loopback: a test CA, the plugin answering its
// HTTP-01 challenges in thumbprint mode behind a front that can refuse names (as a
// Traefik without a route for them would), a configuration with one stateless resolver,
// a state directory, a Traefik output directory, a test clock, and what the daemons
// built on it report (events, metrics, logs).
type harness struct {
	t       *testing.T
	opts    harnessOptions
	dir     string
	CA      *testca.CA
	Store   *store.Store
	clock   *testsupport.Clock
	ev      *events
	metrics *metrics.Metrics
	logs    *testsupport.SyncBuffer
	root    string

	mu      sync.Mutex
	refused map[string]bool // hosts whose challenges the front answers 404
}

func newHarness(t *testing.T, opts harnessOptions) *harness {
	t.Helper()
	h := &harness{
		t: t, opts: opts, dir: t.TempDir(), clock: &testsupport.Clock{}, metrics: metrics.New(),
		logs: &testsupport.SyncBuffer{}, refused: map[string]bool{},
	}
	h.ev = newEvents(h.clock)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("daemon logs:\n%s", h.logs.String())
		}
	})

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	caOpts := opts.CA
	caOpts.HTTPPort = ln.Addr().(*net.TCPAddr).Port
	h.CA, err = testca.Start(caOpts)
	require.NoError(t, err)
	t.Cleanup(func() { h.CA.Close() })
	h.root, err = h.CA.WriteTLSRoot(h.dir)
	require.NoError(t, err)

	if opts.StateOnTmpfs {
		require.NoError(t, os.Mkdir(h.stateDir(), 0o700))
		mountTmpfs(t, h.stateDir())
	}
	cfg := h.config(cert("probe", "probe.example.test"))
	h.Store, err = fetcher.OpenStore(t.Context(), cfg.Storage)
	require.NoError(t, err)
	t.Cleanup(func() { h.Store.Close() })
	thumbprint, err := fetcher.Thumbprint(t.Context(), h.Store, cfg.Resolvers[resolverName], false)
	require.NoError(t, err)
	plugin, err := certfetch.New(t.Context(), http.NotFoundHandler(), &certfetch.Config{Thumbprint: thumbprint}, "lifecycle")
	require.NoError(t, err)
	front := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, err := net.SplitHostPort(r.Host)
		if err != nil {
			host = r.Host
		}
		h.mu.Lock()
		refused := h.refused[host]
		h.mu.Unlock()
		if refused {
			http.NotFound(w, r)
			return
		}
		plugin.ServeHTTP(w, r)
	})}
	go front.Serve(ln) //nolint:errcheck // ends with Close
	t.Cleanup(func() { front.Close() })
	return h
}

// refuse makes the front answer 404 to host's challenges: a name the CA cannot validate.
func (h *harness) refuse(host string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.refused[host] = true
}

func (h *harness) stateDir() string  { return filepath.Join(h.dir, "state") }
func (h *harness) outputDir() string { return filepath.Join(h.dir, "traefik") }
func (h *harness) yml(name string) string {
	return filepath.Join(h.outputDir(), name+".yml")
}

// certSpec is one configured certificate.
type certSpec struct {
	name    string
	domains []string
}

func cert(name string, domains ...string) certSpec { return certSpec{name: name, domains: domains} }

// config writes the configuration file for certs and loads it, as SIGHUP would.
func (h *harness) config(certs ...certSpec) *config.Config {
	h.t.Helper()
	var b strings.Builder
	if h.opts.Timeout > 0 {
		fmt.Fprintf(&b, "timeout: %s\n", h.opts.Timeout)
	}
	fmt.Fprintf(&b, "storage: %s\n", strconv.Quote(h.stateDir()))
	fmt.Fprintf(&b, "resolvers:\n  %s:\n    caServer: %s\n    caCertificates: [%s]\n%s",
		resolverName, h.CA.DirectoryURL(), strconv.Quote(h.root), cmp.Or(h.opts.Challenge, "    httpChallenge:\n      stateless: true\n"))
	if h.opts.Profile != "" {
		fmt.Fprintf(&b, "    profile: %s\n", strconv.Quote(h.opts.Profile))
	}
	b.WriteString("certificates:")
	if len(certs) == 0 {
		b.WriteString(" []")
	}
	b.WriteString("\n")
	for _, c := range certs {
		fmt.Fprintf(&b, "  - name: %s\n    domains: [%s]\n", c.name, strings.Join(c.domains, ", "))
	}
	fmt.Fprintf(&b, "output:\n  file:\n    directory: %s\n", strconv.Quote(h.outputDir()))
	b.WriteString(h.opts.Extra)
	return loadConfig(h.t, filepath.Join(h.dir, "certfetch.yml"), b.String())
}

// loadConfig writes text to path and loads it.
func loadConfig(t *testing.T, path, text string) *config.Config {
	t.Helper()
	require.NoError(t, os.WriteFile(path, []byte(text), 0o600))
	cfg, err := config.Load(path)
	require.NoError(t, err, "configuration:\n%s", text)
	return cfg
}

// daemon builds a daemon for cfg on the harness's store, clock, events, metrics and logs.
func (h *harness) daemon(cfg *config.Config) *fetcher.Daemon {
	h.t.Helper()
	d, err := fetcher.New(cfg, h.Store, fetcher.Options{
		Logger:  slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Metrics: h.metrics,
		Now:     h.clock.Now,
		Observe: h.ev.observe,
	})
	require.NoError(h.t, err)
	h.t.Cleanup(d.Close)
	return d
}

// run runs d.Run until the returned stop is called (or the test ends); stop returns once
// Run has returned.
func (h *harness) run(d *fetcher.Daemon) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx, nil) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				assert.NoError(h.t, err, "Run")
			case <-time.After(30 * time.Second):
				h.t.Error("Run did not return 30 s after its context ended")
			}
		})
	}
	h.t.Cleanup(stop)
	return stop
}

// record loads name's record.
func (h *harness) record(name string) *store.Certificate {
	h.t.Helper()
	rec, err := h.Store.LoadCertificate(h.t.Context(), name)
	require.NoError(h.t, err)
	return rec
}

// orders returns the journaled orders.
func (h *harness) orders() []*acme.Record {
	h.t.Helper()
	orders, err := h.Store.Orders(h.t.Context())
	require.NoError(h.t, err)
	return orders
}

// status returns Status's row for name, as `certfetch status` prints it now (on the
// test clock).
func (h *harness) status(cfg *config.Config, name string) fetcher.CertificateStatus {
	h.t.Helper()
	out, err := fetcher.OpenOutput(cfg.Output, slog.New(slog.DiscardHandler))
	require.NoError(h.t, err)
	defer out.Close()
	rows, err := fetcher.Status(h.t.Context(), cfg, h.Store, out, h.clock.Now())
	require.NoError(h.t, err)
	for _, row := range rows {
		if row.Name == name {
			return row
		}
	}
	h.t.Fatalf("status has no row for %s", name)
	return fetcher.CertificateStatus{}
}

// failures returns certfetch_failures_total{resolver="testca",reason=reason}.
func (h *harness) failures(reason string) int {
	h.t.Helper()
	rec := httptest.NewRecorder()
	h.metrics.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	re := regexp.MustCompile(`(?m)^certfetch_failures_total\{reason="` + reason + `",resolver="` + resolverName + `"\} (\d+)$`)
	m := re.FindStringSubmatch(rec.Body.String())
	require.NotNil(h.t, m, "no failures series for reason %s", reason)
	n, err := strconv.Atoi(m[1])
	require.NoError(h.t, err)
	return n
}

// served returns the leaf of the certificate Traefik would load as name: the YAML in
// the output directory, then the PEM pair it points at. It fails the test if the file
// is missing, the pair does not match, or the chain does not verify against the CA.
func (h *harness) served(name string) *x509.Certificate {
	h.t.Helper()
	data, err := os.ReadFile(h.yml(name))
	require.NoError(h.t, err, "Traefik finds no certificate %s", name)
	var doc struct {
		TLS struct {
			Certificates []struct {
				CertFile string `yaml:"certFile"`
				KeyFile  string `yaml:"keyFile"`
			} `yaml:"certificates"`
		} `yaml:"tls"`
	}
	require.NoError(h.t, yaml.Unmarshal(data, &doc))
	require.Len(h.t, doc.TLS.Certificates, 1)
	pair, err := tls.LoadX509KeyPair(doc.TLS.Certificates[0].CertFile, doc.TLS.Certificates[0].KeyFile)
	require.NoError(h.t, err, "the YAML must point at a matching pair")
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	require.NoError(h.t, err)
	rootsPEM, err := h.CA.IssuerRootsPEM()
	require.NoError(h.t, err)
	roots := x509.NewCertPool()
	require.True(h.t, roots.AppendCertsFromPEM(rootsPEM))
	inter := x509.NewCertPool()
	for _, der := range pair.Certificate[1:] {
		c, err := x509.ParseCertificate(der)
		require.NoError(h.t, err)
		inter.AddCert(c)
	}
	_, err = leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: leaf.NotBefore})
	require.NoError(h.t, err, "the served certificate must verify")
	return leaf
}

// serial is a certificate's serial number as text, for comparisons.
func serial(c *x509.Certificate) string { return c.SerialNumber.Text(16) }

// recordSerial is the serial of the (first) certificate of a PEM chain.
func recordSerial(t *testing.T, certPEM []byte) string {
	t.Helper()
	block, _ := pem.Decode(certPEM)
	require.NotNil(t, block, "no PEM certificate")
	c, err := x509.ParseCertificate(block.Bytes)
	require.NoError(t, err)
	return serial(c)
}

// events records what a daemon's Options.Observe reports, stamped with the test clock,
// and runs one-shot hooks at chosen steps (fault injection at a precise point).
type events struct {
	clock *testsupport.Clock

	mu      sync.Mutex
	list    []stamped
	changed chan struct{}
	hooks   []*hook
}

type stamped struct {
	fetcher.Event
	at time.Time // the test clock when it happened
}

type hook struct {
	name  string
	step  fetcher.Step
	fn    func()
	fired bool
}

func newEvents(clock *testsupport.Clock) *events {
	return &events{clock: clock, changed: make(chan struct{})}
}

func (e *events) observe(ev fetcher.Event) {
	e.mu.Lock()
	e.list = append(e.list, stamped{Event: ev, at: e.clock.Now()})
	close(e.changed)
	e.changed = make(chan struct{})
	var run []func()
	for _, h := range e.hooks {
		if !h.fired && h.name == ev.Name && h.step == ev.Step {
			h.fired = true
			run = append(run, h.fn)
		}
	}
	e.mu.Unlock()
	for _, fn := range run {
		fn()
	}
}

// on runs fn, once, on the visit's goroutine when name reaches step. fn must not call
// t.FailNow (use assert).
func (e *events) on(name string, step fetcher.Step, fn func()) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.hooks = append(e.hooks, &hook{name: name, step: step, fn: fn})
}

// of returns name's events at step.
func (e *events) of(name string, step fetcher.Step) []stamped {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []stamped
	for _, ev := range e.list {
		if ev.Name == name && ev.Step == step {
			out = append(out, ev)
		}
	}
	return out
}

func (e *events) count(name string, step fetcher.Step) int { return len(e.of(name, step)) }

// wait waits until name has reached step n times in all.
func (e *events) wait(t *testing.T, name string, step fetcher.Step, n int) {
	t.Helper()
	timeout := time.NewTimer(60 * time.Second)
	defer timeout.Stop()
	for {
		e.mu.Lock()
		changed := e.changed
		e.mu.Unlock()
		if e.count(name, step) >= n {
			return
		}
		select {
		case <-changed:
		case <-timeout.C:
			t.Fatalf("%s did not reach %q %d times within 60 s (%d)", name, step, n, e.count(name, step))
		}
	}
}

// requireTool fails the test, with a message saying why, when a system tool the test
// depends on is missing or does not work here. Tests never skip silently.
func requireTool(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("this test needs %s (root, and a file system that supports it): %v", what, err)
	}
}

// chattr sets (+i) or clears (-i) the immutable attribute of paths: writes there fail
// with EPERM, for root too. It returns an error rather than failing the test, so that
// hooks on a visit's goroutine can call it.
func chattr(flag string, paths ...string) error {
	out, err := exec.Command("chattr", append([]string{flag}, paths...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("chattr %s %s: %w: %s", flag, strings.Join(paths, " "), err, out)
	}
	return nil
}

// immutable makes paths immutable now and mutable again at the end of the test; the
// returned function undoes it earlier.
func immutable(t *testing.T, paths ...string) (undo func()) {
	t.Helper()
	requireTool(t, "chattr +i", chattr("+i", paths...))
	var once sync.Once
	undo = func() { once.Do(func() { assert.NoError(t, chattr("-i", paths...)) }) }
	t.Cleanup(undo)
	return undo
}

// immutableLater returns functions that make paths immutable and mutable again, for use
// at a chosen step; the attribute is cleared at the end of the test whatever happened.
// It checks first that chattr works here.
func immutableLater(t *testing.T, paths ...string) (set, clear func() error) {
	t.Helper()
	probe := filepath.Join(t.TempDir(), "chattr-probe")
	require.NoError(t, os.WriteFile(probe, nil, 0o600))
	requireTool(t, "chattr +i", chattr("+i", probe))
	require.NoError(t, chattr("-i", probe))
	t.Cleanup(func() { _ = chattr("-i", paths...) })
	return func() error { return chattr("+i", paths...) }, func() error { return chattr("-i", paths...) }
}

// mountTmpfs mounts a 64 KiB tmpfs on dir for the test.
func mountTmpfs(t *testing.T, dir string) {
	t.Helper()
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", dir).CombinedOutput()
	if err != nil {
		err = fmt.Errorf("%w: %s", err, out)
	}
	requireTool(t, "mount -t tmpfs", err)
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
			_ = exec.Command("umount", "-l", dir).Run()
		}
	})
}

// fill fills the file system of dir (a tmpfs) with a file and returns the function that
// removes it. It returns errors rather than failing the test, for hooks.
func fill(dir string) (free func() error, err error) {
	path := filepath.Join(dir, "filler")
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	chunk := make([]byte, 4096)
	for {
		if _, err := f.Write(chunk); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				return nil, fmt.Errorf("fill %s: %w", dir, err)
			}
			break
		}
	}
	return func() error { return os.Remove(path) }, nil
}

// quarantined returns the contents of the files under the state's quarantine/.
func (h *harness) quarantined() map[string][]byte {
	h.t.Helper()
	dir := filepath.Join(h.stateDir(), "quarantine")
	entries, err := os.ReadDir(dir)
	require.NoError(h.t, err)
	out := map[string][]byte{}
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		require.NoError(h.t, err)
		out[e.Name()] = data
	}
	return out
}

// TestLifecycleStoreRefusesWritesBeforeTheFirstAttempt: a state store that refuses to
// write the certificate's record or the order journal (certificates/ or orders/
// immutable, or the disk full) costs no order at all: both must be writable before an
// order is placed. The failures are
// counted with reason store, come back later and later (1, 2, 4 minutes), Status and the
// error of Once say what is wrong and where. Once the store takes writes again, one
// order, published.
func TestLifecycleStoreRefusesWritesBeforeTheFirstAttempt(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		desc   string
		tmpfs  bool
		refuse func(t *testing.T, h *harness) (restore func())
		errno  error
		names  string // the file the error names, under the state directory
	}{
		{
			desc: "certificates directory immutable",
			refuse: func(t *testing.T, h *harness) func() {
				return immutable(t, filepath.Join(h.stateDir(), "certificates"))
			},
			errno: syscall.EPERM,
			names: "certificates/refused.json",
		},
		{
			// The record can be written, the order journal cannot: an order placed
			// now would be lost at once.
			desc: "orders directory immutable",
			refuse: func(t *testing.T, h *harness) func() {
				return immutable(t, filepath.Join(h.stateDir(), "orders"))
			},
			errno: syscall.EPERM,
			names: "orders/",
		},
		{
			desc:  "disk full",
			tmpfs: true,
			refuse: func(t *testing.T, h *harness) func() {
				free, err := fill(h.stateDir())
				require.NoError(t, err)
				return func() { require.NoError(t, free()) }
			},
			errno: syscall.ENOSPC,
			names: "certificates/refused.json",
		},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, harnessOptions{StateOnTmpfs: tc.tmpfs})
			const name = "refused"
			cfg := h.config(cert(name, "refused.example.test"))
			d := h.daemon(cfg)
			restore := tc.refuse(t, h)

			// Visits every 10 s of the test clock for 10 minutes: the attempts come
			// after 1, 2 and 4 minutes (±25 % jitter).
			const step = 10 * time.Second
			var lastErr error
			for range 60 {
				lastErr = d.Once(t.Context())
				require.Error(t, lastErr, "the store refuses the record")
				h.clock.Advance(step)
			}
			fails := h.ev.of(name, fetcher.StepFailed)
			require.Len(t, fails, 4, "attempts at 0, ~1, ~3 and ~7 minutes")
			for i := 1; i < len(fails); i++ {
				gap := fails[i].at.Sub(fails[i-1].at)
				want := time.Minute << (i - 1)
				assert.GreaterOrEqual(t, gap, want*3/4, "back-off %d", i)
				assert.LessOrEqual(t, gap, want*5/4+step, "back-off %d", i)
			}
			for _, f := range fails {
				assert.ErrorIs(t, f.Err, tc.errno)
			}
			assert.Equal(t, 4, h.failures("store"))
			assert.Zero(t, h.CA.Stats().NewOrders, "no order while the record cannot be written")
			assert.Zero(t, h.CA.Stats().Requests, "not even the CA is contacted")
			assert.Empty(t, h.orders())
			t.Logf("once: %v", lastErr)
			assert.Contains(t, lastErr.Error(), tc.errno.Error())
			assert.Contains(t, lastErr.Error(), filepath.Join(h.stateDir(), tc.names), "the error names the file")

			row := h.status(cfg, name)
			assert.Equal(t, fetcher.StateAbsent, row.State)
			assert.Contains(t, row.Problem, "state store", "status shows that the store refuses writes")
			assert.Contains(t, row.Problem, tc.errno.Error())
			assert.True(t, row.Trouble())

			restore()
			h.clock.Advance(10 * time.Minute) // past the back-off
			require.NoError(t, d.Once(t.Context()))
			assert.Equal(t, 1, h.CA.Stats().NewOrders)
			leaf := h.served(name)
			assert.Equal(t, serial(leaf), recordSerial(t, h.record(name).CertPEM))
			row = h.status(cfg, name)
			assert.Equal(t, fetcher.StatePublished, row.State)
			assert.False(t, row.Trouble(), "%+v", row)
		})
	}
}

// TestLifecycleStoreRefusesTheIssuedCertificate: the store refuses the write of the
// certificate the CA just issued (at StepObtained). Nothing is lost: the engine keeps
// the order and its certificate journaled; when the store takes writes again the next
// attempt stores that very certificate from the journal, without a new order, publishes
// it, and the journal is empty afterwards.
func TestLifecycleStoreRefusesTheIssuedCertificate(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		desc   string
		tmpfs  bool
		refuse func(t *testing.T, h *harness) (refuse, restore func() error)
		errno  error
	}{
		{
			desc: "certificates directory immutable",
			refuse: func(t *testing.T, h *harness) (func() error, func() error) {
				return immutableLater(t, filepath.Join(h.stateDir(), "certificates"))
			},
			errno: syscall.EPERM,
		},
		{
			desc:  "disk full",
			tmpfs: true,
			refuse: func(t *testing.T, h *harness) (func() error, func() error) {
				var free func() error
				return func() (err error) {
						free, err = fill(h.stateDir())
						return err
					}, func() error {
						return free()
					}
			},
			errno: syscall.ENOSPC,
		},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, harnessOptions{StateOnTmpfs: tc.tmpfs})
			const name = "kept"
			cfg := h.config(cert(name, "kept.example.test"))
			d := h.daemon(cfg)
			refuse, restore := tc.refuse(t, h)
			h.ev.on(name, fetcher.StepObtained, func() { assert.NoError(t, refuse()) })

			err := d.Once(t.Context())
			require.Error(t, err)
			t.Logf("once: %v", err)
			assert.ErrorIs(t, err, tc.errno)
			assert.Equal(t, 1, h.CA.Stats().NewOrders)
			assert.Zero(t, h.ev.count(name, fetcher.StepStored))
			assert.NoFileExists(t, h.yml(name))
			orders := h.orders()
			require.Len(t, orders, 1, "the order stays journaled")
			require.NotEmpty(t, orders[0].CertificatePEM, "with the certificate the CA issued")
			issued := recordSerial(t, []byte(orders[0].CertificatePEM))
			row := h.status(cfg, name)
			assert.Equal(t, fetcher.StateOrdering, row.State)
			assert.Contains(t, row.Problem, "state store")
			assert.True(t, row.Trouble())

			require.NoError(t, restore())
			err = d.Once(t.Context())
			require.Error(t, err, "the back-off is still running")
			assert.Contains(t, err.Error(), "waiting until")
			h.clock.Advance(2 * time.Minute)
			require.NoError(t, d.Once(t.Context()))

			assert.Equal(t, 1, h.CA.Stats().NewOrders, "the journaled certificate, no new order")
			assert.Equal(t, 1, h.CA.Stats().Finalizes)
			assert.Equal(t, issued, serial(h.served(name)), "the certificate the CA issued first is served")
			assert.Equal(t, issued, recordSerial(t, h.record(name).CertPEM))
			assert.Empty(t, h.orders(), "the journal forgets the order once the certificate is stored")
			assert.Equal(t, 1, h.ev.count(name, fetcher.StepCollected))
			assert.False(t, h.status(cfg, name).Trouble())
		})
	}
}

// TestLifecycleCorruptRecord: a record that cannot be used is moved aside (quarantine/)
// when it cannot be decoded, counts as absent, and costs exactly one new order; the new
// certificate is published and no further order follows. A record `{}` (or `null`)
// decodes to an empty record: absent, one order.
func TestLifecycleCorruptRecord(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		desc        string
		corrupt     func(valid []byte) []byte
		quarantined bool
	}{
		{desc: "garbage", corrupt: func([]byte) []byte { return []byte("\x00\x17 not JSON at all") }, quarantined: true},
		{desc: "truncated", corrupt: func(valid []byte) []byte { return valid[:len(valid)/2] }, quarantined: true},
		{desc: "empty object", corrupt: func([]byte) []byte { return []byte("{}") }},
		{desc: "null", corrupt: func([]byte) []byte { return []byte("null") }},
		{
			desc: "certificate that does not parse",
			corrupt: func(valid []byte) []byte {
				return regexp.MustCompile(`"certPEM": "[^"]*"`).ReplaceAll(valid, []byte(`"certPEM": "bm90IGEgY2VydGlmaWNhdGU="`))
			},
			quarantined: true,
		},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, harnessOptions{})
			const name = "torn"
			cfg := h.config(cert(name, "torn.example.test"))
			require.NoError(t, h.daemon(cfg).Once(t.Context()))
			first := serial(h.served(name))

			path := filepath.Join(h.stateDir(), "certificates", name+".json")
			valid, err := os.ReadFile(path)
			require.NoError(t, err)
			bad := tc.corrupt(valid)
			require.NoError(t, os.WriteFile(path, bad, 0o600))
			if tc.quarantined {
				row := h.status(cfg, name)
				t.Logf("status: %s", row.Problem)
				assert.Contains(t, row.Problem, "certificates/"+name, "status names the unreadable record")
				assert.Contains(t, row.Problem, h.stateDir())
				assert.True(t, row.Trouble())
			}

			d := h.daemon(cfg) // restarted on the damaged store
			require.NoError(t, d.Once(t.Context()))
			assert.Equal(t, 2, h.CA.Stats().NewOrders, "exactly one new order")
			renewed := serial(h.served(name))
			assert.NotEqual(t, first, renewed)
			assert.Equal(t, renewed, recordSerial(t, h.record(name).CertPEM))
			aside := h.quarantined()
			if tc.quarantined {
				require.Len(t, aside, 1)
				for file, data := range aside {
					assert.True(t, strings.HasPrefix(file, "certificates-"+name+"-"), file)
					if json.Valid(bad) {
						assert.JSONEq(t, string(bad), string(data), "the corrupt record is kept for the operator")
					} else {
						assert.Equal(t, bad, data, "the corrupt record is kept for the operator")
					}
				}
			} else {
				assert.Empty(t, aside)
			}

			for range 3 {
				h.clock.Advance(time.Hour)
				require.NoError(t, d.Once(t.Context()))
			}
			require.NoError(t, h.daemon(cfg).Once(t.Context()))
			assert.Equal(t, 2, h.CA.Stats().NewOrders, "no further order")
			assert.Equal(t, renewed, serial(h.served(name)))
			assert.False(t, h.status(cfg, name).Trouble())
		})
	}
}

// TestLifecycleRenamedCertificate: a certificate renamed in the configuration (same
// domains) keeps its certificate: the new name is published with the same serial, the
// old name is withdrawn, and no order is placed; through a reload of the running daemon
// and across a restart.
func TestLifecycleRenamedCertificate(t *testing.T) {
	t.Parallel()
	t.Run("reload", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, harnessOptions{})
		d := h.daemon(h.config(cert("old", "renamed.example.test")))
		h.run(d)
		h.ev.wait(t, "old", fetcher.StepPublished, 1)
		issued := serial(h.served("old"))

		require.NoError(t, d.Reload(t.Context(), h.config(cert("new", "renamed.example.test"))))
		h.ev.wait(t, "new", fetcher.StepPublished, 1)
		h.ev.wait(t, "old", fetcher.StepWithdrawn, 1)
		assert.Equal(t, issued, serial(h.served("new")), "the same certificate, renamed")
		assert.NoFileExists(t, h.yml("old"))
		assert.Equal(t, 1, h.CA.Stats().NewOrders)
		assert.Zero(t, h.ev.count("new", fetcher.StepOrdering))
	})
	t.Run("restart", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, harnessOptions{})
		first := h.daemon(h.config(cert("old", "renamed.example.test")))
		require.NoError(t, first.Once(t.Context()))
		first.Close()
		issued := serial(h.served("old"))

		cfg := h.config(cert("new", "renamed.example.test"))
		require.NoError(t, h.daemon(cfg).Once(t.Context()))
		assert.Equal(t, issued, serial(h.served("new")), "the same certificate, renamed")
		assert.NoFileExists(t, h.yml("old"))
		assert.Equal(t, 1, h.CA.Stats().NewOrders)
		row := h.status(cfg, "new")
		assert.Equal(t, fetcher.StatePublished, row.State)
		assert.False(t, row.Trouble(), "%+v", row)
	})
}

// TestLifecycleUserFileWithACertificateName: a file of the user's in the output
// directory under a certificate's name (the README's own acme-challenge.yml router) is
// never touched: not overwritten, not removed by a sweep or a withdrawal. The
// certificate is obtained and stored, not published; Status and the error say which
// file is in the way; no further order is placed.
func TestLifecycleUserFileWithACertificateName(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOptions{})
	const name = "acme-challenge"
	require.NoError(t, os.MkdirAll(h.outputDir(), 0o755))
	userFile := h.yml(name)
	mine := []byte("http:\n  routers:\n    acme-challenge:\n      rule: PathPrefix(`/.well-known/acme-challenge/`)\n      service: noop@internal\n")
	require.NoError(t, os.WriteFile(userFile, mine, 0o644))
	untouched := func() {
		t.Helper()
		got, err := os.ReadFile(userFile)
		require.NoError(t, err, "the user's file is still there")
		assert.Equal(t, string(mine), string(got), "the user's file is untouched")
	}

	cfg := h.config(cert(name, "challenge.example.test"), cert("other", "other.example.test"))
	d := h.daemon(cfg)
	err := d.Once(t.Context())
	require.ErrorIs(t, err, output.ErrNotOwned)
	assert.Contains(t, err.Error(), userFile, "the error names the file in the way")
	untouched()
	assert.NotEmpty(t, h.record(name).CertPEM, "the certificate is stored")
	h.served("other")
	row := h.status(cfg, name)
	assert.Contains(t, row.Problem, userFile)
	assert.Contains(t, row.Problem, output.ErrNotOwned.Error())
	assert.True(t, row.Trouble())

	for range 3 {
		h.clock.Advance(2 * time.Hour)
		assert.ErrorIs(t, d.Once(t.Context()), output.ErrNotOwned)
	}
	untouched()
	assert.Equal(t, 2, h.CA.Stats().NewOrders, "stored, so not ordered again")

	// Removed from the configuration: the running daemon withdraws it (scheduler),
	// a later `once` sweeps; neither touches the user's file.
	h.run(d)
	h.ev.wait(t, "other", fetcher.StepPublished, 1)
	require.NoError(t, d.Reload(t.Context(), h.config(cert("other", "other.example.test"))))
	untouched()
	require.NoError(t, h.daemon(h.config(cert("other", "other.example.test"))).Once(t.Context()))
	untouched()
	assert.Zero(t, h.ev.count(name, fetcher.StepWithdrawn))
}
