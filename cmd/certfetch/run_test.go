package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/certfetch/certfetch/demo"
	"github.com/certfetch/certfetch/fetcher"
	"github.com/certfetch/certfetch/internal/testkit/testca"
	"github.com/certfetch/certfetch/internal/testkit/testsupport"
)

// TestMain lets the test binary act as the certfetch binary (CERTFETCH_TEST_MAIN=1) for
// the tests that need a real process to send signals to or to kill. With
// CERTFETCH_TEST_KILL_AT=<step> (a fetcher.Step) that process SIGKILLs itself the first
// time any certificate reaches that step: a crash at a precise point of the lifecycle.
func TestMain(m *testing.M) {
	if os.Getenv("CERTFETCH_TEST_MAIN") == "1" {
		if step := os.Getenv("CERTFETCH_TEST_KILL_AT"); step != "" {
			observe = killAt(fetcher.Step(step))
		}
		os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// killAt returns an Observe that kills the process, without any cleanup, at step.
func killAt(step fetcher.Step) func(fetcher.Event) {
	return func(e fetcher.Event) {
		if e.Step != step {
			return
		}
		fmt.Fprintf(os.Stderr, "test: SIGKILL at step %s of %s\n", e.Step, e.Name)
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // the signal is on its way; nothing more of this process may run
	}
}

// notifySocket collects sd_notify datagrams the way systemd receives them.
type notifySocket struct {
	conn *net.UnixConn
	mu   sync.Mutex
	msgs []string
}

func listenNotify(t testing.TB) (*notifySocket, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	require.NoError(t, err)
	n := &notifySocket{conn: conn}
	t.Cleanup(func() { conn.Close() })
	go func() {
		buf := make([]byte, 4096)
		for {
			k, err := conn.Read(buf)
			if err != nil {
				return
			}
			n.mu.Lock()
			n.msgs = append(n.msgs, string(buf[:k]))
			n.mu.Unlock()
		}
	}()
	return n, path
}

func (n *notifySocket) saw(prefix string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, m := range n.msgs {
		if strings.HasPrefix(m, prefix) {
			return true
		}
	}
	return false
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s: %s", url, body)
	return string(body)
}

// TestRunDaemon runs `certfetch run` as a process under a fake systemd
// notify socket: it issues, reloads on SIGHUP (keeping the running
// configuration when the new one is broken) and stops on SIGTERM.
func TestRunDaemon(t *testing.T) {
	t.Parallel()
	// The configuration wants a real port: take a free one and release it
	// for the daemon to bind.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	metricsAddr := ln.Addr().String()
	require.NoError(t, ln.Close())
	sb, _, err := demo.Start(demo.Options{Dir: t.TempDir(), CA: testca.Options{}, MetricsListen: metricsAddr}, []string{"one.example.test"})
	require.NoError(t, err)
	t.Cleanup(sb.Close)
	notify, sock := listenNotify(t)

	cmd := exec.Command(os.Args[0], "run", "--config", sb.ConfigPath)
	cmd.Env = append(os.Environ(), "CERTFETCH_TEST_MAIN=1", "NOTIFY_SOCKET="+sock)
	var stderr testsupport.SyncBuffer
	cmd.Stderr = &stderr
	require.NoError(t, cmd.Start())
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() { _ = cmd.Process.Kill() })

	published := func(name string) func() bool {
		return func() bool {
			_, err := os.Stat(filepath.Join(sb.OutputDir(), name+".yml"))
			return err == nil
		}
	}
	const wait, tick = 30 * time.Second, 50 * time.Millisecond
	require.Eventually(t, published("one.example.test"), wait, tick, "first issuance; stderr:\n%s", stderr.String())
	assert.True(t, notify.saw("READY=1"), "READY after the configuration and state loaded")
	require.Eventually(t, func() bool { return notify.saw("STATUS=1 certificates, 1 published, 0 failing") }, wait, tick)

	assert.Contains(t, stderr.String(), `msg="serving metrics" addr=`+metricsAddr)
	scrape := get(t, "http://"+metricsAddr+"/metrics")
	assert.Contains(t, scrape, `certfetch_issuance_duration_seconds_count{resolver="testca",result="success"} 1`)
	assert.Contains(t, scrape, `certfetch_certificate_expiry_timestamp_seconds{name="one.example.test"}`)
	assert.Regexp(t, `certfetch_order_polls_total\{resolver="testca"\} [1-9]`, scrape)
	assert.Equal(t, "ok\n", get(t, "http://"+metricsAddr+"/healthz"))

	_, err = sb.WriteConfig([]string{"one.example.test"}, []string{"two.example.test"})
	require.NoError(t, err)
	require.NoError(t, cmd.Process.Signal(syscall.SIGHUP))
	require.Eventually(t, published("two.example.test"), wait, tick, "reload adds a certificate; stderr:\n%s", stderr.String())
	assert.True(t, notify.saw("RELOADING=1"))

	require.NoError(t, os.WriteFile(sb.ConfigPath, []byte("resolvers: [broken\n"), 0o600))
	require.NoError(t, cmd.Process.Signal(syscall.SIGHUP))
	require.Eventually(t, func() bool {
		return strings.Contains(stderr.String(), "reload failed; keeping the running configuration")
	}, wait, tick)

	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	select {
	case err := <-exited:
		require.NoError(t, err, "graceful exit code 0; stderr:\n%s", stderr.String())
	case <-time.After(wait):
		t.Fatalf("no exit after SIGTERM; stderr:\n%s", stderr.String())
	}
	assert.True(t, notify.saw("STOPPING=1"))
	assert.Contains(t, stderr.String(), "certfetch stopped")
}
