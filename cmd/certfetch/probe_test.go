package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	plugin "github.com/certfetch/certfetch"
	"github.com/certfetch/certfetch/acme"
	"github.com/certfetch/certfetch/demo"
	"github.com/certfetch/certfetch/fetcher"
	"github.com/certfetch/certfetch/fetcher/config"
	"github.com/certfetch/certfetch/internal/testkit/testca"
	"github.com/certfetch/certfetch/internal/testkit/testservers"
)

// probeDelay is what the slow CA needs after finalize: the reported case (Traefik #11636).
const probeDelay = 42 * time.Second

// probeRetryAfter is the Retry-After the asynchronous slow CA sends while it processes.
const probeRetryAfter = 5 * time.Second

// runConcurrently runs fn as one subtest per case, all at the same time: the cases spend
// most of a minute waiting on a slow CA, and as t.Parallel subtests they would run only
// -parallel (GOMAXPROCS, 2 here) at a time. Package testing allows t.Run from several
// goroutines; the subtests overlap while the parent holds one parallel slot.
func runConcurrently[T any](t *testing.T, cases []T, name func(T) string, fn func(t *testing.T, tc T)) {
	t.Helper()
	var wg sync.WaitGroup
	for _, tc := range cases {
		wg.Go(func() { t.Run(name(tc), func(t *testing.T) { fn(t, tc) }) })
	}
	wg.Wait()
}

// probeJSON runs `certfetch probe ... --json` and decodes the report.
func probeJSON(t *testing.T, args ...string) (int, *fetcher.ProbeReport, string) {
	t.Helper()
	code, stdout, stderr := certfetch(append([]string{"probe", "--json"}, args...)...)
	var report fetcher.ProbeReport
	require.NoError(t, json.Unmarshal([]byte(stdout), &report), "stdout:\n%s\nstderr:\n%s", stdout, stderr)
	return code, &report, stderr
}

// recommendedTimeout reads the recommended timeout from a probe table.
var recommendedTimeout = regexp.MustCompile(`(?m)^  timeout: (\S+) \(configured: 30s\)$`)

