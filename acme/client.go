// Package acme is certfetch's ACME order engine on lego v4.
//
// lego provides the protocol (JWS, nonces, directory, typed problems, keys, CSRs, chains,
// ARI); this package adds what lego v4 cannot do: every wait honours a context (the order
// deadline), polls follow the CA's Retry-After, finalize may take as long as the deadline
// allows, and an order outlives the attempt that created it. A Journal records each order
// before any step after new-order; when the deadline passes, Obtain returns
// *OrderPendingError and the next Obtain for the same Request resumes the order where the
// CA is, instead of creating another one. The journal keeps the order, and then the
// certificate it produced, until the caller says it has stored that certificate
// (Collected): nothing the CA issued is ever dropped.
//
// No lego type appears in this package's API, so that a move to lego v5 stays inside it.
//
// Limits: lego retries a badNonce answer itself, pausing up to 5 s between tries without
// seeing the context, so an attempt can end up to one such pause after its deadline.
// Obtain calls for one request are serialized within one Client; processes sharing a
// Journal must make sure only one of them works on a request at a time.
//
// DNS-01: Config.Solver is then an acme/dns01 Solver around one of lego's DNS providers.
// The engine waits for the record to propagate (PropagationWaiter) within the order's
// deadline before it asks the CA to validate, solves one authorization at a time for
// providers that need it (SequentialSolver: "*.example.com" and "example.com" share one
// record name), and journals every record before presenting it (Record.Presented), so that
// records are removed after success, failure and deadline alike, and after a crash by
// CleanUpLeftovers or the next Obtain.
package acme

import (
	"cmp"
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	legoacme "github.com/go-acme/lego/v4/acme"
	"github.com/go-acme/lego/v4/acme/api"
	"github.com/go-acme/lego/v4/certcrypto"
	"github.com/go-acme/lego/v4/certificate"
	"github.com/go-acme/lego/v4/challenge"

	"github.com/certfetch/certfetch/internal/wait"
)

// defaultOrderTimeout bounds Obtain when its context has no deadline: finalize requests
// are exempt from the per-request timeouts, so something must bound them; 10 minutes is
// far above what any CA we know needs, and an expired attempt loses nothing (it resumes).
const defaultOrderTimeout = 10 * time.Minute

// Order phases reported to Config.OnPhase.
const (
	PhaseNewOrder      = "new_order"     // the newOrder request
	PhaseAuthorization = "authorization" // publishing challenges until every authorization is valid
	PhaseFinalize      = "finalize"      // from the finalize request until the order is valid
	PhaseDownload      = "download"      // fetching and checking the certificate
)

// Config configures a Client.
type Config struct {
	// DirectoryURL of the CA; required, https.
	DirectoryURL string
	// Account to act for; Account.Key is required.
	Account Account
	// Transport carries the requests (nil: NewTransport with the system roots). The Client
	// applies Timeouts per request itself.
	Transport http.RoundTripper
	// Timeouts per request; zero fields take the defaults.
	Timeouts Timeouts
	// RequestsPerSecond limits the requests this Client sends to the CA, over all its
	// attempts together, so that a large fleet cannot flood a CA; 0: no limit. Answers the
	// Client gives from its cache (the directory, pooled nonces) do not count.
	RequestsPerSecond float64
	// Journal keeps live orders across attempts (nil: a MemoryJournal).
	Journal Journal
	// Solver publishes challenges; required. It is lego's challenge.Provider; for
	// ChallengeType dns-01 use an acme/dns01 Solver, which waits for propagation.
	Solver challenge.Provider
	// ChallengeType the Solver answers; default http-01.
	ChallengeType challenge.Type
	// OrderTimeout bounds an Obtain whose context has no deadline; default 10 minutes.
	OrderTimeout time.Duration
	// UserAgent prefix for requests; default "certfetch".
	UserAgent string
	// Logger for progress; nil discards. Keys and EAB secrets are never logged.
	Logger *slog.Logger
	// OnOrderPoll, when set, is called after every read of an order's status (for
	// metrics). OnPhaseStart, when set, is called when a phase of an order starts in an
	// attempt, before its first request; OnPhase, when set, is called when it completes,
	// with its duration in this attempt. A phase that is not needed is not reported (an
	// order whose authorizations were already valid has no authorization phase; an order
	// resumed while processing has no finalize start). OnRequest, when set, is called for
	// every request that reached the CA once its response headers arrived or it failed
	// (see RequestInfo). OnAccountURL, when set, is called with the new account URL after
	// the Client registered its key again because the CA had forgotten the account (store
	// it: it replaces Account.URL). They run on the goroutine of the operation (Obtain,
	// NewClient, ReadDirectory): they must be quick and safe for concurrent use.
	OnOrderPoll  func()
	OnPhaseStart func(phase string)
	OnPhase      func(phase string, d time.Duration)
	OnRequest    func(RequestInfo)
	OnAccountURL func(url string)
}

