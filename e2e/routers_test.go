//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	traefikapi "github.com/certfetch/certfetch/fetcher/traefik"
	"github.com/certfetch/certfetch/internal/testkit/testservers"
)

// apiStatic turns on Traefik's API on the traefik entry point (the ping port), as
// README's switching guide does: api.insecure, reachable on loopback only.
var apiStatic = map[string]any{"api": map[string]any{"insecure": true}}

// routersFile is a dynamic configuration of routers that ask Traefik for certificates
// through certResolver "le", which no certificatesResolvers entry defines (the user
// deleted it to switch to certfetch), in every shape the derivation knows.
func routersFile(backendURL string) map[string]any {
	tlsLE := map[string]any{"certResolver": "le"}
	router := func(rule string, tls map[string]any) map[string]any {
		r := map[string]any{"entryPoints": []string{"websecure"}, "rule": rule, "service": "app"}
		if tls != nil {
			r["tls"] = tls
		}
		return r
	}
	legacy := router("Host(`a.legacy.example.test`, `b.legacy.example.test`)", tlsLE)
	legacy["ruleSyntax"] = "v2"
	return map[string]any{
		"http": map[string]any{
			"routers": map[string]any{
				"app":     router("Host(`app.example.test`) || Host(`WWW.app.example.test`)", tlsLE),
				"legacy":  legacy,
				"twohost": router("Host(`a.two.example.test`, `b.two.example.test`)", tlsLE), // v3 refuses it: disabled
				"negated": router("Host(`n.example.test`) && !Host(`x.n.example.test`)", tlsLE),
				"domains": router("PathPrefix(`/d`)", map[string]any{"certResolver": "le", "domains": []map[string]any{
					{"main": "d.example.test", "sans": []string{"www.d.example.test"}},
					{"main": "*.wild.example.test"},
				}}),
				"regexp": router("HostRegexp(`^.+\\.re\\.example\\.test$`)", tlsLE),
				"corp":   router("Host(`svc.corp.example.test`)", map[string]any{}),
				"plain":  router("Host(`plain.example.test`)", nil),
			},
			"services": map[string]any{"app": map[string]any{
				"loadBalancer": map[string]any{"servers": []map[string]any{{"url": backendURL}}},
			}},
		},
		"tcp": map[string]any{
			"routers": map[string]any{
				"db":   map[string]any{"entryPoints": []string{"websecure"}, "rule": "HostSNI(`db.example.test`)", "service": "db", "tls": tlsLE},
				"pass": map[string]any{"entryPoints": []string{"websecure"}, "rule": "HostSNI(`pass.example.test`)", "service": "db", "tls": map[string]any{"passthrough": true}},
			},
			"services": map[string]any{"db": map[string]any{
				"loadBalancer": map[string]any{"servers": []map[string]any{{"address": "127.0.0.1:1"}}},
			}},
		},
	}
}

// kvRouters are routers of Traefik's Redis provider, the second provider.
var kvRouters = map[string]string{
	kvRootKey + "/http/routers/kvapp/rule":               "Host(`kv.example.test`)",
	kvRootKey + "/http/routers/kvapp/entryPoints/0":      "websecure",
	kvRootKey + "/http/routers/kvapp/service":            "app@file",
	kvRootKey + "/http/routers/kvapp/tls/certResolver":   "le",
	kvRootKey + "/tcp/routers/kvdb/rule":                 "HostSNI(`kvdb.example.test`)",
	kvRootKey + "/tcp/routers/kvdb/entryPoints/0":        "websecure",
	kvRootKey + "/tcp/routers/kvdb/service":              "db@file",
	kvRootKey + "/tcp/routers/kvdb/tls/certResolver":     "le",
	kvRootKey + "/tcp/routers/kvdb/tls/domains/0/main":   "kvdb.example.test",
	kvRootKey + "/tcp/routers/kvdb/tls/domains/0/sans/0": "alt.kvdb.example.test",
}

