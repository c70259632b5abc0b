package fetcher_test

import (
	"context"
	"crypto"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	plugin "github.com/certfetch/certfetch"
	"github.com/certfetch/certfetch/acme"
	"github.com/certfetch/certfetch/acme/http01"
	"github.com/certfetch/certfetch/fetcher"
	"github.com/certfetch/certfetch/fetcher/config"
	"github.com/certfetch/certfetch/fetcher/store"
	"github.com/certfetch/certfetch/internal/secret"
	"github.com/certfetch/certfetch/internal/testkit/testca"
)

// probeEnv is a test CA, a configuration with one resolver and one certificate
// (probe.example.test), its store, and the plugin answering the CA's HTTP-01
// validations in the mode the resolver's challenge needs.
type probeEnv struct {
	ca     *testca.CA
	cfg    *config.Config
	store  *store.Store
	dir    string
	target fetcher.ProbeTarget
}

// newProbeEnv starts everything for challenge "stateless", "webroot" or "listen".
func newProbeEnv(t *testing.T, challenge string, opts testca.Options) *probeEnv {
	t.Helper()
	dir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	opts.HTTPPort = ln.Addr().(*net.TCPAddr).Port
	ca, err := testca.Start(opts)
	require.NoError(t, err)
	t.Cleanup(func() { ca.Close() })
	root, err := ca.WriteTLSRoot(dir)
	require.NoError(t, err)

	var yaml string
	pc := *plugin.CreateConfig()
	switch challenge {
	case "stateless":
		yaml = "{stateless: true}"
	case "webroot":
		pc.Webroot = filepath.Join(dir, "webroot")
		yaml = "{webroot: " + strconv.Quote(pc.Webroot) + "}"
	case "listen":
		// The configuration wants a port: take a free one and release it for the probe.
		l, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		addr := l.Addr().String()
		require.NoError(t, l.Close())
		pc.Upstream = "http://" + addr
		yaml = "{listen: " + strconv.Quote(addr) + "}"
	}
	path := filepath.Join(dir, "certfetch.yml")
	require.NoError(t, os.WriteFile(path, []byte(fmt.Sprintf(`storage: %s
resolvers:
  testca:
    caServer: %s
    caCertificates: [%s]
    httpChallenge: %s
certificates:
  - domains: [probe.example.test]
output: {file: {directory: %s}}
`, strconv.Quote(filepath.Join(dir, "state")), ca.DirectoryURL(), strconv.Quote(root), yaml, strconv.Quote(filepath.Join(dir, "out")))), 0o600))
	cfg, err := config.Load(path)
	require.NoError(t, err)
	st, err := fetcher.OpenStore(context.Background(), cfg.Storage)
	require.NoError(t, err)
	t.Cleanup(func() { st.Close() })
	if challenge == "stateless" {
		pc.Thumbprint, err = fetcher.Thumbprint(t.Context(), st, cfg.Resolvers["testca"], false)
		require.NoError(t, err)
	}
	h, err := plugin.New(context.Background(), http.NotFoundHandler(), &pc, "probe")
	require.NoError(t, err)
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln) //nolint:errcheck // ends with Close
	t.Cleanup(func() { srv.Close() })
	target, err := fetcher.ResolveProbeTarget(cfg, "", nil)
	require.NoError(t, err)
	return &probeEnv{ca: ca, cfg: cfg, store: st, dir: dir, target: target}
}

// lines collects progress lines.
type lines struct {
	mu  sync.Mutex
	all []string
}

func (l *lines) add(s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.all = append(l.all, s)
}

func (l *lines) text() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.all, "\n")
}

