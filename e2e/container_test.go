//go:build e2e

package e2e

// The container image (dist/container), built and run with podman the way it
// works on this kind of machine: image storage in a temporary
// directory (vfs driver: no overlay mounts), runc (crun fails on this
// kernel's hybrid cgroups), cgroupfs, default_ulimits cleared through a
// CONTAINERS_CONF file, host networking. The image is FROM scratch, so no
// registry is needed. Debian packages: podman, runc, ca-certificates.

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/certfetch/certfetch/internal/testkit/testca"
)

// imageUID is the image's user (dist/container/passwd: certfetch).
const imageUID = 65532

// podman runs podman against private storage.
type podman struct {
	bin    string
	global []string // storage, runtime and cgroup flags
	env    []string
}

// newPodman prepares storage in a temporary directory; containers left
// behind by a failed test are removed before the directory is.
func newPodman(t *testing.T) *podman {
	t.Helper()
	bin, err := exec.LookPath("podman")
	require.NoError(t, err, "podman not found: install the Debian packages podman and runc")
	_, err = exec.LookPath("runc")
	require.NoError(t, err, "runc not found: install the Debian package runc")
	dir := t.TempDir()
	conf := filepath.Join(dir, "containers.conf")
	// podman 4.3 passes its default RLIMIT_NOFILE/NPROC to runc, which this
	// kernel's container refuses; an empty list passes none.
	require.NoError(t, os.WriteFile(conf, []byte("[containers]\ndefault_ulimits = []\n"), 0o644))
	tmp := filepath.Join(dir, "tmp")
	require.NoError(t, os.MkdirAll(tmp, 0o700))
	p := &podman{
		bin: bin,
		global: []string{
			"--root", filepath.Join(dir, "root"), "--runroot", filepath.Join(dir, "runroot"),
			"--tmpdir", filepath.Join(dir, "libpod"), "--storage-driver", "vfs",
			"--runtime", "runc", "--cgroup-manager", "cgroupfs", "--events-backend", "none",
		},
		env: []string{"CONTAINERS_CONF=" + conf, "TMPDIR=" + tmp},
	}
	t.Cleanup(func() { _, _ = p.output("rm", "--force", "--all") })
	return p
}

// command is podman with the private storage flags.
func (p *podman) command(args ...string) *exec.Cmd {
	cmd := exec.Command(p.bin, append(append([]string{}, p.global...), args...)...)
	cmd.Env = append(os.Environ(), p.env...)
	return cmd
}

// output runs podman and returns its standard output.
func (p *podman) output(args ...string) (string, error) {
	cmd := p.command(args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("podman %s: %w\n%s%s", strings.Join(args, " "), err, out, stderr.String())
	}
	return string(out), nil
}

// logs is a container's output: podman logs replays the container's
// stderr (where certfetch logs) on its own stderr.
func (p *podman) logs(name string) string {
	out, err := p.command("logs", name).CombinedOutput()
	if err != nil {
		return fmt.Sprintf("podman logs %s: %v\n%s", name, err, out)
	}
	return string(out)
}

func (p *podman) run(t *testing.T, args ...string) string {
	t.Helper()
	out, err := p.output(args...)
	require.NoError(t, err)
	return out
}

// TestContainerImage builds the image with dist/container/build.sh, checks
// what is in it, runs `certfetch demo` in it, and runs the daemon in it
// against the test CA with a real Traefik on the host serving the result.
func TestContainerImage(t *testing.T) {
	t.Parallel()
	p := newPodman(t)
	const image = "localhost/certfetch:e2e"

	build := exec.Command(filepath.Join(repoRoot, "dist", "container", "build.sh"), image)
	build.Env = append(os.Environ(), p.env...)
	build.Env = append(build.Env, "CONTAINER_ENGINE="+p.bin+" "+strings.Join(p.global, " "))
	out, err := build.CombinedOutput()
	require.NoError(t, err, "dist/container/build.sh:\n%s", out)

	t.Run("contents", func(t *testing.T) { checkImage(t, p, image) })
	t.Run("demo", func(t *testing.T) {
		// --network none: the demo needs nothing but loopback. Short CA
		// delay and deadline: the first attempt ends with the order still
		// processing, the second resumes it.
		out := p.run(t, "run", "--rm", "--network", "none", image, "demo", "--ca-delay", "3s", "--timeout", "2s", "--retry-after", "1s")
		t.Logf("certfetch demo in the container:\n%s", out)
		assert.Contains(t, out, "still alive at the CA")
		assert.Contains(t, out, "certificate issued for demo.certfetch.test")
		assert.Contains(t, out, "the CA saw 1 new-order request(s)")
	})
	t.Run("run with Traefik", func(t *testing.T) { runBesideTraefik(t, p, image) })
}

