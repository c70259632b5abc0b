package config_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/certfetch/certfetch/fetcher/config"
)

// dnsMinimal is a valid configuration of eight lines with one DNS-01 resolver; cases
// append lines 9 and later. Lines indented by six spaces continue
// resolvers.dns.dnsChallenge.
const dnsMinimal = `output:
  file:
    directory: /srv/traefik
resolvers:
  dns:
    caServer: https://ca.example/dir
    dnsChallenge:
      provider: rfc2136
`

// tsigSecret stands for a credential in env and envFile; no message may contain it.
const tsigSecret = "c2VjcmV0LXRzaWcta2V5LWZvci10ZXN0cw=="

// TestDNSChallengeAccepted decodes dnsChallenge blocks and the certificates a DNS-01
// resolver makes valid.
func TestDNSChallengeAccepted(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	envFile := filepath.Join(dir, "rfc2136.env")
	require.NoError(t, os.WriteFile(envFile, []byte("# TSIG for certfetch\n\nexport RFC2136_TSIG_KEY=certfetch.\nRFC2136_TSIG_SECRET=\""+tsigSecret+"\"\nRFC2136_TSIG_ALGORITHM='hmac-sha256.'\n"), 0o600))
	tests := []struct {
		desc  string
		yaml  string
		check func(t *testing.T, cfg *config.Config)
	}{
		{
			desc: "defaults",
			yaml: dnsMinimal,
			check: func(t *testing.T, cfg *config.Config) {
				r := cfg.Resolvers["dns"]
				require.NotNil(t, r.DNSChallenge)
				assert.Equal(t, "rfc2136", r.DNSChallenge.Provider)
				assert.Empty(t, r.DNSChallenge.Resolvers)
				assert.Equal(t, config.Propagation{}, r.DNSChallenge.Propagation)
				assert.Empty(t, r.DNSChallenge.Env)
				assert.Equal(t, config.HTTPChallenge{}, r.HTTPChallenge)
			},
		},
		{
			desc: "resolvers get port 53 unless they name one",
			yaml: dnsMinimal + "      resolvers: [10.0.0.53, \"ns1.corp.example:5353\", \"[2001:db8::53]:53\", \"2001:db8::1\"]\n",
			check: func(t *testing.T, cfg *config.Config) {
				assert.Equal(t, []string{"10.0.0.53:53", "ns1.corp.example:5353", "[2001:db8::53]:53", "[2001:db8::1]:53"}, cfg.Resolvers["dns"].DNSChallenge.Resolvers)
			},
		},
		{
			desc: "propagation in Traefik's words",
			yaml: dnsMinimal + "      propagation:\n        delayBeforeChecks: 10s\n        disableChecks: true\n        disableANSChecks: true\n        requireAllRNS: true\n",
			check: func(t *testing.T, cfg *config.Config) {
				assert.Equal(t, config.Propagation{DelayBeforeChecks: 10 * time.Second, DisableChecks: true, DisableANSChecks: true, RequireAllRNS: true}, cfg.Resolvers["dns"].DNSChallenge.Propagation)
			},
		},
		{
			desc: "env values of any scalar type, envFile beside it",
			yaml: dnsMinimal + "      envFile: " + envFile + "\n      env:\n        RFC2136_TTL: 60\n        RFC2136_TSIG_SECRET_FILE: /run/secrets/tsig\n",
			check: func(t *testing.T, cfg *config.Config) {
				got := map[string]string{}
				for k, v := range cfg.Resolvers["dns"].DNSChallenge.Env {
					got[k] = v.Reveal()
				}
				assert.Equal(t, map[string]string{
					"RFC2136_TSIG_KEY": "certfetch.", "RFC2136_TSIG_SECRET": tsigSecret, "RFC2136_TSIG_ALGORITHM": "hmac-sha256.",
					"RFC2136_TTL": "60", "RFC2136_TSIG_SECRET_FILE": "/run/secrets/tsig",
				}, got)
			},
		},
		{
			desc: "wildcard and apex on a DNS-01 resolver, derived name",
			yaml: dnsMinimal + "certificates:\n  - domains: [\"*.apps.corp.example\", apps.corp.example]\n",
			check: func(t *testing.T, cfg *config.Config) {
				require.Len(t, cfg.Certificates, 1)
				assert.Equal(t, "wildcard.apps.corp.example", cfg.Certificates[0].Name)
				assert.Equal(t, []string{"*.apps.corp.example", "apps.corp.example"}, cfg.Certificates[0].Domains)
				assert.Equal(t, "dns", cfg.Certificates[0].Resolver)
			},
		},
		{
			desc: "HTTP-01 and DNS-01 resolvers side by side",
			yaml: dnsMinimal + "  web:\n    caServer: https://ca.example/dir\n    httpChallenge: {stateless: true}\n" +
				"certificates:\n  - domains: [\"*.corp.example\"]\n    resolver: dns\n  - domains: [www.corp.example]\n    resolver: web\n",
			check: func(t *testing.T, cfg *config.Config) {
				assert.NotNil(t, cfg.Resolvers["dns"].DNSChallenge)
				assert.Nil(t, cfg.Resolvers["web"].DNSChallenge)
				assert.Equal(t, []string{"wildcard.corp.example", "www.corp.example"}, []string{cfg.Certificates[0].Name, cfg.Certificates[1].Name})
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			t.Parallel()
			cfg, err := config.Parse("certfetch.yml", []byte(tt.yaml))
			require.NoError(t, err)
			tt.check(t, cfg)
		})
	}
}

