package fetcher

import (
	"bytes"
	"cmp"
	"context"
	"crypto"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/certfetch/certfetch/acme"
	"github.com/certfetch/certfetch/fetcher/acmejson"
	"github.com/certfetch/certfetch/fetcher/config"
	"github.com/certfetch/certfetch/fetcher/output"
	"github.com/certfetch/certfetch/fetcher/store"
)

// Importing Traefik's acme.json (`certfetch import-acme-json`): the accounts and
// certificates Traefik's own certificatesResolvers obtained move into certfetch's store,
// so that switching re-issues nothing and keeps the same ACME account (same URL: an EAB
// binding carries over, the CA sees no new account).
//
// It is two steps. PlanImport reads the store (writes nothing) and decides, for every
// account and certificate of an acmejson.File, what happens and why; a dry run prints
// that plan. ApplyImport writes it: accounts first (never replacing one), then each
// certificate under its lease (as the daemon changes certificates), then publishes them
// to the outputs. A plan with any refusal applies nothing.
//
// Each certificate is stored as the daemon stores one it obtained: under the name of the
// configured certificate with the same domains and resolver when there is one (with the
// configuration's domain order, which the daemon compares), else under
// config.DerivedName of its first domain, the name Traefik discovery gives a router's
// certificate; its renewal time comes from the same rule (renewAt), and ARI and
// `replaces` work on it like on any other, since both need only the certificate.

// ImportOptions adjust PlanImport.
type ImportOptions struct {
	// Resolvers maps Traefik resolver names to certfetch resolver names. A Traefik
	// resolver absent from it maps to the certfetch resolver of the same name; one
	// mapped to "" is skipped on purpose.
	Resolvers map[string]string
	// AllowCAMismatch imports an account whose URL is on another host than the certfetch
	// resolver's caServer (acme.json does not record the CA's directory; the account URL
	// is the only hint, and a CA may serve accounts from another host).
	AllowCAMismatch bool
}

// ImportAction is what an import does with an account or a certificate.
type ImportAction string

const (
	// ImportNew: stored (a certificate is then published).
	ImportNew ImportAction = "import"
	// ImportReplace: a certificate stored in place of an older one under its name.
	ImportReplace ImportAction = "replace"
	// ImportUnchanged: already in the store; a certificate is published again (the
	// outputs skip what they serve), so that a second run finishes an interrupted one.
	ImportUnchanged ImportAction = "unchanged"
	// ImportSkip: not imported; the import goes on (a certificate is left to normal
	// issuance).
	ImportSkip ImportAction = "skip"
	// ImportRefuse: the import cannot go on as asked; nothing is written.
	ImportRefuse ImportAction = "refuse"
)

// ImportPlan is what an import does, per Traefik resolver in acme.json order. It
// holds key material for ApplyImport in unexported fields only: printing or encoding a
// plan shows none.
type ImportPlan struct {
	Resolvers []*ResolverImport `json:"resolvers"`
}

// ResolverImport is the plan of one Traefik resolver: its account, then its
// certificates.
type ResolverImport struct {
	// Traefik is the resolver's name in acme.json; Resolver the certfetch resolver it
	// maps to (empty when skipped).
	Traefik  string          `json:"traefik"`
	Resolver string          `json:"resolver,omitempty"`
	Format   acmejson.Format `json:"format,omitempty"`
	// Action and Why are the account's.
	Action     ImportAction `json:"action"`
	Why        string       `json:"why,omitempty"`
	AccountURL string       `json:"accountURL,omitempty"`
	// Thumbprint is the account key's (the plugin's thumbprint setting in stateless
	// mode); not a secret.
	Thumbprint   string               `json:"thumbprint,omitempty"`
	Certificates []*CertificateImport `json:"certificates"`

	acct *store.Account // to create; nil unless Action is ImportNew
}

