package acme_test

import (
	"context"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/go-acme/lego/v4/challenge"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/certfetch/certfetch"
	"github.com/certfetch/certfetch/acme"
	"github.com/certfetch/certfetch/acme/http01"
	"github.com/certfetch/certfetch/internal/testkit/testca"
)

// TestWithPlugin gets certificates through the certfetch plugin in each of its modes, the
// CA's validator talking to the plugin and the plugin to what the engine published.
func TestWithPlugin(t *testing.T) {
	t.Parallel()

	tests := []struct {
		desc string
		// mode returns the solver the engine publishes with and the plugin configuration
		// that serves it; c is the engine's client (for the thumbprint).
		mode func(t *testing.T, c *acme.Client) (challenge.Provider, *certfetch.Config)
	}{
		{
			desc: "thumbprint mode, stateless publisher",
			mode: func(_ *testing.T, c *acme.Client) (challenge.Provider, *certfetch.Config) {
				return http01.Stateless{}, &certfetch.Config{Thumbprint: c.Thumbprint()}
			},
		},
		{
			desc: "webroot mode, webroot publisher",
			mode: func(t *testing.T, _ *acme.Client) (challenge.Provider, *certfetch.Config) {
				dir := t.TempDir()

				return http01.NewWebroot(dir), &certfetch.Config{Webroot: dir}
			},
		},
		{
			desc: "upstream mode, responder",
			mode: func(t *testing.T, _ *acme.Client) (challenge.Provider, *certfetch.Config) {
				r := startResponder(t)

				return r, &certfetch.Config{Upstream: "http://" + r.Addr().String(), UpstreamTimeout: "3s"}
			},
		},
	}

	for _, test := range tests {
		t.Run(test.desc, func(t *testing.T) {
			t.Parallel()

			// The plugin listens where the CA validates; it starts serving once the
			// account (and so the thumbprint) exists.
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			require.NoError(t, err)

			s := setup{ca: startCA(t, testca.Options{}, ln.Addr())}
			cfg := s.config(t)
			cfg.Solver = http01.Stateless{}
			c := s.client(t, cfg)

			solver, pluginCfg := test.mode(t, c)

			plugin, err := certfetch.New(context.Background(), http.NotFoundHandler(), pluginCfg, "certfetch-test")
			require.NoError(t, err)

			srv := &http.Server{Handler: plugin, ReadHeaderTimeout: 5 * time.Second}
			go func() { _ = srv.Serve(ln) }()
			t.Cleanup(func() { assert.NoError(t, srv.Close()) })

			cfg.Account.URL = c.AccountURL()
			cfg.Solver = solver
			c = s.client(t, cfg)

			req := acme.Request{Names: []string{"plugin.example.com", "www.plugin.example.com"}, Profile: testca.DefaultProfile}
			cert, _, err := obtain(t, c, req, 30*time.Second)
			require.NoError(t, err)
			requireCert(t, cert, req.Names...)
		})
	}
}
