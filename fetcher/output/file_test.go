package output_test

import (
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/certfetch/certfetch/fetcher/output"
)

const grace = 10 * time.Minute

// quiet discards log output.
var quiet = slog.New(slog.DiscardHandler)

// newOutput returns a FileOutput on a directory it creates.
func newOutput(t *testing.T) (string, *output.FileOutput) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "traefik")
	o, err := output.NewFileOutput(output.FileOptions{Directory: dir, GracePeriod: grace, Logger: quiet})
	require.NoError(t, err)
	return dir, o
}

// publishNew publishes a fresh pair under name and returns what a reader
// then loads, checked to be that pair.
func publishNew(t *testing.T, o *output.FileOutput, dir, name string) published {
	t.Helper()
	certPEM, keyPEM := newPair(t, name+".example")
	require.NoError(t, o.Publish(t.Context(), name, certPEM, keyPEM))
	p, err := loadPublished(dir, name)
	require.NoError(t, err)
	require.Equal(t, certPEM, p.CertPEM)
	require.Equal(t, keyPEM, p.KeyPEM)
	return p
}

func TestPublishWritesPEMsAndYAML(t *testing.T) {
	t.Parallel()
	dir, o := newOutput(t)
	p := publishNew(t, o, dir, "www")
	assert.Equal(t, filepath.Join(dir, "certs"), filepath.Dir(p.CertFile), "PEMs live below the watched level")
	assert.Regexp(t, `/www-[0-9a-f]{16}\.crt$`, p.CertFile)
	assert.Equal(t, p.CertFile[:len(p.CertFile)-4]+".key", p.KeyFile)

	yml, err := os.ReadFile(filepath.Join(dir, "www.yml"))
	require.NoError(t, err)
	assert.Equal(t, "# Written by certfetch; replaced on every renewal. Do not edit.\n"+
		"tls:\n    certificates:\n        - certFile: "+p.CertFile+"\n          keyFile: "+p.KeyFile+"\n", string(yml))
	assert.ElementsMatch(t, []string{"www.yml", "certs"}, listDir(t, dir), "no temporary files left")
}

// TestModesIgnoreUmask changes the process umask, so it must not run in
// parallel with other tests: it is a sequential top-level test, and Go
// resumes parallel tests only after all sequential ones are done.
func TestModesIgnoreUmask(t *testing.T) {
	tests := []struct {
		desc        string
		umask       int
		groupKeys   bool
		wantKeyMode fs.FileMode
	}{
		{desc: "systemd UMask=0077", umask: 0o077, wantKeyMode: 0o600},
		{desc: "permissive umask", umask: 0o000, wantKeyMode: 0o600},
		{desc: "group-readable keys under UMask=0077", umask: 0o077, groupKeys: true, wantKeyMode: 0o640},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			old := syscall.Umask(tt.umask)
			defer syscall.Umask(old)
			dir := filepath.Join(t.TempDir(), "traefik")
			o, err := output.NewFileOutput(output.FileOptions{Directory: dir, GracePeriod: grace, GroupReadableKeys: tt.groupKeys, Logger: quiet})
			require.NoError(t, err)
			p := publishNew(t, o, dir, "a")

			modes := map[string]fs.FileMode{}
			for _, path := range []string{dir, filepath.Join(dir, "certs"), filepath.Join(dir, "a.yml"), p.CertFile, p.KeyFile} {
				fi, err := os.Stat(path)
				require.NoError(t, err)
				modes[path] = fi.Mode().Perm()
			}
			assert.Equal(t, map[string]fs.FileMode{
				dir:                         0o755,
				filepath.Join(dir, "certs"): 0o755,
				filepath.Join(dir, "a.yml"): 0o644,
				p.CertFile:                  0o644,
				p.KeyFile:                   tt.wantKeyMode,
			}, modes)
		})
	}
}

