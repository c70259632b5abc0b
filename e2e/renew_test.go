//go:build e2e

package e2e

import (
	"bytes"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/certfetch/certfetch/acme"
)

// TestRenewAndRevokeThroughTraefik runs the certfetch binary as an operator would: the
// daemon (`certfetch run`) keeps a certificate that a real Traefik serves; `certfetch
// renew --force` and then `certfetch revoke --reason keyCompromise` ask it (SIGHUP and a
// request in the state directory) for a new certificate. After each, Traefik serves the
// replacement without a restart; the CA reports the revoked serial revoked with reason
// keyCompromise, and the replacement has another key.
func TestRenewAndRevokeThroughTraefik(t *testing.T) {
	t.Parallel()
	const domain = "operator.example.test"
	bin := certfetchBinary(t)
	s := newSiteStack(t, stackOptions{mode: thumbprintMode, domains: []string{domain}}, http.NotFoundHandler())
	s.daemon(t) // writes the configuration and routes the challenges to the plugin
	configPath := filepath.Join(s.dir, "certfetch.yml")

	daemon := startCertfetch(t, bin, "run", "--config", configPath)
	require.Eventually(t, func() bool {
		_, err := os.Stat(filepath.Join(s.watchDir, s.name()+".yml"))
		return err == nil
	}, 2*time.Minute, tick, "the daemon issues and publishes")
	first := s.published(t)
	s.waitServed(t, domain, first)

	command := func(args ...string) string {
		t.Helper()
		var stdout, stderr bytes.Buffer
		cmd := exec.Command(bin, append(args, "--config", configPath, "--wait", "2m")...)
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		require.NoError(t, cmd.Run(), "certfetch %v\nstdout:\n%s\nstderr:\n%s", args, stdout.String(), stderr.String())
		require.Contains(t, stderr.String(), "SIGHUP sent", "the daemon did the work")
		return stdout.String()
	}

	out := command("renew", "--force", domain)
	second := s.published(t)
	require.NotEqual(t, first.SerialNumber, second.SerialNumber)
	assert.Contains(t, out, "renewed: serial "+acme.SerialHex(second))
	s.waitServed(t, domain, second)

	out = command("revoke", domain, "--reason", "keyCompromise")
	third := s.published(t)
	assert.Contains(t, out, "revoked serial "+acme.SerialHex(second)+" (keyCompromise)")
	revocation, revoked := s.ca.Revoked(second.SerialNumber)
	require.True(t, revoked, "the CA revoked serial %s", acme.SerialHex(second))
	assert.Equal(t, int(acme.ReasonKeyCompromise), revocation.Reason)
	assert.NotEqual(t, second.RawSubjectPublicKeyInfo, third.RawSubjectPublicKeyInfo, "a new key")
	s.waitServed(t, domain, third)
	_, firstRevoked := s.ca.Revoked(first.SerialNumber)
	assert.False(t, firstRevoked, "renew --force revokes nothing")
	assert.Equal(t, 3, s.ca.Stats().NewOrders)

	daemon.stop(t)
}