// TestProbeSlowCA probes the slow test CA of the reported case, 42 s after finalize,
// in both modes, through the command line: once as a table, once as JSON (four probes
// at once, two orders each). The recommendation covers 42 s with a margin; the
// synchronous case names the held finalize and the response header timeout.
func TestProbeSlowCA(t *testing.T) {
	t.Parallel()
	type slowCase struct {
		desc     string
		mode     testca.SlowMode
		json     bool
		finalize string
	}
	tests := []slowCase{
		{desc: "async, table", mode: testca.Async, finalize: fetcher.FinalizeAsynchronous},
		{desc: "async, json", mode: testca.Async, json: true, finalize: fetcher.FinalizeAsynchronous},
		{desc: "sync, table", mode: testca.Sync, finalize: fetcher.FinalizeSynchronous},
		{desc: "sync, json", mode: testca.Sync, json: true, finalize: fetcher.FinalizeSynchronous},
	}
	runConcurrently(t, tests, func(tc slowCase) string { return tc.desc }, func(t *testing.T, tc slowCase) {
		ca := testca.Options{Mode: tc.mode, Delay: probeDelay}
		if tc.mode == testca.Async {
			ca.RetryAfter = probeRetryAfter
		}
		sb, _, err := demo.Start(demo.Options{Dir: t.TempDir(), CA: ca}, []string{"slow.example.test"})
		require.NoError(t, err)
		t.Cleanup(sb.Close)
		args := []string{"--config", sb.ConfigPath, "--count", "2"}

		if !tc.json {
			code, stdout, stderr := certfetch(append([]string{"probe"}, args...)...)
			t.Logf("$ certfetch probe --config %s --count 2\n%s%s", sb.ConfigPath, stderr, stdout)
			require.Equal(t, exitOK, code, stderr)
			assert.Contains(t, stderr, "order 2/2: finalize → valid: still waiting", "a tick during the wait")
			assert.Regexp(t, `(?m)^1 +0\.\d{3}s +\d\.\d{3}s +4\d\.\ds `, stdout, "order 1's row: finalize → valid takes the CA's 42 s")
			m := recommendedTimeout.FindStringSubmatch(stdout)
			require.NotNil(t, m, stdout)
			timeout, err := time.ParseDuration(m[1])
			require.NoError(t, err)
			assert.GreaterOrEqual(t, timeout, probeDelay+20*time.Second, "42 s plus the margin")
			assert.Contains(t, stdout, "configured 30s is too short")
			if tc.mode == testca.Sync {
				assert.Regexp(t, `finalize +synchronous: the CA held the finalize request open up to 4\d\.\ds`, stdout)
				assert.Contains(t, stderr, "(the CA holds the finalize request open)")
				assert.Contains(t, stdout, "certfetch exempts the finalize request from http.responseHeaderTimeout")
				assert.Regexp(t, `would need a response header timeout above 4\d\.\ds \(1m\d0s with the margin\)`, stdout)
			} else {
				assert.Contains(t, stdout, "finalize   asynchronous: the CA answered the finalize request within 0.")
				assert.Contains(t, stderr, "(the CA is processing the order: ")
				assert.Regexp(t, `Retry-After sent by the CA: finalize 5s ×2, order 5s ×\d+`, stdout)
			}
			return
		}

		code, report, stderr := probeJSON(t, args...)
		require.Equal(t, exitOK, code, stderr)
		require.Len(t, report.Orders, 2)
		slowest := 0.0
		for _, o := range report.Orders {
			assert.Empty(t, o.Error)
			assert.Equal(t, tc.finalize, o.Finalize)
			assert.GreaterOrEqual(t, o.FinalizeSeconds, probeDelay.Seconds())
			assert.InDelta(t, o.TotalSeconds, o.NewOrderSeconds+o.AuthorizationSeconds+o.FinalizeSeconds+o.DownloadSeconds, 0.1, "the phases make up the order")
			slowest = max(slowest, o.TotalSeconds)
		}
		assert.Equal(t, tc.finalize, report.CA.Finalize)
		assert.True(t, report.CA.ARI)
		assert.Contains(t, report.CA.Profiles, testca.DefaultProfile)
		rec := report.Recommendation
		require.NotNil(t, rec)
		assert.GreaterOrEqual(t, rec.TimeoutSeconds, slowest*1.5, "half the slowest order again")
		assert.GreaterOrEqual(t, rec.TimeoutSeconds, slowest+20)
		assert.False(t, rec.ConfiguredTimeoutEnough, "the default 30 s does not cover 42 s")
		assert.Equal(t, config.DefaultResponseHeaderTimeout.String(), rec.ResponseHeaderTimeout, "nothing but finalize is slow: the default stays")
		assert.True(t, rec.ConfiguredResponseHeaderTimeoutEnough)
		if tc.mode == testca.Sync {
			assert.GreaterOrEqual(t, report.CA.FinalizeHoldSeconds, probeDelay.Seconds())
			assert.Empty(t, report.RetryAfter, "the synchronous CA sends none")
			assert.Contains(t, strings.Join(rec.ResponseHeaderTimeoutReasons, "\n"), "the CA finalizes synchronously")
		} else {
			assert.Less(t, report.CA.FinalizeHoldSeconds, 5.0, "answered at once")
			require.NotEmpty(t, report.RetryAfter)
			assert.Equal(t, fetcher.RetryAfterCount{Where: acme.RequestFinalize, Seconds: 5, Count: 2}, report.RetryAfter[0])
			assert.Equal(t, acme.RequestOrder, report.RetryAfter[1].Where)
			assert.GreaterOrEqual(t, report.RetryAfter[1].Count, 2*7, "about 8 polls per order of 42 s at 5 s")
		}
	})
}

// stepCAProbe is a configuration for the real step-ca (v0.30.2) with the plugin in
// thumbprint mode answering its HTTP-01 validations.
//
// step-ca validates HTTP-01 on port 80 of the name (every name resolves to 127.0.0.1
// here), which is closed in tests. Binding 127.0.0.1:80 would work as root but makes
// tests collide with each other and with anything else on the machine that wants port 80;
// step-ca's own --acme-http-port (with --insecure), which StartStepCA sets from
// StepCAOptions.HTTPPort, points validation at the plugin's free port instead.
func stepCAProbe(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ca := testservers.StartStepCA(t, testservers.StepCAOptions{HTTPPort: ln.Addr().(*net.TCPAddr).Port})

	dir := t.TempDir()
	path := filepath.Join(dir, "certfetch.yml")
	require.NoError(t, os.WriteFile(path, []byte(fmt.Sprintf(`storage: %s
resolvers:
  stepca:
    caServer: %s
    caCertificates: [%s]
    httpChallenge: {stateless: true}
certificates:
  - domains: [probe.stepca.test, www.probe.stepca.test]
output: {file: {directory: %s}}
`, strconv.Quote(filepath.Join(dir, "state")), ca.DirectoryURL, strconv.Quote(ca.RootFile), strconv.Quote(filepath.Join(dir, "out")))), 0o600))

	cfg, err := config.Load(path)
	require.NoError(t, err)
	st, err := fetcher.OpenStore(context.Background(), cfg.Storage)
	require.NoError(t, err)
	thumbprint, err := fetcher.Thumbprint(t.Context(), st, cfg.Resolvers["stepca"], false)
	require.NoError(t, err)
	require.NoError(t, st.Close())
	handler, err := plugin.New(context.Background(), http.NotFoundHandler(), &plugin.Config{Thumbprint: thumbprint}, "probe")
	require.NoError(t, err)
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln) //nolint:errcheck // ends with Close
	t.Cleanup(func() { srv.Close() })
	return path
}

