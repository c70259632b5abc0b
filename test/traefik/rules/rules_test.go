// Package rules holds certfetch's rule parser (fetcher/traefik.RuleDomains) to Traefik
// v3.6.12's own: httpmuxer.ParseDomains and tcpmuxer.ParseHostSNI, the functions its ACME
// provider derives certificates with. Every rule of the corpus, and every rule the fuzz
// target makes, must give both the same names, or fail in both.
package rules

import (
	"testing"

	"github.com/stretchr/testify/assert"
	httpmuxer "github.com/traefik/traefik/v3/pkg/muxer/http"
	tcpmuxer "github.com/traefik/traefik/v3/pkg/muxer/tcp"

	"github.com/certfetch/certfetch/fetcher/traefik"
)

// corpus mixes rules from Traefik's documentation and tests (both syntaxes) with the
// corners of predicate's grammar: spellings, quoting, escapes, comments, negation,
// operators it refuses, arguments that are not strings.
var corpus = []string{
	"Host(`example.com`)",
	"Host(`example.com`) && PathPrefix(`/api`)",
	"Host(`a.example.com`) || Host(`b.example.com`)",
	"(Host(`a.example.com`) || Host(`b.example.com`)) && Method(`GET`)",
	"Host(`a.example.com`, `b.example.com`)",
	"Host(`a.example.com`,`B.EXAMPLE.COM`) && Path(`/a`, `/b`)",
	"HostHeader(`example.com`)",
	"HostRegexp(`^.+\\.example\\.com$`)",
	"HostRegexp(`{subdomain:[a-z]+}.example.com`)",
	"Host(`a.example.com`) || HostRegexp(`^b.+$`)",
	"!Host(`a.example.com`)",
	"Host(`a.example.com`) && !Host(`b.example.com`)",
	"!(Host(`a`) || !Host(`b`)) && Host(`c`)",
	"host(`a`)", "HOST(`a`)", "Host(`a`)", "hOst(`a`)", "hostregexp(`a`)", "Hostregexp(`a`)",
	"HostSNI(`a`)", "hostsni(`a`)",
	`Host("example.com")`,
	`Host("a\x2eexample.com")`,
	`Host("a\qexample.com")`,
	"Host(`a`)\n|| Host(`b`)\n",
	"Host(`a`) /* comment */ && Host(`b`) // end",
	"Host(`a`...)",
	"Host()",
	"Host(``)",
	"Host(` A.example.com `)",
	"Host(`example.com.`)",
	"Host(`*.example.com`)",
	"Host(`ünïcode.example`)",
	"Host(`a`) & Host(`b`)",
	"Host(`a`) == Host(`b`)",
	"-Host(`a`)",
	"Host(1)", "Host(1.5)", "Host('a')", "Host(a)", "Host(Host(`a`))", "Host((`a`))",
	"x.Host(`a`)", "Host(`a`)(`b`)", "`a`", "Host(`a`) && `b`", "Host", "",
	"Host(`a`) Host(`b`)", "Host(`a`);", "Host(`a`", "Host(`a)",
	"Header(`X-Forwarded-Proto`, `https`) && Host(`h`)",
	"Headers(`X`, `y`) && Query(`a=b`) && HeadersRegexp(`X`, `.*`) && Host(`h`)",
	"ClientIP(`10.0.0.0/8`) && PathRegexp(`^/x`) && QueryRegexp(`a`, `b`) && Host(`h`)",
	"Unknown(`a`) || Host(`h`)",
	"HostSNI(`*`)",
	"HostSNI(`a.example.com`) && ALPN(`h2`)",
	"HostSNI(`a`, `b`)",
	"HostSNIRegexp(`^.+$`)",
	"HostSNI(`a`) || ClientIP(`192.168.0.1`)",
}

func TestRuleDomainsMatchTraefik(t *testing.T) {
	t.Parallel()
	for _, rule := range corpus {
		t.Run(rule, func(t *testing.T) {
			t.Parallel()
			compare(t, rule)
		})
	}
}

// FuzzRuleDomains runs go test -fuzz FuzzRuleDomains; the corpus is its seed.
func FuzzRuleDomains(f *testing.F) {
	for _, rule := range corpus {
		f.Add(rule)
	}
	f.Fuzz(compare)
}

// compare checks one rule as an HTTP and as a TCP rule.
func compare(t *testing.T, rule string) {
	for _, tc := range []struct {
		tcp     bool
		traefik func(string) ([]string, error)
	}{
		{tcp: false, traefik: httpmuxer.ParseDomains},
		{tcp: true, traefik: tcpmuxer.ParseHostSNI},
	} {
		want, wantErr := tc.traefik(rule)
		got, err := traefik.RuleDomains(rule, tc.tcp)
		if !assert.Equal(t, wantErr == nil, err == nil, "tcp %v: %q: Traefik's error %v, certfetch's %v", tc.tcp, rule, wantErr, err) {
			continue
		}
		if len(want) == 0 && len(got) == 0 {
			continue
		}
		assert.Equal(t, want, got, "tcp %v: %q", tc.tcp, rule)
	}
}
