//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

// certfetchBinary returns the certfetch binary built from this tree, once for the whole
// suite: linking it (about 100 MB with the DNS providers) takes 15 s of a core, and the
// tests that run it start together. TestMain removes it.
func certfetchBinary(t *testing.T) string {
	t.Helper()
	bin, err := buildCertfetch()
	require.NoError(t, err)
	return bin
}

// binDir holds the binary buildCertfetch builds; empty until it ran.
var binDir string

var buildCertfetch = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "certfetch-e2e-bin-")
	if err != nil {
		return "", fmt.Errorf("build certfetch: %w", err)
	}
	binDir = dir
	bin := filepath.Join(dir, "certfetch")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/certfetch")
	cmd.Dir = repoRoot
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build certfetch: %w\n%s", err, out)
	}
	return bin, nil
})

// TestMain removes the binary the tests shared.
func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}
