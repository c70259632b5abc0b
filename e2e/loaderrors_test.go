//go:build e2e

package e2e

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestConfigErrorsInTraefik checks README's promise about bad plugin
// settings in a real Traefik: the error names the key (README's table of
// load-time errors), Traefik logs it for the router that uses the
// middleware, and that router is disabled (its challenges get Traefik's 404,
// never an answer built from a half-valid configuration). One Traefik holds
// every case, each on its own router and host.
func TestConfigErrorsInTraefik(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name     string
		settings map[string]any
		message  string
	}{
		{"none", map[string]any{"domains": "a.example.test"}, "set exactly one of thumbprint, webroot or upstream (none is set)"},
		{"two", map[string]any{"thumbprint": "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs", "webroot": "/srv/webroot"}, "(thumbprint and webroot are set)"},
		{"thumbprint", map[string]any{"thumbprint": "too-short"}, "thumbprint: want the 43-character base64url SHA-256 JWK thumbprint"},
		{"webroot", map[string]any{"webroot": "relative/dir"}, "webroot: want an absolute directory path"},
		{"upstream", map[string]any{"upstream": "ftp://127.0.0.1:21"}, "upstream: want a base URL such as http://127.0.0.1:8402"},
		{"timeout", map[string]any{"upstream": "http://127.0.0.1:8402", "upstreamTimeout": "3"}, "upstreamTimeout: want a positive duration such as"},
		{"domains", map[string]any{"thumbprint": "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs", "domains": []string{"ok.example.test", "bad domain"}}, "domains[1]: want a DNS name or *.name"},
	}
	routers, middlewares := map[string]any{}, map[string]any{}
	for _, c := range cases {
		routers["bad-"+c.name] = map[string]any{
			"entryPoints": []string{"web"},
			"rule":        fmt.Sprintf("Host(`%s.example.test`) && PathPrefix(`/.well-known/acme-challenge/`)", c.name),
			"middlewares": []string{"bad-" + c.name},
			"service":     "noop@internal",
		}
		middlewares["bad-"+c.name] = map[string]any{"plugin": map[string]any{pluginName: c.settings}}
	}
	watchDir := filepath.Join(t.TempDir(), "dynamic")
	require.NoError(t, os.Mkdir(watchDir, 0o755))
	writeYAML(t, filepath.Join(watchDir, "bad.yml"), map[string]any{"http": map[string]any{"routers": routers, "middlewares": middlewares}})
	tr := startTraefik(t, traefikOptions{watchDir: watchDir})

	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			line := tr.waitForLog(t, c.message, reloadTimeout)
			assert.Contains(t, line, "bad-"+c.name, "the log line names the router or middleware")
			req, err := http.NewRequest(http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/.well-known/acme-challenge/%s", tr.web, probeToken), nil)
			require.NoError(t, err)
			req.Host = c.name + ".example.test"
			resp, err := noRedirectClient().Do(req)
			require.NoError(t, err)
			resp.Body.Close()
			assert.Equal(t, http.StatusNotFound, resp.StatusCode, "the router with the broken middleware is disabled")
			assert.False(t, strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") && resp.StatusCode == http.StatusOK)
		})
	}
}
