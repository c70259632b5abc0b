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
	"github.com/certfetch/certfetch/acme/http01"
	"github.com/certfetch/certfetch/fetcher/config"
	"github.com/certfetch/certfetch/fetcher/metrics"
	"github.com/certfetch/certfetch/fetcher/store"
)

// responderShutdown bounds how long closing a listen-mode responder waits
// for challenge requests in flight (a CA's validator sends tiny requests).
const responderShutdown = 5 * time.Second

// resolver is one configured CA: its challenge solver, its ACME client
// (created on first use, since registering needs the CA) and its order slots.
type resolver struct {
	cfg       *config.Resolver
	store     *store.Store
	log       *slog.Logger
	metrics   *metrics.Metrics
	solver    challenge.Provider
	responder *http01.Responder // listen mode only
	slots     chan struct{}

	mu     sync.Mutex
	client *acme.Client
}

func newResolver(rc *config.Resolver, st *store.Store, log *slog.Logger, m *metrics.Metrics) (*resolver, error) {
	r := &resolver{cfg: rc, store: st, log: log.With("resolver", rc.Name), metrics: m, slots: make(chan struct{}, rc.MaxConcurrentOrders)}
	switch hc := rc.HTTPChallenge; {
	case hc.Webroot != "":
		r.solver = http01.NewWebroot(hc.Webroot)
	case hc.Listen != "":
		r.responder = http01.NewResponder()
		if err := r.responder.Listen(hc.Listen); err != nil {
			return nil, fmt.Errorf("resolver %s: httpChallenge.listen: %w", rc.Name, err)
		}
		r.solver = r.responder
	default:
		r.solver = http01.Stateless{}
	}
	return r, nil
}

// sameConfig reports whether rc would build the same resolver.
func (r *resolver) sameConfig(rc *config.Resolver) bool {
	return reflect.DeepEqual(r.cfg, rc)
}

func (r *resolver) close() {
	if r.responder == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), responderShutdown)
	defer cancel()
	if err := r.responder.Close(ctx); err != nil {
		r.log.Error("close HTTP-01 responder", "err", err)
	}
}

// AccountKey loads the resolver's account key from st, or generates and
// stores one. `certfetch thumbprint` calls it before any issuance: the
// plugin's stateless mode needs the thumbprint before the first order.
func AccountKey(ctx context.Context, st *store.Store, rc *config.Resolver) (*store.Account, error) {
	acct, err := st.LoadAccount(ctx, rc.Name, rc.CAServer)
	if err == nil {
		return acct, nil
	}
	if !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	key, err := acme.GenerateKey(rc.KeyType)
	if err != nil {
		return nil, fmt.Errorf("resolver %s: %w", rc.Name, err)
	}
	// CreateAccount, not SaveAccount: instances sharing a store that start
	// together must agree on one key, hence on one thumbprint for the plugin.
	acct, err = st.CreateAccount(ctx, rc.Name, &store.Account{Directory: rc.CAServer, KeyPEM: acme.MarshalKey(key)})
	if err != nil {
		return nil, fmt.Errorf("resolver %s: save account key: %w", rc.Name, err)
	}
	return acct, nil
}

// Thumbprint returns the JWK thumbprint of the resolver's account key (the
// plugin's thumbprint setting), creating the key when there is none yet.
func Thumbprint(ctx context.Context, st *store.Store, rc *config.Resolver) (string, error) {
	acct, err := AccountKey(ctx, st, rc)
	if err != nil {
		return "", err
	}
	key, err := acme.ParseKey(acct.KeyPEM)
	if err != nil {
		return "", fmt.Errorf("resolver %s: account key: %w", rc.Name, err)
	}
	return acme.Thumbprint(key)
}

// acmeClient returns the resolver's client, registering the account at the
// CA on first use. Concurrent callers share one registration.
func (r *resolver) acmeClient(ctx context.Context) (*acme.Client, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.client != nil {
		return r.client, nil
	}
	acct, err := AccountKey(ctx, r.store, r.cfg)
	if err != nil {
		return nil, err
	}
	key, err := acme.ParseKey(acct.KeyPEM)
	if err != nil {
		return nil, fmt.Errorf("resolver %s: account key: %w", r.cfg.Name, err)
	}
	transport, err := acme.NewTransport(acme.TransportOptions{
		RootCAFiles:         r.cfg.CACertificates,
		SystemRoots:         r.cfg.CASystemCertPool,
		DialTimeout:         r.cfg.HTTP.DialTimeout,
		TLSHandshakeTimeout: r.cfg.HTTP.TLSHandshakeTimeout,
	})
	if err != nil {
		return nil, fmt.Errorf("resolver %s: %w", r.cfg.Name, err)
	}
	account := acme.Account{Key: key, URL: acct.URL}
	if r.cfg.Email != "" {
		account.Contact = []string{"mailto:" + r.cfg.Email}
	}
	if r.cfg.EAB != nil {
		account.EAB = &acme.EAB{KID: r.cfg.EAB.KID, HMAC: r.cfg.EAB.HMAC.Reveal()}
	}
	client, err := acme.NewClient(ctx, acme.Config{
		DirectoryURL: r.cfg.CAServer,
		Account:      account,
		Transport:    transport,
		Timeouts:     acme.Timeouts{ResponseHeader: r.cfg.HTTP.ResponseHeaderTimeout, Request: r.cfg.HTTP.RequestTimeout},
		Journal:      r.store.Journal(),
		Solver:       r.solver,
		Logger:       r.log,
		OnOrderPoll:  func() { r.metrics.OrderPoll(r.cfg.Name) },
	})
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
