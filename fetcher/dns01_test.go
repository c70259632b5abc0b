package fetcher_test

import (
	"crypto/x509"
	"encoding/base64"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/certfetch/certfetch/acme"
	"github.com/certfetch/certfetch/fetcher"
	"github.com/certfetch/certfetch/fetcher/config"
	"github.com/certfetch/certfetch/fetcher/dnsprovider"
	"github.com/certfetch/certfetch/internal/secret"
	"github.com/certfetch/certfetch/internal/testkit/loopbackdns"
	"github.com/certfetch/certfetch/internal/testkit/testca"
	"github.com/certfetch/certfetch/internal/testkit/testservers"
)

// dnsHarness is a harness whose resolver answers DNS-01 through lego's rfc2136 provider
// against a real BIND, which the CA validates against too.
type dnsHarness struct {
	*harness
	bind *testservers.BIND
}

func newDNSHarness(t *testing.T, challenge func(bind *testservers.BIND) string) *dnsHarness {
	t.Helper()
	bind := testservers.StartBIND(t)
	h := newHarness(t, harnessOptions{CA: testca.Options{DNSServer: bind.Addr}, Challenge: challenge(bind)})
	return &dnsHarness{harness: h, bind: bind}
}

// verifyFor checks leaf against the CA's roots for name, as a TLS client connecting to
// name would.
func (h *dnsHarness) verifyFor(leaf *x509.Certificate, name string) {
	h.t.Helper()
	rootsPEM, err := h.CA.IssuerRootsPEM()
	require.NoError(h.t, err)
	roots := x509.NewCertPool()
	require.True(h.t, roots.AppendCertsFromPEM(rootsPEM))
	require.NoError(h.t, leaf.VerifyHostname(name))
}

// TestDNS01WildcardAndApexInTheDaemon: a DNS-01 resolver configured in Traefik's words
// issues one certificate for *.dns.test and dns.test through Daemon.Once into the file
// output, under the derived name wildcard.dns.test; it serves a name under the wildcard,
// and no _acme-challenge record is left in BIND's zone.
func TestDNS01WildcardAndApexInTheDaemon(t *testing.T) {
	t.Parallel()
	h := newDNSHarness(t, func(b *testservers.BIND) string { return b.DNSChallenge(b.TSIGSecret, b.Addr) })
	h.config()
	path := h.dir + "/certfetch.yml"
	cfg := loadConfig(t, path, strings.Replace(mustRead(t, path), "certificates: []", "certificates:\n  - domains: [\"*.dns.test\", dns.test]", 1))
	require.Equal(t, "wildcard.dns.test", cfg.Certificates[0].Name)

	require.NoError(t, h.daemon(cfg).Once(t.Context()))
	leaf := h.served("wildcard.dns.test")
	assert.ElementsMatch(t, []string{"*.dns.test", "dns.test"}, leaf.DNSNames)
	h.verifyFor(leaf, "app.dns.test")
	h.verifyFor(leaf, "dns.test")
	assert.Equal(t, 1, h.CA.Stats().NewOrders)
	assert.Empty(t, h.bind.ChallengeRecords(t), "no challenge record left in the zone")
	assert.Empty(t, h.orders(), "the order was collected")
}

