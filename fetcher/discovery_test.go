package fetcher_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/certfetch/certfetch/fetcher"
	"github.com/certfetch/certfetch/fetcher/config"
	"github.com/certfetch/certfetch/fetcher/store"
)

// fakeAPI answers Traefik's /api/{http,tcp}/routers with the routers a test sets, in
// Traefik's JSON shape and paging headers, or fails every read while down. The daemon's
// reads against a real Traefik are in e2e/discovery_test.go; this one lets a test hold
// the API down and count the reads.
type fakeAPI struct {
	srv   *httptest.Server
	reads chan bool // one per read of the HTTP routers: whether it succeeded

	mu      sync.Mutex
	routers []map[string]any
	down    bool
}

func newFakeAPI(t *testing.T) *fakeAPI {
	f := &fakeAPI{reads: make(chan bool, 1000)}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		routers, down := slices.Clone(f.routers), f.down
		f.mu.Unlock()
		if r.URL.Path == "/api/http/routers" {
			defer func() { f.reads <- !down }()
		}
		if down {
			http.Error(w, "traefik is restarting", http.StatusBadGateway)
			return
		}
		if r.URL.Path == "/api/tcp/routers" {
			routers = nil
		}
		w.Header().Set("X-Next-Page", "1")
		_ = json.NewEncoder(w).Encode(append([]map[string]any{}, routers...))
	}))
	t.Cleanup(f.srv.Close)
	return f
}

// router is an HTTP router of the file provider with TLS from certResolver.
func router(name, rule, certResolver string) map[string]any {
	return map[string]any{"name": name + "@file", "provider": "file", "rule": rule, "status": "enabled",
		"entryPoints": []string{"websecure"}, "tls": map[string]any{"certResolver": certResolver}}
}

func (f *fakeAPI) set(routers ...map[string]any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.routers = routers
}

func (f *fakeAPI) setDown(down bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.down = down
}

// awaitReads waits until n more reads with the given outcome happened.
func (f *fakeAPI) awaitReads(t *testing.T, ok bool, n int) {
	t.Helper()
	timeout := time.After(60 * time.Second)
	for n > 0 {
		select {
		case got := <-f.reads:
			if got == ok {
				n--
			}
		case <-timeout:
			t.Fatalf("Traefik's API was not read %d more times within 60 s", n)
		}
	}
}

// newDiscoveryHarness returns a harness whose configuration reads the fake API, which
// lists routers.
func newDiscoveryHarness(t *testing.T, routers ...map[string]any) (*fakeAPI, *harness) {
	t.Helper()
	api := newFakeAPI(t)
	h := newHarness(t, harnessOptions{})
	h.opts.Extra = discoveryExtra(api)
	api.set(routers...)
	return api, h
}

// discoveryExtra is the traefik section pointing at api.
func discoveryExtra(api *fakeAPI) string {
	return fmt.Sprintf("traefik:\n  api:\n    url: %s\n  pollInterval: 1s\n  withdrawAfter: 10m\n", api.srv.URL)
}

func discoveryStatus(t *testing.T, h *harness, cfg *config.Config) *store.Discovery {
	t.Helper()
	doc, err := fetcher.DiscoveryStatus(t.Context(), cfg, h.Store)
	require.NoError(t, err)
	return doc
}

