package fetcher

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"sync"
	"time"

	"github.com/go-acme/lego/v4/challenge"

	"github.com/certfetch/certfetch/acme"
	"github.com/certfetch/certfetch/acme/dns01"
	"github.com/certfetch/certfetch/acme/http01"
	"github.com/certfetch/certfetch/fetcher/config"
	"github.com/certfetch/certfetch/fetcher/dnsprovider"
	"github.com/certfetch/certfetch/fetcher/metrics"
	"github.com/certfetch/certfetch/fetcher/store"
)

// resolver is one configured CA: its challenge solver, its ACME client (created on first
// use, since registering needs the CA) and its order slots.
type resolver struct {
	cfg        *config.Resolver
	store      *store.Store
	log        *slog.Logger
	metrics    *metrics.Metrics
	solver     challenge.Provider
	responders *responders // listen mode: where the solver came from
	slots      chan struct{}

	mu     sync.Mutex
	client *acme.Client
}

func newResolver(rc *config.Resolver, st *store.Store, rs *responders, log *slog.Logger, m *metrics.Metrics) (*resolver, error) {
	r := &resolver{cfg: rc, store: st, log: log.With("resolver", rc.Name), metrics: m, slots: make(chan struct{}, rc.MaxConcurrentOrders)}
	switch hc := rc.HTTPChallenge; {
	case rc.DNSChallenge != nil:
		solver, err := dnsSolver(rc, r.log)
		if err != nil {
			return nil, err
		}
		r.solver = solver
	case hc.Webroot != "":
		r.solver = http01.NewWebroot(hc.Webroot)
	case hc.Listen != "":
		responder, err := rs.acquire(hc.Listen)
		if err != nil {
			return nil, fmt.Errorf("resolver %s: httpChallenge.listen: %w", rc.Name, err)
		}
		r.solver, r.responders = responder, rs
	default:
		r.solver = http01.Stateless{}
	}
	return r, nil
}

// sameConfig reports whether rc would build the same resolver.
func (r *resolver) sameConfig(rc *config.Resolver) bool {
	return reflect.DeepEqual(r.cfg, rc)
}

// close gives back the resolver's share of its listen-mode responder.
func (r *resolver) close() {
	if r.responders != nil {
		r.responders.release(r.cfg.HTTPChallenge.Listen)
	}
}

// responderShutdown bounds how long closing a listen-mode responder waits for challenge
// requests in flight (a CA's validator sends tiny requests).
const responderShutdown = 5 * time.Second

// responders are the listen-mode HTTP-01 responders, one per address, shared by the
// resolvers that name the same httpChallenge.listen: tokens are unique, so one responder
// answers for every CA, and two resolvers on one address work (they used to fail with
// "address already in use"). A responder stays up while any resolver uses it, so a reload
// that rebuilds a resolver keeps the listener its orders in flight need. Safe for
// concurrent use.
type responders struct {
	log *slog.Logger

	mu     sync.Mutex
	byAddr map[string]*sharedResponder
}

type sharedResponder struct {
	r    *http01.Responder
	refs int
}

func newResponders(log *slog.Logger) *responders {
	return &responders{log: log, byAddr: map[string]*sharedResponder{}}
}

// acquire returns the responder listening on addr, starting it on first use.
func (rs *responders) acquire(addr string) (*http01.Responder, error) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if s := rs.byAddr[addr]; s != nil {
		s.refs++
		return s.r, nil
	}
	r := http01.NewResponder()
	if err := r.Listen(addr); err != nil {
		return nil, err
	}
	rs.byAddr[addr] = &sharedResponder{r: r, refs: 1}
	return r, nil
}

// release gives back one use of addr's responder and stops it after the last one.
func (rs *responders) release(addr string) {
	rs.mu.Lock()
	s := rs.byAddr[addr]
	if s == nil {
		rs.mu.Unlock()
		return
	}
	if s.refs--; s.refs > 0 {
		rs.mu.Unlock()
		return
	}
	delete(rs.byAddr, addr)
	rs.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), responderShutdown)
	defer cancel()
	if err := s.r.Close(ctx); err != nil {
		rs.log.Error("close HTTP-01 responder", "listen", addr, "err", err)
	}
}

// accountKeyMissingError is the error of a resolver whose account key is gone while the
// store still holds certificates it obtained: a new key would silently change the
// thumbprint the plugin answers with (and, with EAB, need a new binding).
type accountKeyMissingError struct {
	resolver, store string
	certificates    int
}

