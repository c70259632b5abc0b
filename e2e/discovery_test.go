//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/certfetch/certfetch/fetcher"
	"github.com/certfetch/certfetch/internal/testkit/testca"
	"github.com/certfetch/certfetch/internal/testkit/testservers"
	"github.com/certfetch/certfetch/internal/testkit/testsupport"
)

// discoveryGrace is traefik.withdrawAfter in the discovery test: long enough to see the
// certificate stay after its router went, short enough for a test.
const discoveryGrace = 15 * time.Second

// certfetchProcess is `certfetch run` as a child process, killed at test end.
type certfetchProcess struct {
	cmd    *exec.Cmd
	log    *testsupport.SyncBuffer
	exited chan struct{}
}

func startCertfetch(t *testing.T, bin string, args ...string) *certfetchProcess {
	t.Helper()
	p := &certfetchProcess{cmd: exec.Command(bin, args...), log: &testsupport.SyncBuffer{}, exited: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	require.NoError(t, p.cmd.Start())
	go func() {
		_ = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.exited
		if t.Failed() {
			t.Logf("certfetch %v:\n%s", args, tail(p.log.String(), 80))
		}
	})
	return p
}

// stop ends the process with SIGTERM and expects exit status 0.
func (p *certfetchProcess) stop(t *testing.T) {
	t.Helper()
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	select {
	case <-p.exited:
		assert.Equal(t, 0, p.cmd.ProcessState.ExitCode())
	case <-time.After(time.Minute):
		t.Fatal("certfetch run did not stop on SIGTERM")
	}
}

// countLog counts the lines of the process's log that contain s.
func (p *certfetchProcess) countLog(s string) int { return strings.Count(p.log.String(), s) }

// discoveryRouter is a file-provider router on websecure whose certificate comes from
// certResolver, as a user who had certificatesResolvers.<certResolver> wrote it.
func discoveryRouter(host, certResolver string) map[string]any {
	return map[string]any{
		"entryPoints": []string{"websecure"},
		"rule":        fmt.Sprintf("Host(`%s`)", host),
		"service":     "app",
		"tls":         map[string]any{"certResolver": certResolver},
	}
}