// Routers that name the resolver get their certificates; an API that fails withdraws
// nothing however long it fails; a router that disappears keeps its certificate for the
// grace period, counted from the first successful read without it; a new router gets its
// certificate at the next read.
func TestDiscoveryFollowsTheRouters(t *testing.T) {
	t.Parallel()
	api, h := newDiscoveryHarness(t,
		router("a", "Host(`a.example.test`) && PathPrefix(`/`)", resolverName),
		router("b", "Host(`b.example.test`) || Host(`c.example.test`)", resolverName),
		router("other", "Host(`other.example.test`)", "someone-else"),
		router("regexp", "HostRegexp(`^.+\\.example\\.test$`)", resolverName),
	)
	cfg := h.config()
	h.run(h.daemon(cfg))

	h.ev.wait(t, "a.example.test", fetcher.StepPublished, 1)
	h.ev.wait(t, "b.example.test", fetcher.StepPublished, 1)
	assert.Equal(t, []string{"b.example.test", "c.example.test"}, h.served("b.example.test").DNSNames)
	assert.Equal(t, 2, h.CA.Stats().NewOrders, "one order per router; none for the other resolver's router")
	row := h.status(cfg, "a.example.test")
	assert.Equal(t, "traefik", row.Source)
	assert.Equal(t, []string{"a@file"}, row.Routers)
	doc := discoveryStatus(t, h, cfg)
	require.Len(t, doc.Problems, 1)
	assert.Equal(t, "regexp@file", doc.Problems[0].Router)

	// Down for long past the grace period: nothing is withdrawn.
	api.setDown(true)
	api.awaitReads(t, false, 2)
	h.clock.Advance(time.Hour)
	api.awaitReads(t, false, 2)
	assert.FileExists(t, h.yml("a.example.test"))
	assert.Equal(t, 0, h.ev.count("a.example.test", fetcher.StepWithdrawn))
	doc = discoveryStatus(t, h, cfg)
	assert.Contains(t, doc.LastError, "502")
	assert.False(t, doc.FailingSince.IsZero())

	// Back without router a: a stays for the grace period, then goes.
	api.set(router("b", "Host(`b.example.test`) || Host(`c.example.test`)", resolverName))
	api.setDown(false)
	api.awaitReads(t, true, 2)
	assert.FileExists(t, h.yml("a.example.test"), "withdrawn before the grace period")
	row = h.status(cfg, "a.example.test")
	assert.WithinDuration(t, h.clock.Now().Add(10*time.Minute), row.WithdrawAt, 5*time.Second, "withdrawal time in status")
	assert.Empty(t, discoveryStatus(t, h, cfg).LastError)
	h.clock.Advance(10 * time.Minute)
	h.ev.wait(t, "a.example.test", fetcher.StepWithdrawn, 1)
	assert.NoFileExists(t, h.yml("a.example.test"))
	assert.FileExists(t, h.yml("b.example.test"))

	// A new router is served at the next read.
	api.set(router("b", "Host(`b.example.test`) || Host(`c.example.test`)", resolverName),
		router("d", "Host(`d.example.test`)", resolverName))
	h.ev.wait(t, "d.example.test", fetcher.StepPublished, 1)
	assert.Equal(t, 3, h.CA.Stats().NewOrders)
}

// A restart while Traefik's API is down serves and renews what the last reads asked
// for, from the store, and withdraws nothing; `once` does too and says the API failed.
func TestDiscoveryRestartWithTheAPIDown(t *testing.T) {
	t.Parallel()
	api, h := newDiscoveryHarness(t, router("a", "Host(`a.example.test`)", resolverName))
	cfg := h.config()
	stop := h.run(h.daemon(cfg))
	h.ev.wait(t, "a.example.test", fetcher.StepPublished, 1)
	stop()
	served := serial(h.served("a.example.test"))

	api.setDown(true)
	h.clock.Advance(time.Hour)
	err := h.daemon(cfg).Once(t.Context())
	require.Error(t, err)
	assert.Contains(t, err.Error(), "Traefik's routers")
	assert.Equal(t, served, serial(h.served("a.example.test")), "once with the API down withdrew or replaced the certificate")

	h.run(h.daemon(cfg))
	api.awaitReads(t, false, 3)
	assert.Equal(t, served, serial(h.served("a.example.test")))
	assert.Equal(t, 0, h.ev.count("a.example.test", fetcher.StepWithdrawn))
	assert.Equal(t, 1, h.CA.Stats().NewOrders)
}