// TestProbeChallengeModes probes the instant test CA with each way of answering
// HTTP-01, the listen mode's responder included.
func TestProbeChallengeModes(t *testing.T) {
	t.Parallel()
	for _, challenge := range []string{"stateless", "webroot", "listen"} {
		t.Run(challenge, func(t *testing.T) {
			t.Parallel()
			e := newProbeEnv(t, challenge, testca.Options{})
			report, err := fetcher.Probe(context.Background(), e.store, e.target, fetcher.ProbeOptions{Count: 1})
			require.NoError(t, err)
			assert.Equal(t, challenge, report.Challenge)
			require.Len(t, report.Orders, 1)
			assert.Empty(t, report.Orders[0].Error)
			assert.NotEmpty(t, report.Orders[0].Serial)
			assert.Equal(t, 1, e.ca.Stats().NewOrders)
			if challenge == "listen" {
				// The responder is closed: its address can be bound again.
				l, err := net.Listen("tcp", e.target.Resolver.HTTPChallenge.Listen)
				require.NoError(t, err, "the probe releases the listen address")
				require.NoError(t, l.Close())
			}
		})
	}
}

// TestProbeLeavesTheStateAlone: the probe uses the stored account key but records no
// account URL, order or certificate, and publishes nothing; a second probe finds the
// account the first one registered.
func TestProbeLeavesTheStateAlone(t *testing.T) {
	t.Parallel()
	e := newProbeEnv(t, "stateless", testca.Options{})
	rc := e.target.Resolver
	before, err := e.store.LoadAccount(t.Context(), rc.Name, rc.CAServer)
	require.NoError(t, err)
	require.Empty(t, before.URL)

	first, err := fetcher.Probe(context.Background(), e.store, e.target, fetcher.ProbeOptions{Count: 2})
	require.NoError(t, err)
	assert.Equal(t, "registered", first.Account.Status)
	assert.Empty(t, first.Account.StoredURL)
	require.Len(t, first.Orders, 2)
	assert.NotEqual(t, first.Orders[0].OrderURL, first.Orders[1].OrderURL, "two orders, not one resumed")
	assert.Equal(t, 2, e.ca.Stats().NewOrders)

	after, err := e.store.LoadAccount(t.Context(), rc.Name, rc.CAServer)
	require.NoError(t, err)
	assert.Equal(t, before, after, "the account record is untouched")
	orders, err := e.store.Orders(t.Context())
	require.NoError(t, err)
	assert.Empty(t, orders, "nothing journaled in the store")
	_, err = e.store.LoadCertificate(t.Context(), "probe.example.test")
	assert.ErrorIs(t, err, store.ErrNotFound, "no certificate stored")
	_, err = os.Stat(filepath.Join(e.dir, "out"))
	assert.ErrorIs(t, err, os.ErrNotExist, "nothing published")

	// The daemon registers the same key later and stores the URL; the probe reports it.
	after.URL = first.Account.URL
	require.NoError(t, e.store.SaveAccount(t.Context(), rc.Name, after))
	second, err := fetcher.Probe(context.Background(), e.store, e.target, fetcher.ProbeOptions{Count: 1})
	require.NoError(t, err)
	assert.Equal(t, "existing", second.Account.Status)
	assert.Equal(t, first.Account.URL, second.Account.StoredURL)
	assert.Equal(t, first.Account.URL, second.Account.URL)
}

