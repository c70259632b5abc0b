// Package dns01 solves ACME DNS-01 challenges (RFC 8555 §8.4) with any of lego v4's DNS
// providers, the way Traefik's dnsChallenge does, but with every wait bounded by the order
// deadline: lego v4's own propagation check sleeps and polls without a context.
//
// A Solver wraps a provider (constructed by the caller, e.g. lego's providers/dns/rfc2136)
// and implements what acme.Config.Solver takes plus acme.PropagationWaiter (the engine
// waits until the TXT record is visible before asking the CA to validate) and
// acme.SequentialSolver (providers that replace a name's TXT records on Present solve one
// authorization at a time). Errors name the provider and the record's name.
package dns01

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/go-acme/lego/v4/challenge"
	legodns01 "github.com/go-acme/lego/v4/challenge/dns01"

	"github.com/certfetch/certfetch/internal/wait"
)

// Lego's defaults for a provider that does not say (challenge.ProviderTimeout): how long
// a record may take to appear at the checked nameservers, and how often they are asked.
const (
	defaultTimeout  = legodns01.DefaultPropagationTimeout // 60 s
	defaultInterval = legodns01.DefaultPollingInterval    // 2 s
)

// Options mirror Traefik v3.6's dnsChallenge (resolvers and propagation.*), with lego's
// semantics (challenge/dns01: precheck.go, dns_challenge.go).
type Options struct {
	// Resolvers are the DNS servers (host or host:port, port 53 by default) the
	// propagation check asks: to follow CNAMEs, find the zone and its nameservers, and,
	// with RequireAllRNS, for the record itself. Empty: the system's (/etc/resolv.conf).
	Resolvers []string
	// DelayBeforeChecks is waited after Present, before the first check.
	DelayBeforeChecks time.Duration
	// DisableChecks skips the check: after DelayBeforeChecks the record is taken as
	// visible (Traefik: "not recommended").
	DisableChecks bool
	// DisableANSChecks skips asking the zone's authoritative nameservers for the record.
	DisableANSChecks bool
	// RequireAllRNS requires every resolver in Resolvers to answer the record.
	RequireAllRNS bool
	// NameserverPort is the port the zone's authoritative nameservers are asked on; 0 is
	// 53. Only a test zone served on another port needs it.
	NameserverPort int
	// Logger for progress; nil discards.
	Logger *slog.Logger
}

// Solver publishes DNS-01 challenges through a lego DNS provider and waits for them to
// propagate. It is safe for concurrent use when the provider is.
type Solver struct {
	name      string
	provider  challenge.Provider
	opts      Options
	resolvers []string
	timeout   time.Duration
	interval  time.Duration
	log       *slog.Logger
}

// New returns a Solver for provider, named name in errors and logs (the provider's name
// in lego and Traefik, e.g. "rfc2136"). The propagation timeout and polling interval are
// the provider's own (challenge.ProviderTimeout), else lego's 60 s and 2 s; the order
// deadline bounds them too.
func New(name string, provider challenge.Provider, opts Options) (*Solver, error) {
	if provider == nil {
		return nil, fmt.Errorf("dns-01 %s: no provider", name)
	}

	resolvers := legodns01.ParseNameservers(opts.Resolvers)
	if len(resolvers) == 0 {
		var err error
		if resolvers, err = systemResolvers(); err != nil {
			return nil, fmt.Errorf("dns-01 %s: %w", name, err)
		}
	}

	timeout, interval := defaultTimeout, defaultInterval
	if pt, ok := provider.(challenge.ProviderTimeout); ok {
		timeout, interval = pt.Timeout()
	}

	s := &Solver{
		name:      name,
		provider:  provider,
		opts:      opts,
		resolvers: resolvers,
		timeout:   timeout,
		interval:  interval,
		log:       opts.Logger,
	}

	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}

	return s, nil
}

// Present implements challenge.Provider: the provider creates the TXT record.
func (s *Solver) Present(domain, token, keyAuth string) error {
	if err := s.provider.Present(domain, token, keyAuth); err != nil {
		return &ProviderError{Provider: s.name, Op: "present", FQDN: challengeFQDN(domain), Err: err}
	}

	s.log.Info("DNS-01 record presented", "provider", s.name, "fqdn", challengeFQDN(domain))

	return nil
}