// TestDiscoveryThroughTraefik is the drop-in for certificatesResolvers, end to end: a real
// Traefik whose routers (from its file provider and from Redis) name a certificate resolver
// Traefik does not define; `certfetch run` with a traefik section reads them from Traefik's
// API, issues their certificates and Traefik serves them by SNI. A router added is served
// within a poll plus Traefik's reload (the figure is the median of five); a router removed
// is withdrawn after the grace period, not before; Traefik down for several polls
// withdraws nothing.
func TestDiscoveryThroughTraefik(t *testing.T) {
	t.Parallel()
	bin := certfetchBinary(t)
	dir := t.TempDir()
	watchDir := filepath.Join(dir, "traefik-dynamic")
	require.NoError(t, os.MkdirAll(watchDir, 0o755))
	backend := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(backend.Close)

	_, redisAddr := testservers.StartRedis(t)
	kv := redis.NewClient(&redis.Options{Addr: redisAddr, DisableIdentity: true})
	t.Cleanup(func() { _ = kv.Close() })

	routers := map[string]any{"file-a": discoveryRouter("file-a.example.test", resolverName)}
	writeApp := func() {
		writeYAML(t, filepath.Join(watchDir, "app.yml"), map[string]any{"http": map[string]any{
			"routers": routers,
			"services": map[string]any{"app": map[string]any{
				"loadBalancer": map[string]any{"servers": []map[string]any{{"url": backend.URL}}},
			}},
		}})
	}
	writeApp()
	kvRouter := "traefik/http/routers/kv-a/"
	require.NoError(t, kv.MSet(t.Context(),
		kvRouter+"rule", "Host(`kv-a.example.test`)",
		kvRouter+"entryPoints/0", "websecure",
		kvRouter+"service", "app@file",
		kvRouter+"tls/certResolver", resolverName,
	).Err())

	ports := [3]int(freePorts(t, 3))
	trOpts := traefikOptions{watchDir: watchDir, ports: &ports, dir: filepath.Join(dir, "traefik"),
		static: map[string]any{
			"api": map[string]any{"insecure": true},
			"providers": map[string]any{
				"file":  map[string]any{"directory": watchDir, "watch": true},
				"redis": map[string]any{"endpoints": []string{redisAddr}, "rootKey": "traefik"},
			},
		}}
	require.NoError(t, os.MkdirAll(trOpts.dir, 0o755))
	tr := startTraefik(t, trOpts)
	// What Traefik says of a router whose resolver it no longer knows (README quotes it).
	tr.waitForLog(t, "Router uses a nonexistent certificate resolver", reloadTimeout)

	ca, err := testca.Start(testca.Options{HTTPPort: tr.web})
	require.NoError(t, err)
	t.Cleanup(func() { ca.Close() })
	roots := issuerRoots(t, ca)
	rootFile, err := ca.WriteTLSRoot(dir)
	require.NoError(t, err)

	configPath := filepath.Join(dir, "certfetch.yml")
	require.NoError(t, os.WriteFile(configPath, []byte(fmt.Sprintf(`storage: %s
log:
  level: debug
resolvers:
  %s:
    caServer: %s
    caCertificates: [%s]
    httpChallenge:
      stateless: true
output:
  file:
    directory: %s
traefik:
  api:
    url: http://127.0.0.1:%d
  pollInterval: 1s
  withdrawAfter: %s
`, strconv.Quote(filepath.Join(dir, "state")), resolverName, ca.DirectoryURL(), strconv.Quote(rootFile),
		strconv.Quote(watchDir), tr.ping, discoveryGrace)), 0o600))

	out, err := exec.Command(bin, "thumbprint", "--config", configPath).Output()
	require.NoError(t, err)
	challenge := readYAML(t, filepath.Join(repoRoot, "testdata", "traefik", "certfetch", "acme-challenge.yml"))
	settings := mapAt(t, mapAt(t, mapAt(t, mapAt(t, challenge, "http"), "middlewares"), middlewareName), "plugin")
	settings[pluginName] = map[string]any{"thumbprint": strings.TrimSpace(string(out))}
	writeYAML(t, filepath.Join(watchDir, "acme-challenge.yml"), challenge)
	tr.waitForPlugin(t)

	servedFor := func(host string) func(*assert.CollectT) {
		return func(c *assert.CollectT) {
			leaf, err := handshake(tr.websecure, host, roots)
			require.NoError(c, err, "TLS for %s verified against the CA's roots", host)
			assert.Equal(c, []string{host}, leaf.DNSNames)
		}
	}
	daemon := startCertfetch(t, bin, "run", "--config", configPath)
	for _, host := range []string{"file-a.example.test", "kv-a.example.test"} {
		require.EventuallyWithT(t, servedFor(host), 2*time.Minute, tick, "Traefik never served %s", host)
	}
	assert.Equal(t, 2, ca.Stats().NewOrders)

	// Routers added, one after the other: the time from the file's write to Traefik
	// serving the certificate (a poll, the order, Traefik's reload of the output).
	var added []time.Duration
	for i := range 5 {
		host := fmt.Sprintf("added-%d.example.test", i)
		routers["added-"+strconv.Itoa(i)] = discoveryRouter(host, resolverName)
		start := time.Now()
		writeApp()
		require.EventuallyWithT(t, servedFor(host), time.Minute, 10*time.Millisecond, "Traefik never served %s", host)
		added = append(added, time.Since(start))
	}
	slices.Sort(added)
	t.Logf("router added -> certificate served, 5 routers: median %s (min %s, max %s)",
		added[2].Round(time.Millisecond), added[0].Round(time.Millisecond), added[4].Round(time.Millisecond))
	assert.Equal(t, 7, ca.Stats().NewOrders, "one order per router")

	// Traefik down for several polls: nothing is withdrawn.
	tr.stop(t)
	failedBefore := daemon.countLog("cannot read Traefik's routers")
	require.Eventually(t, func() bool { return daemon.countLog("cannot read Traefik's routers") >= failedBefore+3 }, time.Minute, tick)
	for _, name := range []string{"file-a.example.test", "kv-a.example.test", "added-0.example.test"} {
		assert.FileExists(t, filepath.Join(watchDir, name+".yml"), "withdrawn while Traefik's API was down")
	}
	statusOut, _ := exec.Command(bin, "status", "--config", configPath).Output()
	assert.Contains(t, string(statusOut), "failing since", "status shows the API failing")
	tr = startTraefik(t, trOpts)
	for _, host := range []string{"file-a.example.test", "kv-a.example.test"} {
		require.EventuallyWithT(t, servedFor(host), 2*time.Minute, tick, "Traefik never served %s after its restart", host)
	}

	// A router goes: its certificate stays for the grace period, then goes. (The file
	// provider's: a Traefik restarted as above keeps serving a Redis router whose keys
	// were deleted, Traefik's own matter.)
	const gone = "added-0.example.test"
	delete(routers, "added-0")
	writeApp()
	var withdrawAt time.Time
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		raw, _ := exec.Command(bin, "status", "--config", configPath, "--json").Output()
		var rows []fetcher.CertificateStatus
		require.NoError(c, json.Unmarshal(raw, &rows))
		i := slices.IndexFunc(rows, func(r fetcher.CertificateStatus) bool { return r.Name == gone })
		require.GreaterOrEqual(c, i, 0)
		require.False(c, rows[i].WithdrawAt.IsZero(), "status shows when it goes")
		withdrawAt = rows[i].WithdrawAt
	}, time.Minute, tick)
	require.FileExists(t, filepath.Join(watchDir, gone+".yml"), "withdrawn before the grace period")
	require.Eventually(t, func() bool {
		_, err := os.Stat(filepath.Join(watchDir, gone+".yml"))
		return os.IsNotExist(err)
	}, discoveryGrace+time.Minute, tick, "never withdrawn")
	assert.False(t, time.Now().Before(withdrawAt), "withdrawn at %s, before the grace period ended at %s", time.Now(), withdrawAt)
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		_, err := handshake(tr.websecure, gone, roots)
		assert.Error(c, err, "Traefik still serves the withdrawn certificate")
	}, reloadTimeout, tick)
	for _, host := range []string{"file-a.example.test", "kv-a.example.test"} {
		require.EventuallyWithT(t, servedFor(host), reloadTimeout, tick)
	}
	assert.Equal(t, 7, ca.Stats().NewOrders, "no order after the first of each router")
	daemon.stop(t)
}
