package traefik

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
)

// Selector says which routers one certfetch resolver serves.
type Selector struct {
	// Resolver is the certfetch resolver's name; it goes into Wanted and Problem.
	Resolver string
	// CertResolver selects the routers whose tls.certResolver equals it, as Traefik's
	// certificatesResolvers.<CertResolver> would. Empty selects none this way.
	CertResolver string
	// Domains select routers with TLS but no certResolver (`tls: {}`) whose names all
	// match one of these patterns: "example.com" matches that name only, "*.example.com"
	// any name below example.com, at any depth (a.example.com, a.b.example.com), and the
	// wildcard name *.example.com itself; not example.com. Patterns are lower case.
	// A TCP passthrough router is never selected this way: Traefik does not terminate
	// its TLS.
	Domains []string
}

// matches reports whether every name is matched by a pattern of the selector.
func (s Selector) matches(names []string) (outside []string) {
	for _, n := range names {
		if !slices.ContainsFunc(s.Domains, func(p string) bool { return matchPattern(n, p) }) {
			outside = append(outside, n)
		}
	}
	return outside
}

// matchPattern reports whether name is matched by a Selector.Domains pattern.
func matchPattern(name, pattern string) bool {
	if suffix, ok := strings.CutPrefix(pattern, "*"); ok {
		return strings.HasSuffix(name, suffix) && len(name) > len(suffix)
	}
	return name == pattern
}

// Wanted is one certificate Traefik's ACME provider would request.
type Wanted struct {
	// Domains are lower case, without a trailing dot, each once; the first is the main
	// name (the first router's, routers taken by name).
	Domains []string
	// Resolver is the certfetch resolver (Selector.Resolver).
	Resolver string
	// Routers are the Refs of the routers that want this certificate, sorted.
	Routers []string
	// Wildcard is true when a domain is a wildcard (*.example.com): only DNS-01 can
	// validate it (RFC 8555 §8.3), so a resolver without DNS-01 must report it, per
	// router, instead of ordering it.
	Wildcard bool
}

// Certificates derives the certificates the selectors' routers want, as Traefik v3.6.12's
// ACME provider would, and the problems that keep a router from its certificate:
//
//   - A router is selected when its tls.certResolver equals a selector's CertResolver, or
//     (tls set, no certResolver, no passthrough) when every name of its rule matches a
//     selector's Domains. A router selected by two selectors is a Problem and gets nothing.
//   - Its names are tls.domains when set, one certificate per entry after Traefik's
//     deleteUnnecessaryDomains (an entry repeated or covered by an earlier entry or a
//     wildcard entry loses those names); otherwise the rule's Host() (HTTP) or HostSNI()
//     (TCP) arguments, one certificate for all of them, in the rule's order. The rule's
//     ruleSyntax does not matter (Traefik parses with both syntaxes' matchers, several
//     arguments per matcher included), nor does negation (`!Host(a)` names a, as in
//     Traefik). HostRegexp and HostSNIRegexp are ignored and reported: a Problem beside
//     the certificate of the rule's other hosts, or the only outcome when there are none.
//     A rule that does not parse, or a tls.domains entry left without a usable name, is a
//     Problem; the router's other entries still give their certificates, as in Traefik.
//   - Names are lower-cased, trimmed, lose one trailing dot and repeats; a name starting
//     with "*.*", an empty one and HostSNI(`*`) are Problems (no CA issues for them).
//   - The router's status does not matter: Traefik's ACME provider reads the
//     configuration before the routers are built, so a disabled router (an unknown
//     middleware, a v3 rule with two Host arguments) still gets its certificate.
//   - Routers that want the same set of names, in any order, share one Wanted. When
//     those routers belong to different resolvers, each router gets a Problem and no
//     Wanted is made: which resolver wins is the user's to say, not the poll order's.
//
// Where certfetch differs from Traefik, on purpose: Traefik skips names that a certificate
// already in its TLS store covers (another router's, a file's, a wildcard), deciding in
// the random order it iterates its routers, so the same configuration can give different
// certificates on two starts; certfetch gives every router all its names, the same result
// every poll. A router whose names are a subset of another's therefore gets its own
// certificate; Traefik serves either by SNI.
//
// Wanted is sorted by its names (main first), Problems by router.
func Certificates(s Snapshot, sel []Selector) ([]Wanted, []Problem) {
	routers := slices.Clone(s.Routers)
	slices.SortStableFunc(routers, func(a, b Router) int { return strings.Compare(a.Ref(), b.Ref()) })

	d := derivation{byKey: map[string]*Wanted{}, conflicts: map[string]bool{}, claims: map[string][]claim{}}
	for _, r := range routers {
		if r.TLS == nil {
			continue
		}
		resolver, sets, problems := selectRouter(r, sel)
		d.problems = append(d.problems, problems...)
		for _, set := range sets {
			d.add(r.Ref(), resolver, set)
		}
	}
	return d.result()
}

