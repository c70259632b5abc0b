package output_test

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/certfetch/certfetch/fetcher/output"
)

// helperDirEnv tells TestHelperProcess, run in a child process, where to
// publish.
const helperDirEnv = "CERTFETCH_OUTPUT_HELPER_DIR"

// helperRounds bounds the child's loop so that a child whose parent died
// without killing it still ends.
const helperRounds = 100_000

// TestHelperProcess is not a test by itself: TestKilledWriter runs the test
// binary again with only this test and helperDirEnv set. The child publishes
// new pairs (and prunes with no grace, so kills land in Prune too) in a loop
// and prints a line after each publication.
func TestHelperProcess(t *testing.T) {
	dir := os.Getenv(helperDirEnv)
	if dir == "" {
		return
	}
	o, err := output.NewFileOutput(output.FileOptions{Directory: dir, Logger: quiet})
	require.NoError(t, err)
	for i := range helperRounds {
		certPEM, keyPEM := newPair(t, "a.example")
		require.NoError(t, o.Publish(t.Context(), "a", certPEM, keyPEM))
		fmt.Printf("published %d\n", i)
		require.NoError(t, o.Prune(t.Context(), time.Now()))
	}
}

// firstLine closes seen when the first complete line has been written.
type firstLine struct {
	once sync.Once
	seen chan struct{}
}

func (w *firstLine) Write(p []byte) (int, error) {
	if bytes.IndexByte(p, '\n') >= 0 {
		w.once.Do(func() { close(w.seen) })
	}
	return len(p), nil
}

// TestKilledWriter SIGKILLs a publishing child process at random points and
// checks after each kill that the YAML parses and names a complete, matching
// pair: the old one or the new one.
func TestKilledWriter(t *testing.T) {
	t.Parallel()
	const kills = 30
	// maxKillDelay spans several publications (each takes about a
	// millisecond: three writes with two fsyncs each), so kills land in
	// every phase of Publish and Prune.
	const maxKillDelay = 10 * time.Millisecond
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(20261127, 1)) // the seed only fixes the kill points

	for i := range kills {
		stdout := &firstLine{seen: make(chan struct{})}
		var stderr bytes.Buffer
		cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1")
		cmd.Env = append(os.Environ(), helperDirEnv+"="+dir)
		cmd.Stdout, cmd.Stderr = stdout, &stderr
		require.NoError(t, cmd.Start())
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()

		select {
		case <-stdout.seen: // the child has published at least once
		case err := <-exited:
			require.FailNow(t, "helper exited before publishing", "run %d: %v\n%s", i, err, stderr.String())
		}
		// The delay is not synchronisation: it picks where in the
		// publish loop the kill lands.
		time.Sleep(time.Duration(rng.Int64N(int64(maxKillDelay))))
		require.NoError(t, cmd.Process.Kill())
		<-exited

		_, err := loadPublished(dir, "a")
		require.NoError(t, err, "after kill %d", i)
	}

	// Whatever the kills left behind (temporary files, orphaned PEMs) is
	// pruned; the published pair stays.
	o, err := output.NewFileOutput(output.FileOptions{Directory: dir, Logger: quiet})
	require.NoError(t, err)
	require.NoError(t, o.Prune(t.Context(), time.Now()))
	p, err := loadPublished(dir, "a")
	require.NoError(t, err)
	assert.ElementsMatch(t, []string{"a.yml", "certs"}, listDir(t, dir))
	assert.ElementsMatch(t, []string{filepath.Base(p.CertFile), filepath.Base(p.KeyFile)}, listDir(t, filepath.Join(dir, "certs")))
}