// A router that asks for what the file configures shares the file's certificate; one
// whose certificate would take a file certificate's name for other domains is reported
// and gets nothing: a conflict is never resolved silently.
func TestDiscoveryMeetsTheFile(t *testing.T) {
	t.Parallel()
	api, h := newDiscoveryHarness(t,
		router("same", "Host(`f.example.test`)", resolverName),
		router("clash", "Host(`a.example.test`)", resolverName),
	)
	cfg := h.config(cert("f", "f.example.test"), cert("a.example.test", "a.example.test", "z.example.test"))
	h.run(h.daemon(cfg))
	h.ev.wait(t, "f", fetcher.StepPublished, 1)
	h.ev.wait(t, "a.example.test", fetcher.StepPublished, 1)
	api.awaitReads(t, true, 1)

	assert.Equal(t, 2, h.CA.Stats().NewOrders, "the file's two certificates and nothing more")
	assert.Equal(t, []string{"a.example.test", "z.example.test"}, h.served("a.example.test").DNSNames)
	doc := discoveryStatus(t, h, cfg)
	assert.Empty(t, doc.Certificates)
	require.Len(t, doc.Problems, 1)
	assert.Equal(t, "clash@file", doc.Problems[0].Router)
	assert.Contains(t, doc.Problems[0].Problem, "configuration file")
	entries, err := os.ReadDir(h.outputDir())
	require.NoError(t, err)
	var ymls []string
	for _, e := range entries {
		if !e.IsDir() {
			ymls = append(ymls, e.Name())
		}
	}
	assert.ElementsMatch(t, []string{"a.example.test.yml", "f.yml"}, ymls)
}

// `once` walks the same path: a certificate a router asks for is issued, one no router
// asks for any more stays for the grace period over successive runs (the record of when
// it went missing is in the store), then it is withdrawn.
func TestDiscoveryOnce(t *testing.T) {
	t.Parallel()
	api, h := newDiscoveryHarness(t, router("a", "Host(`a.example.test`)", resolverName), router("b", "Host(`b.example.test`)", resolverName))
	cfg := h.config()
	require.NoError(t, h.daemon(cfg).Once(t.Context()))
	h.served("a.example.test")
	h.served("b.example.test")

	api.set(router("b", "Host(`b.example.test`)", resolverName))
	require.NoError(t, h.daemon(cfg).Once(t.Context()))
	assert.FileExists(t, h.yml("a.example.test"), "withdrawn within the grace period")
	h.clock.Advance(9 * time.Minute)
	require.NoError(t, h.daemon(cfg).Once(t.Context()))
	assert.FileExists(t, h.yml("a.example.test"), "withdrawn within the grace period")
	h.clock.Advance(time.Minute)
	require.NoError(t, h.daemon(cfg).Once(t.Context()))
	assert.NoFileExists(t, h.yml("a.example.test"))
	h.served("b.example.test")
	assert.Equal(t, 2, h.CA.Stats().NewOrders)
}

// drain forgets the reads reported so far, so that awaitReads counts reads that start
// after it.
func (f *fakeAPI) drain() {
	for {
		select {
		case <-f.reads:
		default:
			return
		}
	}
}

// Reloads walk discovery's lifecycle: a traefik section added by a reload starts
// discovery (no restart), a resolver that now serves other routers orders theirs and
// lets the old ones go after the grace period, removing the section withdraws the
// discovered certificates at once (like removing a certificate from the file) and keeps
// the file's, and putting it back serves the stored certificate again without an order.
func TestDiscoveryReload(t *testing.T) {
	t.Parallel()
	api := newFakeAPI(t)
	h := newHarness(t, harnessOptions{})
	api.set(router("a", "Host(`a.example.test`)", resolverName), router("b", "Host(`b.example.test`)", "legacy"))
	file := cert("f", "f.example.test")

	plain := h.config(file)
	d := h.daemon(plain)
	h.run(d)
	h.ev.wait(t, "f", fetcher.StepPublished, 1)

	h.opts.Extra = discoveryExtra(api)
	discovering := h.config(file)
	require.NoError(t, d.Reload(t.Context(), discovering))
	h.ev.wait(t, "a.example.test", fetcher.StepPublished, 1)
	assert.Equal(t, 2, h.CA.Stats().NewOrders)
	assert.NoFileExists(t, h.yml("b.example.test"), "a router of another certResolver was served")

	h.opts.Challenge = "    httpChallenge:\n      stateless: true\n    routers:\n      certResolver: legacy\n"
	legacy := h.config(file)
	require.NoError(t, d.Reload(t.Context(), legacy))
	h.ev.wait(t, "b.example.test", fetcher.StepPublished, 1)
	api.drain()
	api.awaitReads(t, true, 1)
	assert.FileExists(t, h.yml("a.example.test"), "withdrawn before the grace period")
	h.clock.Advance(10 * time.Minute)
	h.ev.wait(t, "a.example.test", fetcher.StepWithdrawn, 1)
	assert.Equal(t, 3, h.CA.Stats().NewOrders)
	servedB := serial(h.served("b.example.test"))

	h.opts.Extra = ""
	require.NoError(t, d.Reload(t.Context(), h.config(file)))
	h.ev.wait(t, "b.example.test", fetcher.StepWithdrawn, 1)
	assert.NoFileExists(t, h.yml("b.example.test"))
	h.served("f")

	require.NoError(t, d.Reload(t.Context(), legacy))
	h.ev.wait(t, "b.example.test", fetcher.StepPublished, 2)
	assert.Equal(t, servedB, serial(h.served("b.example.test")), "the stored certificate is served again")
	assert.Equal(t, 3, h.CA.Stats().NewOrders, "putting discovery back ordered again")
	assert.Equal(t, []string{"b@file"}, h.status(legacy, "b.example.test").Routers)
}

