package dns01

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	legodns01 "github.com/go-acme/lego/v4/challenge/dns01"
	"github.com/miekg/dns"
)

// queryTimeout bounds one DNS query. lego waits 10 s; a resolver or nameserver that has
// not answered in 5 s is failing, and the check is asked again every interval anyway.
const queryTimeout = 5 * time.Second

// maxCNAMEs bounds the CNAME chain followed from _acme-challenge.<domain> (lego's bound),
// so that a loop cannot spin.
const maxCNAMEs = 50

// ednsSize is the UDP payload size advertised, as lego does: large enough for a few TXT
// records without falling back to TCP.
const ednsSize = 4096

// resolvConf is where the system's resolvers are read when Options.Resolvers is empty.
const resolvConf = "/etc/resolv.conf"

// systemResolvers returns the nameservers of /etc/resolv.conf as host:port.
func systemResolvers() ([]string, error) {
	cfg, err := dns.ClientConfigFromFile(resolvConf)
	if err != nil {
		return nil, fmt.Errorf("no resolvers configured, and %s: %w", resolvConf, err)
	}

	if len(cfg.Servers) == 0 {
		return nil, fmt.Errorf("no resolvers configured, and none in %s", resolvConf)
	}

	servers := make([]string, 0, len(cfg.Servers))
	for _, s := range cfg.Servers {
		servers = append(servers, net.JoinHostPort(s, cfg.Port))
	}

	return servers, nil
}

// check reports whether value is visible at fqdn (after its CNAMEs) where the options
// require it: at every resolver with RequireAllRNS, and at every authoritative nameserver
// of the zone unless DisableANSChecks. The error says what is missing where.
func (s *Solver) check(ctx context.Context, fqdn, value string) error {
	fqdn, err := s.followCNAMEs(ctx, fqdn)
	if err != nil {
		return err
	}

	if s.opts.RequireAllRNS {
		for _, r := range s.resolvers {
			if err := hasValue(ctx, r, fqdn, value, true); err != nil {
				return fmt.Errorf("resolver %w", err)
			}
		}
	}

	if s.opts.DisableANSChecks {
		return nil
	}

	servers, err := s.authoritative(ctx, fqdn)
	if err != nil {
		return err
	}

	for _, ns := range servers {
		if err := hasValue(ctx, ns, fqdn, value, false); err != nil {
			return fmt.Errorf("authoritative nameserver %w", err)
		}
	}

	return nil
}

// followCNAMEs returns the name fqdn's CNAME chain ends at (fqdn itself without one): the
// record a provider following CNAMEs creates there.
func (s *Solver) followCNAMEs(ctx context.Context, fqdn string) (string, error) {
	for range maxCNAMEs {
		r, err := s.ask(ctx, fqdn, dns.TypeCNAME)
		if err != nil {
			return "", err
		}

		next := fqdn

		for _, rr := range r.Answer {
			if cn, ok := rr.(*dns.CNAME); ok && strings.EqualFold(cn.Hdr.Name, fqdn) {
				next = cn.Target
			}
		}

		if next == fqdn {
			return fqdn, nil
		}

		fqdn = next
	}

	return "", fmt.Errorf("more than %d CNAMEs from %s", maxCNAMEs, fqdn)
}

// authoritative returns host:port of one address of each nameserver of fqdn's zone, as
// the resolvers tell: the zone is the closest enclosing name with an SOA record, its
// nameservers its NS records.
func (s *Solver) authoritative(ctx context.Context, fqdn string) ([]string, error) {
	zone, err := s.zone(ctx, fqdn)
	if err != nil {
		return nil, err
	}

	r, err := s.ask(ctx, zone, dns.TypeNS)
	if err != nil {
		return nil, err
	}

	port := strconv.Itoa(s.opts.NameserverPort)
	if s.opts.NameserverPort == 0 {
		port = "53"
	}

	var servers []string

	for _, rr := range r.Answer {
		ns, ok := rr.(*dns.NS)
		if !ok {
			continue
		}

		addr, err := s.address(ctx, ns.Ns)
		if err != nil {
			return nil, err
		}

		servers = append(servers, net.JoinHostPort(addr, port))
	}

	if len(servers) == 0 {
		return nil, fmt.Errorf("no NS records for zone %s", zone)
	}

	return servers, nil
}

