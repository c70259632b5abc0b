package http01_test

import (
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/certfetch/certfetch/acme/http01"
)

// TestWebrootModesUnderUmask: under the shipped unit's UMask=0077 the web root's
// directories that the webroot mode creates are 0755 and the challenge file 0644, so
// that Traefik (another user) can read them; directories that exist keep their mode.
//
// It changes the process umask, so it must not run in parallel with other tests: it is
// a sequential top-level test, and Go resumes parallel tests only after all sequential
// ones are done.
func TestWebrootModesUnderUmask(t *testing.T) {
	for _, tc := range []struct {
		desc  string
		umask int
	}{
		{desc: "systemd UMask=0077", umask: 0o077},
		{desc: "umask 0027", umask: 0o027},
		{desc: "permissive umask", umask: 0o000},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			base := t.TempDir()
			existing := filepath.Join(base, "srv")
			require.NoError(t, os.Mkdir(existing, 0o750))
			require.NoError(t, os.Chmod(existing, 0o750))

			old := syscall.Umask(tc.umask)
			root := filepath.Join(existing, "www") // created by Present, with what is below
			err := http01.NewWebroot(root).Present(domain, token, keyAuth)
			syscall.Umask(old)
			require.NoError(t, err)

			modes := map[string]fs.FileMode{}
			for _, path := range []string{
				existing, root,
				filepath.Join(root, ".well-known"),
				filepath.Join(root, ".well-known", "acme-challenge"),
				filepath.Join(root, ".well-known", "acme-challenge", token),
			} {
				fi, err := os.Stat(path)
				require.NoError(t, err)
				modes[path] = fi.Mode().Perm()
			}
			assert.Equal(t, map[string]fs.FileMode{
				existing:                           0o750, // not certfetch's: left as it was
				root:                               0o755,
				filepath.Join(root, ".well-known"): 0o755,
				filepath.Join(root, ".well-known", "acme-challenge"):        0o755,
				filepath.Join(root, ".well-known", "acme-challenge", token): 0o644,
			}, modes)
		})
	}
}
