package fetcher

import (
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/certfetch/certfetch/acme"
	"github.com/certfetch/certfetch/fetcher/config"
	"github.com/certfetch/certfetch/fetcher/store"
	"github.com/certfetch/certfetch/fetcher/traefik"
)

// Discovery (the traefik section): certfetch reads Traefik's routers from its API and
// provides the certificates the routers ask for, as Traefik's own ACME provider would.
//
// What the API asked for is kept in the store (store.Discovery), written only when it
// changes: a restart, `once` and `status` know the discovered certificates while the API
// is down, and a vanished router's grace period (traefik.withdrawAfter) outlives a
// restart. Only a successful, complete read of the API changes the discovered set: a
// failed or partial read changes nothing, so an API outage never withdraws a certificate.
// A certificate no router asks for any more is withdrawn after withdrawAfter, counted
// from the first successful read that missed it.

// newTraefikClient builds the API client of the traefik section.
func newTraefikClient(t *config.Traefik) (*traefik.Client, error) {
	tlsConfig, err := t.API.TLS.ClientConfig([]string{t.API.URL})
	if err != nil {
		return nil, fmt.Errorf("traefik api: %w", err)
	}
	var roots *x509.CertPool
	if tlsConfig != nil {
		roots = tlsConfig.RootCAs
	}
	return traefik.NewClient(traefik.Config{
		URL:      t.API.URL,
		Username: t.API.Username,
		Password: t.API.Password,
		RootCAs:  roots,
		Timeout:  t.API.Timeout,
	})
}