// TestProbeProgress follows the progress lines of a CA that needs 2 s after finalize,
// with a line every 200 ms while it waits.
func TestProbeProgress(t *testing.T) {
	t.Parallel()
	tests := []struct {
		desc     string
		ca       testca.Options
		wantTick string
		finalize string
	}{
		{
			desc:     "async: the order is polled",
			ca:       testca.Options{Mode: testca.Async, Delay: 2 * time.Second, RetryAfter: time.Second},
			wantTick: "order 1/1: finalize → valid: still waiting, ",
			finalize: fetcher.FinalizeAsynchronous,
		},
		{
			desc:     "sync: the finalize request is held",
			ca:       testca.Options{Mode: testca.Sync, Delay: 2 * time.Second},
			wantTick: "so far (the CA holds the finalize request open)",
			finalize: fetcher.FinalizeSynchronous,
		},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			e := newProbeEnv(t, "stateless", tc.ca)
			var got lines
			report, err := fetcher.Probe(context.Background(), e.store, e.target, fetcher.ProbeOptions{
				Count: 1, Progress: got.add, TickEvery: 200 * time.Millisecond,
			})
			require.NoError(t, err)
			assert.Equal(t, tc.finalize, report.CA.Finalize)
			text := got.text()
			order := []string{
				"directory: reading " + e.ca.DirectoryURL(),
				"account: registered, ",
				"order 1/1 for probe.example.test",
				"order 1/1: new order",
				"order 1/1: validation (authorizations)",
				"order 1/1: finalize → valid",
				tc.wantTick,
				"order 1/1: download",
				"order 1/1: certificate issued in ",
			}
			at := 0
			for _, want := range order {
				i := strings.Index(text[at:], want)
				require.GreaterOrEqual(t, i, 0, "%q after position %d in:\n%s", want, at, text)
				at += i + len(want)
			}
			if tc.ca.Mode == testca.Async {
				assert.Contains(t, text, "(the CA is processing the order: ")
				assert.Contains(t, text, "last Retry-After 1s)")
			}
		})
	}
}

// TestProbeStopsOnPendingOrder: an order the CA does not finish within --timeout, or
// that the user interrupts, ends the probe; the report says the CA may still issue it.
func TestProbeStopsOnPendingOrder(t *testing.T) {
	t.Parallel()
	tests := []struct {
		desc      string
		interrupt bool // cancel the probe once the order is finalized
		wantErr   string
		wantIs    error
	}{
		{desc: "deadline", wantErr: "probe: order 1 not complete within --timeout 3s (status processing; the CA may still issue it)", wantIs: context.DeadlineExceeded},
		{desc: "interrupted", interrupt: true, wantErr: "probe: order 1 interrupted (status processing; the CA may still issue it)", wantIs: context.Canceled},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			e := newProbeEnv(t, "stateless", testca.Options{Mode: testca.Async, Delay: time.Minute, RetryAfter: time.Second})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			opts := fetcher.ProbeOptions{Count: 2, Timeout: 3 * time.Second}
			if tc.interrupt {
				opts.Timeout = time.Minute
				// Once the engine has polled the order, it is known to be processing.
				opts.TickEvery = 100 * time.Millisecond
				opts.Progress = func(line string) {
					if strings.Contains(line, "the CA is processing the order: 1 order poll,") {
						cancel()
					}
				}
			}
			report, err := fetcher.Probe(ctx, e.store, e.target, opts)
			var pending *acme.OrderPendingError
			require.ErrorAs(t, err, &pending)
			assert.ErrorIs(t, err, tc.wantIs)
			assert.Contains(t, err.Error(), tc.wantErr)
			require.Len(t, report.Orders, 1)
			assert.Equal(t, pending.OrderURL, report.Orders[0].OrderURL)
			assert.Equal(t, fetcher.FinalizeAsynchronous, report.Orders[0].Finalize)
			assert.Nil(t, report.Recommendation)
			assert.Equal(t, err.Error(), report.Error)
		})
	}
}

