package atomicfile

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestWrite(t *testing.T) {
	t.Parallel()
	tests := []struct {
		desc string
		perm os.FileMode
	}{
		{desc: "private key mode", perm: 0o600},
		{desc: "public mode survives a restrictive umask", perm: 0o644},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			path := filepath.Join(dir, "f.yml")
			require.NoError(t, Write(path, []byte("old"), tc.perm))
			require.NoError(t, Write(path, []byte("new"), tc.perm))
			data, err := os.ReadFile(path)
			require.NoError(t, err)
			assert.Equal(t, "new", string(data))
			info, err := os.Stat(path)
			require.NoError(t, err)
			assert.Equal(t, tc.perm, info.Mode().Perm())
			entries, err := os.ReadDir(dir)
			require.NoError(t, err)
			assert.Len(t, entries, 1, "no temporary file is left behind")
		})
	}
}

func TestWriteMissingDirectory(t *testing.T) {
	t.Parallel()
	err := Write(filepath.Join(t.TempDir(), "missing", "f"), []byte("x"), 0o600)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "write ")
}