// loadDiscovery reads the discovered certificates a previous run stored; an empty record
// when there is none.
func loadDiscovery(ctx context.Context, st *store.Store) (*store.Discovery, error) {
	doc, err := st.LoadDiscovery(ctx)
	if errors.Is(err, store.ErrNotFound) {
		return &store.Discovery{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the discovered certificates: %w", err)
	}
	return doc, nil
}

// Certificates returns every certificate certfetch manages for cfg: the file's, then
// those Traefik's routers ask for (as the last successful read of Traefik's API stored
// them), for the commands that look at certificates without a running daemon (status,
// renew, probe).
func Certificates(ctx context.Context, cfg *config.Config, st *store.Store) ([]*config.Certificate, error) {
	if cfg.Traefik == nil {
		return cfg.Certificates, nil
	}
	doc, err := loadDiscovery(ctx, st)
	if err != nil {
		return nil, err
	}
	return managed(cfg, doc), nil
}

// managed merges the file's certificates with the discovered ones (reconcile already
// dropped those that conflict with the file), file first.
func managed(cfg *config.Config, doc *store.Discovery) []*config.Certificate {
	certs := slices.Clip(cfg.Certificates)
	for _, dc := range doc.Certificates {
		if cfg.Resolvers[dc.Resolver] == nil {
			continue // the resolver was removed: reconcile drops the entry at the next read
		}
		certs = append(certs, &config.Certificate{Name: dc.Name, Domains: dc.Domains, Resolver: dc.Resolver, KeyType: dc.KeyType})
	}
	return certs
}

// selectors says which routers each resolver serves.
func selectors(cfg *config.Config) []traefik.Selector {
	out := make([]traefik.Selector, 0, len(cfg.Resolvers))
	for name, rc := range cfg.Resolvers {
		out = append(out, traefik.Selector{Resolver: name, CertResolver: rc.Routers.CertResolver, Domains: rc.Routers.Domains})
	}
	slices.SortFunc(out, func(a, b traefik.Selector) int { return strings.Compare(a.Resolver, b.Resolver) })
	return out
}

// reconcile computes the discovered certificates after a successful read of the API that
// wants these certificates (and reports these problems), given what was discovered
// before. storedKeyType returns the key type of the certificate stored under a name
// ("" when none), so that an imported certificate keeps its type.
//
// Names are config.DerivedName of the first domain, as the file's certificates and the
// import name them; a name the file's certificates or another router's certificate
// already take gets the hash of its domains appended, so that names stay stable while
// the routers do. A certificate the file already configures (same resolver, same
// domains) is the file's; one whose name the file uses for other domains is a conflict,
// reported and not issued.
func reconcile(cfg *config.Config, prev *store.Discovery, wanted []traefik.Wanted, problems []traefik.Problem,
	now time.Time, storedKeyType func(name string) acme.KeyType,
) *store.Discovery {
	next := &store.Discovery{LastSuccess: now}
	for _, p := range problems {
		next.Problems = append(next.Problems, store.DiscoveryProblem{Router: p.Router, Problem: p.Message})
	}
	fileByName := map[string]*config.Certificate{}
	fileBySet := map[string]*config.Certificate{}
	for _, c := range cfg.Certificates {
		fileByName[c.Name] = c
		fileBySet[domainSet(c.Domains)] = c
	}
	previous := map[string]store.DiscoveredCertificate{}
	for _, dc := range prev.Certificates {
		previous[dc.Resolver+" "+domainSet(dc.Domains)] = dc
	}
	slices.SortFunc(wanted, func(a, b traefik.Wanted) int {
		return cmp.Or(strings.Compare(domainSet(a.Domains), domainSet(b.Domains)), strings.Compare(a.Resolver, b.Resolver))
	})
	taken := map[string]bool{}
	for name := range fileByName {
		taken[name] = true
	}
	for _, w := range wanted {
		rc := cfg.Resolvers[w.Resolver]
		if rc == nil {
			continue
		}
		if problem := fileConflict(w, fileBySet[domainSet(w.Domains)], fileByName[config.DerivedName(w.Domains[0])]); problem != "" {
			next.Problems = append(next.Problems, routerProblems(w.Routers, problem)...)
			continue
		}
		if fileBySet[domainSet(w.Domains)] != nil {
			continue // the file's certificate is this one
		}
		if problem := invalidDomain(w.Domains); problem != "" {
			next.Problems = append(next.Problems, routerProblems(w.Routers, problem)...)
			continue
		}
		if w.Wildcard && !answersWildcards(rc) {
			next.Problems = append(next.Problems, routerProblems(w.Routers,
				fmt.Sprintf("%s needs the DNS-01 challenge; resolver %s answers HTTP-01 (RFC 8555 §8.3)", w.Domains[0], w.Resolver))...)
			continue
		}
		key := w.Resolver + " " + domainSet(w.Domains)
		dc := store.DiscoveredCertificate{Resolver: w.Resolver, Domains: w.Domains, Routers: slices.Sorted(slices.Values(w.Routers))}
		if old, ok := previous[key]; ok {
			dc.Name, dc.KeyType = old.Name, old.KeyType
			delete(previous, key)
		}
		if dc.Name == "" || taken[dc.Name] {
			dc.Name = discoveredName(w.Domains, taken)
		}
		if rc.Routers.KeyType != "" {
			dc.KeyType = rc.Routers.KeyType
		}
		dc.KeyType = cmp.Or(dc.KeyType, storedKeyType(dc.Name), config.DefaultRoutersKeyType)
		taken[dc.Name] = true
		next.Certificates = append(next.Certificates, dc)
	}
	// What no router asks for any more stays for the grace period, under its name unless
	// a wanted certificate took it (the routers' domains changed: the new certificate
	// replaces it under the same name, with no gap in publication).
	for _, dc := range previous {
		if cfg.Resolvers[dc.Resolver] == nil || taken[dc.Name] {
			continue
		}
		if dc.MissingSince.IsZero() {
			dc.MissingSince = now
		}
		if now.Sub(dc.MissingSince) >= cfg.Traefik.WithdrawAfter {
			continue
		}
		taken[dc.Name] = true
		next.Certificates = append(next.Certificates, dc)
	}
	slices.SortFunc(next.Certificates, func(a, b store.DiscoveredCertificate) int { return strings.Compare(a.Name, b.Name) })
	return next
}

// domainSet identifies a set of domains, whatever their order.
func domainSet(domains []string) string {
	return strings.Join(slices.Sorted(slices.Values(domains)), ",")
}

// invalidDomain says what is wrong with the first of domains that no CA would issue for
// (Traefik passes a rule's names on unchecked); "" when all are fine.
func invalidDomain(domains []string) string {
	for _, d := range domains {
		if problem := config.CheckDomain(d); problem != "" {
			return fmt.Sprintf("invalid DNS name %q: %s: not ordered", d, problem)
		}
	}
	return ""
}

// fileConflict says why w cannot be issued beside the configuration file's certificates:
// the file has a certificate for the same domains on another resolver (sameSet), or
// gives w's name to other domains (sameName); "" when neither.
func fileConflict(w traefik.Wanted, sameSet, sameName *config.Certificate) string {
	switch {
	case sameSet != nil && sameSet.Resolver != w.Resolver:
		return fmt.Sprintf("the configuration file's certificate %s has the same domains on resolver %s, the router's resolver is %s: not issued; let one of them say the resolver of the other",
			sameSet.Name, sameSet.Resolver, w.Resolver)
	case sameSet == nil && sameName != nil:
		return fmt.Sprintf("its certificate (%s) would take the name %s, which the configuration file gives to %s: not issued; name the file's certificate otherwise",
			strings.Join(w.Domains, ", "), sameName.Name, strings.Join(sameName.Domains, ", "))
	}
	return ""
}

// discoveredName names a discovered certificate: config.DerivedName of its first domain,
// or, when that is taken or too long, a prefix of it followed by the hash of the domains.
func discoveredName(domains []string, taken map[string]bool) string {
	name := config.DerivedName(domains[0])
	if !taken[name] && len(name) <= config.MaxNameLength {
		return name
	}
	sum := sha256.Sum256([]byte(strings.Join(slices.Sorted(slices.Values(domains)), ",")))
	suffix := "-" + hex.EncodeToString(sum[:4])
	return name[:min(len(name), config.MaxNameLength-len(suffix))] + suffix
}

// answersWildcards reports whether rc can validate a wildcard: only DNS-01 can.
func answersWildcards(rc *config.Resolver) bool {
	return rc.DNSChallenge != nil
}

func routerProblems(routers []string, problem string) []store.DiscoveryProblem {
	out := make([]store.DiscoveryProblem, len(routers))
	for i, r := range routers {
		out[i] = store.DiscoveryProblem{Router: r, Problem: problem}
	}
	return out
}

// sameDiscovery reports whether a and b discovered the same: whether a write is due.
func sameDiscovery(a, b *store.Discovery) bool {
	return slices.EqualFunc(a.Certificates, b.Certificates, func(x, y store.DiscoveredCertificate) bool {
		return x.Name == y.Name && x.Resolver == y.Resolver && x.KeyType == y.KeyType && x.MissingSince.Equal(y.MissingSince) &&
			slices.Equal(x.Domains, y.Domains) && slices.Equal(x.Routers, y.Routers)
	}) && slices.Equal(a.Problems, b.Problems) && a.LastError == b.LastError && a.FailingSince.Equal(b.FailingSince)
}

// traefikClientFor returns the API client for cfg: the current one when the traefik
// section's API settings did not change, nil without a traefik section.
func (d *Daemon) traefikClientFor(cfg *config.Config) (*traefik.Client, error) {
	if cfg.Traefik == nil {
		return nil, nil
	}
	d.mu.Lock()
	old, oldCfg := d.traefik, d.cfg
	d.mu.Unlock()
	if old != nil && oldCfg != nil && oldCfg.Traefik != nil && reflect.DeepEqual(oldCfg.Traefik.API, cfg.Traefik.API) {
		return old, nil
	}
	return newTraefikClient(cfg.Traefik)
}

// discovering reports whether the configuration has a traefik section.
func (d *Daemon) discovering() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cfg.Traefik != nil
}

