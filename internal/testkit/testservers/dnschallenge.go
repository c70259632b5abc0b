package testservers

import "fmt"

// DNSChallenge is the dnsChallenge block of a certfetch resolver (indented for
// resolvers.<name>) that answers DNS-01 with lego's rfc2136 provider against b, signing
// updates with secret (base64; b.TSIGSecret, or a wrong one) and checking propagation at
// resolver (b.Addr, or a server that never has the record). The check asks resolver
// only: b announces its nameserver on port 53 while it listens on another port, so the
// authoritative check is off. The provider's timeouts are short, as loopback answers in
// microseconds: a record never seen fails after 3 s.
func (b *BIND) DNSChallenge(secret, resolver string) string {
	return fmt.Sprintf(`    dnsChallenge:
      provider: rfc2136
      resolvers: [%q]
      propagation: {disableANSChecks: true, requireAllRNS: true}
      env:
        RFC2136_NAMESERVER: %q
        RFC2136_TSIG_KEY: %q
        RFC2136_TSIG_ALGORITHM: %q
        RFC2136_TSIG_SECRET: %q
        RFC2136_DNS_TIMEOUT: 2
        RFC2136_PROPAGATION_TIMEOUT: 3
        RFC2136_POLLING_INTERVAL: 1
        RFC2136_SEQUENCE_INTERVAL: 1
`, resolver, b.Addr, b.TSIGKey, b.TSIGAlgorithm, secret)
}
