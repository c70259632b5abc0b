package config_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/certfetch/certfetch/fetcher/config"
	"github.com/certfetch/certfetch/internal/kvclient"
)

func TestParseAppliesDefaults(t *testing.T) {
	t.Parallel()
	cfg, err := config.Parse("certfetch.yml", []byte(minimal+"certificates:\n  - domains: [WWW.Example.COM, example.com]\n"))
	require.NoError(t, err)

	assert.Equal(t, &config.Config{
		Timeout: 30 * time.Second,
		Storage: config.Storage{Directory: "/var/lib/certfetch", LockTTL: 30 * time.Second},
		Resolvers: map[string]*config.Resolver{"ca": {
			Name:                "ca",
			CAServer:            "https://ca.example/dir",
			KeyType:             config.EC256,
			CASystemCertPool:    true,
			MaxConcurrentOrders: 4,
			RequestsPerSecond:   20,
			HTTP: config.HTTPTimeouts{
				DialTimeout:           10 * time.Second,
				TLSHandshakeTimeout:   10 * time.Second,
				ResponseHeaderTimeout: 30 * time.Second,
				RequestTimeout:        time.Minute,
			},
			HTTPChallenge: config.HTTPChallenge{Stateless: true},
			Routers:       config.Routers{CertResolver: "ca"},
		}},
		Certificates: []*config.Certificate{{
			Name:     "www.example.com",
			Domains:  []string{"www.example.com", "example.com"},
			Resolver: "ca",
			KeyType:  config.EC256,
		}},
		Output:  config.Output{File: config.FileOutput{Directory: "/srv/traefik", GracePeriod: 10 * time.Minute}},
		Renewal: config.Renewal{ARI: true, RemainingFraction: 1.0 / 3.0},
		Log:     config.Log{Level: slog.LevelInfo, Format: "text"},
	}, cfg)
}

func TestTraefikSectionDefaults(t *testing.T) {
	t.Parallel()
	cfg, err := config.Parse("certfetch.yml", []byte(minimal+"    routers:\n      domains: [\"*.example.com\"]\ntraefik:\n  api:\n    url: http://127.0.0.1:8080\n"))
	require.NoError(t, err)
	assert.Equal(t, &config.Traefik{
		API:           config.TraefikAPI{URL: "http://127.0.0.1:8080", Timeout: config.DefaultAPITimeout},
		PollInterval:  config.DefaultPollInterval,
		WithdrawAfter: config.DefaultWithdrawAfter,
	}, cfg.Traefik)
	assert.Equal(t, config.Routers{CertResolver: "ca", Domains: []string{"*.example.com"}}, cfg.Resolvers["ca"].Routers,
		"a resolver serves the routers that name it, by default")
}

func TestLoadExample(t *testing.T) {
	t.Parallel()
	cfg, err := config.Load("../../testdata/certfetch.example.yml")
	require.NoError(t, err)
	testdata, err := filepath.Abs("../../testdata/certfetch")
	require.NoError(t, err)

	internal := cfg.Resolvers["internal"]
	require.NotNil(t, internal)
	require.NotNil(t, internal.EAB)
	assert.Equal(t, "certfetch-prod", internal.EAB.KID)
	assert.Equal(t, "Zm9yLWV4YW1wbGUtb25seS1ub3QtYS1yZWFsLWtleQ", internal.EAB.HMAC.Reveal())
	assert.Equal(t, config.EC384, internal.KeyType)
	assert.Equal(t, []string{filepath.Join(testdata, "internal-root.pem")}, internal.CACertificates)
	assert.False(t, internal.CASystemCertPool)
	assert.Equal(t, config.HTTPChallenge{Webroot: "/var/lib/certfetch-webroot"}, internal.HTTPChallenge)
	assert.Equal(t, time.Minute, internal.HTTP.ResponseHeaderTimeout)
	assert.Equal(t, 5.0, internal.RequestsPerSecond)

	le := cfg.Resolvers["letsencrypt"]
	require.NotNil(t, le)
	assert.True(t, le.CASystemCertPool, "no caCertificates: the system roots")
	assert.Equal(t, "classic", le.Profile)
	assert.Equal(t, "ISRG Root X1", le.PreferredChain)

	var names []string
	for _, c := range cfg.Certificates {
		names = append(names, c.Name)
	}
	assert.Equal(t, []string{"intranet.example.com", "apps.example.com", "www"}, names)
	assert.Equal(t, config.RSA2048, cfg.Certificates[1].KeyType)
	assert.Equal(t, config.FileOutput{Directory: "/etc/traefik/certfetch", GracePeriod: 10 * time.Minute, GroupReadableKeys: true}, cfg.Output.File)
	assert.Equal(t, "127.0.0.1:9402", cfg.Metrics.Listen)
	assert.Equal(t, config.Log{Level: slog.LevelInfo, Format: config.LogFormatJSON}, cfg.Log)
	assert.InDelta(t, 0.33, cfg.Renewal.RemainingFraction, 1e-9)
}

