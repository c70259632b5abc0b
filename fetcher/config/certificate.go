package config

import (
	"fmt"
	"net"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Certificate is one certificate to obtain and keep renewed.
type Certificate struct {
	// Name identifies the certificate in file names, state and metrics.
	// It defaults to the first domain.
	Name string
	// Domains are lower-case DNS names; the first is the subject CN.
	Domains []string
	// Resolver names an entry of Config.Resolvers.
	Resolver string
	// KeyType is the certificate's private key type.
	KeyType KeyType
	// Timeout overrides the resolver's and the global timeout; 0 inherits.
	Timeout time.Duration
}

// DerivedName is the name of a certificate whose first domain is domain and that has no
// name of its own: the domain, with a wildcard's "*." spelled "wildcard." (a "*" is not
// safe in file names). Certificates from the file, from Traefik's routers and from an
// imported acme.json all take this name, so that the same domains meet under one name.
func DerivedName(domain string) string {
	if rest, ok := strings.CutPrefix(domain, "*."); ok {
		return "wildcard." + rest
	}
	return domain
}

// validName is a file-name-safe name: lower case so that names unique here
// stay unique on case-insensitive file systems, and no leading dot or hyphen
// so the files are neither hidden nor mistaken for options.
var validName = regexp.MustCompile(`^[a-z0-9_][a-z0-9_.-]*$`)

// name records a problem when s is not a valid certificate or resolver name.
func (d *decoder) name(n *yaml.Node, path, s string) bool {
	switch {
	case len(s) > maxNameLength:
		d.fail(n, path, "name is longer than %d characters", maxNameLength)
	case !validName.MatchString(s):
		d.fail(n, path, "name %q must use only a-z, 0-9, '.', '_' and '-', and not start with '.' or '-'", s)
	default:
		return true
	}
	return false
}

func (d *decoder) certificates(f *field, resolvers map[string]*Resolver) []*Certificate {
	items, _ := d.list(f)
	out := make([]*Certificate, 0, len(items))
	names := map[string]string{} // name -> path of the certificate that has it
	for i, n := range items {
		c := d.certificate(n, index(f.path, i), resolvers)
		if c.Name == "" {
			continue // already reported
		}
		if first, dup := names[c.Name]; dup {
			d.fail(n, index(f.path, i), "name %q is already used by %s", c.Name, first)
		}
		names[c.Name] = index(f.path, i)
		out = append(out, c)
	}
	return out
}

func (d *decoder) certificate(n *yaml.Node, path string, resolvers map[string]*Resolver) *Certificate {
	c := &Certificate{KeyType: EC256}
	m, ok := d.mapping(n, path, "domains", "resolver", "name", "keyType", "timeout")
	if !ok {
		return c
	}
	c.Resolver = d.certificateResolver(m, resolvers)
	if f := m.require(d, "domains"); f != nil {
		c.Domains = d.domains(f)
		d.wildcards(f, c.Domains, resolvers[c.Resolver])
	}
	if f := m.get("keyType"); f != nil {
		s, _ := d.oneOf(f.value, f.path, keyTypes...)
		c.KeyType = KeyType(s)
	}
	if f := m.get("timeout"); f != nil {
		c.Timeout, _ = d.duration(f.value, f.path)
	}
	if f := m.get("name"); f != nil {
		if s, ok := d.str(f.value, f.path); ok && d.name(f.value, f.path, s) {
			c.Name = s
		}
	} else if len(c.Domains) > 0 {
		if derived := DerivedName(c.Domains[0]); len(derived) > maxNameLength {
			d.fail(n, join(path, "name"), "the name derived from %s is longer than %d characters; set name", c.Domains[0], maxNameLength)
		} else {
			c.Name = derived
		}
	}
	return c
}

// wildcards reports the wildcard domains that resolver r cannot validate: RFC 8555 §8.3
// and §7.1.3, a CA validates a wildcard over DNS-01 only, so an HTTP-01 resolver's order
// would be refused. A nil r (unknown resolver, already reported) is not checked.
func (d *decoder) wildcards(f *field, domains []string, r *Resolver) {
	if r == nil || r.DNSChallenge != nil {
		return
	}
	for i, domain := range domains {
		if strings.HasPrefix(domain, "*.") {
			d.fail(f.value, index(f.path, i), "wildcard %s needs the DNS-01 challenge, but resolver %s answers HTTP-01 (give it a dnsChallenge)", domain, r.Name)
		}
	}
}

// certificateResolver returns the resolver a certificate names, or the only
// resolver when it names none.
func (d *decoder) certificateResolver(m fields, resolvers map[string]*Resolver) string {
	f := m.get("resolver")
	if f == nil {
		if len(resolvers) == 1 {
			for name := range resolvers {
				return name
			}
		}
		if len(resolvers) > 1 {
			d.fail(m.node, join(m.path, "resolver"), "required when more than one resolver is defined (%s)", resolverNames(resolvers))
		}
		return ""
	}
	s, ok := d.str(f.value, f.path)
	if !ok {
		return ""
	}
	if resolvers[s] == nil && len(resolvers) > 0 {
		d.fail(f.value, f.path, "unknown resolver %q (defined: %s)", s, resolverNames(resolvers))
	}
	return s
}

func resolverNames(resolvers map[string]*Resolver) string {
	names := make([]string, 0, len(resolvers))
	for name := range resolvers {
		names = append(names, name)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

func (d *decoder) domains(f *field) []string {
	items, ok := d.list(f)
	if ok && len(items) == 0 {
		d.fail(f.value, f.path, "must list at least one domain")
	}
	out := make([]string, 0, len(items))
	seen := map[string]int{}
	for i, n := range items {
		p := index(f.path, i)
		s, ok := d.str(n, p)
		if !ok {
			continue
		}
		domain := strings.ToLower(s)
		if problem := checkDomain(domain); problem != "" {
			d.fail(n, p, "invalid DNS name %q: %s", s, problem)
			continue
		}
		if first, dup := seen[domain]; dup {
			d.fail(n, p, "%s is already listed as %s", domain, index(f.path, first))
			continue
		}
		seen[domain] = i
		out = append(out, domain)
	}
	return out
}

// DNS limits from RFC 1035 §2.3.4 (in presentation form, without the root
// dot).
const (
	maxDomainLength = 253
	maxLabelLength  = 63
)

// checkDomain returns what is wrong with a lower-case DNS name, or "". A
// wildcard is allowed only as the whole leftmost label, as ACME requires
// (RFC 8555 §7.1.3).
func checkDomain(domain string) string {
	if net.ParseIP(domain) != nil {
		return "IP addresses are not supported"
	}
	if len(domain) > maxDomainLength {
		return fmt.Sprintf("longer than %d characters", maxDomainLength)
	}
	if strings.HasSuffix(domain, ".") {
		return "must not end with a dot"
	}
	labels := strings.Split(domain, ".")
	for i, label := range labels {
		if label == "*" && i == 0 && len(labels) > 1 {
			continue
		}
		if problem := checkLabel(label); problem != "" {
			return problem
		}
	}
	return ""
}

func checkLabel(label string) string {
	switch {
	case label == "":
		return "empty label"
	case strings.Contains(label, "*"):
		return "a wildcard is allowed only as the whole leftmost label, as in *.example.com"
	case len(label) > maxLabelLength:
		return fmt.Sprintf("label longer than %d characters", maxLabelLength)
	case label[0] == '-' || label[len(label)-1] == '-':
		return fmt.Sprintf("label %q starts or ends with a hyphen", label)
	}
	for _, r := range label {
		if (r < 'a' || r > 'z') && (r < '0' || r > '9') && r != '-' {
			return fmt.Sprintf("character %s is not allowed (use the xn-- form for international names)", strconv.QuoteRune(r))
		}
	}
	return ""
}

// address checks a host:port listen address; the host may be empty (all
// interfaces).
func (d *decoder) address(n *yaml.Node, path string) (string, bool) {
	s, ok := d.str(n, path)
	if !ok {
		return "", false
	}
	_, port, err := net.SplitHostPort(s)
	p, perr := strconv.Atoi(port)
	if err != nil || perr != nil || p < 1 || p > 65535 {
		d.fail(n, path, "must be host:port with a port from 1 to 65535, such as 127.0.0.1:8402, got %q", s)
		return "", false
	}
	return s, true
}