func TestExistingDirectoryKeepsItsMode(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	require.NoError(t, os.Chmod(dir, fs.ModeSetgid|0o750))
	_, err := output.NewFileOutput(output.FileOptions{Directory: dir, GracePeriod: grace, Logger: quiet})
	require.NoError(t, err)
	fi, err := os.Stat(dir)
	require.NoError(t, err)
	assert.Equal(t, fs.ModeDir|fs.ModeSetgid|0o750, fi.Mode())
	certs, err := os.Stat(filepath.Join(dir, "certs"))
	require.NoError(t, err)
	assert.Equal(t, fs.ModeDir|fs.ModeSetgid|0o755, certs.Mode(), "certs/ keeps the inherited setgid bit")
}

func TestReplaceKeepsSupersededUntilGraceEnds(t *testing.T) {
	t.Parallel()
	dir, o := newOutput(t)
	old := publishNew(t, o, dir, "a")
	before := time.Now()
	cur := publishNew(t, o, dir, "a")
	after := time.Now()
	require.NotEqual(t, old.CertFile, cur.CertFile)

	require.NoError(t, o.Prune(t.Context(), before.Add(grace-time.Second)))
	assert.FileExists(t, old.CertFile, "inside the grace period")
	assert.FileExists(t, old.KeyFile, "inside the grace period")

	require.NoError(t, o.Prune(t.Context(), after.Add(grace)))
	assert.NoFileExists(t, old.CertFile)
	assert.NoFileExists(t, old.KeyFile)
	_, err := loadPublished(dir, "a")
	assert.NoError(t, err, "the current pair is never pruned")
}

func TestRepublishingTheSamePairKeepsIt(t *testing.T) {
	t.Parallel()
	dir, o := newOutput(t)
	p := publishNew(t, o, dir, "a")
	require.NoError(t, o.Publish(t.Context(), "a", p.CertPEM, p.KeyPEM))
	require.NoError(t, o.Prune(t.Context(), time.Now().Add(2*grace)))
	again, err := loadPublished(dir, "a")
	require.NoError(t, err)
	assert.Equal(t, p, again)
	assert.Len(t, listDir(t, filepath.Join(dir, "certs")), 2)
}

func TestPruneLeftovers(t *testing.T) {
	t.Parallel()
	dir, o := newOutput(t)
	publishNew(t, o, dir, "a")
	written := time.Now()

	// Leftovers of a killed writer (temporary files live in certs/, which
	// Traefik does not watch), and files in the watched directory that are
	// not ours.
	for _, name := range []string{"certs/.a.yml123456", "certs/.a-0123456789abcdef.key987", "certs/b-0123456789abcdef.crt", "routers.yml", ".hidden"} {
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte("x"), 0o600))
	}
	require.NoError(t, o.Prune(t.Context(), written.Add(grace-time.Second)))
	assert.Len(t, listDir(t, filepath.Join(dir, "certs")), 5, "leftovers are young")

	require.NoError(t, o.Prune(t.Context(), time.Now().Add(grace)))
	assert.ElementsMatch(t, []string{"a.yml", "certs", "routers.yml", ".hidden"}, listDir(t, dir), "foreign files are kept")
	assert.Len(t, listDir(t, filepath.Join(dir, "certs")), 2)
}

func TestRemove(t *testing.T) {
	t.Parallel()
	dir, o := newOutput(t)
	p := publishNew(t, o, dir, "a")
	removed := time.Now()
	require.NoError(t, o.Remove(t.Context(), "a"))
	assert.NoFileExists(t, filepath.Join(dir, "a.yml"))
	require.NoError(t, o.Prune(t.Context(), removed.Add(grace-time.Second)))
	assert.FileExists(t, p.KeyFile, "a reload in flight may still read it")

	require.NoError(t, o.Prune(t.Context(), time.Now().Add(grace)))
	assert.Empty(t, listDir(t, filepath.Join(dir, "certs")))
	require.NoError(t, o.Remove(t.Context(), "a"), "removing twice is fine")
	require.NoError(t, o.Remove(t.Context(), "never-published"))
}