// selectRouter returns the resolver that serves r and r's name sets, or the problems that
// keep it from them; nothing at all when no selector is concerned.
func selectRouter(r Router, sel []Selector) (string, [][]string, []Problem) {
	var matched []string
	if r.TLS.CertResolver != "" {
		for _, s := range sel {
			if s.CertResolver == r.TLS.CertResolver {
				matched = append(matched, s.Resolver)
			}
		}
		if len(matched) == 0 {
			return "", nil, nil
		}
		if len(matched) > 1 {
			return "", nil, []Problem{{Router: r.Ref(), Message: fmt.Sprintf(
				"certResolver %s is served by the certfetch resolvers %s: name one", r.TLS.CertResolver, strings.Join(matched, " and "))}}
		}
		sets, notes := routerNames(r)
		var problems []Problem
		for _, n := range notes {
			problems = append(problems, Problem{Router: r.Ref(), Resolver: matched[0], Message: n})
		}
		return matched[0], sets, problems
	}

	if r.TLS.Passthrough {
		return "", nil, nil
	}
	// A `tls: {}` router is nobody's until its names say so: one with any problem in its
	// names belongs to no selector (Traefik reports a rule it cannot parse itself).
	sets, notes := routerNames(r)
	if len(notes) > 0 || len(sets) == 0 {
		return "", nil, nil
	}
	var problems []Problem
	for _, s := range sel {
		if len(s.Domains) == 0 {
			continue
		}
		var outside []string
		for _, set := range sets {
			outside = append(outside, s.matches(set)...)
		}
		switch {
		case len(outside) == 0:
			matched = append(matched, s.Resolver)
		case len(outside) < countNames(sets):
			problems = append(problems, Problem{Router: r.Ref(), Resolver: s.Resolver, Message: fmt.Sprintf(
				"%s outside the resolver's domains: the router is not selected", strings.Join(outside, ", "))})
		}
	}
	switch len(matched) {
	case 0:
		return "", nil, problems
	case 1:
		return matched[0], sets, problems
	default:
		return "", nil, append(problems, Problem{Router: r.Ref(), Message: fmt.Sprintf(
			"its names match the domains of the certfetch resolvers %s: narrow them", strings.Join(matched, " and "))})
	}
}

func countNames(sets [][]string) int {
	n := 0
	for _, s := range sets {
		n += len(s)
	}
	return n
}

// routerNames returns the name sets of r's certificates (one per tls.domains entry, or
// one from the rule), each clean (see cleanNames), and what keeps names from them: an
// entry or rule with a problem gives no set, the others still do, as in Traefik.
func routerNames(r Router) ([][]string, []string) {
	var raw [][]string
	var problems []string
	if len(r.TLS.Domains) > 0 {
		for _, d := range deleteUnnecessaryDomains(r.TLS.Domains) {
			raw = append(raw, d.names())
		}
	} else {
		names, problem := ruleNames(r)
		if problem != "" {
			problems = append(problems, problem)
		}
		if len(names) > 0 {
			raw = [][]string{names}
		}
	}
	var sets [][]string
	for _, names := range raw {
		clean, err := cleanNames(names)
		if err != nil {
			problems = append(problems, err.Error())
			continue
		}
		sets = append(sets, clean)
	}
	return sets, problems
}

// ruleNames returns the Host (HostSNI) arguments of r's rule, and a problem when the rule
// cannot be parsed, names no host, or also matches hosts by HostRegexp (HostSNIRegexp),
// which Traefik's ACME provider ignores: those hosts get no certificate.
func ruleNames(r Router) ([]string, string) {
	rules, host, regexp := httpRules, "Host", "HostRegexp"
	if r.TCP {
		rules, host, regexp = tcpRules, "HostSNI", "HostSNIRegexp"
	}
	names, err := rules.values(r.Rule, host)
	if err != nil {
		return nil, err.Error()
	}
	patterns, _ := rules.values(r.Rule, regexp)
	switch {
	case len(patterns) > 0 && len(names) == 0:
		return nil, fmt.Sprintf("the rule names hosts only with %s, which Traefik's ACME provider ignores: set tls.domains", regexp)
	case len(patterns) > 0:
		return names, fmt.Sprintf("%s(%s) is ignored, as Traefik's ACME provider ignores it: the hosts it matches get no certificate; set tls.domains",
			regexp, strings.Join(patterns, ", "))
	case len(names) == 0:
		return nil, fmt.Sprintf("the rule has no %s() and tls.domains is not set: no name to certify", host)
	}
	return names, ""
}

// cleanNames applies Traefik's sanitizeDomains (lower case, trimmed, one trailing dot
// removed; "*.*" refused) and refuses what no CA issues for: an empty name, and "*"
// (HostSNI(`*`), every name). A repeated name is kept once, where it first appears.
func cleanNames(names []string) ([]string, error) {
	if len(names) == 0 {
		return nil, fmt.Errorf("a tls.domains entry names nothing")
	}
	var out []string
	for _, n := range names {
		if strings.HasPrefix(n, "*.*") {
			return nil, fmt.Errorf("%s: ACME does not allow a '*.*' wildcard", n)
		}
		n = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(n)), ".")
		switch n {
		case "":
			return nil, fmt.Errorf("an empty host name")
		case "*":
			return nil, fmt.Errorf("HostSNI(`*`) matches every name: no certificate can be ordered for it; set tls.domains")
		}
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out, nil
}

