//go:build e2e

// Package e2e runs certfetch against a real Traefik v3.6.12 binary (built by
// the nested module test/traefik, found through $TRAEFIK_BIN), a real ACME CA
// (internal/testkit/testca) and the plugin loaded by Traefik as a local plugin from
// the working tree. The build tag keeps `go test ./...` working on machines
// without the Traefik binary; `make test-e2e` builds it and runs this suite.
package e2e

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/certfetch/certfetch/internal/testkit/testsupport"
)

const (
	// moduleName is the plugin's module path: Traefik looks for a local
	// plugin under plugins-local/src/<moduleName>/.
	moduleName = "github.com/certfetch/certfetch"
	// pluginName is the key under experimental.(local)plugins, and the key
	// under a middleware's `plugin:` in the dynamic configuration.
	pluginName = "certfetch"
	// middlewareName is the middleware README's dynamic configuration defines.
	middlewareName = "acme-http01"

	// startTimeout bounds Traefik's start (it interprets the plugin with
	// Yaegi before it serves, which takes a few seconds on a busy machine).
	startTimeout = 60 * time.Second
	// reloadTimeout bounds how long Traefik may take to apply a change in the
	// watched directory: it throttles provider events (2 s by default).
	reloadTimeout = 30 * time.Second
	// tick is the polling interval of every wait.
	tick = 100 * time.Millisecond
	// startAttempts is how often a Traefik start is retried when a port
	// picked as free was taken before Traefik bound it.
	startAttempts = 3
)

// repoRoot is the working tree the plugin is copied from and testdata is read from.
const repoRoot = ".."

// traefikBinary returns $TRAEFIK_BIN. A missing binary is a failure, not a
// skip: a suite that silently skips proves nothing.
func traefikBinary(t testing.TB) string {
	t.Helper()
	bin := os.Getenv("TRAEFIK_BIN")
	require.NotEmpty(t, bin, "TRAEFIK_BIN must name the Traefik binary; run `make test-e2e`, which builds it")
	info, err := os.Stat(bin)
	require.NoError(t, err, "TRAEFIK_BIN")
	require.False(t, info.IsDir(), "TRAEFIK_BIN %s is a directory", bin)
	return bin
}

// traefikOptions configure one Traefik process.
type traefikOptions struct {
	// watchDir is providers.file.directory; required. Files in it at start
	// are Traefik's initial dynamic configuration.
	watchDir string
	// ports, when set, are the web, websecure and traefik (ping) ports;
	// otherwise free ports are picked. A caller that must know the web port
	// before Traefik starts (a CA for Traefik's own resolver) passes them and
	// retries on errPortTaken itself.
	ports *[3]int
	// static is merged into the static configuration at the top level
	// (certificatesResolvers).
	static map[string]any
	// env is added to Traefik's environment.
	env []string
	// catalog keeps README's experimental.plugins (the plugin catalog)
	// instead of loading the working tree as a local plugin; the test must
	// then give Traefik a way to the catalog (env, see catalog_test.go).
	catalog bool
	// dir, when set, is Traefik's working directory (reused across a
	// restart: plugins-storage lives there); otherwise a new one.
	dir string
}

// traefik is a running Traefik process.
type traefik struct {
	web, websecure, ping int
	dir                  string // working directory (plugins-local lives here)
	logPath              string
	log                  *testsupport.SyncBuffer

	cmd    *exec.Cmd
	exited chan struct{}
}

// errPortTaken reports that Traefik could not bind a port picked as free.
var errPortTaken = errors.New("a port picked as free was taken before Traefik bound it")

// startTraefik starts Traefik and waits until it answers its ping endpoint.
// The process is killed at test end; its log is printed if the test failed.
func startTraefik(t testing.TB, opts traefikOptions) *traefik {
	t.Helper()
	for attempt := 1; ; attempt++ {
		tr, err := tryStartTraefik(t, opts)
		if errors.Is(err, errPortTaken) && opts.ports == nil && attempt < startAttempts {
			t.Logf("Traefik start attempt %d: %v; retrying with other ports", attempt, err)
			continue
		}
		require.NoError(t, err)
		return tr
	}
}