func (e *accountKeyMissingError) Error() string {
	return fmt.Sprintf("resolver %s: the account key is missing from %s, but %d certificates were obtained with it; "+
		"a new key would change the thumbprint the plugin answers with: restore the account from a backup, or run "+
		"`certfetch thumbprint --new-key %s` and put the new thumbprint into the plugin's configuration",
		e.resolver, e.store, e.certificates, e.resolver)
}

// AccountKey loads the resolver's account key from st, or creates one when the resolver
// has none yet. When the key is missing but the store holds certificates of the resolver
// (the account file was deleted), it refuses with an error saying what to do, unless
// newKey is set (`certfetch thumbprint --new-key`). `certfetch thumbprint` calls it
// before any issuance: the plugin's stateless mode needs the thumbprint before the first
// order.
func AccountKey(ctx context.Context, st *store.Store, rc *config.Resolver, newKey bool) (*store.Account, error) {
	acct, err := st.LoadAccount(ctx, rc.Name, rc.CAServer)
	if err == nil {
		return acct, nil
	}
	if !errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("resolver %s: %w", rc.Name, err)
	}
	if !newKey {
		n, err := certificatesOf(ctx, st, rc.Name)
		if err != nil {
			return nil, fmt.Errorf("resolver %s: %w", rc.Name, err)
		}
		if n > 0 {
			return nil, &accountKeyMissingError{resolver: rc.Name, store: st.String(), certificates: n}
		}
	}
	key, err := acme.GenerateKey(rc.KeyType)
	if err != nil {
		return nil, fmt.Errorf("resolver %s: %w", rc.Name, err)
	}
	// CreateAccount, not SaveAccount: instances sharing a store that start together must
	// agree on one key, hence on one thumbprint for the plugin. With newKey the old
	// record is replaced.
	fresh := &store.Account{Directory: rc.CAServer, KeyPEM: acme.MarshalKey(key)}
	if newKey {
		err = st.SaveAccount(ctx, rc.Name, fresh)
		acct = fresh
	} else {
		acct, err = st.CreateAccount(ctx, rc.Name, fresh)
	}
	if err != nil {
		return nil, fmt.Errorf("resolver %s: save account key: %w", rc.Name, err)
	}
	return acct, nil
}

// certificatesOf counts the stored certificates obtained through resolver.
func certificatesOf(ctx context.Context, st *store.Store, resolver string) (int, error) {
	recs, err := st.Certificates(ctx)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, rec := range recs {
		if rec.Resolver == resolver && len(rec.CertPEM) > 0 {
			n++
		}
	}
	return n, nil
}

// Thumbprint returns the JWK thumbprint of the resolver's account key (the plugin's
// thumbprint setting), creating the key as AccountKey does.
func Thumbprint(ctx context.Context, st *store.Store, rc *config.Resolver, newKey bool) (string, error) {
	acct, err := AccountKey(ctx, st, rc, newKey)
	if err != nil {
		return "", err
	}
	key, err := acme.ParseKey(acct.KeyPEM)
	if err != nil {
		return "", fmt.Errorf("resolver %s: account key: %w", rc.Name, err)
	}
	return acme.Thumbprint(key)
}

// acmeClient returns the resolver's client, registering the account at the CA on first
// use. Concurrent callers share one registration.
func (r *resolver) acmeClient(ctx context.Context) (*acme.Client, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.client != nil {
		return r.client, nil
	}
	acct, err := AccountKey(ctx, r.store, r.cfg, false)
	if err != nil {
		return nil, err
	}
	cfg, err := ACMEConfig(r.cfg, acct)
	if err != nil {
		return nil, err
	}
	cfg.RequestsPerSecond = r.cfg.RequestsPerSecond
	cfg.Journal = r.store.Journal()
	cfg.Solver = r.solver
	cfg.Logger = r.log
	cfg.OnOrderPoll = func() { r.metrics.OrderPoll(r.cfg.Name) }
	cfg.OnPhase = func(phase string, d time.Duration) { r.metrics.ObservePhase(r.cfg.Name, phase, d) }
	cfg.OnAccountURL = func(url string) { r.saveAccountURL(acct, url) }
	client, err := acme.NewClient(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("resolver %s: %w", r.cfg.Name, err)
	}
	if acct.URL != client.AccountURL() {
		acct.URL = client.AccountURL()
		if err := r.store.SaveAccount(ctx, r.cfg.Name, acct); err != nil {
			return nil, fmt.Errorf("resolver %s: save account: %w", r.cfg.Name, err)
		}
	}
	r.client = client
	return client, nil
}

