package fetcher

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"math/big"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/certfetch/certfetch/fetcher/config"
	"github.com/certfetch/certfetch/internal/kvclient"
	"github.com/certfetch/certfetch/internal/testkit/testservers"
)

// TestNewOutputBuildsTheConfiguredOutputs: every configured output gets the
// publication, under its rootKey.
func TestNewOutputBuildsTheConfiguredOutputs(t *testing.T) {
	t.Parallel()
	_, redisAddr := testservers.StartRedis(t)
	_, etcdURL := testservers.StartEtcd(t)
	redis, err := kvclient.NewRedis(kvclient.RedisOptions{Address: redisAddr})
	require.NoError(t, err)
	t.Cleanup(func() { redis.Close() })
	etcd, err := kvclient.NewEtcd(kvclient.EtcdOptions{Endpoints: []string{etcdURL}})
	require.NoError(t, err)
	t.Cleanup(func() { etcd.Close() })
	certPEM, keyPEM := selfSigned(t, "a.example")

	tests := []struct {
		desc              string
		file, redis, etcd bool
	}{
		{desc: "file", file: true},
		{desc: "redis", redis: true},
		{desc: "etcd", etcd: true},
		{desc: "all", file: true, redis: true, etcd: true},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			t.Parallel()
			var cfg config.Output
			if tt.file {
				cfg.File = config.FileOutput{Directory: filepath.Join(t.TempDir(), "traefik"), GracePeriod: time.Minute}
			}
			if tt.redis {
				cfg.Redis = &config.RedisConnection{Address: redisAddr, RootKey: tt.desc, Timeout: time.Second}
			}
			if tt.etcd {
				cfg.Etcd = &config.EtcdConnection{Endpoints: []string{etcdURL}, RootKey: tt.desc, Timeout: time.Second}
			}
			out, err := OpenOutput(cfg, slog.New(slog.DiscardHandler))
			require.NoError(t, err)
			t.Cleanup(func() { assert.NoError(t, out.Close()) })
			require.NoError(t, out.Publish(t.Context(), "a.example", certPEM, keyPEM))

			certKey := tt.desc + "/tls/certificates/0/certFile"
			if tt.file {
				assert.FileExists(t, filepath.Join(cfg.File.Directory, "a.example.yml"))
			}
			got, found, err := redis.Get(t.Context(), certKey)
			require.NoError(t, err)
			assert.Equal(t, tt.redis, found, "published to redis")
			if found {
				assert.Equal(t, certPEM, got)
			}
			kv, _, err := etcd.Get(t.Context(), certKey)
			require.NoError(t, err)
			assert.Equal(t, tt.etcd, kv != nil, "published to etcd")
			if kv != nil {
				assert.Equal(t, certPEM, kv.Value)
			}
		})
	}
}

func TestNewOutputWithoutOutputs(t *testing.T) {
	t.Parallel()
	_, err := OpenOutput(config.Output{}, nil)
	require.EqualError(t, err, "output: none configured (set output.file, output.redis or output.etcd)")
}

// selfSigned returns a self-signed ECDSA P-256 certificate for cn and its
// key, PEM-encoded.
func selfSigned(t *testing.T, cn string) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn}, DNSNames: []string{cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	require.NoError(t, err)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
}