// checkImage: exactly the expected files, owners and modes (nothing else
// FROM scratch), and the configuration README and compose.yml rely on.
func checkImage(t *testing.T, p *podman, image string) {
	var inspect []struct {
		Size   int64
		Config struct {
			User       string
			Entrypoint []string
			Cmd        []string
			Volumes    map[string]struct{}
		}
	}
	require.NoError(t, json.Unmarshal([]byte(p.run(t, "image", "inspect", image)), &inspect))
	require.Len(t, inspect, 1)
	cfg := inspect[0].Config
	assert.Equal(t, fmt.Sprintf("%d:%d", imageUID, imageUID), cfg.User)
	assert.Equal(t, []string{"/usr/bin/certfetch"}, cfg.Entrypoint)
	assert.Equal(t, []string{"run"}, cfg.Cmd)
	assert.Equal(t, map[string]struct{}{"/var/lib/certfetch": {}, "/etc/traefik/certfetch": {}}, cfg.Volumes)

	id := strings.TrimSpace(p.run(t, "create", image))
	defer p.run(t, "rm", id)
	cmd := p.command("export", id)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	got := map[string]string{}
	var binSize, total int64
	tr := tar.NewReader(stdout)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		name := strings.TrimSuffix(h.Name, "/")
		got[name] = fmt.Sprintf("%v %d:%d", h.FileInfo().Mode(), h.Uid, h.Gid)
		total += h.Size
		if name == "usr/bin/certfetch" {
			binSize = h.Size
		}
	}
	require.NoError(t, cmd.Wait())
	owned := fmt.Sprintf("%d:%d", imageUID, imageUID)
	want := map[string]string{
		"etc":                               "drwxr-xr-x 0:0",
		"etc/passwd":                        "-rw-r--r-- 0:0",
		"etc/group":                         "-rw-r--r-- 0:0",
		"etc/ssl":                           "drwxr-xr-x 0:0",
		"etc/ssl/certs":                     "drwxr-xr-x 0:0",
		"etc/ssl/certs/ca-certificates.crt": "-rw-r--r-- 0:0",
		"etc/traefik":                       "drwxr-xr-x 0:0",
		"etc/traefik/certfetch":             "drwxr-xr-x " + owned,
		"tmp":                               "dtrwxrwxrwx 0:0",
		"usr":                               "drwxr-xr-x 0:0",
		"usr/bin":                           "drwxr-xr-x 0:0",
		"usr/bin/certfetch":                 "-rwxr-xr-x 0:0",
		"var":                               "drwxr-xr-x 0:0",
		"var/lib":                           "drwxr-xr-x 0:0",
		"var/lib/certfetch":                 "drwx------ " + owned,
	}
	assert.Equal(t, want, got)
	t.Logf("image %s: %d bytes (%.1f MB) as podman reports it; files %d bytes, of which the binary %d bytes",
		image, inspect[0].Size, float64(inspect[0].Size)/1e6, total, binSize)
	assert.Less(t, total-binSize, int64(1<<20), "besides the binary only small files (CA bundle, passwd, group)")
}