// TestRoutersFromRealTraefik reads a real Traefik's routers from two providers (file
// and Redis) through its API and derives the certificates its ACME provider would
// request; it captures what Traefik logs for a certResolver it does not know, times how
// long a new router takes to show in the API, and checks that a stopped Traefik gives
// an error, never an empty snapshot.
func TestRoutersFromRealTraefik(t *testing.T) {
	t.Parallel()
	_, redisAddr := testservers.StartRedis(t)
	rdb := redis.NewClient(&redis.Options{
		Addr: redisAddr, DisableIdentity: true,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
	})
	t.Cleanup(func() { _ = rdb.Close() })
	for k, v := range kvRouters {
		require.NoError(t, rdb.Set(t.Context(), k, v, 0).Err())
	}

	backend := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(backend.Close)
	watchDir := t.TempDir()
	writeYAML(t, filepath.Join(watchDir, "routers.yml"), routersFile(backend.URL))
	static := map[string]any{"providers": map[string]any{
		"file":  map[string]any{"directory": watchDir, "watch": true},
		"redis": map[string]any{"endpoints": []string{redisAddr}, "rootKey": kvRootKey},
	}}
	for k, v := range apiStatic {
		static[k] = v
	}
	tr := startTraefik(t, traefikOptions{watchDir: watchDir, static: static})

	client, err := traefikapi.NewClient(traefikapi.Config{URL: fmt.Sprintf("http://127.0.0.1:%d", tr.ping)})
	require.NoError(t, err)
	byName := func(s traefikapi.Snapshot) map[string]traefikapi.Router {
		out := map[string]traefikapi.Router{}
		for _, r := range s.Routers {
			out[r.Ref()] = r
		}
		return out
	}
	var snap traefikapi.Snapshot
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		snap, err = client.Routers(t.Context())
		require.NoError(c, err)
		routers := byName(snap)
		for _, name := range []string{"app@file", "legacy@file", "domains@file", "kvapp@redis", "db@file (TCP)", "kvdb@redis (TCP)"} {
			assert.Contains(c, routers, name)
		}
	}, reloadTimeout, tick, "Traefik's API never listed the routers of both providers")

	routers := byName(snap)
	assert.Equal(t, "enabled", routers["app@file"].Status, "a router whose certResolver Traefik does not know stays enabled")
	assert.Equal(t, "le", routers["app@file"].TLS.CertResolver)
	assert.Equal(t, "file", routers["app@file"].Provider)
	assert.Equal(t, "v2", routers["legacy@file"].RuleSyntax)
	assert.Equal(t, "enabled", routers["legacy@file"].Status)
	assert.Equal(t, "disabled", routers["twohost@file"].Status, "v3 refuses Host with two arguments")
	assert.Equal(t, "redis", routers["kvapp@redis"].Provider)
	assert.True(t, routers["pass@file (TCP)"].TLS.Passthrough)
	line := tr.waitForLog(t, "nonexistent certificate resolver", reloadTimeout)
	t.Logf("Traefik's log for a certResolver it does not know: %s", line)

	sel := []traefikapi.Selector{
		{Resolver: "le", CertResolver: "le"},
		{Resolver: "corp", Domains: []string{"*.corp.example.test"}},
	}
	wanted, problems := traefikapi.Certificates(snap, sel)
	le := func(routers []string, wildcard bool, domains ...string) traefikapi.Wanted {
		return traefikapi.Wanted{Domains: domains, Resolver: "le", Routers: routers, Wildcard: wildcard}
	}
	assert.Equal(t, []traefikapi.Wanted{
		le([]string{"domains@file"}, true, "*.wild.example.test"),
		le([]string{"legacy@file"}, false, "a.legacy.example.test", "b.legacy.example.test"),
		le([]string{"twohost@file"}, false, "a.two.example.test", "b.two.example.test"),
		le([]string{"app@file"}, false, "app.example.test", "www.app.example.test"),
		le([]string{"domains@file"}, false, "d.example.test", "www.d.example.test"),
		le([]string{"db@file (TCP)"}, false, "db.example.test"),
		le([]string{"kvapp@redis"}, false, "kv.example.test"),
		le([]string{"kvdb@redis (TCP)"}, false, "kvdb.example.test", "alt.kvdb.example.test"),
		le([]string{"negated@file"}, false, "n.example.test", "x.n.example.test"),
		{Domains: []string{"svc.corp.example.test"}, Resolver: "corp", Routers: []string{"corp@file"}},
	}, wanted)
	assert.Equal(t, []traefikapi.Problem{{Router: "regexp@file", Resolver: "le",
		Message: "the rule names hosts only with HostRegexp, which Traefik's ACME provider ignores: set tls.domains"}}, problems)

	// A new router: how long from the file's rename to the API listing it (Traefik's
	// reload; certfetch's poll interval comes on top).
	start := time.Now()
	writeYAML(t, filepath.Join(watchDir, "new.yml"), map[string]any{"http": map[string]any{"routers": map[string]any{
		"new": map[string]any{"entryPoints": []string{"websecure"}, "rule": "Host(`new.example.test`)", "service": "app@file", "tls": map[string]any{"certResolver": "le"}},
	}}})
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		s, err := client.Routers(t.Context())
		require.NoError(c, err)
		assert.Contains(c, byName(s), "new@file")
	}, reloadTimeout, 50*time.Millisecond)
	t.Logf("router added: listed by the API %s after the file was written", time.Since(start).Round(time.Millisecond))

	require.NoError(t, os.Remove(filepath.Join(watchDir, "new.yml")))
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		s, err := client.Routers(t.Context())
		require.NoError(c, err)
		assert.NotContains(c, byName(s), "new@file")
	}, reloadTimeout, tick)

	tr.stop(t)
	s, err := client.Routers(t.Context())
	require.Error(t, err, "a stopped Traefik must fail the read")
	assert.Zero(t, s)
}