// TestResolveProbeTarget picks the resolver and the names.
func TestResolveProbeTarget(t *testing.T) {
	t.Parallel()
	cfg, err := config.Parse("/etc/certfetch/certfetch.yml", []byte(`timeout: 45s
storage: /var/lib/certfetch
resolvers:
  a: {caServer: "https://a.example.test/dir", httpChallenge: {stateless: true}}
  b: {caServer: "https://b.example.test/dir", timeout: 2m, httpChallenge: {stateless: true}}
  c: {caServer: "https://c.example.test/dir", httpChallenge: {stateless: true}}
certificates:
  - {domains: [one.example.test], resolver: b}
  - {domains: [two.example.test, www.two.example.test], resolver: a, keyType: RSA2048, timeout: 90s}
  - {domains: [three.example.test], resolver: a}
output: {file: {directory: /etc/traefik/certfetch}}
`))
	require.NoError(t, err)
	tests := []struct {
		desc        string
		resolver    string
		names       []string
		wantNames   []string
		wantKeyType acme.KeyType
		wantTimeout time.Duration
		wantErr     string
	}{
		{desc: "the resolver's first certificate, with its key type and deadline", resolver: "a",
			wantNames: []string{"two.example.test", "www.two.example.test"}, wantKeyType: acme.RSA2048, wantTimeout: 90 * time.Second},
		{desc: "the resolver's deadline", resolver: "b", wantNames: []string{"one.example.test"}, wantKeyType: acme.EC256, wantTimeout: 2 * time.Minute},
		{desc: "--names: lower case, trimmed, no repeats; the resolver's deadline", resolver: "b", names: []string{" X.Example.Test", "y.example.test", "x.example.test"},
			wantNames: []string{"x.example.test", "y.example.test"}, wantKeyType: acme.EC256, wantTimeout: 2 * time.Minute},
		{desc: "--names: the global deadline", resolver: "c", names: []string{"z.example.test"}, wantNames: []string{"z.example.test"}, wantKeyType: acme.EC256, wantTimeout: 45 * time.Second},
		{desc: "several resolvers", wantErr: "probe: name a resolver: a, b, c"},
		{desc: "unknown resolver", resolver: "d", wantErr: `probe: unknown resolver "d" (defined: a, b, c)`},
		{desc: "no certificate", resolver: "c", wantErr: "probe: resolver c has no configured certificate: name the domains with --names"},
		{desc: "empty name", resolver: "a", names: []string{"a.example.test", " "}, wantErr: "probe: --names has an empty name"},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			got, err := fetcher.ResolveProbeTarget(cfg, tc.resolver, tc.names)
			if tc.wantErr != "" {
				assert.EqualError(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Same(t, cfg.Resolvers[tc.resolver], got.Resolver)
			assert.Equal(t, tc.wantNames, got.Names)
			assert.Equal(t, tc.wantKeyType, got.KeyType)
			assert.Equal(t, tc.wantTimeout, got.ConfiguredTimeout)
		})
	}
}

// TestACMEConfig builds the engine configuration of a resolver and a stored account.
func TestACMEConfig(t *testing.T) {
	t.Parallel()
	key, err := acme.GenerateKey(acme.EC256)
	require.NoError(t, err)
	keyPEM := acme.MarshalKey(key)
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "not.pem")
	require.NoError(t, os.WriteFile(notPEM, []byte("not a certificate"), 0o600))
	base := func() *config.Resolver {
		return &config.Resolver{
			Name: "r", CAServer: "https://ca.example.test/dir", CASystemCertPool: true,
			HTTP: config.HTTPTimeouts{ResponseHeaderTimeout: 2 * time.Minute, RequestTimeout: 3 * time.Minute},
		}
	}
	tests := []struct {
		desc        string
		resolver    func() *config.Resolver
		account     store.Account
		wantContact []string
		wantEAB     *acme.EAB
		wantErr     string
	}{
		{desc: "plain: directory, key, stored URL, timeouts", resolver: base,
			account: store.Account{KeyPEM: keyPEM, URL: "https://ca.example.test/acct/1"}},
		{desc: "email becomes the contact", resolver: func() *config.Resolver { r := base(); r.Email = "pki@example.test"; return r },
			account: store.Account{KeyPEM: keyPEM}, wantContact: []string{"mailto:pki@example.test"}},
		{desc: "external account binding", resolver: func() *config.Resolver {
			r := base()
			r.EAB = &config.EAB{KID: "kid-1", HMAC: secret.New("c2VjcmV0")}
			return r
		}, account: store.Account{KeyPEM: keyPEM}, wantEAB: &acme.EAB{KID: "kid-1", HMAC: "c2VjcmV0"}},
		{desc: "a broken key", resolver: base, account: store.Account{KeyPEM: []byte("garbage")}, wantErr: "resolver r: account key: acme: parse private key"},
		{desc: "a roots file without a certificate", resolver: func() *config.Resolver {
			r := base()
			r.CACertificates, r.CASystemCertPool = []string{notPEM}, false
			return r
		}, account: store.Account{KeyPEM: keyPEM}, wantErr: "resolver r: acme: read root CA file " + notPEM + ": no PEM certificate in it"},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			rc := tc.resolver()
			got, err := fetcher.ACMEConfig(rc, &tc.account)
			if tc.wantErr != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tc.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, rc.CAServer, got.DirectoryURL)
			assert.True(t, key.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(got.Account.Key.Public()))
			assert.Equal(t, tc.account.URL, got.Account.URL)
			assert.Equal(t, tc.wantContact, got.Account.Contact)
			assert.Equal(t, tc.wantEAB, got.Account.EAB)
			assert.NotNil(t, got.Transport)
			assert.Equal(t, acme.Timeouts{ResponseHeader: 2 * time.Minute, Request: 3 * time.Minute}, got.Timeouts)
			assert.Nil(t, got.Solver, "the caller's")
			assert.Nil(t, got.Journal, "the caller's")
		})
	}
}