func TestSystemPoolWithCACertificates(t *testing.T) {
	t.Parallel()
	cfg, err := config.Parse("certfetch.yml", []byte(minimal+
		"    caCertificates: [../../testdata/certfetch/internal-root.pem]\n    caSystemCertPool: true\n"))
	require.NoError(t, err)
	r := cfg.Resolvers["ca"]
	assert.True(t, r.CASystemCertPool, "set explicitly, the system roots are trusted besides the files")
	assert.Len(t, r.CACertificates, 1)
}

func TestEffectiveTimeoutMostSpecificWins(t *testing.T) {
	t.Parallel()
	tests := []struct {
		desc     string
		global   string
		resolver string
		cert     string
		want     time.Duration
	}{
		{desc: "defaults", want: 30 * time.Second},
		{desc: "global", global: "timeout: 1m\n", want: time.Minute},
		{desc: "resolver over global", global: "timeout: 1m\n", resolver: "    timeout: 5m\n", want: 5 * time.Minute},
		{desc: "certificate over resolver and global", global: "timeout: 1m\n", resolver: "    timeout: 5m\n", cert: "    timeout: 90s\n", want: 90 * time.Second},
		{desc: "certificate over global", global: "timeout: 1m\n", cert: "    timeout: 10m\n", want: 10 * time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			t.Parallel()
			data := minimal + tt.resolver + tt.global + "certificates:\n  - domains: [a.example]\n" + tt.cert
			cfg, err := config.Parse("certfetch.yml", []byte(data))
			require.NoError(t, err)
			require.Len(t, cfg.Certificates, 1)
			assert.Equal(t, tt.want, cfg.EffectiveTimeout(cfg.Certificates[0]))
		})
	}
}

func TestEABKeyPaddingIsOptional(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "padded.key"), []byte("YWJjZA==\n"), 0o600))
	tests := []struct {
		desc string
		eab  string
	}{
		{desc: "inline without padding", eab: "      hmacEncoded: YWJjZA\n"},
		{desc: "inline with padding", eab: "      hmacEncoded: \"YWJjZA==\"\n"},
		{desc: "file with padding and newline", eab: "      hmacFile: padded.key\n"},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			t.Parallel()
			data := minimal + "    eab:\n      kid: k\n" + tt.eab
			cfg, err := config.Parse(filepath.Join(dir, "certfetch.yml"), []byte(data))
			require.NoError(t, err)
			assert.Equal(t, "YWJjZA", cfg.Resolvers["ca"].EAB.HMAC.Reveal())
		})
	}
}