// TestProbeStepCA probes the real step-ca as an internal CA: it registers the account on
// the first probe and finds it on the second, finalizes synchronously (it signs during
// the finalize request), and offers neither ARI nor profiles nor EAB.
func TestProbeStepCA(t *testing.T) {
	t.Parallel()
	path := stepCAProbe(t)

	code, stdout, stderr := certfetch("probe", "--config", path, "--count", "2")
	t.Logf("$ certfetch probe --config %s --count 2\n%s%s", path, stderr, stdout)
	require.Equal(t, exitOK, code, stderr)
	assert.Contains(t, stdout, "account    registered: https://127.0.0.1:")
	assert.Contains(t, stdout, "profiles   none offered (no meta.profiles)")
	assert.Contains(t, stdout, "ARI        no (no renewalInfo in the directory)")
	assert.Contains(t, stdout, "EAB        not required; no eab configured")

	code, report, stderr := probeJSON(t, "--config", path, "--count", "1")
	require.Equal(t, exitOK, code, stderr)
	assert.Equal(t, "existing", report.Account.Status, "the first probe registered the key")
	assert.Equal(t, []string{"probe.stepca.test", "www.probe.stepca.test"}, report.Names, "the resolver's first certificate")
	assert.False(t, report.CA.ARI)
	assert.Empty(t, report.CA.RenewalInfoURL)
	assert.Empty(t, report.CA.Profiles)
	assert.False(t, report.CA.EABRequired)
	assert.Equal(t, fetcher.FinalizeSynchronous, report.CA.Finalize, "step-ca signs during finalize")
	require.Len(t, report.Orders, 1)
	o := report.Orders[0]
	assert.Empty(t, o.Error)
	assert.Zero(t, o.OrderPolls, "no poll after a finalize answered valid")
	assert.Positive(t, o.AuthorizationSeconds, "two names validated")
	require.NotNil(t, o.NotAfter)
	assert.InDelta(t, 24*time.Hour, o.NotAfter.Sub(*o.NotBefore), float64(2*time.Minute), "step-ca's default 24 h certificates")
	assert.Empty(t, report.RetryAfter, "step-ca sends no Retry-After")
	require.NotNil(t, report.Recommendation)
	assert.Equal(t, "30s", report.Recommendation.Timeout, "a fast CA: the margin alone, rounded up")
	assert.True(t, report.Recommendation.ConfiguredTimeoutEnough)
}

// TestProbeFailedOrder: an order the CA cannot validate stops the probe with exit code 1
// and a report that says why, without a recommendation.
func TestProbeFailedOrder(t *testing.T) {
	t.Parallel()
	sb, _, err := demo.Start(demo.Options{Dir: t.TempDir()}, []string{"fails.example.test"})
	require.NoError(t, err)
	t.Cleanup(sb.Close)
	// Another state directory holds another account key, whose thumbprint the sandbox's
	// plugin does not answer with: every validation fails.
	cfg, err := os.ReadFile(sb.ConfigPath)
	require.NoError(t, err)
	stateLine := "storage: " + strconv.Quote(filepath.Join(sb.Dir, "state"))
	require.Contains(t, string(cfg), stateLine)
	path := filepath.Join(t.TempDir(), "other-account.yml")
	other := strings.Replace(string(cfg), stateLine, "storage: "+strconv.Quote(t.TempDir()), 1)
	require.NoError(t, os.WriteFile(path, []byte(other), 0o600))

	code, report, stderr := probeJSON(t, "--config", path, "--count", "3")
	assert.Equal(t, exitFailure, code, stderr)
	require.Len(t, report.Orders, 1, "the probe stops at the first failure")
	assert.Contains(t, report.Orders[0].Error, "probe: order 1: acme: authorization for fails.example.test is invalid")
	assert.Equal(t, report.Orders[0].Error, report.Error)
	assert.Nil(t, report.Recommendation)
	assert.Contains(t, stderr, "certfetch probe: order 1: acme: authorization")
	assert.Contains(t, stderr, "order 1/3 failed after")
}