// CertificateImport is the plan of one certificate entry.
type CertificateImport struct {
	// Index is the entry's position in the resolver's Certificates in acme.json.
	Index   int          `json:"index"`
	Domains []string     `json:"domains"`
	Name    string       `json:"name,omitempty"`
	Serial  string       `json:"serial,omitempty"`
	KeyType acme.KeyType `json:"keyType,omitempty"`
	// NotAfter is the certificate's expiry, RenewAt when the daemon renews it (before
	// the CA's renewal information, which the daemon asks at its first visit).
	NotAfter time.Time    `json:"notAfter,omitzero"`
	RenewAt  time.Time    `json:"renewAt,omitzero"`
	Action   ImportAction `json:"action"`
	Why      string       `json:"why,omitempty"`
	// Note is what the operator should know that does not change the action (the
	// configuration will replace the certificate, or does not name it).
	Note string `json:"note,omitempty"`
	// Published is ApplyImport's outcome at the outputs: "published", or why not.
	Published string `json:"published,omitempty"`

	rec *store.Certificate // the record to store
}

// Refused returns every refusal in p (nil when there is none): an import with a
// refusal writes nothing.
func (p *ImportPlan) Refused() error {
	var errs []error
	for _, r := range p.Resolvers {
		if r.Action == ImportRefuse {
			errs = append(errs, fmt.Errorf("resolver %q: %s", r.Traefik, r.Why))
		}
	}
	return errors.Join(errs...)
}

// PlanImport decides what importing f into st does under cfg. It reads the store and
// writes nothing. It fails only when the store cannot be read.
func PlanImport(ctx context.Context, cfg *config.Config, st *store.Store, f *acmejson.File, opts ImportOptions) (*ImportPlan, error) {
	pl := &planner{cfg: cfg, st: st, opts: opts, accounts: map[string]*ResolverImport{}, names: map[string]*CertificateImport{}}
	plan := &ImportPlan{}
	for _, r := range f.Resolvers {
		ri, err := pl.resolver(ctx, r)
		if err != nil {
			return nil, err
		}
		plan.Resolvers = append(plan.Resolvers, ri)
	}
	return plan, nil
}

// planner is PlanImport's state: what earlier entries of the same file planned, so
// that two Traefik resolvers mapped to one certfetch resolver, or two entries with the
// same domains, meet.
type planner struct {
	cfg      *config.Config
	st       *store.Store
	opts     ImportOptions
	accounts map[string]*ResolverImport    // by certfetch resolver
	names    map[string]*CertificateImport // by record name, the ones to store
}

func (pl *planner) resolver(ctx context.Context, r *acmejson.Resolver) (*ResolverImport, error) {
	ri := &ResolverImport{Traefik: r.Name, Format: r.Format}
	target, mapped := pl.opts.Resolvers[r.Name]
	if !mapped {
		target = r.Name
	}
	rc := pl.cfg.Resolvers[target]
	switch {
	case r.Account == nil:
		ri.Action, ri.Why = ImportSkip, "no account and no certificates: nothing to import"
	case target == "":
		ri.Action, ri.Why = ImportSkip, fmt.Sprintf("skipped on purpose (-resolver %s=)", r.Name)
	case rc == nil:
		// Refused, not skipped: the point of importing is that nothing is ordered again,
		// and a resolver left behind by a typo would have its certificates re-issued
		// under a new account. Skipping one is a flag away.
		ri.Action, ri.Why = ImportRefuse, fmt.Sprintf("no certfetch resolver %q (defined: %s): map it with -resolver %s=NAME, or skip it with -resolver %s=",
			target, strings.Join(slices.Sorted(maps.Keys(pl.cfg.Resolvers)), ", "), r.Name, r.Name)
	default:
		ri.Resolver, ri.AccountURL = target, r.Account.URL
		if err := pl.account(ctx, ri, rc, r.Account); err != nil {
			return nil, err
		}
	}
	for _, c := range r.Certificates {
		ci := &CertificateImport{Index: c.Index, Domains: c.Domains, Serial: c.Serial, KeyType: c.KeyType, NotAfter: c.NotAfter}
		ri.Certificates = append(ri.Certificates, ci)
		switch {
		case ri.Action == ImportRefuse:
			ci.Action, ci.Why = ImportRefuse, "its resolver is refused"
		case ri.Action == ImportSkip:
			ci.Action, ci.Why = ImportSkip, "its resolver is skipped"
		case c.Skip != "":
			ci.Action, ci.Why = ImportSkip, c.Skip+": left to normal issuance"
		default:
			if err := pl.certificate(ctx, ci, rc, c); err != nil {
				return nil, err
			}
		}
	}
	return ri, nil
}