// TestDNSChallengeRejected: every problem in file:line: key: problem form, and no value of
// env or envFile in any message.
func TestDNSChallengeRejected(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(content), 0o600))
		return p
	}
	badLine := write("bad.env", "RFC2136_TSIG_KEY=certfetch.\nRFC2136_TSIG_SECRET: hunter22\n")
	twice := write("twice.env", "RFC2136_TSIG_SECRET="+tsigSecret+"\nRFC2136_TSIG_SECRET="+tsigSecret+"x\n")
	secretFile := write("secret.env", "RFC2136_TSIG_SECRET="+tsigSecret+"\n")
	const head = "output:\n  file:\n    directory: /srv/traefik\nresolvers:\n  dns:\n    caServer: https://ca.example/dir\n"
	tests := []struct {
		desc string
		yaml string
		want string
	}{
		{desc: "both challenges", yaml: dnsMinimal + "    httpChallenge: {stateless: true}\n", want: `certfetch.yml:6: resolvers.dns: set exactly one of httpChallenge or dnsChallenge, got httpChallenge and dnsChallenge`},
		{desc: "provider missing", yaml: head + "    dnsChallenge:\n      resolvers: [10.0.0.53]\n", want: `certfetch.yml:8: resolvers.dns.dnsChallenge.provider: required but missing`},
		{desc: "unknown provider", yaml: head + "    dnsChallenge: {provider: cloudfare}\n", want: `certfetch.yml:7: resolvers.dns.dnsChallenge.provider: dns-01 provider cloudfare: unknown; lego v4 names its providers as in https://go-acme.github.io/lego/dns/ (rfc2136, cloudflare, route53, ...)`},
		{desc: "manual provider", yaml: head + "    dnsChallenge: {provider: manual}\n", want: `certfetch.yml:7: resolvers.dns.dnsChallenge.provider: lego's manual provider waits for someone to press Enter; certfetch runs unattended (use exec or httpreq to run your own hook)`},
		{desc: "Traefik's deprecated delay", yaml: dnsMinimal + "      delayBeforeCheck: 10s\n", want: `certfetch.yml:9: resolvers.dns.dnsChallenge.delayBeforeCheck: deprecated in Traefik and not supported: use propagation.delayBeforeChecks`},
		{desc: "Traefik's deprecated switch", yaml: dnsMinimal + "      disablePropagationCheck: true\n", want: `certfetch.yml:9: resolvers.dns.dnsChallenge.disablePropagationCheck: deprecated in Traefik and not supported: use propagation.disableChecks`},
		{desc: "unknown key with a case hint", yaml: dnsMinimal + "      Resolvers: [10.0.0.53]\n", want: `certfetch.yml:9: resolvers.dns.dnsChallenge.Resolvers: unknown key (did you mean "resolvers"?)`},
		{desc: "empty resolver list", yaml: dnsMinimal + "      resolvers: []\n", want: `certfetch.yml:9: resolvers.dns.dnsChallenge.resolvers: must list at least one DNS server (omit the key to use the system's resolvers)`},
		{desc: "resolver as URL", yaml: dnsMinimal + "      resolvers: [\"udp://10.0.0.53\"]\n", want: `certfetch.yml:9: resolvers.dns.dnsChallenge.resolvers[0]: must be a DNS server as host or host:port, such as 10.0.0.53 or ns1.corp.example:53, got "udp://10.0.0.53"`},
		{desc: "resolver port out of range", yaml: dnsMinimal + "      resolvers: [\"10.0.0.53:70000\"]\n", want: `certfetch.yml:9: resolvers.dns.dnsChallenge.resolvers[0]: must be a DNS server as host or host:port, such as 10.0.0.53 or ns1.corp.example:53, got "10.0.0.53:70000"`},
		{desc: "propagation unknown key", yaml: dnsMinimal + "      propagation: {timeout: 1m}\n", want: `certfetch.yml:9: resolvers.dns.dnsChallenge.propagation.timeout: unknown key`},
		{desc: "propagation delay without unit", yaml: dnsMinimal + "      propagation: {delayBeforeChecks: 10}\n", want: `certfetch.yml:9: resolvers.dns.dnsChallenge.propagation.delayBeforeChecks: must be a duration with a unit such as 30s or 5m, got 10`},
		{desc: "propagation switch as string", yaml: dnsMinimal + "      propagation: {requireAllRNS: \"yes\"}\n", want: `certfetch.yml:9: resolvers.dns.dnsChallenge.propagation.requireAllRNS: must be true or false, got a string`},
		{desc: "env not a mapping", yaml: head + "    dnsChallenge:\n      provider: rfc2136\n      env: [RFC2136_NAMESERVER]\n", want: `certfetch.yml:9: resolvers.dns.dnsChallenge.env: must be a mapping, got a list`},
		{desc: "env name not a variable", yaml: dnsMinimal + "      env:\n        RFC2136-TSIG-SECRET: " + tsigSecret + "\n", want: `certfetch.yml:10: resolvers.dns.dnsChallenge.env.RFC2136-TSIG-SECRET: "RFC2136-TSIG-SECRET" is not a variable name (letters, digits and _, not starting with a digit)`},
		{desc: "env value a mapping", yaml: dnsMinimal + "      env:\n        RFC2136_TSIG_SECRET: {value: x}\n", want: `certfetch.yml:10: resolvers.dns.dnsChallenge.env.RFC2136_TSIG_SECRET: must be a value, got a mapping`},
		{desc: "env value empty", yaml: dnsMinimal + "      env:\n        RFC2136_TSIG_SECRET:\n", want: `certfetch.yml:10: resolvers.dns.dnsChallenge.env.RFC2136_TSIG_SECRET: must be a value, got nothing`},
		{desc: "env and envFile set one variable", yaml: dnsMinimal + "      envFile: " + secretFile + "\n      env:\n        RFC2136_TSIG_SECRET: " + tsigSecret + "\n", want: `certfetch.yml:11: resolvers.dns.dnsChallenge.env.RFC2136_TSIG_SECRET: also set in envFile; set it in one place`},
		{desc: "envFile missing", yaml: dnsMinimal + "      envFile: missing.env\n", want: `certfetch.yml:9: resolvers.dns.dnsChallenge.envFile: cannot read: open missing.env: no such file or directory`},
		{desc: "envFile line without =", yaml: dnsMinimal + "      envFile: " + badLine + "\n", want: `certfetch.yml:9: resolvers.dns.dnsChallenge.envFile: ` + badLine + ` line 2: must be NAME=value`},
		{desc: "envFile sets a variable twice", yaml: dnsMinimal + "      envFile: " + twice + "\n", want: `certfetch.yml:9: resolvers.dns.dnsChallenge.envFile: ` + twice + ` line 2: RFC2136_TSIG_SECRET is set twice`},
		{desc: "wildcard on an HTTP-01 resolver names it", yaml: dnsMinimal + "  web:\n    caServer: https://ca.example/dir\n    httpChallenge: {stateless: true}\ncertificates:\n  - domains: [corp.example, \"*.corp.example\"]\n    resolver: web\n", want: `certfetch.yml:13: certificates[0].domains[1]: wildcard *.corp.example needs the DNS-01 challenge, but resolver web answers HTTP-01 (give it a dnsChallenge)`},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			t.Parallel()
			cfg, err := config.Parse("certfetch.yml", []byte(tt.yaml))
			require.Error(t, err)
			assert.Nil(t, cfg)
			assert.Equal(t, tt.want, err.Error())
			assert.NotContains(t, err.Error(), tsigSecret)
		})
	}
}
