//go:build e2e

package e2e

import (
	"bytes"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/certfetch/certfetch/acme"
	"github.com/certfetch/certfetch/fetcher/acmejson"
	"github.com/certfetch/certfetch/fetcher/store"
	"github.com/certfetch/certfetch/internal/testkit/testca"
	"github.com/certfetch/certfetch/internal/testkit/testsupport"
)

// traefikResolverOptions configure startTraefikResolver.
type traefikResolverOptions struct {
	// ca configures the test CA; its HTTPPort is Traefik's web entry point.
	ca testca.Options
	// resolver is the certificatesResolvers name.
	resolver string
	// routes each become a router on websecure with tls.certResolver = resolver.
	routes []route
}

// traefikResolver is a Traefik running its own ACME resolver (HTTP-01 on web)
// against the test CA, the way a user runs it before switching to certfetch.
type traefikResolver struct {
	tr *traefik
	ca *testca.CA
	// caLog is the CA's log (Pebble's own lines included).
	caLog *testsupport.SyncBuffer
	// dir holds acme.json, the CA's TLS root (rootFile) and watchDir.
	dir, acmeJSON, rootFile, watchDir string
	ports                             [3]int
}

// startTraefikResolver runs README's static configuration plus Traefik's own resolver
// (caServer = the test CA, storage = dir/acme.json, httpChallenge on web,
// LEGO_CA_CERTIFICATES = the CA's TLS root) and a router per route asking it. The CA
// must exist before Traefik (static configuration) and dial Traefik's web port, so the
// ports are picked first and the pair is restarted if Traefik finds one taken.
func startTraefikResolver(t testing.TB, opts traefikResolverOptions) *traefikResolver {
	t.Helper()
	backend := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(backend.Close)
	for attempt := 1; ; attempt++ {
		p := freePorts(t, 3)
		r := &traefikResolver{ports: [3]int{p[0], p[1], p[2]}, caLog: &testsupport.SyncBuffer{}, dir: t.TempDir()}
		caOpts := opts.ca
		caOpts.HTTPPort = r.ports[0]
		caOpts.Logger = slog.New(slog.NewTextHandler(r.caLog, &slog.HandlerOptions{Level: slog.LevelDebug}))
		ca, err := testca.Start(caOpts)
		require.NoError(t, err)
		t.Cleanup(func() { ca.Close() })
		r.ca = ca
		r.rootFile, err = ca.WriteTLSRoot(r.dir)
		require.NoError(t, err)
		r.acmeJSON = filepath.Join(r.dir, "acme.json")
		r.watchDir = filepath.Join(r.dir, "dynamic")
		require.NoError(t, os.Mkdir(r.watchDir, 0o755))
		app := appConfig(backend.URL, opts.routes...)
		for _, rt := range opts.routes {
			mapAt(t, mapAt(t, mapAt(t, app, "http"), "routers"), rt.name)["tls"] = map[string]any{"certResolver": opts.resolver}
		}
		writeYAML(t, filepath.Join(r.watchDir, "app.yml"), app)

		r.tr, err = tryStartTraefik(t, r.traefikOptions(map[string]any{"certificatesResolvers": map[string]any{opts.resolver: map[string]any{"acme": map[string]any{
			"caServer":      ca.DirectoryURL(),
			"email":         "e2e@example.test",
			"storage":       r.acmeJSON,
			"httpChallenge": map[string]any{"entryPoint": "web"},
		}}}}))
		if err == errPortTaken && attempt < startAttempts {
			ca.Close()
			continue
		}
		require.NoError(t, err, fmt.Sprintf("attempt %d", attempt))
		return r
	}
}

// traefikOptions are the options of the resolver's Traefik with static.
func (r *traefikResolver) traefikOptions(static map[string]any) traefikOptions {
	return traefikOptions{watchDir: r.watchDir, ports: &r.ports, static: static, env: []string{"LEGO_CA_CERTIFICATES=" + r.rootFile}}
}