func TestSecretNeverPrinted(t *testing.T) {
	t.Parallel()
	cfg, err := config.Parse("certfetch.yml", []byte(minimal+"    eab:\n      kid: k\n      hmacEncoded: "+hmacKey+"\n"))
	require.NoError(t, err)
	eab := cfg.Resolvers["ca"].EAB
	require.Equal(t, hmacKey, eab.HMAC.Reveal())

	var logs bytes.Buffer
	slog.New(slog.NewTextHandler(&logs, nil)).Info("eab", "eab", eab, "hmac", eab.HMAC)
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("eab", "hmac", eab.HMAC)
	encoded, err := json.Marshal(eab)
	require.NoError(t, err)

	renderings := map[string]string{
		"%v":    fmt.Sprintf("%v", eab),
		"%+v":   fmt.Sprintf("%+v", *eab),
		"%#v":   fmt.Sprintf("%#v", *eab),
		"%s":    fmt.Sprintf("%s", eab.HMAC),
		"%q":    fmt.Sprintf("%q", eab.HMAC),
		"slog":  logs.String(),
		"json":  string(encoded),
		"whole": fmt.Sprintf("%+v", cfg.Resolvers["ca"]),
	}
	for how, s := range renderings {
		assert.NotContains(t, s, hmacKey, how)
	}
	assert.Contains(t, renderings["%+v"], "[redacted]")
	assert.Contains(t, renderings["json"], `"HMAC":"[redacted]"`)
}

func TestRelativePathsFollowTheFile(t *testing.T) {
	t.Parallel()
	data := "output:\n  file:\n    directory: ../traefik\nresolvers:\n  ca:\n    caServer: https://ca.example/dir\n" +
		"    httpChallenge: {webroot: webroot}\nstorage: state\n"
	cfg, err := config.Parse("/etc/certfetch/certfetch.yml", []byte(data))
	require.NoError(t, err)
	assert.Equal(t, "/etc/certfetch/state", cfg.Storage.Directory)
	assert.Equal(t, "/etc/certfetch/webroot", cfg.Resolvers["ca"].HTTPChallenge.Webroot)
	assert.Equal(t, "/etc/traefik", cfg.Output.File.Directory)
}

func TestSharedStorage(t *testing.T) {
	t.Parallel()
	tests := []struct {
		desc string
		yaml string
		want config.Storage
	}{
		{desc: "a path is a directory", yaml: "storage: /srv/state\n", want: config.Storage{Directory: "/srv/state", LockTTL: config.DefaultLockTTL}},
		{desc: "directory mapping", yaml: "storage: {directory: /srv/state, lockTTL: 10s}\n", want: config.Storage{Directory: "/srv/state", LockTTL: 10 * time.Second}},
		{
			desc: "redis with certfetch's own key prefix",
			yaml: "storage:\n  redis: {address: 127.0.0.1:6379, db: 2}\n",
			want: config.Storage{LockTTL: config.DefaultLockTTL, Redis: &config.RedisConnection{Address: "127.0.0.1:6379", DB: 2, RootKey: "certfetch", Timeout: kvclient.DefaultTimeout}},
		},
		{
			desc: "etcd",
			yaml: "storage:\n  etcd: {endpoints: [127.0.0.1:2379], rootKey: state/certfetch}\n",
			want: config.Storage{LockTTL: config.DefaultLockTTL, Etcd: &config.EtcdConnection{Endpoints: []string{"127.0.0.1:2379"}, RootKey: "state/certfetch", Timeout: kvclient.DefaultTimeout}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			cfg, err := config.Parse("/etc/certfetch/certfetch.yml", []byte(minimal+tc.yaml))
			require.NoError(t, err)
			assert.Equal(t, tc.want, cfg.Storage)
		})
	}
}

// TestOutputThroughSymlinkIntoStorage: an output directory that is a symbolic link into
// the state directory is refused like the path itself would be.
func TestOutputThroughSymlinkIntoStorage(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	require.NoError(t, os.Mkdir(state, 0o700))
	link := filepath.Join(dir, "traefik")
	require.NoError(t, os.Symlink(filepath.Join(state, "certs"), link))
	yml := fmt.Sprintf("storage: %s\nresolvers:\n  ca:\n    caServer: https://ca.example/dir\n    httpChallenge:\n      stateless: true\noutput:\n  file:\n    directory: %s\n", state, link)
	_, err := config.Parse(filepath.Join(dir, "certfetch.yml"), []byte(yml))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "output.file.directory: must be separate from storage")
}