// deleteUnnecessaryDomains is Traefik's (pkg/provider/acme/provider.go), statement for
// statement, warnings left out: an entry equal to an earlier one is dropped; from the
// others, names that an earlier entry covers (equal, or matched by its wildcard) and names
// that a wildcard main of any other entry matches are removed; an entry left with no name
// is dropped. Entries are compared with reflect.DeepEqual, as Traefik does.
func deleteUnnecessaryDomains(domains []Domain) []Domain {
	var newDomains []Domain
	for idxDomainToCheck, domainToCheck := range domains {
		keepDomain := true
		for idxDomain, domain := range domains {
			if idxDomainToCheck == idxDomain {
				continue
			}
			if reflect.DeepEqual(domain, domainToCheck) {
				if idxDomainToCheck > idxDomain {
					keepDomain = false
				}
				break
			}
			var newDomainsToCheck []string
			for _, domainProcessed := range domainToCheck.names() {
				if idxDomain < idxDomainToCheck && isDomainAlreadyChecked(domainProcessed, domain.names()) {
					continue
				} else if domain.Main != domainProcessed && strings.HasPrefix(domain.Main, "*") && isDomainAlreadyChecked(domainProcessed, []string{domain.Main}) {
					continue
				}
				newDomainsToCheck = append(newDomainsToCheck, domainProcessed)
			}
			if newDomainsToCheck == nil {
				keepDomain = false
				break
			}
			domainToCheck = Domain{Main: newDomainsToCheck[0], SANs: newDomainsToCheck[1:]}
		}
		if keepDomain {
			newDomains = append(newDomains, domainToCheck)
		}
	}
	return newDomains
}

// isDomainAlreadyChecked is Traefik's: whether one of existent (each possibly a
// comma-separated list) covers name.
func isDomainAlreadyChecked(name string, existent []string) bool {
	for _, certDomains := range existent {
		for certDomain := range strings.SplitSeq(certDomains, ",") {
			if matchDomain(name, certDomain) {
				return true
			}
		}
	}
	return false
}

// matchDomain is Traefik's types.MatchDomain: name equals certDomain (trailing dots of
// certDomain removed), or certDomain is name with its leading labels replaced by "*",
// one by one (so *.example.com and *.*.example.com both match a.b.example.com).
func matchDomain(name, certDomain string) bool {
	if name == certDomain {
		return true
	}
	certDomain = strings.TrimRight(certDomain, ".")
	labels := strings.Split(name, ".")
	for i := range labels {
		labels[i] = "*"
		if certDomain == strings.Join(labels, ".") {
			return true
		}
	}
	return false
}

// derivation collects the Wanted certificates of one Certificates call.
type derivation struct {
	byKey     map[string]*Wanted // by the sorted names
	order     []string           // keys in the order first seen
	conflicts map[string]bool    // keys wanted by routers of several resolvers
	claims    map[string][]claim // every router's claim on a key, for conflict reports
	problems  []Problem
}

// claim is a router's request for a key.
type claim struct{ router, resolver string }

func (d *derivation) add(router, resolver string, names []string) {
	key := strings.Join(slices.Sorted(slices.Values(names)), ",")
	d.claims[key] = append(d.claims[key], claim{router, resolver})
	w, ok := d.byKey[key]
	if !ok {
		d.byKey[key] = &Wanted{
			Domains: names, Resolver: resolver, Routers: []string{router},
			Wildcard: slices.ContainsFunc(names, func(n string) bool { return strings.HasPrefix(n, "*.") }),
		}
		d.order = append(d.order, key)
		return
	}
	if w.Resolver != resolver {
		d.conflicts[key] = true
	}
	if !slices.Contains(w.Routers, router) {
		w.Routers = append(w.Routers, router)
	}
}

func (d *derivation) result() ([]Wanted, []Problem) {
	var wanted []Wanted
	for _, key := range d.order {
		if !d.conflicts[key] {
			w := d.byKey[key]
			slices.Sort(w.Routers)
			wanted = append(wanted, *w)
			continue
		}
		for _, c := range d.claims[key] {
			var others []string
			for _, o := range d.claims[key] {
				if o.resolver != c.resolver {
					others = append(others, fmt.Sprintf("%s (resolver %s)", o.router, o.resolver))
				}
			}
			d.problems = append(d.problems, Problem{Router: c.router, Resolver: c.resolver, Message: fmt.Sprintf(
				"%s is also wanted by %s: no certificate until one resolver serves them all", strings.Join(d.byKey[key].Domains, ", "), strings.Join(others, ", "))})
		}
	}
	slices.SortFunc(wanted, func(a, b Wanted) int {
		return strings.Compare(strings.Join(a.Domains, ","), strings.Join(b.Domains, ","))
	})
	slices.SortStableFunc(d.problems, func(a, b Problem) int { return strings.Compare(a.Router, b.Router) })
	return wanted, d.problems
}