// tryStartTraefik makes one attempt; it returns errPortTaken when Traefik
// exited because a port was in use.
func tryStartTraefik(t testing.TB, opts traefikOptions) (*traefik, error) {
	t.Helper()
	bin := traefikBinary(t)
	tr := &traefik{dir: opts.dir, log: &testsupport.SyncBuffer{}, exited: make(chan struct{})}
	if tr.dir == "" {
		tr.dir = t.TempDir()
		tr.logPath = filepath.Join(tr.dir, "traefik.log")
	} else {
		// A reused directory keeps the earlier process's log.
		f, err := os.CreateTemp(tr.dir, "traefik-*.log")
		require.NoError(t, err)
		require.NoError(t, f.Close())
		tr.logPath = f.Name()
	}
	if opts.ports != nil {
		tr.web, tr.websecure, tr.ping = opts.ports[0], opts.ports[1], opts.ports[2]
	} else {
		ports := freePorts(t, 3)
		tr.web, tr.websecure, tr.ping = ports[0], ports[1], ports[2]
	}
	if !opts.catalog {
		copyPlugin(t, filepath.Join(tr.dir, "plugins-local", "src", moduleName))
	}

	static := staticConfig(t, tr, opts)
	staticPath := filepath.Join(tr.dir, "traefik.yml")
	require.NoError(t, os.WriteFile(staticPath, static, 0o600))

	cmd := exec.Command(bin, "--configFile="+staticPath)
	cmd.Dir = tr.dir
	cmd.Env = append(os.Environ(), opts.env...)
	cmd.Stdout = tr.log
	cmd.Stderr = tr.log
	require.NoError(t, cmd.Start())
	tr.cmd = cmd
	go func() {
		_ = cmd.Wait()
		close(tr.exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-tr.exited
		_ = os.WriteFile(tr.logPath, tr.log.Bytes(), 0o600)
		if t.Failed() {
			t.Logf("Traefik log (%s):\n%s", tr.logPath, tail(tr.log.String(), 200))
		}
	})

	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(startTimeout)
	ticker := time.NewTicker(tick)
	defer ticker.Stop()
	for {
		select {
		case <-tr.exited:
			if strings.Contains(tr.log.String(), "address already in use") {
				return nil, errPortTaken
			}
			return nil, fmt.Errorf("traefik exited during start (%s); log:\n%s", cmd.ProcessState, tail(tr.log.String(), 50))
		case <-ticker.C:
		}
		resp, err := client.Get(fmt.Sprintf("http://127.0.0.1:%d/ping", tr.ping))
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return tr, nil
			}
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("traefik did not answer /ping within %s; log:\n%s", startTimeout, tail(tr.log.String(), 50))
		}
	}
}

// staticConfig is testdata/traefik/traefik.yml (the file README quotes) with
// only what a test machine needs changed: loopback addresses on free ports,
// the watched directory, the plugin from the working tree as a local plugin
// instead of the catalog (unless opts.catalog), DEBUG logs, ping for
// readiness, no phoning home.
// Everything that decides routing (the redirect, allowACMEByPass, the file
// provider's watch) is used as written.
func staticConfig(t testing.TB, tr *traefik, opts traefikOptions) []byte {
	t.Helper()
	cfg := readYAML(t, filepath.Join(repoRoot, "testdata", "traefik", "traefik.yml"))

	eps := mapAt(t, cfg, "entryPoints")
	mapAt(t, eps, "web")["address"] = fmt.Sprintf("127.0.0.1:%d", tr.web)
	mapAt(t, eps, "websecure")["address"] = fmt.Sprintf("127.0.0.1:%d", tr.websecure)
	eps["traefik"] = map[string]any{"address": fmt.Sprintf("127.0.0.1:%d", tr.ping)}

	file := mapAt(t, mapAt(t, cfg, "providers"), "file")
	require.Equal(t, true, file["watch"], "README's file provider must watch the directory")
	file["directory"] = opts.watchDir

	experimental := mapAt(t, cfg, "experimental")
	catalog := mapAt(t, mapAt(t, experimental, "plugins"), pluginName)
	require.Equal(t, moduleName, catalog["moduleName"])
	if !opts.catalog {
		delete(experimental, "plugins")
		experimental["localPlugins"] = map[string]any{pluginName: map[string]any{"moduleName": moduleName}}
	}

	cfg["log"] = map[string]any{"level": "DEBUG", "noColor": true}
	cfg["ping"] = map[string]any{"entryPoint": "traefik"}
	cfg["global"] = map[string]any{"checkNewVersion": false, "sendAnonymousUsage": false}
	for k, v := range opts.static {
		cfg[k] = v
	}
	out, err := yaml.Marshal(cfg)
	require.NoError(t, err)
	return out
}