// CleanUp implements challenge.Provider: the provider removes the TXT record.
func (s *Solver) CleanUp(domain, token, keyAuth string) error {
	if err := s.provider.CleanUp(domain, token, keyAuth); err != nil {
		return &ProviderError{Provider: s.name, Op: "clean up", FQDN: challengeFQDN(domain), Err: err}
	}

	return nil
}

// Sequential implements acme.SequentialSolver with the provider's own answer (lego's
// optional Sequential() time.Duration): such providers can hold one challenge at a time,
// and want the returned pause between two.
func (s *Solver) Sequential() (bool, time.Duration) {
	if p, ok := s.provider.(interface{ Sequential() time.Duration }); ok {
		return true, p.Sequential()
	}

	return false, 0
}

// WaitPropagation implements acme.PropagationWaiter: it waits DelayBeforeChecks, then
// checks every interval until the record is visible where Options require it, for at
// most the provider's timeout. It returns a *PropagationError when the timeout passes,
// or ctx's error (wrapped, with the last check's failure) when ctx ends first. Unlike
// lego, the first check comes right after the delay, not after one interval.
func (s *Solver) WaitPropagation(ctx context.Context, domain, _, keyAuth string) error {
	fqdn := challengeFQDN(domain) + "."

	if err := wait.Sleep(ctx, s.opts.DelayBeforeChecks); err != nil {
		return fmt.Errorf("dns-01 %s: wait before checking %s: %w", s.name, challengeFQDN(domain), err)
	}

	if s.opts.DisableChecks {
		return nil
	}

	value := challengeValue(keyAuth)
	deadline := time.Now().Add(s.timeout)

	for {
		err := s.check(ctx, fqdn, value)
		if err == nil {
			s.log.Info("DNS-01 record visible", "provider", s.name, "fqdn", challengeFQDN(domain))

			return nil
		}

		if ctx.Err() != nil {
			return fmt.Errorf("dns-01 %s: propagation of %s: %w (last check: %w)", s.name, challengeFQDN(domain), ctx.Err(), err)
		}

		if !time.Now().Add(s.interval).Before(deadline) {
			return &PropagationError{Provider: s.name, FQDN: challengeFQDN(domain), Timeout: s.timeout, Err: err}
		}

		s.log.Info("waiting for the DNS-01 record to propagate", "provider", s.name, "fqdn", challengeFQDN(domain), "check", err)

		if err := wait.Sleep(ctx, s.interval); err != nil {
			return fmt.Errorf("dns-01 %s: propagation of %s: %w", s.name, challengeFQDN(domain), err)
		}
	}
}

// challengeFQDN is the name of domain's challenge record, without the final dot (for
// messages). A wildcard's authorization names the domain without "*.".
func challengeFQDN(domain string) string {
	return "_acme-challenge." + strings.TrimSuffix(domain, ".")
}

// challengeValue is the TXT value that proves keyAuth: base64url(SHA-256(keyAuth))
// (RFC 8555 §8.4). lego's GetChallengeInfo computes it too, but also follows CNAMEs
// through its process-wide resolvers without a context.
func challengeValue(keyAuth string) string {
	sum := sha256.Sum256([]byte(keyAuth))

	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// ProviderError is returned when the DNS provider failed to create or remove a record
// (credentials refused, server unreachable, no zone for the name...). Nothing is known to
// be published; retrying at once would most likely fail the same way.
type ProviderError struct {
	Provider string
	// Op is "present" or "clean up".
	Op   string
	FQDN string
	Err  error
}

func (e *ProviderError) Error() string {
	return fmt.Sprintf("dns-01 %s: %s %s: %v", e.Provider, e.Op, e.FQDN, e.Err)
}

func (e *ProviderError) Unwrap() error { return e.Err }

// PropagationError is returned when the record was not seen where the check requires it
// within the provider's propagation timeout: wrong resolvers, a zone served elsewhere, or
// a provider that accepted the change but does not publish it.
type PropagationError struct {
	Provider string
	FQDN     string
	Timeout  time.Duration
	// Err is the last check's failure.
	Err error
}

func (e *PropagationError) Error() string {
	return fmt.Sprintf("dns-01 %s: %s not visible after %s: %v", e.Provider, e.FQDN, e.Timeout, e.Err)
}

func (e *PropagationError) Unwrap() error { return e.Err }

// errNotVisible is the check's failure when a server answers without the value.
var errNotVisible = errors.New("record not found")