// TestChallengeSolver returns each mode's publisher; a listen address in use is an error
// naming the setting.
func TestChallengeSolver(t *testing.T) {
	t.Parallel()
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { busy.Close() })
	tests := []struct {
		desc    string
		hc      config.HTTPChallenge
		want    any
		wantErr string
	}{
		{desc: "stateless", hc: config.HTTPChallenge{Stateless: true}, want: http01.Stateless{}},
		{desc: "webroot", hc: config.HTTPChallenge{Webroot: "/srv/webroot"}, want: &http01.Webroot{}},
		{desc: "listen", hc: config.HTTPChallenge{Listen: "127.0.0.1:0"}, want: &http01.Responder{}},
		{desc: "listen on an address in use", hc: config.HTTPChallenge{Listen: busy.Addr().String()}, wantErr: "resolver r: httpChallenge.listen: "},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			solver, release, err := fetcher.ChallengeSolver(&config.Resolver{Name: "r", HTTPChallenge: tc.hc})
			if tc.wantErr != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tc.wantErr)
				return
			}
			require.NoError(t, err)
			assert.IsType(t, tc.want, solver)
			assert.NoError(t, release(context.Background()))
		})
	}
}

// TestProbeReportsEAB: a CA that requires External Account Binding says so, and the
// probe registers with the resolver's binding.
func TestProbeReportsEAB(t *testing.T) {
	t.Parallel()
	const kid, hmac = "probe-kid", "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W"
	tests := []struct {
		desc      string
		eab       bool
		wantErr   string
		wantNotes []string
	}{
		{desc: "configured", eab: true, wantNotes: []string{}},
		{desc: "missing", wantErr: "(the CA requires External Account Binding and resolver testca has no eab)",
			wantNotes: []string{"the CA requires External Account Binding for new accounts and the resolver has no eab: only an account the CA already knows works"}},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			e := newProbeEnv(t, "stateless", testca.Options{EABKeys: map[string]string{kid: hmac}})
			rc := *e.target.Resolver
			if tc.eab {
				rc.EAB = &config.EAB{KID: kid, HMAC: secret.New(hmac)}
			}
			e.target.Resolver = &rc
			report, err := fetcher.Probe(context.Background(), e.store, e.target, fetcher.ProbeOptions{Count: 1})
			assert.True(t, report.CA.EABRequired)
			assert.Equal(t, tc.eab, report.CA.EABConfigured)
			assert.Equal(t, tc.wantNotes, report.Notes)
			if tc.wantErr != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tc.wantErr)
				assert.Empty(t, report.Orders)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, "registered", report.Account.Status)
			assert.True(t, slices.ContainsFunc(report.Orders, func(o fetcher.ProbeOrder) bool { return o.Error == "" }))
		})
	}
}