// TestDNS01FailuresKeepTheCertificateInService: a certificate in service is due for
// renewal and the DNS side fails in each of four ways. Each attempt fails with an error
// naming the provider and the record's domain in status, reason dns, a back-off; the
// served certificate is untouched and no _acme-challenge record is left in the zone.
func TestDNS01FailuresKeepTheCertificateInService(t *testing.T) {
	t.Parallel()
	wrongSecret := base64.StdEncoding.EncodeToString(make([]byte, 32))
	tests := []struct {
		desc string
		// domain is the certificate's; outside BIND's zone for "not authoritative".
		domain string
		// broken is the resolver's challenge block for the failing attempt.
		broken func(t *testing.T, b *testservers.BIND) string
		// down stops BIND for the failing attempt.
		down     bool
		wantText string
	}{
		{
			desc: "wrong TSIG key", domain: "badkey.dns.test",
			broken:   func(_ *testing.T, b *testservers.BIND) string { return b.DNSChallenge(wrongSecret, b.Addr) },
			wantText: "dns-01 rfc2136: present _acme-challenge.badkey.dns.test: ",
		},
		{
			desc: "server down", domain: "down.dns.test", down: true,
			broken:   func(_ *testing.T, b *testservers.BIND) string { return b.DNSChallenge(b.TSIGSecret, b.Addr) },
			wantText: "dns-01 rfc2136: present _acme-challenge.down.dns.test: ",
		},
		{
			desc: "zone not authoritative", domain: "x." + strings.TrimSuffix(testservers.BINDOutsideZone, "."),
			broken:   func(_ *testing.T, b *testservers.BIND) string { return b.DNSChallenge(b.TSIGSecret, b.Addr) },
			wantText: "dns-01 rfc2136: present _acme-challenge.x.elsewhere.test: ",
		},
		{
			desc: "propagation never observed", domain: "unseen.dns.test",
			broken: func(t *testing.T, b *testservers.BIND) string {
				// A resolver that never has the record, and is required to.
				lb, err := loopbackdns.Start()
				require.NoError(t, err)
				t.Cleanup(func() { assert.NoError(t, lb.Close()) })
				return b.DNSChallenge(b.TSIGSecret, lb.Addr())
			},
			wantText: "dns-01 rfc2136: _acme-challenge.unseen.dns.test not visible after 3s",
		},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			t.Parallel()
			h := newDNSHarness(t, func(b *testservers.BIND) string { return b.DNSChallenge(b.TSIGSecret, b.Addr) })
			path := h.dir + "/certfetch.yml"
			h.config()
			withCert := strings.Replace(mustRead(t, path), "certificates: []", "certificates:\n  - name: keep\n    domains: ["+tt.domain+"]", 1)
			good := loadConfig(t, path, withCert)
			if tt.domain == "x.elsewhere.test" {
				// The CA resolves through BIND, which refuses the outside zone: issue the
				// certificate in service through the harness's own answer instead.
				good = loadConfig(t, path, strings.Replace(withCert, tt.domain, "keep.dns.test", 1))
			}
			require.NoError(t, h.daemon(good).Once(t.Context()))
			before := mustRead(t, h.yml("keep"))
			old := h.served("keep")

			// Renewal is due, and the DNS side is broken.
			h.clock.Advance(time.Until(old.NotAfter) * 2 / 3)
			brokenCfg := strings.Replace(withCert, h.bind.DNSChallenge(h.bind.TSIGSecret, h.bind.Addr), tt.broken(t, h.bind), 1)
			cfg := loadConfig(t, path, brokenCfg)
			if tt.down {
				h.bind.Kill()
			}
			err := h.daemon(cfg).Once(t.Context())
			require.Error(t, err)
			if tt.down {
				h.bind.Start()
			}
			assert.Contains(t, err.Error(), tt.wantText)
			assert.NotContains(t, err.Error(), h.bind.TSIGSecret)
			assert.NotContains(t, err.Error(), wrongSecret)

			st := h.status(cfg, "keep")
			assert.Contains(t, st.LastError, tt.wantText, "status names the provider and the domain")
			assert.Equal(t, "dns", st.Reason)
			assert.Equal(t, 1, st.Failures)
			assert.True(t, st.RetryAt.After(h.clock.Now()), "backed off until %s", st.RetryAt)
			assert.Equal(t, 1, h.failures("dns"))

			assert.Equal(t, before, mustRead(t, h.yml("keep")), "the certificate in service is untouched")
			assert.Equal(t, serial(old), serial(h.served("keep")))
			assert.Empty(t, h.bind.ChallengeRecords(t), "no challenge record left in the zone")
			assert.NotContains(t, h.logs.String(), h.bind.TSIGSecret)
		})
	}
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	return string(data)
}

// dnsResolver parses a configuration whose only resolver, dns, has challenge (a
// dnsChallenge block indented by four spaces).
func dnsResolver(t *testing.T, challenge string) *config.Config {
	t.Helper()
	cfg, err := config.Parse("certfetch.yml", []byte("output: {file: {directory: /srv/traefik}}\nresolvers:\n  dns:\n    caServer: https://ca.example/dir\n"+challenge))
	require.NoError(t, err)
	return cfg
}

// TestCheckDNSProviders: `certfetch check` constructs each DNS-01 resolver's provider
// without any network (nothing listens on the nameserver given), and names the resolver,
// the provider and the missing variable, never a value.
func TestCheckDNSProviders(t *testing.T) {
	t.Parallel()
	tests := []struct {
		desc    string
		env     string
		wantErr string
	}{
		{desc: "variables present", env: "        RFC2136_NAMESERVER: 192.0.2.53\n        RFC2136_TSIG_KEY: k.\n        RFC2136_TSIG_SECRET: " + tsigSecretForCheck + "\n"},
		{desc: "nameserver missing", env: "        RFC2136_TSIG_KEY: k.\n        RFC2136_TSIG_SECRET: " + tsigSecretForCheck + "\n",
			wantErr: "resolver dns: dns-01 provider rfc2136: dnsupdate: some credentials information are missing: DNSUPDATE_NAMESERVER"},
		{desc: "TSIG algorithm unknown", env: "        RFC2136_NAMESERVER: 192.0.2.53\n        RFC2136_TSIG_KEY: k.\n        RFC2136_TSIG_SECRET: " + tsigSecretForCheck + "\n        RFC2136_TSIG_ALGORITHM: md4.\n",
			wantErr: "resolver dns: dns-01 provider rfc2136: dnsupdate: unsupported TSIG algorithm: [redacted]"}, // every env value counts as a secret,
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			t.Parallel()
			cfg := dnsResolver(t, "    dnsChallenge:\n      provider: rfc2136\n      resolvers: [192.0.2.53]\n      env:\n"+tt.env)
			err := fetcher.CheckDNSProviders(cfg)
			if tt.wantErr == "" {
				require.NoError(t, err)
				return
			}
			require.EqualError(t, err, tt.wantErr)
			assert.NotContains(t, err.Error(), tsigSecretForCheck)
		})
	}
}

