//go:build e2e

package e2e

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestPluginModesThroughTraefik proves README's setup end to end for every
// plugin mode: the CA's validator reaches the plugin through Traefik's web
// entry point despite the web→websecure redirect (allowACMEByPass), certfetch
// gets the certificate in one order, writes it for the file provider, and
// Traefik presents exactly that certificate on HTTPS for the domain, verified
// against the CA's issuing roots. The CA can reach the key authorization only
// through Traefik: in thumbprint mode nothing else knows it, in webroot mode
// only the plugin reads the files, in upstream mode only the plugin knows the
// responder's port.
func TestPluginModesThroughTraefik(t *testing.T) {
	for _, mode := range []challengeMode{thumbprintMode, webrootMode, upstreamMode} {
		t.Run(string(mode), func(t *testing.T) {
			t.Parallel()
			domain := string(mode) + ".example.test"
			s := newSiteStack(t, stackOptions{mode: mode, domains: []string{domain}},
				http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
					io.WriteString(w, "backend for "+domain)
				}))
			d := s.daemon(t)
			assertRedirected(t, s.traefik, domain)

			require.NoError(t, once(t, d))
			assert.Equal(t, 1, s.ca.Stats().NewOrders)
			leaf := s.published(t)
			assert.Equal(t, []string{domain}, leaf.DNSNames)
			s.waitServed(t, domain, leaf)

			client := s.httpsClient()
			resp, err := client.Get("https://" + domain + "/")
			require.NoError(t, err)
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			require.NoError(t, err)
			assert.Equal(t, "backend for "+domain, string(body))
			assert.Equal(t, leaf.SerialNumber, resp.TLS.PeerCertificates[0].SerialNumber)
		})
	}
}

// assertRedirected checks that the redirect README configures is in force
// for everything but the challenge path, so the challenges above really
// went through allowACMEByPass and not around a missing redirect.
func assertRedirected(t testing.TB, tr *traefik, domain string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/some/page", tr.web), nil)
	require.NoError(t, err)
	req.Host = domain
	resp, err := noRedirectClient().Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Contains(t, []int{http.StatusMovedPermanently, http.StatusPermanentRedirect}, resp.StatusCode)
	assert.True(t, strings.HasPrefix(resp.Header.Get("Location"), "https://"+domain), "Location %q", resp.Header.Get("Location"))
}

// route is one router of the test's backend on the websecure entry point.
type route struct {
	name, host string
	plugin     bool // attach README's middleware (acme-http01)
}

// appConfig is a dynamic configuration with TLS routers on websecure to one
// backend. The certificate comes from the TLS store (certfetch's file), so
// the routers need only `tls: {}`.
func appConfig(backendURL string, routes ...route) map[string]any {
	routers := map[string]any{}
	for _, r := range routes {
		router := map[string]any{
			"entryPoints": []string{"websecure"},
			"rule":        fmt.Sprintf("Host(`%s`)", r.host),
			"service":     "app",
			"tls":         map[string]any{},
		}
		if r.plugin {
			router["middlewares"] = []string{middlewareName}
		}
		routers[r.name] = router
	}
	return map[string]any{"http": map[string]any{
		"routers": routers,
		"services": map[string]any{"app": map[string]any{
			"loadBalancer": map[string]any{"servers": []map[string]any{{"url": backendURL}}},
		}},
	}}
}