// sweepable reports whether the sweep may withdraw what is not managed: always without
// discovery, after the first successful read of Traefik's API with it.
func (d *Daemon) sweepable() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cfg.Traefik == nil || d.discoveryReady
}

// startDiscovery reads the discovered certificates a previous run stored, unless this
// process has them already, then Traefik's API once; it returns the error of either (the
// certificates stored are managed meanwhile). A stored record that cannot be read stops
// here: reconciling a read against an empty record would rename certificates and forget
// when the missing ones went missing.
func (d *Daemon) startDiscovery(ctx context.Context) error {
	d.mu.Lock()
	loaded := d.discovered != nil
	d.mu.Unlock()
	if !loaded {
		doc, err := loadDiscovery(ctx, d.store)
		if err != nil {
			d.log.Error("cannot read the certificates discovered before; discovered certificates wait for Traefik's API", "err", err)
			return err
		}
		d.mu.Lock()
		d.discovered = doc
		d.rebuildLocked()
		d.mu.Unlock()
	}
	return d.poll(ctx)
}

// discover reads Traefik's API every traefik.pollInterval, and at once after a reload,
// until ctx ends. Without a traefik section it waits for a reload that adds one.
func (d *Daemon) discover(ctx context.Context) {
	for {
		d.mu.Lock()
		t := d.cfg.Traefik
		d.mu.Unlock()
		interval := maxIdle
		if t != nil {
			interval = t.PollInterval
		}
		timer := time.NewTimer(interval)
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-timer.C:
		case <-d.pollNow:
			timer.Stop()
		}
		if d.discovering() {
			_ = d.startDiscovery(ctx)
		}
	}
}