// A store that refuses the discovery record does not stop the routers' certificates:
// they are issued and served from the record in memory, `once` says the record was not
// stored, and the daemon writes it at the next read once the store takes writes again,
// although nothing changed since.
func TestDiscoveryStoreRefusesTheRecord(t *testing.T) {
	t.Parallel()
	api, h := newDiscoveryHarness(t, router("a", "Host(`a.example.test`)", resolverName))
	cfg := h.config()
	dir := filepath.Join(h.stateDir(), "discovery")
	require.NoError(t, os.MkdirAll(dir, 0o700))
	writable := immutable(t, dir)

	err := h.daemon(cfg).Once(t.Context())
	require.Error(t, err)
	assert.Contains(t, err.Error(), "store the discovered certificates")
	h.served("a.example.test")

	h.run(h.daemon(cfg))
	api.drain()
	api.awaitReads(t, true, 2)
	_, err = h.Store.LoadDiscovery(t.Context())
	require.ErrorIs(t, err, store.ErrNotFound)

	writable()
	api.drain()
	api.awaitReads(t, true, 2) // the first read's poll ends (and stores) before the second
	doc, err := h.Store.LoadDiscovery(t.Context())
	require.NoError(t, err)
	require.Len(t, doc.Certificates, 1)
	assert.Equal(t, "a.example.test", doc.Certificates[0].Name)
	assert.Equal(t, 1, h.CA.Stats().NewOrders)
}

// A discovery record the store holds but cannot decode stops discovery rather than
// starting over from an empty record (which would rename certificates and forget grace
// periods): `once` fails naming the record, orders nothing for the routers, withdraws
// and replaces nothing, and leaves the record as it is; repaired, the next `once`
// carries on from it.
func TestDiscoveryRecordUnreadable(t *testing.T) {
	t.Parallel()
	api, h := newDiscoveryHarness(t, router("a", "Host(`a.example.test`)", resolverName))
	cfg := h.config()
	require.NoError(t, h.daemon(cfg).Once(t.Context()))
	served := serial(h.served("a.example.test"))
	path := filepath.Join(h.stateDir(), "discovery", "routers.json")
	good, err := os.ReadFile(path)
	require.NoError(t, err)
	torn := []byte(`{"certificates": [`)
	require.NoError(t, os.WriteFile(path, torn, 0o600))

	api.set(router("b", "Host(`b.example.test`)", resolverName))
	err = h.daemon(cfg).Once(t.Context())
	require.Error(t, err)
	assert.Contains(t, err.Error(), "read the discovered certificates: decode "+path)
	assert.Equal(t, served, serial(h.served("a.example.test")), "withdrawn or replaced")
	assert.NoFileExists(t, h.yml("b.example.test"))
	assert.Equal(t, 1, h.CA.Stats().NewOrders)
	after, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, torn, after, "the record was rewritten")

	require.NoError(t, os.WriteFile(path, good, 0o600))
	require.NoError(t, h.daemon(cfg).Once(t.Context()))
	h.served("b.example.test")
	assert.FileExists(t, h.yml("a.example.test"), "gone from the routers: kept for the grace period")
	assert.Equal(t, 2, h.CA.Stats().NewOrders)
}