// Client obtains certificates from one CA for one account. It is safe for concurrent use:
// Obtain calls for different requests run in parallel, calls for the same request
// (Request.Key) run one after the other.
type Client struct {
	dirURL       string
	userAgent    string
	transport    http.RoundTripper
	timeouts     Timeouts
	cache        *caCache
	account      Account
	thumbprint   string
	journal      Journal
	solver       challenge.Provider
	chalType     challenge.Type
	orderTimeout time.Duration
	log          *slog.Logger
	onOrderPoll  func()
	onPhaseStart func(string)
	onPhase      func(string, time.Duration)
	onRequest    func(RequestInfo)
	onAccountURL func(string)
	locks        keyLocks

	// registering admits one re-registration at a time (reregister).
	registering chan struct{}

	mu         sync.Mutex
	accountURL string
	// registrations counts the re-registrations, so that attempts that found the account
	// gone together register it once.
	registrations int
}

// Certificate is an issued certificate with its private key.
type Certificate struct {
	// Names the certificate was ordered for.
	Names []string
	// PrivateKeyPEM is the certificate's private key.
	PrivateKeyPEM []byte
	// ChainPEM is the leaf followed by the intermediates of the chosen chain.
	ChainPEM []byte
	// Leaf is the parsed leaf certificate.
	Leaf *x509.Certificate
	// URL of the certificate at the CA, and OrderURL of the order that issued it.
	URL      string
	OrderURL string
	// RequestKey is Request.Key() of the request it was obtained for (see Collected).
	RequestKey string
}

// session is one operation's view of the CA: a lego Core bound to the operation's context
// through an exchange. The Core's directory read and first nonce usually come from the
// Client's cache; a Core per operation is what lets context-free lego calls be cancelled
// by that operation's context alone.
type session struct {
	ex   *exchange
	core *api.Core
}

func (c *Client) newSession(ctx context.Context, kid string) (*session, error) {
	ex := newExchange(ctx, c.transport, c.timeouts, c.cache, c.onRequest)

	core, err := api.New(ex.client(), c.userAgent, c.dirURL, kid, c.account.Key)
	if err != nil {
		return nil, classify("acme: read directory "+c.dirURL, err)
	}

	return &session{ex: ex, core: core}, nil
}

// NewClient checks the configuration, reads the CA's directory and registers the account
// (unless cfg.Account.URL is set). ctx bounds only this setup.
func NewClient(ctx context.Context, cfg Config) (*Client, error) {
	switch {
	case cfg.DirectoryURL == "":
		return nil, errors.New("acme: new client: no directory URL")
	case cfg.Account.Key == nil:
		return nil, errors.New("acme: new client: no account key")
	case cfg.Solver == nil:
		return nil, errors.New("acme: new client: no challenge solver")
	}

	tp, err := Thumbprint(cfg.Account.Key)
	if err != nil {
		return nil, err
	}

	c := &Client{
		dirURL:       cfg.DirectoryURL,
		userAgent:    cmp.Or(cfg.UserAgent, "certfetch"),
		transport:    cfg.Transport,
		timeouts:     cfg.Timeouts,
		cache:        newCACache(cfg.DirectoryURL, cfg.RequestsPerSecond),
		account:      cfg.Account,
		accountURL:   cfg.Account.URL,
		thumbprint:   tp,
		journal:      cfg.Journal,
		solver:       cfg.Solver,
		chalType:     challenge.Type(cmp.Or(string(cfg.ChallengeType), string(challenge.HTTP01))),
		orderTimeout: orDefault(cfg.OrderTimeout, defaultOrderTimeout),
		log:          cfg.Logger,
		onOrderPoll:  cfg.OnOrderPoll,
		onPhaseStart: cfg.OnPhaseStart,
		onPhase:      cfg.OnPhase,
		onRequest:    cfg.OnRequest,
		onAccountURL: cfg.OnAccountURL,
		registering:  make(chan struct{}, 1),
	}

	if c.journal == nil {
		c.journal = NewMemoryJournal()
	}

	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}

	if c.transport == nil {
		if c.transport, err = NewTransport(TransportOptions{}); err != nil {
			return nil, err
		}
	}

	if c.accountURL != "" {
		return c, nil
	}

	if c.accountURL, err = c.register(ctx); err != nil {
		return nil, err
	}

	c.log.Info("ACME account ready", "directory", c.dirURL, "account", c.accountURL)

	return c, nil
}

// AccountURL returns the account's URL at the CA.
func (c *Client) AccountURL() string {
	c.mu.Lock()
	defer c.mu.Unlock()

	return c.accountURL
}