// zone returns the closest name enclosing fqdn that has an SOA record.
func (s *Solver) zone(ctx context.Context, fqdn string) (string, error) {
	for name := range legodns01.DomainsSeq(fqdn) {
		r, err := s.ask(ctx, name, dns.TypeSOA)
		if err != nil {
			return "", err
		}

		switch r.Rcode {
		case dns.RcodeSuccess, dns.RcodeNameError:
		default:
			return "", fmt.Errorf("SOA query for %s answered %s", name, dns.RcodeToString[r.Rcode])
		}

		for _, rr := range r.Answer {
			if soa, ok := rr.(*dns.SOA); ok && strings.EqualFold(soa.Hdr.Name, name) {
				return soa.Hdr.Name, nil
			}
		}
	}

	return "", fmt.Errorf("no zone (SOA record) found for %s", fqdn)
}

// address returns the first IPv4 (else IPv6) address of host as the resolvers tell; host
// may be an address already.
func (s *Solver) address(ctx context.Context, host string) (string, error) {
	if ip := net.ParseIP(strings.TrimSuffix(host, ".")); ip != nil {
		return ip.String(), nil
	}

	for _, qtype := range []uint16{dns.TypeA, dns.TypeAAAA} {
		r, err := s.ask(ctx, host, qtype)
		if err != nil {
			return "", err
		}

		for _, rr := range r.Answer {
			switch a := rr.(type) {
			case *dns.A:
				return a.A.String(), nil
			case *dns.AAAA:
				return a.AAAA.String(), nil
			}
		}
	}

	return "", fmt.Errorf("no address for nameserver %s", host)
}

// ask sends a recursive query to the resolvers in turn and returns the first answer.
func (s *Solver) ask(ctx context.Context, name string, qtype uint16) (*dns.Msg, error) {
	var errs []error

	for _, r := range s.resolvers {
		msg, err := exchange(ctx, r, name, qtype, true)
		if err == nil {
			return msg, nil
		}

		errs = append(errs, err)

		if ctx.Err() != nil {
			break
		}
	}

	return nil, fmt.Errorf("%s query for %s: %w", dns.TypeToString[qtype], name, errors.Join(errs...))
}

// hasValue asks server for fqdn's TXT records and fails unless one of them is value.
func hasValue(ctx context.Context, server, fqdn, value string, recursive bool) error {
	r, err := exchange(ctx, server, fqdn, dns.TypeTXT, recursive)
	if err != nil {
		return err
	}

	if r.Rcode != dns.RcodeSuccess {
		return fmt.Errorf("%s answered %s for %s", server, dns.RcodeToString[r.Rcode], fqdn)
	}

	var values []string

	for _, rr := range r.Answer {
		if txt, ok := rr.(*dns.TXT); ok {
			values = append(values, strings.Join(txt.Txt, ""))
		}
	}

	if !slices.Contains(values, value) {
		return fmt.Errorf("%s: %w at %s (it has %d other TXT records)", server, errNotVisible, fqdn, len(values))
	}

	return nil
}

// exchange sends one query to server over UDP, and again over TCP when the answer was
// truncated, within queryTimeout and ctx.
func exchange(ctx context.Context, server, name string, qtype uint16, recursive bool) (*dns.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()

	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	m.SetEdns0(ednsSize, false)
	m.RecursionDesired = recursive

	// Timeout: miekg/dns otherwise bounds each read by its own 2 s default,
	// shorter than queryTimeout.
	r, _, err := (&dns.Client{Net: "udp", Timeout: queryTimeout}).ExchangeContext(ctx, m, server)
	if err == nil && r.Truncated {
		r, _, err = (&dns.Client{Net: "tcp", Timeout: queryTimeout}).ExchangeContext(ctx, m, server)
	}

	if err != nil {
		return nil, fmt.Errorf("%s: %w", server, err)
	}

	return r, nil
}
