//go:build e2e

package e2e

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/certfetch/certfetch/fetcher"
	"github.com/certfetch/certfetch/fetcher/config"
	"github.com/certfetch/certfetch/fetcher/store"
	"github.com/certfetch/certfetch/internal/testkit/testca"
	"github.com/certfetch/certfetch/internal/testkit/testservers"
	"github.com/certfetch/certfetch/internal/testkit/testsupport"
)

const (
	// kvNodes is how many Traefik processes share one KV store.
	kvNodes = 3
	// kvRootKey is providers.<kv>.rootKey on the Traefik side and
	// output.<kv>.rootKey on certfetch's (both sides' default, written out
	// so that the configuration reads as README shows it).
	kvRootKey = "traefik"
	// kvServeTimeout bounds the wait for all nodes to serve a certificate.
	// Longer than reloadTimeout because of Traefik's etcd provider (v3.6.12,
	// kvtools/etcdv3): while no key exists under its rootKey, WatchTree fails
	// with "key not found in store" and the provider retries with Traefik's
	// exponential backoff (0.5 s growing by 1.5x, randomised +-50 %, reset
	// after 30 s), so the first certificate written into an empty etcd can
	// wait up to about 19 s for the next attempt, plus the 2 s provider
	// throttle. Once a key exists the watch holds and updates are prompt.
	// The Redis provider watches an empty rootKey without error.
	kvServeTimeout = 60 * time.Second
)

// kvBackend is one of Traefik's KV providers with the matching certfetch
// output.
type kvBackend struct {
	name string
	// start starts the store and returns Traefik's providers.<name> entry,
	// certfetch's output.<name> entry (YAML, indented under output:) and a
	// reader of what certfetch published under <rootKey>/tls/certificates/.
	start func(t *testing.T) (provider map[string]any, output string, published func(t *testing.T) map[string]string)
}

// kvBackends are Redis and etcd, real servers on loopback (internal/testkit/testservers).
var kvBackends = []kvBackend{
	{name: "redis", start: startKVRedis},
	{name: "etcd", start: startKVEtcd},
}

// startKVRedis starts redis-server as an operator would: no
// notify-keyspace-events in its configuration; Traefik's Redis provider
// enables keyspace notifications itself (CONFIG SET) when it connects.
func startKVRedis(t *testing.T) (map[string]any, string, func(*testing.T) map[string]string) {
	t.Helper()
	_, addr := testservers.StartRedis(t)
	provider := map[string]any{"endpoints": []string{addr}, "rootKey": kvRootKey}
	output := fmt.Sprintf("  redis:\n    address: %s\n    rootKey: %s\n", strconv.Quote(addr), kvRootKey)
	client := redis.NewClient(&redis.Options{
		Addr: addr, DisableIdentity: true,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
	})
	t.Cleanup(func() { _ = client.Close() })
	published := func(t *testing.T) map[string]string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		keys, err := client.Keys(ctx, kvRootKey+"/tls/certificates/*").Result()
		require.NoError(t, err)
		out := map[string]string{}
		for _, k := range keys {
			v, err := client.Get(ctx, k).Result()
			require.NoError(t, err, k)
			out[k] = v
		}
		return out
	}
	return provider, output, published
}

// startKVEtcd starts a single-member etcd. certfetch takes the client URL;
// Traefik's etcd provider takes host:port endpoints.
func startKVEtcd(t *testing.T) (map[string]any, string, func(*testing.T) map[string]string) {
	t.Helper()
	_, clientURL := testservers.StartEtcd(t)
	hostPort := strings.TrimPrefix(clientURL, "http://")
	provider := map[string]any{"endpoints": []string{hostPort}, "rootKey": kvRootKey}
	output := fmt.Sprintf("  etcd:\n    endpoints: [%s]\n    rootKey: %s\n", strconv.Quote(clientURL), kvRootKey)
	client, err := clientv3.New(clientv3.Config{
		Endpoints: []string{clientURL}, DialTimeout: 5 * time.Second, Logger: zap.NewNop(),
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = client.Close() })
	published := func(t *testing.T) map[string]string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		resp, err := client.Get(ctx, kvRootKey+"/tls/certificates/", clientv3.WithPrefix())
		require.NoError(t, err)
		out := map[string]string{}
		for _, kv := range resp.Kvs {
			out[string(kv.Key)] = string(kv.Value)
		}
		return out
	}
	return provider, output, published
}