// TestRoutersFigure1000 measures one poll of a real Traefik with 1,000 HTTP routers (file
// provider): requests, body bytes and time, with the client's page size and with
// Traefik's default of 100, and the time Certificates takes for them.
func TestRoutersFigure1000(t *testing.T) {
	t.Parallel()
	const n, polls = 1000, 5
	watchDir := t.TempDir()
	routers := map[string]any{}
	for i := range n {
		routers[fmt.Sprintf("app%04d", i)] = map[string]any{
			"entryPoints": []string{"websecure"}, "rule": fmt.Sprintf("Host(`app%04d.example.test`) && PathPrefix(`/`)", i),
			"service": "app", "tls": map[string]any{"certResolver": "le"},
		}
	}
	writeYAML(t, filepath.Join(watchDir, "routers.yml"), map[string]any{"http": map[string]any{
		"routers":  routers,
		"services": map[string]any{"app": map[string]any{"loadBalancer": map[string]any{"servers": []map[string]any{{"url": "http://127.0.0.1:1"}}}}},
	}})
	tr := startTraefik(t, traefikOptions{watchDir: watchDir, static: apiStatic})
	url := fmt.Sprintf("http://127.0.0.1:%d", tr.ping)

	for _, pageSize := range []int{0, 100} {
		client, err := traefikapi.NewClient(traefikapi.Config{URL: url, PageSize: pageSize})
		require.NoError(t, err)
		countLE := func(s traefikapi.Snapshot) int {
			return len(slices.DeleteFunc(slices.Clone(s.Routers), func(r traefikapi.Router) bool { return r.TLS == nil || r.TLS.CertResolver != "le" }))
		}
		require.EventuallyWithT(t, func(c *assert.CollectT) {
			s, err := client.Routers(t.Context())
			require.NoError(c, err)
			assert.Equal(c, n, countLE(s))
		}, reloadTimeout, tick)

		var times []time.Duration
		var last traefikapi.Snapshot
		for range polls {
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			start := time.Now()
			s, err := client.Routers(ctx)
			times = append(times, time.Since(start))
			cancel()
			require.NoError(t, err)
			require.Equal(t, n, countLE(s))
			last = s
		}
		sort.Slice(times, func(i, j int) bool { return times[i] < times[j] })
		start := time.Now()
		wanted, problems := traefikapi.Certificates(last, []traefikapi.Selector{{Resolver: "le", CertResolver: "le"}})
		derive := time.Since(start)
		require.Len(t, wanted, n)
		require.Empty(t, problems)
		t.Logf("%d routers (%d listed), per_page %d: %d requests, %d body bytes, one poll median %s (min %s, max %s) of %d; Certificates %s",
			n, len(last.Routers), map[bool]int{true: traefikapi.DefaultPageSize, false: pageSize}[pageSize == 0], last.Requests, last.Bytes,
			times[polls/2].Round(time.Microsecond), times[0].Round(time.Microsecond),
			times[polls-1].Round(time.Microsecond), polls, derive.Round(time.Microsecond))
	}
}
