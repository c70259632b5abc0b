package output_test

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/certfetch/certfetch/fetcher/config"
	"github.com/certfetch/certfetch/fetcher/output"
)

func TestNewBuildsTheConfiguredOutputs(t *testing.T) {
	t.Parallel()
	redisSrv := startRedis(t, "")
	etcdSrv := startEtcd(t)
	fileCfg := func(t *testing.T) config.FileOutput {
		return config.FileOutput{Directory: filepath.Join(t.TempDir(), "traefik"), GracePeriod: time.Minute}
	}
	redisCfg := &config.RedisConnection{Address: redisSrv.addr, RootKey: "traefik", Timeout: testTimeout}
	tests := []struct {
		desc        string
		file, redis bool
		etcd        bool
		rootKey     string
	}{
		{desc: "file only", file: true},
		{desc: "redis only", redis: true, rootKey: "redis-only"},
		{desc: "etcd only", etcd: true, rootKey: "etcd-only"},
		{desc: "file, redis and etcd", file: true, redis: true, etcd: true, rootKey: "all"},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			t.Parallel()
			var cfg config.Output
			if tt.file {
				cfg.File = fileCfg(t)
			}
			if tt.redis {
				r := *redisCfg
				r.RootKey = tt.rootKey
				cfg.Redis = &r
			}
			if tt.etcd {
				cfg.Etcd = &config.EtcdConnection{Endpoints: []string{etcdSrv.clientURL}, RootKey: tt.rootKey, Timeout: testTimeout}
			}
			out, err := output.New(cfg, quiet)
			require.NoError(t, err)
			t.Cleanup(func() { assert.NoError(t, out.Close()) })
			if !tt.file {
				assert.IsType(t, &output.KVOutput{}, out, "one output is returned as is")
			}

			a := newPEM(t, "a.example")
			publishPEM(t, out, "a.example", a)
			want := traefikKeys(tt.rootKey, []string{"a.example"}, map[string]pemPair{"a.example": a})
			if tt.file {
				p, err := loadPublished(cfg.File.Directory, "a.example")
				require.NoError(t, err)
				assert.Equal(t, a.cert, string(p.CertPEM))
			}
			if tt.redis {
				assert.Subset(t, redisSrv.snapshot(t), want)
			}
			if tt.etcd {
				assert.Subset(t, etcdSrv.snapshot(t), want)
			}
			require.NoError(t, out.Remove("a.example"))
			require.NoError(t, out.Prune(time.Now()))
		})
	}
}

// TestFanOutPublishesToTheOthersWhenOneIsDown: a store that is down fails
// the publication (the daemon retries it) without holding back the other
// outputs; publishing again once it is back completes it.
func TestFanOutPublishesToTheOthersWhenOneIsDown(t *testing.T) {
	t.Parallel()
	redisSrv := startRedis(t, "")
	etcdSrv := startEtcd(t)
	cfg := config.Output{
		File:  config.FileOutput{Directory: filepath.Join(t.TempDir(), "traefik"), GracePeriod: time.Minute},
		Redis: &config.RedisConnection{Address: redisSrv.addr, RootKey: "traefik", Timeout: testTimeout},
		Etcd:  &config.EtcdConnection{Endpoints: []string{etcdSrv.clientURL}, RootKey: "traefik", Timeout: testTimeout},
	}
	out, err := output.New(cfg, quiet)
	require.NoError(t, err)
	t.Cleanup(func() { _ = out.Close() })

	a := newPEM(t, "a.example")
	want := traefikKeys("traefik", []string{"a.example"}, map[string]pemPair{"a.example": a})
	redisSrv.stop(t)
	err = out.Publish("a.example", []byte(a.cert), []byte(a.key))
	require.ErrorIs(t, err, output.ErrUnavailable)
	assert.Contains(t, err.Error(), "redis")
	assert.NotContains(t, err.Error(), "etcd")
	_, err = loadPublished(cfg.File.Directory, "a.example")
	require.NoError(t, err, "the file output got it")
	assert.Equal(t, want, etcdSrv.snapshot(t), "etcd got it")

	redisSrv.start(t)
	require.NoError(t, eventually(func() error { return out.Publish("a.example", []byte(a.cert), []byte(a.key)) }))
	assert.Equal(t, want, redisSrv.snapshot(t))
	assert.Equal(t, want, etcdSrv.snapshot(t))
}

func TestNewWithoutOutputs(t *testing.T) {
	t.Parallel()
	_, err := output.New(config.Output{}, nil)
	require.EqualError(t, err, "output: none configured (set output.file, output.redis or output.etcd)")
}