// account plans the import of a resolver's account: refused when its URL is not at the
// resolver's CA, or when the store (or an earlier resolver of the same file) holds
// another account for the resolver at that CA: an account is never replaced, since its
// certificates and the plugin's thumbprint depend on it.
func (pl *planner) account(ctx context.Context, ri *ResolverImport, rc *config.Resolver, a *acmejson.Account) error {
	key, err := acme.ParseKey(a.KeyPEM)
	if err != nil {
		return fmt.Errorf("resolver %q: account key: %w", ri.Traefik, err)
	}
	if ri.Thumbprint, err = acme.Thumbprint(key); err != nil {
		return fmt.Errorf("resolver %q: %w", ri.Traefik, err)
	}
	if got, want := origin(a.URL), origin(rc.CAServer); got != want {
		if !pl.opts.AllowCAMismatch {
			ri.Action, ri.Why = ImportRefuse, fmt.Sprintf("the account is at %s, resolver %s's caServer at %s: "+
				"acme.json does not record its CA, and an account of another CA would fail every order; "+
				"-allow-ca-mismatch imports it anyway (a CA that serves accounts from another host)", got, rc.Name, want)
			return nil
		}
		ri.Why = fmt.Sprintf("the account is at %s, the caServer at %s (allowed by -allow-ca-mismatch)", got, want)
	}
	if other := pl.accounts[rc.Name]; other != nil {
		if other.AccountURL == a.URL && other.Thumbprint == ri.Thumbprint {
			ri.Action, ri.Why = ImportUnchanged, fmt.Sprintf("the same account as resolver %q of this file", other.Traefik)
		} else {
			ri.Action, ri.Why = ImportRefuse, fmt.Sprintf("resolver %q of this file brings another account for certfetch resolver %s; "+
				"a resolver has one account per CA", other.Traefik, rc.Name)
		}
		return nil
	}
	pl.accounts[rc.Name] = ri
	stored, err := pl.st.LoadAccount(ctx, rc.Name, rc.CAServer)
	switch {
	case errors.Is(err, store.ErrNotFound):
		ri.Action = ImportNew
		ri.acct = &store.Account{Directory: rc.CAServer, KeyPEM: a.KeyPEM, URL: a.URL}
		return nil
	case err != nil:
		return fmt.Errorf("resolver %s: %w", rc.Name, err)
	}
	if sameKey(stored.KeyPEM, key) && stored.URL == a.URL {
		ri.Action = ImportUnchanged
		return nil
	}
	ri.Action, ri.Why = ImportRefuse, fmt.Sprintf("the store already holds another account for resolver %s at %s (%s): "+
		"certfetch never replaces an account (its certificates and the plugin's thumbprint depend on it); "+
		"move the resolver's record in accounts/ of %s aside to import this one",
		rc.Name, rc.CAServer, cmp.Or(stored.URL, "not registered yet"), pl.st)
	return nil
}

// sameKey reports whether keyPEM holds key (the same public key).
func sameKey(keyPEM []byte, key crypto.Signer) bool {
	k, err := acme.ParseKey(keyPEM)
	return err == nil && publicEqual(k.Public(), key.Public())
}

func publicEqual(a, b crypto.PublicKey) bool {
	eq, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && eq.Equal(b)
}

// origin is scheme://host:port of a URL, the default port spelled out, so that
// https://ca and https://ca:443 meet.
func origin(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return raw
	}
	port := u.Port()
	if port == "" && u.Scheme == "https" {
		port = "443"
	}
	return u.Scheme + "://" + strings.ToLower(u.Hostname()) + ":" + port
}

