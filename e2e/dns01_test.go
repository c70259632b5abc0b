//go:build e2e

package e2e

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/certfetch/certfetch/internal/testkit/testca"
	"github.com/certfetch/certfetch/internal/testkit/testservers"
)

// TestDNS01WildcardServedByTraefik: the certfetch binary (`certfetch once`) obtains one
// certificate for *.dns.test and dns.test over DNS-01 (lego's rfc2136 provider against a
// real BIND, which the CA validates against), publishes it into the directory a real
// Traefik watches, and Traefik serves it for a name under the wildcard and for the apex,
// verified against the CA's roots. No challenge record is left in the zone.
func TestDNS01WildcardServedByTraefik(t *testing.T) {
	t.Parallel()
	bin := certfetchBinary(t)
	bind := testservers.StartBIND(t)
	backend := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(backend.Close)
	s := newStack(t, stackOptions{
		ca:      testca.Options{DNSServer: bind.Addr},
		domains: []string{"*.dns.test", "dns.test"},
		dynamic: map[string]any{"app.yml": appConfig(backend.URL, route{name: "app", host: "app.dns.test"}, route{name: "apex", host: "dns.test"})},
	})
	root, err := s.ca.WriteTLSRoot(s.dir)
	require.NoError(t, err)
	configPath := filepath.Join(s.dir, "certfetch.yml")
	require.NoError(t, os.WriteFile(configPath, []byte(fmt.Sprintf(`storage: %q
resolvers:
  %s:
    caServer: %s
    caCertificates: [%q]
%scertificates:
  - domains: ["*.dns.test", dns.test]
output:
  file:
    directory: %q
`, filepath.Join(s.dir, "state"), resolverName, s.ca.DirectoryURL(), root, bind.DNSChallenge(bind.TSIGSecret, bind.Addr), s.watchDir)), 0o600))

	out, err := exec.Command(bin, "check", "--config", configPath).CombinedOutput()
	require.NoError(t, err, "certfetch check:\n%s", out)
	out, err = exec.Command(bin, "once", "--config", configPath).CombinedOutput()
	require.NoError(t, err, "certfetch once:\n%s", tail(string(out), 60))
	assert.NotContains(t, string(out), bind.TSIGSecret, "the TSIG secret is never logged")
	assert.FileExists(t, filepath.Join(s.watchDir, "wildcard.dns.test.yml"))

	for _, name := range []string{"app.dns.test", "dns.test"} {
		require.EventuallyWithT(t, func(c *assert.CollectT) {
			leaf, err := s.handshake(name)
			require.NoError(c, err, "TLS handshake verified against the CA's roots for %s", name)
			assert.ElementsMatch(c, []string{"*.dns.test", "dns.test"}, leaf.DNSNames)
		}, reloadTimeout, tick, "Traefik never served the wildcard certificate for %s", name)
	}
	assert.Equal(t, 1, s.ca.Stats().NewOrders)
	assert.Empty(t, bind.ChallengeRecords(t), "no challenge record left in the zone")
}
