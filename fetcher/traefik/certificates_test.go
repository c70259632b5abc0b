package traefik_test

import (
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/certfetch/certfetch/fetcher/traefik"
)

// resolverSel is the selector most cases use: certfetch resolver "le" takes over
// Traefik's certificatesResolvers.le.
var resolverSel = []traefik.Selector{{Resolver: "le", CertResolver: "le"}}

func httpRouter(name, rule string, tls *traefik.RouterTLS) traefik.Router {
	return traefik.Router{Name: name, Provider: "file", Rule: rule, Status: "enabled", TLS: tls}
}

func tcpRouter(name, rule string, tls *traefik.RouterTLS) traefik.Router {
	r := httpRouter(name, rule, tls)
	r.TCP = true
	return r
}

func le() *traefik.RouterTLS { return &traefik.RouterTLS{CertResolver: "le"} }

func withDomains(domains ...traefik.Domain) *traefik.RouterTLS {
	return &traefik.RouterTLS{CertResolver: "le", Domains: domains}
}

func wanted(routers []string, domains ...string) traefik.Wanted {
	return traefik.Wanted{Domains: domains, Resolver: "le", Routers: routers}
}

func TestCertificates(t *testing.T) {
	t.Parallel()
	tests := []struct {
		desc     string
		routers  []traefik.Router
		sel      []traefik.Selector
		want     []traefik.Wanted
		problems []traefik.Problem
	}{
		{
			desc:    "v3 rule: every Host, in the rule's order, lower-cased",
			routers: []traefik.Router{httpRouter("app@file", "Host(`B.example.com`) || (Host(`a.example.com`) && PathPrefix(`/x`))", le())},
			want:    []traefik.Wanted{wanted([]string{"app@file"}, "b.example.com", "a.example.com")},
		},
		{
			desc: "v2 rule: several arguments per Host; the syntax field does not matter",
			routers: []traefik.Router{func() traefik.Router {
				r := httpRouter("app@docker", "Host(`a.example.com`, `b.example.com`) && Path(`/`, `/x`)", le())
				r.RuleSyntax = "v2"
				return r
			}()},
			want: []traefik.Wanted{wanted([]string{"app@docker"}, "a.example.com", "b.example.com")},
		},
		{
			desc:    "v3 router with a v2-style rule: disabled by Traefik, still certified as its ACME provider does",
			routers: []traefik.Router{{Name: "old@file", Rule: "Host(`a.example.com`,`b.example.com`)", RuleSyntax: "v3", Status: "disabled", TLS: le()}},
			want:    []traefik.Wanted{wanted([]string{"old@file"}, "a.example.com", "b.example.com")},
		},
		{
			desc:    "matcher spellings: lower, upper and title case; double-quoted strings with escapes",
			routers: []traefik.Router{httpRouter("app@file", "host(\"a.example.com\") || HOST(`b.example.com`) || Host(\"c\\x2eexample.com\")", le())},
			want:    []traefik.Wanted{wanted([]string{"app@file"}, "a.example.com", "b.example.com", "c.example.com")},
		},
		{
			desc:    "negated Host still names its host, as in Traefik",
			routers: []traefik.Router{httpRouter("app@file", "Host(`a.example.com`) && !Host(`b.example.com`)", le())},
			want:    []traefik.Wanted{wanted([]string{"app@file"}, "a.example.com", "b.example.com")},
		},
		{
			desc:    "repeated host, trailing dot, spaces: one name each",
			routers: []traefik.Router{httpRouter("app@file", "Host(`a.example.com.`) || Host(` A.example.com`) || Host(`b.example.com`)", le())},
			want:    []traefik.Wanted{wanted([]string{"app@file"}, "a.example.com", "b.example.com")},
		},
		{
			desc:    "tls.domains replace the rule: one certificate per entry",
			routers: []traefik.Router{httpRouter("app@file", "Host(`ignored.example.com`)", withDomains(traefik.Domain{Main: "a.example.com", SANs: []string{"www.a.example.com"}}, traefik.Domain{Main: "b.example.com"}))},
			want: []traefik.Wanted{
				wanted([]string{"app@file"}, "a.example.com", "www.a.example.com"),
				wanted([]string{"app@file"}, "b.example.com"),
			},
		},
		{
			desc: "tls.domains: a repeated entry once; names covered by an earlier entry or a wildcard main dropped",
			routers: []traefik.Router{httpRouter("app@file", "", withDomains(
				traefik.Domain{Main: "*.example.com"},
				traefik.Domain{Main: "a.example.com", SANs: []string{"b.example.org"}},
				traefik.Domain{Main: "*.example.com"},
			))},
			want: []traefik.Wanted{
				{Domains: []string{"*.example.com"}, Resolver: "le", Routers: []string{"app@file"}, Wildcard: true},
				wanted([]string{"app@file"}, "b.example.org"),
			},
		},
		{
			desc:    "wildcard from tls.domains: flagged for the caller",
			routers: []traefik.Router{httpRouter("app@file", "HostRegexp(`.+`)", withDomains(traefik.Domain{Main: "example.com", SANs: []string{"*.example.com"}}))},
			want:    []traefik.Wanted{{Domains: []string{"example.com", "*.example.com"}, Resolver: "le", Routers: []string{"app@file"}, Wildcard: true}},
		},
		{
			desc: "tls.domains: a bad entry is reported, the others still certified; an empty entry beside others dropped as Traefik drops it",
			routers: []traefik.Router{
				httpRouter("a@file", "", withDomains(traefik.Domain{SANs: []string{"B.example.com."}}, traefik.Domain{Main: "*.*.example.org"}, traefik.Domain{})),
				httpRouter("b@file", "", withDomains(traefik.Domain{})),
			},
			want: []traefik.Wanted{wanted([]string{"a@file"}, "b.example.com")},
			problems: []traefik.Problem{
				{Router: "a@file", Resolver: "le", Message: "*.*.example.org: ACME does not allow a '*.*' wildcard"},
				{Router: "b@file", Resolver: "le", Message: "a tls.domains entry names nothing"},
			},
		},
		{
			desc:     "*.* refused as Traefik refuses it",
			routers:  []traefik.Router{httpRouter("app@file", "", withDomains(traefik.Domain{Main: "*.*.example.com"}))},
			problems: []traefik.Problem{{Router: "app@file", Resolver: "le", Message: "*.*.example.com: ACME does not allow a '*.*' wildcard"}},
		},
		{
			desc:     "HostRegexp only: reported, nothing wanted",
			routers:  []traefik.Router{httpRouter("app@file", "HostRegexp(`^.+\\.example\\.com$`)", le())},
			problems: []traefik.Problem{{Router: "app@file", Resolver: "le", Message: "the rule names hosts only with HostRegexp, which Traefik's ACME provider ignores: set tls.domains"}},
		},
		{
			desc:    "HostRegexp beside Host: the Host certified, the regexp reported",
			routers: []traefik.Router{httpRouter("app@file", "Host(`a.example.com`) || HostRegexp(`^b.+$`)", le())},
			want:    []traefik.Wanted{wanted([]string{"app@file"}, "a.example.com")},
			problems: []traefik.Problem{{Router: "app@file", Resolver: "le",
				Message: "HostRegexp(^b.+$) is ignored, as Traefik's ACME provider ignores it: the hosts it matches get no certificate; set tls.domains"}},
		},
		{
			desc:     "no host at all",
			routers:  []traefik.Router{httpRouter("app@file", "PathPrefix(`/`)", le())},
			problems: []traefik.Problem{{Router: "app@file", Resolver: "le", Message: "the rule has no Host() and tls.domains is not set: no name to certify"}},
		},
		{
			desc:     "malformed rule",
			routers:  []traefik.Router{httpRouter("app@file", "Host(`a.example.com`) &&", le())},
			problems: []traefik.Problem{{Router: "app@file", Resolver: "le", Message: "parse rule \"Host(`a.example.com`) &&\": 1:25: expected operand, found 'EOF'"}},
		},
		{
			desc:     "HostSNI is not an HTTP matcher",
			routers:  []traefik.Router{httpRouter("app@file", "HostSNI(`a.example.com`)", le())},
			problems: []traefik.Problem{{Router: "app@file", Resolver: "le", Message: "parse rule \"HostSNI(`a.example.com`)\": unknown matcher HostSNI"}},
		},
		{
			desc: "TCP: HostSNI names the certificate, Host is no TCP matcher",
			routers: []traefik.Router{
				tcpRouter("db@file", "HostSNI(`DB.example.com`) && ALPN(`h2`)", le()),
				tcpRouter("bad@file", "Host(`x.example.com`)", le()),
			},
			want:     []traefik.Wanted{wanted([]string{"db@file (TCP)"}, "db.example.com")},
			problems: []traefik.Problem{{Router: "bad@file (TCP)", Resolver: "le", Message: "parse rule \"Host(`x.example.com`)\": unknown matcher Host"}},
		},
		{
			desc:     "HostSNI(`*`) cannot be certified",
			routers:  []traefik.Router{tcpRouter("any@file", "HostSNI(`*`)", le())},
			problems: []traefik.Problem{{Router: "any@file (TCP)", Resolver: "le", Message: "HostSNI(`*`) matches every name: no certificate can be ordered for it; set tls.domains"}},
		},
		{
			desc: "same names in another order: one certificate, both routers, the first router's main",
			routers: []traefik.Router{
				httpRouter("b@file", "Host(`b.example.com`) || Host(`a.example.com`)", le()),
				httpRouter("a@file", "Host(`a.example.com`) || Host(`b.example.com`)", le()),
				tcpRouter("a@file", "HostSNI(`b.example.com`) || HostSNI(`a.example.com`)", le()),
			},
			want: []traefik.Wanted{wanted([]string{"a@file", "a@file (TCP)", "b@file"}, "a.example.com", "b.example.com")},
		},
		{
			desc: "a subset of another router's names: its own certificate",
			routers: []traefik.Router{
				httpRouter("a@file", "Host(`a.example.com`) || Host(`b.example.com`)", le()),
				httpRouter("b@file", "Host(`a.example.com`)", le()),
			},
			want: []traefik.Wanted{
				wanted([]string{"b@file"}, "a.example.com"),
				wanted([]string{"a@file"}, "a.example.com", "b.example.com"),
			},
		},
		{
			desc: "routers without TLS or of another resolver are not ours",
			routers: []traefik.Router{
				httpRouter("plain@file", "Host(`a.example.com`)", nil),
				httpRouter("other@file", "Host(`b.example.com`)", &traefik.RouterTLS{CertResolver: "other"}),
				httpRouter("bare@file", "Host(`c.example.com`)", &traefik.RouterTLS{}),
			},
		},
		{
			desc: "same names for two resolvers: a conflict, reported for each router, nothing wanted",
			routers: []traefik.Router{
				httpRouter("a@file", "Host(`a.example.com`)", le()),
				httpRouter("b@file", "Host(`a.example.com`)", &traefik.RouterTLS{CertResolver: "internal"}),
			},
			sel: []traefik.Selector{{Resolver: "le", CertResolver: "le"}, {Resolver: "corp", CertResolver: "internal"}},
			problems: []traefik.Problem{
				{Router: "a@file", Resolver: "le", Message: "a.example.com is also wanted by b@file (resolver corp): no certificate until one resolver serves them all"},
				{Router: "b@file", Resolver: "corp", Message: "a.example.com is also wanted by a@file (resolver le): no certificate until one resolver serves them all"},
			},
		},
		{
			desc:     "one certResolver claimed by two certfetch resolvers",
			routers:  []traefik.Router{httpRouter("a@file", "Host(`a.example.com`)", le())},
			sel:      []traefik.Selector{{Resolver: "x", CertResolver: "le"}, {Resolver: "y", CertResolver: "le"}},
			problems: []traefik.Problem{{Router: "a@file", Message: "certResolver le is served by the certfetch resolvers x and y: name one"}},
		},
		{
			desc: "domain filter selects tls: {} routers whose names all match; not passthrough, not partial",
			routers: []traefik.Router{
				httpRouter("in@file", "Host(`a.example.com`) || Host(`example.com`)", &traefik.RouterTLS{}),
				httpRouter("deep@file", "Host(`a.b.example.com`)", &traefik.RouterTLS{}),
				httpRouter("part@file", "Host(`a.example.com`) || Host(`a.example.org`)", &traefik.RouterTLS{}),
				httpRouter("out@file", "Host(`example.org`)", &traefik.RouterTLS{}),
				httpRouter("regexp@file", "HostRegexp(`.+`)", &traefik.RouterTLS{}),
				tcpRouter("pass@file", "HostSNI(`p.example.com`)", &traefik.RouterTLS{Passthrough: true}),
				httpRouter("resolved@file", "Host(`r.example.com`)", &traefik.RouterTLS{CertResolver: "other"}),
			},
			sel: []traefik.Selector{{Resolver: "le", Domains: []string{"example.com", "*.example.com"}}},
			want: []traefik.Wanted{
				wanted([]string{"deep@file"}, "a.b.example.com"),
				wanted([]string{"in@file"}, "a.example.com", "example.com"),
			},
			problems: []traefik.Problem{{Router: "part@file", Resolver: "le", Message: "a.example.org outside the resolver's domains: the router is not selected"}},
		},
		{
			desc: "domain filters of two resolvers both match: reported, nothing wanted",
			routers: []traefik.Router{
				httpRouter("a@file", "Host(`a.example.com`)", &traefik.RouterTLS{}),
			},
			sel:      []traefik.Selector{{Resolver: "le", Domains: []string{"*.example.com"}}, {Resolver: "corp", Domains: []string{"a.example.com"}}},
			problems: []traefik.Problem{{Router: "a@file", Message: "its names match the domains of the certfetch resolvers le and corp: narrow them"}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			sel := tc.sel
			if sel == nil {
				sel = resolverSel
			}
			got, problems := traefik.Certificates(traefik.Snapshot{Routers: tc.routers}, sel)
			assert.Equal(t, tc.want, got)
			assert.Equal(t, tc.problems, problems)
		})
	}
}