// Thumbprint returns base64url(SHA-256 JWK thumbprint, RFC 7638) of the account key: what
// the plugin's stateless (thumbprint) mode appends to a token to answer HTTP-01.
func (c *Client) Thumbprint() string { return c.thumbprint }

// Obtain gets a certificate for req. ctx carries the order deadline (without one,
// Config.OrderTimeout applies): every request and every wait ends with it.
//
// Obtain first resumes the order journaled for req.Key(): a certificate it already
// downloaded is returned at once (the caller had not confirmed storing it); an order the
// CA still has live is driven on (valid: download; processing: poll; ready: finalize with
// the journaled CSR; pending: continue the authorizations); an invalid, expired or
// unknown order is forgotten. Else it creates an order and journals it before any other
// step. Concurrent calls for the same key run one after the other, so there are never two
// live orders for one request. The returned certificate has been checked against the
// journaled key and req's names; it stays journaled until the caller calls Collected.
//
// A CA that no longer knows the account (accountDoesNotExist) gets the account key
// registered again, once per call, and the attempt goes on (Config.OnAccountURL).
//
// Errors: *OrderPendingError when ctx ends while the order is alive (it stays journaled);
// *RateLimitError, *UnreachableError, *AuthorizationError, *OrderInvalidError,
// *CertificateMismatchError, *AccountError as documented on each; a context error when ctx
// ends before any order exists.
func (c *Client) Obtain(ctx context.Context, req Request) (*Certificate, error) {
	if err := req.validate(); err != nil {
		return nil, fmt.Errorf("acme: obtain %v: %w", req.Names, err)
	}

	req.Names = normalizeNames(req.Names)

	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc

		ctx, cancel = context.WithTimeout(ctx, c.orderTimeout)
		defer cancel()
	}

	key := req.Key()

	unlock, err := c.locks.lock(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("acme: obtain %v: wait for the attempt in progress: %w", req.Names, err)
	}
	defer unlock()

	seen := c.registrationCount()

	cert, err := c.attempt(ctx, req, key)
	if !accountGone(err) {
		return cert, err
	}

	if err := c.reregister(ctx, seen, err); err != nil {
		return nil, err
	}

	cert, err = c.attempt(ctx, req, key)
	if accountGone(err) {
		return nil, &AccountError{URL: c.AccountURL(), Err: err}
	}

	return cert, err
}

// attempt is one run of the order state machine for req in a new session.
func (c *Client) attempt(ctx context.Context, req Request, key string) (*Certificate, error) {
	s, err := c.newSession(ctx, c.AccountURL())
	if err != nil {
		return nil, err
	}

	r := &run{c: c, s: s, ctx: ctx, req: req, key: key, log: c.log.With("names", req.Names, "request", key)}

	cert, err := r.obtain()
	if err != nil && ctx.Err() != nil && r.rec != nil {
		return nil, &OrderPendingError{OrderURL: r.rec.OrderURL, Status: r.status, RetryAfter: r.retryAfter, Err: ctx.Err()}
	}

	return cert, err
}

// Collected tells the engine that the caller has stored cert durably: the journal forgets
// the order that produced it. Until then the journal keeps the order and its certificate,
// so that a crash between download and storing loses nothing. A journal that meanwhile
// holds another order for the same request (a newer one) is left alone.
func (c *Client) Collected(ctx context.Context, cert *Certificate) error {
	unlock, err := c.locks.lock(ctx, cert.RequestKey)
	if err != nil {
		return fmt.Errorf("acme: forget order %s: %w", cert.OrderURL, err)
	}
	defer unlock()

	rec, err := c.journal.Load(ctx, cert.RequestKey)
	if errors.Is(err, ErrNoRecord) {
		return nil
	}

	if err != nil {
		return fmt.Errorf("acme: forget order %s: %w", cert.OrderURL, err)
	}

	if rec.OrderURL != cert.OrderURL {
		return nil
	}

	if err := c.journal.Delete(ctx, cert.RequestKey); err != nil {
		return fmt.Errorf("acme: forget order %s: %w", cert.OrderURL, err)
	}

	return nil
}

// ARICertID returns the ARI certificate ID (RFC 9773 §4.1) of the first certificate in
// certPEM: the value of Request.Replaces for its renewal.
func ARICertID(certPEM []byte) (string, error) {
	leaf, err := certcrypto.ParsePEMCertificate(certPEM)
	if err != nil {
		return "", fmt.Errorf("acme: ARI certificate ID: %w", err)
	}

	id, err := certificate.MakeARICertID(leaf)
	if err != nil {
		return "", fmt.Errorf("acme: ARI certificate ID: %w", err)
	}

	return id, nil
}

