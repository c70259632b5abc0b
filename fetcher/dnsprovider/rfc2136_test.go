//go:build certfetch_dns_rfc2136

package dnsprovider_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/certfetch/certfetch/fetcher/dnsprovider"
)

// TestRFC2136Build: a build with the certfetch_dns_rfc2136 tag carries lego's rfc2136
// provider under both its names, constructs it, and says what it lacks for any other.
func TestRFC2136Build(t *testing.T) {
	t.Setenv("RFC2136_NAMESERVER", "127.0.0.1:53")
	assert.Equal(t, []string{"dnsupdate", "rfc2136"}, dnsprovider.Names())
	for _, name := range dnsprovider.Names() {
		p, err := dnsprovider.New(name, nil)
		require.NoError(t, err, name)
		assert.NotNil(t, p)
	}
	_, err := dnsprovider.New("cloudflare", nil)
	require.EqualError(t, err, "dns-01 provider cloudflare: this build carries only dnsupdate, rfc2136 (built with the certfetch_dns_rfc2136 tag); the default build carries every lego provider")
}