func TestPublishRejects(t *testing.T) {
	t.Parallel()
	certA, keyA := newPair(t, "a.example")
	_, keyB := newPair(t, "b.example")
	tests := []struct {
		desc    string
		name    string
		cert    []byte
		key     []byte
		wantErr string
	}{
		{desc: "key of another certificate", name: "a", cert: certA, key: keyB, wantErr: `publish certificate "a": tls: private key does not match public key`},
		{desc: "no certificate", name: "a", cert: []byte("junk"), key: keyA, wantErr: `publish certificate "a": tls: failed to find any PEM data in certificate input`},
		{desc: "empty name", name: "", cert: certA, key: keyA, wantErr: `publish certificate "": invalid name: must be a plain file name not starting with '.'`},
		{desc: "path traversal", name: "../a", cert: certA, key: keyA, wantErr: `publish certificate "../a": invalid name: must be a plain file name not starting with '.'`},
		{desc: "subdirectory", name: "x/a", cert: certA, key: keyA, wantErr: `publish certificate "x/a": invalid name: must be a plain file name not starting with '.'`},
		{desc: "hidden file", name: ".a", cert: certA, key: keyA, wantErr: `publish certificate ".a": invalid name: must be a plain file name not starting with '.'`},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			t.Parallel()
			dir, o := newOutput(t)
			require.EqualError(t, o.Publish(t.Context(), tt.name, tt.cert, tt.key), tt.wantErr)
			assert.Equal(t, []string{"certs"}, listDir(t, dir), "nothing published")
			assert.Empty(t, listDir(t, filepath.Join(dir, "certs")))
		})
	}
}

func TestNewFileOutputErrors(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	file := filepath.Join(root, "file")
	require.NoError(t, os.WriteFile(file, nil, 0o600))
	tests := []struct {
		desc    string
		opts    output.FileOptions
		wantErr string
	}{
		{desc: "negative grace", opts: output.FileOptions{Directory: root, GracePeriod: -time.Second}, wantErr: "file output " + root + ": negative grace period -1s"},
		{desc: "directory is a file", opts: output.FileOptions{Directory: file}, wantErr: "file output " + file + ": create directory " + file + ": exists and is not a directory"},
		{desc: "parent missing", opts: output.FileOptions{Directory: filepath.Join(root, "no", "dir")}, wantErr: "file output " + filepath.Join(root, "no", "dir") + ": create directory " + filepath.Join(root, "no", "dir") + ": mkdir " + filepath.Join(root, "no", "dir") + ": no such file or directory"},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			t.Parallel()
			_, err := output.NewFileOutput(tt.opts)
			require.EqualError(t, err, tt.wantErr)
		})
	}
}

// TestReaderNeverSeesATornOrMismatchedPair races a reader that behaves like
// a Traefik reload (YAML, then both files) against many renewals.
func TestReaderNeverSeesATornOrMismatchedPair(t *testing.T) {
	t.Parallel()
	const renewals = 500
	dir, o := newOutput(t)
	publishNew(t, o, dir, "a")

	done := make(chan struct{})
	var (
		wg        sync.WaitGroup
		reads     int
		readerErr error
	)
	wg.Go(func() {
		for {
			select {
			case <-done:
				return
			default:
			}
			if _, err := loadPublished(dir, "a"); err != nil {
				readerErr = err
				return
			}
			reads++
		}
	})
	for range renewals {
		certPEM, keyPEM := newPair(t, "a.example")
		require.NoError(t, o.Publish(t.Context(), "a", certPEM, keyPEM))
		require.NoError(t, o.Prune(t.Context(), time.Now()))
	}
	close(done)
	wg.Wait()
	require.NoError(t, readerErr)
	assert.Positive(t, reads)
	t.Logf("%d reads during %d renewals", reads, renewals)
}
