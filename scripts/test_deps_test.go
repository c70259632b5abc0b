// Package scripts_test runs the repository's shell scripts against this
// machine's real commands.
package scripts_test

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// testDeps runs scripts/test-deps --check with PATH set to path and
// returns its exit code, stdout and stderr.
func testDeps(t *testing.T, path string) (int, string, string) {
	t.Helper()
	cmd := exec.Command("./test-deps", "--check")
	cmd.Env = append(os.Environ(), "PATH="+path)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return exit.ExitCode(), stdout.String(), stderr.String()
	}
	require.NoError(t, err)
	return 0, stdout.String(), stderr.String()
}

// TestTestDepsOnThisMachine: where the tests run, everything is present.
func TestTestDepsOnThisMachine(t *testing.T) {
	t.Parallel()
	code, stdout, stderr := testDeps(t, os.Getenv("PATH"))
	require.Equal(t, 0, code, stderr)
	assert.Regexp(t, `^test-deps: ok \(make git redis-server etcd named promtool lintian rpm podman runc chattr go \d+\.\d+`, stdout)
}

// TestTestDepsReportsMissingPackages hides redis-server and etcd (a PATH
// holding only the other commands the script and its checks use) and
// expects the exact apt-get command for their Debian packages, and a
// failure, never a partial test run.
func TestTestDepsReportsMissingPackages(t *testing.T) {
	t.Parallel()
	bin := t.TempDir()
	for _, name := range []string{"sh", "dirname", "sed", "sort", "head", "awk", "id", "paste", "apt-get", "dpkg", "make", "git", "go",
		"promtool", "lintian", "rpm", "podman", "runc", "chattr"} {
		target, err := exec.LookPath(name)
		if (name == "dpkg" || name == "apt-get") && err != nil {
			continue // dpkg only names the architecture in the Go hint; without apt-get the script says so
		}
		require.NoError(t, err, "%s is needed by this test", name)
		require.NoError(t, os.Symlink(target, filepath.Join(bin, name)))
	}
	for _, hidden := range []string{"redis-server", "etcd"} {
		if p, err := exec.LookPath(hidden); err == nil {
			require.False(t, strings.HasPrefix(filepath.Dir(p), "/usr/local/sbin") || strings.HasPrefix(filepath.Dir(p), "/usr/sbin") || filepath.Dir(p) == "/sbin",
				"%s lives in %s, which the script always searches; this test cannot hide it", hidden, p)
		}
	}
	code, stdout, stderr := testDeps(t, bin)
	assert.Equal(t, 1, code, "stdout %s\nstderr %s", stdout, stderr)
	assert.Empty(t, stdout)
	assert.Contains(t, stderr, "test-deps: the tests need these Debian packages: redis-server etcd-server")
	assert.Contains(t, stderr, "  redis-server (redis-server): Redis store and output tests")
	assert.Contains(t, stderr, "  etcd-server (etcd): etcd store and output tests")
	if _, err := exec.LookPath("apt-get"); err != nil {
		assert.Contains(t, stderr, "No apt-get here")
		return
	}
	install := "apt-get update && apt-get install -y --no-install-recommends redis-server etcd-server"
	if os.Getuid() != 0 {
		install = "sudo sh -c '" + install + "'"
	}
	assert.Contains(t, stderr, "\n  "+install+"\n", "the exact command to run")
}