// pollSoon asks the discovery loop for a read now (a reload changed what is selected).
func (d *Daemon) pollSoon() {
	select {
	case d.pollNow <- struct{}{}:
	default:
	}
}

// poll reads Traefik's API once and makes the managed certificates what it asks for;
// startDiscovery, its only caller, has loaded d.discovered.
// A failed read changes nothing but the record of the failure; it is returned, and so is
// a record the store refused (the managed certificates follow the read all the same).
func (d *Daemon) poll(ctx context.Context) error {
	d.mu.Lock()
	cfg, client, prev := d.cfg, d.traefik, d.discovered // prev: set by startDiscovery
	d.mu.Unlock()
	snap, err := client.Routers(ctx)
	now := d.now()
	d.metrics.ObserveTraefikPoll(snap.Requests, snap.Bytes, err)
	if err != nil {
		err = fmt.Errorf("read Traefik's routers: %w", err)
		d.log.Warn("cannot read Traefik's routers; nothing withdrawn", "err", err)
		next := *prev
		next.LastError = err.Error()
		if next.FailingSince.IsZero() {
			next.FailingSince = now
		}
		return errors.Join(err, d.saveDiscovery(ctx, prev, &next))
	}
	wanted, problems := traefik.Certificates(snap, selectors(cfg))
	next := reconcile(cfg, prev, wanted, problems, now, func(name string) acme.KeyType {
		rec, err := d.store.LoadCertificate(ctx, name)
		if err != nil {
			return ""
		}
		return rec.KeyType
	})
	d.metrics.SetTraefikDiscovery(len(snap.Routers), len(next.Certificates), len(next.Problems))
	for _, p := range next.Problems {
		d.log.Debug("router not served", "router", p.Router, "problem", p.Problem)
	}
	saveErr := d.saveDiscovery(ctx, prev, next)

	d.mu.Lock()
	before := d.certs
	first := !d.discoveryReady
	d.discoveryReady = true
	d.rebuildLocked()
	var changed []string
	for name, c := range d.certs {
		if old := before[name]; old != nil && !reflect.DeepEqual(old, c) {
			changed = append(changed, name)
		}
	}
	d.mu.Unlock()

	d.sched.set(ctx, d.names())
	d.sched.due(changed...)
	if first {
		d.sweep(ctx)
	}
	return saveErr
}

// saveDiscovery stores next when it differs from prev or the last write failed, and
// keeps it in memory. A failed write is logged and returned: the next read writes the
// record again, and the in-memory record rules meanwhile.
func (d *Daemon) saveDiscovery(ctx context.Context, prev, next *store.Discovery) error {
	d.mu.Lock()
	unsaved := d.discoveryUnsaved || !sameDiscovery(prev, next)
	d.mu.Unlock()
	var err error
	if unsaved {
		if err = d.store.SaveDiscovery(ctx, next); err != nil {
			err = fmt.Errorf("store the discovered certificates: %w", err)
			d.log.Error("cannot store the discovered certificates; the next read of Traefik's API tries again", "err", err)
		}
	}
	d.mu.Lock()
	d.discovered = next
	d.discoveryUnsaved = err != nil
	d.mu.Unlock()
	return err
}