// TestKVThreeTraefiksServeAndSwitchOnRenewal proves the KV route to many
// Traefik nodes: three real Traefik processes, each with providers.redis
// (or providers.etcd) pointed at the same store, all serve the certificate
// after one issuance by a certfetch whose only output is that store, and all
// switch to the renewed certificate without a restart. It logs the time from
// Daemon.Once returning to the last of the three serving the certificate,
// for issuance and for renewal.
//
// Each Traefik's routers come from its own file provider directory (a TLS
// router for the domain on websecure, `tls: {}`); no certificate is ever
// written to a file: the only certificate source is the KV store.
//
// The challenge path is the real one: the test CA validates HTTP-01 through
// the first Traefik's web entry point, where the plugin answers in
// thumbprint mode (as in the single-Traefik stack), not AlwaysValid.
func TestKVThreeTraefiksServeAndSwitchOnRenewal(t *testing.T) {
	t.Parallel()
	for _, b := range kvBackends {
		// Sequential: six Traefik processes at once on a small machine
		// would make the measured times say more about the machine.
		t.Run(b.name, func(t *testing.T) { testKVThreeTraefiks(t, b) })
	}
}

func testKVThreeTraefiks(t *testing.T, b kvBackend) {
	domain := b.name + "-kv.example.test"
	provider, output, published := b.start(t)

	backend := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(backend.Close)

	dir := t.TempDir()
	nodes := make([]*traefik, kvNodes)
	watchDirs := make([]string, kvNodes)
	for i := range nodes {
		watchDirs[i] = filepath.Join(dir, fmt.Sprintf("traefik-%d-dynamic", i))
		require.NoError(t, os.MkdirAll(watchDirs[i], 0o755))
		writeYAML(t, filepath.Join(watchDirs[i], "app.yml"), appConfig(backend.URL, route{name: "app", host: domain}))
		// opts.static replaces top-level keys, so providers carries the
		// file provider (README's: the watched directory) next to the KV
		// provider.
		nodes[i] = startTraefik(t, traefikOptions{
			watchDir: watchDirs[i],
			static: map[string]any{"providers": map[string]any{
				"file": map[string]any{"directory": watchDirs[i], "watch": true},
				b.name: provider,
			}},
		})
	}
	pids := make([]int, kvNodes)
	for i, n := range nodes {
		pids[i] = n.cmd.Process.Pid
	}

	ca, err := testca.Start(testca.Options{HTTPPort: nodes[0].web})
	require.NoError(t, err)
	t.Cleanup(func() { ca.Close() })
	roots := issuerRoots(t, ca)

	// Before any issuance no Traefik has a certificate the CA's roots
	// verify: whatever is served later came from the KV store.
	for i, n := range nodes {
		_, err := handshake(n.websecure, domain, roots)
		require.Error(t, err, "Traefik %d verified for %s before certfetch issued anything", i, domain)
	}

	d, st, cfg, logs := newKVDaemon(t, dir, ca, domain, output)
	tp, err := fetcher.Thumbprint(t.Context(), st, cfg.Resolvers[resolverName], false)
	require.NoError(t, err)
	challenge := readYAML(t, filepath.Join(repoRoot, "testdata", "traefik", "certfetch", "acme-challenge.yml"))
	settings := mapAt(t, mapAt(t, mapAt(t, mapAt(t, challenge, "http"), "middlewares"), middlewareName), "plugin")
	_ = mapAt(t, settings, pluginName)
	settings[pluginName] = map[string]any{"thumbprint": tp}
	writeYAML(t, filepath.Join(watchDirs[0], "acme-challenge.yml"), challenge)
	nodes[0].waitForPlugin(t)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("certfetch log:\n%s", tail(logs.String(), 100))
		}
	})

	// Issuance.
	require.NoError(t, once(t, d))
	issued := time.Now()
	first := kvLeaf(t, published(t))
	firstServed := waitAllServing(t, nodes, domain, roots, first)

	// Renewal: the CA's renewal information says replace it now.
	now := time.Now()
	ca.SetRenewalWindow(now.Add(-time.Hour), now.Add(-time.Minute))
	require.NoError(t, once(t, d))
	renewed := time.Now()
	second := kvLeaf(t, published(t))
	require.NotEqual(t, first.SerialNumber.String(), second.SerialNumber.String(), "certfetch renewed into %s", b.name)
	secondServed := waitAllServing(t, nodes, domain, roots, second)

	for i, n := range nodes {
		select {
		case <-n.exited:
			t.Fatalf("Traefik %d exited", i)
		default:
		}
		assert.Equal(t, pids[i], n.cmd.Process.Pid, "Traefik %d was not restarted", i)
	}
	t.Logf("%s: issuance: Once returned -> all %d Traefiks serving serial %s: %s (per node %s)",
		b.name, kvNodes, first.SerialNumber, lastOf(firstServed).Sub(issued).Round(time.Millisecond), since(issued, firstServed))
	t.Logf("%s: renewal: Once returned -> all %d Traefiks serving serial %s: %s (per node %s)",
		b.name, kvNodes, second.SerialNumber, lastOf(secondServed).Sub(renewed).Round(time.Millisecond), since(renewed, secondServed))
}