// runBesideTraefik: Traefik on the host with the plugin (README's
// configuration), the test CA, and `certfetch run` in the container writing
// into a host directory Traefik's file provider watches. The directory is
// mounted at the same path inside the container, because certfetch writes
// absolute PEM paths into its YAML files (compose.yml does the same with
// /etc/traefik/certfetch in both containers). The CA needs 3 s after
// finalize and the deadline is 2 s, so the daemon in the container also
// resumes its journaled order from the mounted state directory.
func runBesideTraefik(t *testing.T, p *podman, image string) {
	const domain = "container.example.test"
	s := newSiteStack(t, stackOptions{
		mode:    thumbprintMode,
		ca:      testca.Options{Mode: testca.Async, Delay: 3 * time.Second, RetryAfter: time.Second},
		domains: []string{domain},
	}, http.NotFoundHandler())

	etc := filepath.Join(s.dir, "container-etc")
	state := filepath.Join(s.dir, "container-state")
	require.NoError(t, os.MkdirAll(etc, 0o755))
	require.NoError(t, os.MkdirAll(state, 0o700))
	// The container runs as certfetch (65532): it owns its state and writes
	// the output; Traefik on the host reads it as root.
	for _, dir := range []string{state, s.watchDir} {
		require.NoError(t, os.Chown(dir, imageUID, imageUID))
	}
	_, err := s.ca.WriteTLSRoot(etc)
	require.NoError(t, err)
	require.NoError(t, os.Chmod(filepath.Join(etc, testca.TLSRootFileName), 0o644))
	metricsAddr := fmt.Sprintf("127.0.0.1:%d", freePorts(t, 1)[0])
	config := fmt.Sprintf(`timeout: 2s
storage: /var/lib/certfetch
log:
  level: debug
resolvers:
  %s:
    caServer: %s
    caCertificates: [/etc/certfetch/%s]
    httpChallenge:
      stateless: true
certificates:
  - domains: [%s]
output:
  file:
    directory: %s
metrics:
  listen: %s
`, resolverName, s.ca.DirectoryURL(), testca.TLSRootFileName, domain, strconv.Quote(s.watchDir), metricsAddr)
	require.NoError(t, os.WriteFile(filepath.Join(etc, "certfetch.yml"), []byte(config), 0o644))
	mounts := []string{
		"--network", "host",
		"--volume", etc + ":/etc/certfetch:ro",
		"--volume", state + ":/var/lib/certfetch",
		"--volume", s.watchDir + ":" + s.watchDir,
	}

	// The thumbprint for the plugin, from the account key the container
	// creates in the state directory.
	tp := strings.TrimSpace(p.run(t, append(append([]string{"run", "--rm"}, mounts...), image, "thumbprint")...))
	require.Regexp(t, regexp.MustCompile(`^[A-Za-z0-9_-]{43}$`), tp)
	s.routeChallenges(t, map[string]any{"thumbprint": tp})

	name := "certfetch-e2e"
	p.run(t, append(append([]string{"run", "--detach", "--name", name}, mounts...), image)...)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("container log:\n%s", tail(p.logs(name), 100))
		}
	})

	yml := filepath.Join(s.watchDir, domain+".yml")
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		_, err := os.Stat(yml)
		if err != nil {
			state, _ := p.output("inspect", "--format", "{{.State.Status}}", name)
			require.Equal(c, "running", strings.TrimSpace(state), "the container stopped before publishing")
		}
		require.NoError(c, err)
	}, 2*time.Minute, tick, "certfetch in the container never published %s", yml)
	leaf := s.published(t)
	assert.Equal(t, []string{domain}, leaf.DNSNames)
	s.waitServed(t, domain, leaf)
	assert.Equal(t, 1, s.ca.Stats().NewOrders, "one order at the CA: the second attempt resumed the first one's order")
	logs := p.logs(name)
	assert.Contains(t, logs, "deadline passed; the order stays alive at the CA and is resumed", "the first attempt ended at its 2 s deadline")
	assert.Contains(t, logs, "certificate issued")

	// Written by the container's unprivileged user.
	certs, err := filepath.Glob(filepath.Join(s.watchDir, "certs", "*"))
	require.NoError(t, err)
	require.Len(t, certs, 2, "certificate and key")
	sort.Strings(certs)
	for _, f := range append(certs, yml) {
		info, err := os.Stat(f)
		require.NoError(t, err)
		assert.EqualValues(t, imageUID, info.Sys().(*syscall.Stat_t).Uid, "%s owner", f)
	}

	// Its metrics, on the host network.
	resp, err := http.Get("http://" + metricsAddr + "/metrics")
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	assert.Contains(t, string(body), `certfetch_certificate_expiry_timestamp_seconds{name="`+domain+`"}`)

	// SIGTERM (podman stop) ends the daemon cleanly.
	p.run(t, "stop", "--time", "30", name)
	code := strings.TrimSpace(p.run(t, "inspect", "--format", "{{.State.ExitCode}}", name))
	assert.Equal(t, "0", code, "exit code after SIGTERM")
}
