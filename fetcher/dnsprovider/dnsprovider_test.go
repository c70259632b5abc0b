//go:build !certfetch_dns_rfc2136

package dnsprovider_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/go-acme/lego/v4/providers/dns/rfc2136"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/certfetch/certfetch/fetcher/dnsprovider"
	"github.com/certfetch/certfetch/internal/secret"
)

// credential stands for a secret value; no error may contain it.
const credential = "c3VwZXJzZWNyZXQtdHNpZw"

func secrets(vars map[string]string) map[string]secret.Secret {
	out := map[string]secret.Secret{}
	for k, v := range vars {
		out[k] = secret.New(v)
	}
	return out
}

// TestNew constructs providers from configured variables; the process environment
// (t.Setenv, so not parallel) holds what systemd or a shell would have set.
func TestNew(t *testing.T) {
	secretFile := filepath.Join(t.TempDir(), "tsig")
	require.NoError(t, os.WriteFile(secretFile, []byte(credential+"\n"), 0o600))
	tests := []struct {
		desc    string
		process map[string]string
		vars    map[string]string
		name    string
		wantErr string
	}{
		{desc: "from the configuration", name: "rfc2136", vars: map[string]string{"RFC2136_NAMESERVER": "127.0.0.1:53", "RFC2136_TSIG_KEY": "certfetch.", "RFC2136_TSIG_SECRET": credential}},
		{desc: "from the process environment", name: "rfc2136", process: map[string]string{"RFC2136_NAMESERVER": "127.0.0.1:53"}},
		{desc: "lego's alias", name: "dnsupdate", vars: map[string]string{"DNSUPDATE_NAMESERVER": "127.0.0.1:53"}},
		{desc: "a _FILE variant in the configuration", name: "rfc2136", vars: map[string]string{"RFC2136_NAMESERVER": "127.0.0.1:53", "RFC2136_TSIG_KEY": "certfetch.", "RFC2136_TSIG_SECRET_FILE": secretFile}},
		{
			desc: "the configuration's _FILE hides the process's plain variable", name: "rfc2136",
			process: map[string]string{"RFC2136_TSIG_SECRET": "not base64 !"},
			vars:    map[string]string{"RFC2136_NAMESERVER": "127.0.0.1:53", "RFC2136_TSIG_KEY": "certfetch.", "RFC2136_TSIG_SECRET_FILE": secretFile},
		},
		{desc: "required variable missing", name: "rfc2136", wantErr: "dns-01 provider rfc2136: dnsupdate: some credentials information are missing: DNSUPDATE_NAMESERVER"},
		{
			desc: "a value quoted back by the provider is redacted", name: "httpreq",
			vars:    map[string]string{"HTTPREQ_ENDPOINT": "https://certfetch:" + credential + "@dns api.corp.example/"},
			wantErr: `dns-01 provider httpreq: httpreq: parse "[redacted]": invalid character " " in host name`,
		},
		{
			desc: "a process credential quoted back is redacted", name: "httpreq",
			process: map[string]string{"HTTPREQ_ENDPOINT": "https://dns api.corp.example/", "HTTPREQ_PASSWORD": "dns api"},
			wantErr: `dns-01 provider httpreq: httpreq: parse "https://[redacted].corp.example/": invalid character " " in host name`,
		},
		{desc: "unknown provider", name: "cloudfare", wantErr: "dns-01 provider cloudfare: unknown; lego v4 names its providers as in https://go-acme.github.io/lego/dns/ (rfc2136, cloudflare, route53, ...)"},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			for _, k := range []string{"RFC2136_NAMESERVER", "DNSUPDATE_NAMESERVER", "RFC2136_TSIG_KEY", "RFC2136_TSIG_SECRET", "RFC2136_TSIG_SECRET_FILE", "HTTPREQ_ENDPOINT", "HTTPREQ_PASSWORD"} {
				t.Setenv(k, tt.process[k])
				if _, set := tt.process[k]; !set {
					require.NoError(t, os.Unsetenv(k))
				}
			}
			before := os.Environ()
			p, err := dnsprovider.New(tt.name, secrets(tt.vars))
			assert.ElementsMatch(t, before, os.Environ(), "the environment is restored")
			if tt.wantErr != "" {
				require.EqualError(t, err, tt.wantErr)
				assert.NotContains(t, err.Error(), credential)
				return
			}
			require.NoError(t, err)
			assert.NotNil(t, p)
		})
	}
}

// TestNewTypes: the provider is lego's own, and an unknown name is an *UnknownError.
func TestNewTypes(t *testing.T) {
	t.Setenv("RFC2136_NAMESERVER", "127.0.0.1:53")
	p, err := dnsprovider.New("rfc2136", nil)
	require.NoError(t, err)
	assert.IsType(t, &rfc2136.DNSProvider{}, p)

	_, err = dnsprovider.New("nope", nil)
	var unknown *dnsprovider.UnknownError
	require.True(t, errors.As(err, &unknown))
	assert.Equal(t, "nope", unknown.Name)
	assert.False(t, dnsprovider.Known("nope"))
	assert.True(t, dnsprovider.Known("rfc2136"))
}