// newKVDaemon writes certfetch's configuration with the KV output as its
// only output (state in a local directory) and creates the daemon.
func newKVDaemon(t *testing.T, dir string, ca *testca.CA, domain, output string) (*fetcher.Daemon, *store.Store, *config.Config, *testsupport.SyncBuffer) {
	t.Helper()
	rootFile, err := ca.WriteTLSRoot(dir)
	require.NoError(t, err)
	var b strings.Builder
	fmt.Fprintf(&b, "storage: %s\n", strconv.Quote(filepath.Join(dir, "state")))
	fmt.Fprintf(&b, "log:\n  level: debug\n")
	fmt.Fprintf(&b, "resolvers:\n  %s:\n    caServer: %s\n    caCertificates: [%s]\n    httpChallenge:\n      stateless: true\n",
		resolverName, ca.DirectoryURL(), strconv.Quote(rootFile))
	fmt.Fprintf(&b, "certificates:\n  - domains: [%s]\n", domain)
	fmt.Fprintf(&b, "output:\n%s", output)
	path := filepath.Join(dir, "certfetch.yml")
	require.NoError(t, os.WriteFile(path, []byte(b.String()), 0o600))
	cfg, err := config.Load(path)
	require.NoError(t, err)
	require.False(t, cfg.Output.HasFile(), "no file output: the KV store is the only way to Traefik")
	st, err := store.Open(cfg.Storage.Directory)
	require.NoError(t, err)
	logs := &testsupport.SyncBuffer{}
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	d, err := fetcher.New(cfg, st, fetcher.Options{Logger: logger})
	require.NoError(t, err)
	t.Cleanup(d.Close)
	return d, st, cfg, logs
}

// kvLeaf checks that the store holds exactly one certificate entry under
// <rootKey>/tls/certificates/ (certFile and keyFile at position 0, inline
// PEM) and returns its leaf.
func kvLeaf(t *testing.T, kv map[string]string) *x509.Certificate {
	t.Helper()
	prefix := kvRootKey + "/tls/certificates/0/"
	keys := make([]string, 0, len(kv))
	for k := range kv {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	require.Equal(t, []string{prefix + "certFile", prefix + "keyFile"}, keys)
	require.Contains(t, kv[prefix+"keyFile"], "PRIVATE KEY-----")
	block, _ := pem.Decode([]byte(kv[prefix+"certFile"]))
	require.NotNil(t, block, "inline PEM in %scertFile", prefix)
	leaf, err := x509.ParseCertificate(block.Bytes)
	require.NoError(t, err)
	return leaf
}

// waitAllServing polls every node until each presents want for domain
// (verified against roots) and returns when each first did. The leaf must be
// byte-for-byte the published one, not only the same serial.
func waitAllServing(t *testing.T, nodes []*traefik, domain string, roots *x509.CertPool, want *x509.Certificate) []time.Time {
	t.Helper()
	var mu sync.Mutex
	seen := make([]time.Time, len(nodes))
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		mu.Lock()
		defer mu.Unlock()
		for i, n := range nodes {
			if !seen[i].IsZero() {
				continue
			}
			leaf, err := handshake(n.websecure, domain, roots)
			if err != nil {
				c.Errorf("Traefik %d: %v", i, err)
				continue
			}
			if !leaf.Equal(want) {
				c.Errorf("Traefik %d serves serial %s, want %s", i, leaf.SerialNumber, want.SerialNumber)
				continue
			}
			seen[i] = time.Now()
		}
	}, kvServeTimeout, tick/2, "not every Traefik served serial %s for %s", want.SerialNumber, domain)
	mu.Lock()
	defer mu.Unlock()
	return append([]time.Time(nil), seen...)
}

func lastOf(ts []time.Time) time.Time {
	var last time.Time
	for _, ts := range ts {
		if ts.After(last) {
			last = ts
		}
	}
	return last
}

func since(start time.Time, ts []time.Time) string {
	parts := make([]string, len(ts))
	for i, at := range ts {
		parts[i] = at.Sub(start).Round(time.Millisecond).String()
	}
	return strings.Join(parts, ", ")
}