// RenewalInfo fetches the CA's ARI renewal window (RFC 9773) for the first certificate in
// certPEM. A CA without ARI returns an error wrapping ErrNoRenewalInfo.
func (c *Client) RenewalInfo(ctx context.Context, certPEM []byte) (*RenewalWindow, error) {
	leaf, err := certcrypto.ParsePEMCertificate(certPEM)
	if err != nil {
		return nil, fmt.Errorf("acme: renewal info: %w", err)
	}

	s, err := c.newSession(ctx, c.AccountURL())
	if err != nil {
		return nil, err
	}

	// The resolver is only used for issuance; GetRenewalInfo does not touch it.
	info, err := certificate.NewCertifier(s.core, nil, certificate.CertifierOptions{}).
		GetRenewalInfo(certificate.RenewalInfoRequest{Cert: leaf})

	switch {
	case errors.Is(err, api.ErrNoARI):
		return nil, fmt.Errorf("acme: renewal info for serial %s: %w", leaf.SerialNumber.Text(16), ErrNoRenewalInfo)
	case err != nil:
		return nil, classify("acme: renewal info for serial "+leaf.SerialNumber.Text(16), err)
	}

	return &RenewalWindow{
		Start:          info.SuggestedWindow.Start,
		End:            info.SuggestedWindow.End,
		RetryAfter:     info.RetryAfter,
		ExplanationURL: info.ExplanationURL,
	}, nil
}

// registerRetries and registerRetryWait: a new-account request is idempotent for one key
// (the CA returns the existing account), so a 5xx answer is worth a short retry. Seen
// with Pebble when two instances register the same key at once ("Error saving account");
// a real CA behind a load balancer fails over the same way.
const (
	registerRetries   = 3
	registerRetryWait = time.Second
)

// register creates (or finds, for a known key) the account at the CA, agreeing to its
// terms, and returns the account URL.
func (c *Client) register(ctx context.Context) (string, error) {
	var err error

	for try := 1; ; try++ {
		var url string
		if url, err = c.registerOnce(ctx); err == nil {
			return url, nil
		}

		var ue *UnreachableError
		if !errors.As(err, &ue) || try == registerRetries {
			return "", err
		}

		if serr := wait.Sleep(ctx, time.Duration(try)*registerRetryWait); serr != nil {
			return "", err
		}
	}
}

func (c *Client) registerOnce(ctx context.Context) (string, error) {
	s, err := c.newSession(ctx, "")
	if err != nil {
		return "", err
	}

	msg := legoacme.Account{TermsOfServiceAgreed: true, Contact: c.account.Contact}
	op := "acme: register account at " + c.dirURL

	var ext legoacme.ExtendedAccount

	if c.account.EAB == nil {
		ext, err = s.core.Accounts.New(msg)
	} else {
		op += fmt.Sprintf(" with external account binding (kid %q)", c.account.EAB.KID)
		ext, err = s.core.Accounts.NewEAB(msg, c.account.EAB.KID, c.account.EAB.HMAC)
	}

	if err != nil {
		return "", classify(op, err)
	}

	if ext.Location == "" {
		return "", errors.New(op + ": the CA returned no account URL")
	}

	return ext.Location, nil
}

func (c *Client) registrationCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()

	return c.registrations
}

// reregister registers the account key again after the CA forgot the account (gone is
// its answer to an attempt that started after seen re-registrations), and hands the new
// URL to Config.OnAccountURL. Attempts that find the account gone together register it
// once: a re-registration since seen is taken as done.
func (c *Client) reregister(ctx context.Context, seen int, gone error) error {
	select {
	case c.registering <- struct{}{}:
	case <-ctx.Done():
		return &AccountError{URL: c.AccountURL(), Err: errors.Join(gone, ctx.Err())}
	}
	defer func() { <-c.registering }()

	if c.registrationCount() != seen {
		return nil
	}

	c.log.Warn("the CA no longer knows the account; registering the account key again", "account", c.AccountURL(), "err", gone)

	url, err := c.register(ctx)
	if err != nil {
		return &AccountError{URL: c.AccountURL(), Err: err}
	}

	c.mu.Lock()
	c.accountURL = url
	c.registrations++
	c.mu.Unlock()

	c.log.Info("ACME account registered again", "directory", c.dirURL, "account", url)

	if c.onAccountURL != nil {
		c.onAccountURL(url)
	}

	return nil
}

// phaseStart reports the start of a phase to Config.OnPhaseStart.
func (c *Client) phaseStart(name string) {
	if c.onPhaseStart != nil {
		c.onPhaseStart(name)
	}
}

// phase reports a completed phase to Config.OnPhase.
func (c *Client) phase(name string, start time.Time) {
	if c.onPhase != nil {
		c.onPhase(name, time.Since(start))
	}
}

// publicKeyEqual reports whether the public key of key is pub.
func publicKeyEqual(key crypto.Signer, pub crypto.PublicKey) bool {
	k, ok := key.Public().(interface{ Equal(x crypto.PublicKey) bool })

	return ok && k.Equal(pub)
}
