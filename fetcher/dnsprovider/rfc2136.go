//go:build certfetch_dns_rfc2136

package dnsprovider

import (
	"github.com/go-acme/lego/v4/challenge"
	"github.com/go-acme/lego/v4/providers/dns/rfc2136"
)

// construct builds the one provider of a build with the certfetch_dns_rfc2136 tag: RFC
// 2136 dynamic updates, which BIND, Knot, PowerDNS and Windows DNS accept. Such a build
// leaves out the SDKs of the cloud providers (see README.md for what that saves).
func construct(name string) (challenge.Provider, error) { return rfc2136.NewDNSProvider() }

// names are lego's two spellings of the provider.
var names = []string{"rfc2136", "dnsupdate"}
