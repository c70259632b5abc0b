package output_test

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/certfetch/certfetch/fetcher/output"
	"github.com/certfetch/certfetch/internal/kvclient"
)

func TestFanOutOfOneIsThatOutput(t *testing.T) {
	t.Parallel()
	redisSrv := startRedis(t, "")
	o := redisSrv.newOutput(t, "")
	assert.Same(t, o, output.FanOut(o))
}

// TestFanOutPublishesToTheOthersWhenOneIsDown: a store that is down fails
// the publication (the daemon retries it) without holding back the other
// outputs; publishing again once it is back completes it.
func TestFanOutPublishesToTheOthersWhenOneIsDown(t *testing.T) {
	t.Parallel()
	redisSrv := startRedis(t, "")
	etcdSrv := startEtcd(t)
	dir := filepath.Join(t.TempDir(), "traefik")
	file, err := output.NewFileOutput(output.FileOptions{Directory: dir, GracePeriod: time.Minute, Logger: quiet})
	require.NoError(t, err)
	out := output.FanOut(file, redisSrv.newOutput(t, "traefik"), etcdSrv.newOutput(t, "traefik"))
	t.Cleanup(func() { _ = out.Close() })

	a := newPEM(t, "a.example")
	want := traefikKeys("traefik", []string{"a.example"}, map[string]pemPair{"a.example": a})
	redisSrv.stop(t)
	err = out.Publish(t.Context(), "a.example", []byte(a.cert), []byte(a.key))
	require.ErrorIs(t, err, kvclient.ErrUnavailable)
	assert.Contains(t, err.Error(), "redis")
	assert.NotContains(t, err.Error(), "etcd")
	_, err = loadPublished(dir, "a.example")
	require.NoError(t, err, "the file output got it")
	assert.Equal(t, want, etcdSrv.snapshot(t), "etcd got it")

	redisSrv.start(t)
	require.NoError(t, eventually(func() error { return out.Publish(t.Context(), "a.example", []byte(a.cert), []byte(a.key)) }))
	assert.Equal(t, want, redisSrv.snapshot(t))
	assert.Equal(t, want, etcdSrv.snapshot(t))
	require.NoError(t, out.Remove(t.Context(), "a.example"))
	require.NoError(t, out.Prune(t.Context(), time.Now()))
}
