package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// certfetch runs the command line in-process and returns its exit code and
// output.
func certfetch(args ...string) (int, string, string) {
	var stdout, stderr bytes.Buffer
	code := run(args, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

func TestDemoRunsToCompletion(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	dir := t.TempDir()
	// The reported case scaled down: the CA needs longer than one attempt's
	// deadline, so the demo must resume the order to finish.
	err := runDemo(context.Background(), demoOptions{caDelay: 3 * time.Second, timeout: 2 * time.Second, retryAfter: time.Second, dir: dir}, &out)
	require.NoError(t, err, out.String())
	text := out.String()
	assert.Contains(t, text, "attempt 1 ended at its deadline: acme: order")
	assert.Contains(t, text, "the order stays journaled and is resumed")
	assert.Contains(t, text, "certificate issued for demo.certfetch.test")
	assert.Contains(t, text, "the CA saw 1 new-order request(s)")
	assert.FileExists(t, filepath.Join(dir, "traefik", "demo.certfetch.test.yml"))

	// The configuration the demo wrote is a real one: status reads it, and
	// once has nothing to do (the CA is gone, so any order would fail).
	code, stdout, stderr := certfetch("status", "--config", filepath.Join(dir, "certfetch.yml"))
	require.Equal(t, exitOK, code, stderr)
	assert.Regexp(t, `(?m)^demo\.certfetch\.test\s+demo\.certfetch\.test\s+testca\s+file\s+published\s+\d{4}-\d\d-\d\dT\S+\s+\d{4}-\d\d-\d\dT\S+\s+-\s+-$`, stdout)
	code, _, stderr = certfetch("once", "--config", filepath.Join(dir, "certfetch.yml"))
	assert.Equal(t, exitOK, code, stderr)
}

func TestCommandLine(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yml")
	require.NoError(t, os.WriteFile(good, []byte(`storage: `+filepath.Join(dir, "state")+`
resolvers:
  le:
    caServer: https://acme.example.test/directory
    httpChallenge: {stateless: true}
certificates:
  - domains: [www.example.test]
output:
  file: {directory: `+filepath.Join(dir, "out")+`}
`), 0o600))
	bad := filepath.Join(dir, "bad.yml")
	require.NoError(t, os.WriteFile(bad, []byte("timeout: 30\nresolvers: {}\n"), 0o600))
	// DNS-01 resolvers: check builds the provider offline (nothing answers on 192.0.2.53).
	dnsConfig := func(name, env string) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte("storage: "+filepath.Join(dir, "state")+"\noutput: {file: {directory: "+filepath.Join(dir, "out")+"}}\n"+
			"resolvers:\n  dns:\n    caServer: https://ca.example/dir\n    dnsChallenge:\n      provider: rfc2136\n      env: {"+env+"}\n"), 0o600))
		return p
	}
	dnsGood := dnsConfig("dns.yml", "RFC2136_NAMESERVER: 192.0.2.53, RFC2136_TSIG_KEY: k., RFC2136_TSIG_SECRET: c2VjcmV0LXZhbHVl")
	dnsMissing := dnsConfig("dns-missing.yml", "RFC2136_TSIG_KEY: k., RFC2136_TSIG_SECRET: c2VjcmV0LXZhbHVl")

	tests := []struct {
		desc       string
		args       []string
		wantCode   int
		wantStdout string // regexp
		wantStderr string // substring
	}{
		{desc: "no command", args: nil, wantCode: exitUsage, wantStderr: "Usage:"},
		{desc: "help", args: []string{"--help"}, wantCode: exitOK, wantStdout: `certfetch run`},
		{desc: "unknown command", args: []string{"frobnicate"}, wantCode: exitUsage, wantStderr: `unknown command "frobnicate"`},
		{desc: "check good", args: []string{"check", "--config", good}, wantCode: exitOK, wantStdout: `good\.yml: OK \(1 resolvers, 1 certificates\)`},
		{desc: "check bad names line and key", args: []string{"check", "--config", bad}, wantCode: exitUsage, wantStderr: "bad.yml:1: timeout: "},
		{desc: "check missing file", args: []string{"check", "--config", filepath.Join(dir, "nope.yml")}, wantCode: exitUsage, wantStderr: "nope.yml"},
		{desc: "check DNS-01 provider", args: []string{"check", "--config", dnsGood}, wantCode: exitOK, wantStdout: `dns\.yml: OK \(1 resolvers, 0 certificates\)`},
		{desc: "check DNS-01 variable missing", args: []string{"check", "--config", dnsMissing}, wantCode: exitUsage, wantStderr: "dns-missing.yml: resolver dns: dns-01 provider rfc2136: dnsupdate: some credentials information are missing: DNSUPDATE_NAMESERVER"},
		{desc: "probe-dns on an HTTP-01 resolver", args: []string{"probe-dns", "--config", good, "www.example.test"}, wantCode: exitFailure, wantStderr: "resolver le answers HTTP-01; probe-dns needs a dnsChallenge"},
		{desc: "probe-dns without domain", args: []string{"probe-dns", "--config", good}, wantCode: exitUsage, wantStderr: "Usage: certfetch probe-dns"},
		{desc: "check help", args: []string{"check", "--help"}, wantCode: exitOK, wantStderr: "Usage: certfetch check"},
		{desc: "thumbprint", args: []string{"thumbprint", "--config", good}, wantCode: exitOK, wantStdout: `^[A-Za-z0-9_-]{43}\n$`},
		{desc: "thumbprint unknown resolver", args: []string{"thumbprint", "--config", good, "zz"}, wantCode: exitUsage, wantStderr: `unknown resolver "zz"`},
		{desc: "status before issuance", args: []string{"status", "--config", good}, wantCode: exitOK, wantStdout: `(?m)^www\.example\.test\s+www\.example\.test\s+le\s+file\s+absent\s+-\s+-\s+-\s+-$`},
		{desc: "status as JSON", args: []string{"status", "--config", good, "--json"}, wantCode: exitOK, wantStdout: `"state": "absent"`},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			code, stdout, stderr := certfetch(tc.args...)
			assert.Equal(t, tc.wantCode, code, "stdout %s\nstderr %s", stdout, stderr)
			if tc.wantStdout != "" {
				assert.Regexp(t, regexp.MustCompile(tc.wantStdout), stdout)
			}
			assert.Contains(t, stderr, tc.wantStderr)
		})
	}
}

func TestThumbprintIsStable(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "c.yml")
	require.NoError(t, os.WriteFile(cfg, []byte(`storage: `+filepath.Join(dir, "state")+`
resolvers:
  a: {caServer: "https://a.example.test/dir", httpChallenge: {stateless: true}}
  b: {caServer: "https://b.example.test/dir", httpChallenge: {stateless: true}}
output: {file: {directory: `+filepath.Join(dir, "out")+`}}
`), 0o600))
	code, _, stderr := certfetch("thumbprint", "--config", cfg)
	assert.Equal(t, exitUsage, code)
	assert.Contains(t, stderr, "name a resolver: a, b")

	_, first, _ := certfetch("thumbprint", "--config", cfg, "a")
	_, again, _ := certfetch("thumbprint", "--config", cfg, "a")
	_, other, _ := certfetch("thumbprint", "--config", cfg, "b")
	assert.Equal(t, first, again, "the account key is created once and kept")
	assert.NotEqual(t, first, other, "each resolver has its own account")
	assert.Len(t, strings.TrimSpace(first), 43)
}