// discoveryNote says what becomes of an imported certificate the file does not configure:
// without a traefik section the daemon withdraws it; with one it serves the routers that
// ask for its domains, with its key type unless routers.keyType says another.
func discoveryNote(cfg *config.Config, rc *config.Resolver, keyType acme.KeyType) string {
	switch {
	case cfg.Traefik == nil:
		return "not in certificates and no traefik section: the daemon withdraws it from the outputs at its start"
	case rc.Routers.KeyType != "" && rc.Routers.KeyType != keyType:
		return fmt.Sprintf("resolvers.%s.routers.keyType is %s, this one has a %s key: the daemon orders a new certificate for its routers "+
			"(remove routers.keyType to keep this one)", rc.Name, rc.Routers.KeyType, keyType)
	default:
		return "for the Traefik routers that ask for these domains (discovery)"
	}
}

// certificate plans the import of one checked certificate entry.
func (pl *planner) certificate(ctx context.Context, ci *CertificateImport, rc *config.Resolver, c *acmejson.Certificate) error {
	ci.Name, ci.Domains = config.DerivedName(c.Domains[0]), c.Domains
	if conf := configuredAs(pl.cfg, rc.Name, c.Domains); conf != nil {
		ci.Name, ci.Domains = conf.Name, slices.Clone(conf.Domains)
		if conf.KeyType != c.KeyType {
			ci.Note = fmt.Sprintf("certificates: configures %s with keyType %s, this one has a %s key: the daemon orders a new certificate "+
				"at its first visit (set keyType: %s on it to keep this one)", conf.Name, conf.KeyType, c.KeyType, c.KeyType)
		}
	} else {
		ci.Note = discoveryNote(pl.cfg, rc, c.KeyType)
	}
	ci.RenewAt = renewAt(c.NotBefore, c.NotAfter, pl.cfg.Renewal.RemainingFraction)
	ci.rec = &store.Certificate{Name: ci.Name, Resolver: rc.Name, Domains: ci.Domains, CertPEM: c.CertPEM, KeyPEM: c.KeyPEM,
		NotBefore: c.NotBefore, NotAfter: c.NotAfter, RenewAt: ci.RenewAt, KeyType: c.KeyType}
	fp, err := acme.Fingerprint(c.CertPEM)
	if err != nil {
		return fmt.Errorf("%s: %w", ci.Name, err)
	}
	switch _, err := pl.st.LoadRevocation(ctx, fp); {
	case err == nil:
		ci.Action, ci.Why = ImportSkip, "revoked with certfetch revoke: never published again"
		return nil
	case !errors.Is(err, store.ErrNotFound):
		return fmt.Errorf("%s: %w", ci.Name, err)
	}
	if earlier := pl.names[ci.Name]; earlier != nil {
		if newer(earlier.rec, ci.rec) {
			earlier.Action, earlier.Why = ImportSkip, fmt.Sprintf("Certificates[%d] of this file holds a newer certificate for %s", ci.Index, ci.Name)
			earlier.rec = nil
		} else {
			ci.Action, ci.Why = ImportSkip, fmt.Sprintf("Certificates[%d] of this file holds a newer certificate for %s", earlier.Index, ci.Name)
			return nil
		}
	}
	existing, err := pl.st.LoadCertificate(ctx, ci.Name)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("%s: %w", ci.Name, err)
	}
	ci.Action, ci.Why = decideImport(existing, ci.rec)
	if ci.Action != ImportSkip {
		pl.names[ci.Name] = ci
	}
	return nil
}

// configuredAs returns the configured certificate of resolver with the same domains as
// domains, in any order; nil when there is none.
func configuredAs(cfg *config.Config, resolver string, domains []string) *config.Certificate {
	want := slices.Sorted(slices.Values(domains))
	for _, c := range cfg.Certificates {
		if c.Resolver == resolver && slices.Equal(slices.Sorted(slices.Values(c.Domains)), want) {
			return c
		}
	}
	return nil
}

// newer reports whether b was issued after a: the one to keep of two certificates for
// the same name (never downgrade).
func newer(a, b *store.Certificate) bool { return b.NotBefore.After(a.NotBefore) }