// ACMEConfig returns the engine configuration of resolver rc acting for the stored account
// acct: the CA's directory, the account (key, stored URL, contact, External Account
// Binding), a transport that trusts rc's roots with rc's dial and TLS handshake timeouts,
// and rc's per-request timeouts. It contacts nothing and writes nothing.
//
// The caller completes the configuration with what depends on how the client is used:
// Journal (the store's journal for the daemon; a memory journal for a one-off run such as
// `certfetch probe`), Solver (see ChallengeSolver), Logger and the On* hooks. An empty
// acct.URL makes acme.NewClient register the key (or find the CA's existing account for
// it, RFC 8555 §7.3.1); persisting the URL it gets is the caller's business.
func ACMEConfig(rc *config.Resolver, acct *store.Account) (acme.Config, error) {
	key, err := acme.ParseKey(acct.KeyPEM)
	if err != nil {
		return acme.Config{}, fmt.Errorf("resolver %s: account key: %w", rc.Name, err)
	}
	transport, err := acme.NewTransport(acme.TransportOptions{
		RootCAFiles:         rc.CACertificates,
		SystemRoots:         rc.CASystemCertPool,
		DialTimeout:         rc.HTTP.DialTimeout,
		TLSHandshakeTimeout: rc.HTTP.TLSHandshakeTimeout,
	})
	if err != nil {
		return acme.Config{}, fmt.Errorf("resolver %s: %w", rc.Name, err)
	}
	account := acme.Account{Key: key, URL: acct.URL}
	if rc.Email != "" {
		account.Contact = []string{"mailto:" + rc.Email}
	}
	if rc.EAB != nil {
		account.EAB = &acme.EAB{KID: rc.EAB.KID, HMAC: rc.EAB.HMAC.Reveal()}
	}
	chal := challenge.HTTP01
	if rc.DNSChallenge != nil {
		chal = challenge.DNS01
	}
	return acme.Config{
		DirectoryURL:  rc.CAServer,
		Account:       account,
		Transport:     transport,
		Timeouts:      acme.Timeouts{ResponseHeader: rc.HTTP.ResponseHeaderTimeout, Request: rc.HTTP.RequestTimeout},
		ChallengeType: chal,
	}, nil
}

// dnsSolver builds the DNS-01 solver rc.DNSChallenge configures: lego's provider by name
// (with the configured variables), waiting for propagation as Traefik's options say. It
// contacts nothing: providers check their variables when constructed and use their
// credentials first when a record is presented.
func dnsSolver(rc *config.Resolver, log *slog.Logger) (*dns01.Solver, error) {
	dc := rc.DNSChallenge
	provider, err := dnsprovider.New(dc.Provider, dc.Env)
	if err != nil {
		return nil, fmt.Errorf("resolver %s: %w", rc.Name, err)
	}
	solver, err := dns01.New(dc.Provider, provider, dns01.Options{
		Resolvers:         dc.Resolvers,
		DelayBeforeChecks: dc.Propagation.DelayBeforeChecks,
		DisableChecks:     dc.Propagation.DisableChecks,
		DisableANSChecks:  dc.Propagation.DisableANSChecks,
		RequireAllRNS:     dc.Propagation.RequireAllRNS,
		Logger:            log,
	})
	if err != nil {
		return nil, fmt.Errorf("resolver %s: %w", rc.Name, err)
	}
	return solver, nil
}

// accountSaveTimeout bounds saving an account URL the CA handed out again.
const accountSaveTimeout = 10 * time.Second

// saveAccountURL stores the URL of the account registered again after the CA forgot it.
// A failure is logged: the client goes on with the new URL, and the next start registers
// once more (same key, same account).
func (r *resolver) saveAccountURL(acct *store.Account, url string) {
	ctx, cancel := context.WithTimeout(context.Background(), accountSaveTimeout)
	defer cancel()
	updated := *acct
	updated.URL = url
	if err := r.store.SaveAccount(ctx, r.cfg.Name, &updated); err != nil {
		r.log.Error("cannot save the account URL the CA handed out again", "account", url, "err", err)
	}
}
