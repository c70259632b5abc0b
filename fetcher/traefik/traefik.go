// Package traefik reads Traefik's routers from its API and derives the certificates
// Traefik's own ACME provider (a `certificatesResolvers` entry) would request for them, so
// that certfetch can take over from such a resolver without the user restating a domain.
//
// It has two jobs and no state: Client.Routers reads a complete Snapshot (or fails as a
// whole), and Certificates turns a Snapshot into the certificates each certfetch resolver
// serves. What to do with them (order, withdraw after a grace period, report) is the
// caller's. The rules of derivation follow Traefik v3.6.12's pkg/provider/acme/provider.go
// (watchNewDomains, deleteUnnecessaryDomains, sanitizeDomains), pkg/muxer/http ParseDomains
// and pkg/muxer/tcp ParseHostSNI; certificates.go says where certfetch differs and why.
package traefik

import "fmt"

// Router is one HTTP or TCP router as Traefik's API reports it (GET /api/http/routers,
// /api/tcp/routers): the fields that decide its certificate, and those status shows.
type Router struct {
	// Name is the qualified name, "app@file", "web-app@docker".
	Name string `json:"name"`
	// Provider is the provider that defined the router ("file", "docker", "redis").
	Provider string `json:"provider"`
	// Rule is the router's rule, Host(`example.com`) && PathPrefix(`/api`).
	Rule string `json:"rule"`
	// RuleSyntax is "v2" or "v3" when the router (or its entry point's default) sets it.
	// It does not change the domains: Traefik's ACME provider parses every rule with the
	// matchers of both syntaxes.
	RuleSyntax string `json:"ruleSyntax"`
	// Status is Traefik's runtime status: "enabled", "warning" or "disabled".
	Status string `json:"status"`
	// TCP is true for a router from /api/tcp/routers.
	TCP bool `json:"-"`
	// EntryPoints are the entry points the router is attached to.
	EntryPoints []string `json:"entryPoints"`
	// TLS is the router's TLS section; nil when the router does not terminate TLS.
	TLS *RouterTLS `json:"tls"`
}

// Ref names the router for humans and for Wanted.Routers: the qualified name, with
// " (TCP)" after a TCP router's, since an HTTP and a TCP router may share a name.
func (r Router) Ref() string {
	if r.TCP {
		return r.Name + " (TCP)"
	}
	return r.Name
}

// RouterTLS is a router's tls section.
type RouterTLS struct {
	// CertResolver names the certificates resolver that provides the router's certificate.
	CertResolver string `json:"certResolver"`
	// Domains, when set, replace the rule's host names, one certificate per entry.
	Domains []Domain `json:"domains"`
	// Options names the TLS options ("default@internal" when unset).
	Options string `json:"options"`
	// Passthrough (TCP only) hands the TLS connection to the service unterminated.
	Passthrough bool `json:"passthrough"`
}

// Domain is one tls.domains entry: a certificate's main name and its other names.
type Domain struct {
	Main string   `json:"main"`
	SANs []string `json:"sans"`
}

// names is the entry as a list, main first; an empty main is left out, as Traefik's
// types.Domain.ToStrArray does.
func (d Domain) names() []string {
	var out []string
	if d.Main != "" {
		out = []string{d.Main}
	}
	return append(out, d.SANs...)
}

// Snapshot is one complete read of Traefik's routers.
type Snapshot struct {
	// Routers are the HTTP routers in Traefik's order (by name), then the TCP routers.
	Routers []Router
	// Requests is how many HTTP requests the read took.
	Requests int
	// Bytes is how many response body bytes the read took.
	Bytes int64
}

// Problem is a router certfetch cannot provide a certificate for as its configuration
// asks, or a conflict between routers; Message says why, in words for `status`.
type Problem struct {
	// Router is the router's Ref.
	Router string
	// Resolver is the certfetch resolver whose selector matched the router; empty when
	// the problem is that several did.
	Resolver string
	// Message is human readable.
	Message string
}

func (p Problem) String() string {
	if p.Resolver == "" {
		return fmt.Sprintf("router %s: %s", p.Router, p.Message)
	}
	return fmt.Sprintf("router %s (resolver %s): %s", p.Router, p.Resolver, p.Message)
}
