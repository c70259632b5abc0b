package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/certfetch/certfetch/demo"
	"github.com/certfetch/certfetch/internal/testkit/testca"
	"github.com/certfetch/certfetch/internal/testkit/testservers"
	"github.com/certfetch/certfetch/internal/testkit/testsupport"
)

// sharedBackends are the shared stores the multi-instance tests run on:
// the YAML value of `storage` for a server started per test. lockTTL 3 s
// (the minimum) keeps takeovers short.
var sharedBackends = []struct {
	desc    string
	storage func(t *testing.T) string
}{
	{desc: "redis", storage: func(t *testing.T) string {
		srv, _ := testservers.StartRedis(t)
		return fmt.Sprintf("{redis: {address: %s}, lockTTL: 3s}", strconv.Quote(srv.Addr()))
	}},
	{desc: "etcd", storage: func(t *testing.T) string {
		srv, _ := testservers.StartEtcd(t)
		return fmt.Sprintf("{etcd: {endpoints: [%s]}, lockTTL: 3s}", strconv.Quote(srv.Addr()))
	}},
}

// instance is one `certfetch run` process.
type instance struct {
	cmd    *exec.Cmd
	stderr *testsupport.SyncBuffer
	exited chan struct{} // closed when the process has exited
}

func startInstance(t *testing.T, configPath string) *instance {
	t.Helper()
	in := &instance{cmd: exec.Command(os.Args[0], "run", "--config", configPath), stderr: &testsupport.SyncBuffer{}, exited: make(chan struct{})}
	in.cmd.Env = append(os.Environ(), "CERTFETCH_TEST_MAIN=1")
	in.cmd.Stderr = in.stderr
	require.NoError(t, in.cmd.Start())
	go func() {
		_ = in.cmd.Wait()
		close(in.exited)
	}()
	t.Cleanup(func() {
		_ = in.cmd.Process.Kill()
		<-in.exited
		if t.Failed() {
			t.Logf("instance %d:\n%s", in.cmd.Process.Pid, in.stderr.String())
		}
	})
	return in
}

func published(sb *demo.Sandbox, name string) func() bool {
	return func() bool {
		_, err := os.Stat(filepath.Join(sb.OutputDir(), name+".yml"))
		return err == nil
	}
}

// TestInstancesShareTheWork runs two instances on one shared store: every
// certificate is issued exactly once, and either instance's status shows
// all of them.
func TestInstancesShareTheWork(t *testing.T) {
	t.Parallel()
	for _, backend := range sharedBackends {
		t.Run(backend.desc, func(t *testing.T) {
			t.Parallel()
			const n = 6
			var domains [][]string
			for i := range n {
				domains = append(domains, []string{fmt.Sprintf("w%d.shared.test", i)})
			}
			sb, _, err := demo.Start(demo.Options{Dir: t.TempDir(), Storage: backend.storage(t)}, domains...)
			require.NoError(t, err)
			t.Cleanup(sb.Close)

			a, b := startInstance(t, sb.ConfigPath), startInstance(t, sb.ConfigPath)
			for _, d := range domains {
				require.Eventually(t, published(sb, d[0]), time.Minute, 50*time.Millisecond, "%s published", d[0])
			}
			assert.Equal(t, n, sb.CA.Stats().NewOrders, "each certificate ordered once by the two instances together")
			for _, in := range []*instance{a, b} {
				assert.Contains(t, in.stderr.String(), "certfetch running")
			}

			code, stdout, stderr := certfetch("status", "--config", sb.ConfigPath)
			require.Equal(t, exitOK, code, stderr)
			assert.Equal(t, n+1, strings.Count(stdout, "\n"), "a row per certificate:\n%s", stdout)
			assert.NotContains(t, stdout, "due now")
		})
	}
}

// TestLockTakeoverResumesTheOrder kills the instance that holds a
// certificate's lease in the middle of a slow order (the CA needs 42 s
// after finalize): another instance takes the lease once it expires,
// resumes the journaled order and finishes it, and the CA sees one order.
func TestLockTakeoverResumesTheOrder(t *testing.T) {
	t.Parallel()
	for _, backend := range sharedBackends {
		t.Run(backend.desc, func(t *testing.T) {
			t.Parallel()
			const domain = "slow.shared.test"
			sb, _, err := demo.Start(demo.Options{
				Dir:     t.TempDir(),
				Storage: backend.storage(t),
				CA:      testca.Options{Mode: testca.Async, Delay: 42 * time.Second, RetryAfter: 5 * time.Second},
				Timeout: 2 * time.Minute,
			}, []string{domain})
			require.NoError(t, err)
			t.Cleanup(sb.Close)

			holder := startInstance(t, sb.ConfigPath)
			require.Eventually(t, func() bool { return sb.CA.Stats().Finalizes == 1 }, time.Minute, 50*time.Millisecond,
				"the first instance finalizes; the CA now processes the order")
			require.NoError(t, holder.cmd.Process.Kill())
			<-holder.exited
			killed := time.Now()

			other := startInstance(t, sb.ConfigPath)
			require.Eventually(t, func() bool { return strings.Contains(other.stderr.String(), "resuming order") }, 30*time.Second, 20*time.Millisecond,
				"the other instance resumes the journaled order once the lease expires")
			t.Logf("%s: lease taken over and order resumed %s after the kill", backend.desc, time.Since(killed).Round(time.Millisecond))
			require.Eventually(t, published(sb, domain), 2*time.Minute, 100*time.Millisecond, "the order finishes")
			assert.Equal(t, 1, sb.CA.Stats().NewOrders, "one order at the CA, never a second")
		})
	}
}
