//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/certfetch/certfetch/acme/http01"
)

// Load benchmarks against a real Traefik. Compare with benchstat:
//
//	TRAEFIK_BIN=... go test -tags e2e -run '^$' -bench Traefik -count 10 ./e2e/ > traefik.txt
//	benchstat -col /route traefik.txt   # pass-through: plugin versus no middleware
//	benchstat -col /mode traefik.txt    # challenge answers per mode
//
// Client, Traefik and backend share the machine's cores, so absolute
// numbers are low; the ratio between routes measured side by side is the
// figure that matters.

const (
	benchToken   = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"
	benchKeyAuth = benchToken + ".NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
)

// BenchmarkTraefikPassThrough: requests per second through Traefik on an
// HTTPS route with the plugin attached and on the same route without it.
func BenchmarkTraefikPassThrough(b *testing.B) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "ok")
	}))
	b.Cleanup(backend.Close)
	s := newStack(b, stackOptions{
		mode:    thumbprintMode,
		domains: []string{viaPlugin, direct},
		dynamic: map[string]any{"app.yml": appConfig(backend.URL,
			route{name: "app-plugin", host: viaPlugin, plugin: true},
			route{name: "app-direct", host: direct})},
	})
	d := s.daemon(b)
	require.NoError(b, once(b, d))
	leaf := s.published(b)
	s.waitServed(b, viaPlugin, leaf)
	s.waitServed(b, direct, leaf)
	client := s.httpsClient()

	for _, r := range []struct{ name, host string }{{"direct", direct}, {"plugin", viaPlugin}} {
		b.Run("route="+r.name, func(b *testing.B) {
			benchGET(b, client, "https://"+r.host+"/", http.StatusOK, "ok", "")
		})
	}
}

// BenchmarkTraefikChallenge: challenge answers per second through Traefik's
// HTTP entry point, per plugin mode.
func BenchmarkTraefikChallenge(b *testing.B) {
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	for _, mode := range []challengeMode{thumbprintMode, webrootMode, upstreamMode} {
		// A Traefik per mode: reconfiguring one would leave the previous
		// mode answering (identically) until the reload lands.
		s := newStack(b, stackOptions{mode: mode, domains: []string{viaPlugin}})
		var settings map[string]any
		switch mode {
		case thumbprintMode:
			settings = map[string]any{"thumbprint": "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"}
		case webrootMode:
			dir := filepath.Join(s.webroot, ".well-known", "acme-challenge")
			require.NoError(b, os.MkdirAll(dir, 0o755))
			require.NoError(b, os.WriteFile(filepath.Join(dir, benchToken), []byte(benchKeyAuth), 0o644))
			settings = map[string]any{"webroot": s.webroot}
		case upstreamMode:
			responder := http01.NewResponder()
			require.NoError(b, responder.Listen("127.0.0.1:0"))
			b.Cleanup(func() { _ = responder.Close(context.Background()) })
			require.NoError(b, responder.Present(viaPlugin, benchToken, benchKeyAuth))
			settings = map[string]any{"upstream": "http://" + responder.Addr().String()}
		}
		s.routeChallenges(b, settings)
		url := fmt.Sprintf("http://127.0.0.1:%d/.well-known/acme-challenge/%s", s.traefik.web, benchToken)
		b.Run("mode="+string(mode), func(b *testing.B) {
			benchGET(b, client, url, http.StatusOK, benchKeyAuth, viaPlugin)
		})
	}
}

// benchGET sends GETs from parallel goroutines and checks every answer.
func benchGET(b *testing.B, client *http.Client, url string, status int, body, host string) {
	b.SetParallelism(4) // 8 connections on 2 cores: enough to keep Traefik busy
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req, err := http.NewRequest(http.MethodGet, url, nil)
			if err != nil {
				b.Error(err)
				return
			}
			if host != "" {
				req.Host = host
			}
			resp, err := client.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			got, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != status || string(got) != body {
				b.Errorf("GET %s: %d %q, %v", url, resp.StatusCode, got, err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
}
