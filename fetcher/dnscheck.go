package fetcher

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"time"

	"github.com/certfetch/certfetch/fetcher/config"
)

// CheckDNSProviders builds the DNS-01 solver of every resolver of cfg that has a
// dnsChallenge, as the daemon will: the provider is one this build carries and its
// required variables are present (from the process environment, env or envFile). It
// presents nothing and contacts nothing (see README.md for the providers whose
// constructors ask a metadata service); ProbeDNS tries the credentials. The errors, one
// per resolver, name the resolver and the provider and hold no variable's value.
func CheckDNSProviders(cfg *config.Config) error {
	var errs []error
	for _, rc := range cfg.Resolvers {
		if rc.DNSChallenge == nil {
			continue
		}
		if _, err := dnsSolver(rc, nil); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// DNSProbe is what ProbeDNS measured.
type DNSProbe struct {
	// Record is the TXT record's name.
	Record string
	// Present is how long the provider took to create the record, Visible how long after
	// that the propagation check saw it, CleanUp how long removing it took.
	Present, Visible, CleanUp time.Duration
}

// ProbeDNS tries the credentials of rc's DNS provider for domain: it presents a TXT record
// with a random value at _acme-challenge.<domain>, waits until the propagation check (rc's
// dnsChallenge options) sees it, and removes it, whatever happened. ctx bounds the wait.
// It places no order: the CA is not involved.
func ProbeDNS(ctx context.Context, rc *config.Resolver, domain string) (DNSProbe, error) {
	p := DNSProbe{Record: "_acme-challenge." + domain}
	if rc.DNSChallenge == nil {
		return p, fmt.Errorf("resolver %s answers HTTP-01; probe-dns needs a dnsChallenge", rc.Name)
	}
	solver, err := dnsSolver(rc, nil)
	if err != nil {
		return p, err
	}
	// Token and key authorization are random: the record's value is their hash, and a
	// value no CA ever asked for cannot be mistaken for a real challenge.
	token, keyAuth := rand.Text(), rand.Text()
	start := time.Now()
	err = solver.Present(domain, token, keyAuth)
	p.Present = time.Since(start)
	if err == nil {
		start = time.Now()
		err = solver.WaitPropagation(ctx, domain, token, keyAuth)
		p.Visible = time.Since(start)
	}
	start = time.Now()
	cerr := solver.CleanUp(domain, token, keyAuth)
	p.CleanUp = time.Since(start)
	if err != nil || cerr != nil {
		return p, fmt.Errorf("resolver %s: probe %s: %w", rc.Name, p.Record, errors.Join(err, cerr))
	}
	return p, nil
}
