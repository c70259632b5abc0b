// Package acme is certfetch's ACME order engine on lego v4.
//
// lego provides the protocol (JWS, nonces, directory, typed problems, keys, CSRs, chains,
// ARI); this package adds what lego v4 cannot do: every wait honours a context (the order
// deadline), polls follow the CA's Retry-After, finalize may take as long as the deadline
// allows, and an order outlives the attempt that created it. A Journal records each order
// before any step after new-order; when the deadline passes, Obtain returns
// *OrderPendingError and the next Obtain for the same Request resumes the order where the
// CA is, instead of creating another one.
//
// Limits: lego retries a badNonce answer itself, pausing up to 5 s between tries without
// seeing the context, so an attempt can end up to one such pause after its deadline.
// Obtain calls for one request are serialized within one Client; processes sharing a
// Journal must make sure only one of them works on a request at a time. DNS-01 solvers
// (lego's DNS providers) fit Config.Solver, but the engine does not wait for DNS
// propagation before it asks the CA to validate.
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
	"slices"
	"strings"
	"time"

	"github.com/go-acme/lego/v4/acme/api"
	"github.com/go-acme/lego/v4/certcrypto"
	"github.com/go-acme/lego/v4/certificate"
	"github.com/go-acme/lego/v4/challenge"
)

// defaultOrderTimeout bounds Obtain when its context has no deadline: finalize requests
// are exempt from the per-request timeouts, so something must bound them; 10 minutes is
// far above what any CA we know needs, and an expired attempt loses nothing (it resumes).
const defaultOrderTimeout = 10 * time.Minute

// Config configures a Client.
type Config struct {
	// DirectoryURL of the CA; required, https.
	DirectoryURL string
	// Account to act for; Account.Key is required.
	Account Account
	// HTTPClient's Transport carries the requests (nil: NewHTTPClient with system roots).
	// Only the Transport is used: the Client applies Timeouts per request itself.
	HTTPClient *http.Client
	// Timeouts per request; zero fields take the defaults.
	Timeouts Timeouts
	// Journal keeps live orders across attempts (nil: a MemoryJournal).
	Journal Journal
	// Solver publishes challenges; required. It is lego's challenge.Provider, so lego's
	// DNS-01 providers fit with ChallengeType dns-01.
	Solver challenge.Provider
	// ChallengeType the Solver answers; default http-01.
	ChallengeType challenge.Type
	// OrderTimeout bounds an Obtain whose context has no deadline; default 10 minutes.
	OrderTimeout time.Duration
	// UserAgent prefix for requests; default "certfetch".
	UserAgent string
	// Logger for progress; nil discards. Keys and EAB secrets are never logged.
	Logger *slog.Logger
	// OnOrderPoll, when set, is called after every read of an order's status
	// (for metrics). It runs on the Obtain goroutine: it must be quick and
	// safe for concurrent use.
	OnOrderPoll func()
}

// Client obtains certificates from one CA for one account. It is safe for concurrent use:
// Obtain calls for different requests run in parallel, calls for the same request
// (Request.Key) run one after the other.
type Client struct {
	dirURL       string
	userAgent    string
	transport    http.RoundTripper
	timeouts     Timeouts
	key          crypto.Signer
	accountURL   string
	thumbprint   string
	journal      Journal
	solver       challenge.Provider
	chalType     challenge.Type
	orderTimeout time.Duration
	log          *slog.Logger
	onOrderPoll  func()
	locks        keyLocks
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
}

// session is one operation's view of the CA: a lego Core bound to the operation's context
// through an exchange. A Core per operation costs one directory GET, and is what lets
// context-free lego calls be cancelled by that operation's context alone.
type session struct {
	ex   *exchange
	core *api.Core
}

func (c *Client) newSession(ctx context.Context, kid string) (*session, error) {
	ex := newExchange(ctx, c.transport, c.timeouts)

	core, err := api.New(ex.client(), c.userAgent, c.dirURL, kid, c.key)
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
		timeouts:     cfg.Timeouts,
		key:          cfg.Account.Key,
		accountURL:   cfg.Account.URL,
		thumbprint:   tp,
		journal:      cfg.Journal,
		solver:       cfg.Solver,
		chalType:     challenge.Type(cmp.Or(string(cfg.ChallengeType), string(challenge.HTTP01))),
		orderTimeout: orDefault(cfg.OrderTimeout, defaultOrderTimeout),
		log:          cfg.Logger,
		onOrderPoll:  cfg.OnOrderPoll,
	}

	if c.journal == nil {
		c.journal = NewMemoryJournal()
	}

	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}

	if cfg.HTTPClient == nil {
		hc, err := NewHTTPClient(HTTPOptions{})
		if err != nil {
			return nil, err
		}

		cfg.HTTPClient = hc
	}

	c.transport = cfg.HTTPClient.Transport

	if c.accountURL != "" {
		return c, nil
	}

	s, err := c.newSession(ctx, "")
	if err != nil {
		return nil, err
	}

	if c.accountURL, err = c.register(s, cfg.Account); err != nil {
		return nil, err
	}

	c.log.Info("ACME account ready", "directory", c.dirURL, "account", c.accountURL)

	return c, nil
}

// AccountURL returns the account's URL at the CA.
func (c *Client) AccountURL() string { return c.accountURL }

// Thumbprint returns base64url(SHA-256 JWK thumbprint, RFC 7638) of the account key: what
// the plugin's stateless (thumbprint) mode appends to a token to answer HTTP-01.
func (c *Client) Thumbprint() string { return c.thumbprint }

// Obtain gets a certificate for req. ctx carries the order deadline (without one,
// Config.OrderTimeout applies): every request and every wait ends with it.
//
// Obtain first resumes the order journaled for req.Key(), if the CA still has it live
// (valid: download; processing: poll; ready: finalize with the journaled CSR; pending:
// continue the authorizations); an invalid, expired or unknown order is forgotten. Else it
// creates an order and journals it before any other step. Concurrent calls for the same key
// run one after the other, so there are never two live orders for one request.
//
// Errors: *OrderPendingError when ctx ends while the order is alive (it stays journaled);
// *RateLimitError, *UnreachableError, *AuthorizationError, *OrderInvalidError as documented
// on each; a context error when ctx ends before any order exists.
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

	s, err := c.newSession(ctx, c.accountURL)
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

// normalizeNames lower-cases and trims names and drops repeats, keeping the first
// occurrence's position (the first name becomes the common name).
func normalizeNames(names []string) []string {
	out := make([]string, 0, len(names))
	for _, n := range names {
		n = strings.ToLower(strings.TrimSpace(n))
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}

	return out
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
// certPEM. The result's ShouldRenewAt picks the renewal time; its RetryAfter is when to
// ask again. A CA without ARI returns an error wrapping api.ErrNoARI.
func (c *Client) RenewalInfo(ctx context.Context, certPEM []byte) (*certificate.RenewalInfoResponse, error) {
	leaf, err := certcrypto.ParsePEMCertificate(certPEM)
	if err != nil {
		return nil, fmt.Errorf("acme: renewal info: %w", err)
	}

	s, err := c.newSession(ctx, c.accountURL)
	if err != nil {
		return nil, err
	}

	// The resolver is only used for issuance; GetRenewalInfo does not touch it.
	info, err := certificate.NewCertifier(s.core, nil, certificate.CertifierOptions{}).
		GetRenewalInfo(certificate.RenewalInfoRequest{Cert: leaf})
	if err != nil {
		return nil, classify("acme: renewal info for serial "+leaf.SerialNumber.Text(16), err)
	}

	return info, nil
}