// decideImport decides what importing rec does to the stored record existing (nil or
// without a certificate: none): the same certificate is unchanged, an older one is
// replaced (its revocations carried on), a newer or as new one is kept.
func decideImport(existing, rec *store.Certificate) (ImportAction, string) {
	switch {
	case existing == nil || len(existing.CertPEM) == 0:
		return ImportNew, ""
	case bytes.Equal(existing.CertPEM, rec.CertPEM) && existing.Resolver == rec.Resolver && slices.Equal(existing.Domains, rec.Domains):
		return ImportUnchanged, "the store holds this certificate"
	case !newer(existing, rec):
		serial := "unreadable"
		if leaf, err := acme.ParseLeaf(existing.CertPEM); err == nil {
			serial = acme.SerialHex(leaf)
		}
		return ImportSkip, fmt.Sprintf("the store holds a certificate for %s as new or newer (serial %s, until %s): never replaced by an older one",
			existing.Name, serial, existing.NotAfter.UTC().Format(time.RFC3339))
	default:
		rec.Revoked, rec.LastRequest = existing.Revoked, existing.LastRequest
		return ImportReplace, "the store holds an older certificate for " + existing.Name
	}
}

// ApplyImport writes plan into st and publishes its certificates to out: the accounts
// (created, never replaced), then each certificate under its lease, for ttl (the
// daemon's storage.lockTTL): a running instance on a shared store that works on the
// same certificate is waited for by the caller's retry, not overwritten. Under the lease
// the record is read again and the decision made again, so an instance that stored a
// newer certificate meanwhile keeps it. A plan with a refusal writes nothing.
//
// Publication failures are in each certificate's Published; output.ErrNotOwned and
// output.ErrOlder (a user's own file, a newer certificate served) are reported there
// only, any other failure is also returned (the certificate is stored, and the daemon
// publishes it at its start).
func ApplyImport(ctx context.Context, st *store.Store, out output.Publisher, plan *ImportPlan, ttl time.Duration) error {
	if err := plan.Refused(); err != nil {
		return err
	}
	for _, r := range plan.Resolvers {
		if r.Action != ImportNew {
			continue
		}
		got, err := st.CreateAccount(ctx, r.Resolver, r.acct)
		if err != nil {
			return fmt.Errorf("resolver %s: store the account: %w", r.Resolver, err)
		}
		if got.URL != r.acct.URL || !bytes.Equal(got.KeyPEM, r.acct.KeyPEM) {
			return fmt.Errorf("resolver %s: another process stored an account meanwhile (%s); nothing more imported", r.Resolver, got.URL)
		}
	}
	var errs []error
	for _, r := range plan.Resolvers {
		for _, c := range r.Certificates {
			if err := applyCertificate(ctx, st, out, c, ttl); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", c.Name, err))
			}
		}
	}
	return errors.Join(errs...)
}

// applyCertificate stores c under its lease when the plan says so, then publishes the
// stored certificate.
func applyCertificate(ctx context.Context, st *store.Store, out output.Publisher, c *CertificateImport, ttl time.Duration) error {
	if c.Action != ImportNew && c.Action != ImportReplace && c.Action != ImportUnchanged {
		return nil
	}
	lease, err := st.AcquireLease(ctx, "certificates/"+c.Name, ttl)
	if err != nil {
		return err
	}
	defer lease.Release(context.WithoutCancel(ctx)) //nolint:errcheck // an unreleased lease expires after ttl
	lctx, cancel := lease.Context(ctx)
	defer cancel()
	existing, err := st.LoadCertificate(lctx, c.Name)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	if c.Action, c.Why = decideImport(existing, c.rec); c.Action == ImportSkip {
		return nil
	}
	if c.Action != ImportUnchanged {
		if err := st.SaveCertificate(lctx, c.rec); err != nil {
			return err
		}
	}
	err = out.Publish(ctx, c.Name, c.rec.CertPEM, c.rec.KeyPEM)
	switch {
	case err == nil:
		c.Published = "published"
	case errors.Is(err, output.ErrNotOwned), errors.Is(err, output.ErrOlder):
		c.Published = "not published: " + err.Error()
	default:
		c.Published = "not published: " + err.Error()
		return fmt.Errorf("publish: %w", err)
	}
	return nil
}
