package config_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/certfetch/certfetch/fetcher/config"
)

// resolverOnly is a valid resolvers section for cases that write their own
// output section (lines 1 and following) before it.
const resolverOnly = "resolvers:\n  ca:\n    caServer: https://ca.example/dir\n    httpChallenge: {stateless: true}\n"

func TestParseKVOutputDefaults(t *testing.T) {
	t.Parallel()
	tests := []struct {
		desc      string
		output    string
		wantFile  bool
		wantRedis *config.RedisConnection
		wantEtcd  *config.EtcdConnection
	}{
		{
			desc:      "redis alone",
			output:    "output:\n  redis:\n    address: 127.0.0.1:6379\n",
			wantRedis: &config.RedisConnection{Address: "127.0.0.1:6379", RootKey: "traefik", Timeout: 5 * time.Second},
		},
		{
			desc:     "etcd alone, host:port and URL endpoints",
			output:   "output:\n  etcd:\n    endpoints: [10.0.0.1:2379, \"https://etcd.example:2379\"]\n",
			wantEtcd: &config.EtcdConnection{Endpoints: []string{"10.0.0.1:2379", "https://etcd.example:2379"}, RootKey: "traefik", Timeout: 5 * time.Second},
		},
		{
			desc:      "all three",
			output:    "output:\n  file:\n    directory: /srv/traefik\n  redis:\n    address: redis.example:6380\n    db: 3\n    rootKey: edge/traefik\n    timeout: 2s\n  etcd:\n    endpoints: [\"http://127.0.0.1:2379\"]\n    rootKey: traefik-edge\n    timeout: 10s\n",
			wantFile:  true,
			wantRedis: &config.RedisConnection{Address: "redis.example:6380", DB: 3, RootKey: "edge/traefik", Timeout: 2 * time.Second},
			wantEtcd:  &config.EtcdConnection{Endpoints: []string{"http://127.0.0.1:2379"}, RootKey: "traefik-edge", Timeout: 10 * time.Second},
		},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			t.Parallel()
			cfg, err := config.Parse("certfetch.yml", []byte(tt.output+resolverOnly))
			require.NoError(t, err)
			assert.Equal(t, tt.wantFile, cfg.Output.HasFile())
			assert.Equal(t, tt.wantRedis, cfg.Output.Redis)
			assert.Equal(t, tt.wantEtcd, cfg.Output.Etcd)
		})
	}
}

// writeClientPair writes a self-signed client certificate and its key.
func writeClientPair(t *testing.T, dir string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "certfetch"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "client.crt"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "client.key"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600))
}

// TestParseKVOutputCredentials: passwords come from files (relative to the
// configuration file, line ending trimmed, inner spaces kept), TLS files
// are resolved and checked, and no rendering of the configuration shows a
// password.
func TestParseKVOutputCredentials(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	const redisPW, etcdPW = "redis pass phrase", "etcd-s3cret"
	require.NoError(t, os.WriteFile(filepath.Join(dir, "redis.pw"), []byte(redisPW+"\r\n"), 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "etcd.pw"), []byte(etcdPW), 0o600))
	writeClientPair(t, dir)
	root, err := filepath.Abs("../../testdata/certfetch/internal-root.pem")
	require.NoError(t, err)
	data := "output:\n" +
		"  redis:\n    address: 127.0.0.1:6379\n    username: certfetch\n    passwordFile: redis.pw\n" +
		"    tls:\n      caFile: " + root + "\n      certFile: client.crt\n      keyFile: client.key\n" +
		"  etcd:\n    endpoints: [\"https://127.0.0.1:2379\"]\n    username: certfetch\n    passwordFile: etcd.pw\n" +
		"    tls:\n      caFile: " + root + "\n" + resolverOnly
	cfg, err := config.Parse(filepath.Join(dir, "certfetch.yml"), []byte(data))
	require.NoError(t, err)

	r, e := cfg.Output.Redis, cfg.Output.Etcd
	require.NotNil(t, r)
	require.NotNil(t, e)
	assert.Equal(t, redisPW, r.Password.Reveal())
	assert.Equal(t, "certfetch", r.Username)
	assert.Equal(t, &config.ClientTLS{CAFile: root, CertFile: filepath.Join(dir, "client.crt"), KeyFile: filepath.Join(dir, "client.key")}, r.TLS)
	assert.Equal(t, etcdPW, e.Password.Reveal())
	assert.Equal(t, &config.ClientTLS{CAFile: root}, e.TLS)

	var logs bytes.Buffer
	slog.New(slog.NewTextHandler(&logs, nil)).Info("output", "redis", r, "etcd", e)
	for how, s := range map[string]string{
		"%+v":  fmt.Sprintf("%+v %+v", *r, *e),
		"%#v":  fmt.Sprintf("%#v %#v", *r, *e),
		"slog": logs.String(),
	} {
		assert.NotContains(t, s, redisPW, how)
		assert.NotContains(t, s, etcdPW, how)
	}
}