// waitStored waits until acme.json holds n certificates of resolver and returns it
// parsed (Traefik writes it in the background, with a plain os.WriteFile: a read may
// catch it half written, which Parse refuses, and the wait goes on).
func (r *traefikResolver) waitStored(t testing.TB, resolver string, n int) *acmejson.Resolver {
	t.Helper()
	var got *acmejson.Resolver
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		data, err := os.ReadFile(r.acmeJSON)
		require.NoError(c, err)
		f, err := acmejson.Parse(data, time.Now())
		require.NoError(c, err)
		for _, res := range f.Resolvers {
			if res.Name == resolver && len(res.Certificates) >= n {
				got = res
				return
			}
		}
		c.Errorf("no %d certificates of %s in acme.json yet", n, resolver)
	}, 2*time.Minute, tick, "Traefik's own resolver never stored the certificates")
	return got
}

// waitServing waits until Traefik presents the certificate with serial (hex) for domain.
func (r *traefikResolver) waitServing(t testing.TB, domain, serial string) {
	t.Helper()
	roots := issuerRoots(t, r.ca)
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		leaf, err := handshake(r.tr.websecure, domain, roots)
		require.NoError(c, err)
		assert.Equal(c, serial, leaf.SerialNumber.Text(16), "serial served for %s", domain)
	}, reloadTimeout, tick, "Traefik never presented serial %s for %s", serial, domain)
}