const tsigSecretForCheck = "c2VjcmV0LWZvci10aGUtY2hlY2s="

// TestProbeDNS: `certfetch probe-dns` presents a record through the provider, sees it
// propagate, removes it; with a wrong key it fails naming the provider and the record, and
// leaves nothing in the zone either way.
func TestProbeDNS(t *testing.T) {
	t.Parallel()
	bind := testservers.StartBIND(t)
	wrongSecret := base64.StdEncoding.EncodeToString(make([]byte, 32))
	for _, tt := range []struct {
		desc, secret, wantErr string
	}{
		{desc: "credentials work", secret: bind.TSIGSecret},
		{desc: "wrong TSIG key", secret: wrongSecret, wantErr: "resolver dns: probe _acme-challenge.probe.dns.test: dns-01 rfc2136: present _acme-challenge.probe.dns.test: "},
	} {
		t.Run(tt.desc, func(t *testing.T) {
			cfg := dnsResolver(t, bind.DNSChallenge(tt.secret, bind.Addr))
			got, err := fetcher.ProbeDNS(t.Context(), cfg.Resolvers["dns"], "probe.dns.test")
			assert.Equal(t, "_acme-challenge.probe.dns.test", got.Record)
			if tt.wantErr == "" {
				require.NoError(t, err)
				assert.Positive(t, got.Visible)
			} else {
				require.ErrorContains(t, err, tt.wantErr)
				assert.NotContains(t, err.Error(), tt.secret)
			}
			assert.Empty(t, bind.ChallengeRecords(t), "no probe record left in the zone")
		})
	}
}

// TestDNS01StartUpRemovesCrashLeftovers: a process killed between presenting a record
// and cleaning it up leaves the record in the zone and listed in the journal. The next
// start removes it before any visit, even though the certificate's next attempt waits
// for a back-off, and keeps the order journaled (one order in all).
func TestDNS01StartUpRemovesCrashLeftovers(t *testing.T) {
	t.Parallel()
	var unseen string
	h := newDNSHarness(t, func(b *testservers.BIND) string {
		lb, err := loopbackdns.Start()
		require.NoError(t, err)
		t.Cleanup(func() { assert.NoError(t, lb.Close()) })
		unseen = lb.Addr()
		return b.DNSChallenge(b.TSIGSecret, lb.Addr())
	})
	path := h.dir + "/certfetch.yml"
	h.config()
	withCert := strings.Replace(mustRead(t, path), "certificates: []", "certificates:\n  - name: crash\n    domains: [crash.dns.test]", 1)
	require.Error(t, h.daemon(loadConfig(t, path, withCert)).Once(t.Context()), "propagation is never observed")
	orders := h.orders()
	require.Len(t, orders, 1, "the order stays journaled")

	// What a killed process leaves: a record journaled as presented, and in the zone.
	leftover := acme.PresentedChallenge{Domain: "crash.dns.test", Token: "token-of-the-killed-attempt", KeyAuth: "key-authorization"}
	orders[0].Presented = append(orders[0].Presented, leftover)
	require.NoError(t, h.Store.Journal().Save(t.Context(), orders[0]))
	provider, err := dnsprovider.New("rfc2136", map[string]secret.Secret{
		"RFC2136_NAMESERVER": secret.New(h.bind.Addr), "RFC2136_TSIG_KEY": secret.New(h.bind.TSIGKey),
		"RFC2136_TSIG_ALGORITHM": secret.New(h.bind.TSIGAlgorithm), "RFC2136_TSIG_SECRET": secret.New(h.bind.TSIGSecret),
	})
	require.NoError(t, err)
	require.NoError(t, provider.Present(leftover.Domain, leftover.Token, leftover.KeyAuth))
	require.Len(t, h.bind.ChallengeRecords(t), 1)

	// The next start: the back-off of the failed attempt is still running.
	fixed := loadConfig(t, path, strings.Replace(withCert, unseen, h.bind.Addr, 1))
	require.Error(t, h.daemon(fixed).Once(t.Context()), "the back-off is still running")
	assert.Empty(t, h.bind.ChallengeRecords(t), "the leftover record is removed at start")
	orders = h.orders()
	require.Len(t, orders, 1, "the order stays journaled for the next attempt")
	assert.Empty(t, orders[0].Presented)
	assert.Equal(t, 1, h.CA.Stats().NewOrders)
}