// copyPlugin copies what the plugin catalog and Traefik's local-plugin
// loader read (the root package's non-test Go files, go.mod, .traefik.yml)
// from the working tree, so the suite tests the code as it is now.
func copyPlugin(t testing.TB, dst string) {
	t.Helper()
	require.NoError(t, os.MkdirAll(dst, 0o755))
	entries, err := os.ReadDir(repoRoot)
	require.NoError(t, err)
	copied := 0
	for _, e := range entries {
		name := e.Name()
		isSource := strings.HasSuffix(name, ".go") && !strings.HasSuffix(name, "_test.go")
		if e.IsDir() || !(isSource || name == "go.mod" || name == ".traefik.yml") {
			continue
		}
		data, err := os.ReadFile(filepath.Join(repoRoot, name))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(dst, name), data, 0o644))
		if isSource {
			copied++
		}
	}
	require.NotZero(t, copied, "no plugin source found in %s", repoRoot)
}

// stop kills Traefik and waits until it has exited, for a restart in the
// same directory. The test's cleanup still runs (and finds it stopped).
func (tr *traefik) stop(t testing.TB) {
	t.Helper()
	require.NoError(t, tr.cmd.Process.Kill())
	<-tr.exited
}

// waitForPlugin waits until the web entry point routes the challenge path
// to the plugin. A POST is the probe because only the plugin answers it
// with 405 (Allow: GET, HEAD): Traefik's own 404 (no router yet), the
// redirect's 301 (allowACMEByPass missing) or a 500 (middleware not loaded)
// would each keep the wait going until it fails.
func (tr *traefik) waitForPlugin(t testing.TB) {
	t.Helper()
	url := fmt.Sprintf("http://127.0.0.1:%d/.well-known/acme-challenge/%s", tr.web, probeToken)
	client := noRedirectClient()
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		req, err := http.NewRequest(http.MethodPost, url, nil)
		require.NoError(c, err)
		req.Host = "probe.example.test"
		resp, err := client.Do(req)
		require.NoError(c, err)
		resp.Body.Close()
		assert.Equal(c, http.StatusMethodNotAllowed, resp.StatusCode, "the plugin answers POST on the challenge path with 405")
		assert.Equal(c, "GET, HEAD", resp.Header.Get("Allow"))
	}, reloadTimeout, tick, "Traefik never routed the challenge path of the web entry point to the plugin")
}

// waitForLog waits until Traefik's log contains s and returns the line.
func (tr *traefik) waitForLog(t testing.TB, s string, timeout time.Duration) string {
	t.Helper()
	var line string
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		for l := range strings.SplitSeq(tr.log.String(), "\n") {
			if strings.Contains(l, s) {
				line = l
				return
			}
		}
		c.Errorf("no %q in Traefik's log yet", s)
	}, timeout, tick)
	return line
}

// probeToken is a syntactically valid token (RFC 8555 §8.3) for readiness probes.
const probeToken = "cHJvYmUtdG9rZW4tZm9yLXRoZS1lMmUtc3VpdGU"

// noRedirectClient shows redirects to the test instead of following them.
func noRedirectClient() *http.Client {
	return &http.Client{
		Timeout:       10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// freePorts returns n distinct loopback ports that were free a moment ago;
// for processes that must bind themselves (callers retry on a bind failure).
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	ports := make([]int, 0, n)
	var listeners []net.Listener
	defer func() {
		for _, l := range listeners {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		listeners = append(listeners, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports
}

// readYAML decodes a YAML file into generic maps.
func readYAML(t testing.TB, path string) map[string]any {
	t.Helper()
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	var m map[string]any
	require.NoError(t, yaml.Unmarshal(data, &m), path)
	return m
}

// writeYAML writes v to path atomically (temporary file, rename), the way a
// careful operator or certfetch replaces a file Traefik watches.
func writeYAML(t testing.TB, path string, v any) {
	t.Helper()
	data, err := yaml.Marshal(v)
	require.NoError(t, err)
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	require.NoError(t, os.WriteFile(tmp, data, 0o600))
	require.NoError(t, os.Rename(tmp, path))
}

// mapAt returns m[key] as a map, failing the test if it is not one.
func mapAt(t testing.TB, m map[string]any, key string) map[string]any {
	t.Helper()
	v, ok := m[key].(map[string]any)
	require.True(t, ok, "%q must be a mapping, got %T", key, m[key])
	return v
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{"... (" + strconv.Itoa(len(lines)-n) + " lines before)"}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}