// TestImportTraefiksOwnResolver is the switch from Traefik's certificatesResolvers with
// the real binaries, as README's "Switching from certificatesResolvers" describes it:
// Traefik's own resolver (HTTP-01) issues certificates for two routers into acme.json
// (the lego v4 format, as written by Traefik itself); the user removes the resolver block
// from Traefik, runs `certfetch import-acme-json` and `certfetch run` with discovery (no
// certificates: in its file: the routers name them). Traefik serves the very same serials,
// the CA saw no new account and no new order, and `certfetch status` says which routers
// ask for each. A forced renewal through the running daemon then goes through the
// imported account: it names the imported certificate in `replaces`, which Pebble accepts
// only from the account that ordered it.
func TestImportTraefiksOwnResolver(t *testing.T) {
	t.Parallel()
	domains := []string{"app.example.test", "api.example.test"}
	r := startTraefikResolver(t, traefikResolverOptions{resolver: "le",
		routes: []route{{name: "app", host: domains[0]}, {name: "api", host: domains[1]}}})
	stored := r.waitStored(t, "le", 2)
	serials := map[string]string{}
	for _, c := range stored.Certificates {
		require.Empty(t, c.Skip)
		serials[c.Domains[0]] = c.Serial
	}
	for _, d := range domains {
		r.waitServing(t, d, serials[d])
	}
	assert.Equal(t, acmejson.FormatLegoV4, stored.Format, "Traefik v3.6.12 writes the lego v4 format")
	traefikStats := r.ca.Stats()
	require.Equal(t, 1, traefikStats.NewAccounts, "Traefik registered one account")
	require.Equal(t, 2, traefikStats.NewOrders)

	bin := certfetchBinary(t)
	configPath := filepath.Join(r.dir, "certfetch.yml")
	stateDir := filepath.Join(r.dir, "state")
	// No certificates and no keyType: the routers say which certificates, and discovered
	// certificates keep the imported ones' type (Traefik's default RSA4096).
	require.NoError(t, os.WriteFile(configPath, []byte(fmt.Sprintf(`storage: %q
resolvers:
  le:
    caServer: %s
    caCertificates: [%q]
    httpChallenge: {stateless: true}
output:
  file: {directory: %q}
traefik:
  api: {url: "http://127.0.0.1:%d"}
  pollInterval: 1s
`, stateDir, r.ca.DirectoryURL(), r.rootFile, r.watchDir, r.ports[2])), 0o600))
	source, err := os.ReadFile(r.acmeJSON)
	require.NoError(t, err)

	run := func(args ...string) (string, string) {
		t.Helper()
		var stdout, stderr bytes.Buffer
		cmd := exec.Command(bin, append(args, "--config", configPath)...)
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		require.NoError(t, cmd.Run(), "certfetch %v\nstdout:\n%s\nstderr:\n%s", args, stdout.String(), stderr.String())
		return stdout.String(), stderr.String()
	}
	r.tr.stop(t) // Traefik would keep renewing (and rewriting acme.json) while it has the resolver
	out, _ := run("import-acme-json", r.acmeJSON)
	t.Logf("certfetch import-acme-json:\n%s", out)
	assert.Equal(t, 2, strings.Count(out, " import  published"), "both certificates imported and published")

	st, err := store.Open(stateDir)
	require.NoError(t, err)
	acct, err := st.LoadAccount(t.Context(), "le", r.ca.DirectoryURL())
	require.NoError(t, err)
	assert.Equal(t, stored.Account.URL, acct.URL, "Traefik's account")
	for _, d := range domains {
		rec, err := st.LoadCertificate(t.Context(), d)
		require.NoError(t, err)
		assert.Equal(t, serials[d], recordSerial(t, rec.CertPEM), "the store holds Traefik's certificate for %s", d)
	}

	// Traefik without its resolver, with its API for certfetch and the plugin's route for
	// the challenges; the routers unchanged.
	thumbprint, _ := run("thumbprint")
	challenge := readYAML(t, filepath.Join(repoRoot, "testdata", "traefik", "certfetch", "acme-challenge.yml"))
	settings := mapAt(t, mapAt(t, mapAt(t, mapAt(t, challenge, "http"), "middlewares"), middlewareName), "plugin")
	settings[pluginName] = map[string]any{"thumbprint": strings.TrimSpace(thumbprint)}
	writeYAML(t, filepath.Join(r.watchDir, "acme-challenge.yml"), challenge)
	r.tr = startTraefik(t, r.traefikOptions(map[string]any{"api": map[string]any{"insecure": true}}))
	r.tr.waitForPlugin(t)
	daemon := startCertfetch(t, bin, "run", "--config", configPath)
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		out, err := exec.Command(bin, "status", "--config", configPath).Output()
		require.NoError(c, err, "status: %s", out)
		for _, name := range []string{"app", "api"} {
			assert.Regexp(c, name+`\.example\.test\s+`+name+`\.example\.test\s+le\s+routers `+name+`@file\s+published`, string(out))
		}
	}, time.Minute, tick, "certfetch took over the routers' certificates")
	for _, d := range domains {
		r.waitServing(t, d, serials[d])
	}
	r.tr.waitForLog(t, "Router uses a nonexistent certificate resolver", reloadTimeout)
	switched := r.ca.Stats()
	assert.Equal(t, traefikStats.NewAccounts, switched.NewAccounts, "the switch: no new account")
	assert.Equal(t, traefikStats.NewOrders, switched.NewOrders, "the switch: no new order")
	assert.Equal(t, traefikStats.Finalizes, switched.Finalizes)
	data, err := os.ReadFile(r.acmeJSON)
	require.NoError(t, err)
	assert.Equal(t, source, data, "acme.json is only read")

	out, _ = run("renew", "--force", domains[0], "--wait", "2m")
	t.Logf("certfetch renew --force:\n%s", out)
	after := r.ca.Stats()
	assert.Equal(t, traefikStats.NewOrders+1, after.NewOrders, "one renewal order")
	assert.Equal(t, traefikStats.NewAccounts, after.NewAccounts, "no registration: the imported account URL is used as is")
	assert.Contains(t, r.caLog.String(), "is a replacement of",
		"the renewal names the imported certificate in replaces; Pebble accepts that only from the account that ordered it")
	acct, err = st.LoadAccount(t.Context(), "le", r.ca.DirectoryURL())
	require.NoError(t, err)
	assert.Equal(t, stored.Account.URL, acct.URL)
	rec, err := st.LoadCertificate(t.Context(), domains[0])
	require.NoError(t, err)
	renewed := recordSerial(t, rec.CertPEM)
	assert.NotEqual(t, serials[domains[0]], renewed, "renewed")
	r.waitServing(t, domains[0], renewed)
	daemon.stop(t)
}

// recordSerial is the hex serial of the first certificate in certPEM.
func recordSerial(t testing.TB, certPEM []byte) string {
	t.Helper()
	leaf, err := acme.ParseLeaf(certPEM)
	require.NoError(t, err)
	return acme.SerialHex(leaf)
}