// TestProbeCommandLine covers the usage errors, which need no CA.
func TestProbeCommandLine(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name, body string) string {
		path := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(path, []byte("storage: "+filepath.Join(dir, "state-"+name)+"\n"+body+
			"output: {file: {directory: "+filepath.Join(dir, "out")+"}}\n"), 0o600))
		return path
	}
	two := write("two.yml", `resolvers:
  a: {caServer: "https://a.example.test/dir", httpChallenge: {stateless: true}}
  b: {caServer: "https://b.example.test/dir", httpChallenge: {stateless: true}}
`)
	bare := write("bare.yml", `resolvers:
  a: {caServer: "https://a.example.test/dir", httpChallenge: {stateless: true}}
`)
	tests := []struct {
		desc       string
		args       []string
		wantCode   int
		wantStderr string
	}{
		{desc: "help says the orders are real", args: []string{"--help"}, wantCode: exitOK, wantStderr: "THE ORDERS ARE REAL"},
		{desc: "several resolvers need --resolver", args: []string{"--config", two}, wantCode: exitUsage, wantStderr: "certfetch probe: name a resolver: a, b"},
		{desc: "unknown resolver", args: []string{"--config", two, "--resolver", "zz"}, wantCode: exitUsage, wantStderr: `unknown resolver "zz" (defined: a, b)`},
		{desc: "no certificate and no --names", args: []string{"--config", bare}, wantCode: exitUsage, wantStderr: "resolver a has no configured certificate: name the domains with --names"},
		{desc: "empty name", args: []string{"--config", bare, "--names", "a.example.test,"}, wantCode: exitUsage, wantStderr: "--names has an empty name"},
		{desc: "count zero", args: []string{"--config", bare, "--count", "0"}, wantCode: exitUsage, wantStderr: "--count must be at least 1"},
		{desc: "bad configuration", args: []string{"--config", filepath.Join(dir, "missing.yml")}, wantCode: exitUsage, wantStderr: "missing.yml"},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			code, stdout, stderr := certfetch(append([]string{"probe"}, tc.args...)...)
			assert.Equal(t, tc.wantCode, code, "stdout %s\nstderr %s", stdout, stderr)
			assert.Contains(t, stderr, tc.wantStderr)
			assert.Empty(t, stdout, "no report without a probe")
		})
	}
}

// TestProbeJSONFieldsDocumented: README's table of the --json report names every field
// of fetcher.ProbeReport (a field named in full, as `.name` after its sibling, or as
// `name` inside its parent's row).
func TestProbeJSONFieldsDocumented(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	require.NoError(t, err)
	start := strings.Index(string(readme), "`--json` prints the same report")
	require.GreaterOrEqual(t, start, 0, "README's --json section")
	section := string(readme)[start:]
	section = section[:strings.Index(section, "\n### ")]

	// walk checks the fields of typ's struct, if it is one (through pointers and slices).
	var walk func(prefix string, typ reflect.Type) (isStruct bool)
	walk = func(prefix string, typ reflect.Type) bool {
		for typ.Kind() == reflect.Pointer || typ.Kind() == reflect.Slice {
			if typ.Kind() == reflect.Slice {
				prefix += "[]"
			}
			typ = typ.Elem()
		}
		if typ.Kind() != reflect.Struct || typ == reflect.TypeFor[time.Time]() {
			return false
		}
		for f := range typ.Fields() {
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			require.NotEmpty(t, name, "%s.%s has a json tag", typ, f.Name)
			path := strings.TrimPrefix(prefix+"."+name, ".")
			if walk(path, f.Type) {
				continue // documented by its fields
			}
			documented := strings.Contains(section, "`"+path+"`") || strings.Contains(section, "`."+name+"`") || strings.Contains(section, "`"+name+"`")
			assert.True(t, documented, "README documents %s", path)
		}
		return true
	}
	walk("", reflect.TypeFor[fetcher.ProbeReport]())
}
