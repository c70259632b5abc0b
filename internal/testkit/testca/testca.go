// Package testca runs a complete ACME certificate authority in-process, for
// tests and for the `certfetch demo` command: Pebble (github.com/letsencrypt/
// pebble/v2) behind a wrapper that can make it slow like the private CAs
// certfetch exists for, and that injects the faults a robust client must
// survive (rate limits, outages, vanished orders, ARI renewal windows).
//
// Everything listens on loopback only. The package does not depend on package
// testing: Start takes Options and returns errors, Close releases everything.
//
// Pebble v2.10.3 reads some settings only from environment variables, inside
// its constructors. Start sets PEBBLE_VA_NOSLEEP=1, PEBBLE_VA_ALWAYS_VALID,
// PEBBLE_WFE_NONCEREJECT and PEBBLE_AUTHZREUSE from Options (and unsets
// PEBBLE_VA_SLEEPTIME and PEBBLE_WFE_ORDERS_PER_PAGE) while it builds Pebble,
// under a package lock, then restores them: the caller's environment does not
// leak into the CA, and the CA's settings do not leak out of Start. Code that
// reads those variables concurrently with Start may see the temporary values.
//
// Pebble's validation authority resolves every name through a DNS server
// (package loopbackdns) that answers 127.0.0.1, so HTTP-01 validation dials
// 127.0.0.1:Options.HTTPPort whatever the domain. Bind your challenge
// listener first (port 0), then pass its port: no free-port race. With
// Options.DNSServer it resolves through that server instead, so DNS-01 is
// validated against the TXT records a real DNS server serves.
//
// Profiles: the CA offers DefaultProfile (90-day certificates),
// ShortLivedProfile (6-day certificates) and MinuteProfile (60-second
// certificates, so that renewal tests need not fake the clock), all in the
// directory's meta.profiles. An order that names no profile gets
// DefaultProfile, deterministically (Pebble alone would pick one at random).
// ARI (renewalInfo) answers Pebble's windows, except for certificates valid
// an hour or less, such as MinuteProfile's: see shortARI.
//
// Faults a robust client must survive, switched at run time: SetUnavailable
// (503), RateLimitNewOrders (429), ForgetOrder (404), ForgetAccount
// (accountDoesNotExist), IssueForAnotherKey (a certificate whose key is not
// the CSR's), KeepFailedChallengesPending (failed validations stay pending
// with an error, as step-ca keeps them), SetRenewalWindow (ARI). HoldNext
// stops a request of a given kind inside the CA, so that a test can kill the
// client at a precise step of an order.
package testca

import (
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/letsencrypt/pebble/v2/ca"
	"github.com/letsencrypt/pebble/v2/db"

	"github.com/certfetch/certfetch/internal/testkit/loopbackdns"
)

// SlowMode selects how the CA behaves after a successful finalize.
type SlowMode int

const (
	// Instant passes Pebble through: the certificate is ready at once.
	Instant SlowMode = iota
	// Async answers finalize at once, then reports the order as "processing"
	// (no certificate URL, Retry-After if Options.RetryAfter > 0) until Delay
	// has passed since the finalize.
	Async
	// Sync holds the finalize response for Delay, then answers with the
	// order as it is then (valid, with its certificate URL). Polls made in the
	// meantime read "processing" as in Async, and the order completes at
	// finalize+Delay even if the finalizing client gave up earlier.
	Sync
)

// String names the mode for logs and test names.
func (m SlowMode) String() string {
	switch m {
	case Instant:
		return "instant"
	case Async:
		return "async"
	case Sync:
		return "sync"
	default:
		return fmt.Sprintf("SlowMode(%d)", int(m))
	}
}

// Profile names and the validity of the certificates they issue.
const (
	DefaultProfile            = "default"
	ShortLivedProfile         = "shortlived"
	MinuteProfile             = "minute"
	DefaultProfileValidity    = 90 * 24 * time.Hour // what public CAs issue today
	ShortLivedProfileValidity = 6 * 24 * time.Hour  // like Let's Encrypt's "shortlived" (160 h)
	// MinuteProfileValidity: NotAfter is NotBefore + 59 s (inclusive, RFC
	// 5280), NotBefore is the moment of issuance (Pebble does not backdate).
	MinuteProfileValidity = 60 * time.Second
)

// TLSRootFileName is the file WriteTLSRoot writes.
const TLSRootFileName = "acme-server-root.pem"

// Options configures Start. The zero value plus AlwaysValid (or HTTPPort) is
// a fast, deterministic, instant CA.
type Options struct {
	Mode SlowMode
	// Delay is how long the CA needs after finalize (the case reported to
	// Traefik: 42s). Ignored in Instant mode. Must not be negative.
	Delay time.Duration
	// RetryAfter is sent, in whole seconds rounded up, on every response
	// that reports an order as "processing" because of Delay; 0 sends none.
	RetryAfter time.Duration
	// HTTPPort is the port Pebble's VA dials on 127.0.0.1 for HTTP-01 (every
	// name resolves to 127.0.0.1). Required unless AlwaysValid or DNSServer
	// (a CA for DNS-01 tests needs no HTTP-01 port).
	HTTPPort int
	// DNSServer is the host:port of a DNS server (TCP) Pebble's VA resolves
	// every name through instead of the built-in loopbackdns, e.g. a real
	// BIND (testservers.StartBIND), so that DNS-01 is validated against the
	// TXT records it serves. HTTP-01 then dials the addresses that server
	// answers. Empty: loopbackdns, every name 127.0.0.1.
	DNSServer string
	// AlwaysValid makes every challenge valid without validation
	// (PEBBLE_VA_ALWAYS_VALID). The client must still POST the challenge.
	AlwaysValid bool
	// EABKeys maps key IDs to base64url (unpadded) HMAC keys. When non-empty,
	// newAccount requires External Account Binding with one of them.
	EABKeys map[string]string
	// NonceRejectPercent is the share of good nonces Pebble rejects as
	// badNonce, 0..99 (Pebble's own default is 5; ours is 0, for
	// deterministic tests).
	NonceRejectPercent int
	// AuthzReusePercent is how often Pebble reuses a valid authorization for
	// a new order, 0..100 (Pebble's own default is 50; ours is 0, so every
	// order carries pending authorizations the client must solve).
	AuthzReusePercent int
	// Logger receives Pebble's logs at debug level and the wrapper's own;
	// nil discards them.
	Logger *slog.Logger
}

// Stats counts requests the CA received, by kind (RequestKind). Requests
// counts every request, including those answered by injected faults (503,
// 429, 404, 400) and those held or dropped by HoldNext; the other counters
// count POSTs to that kind of URL whatever the answer.
type Stats struct {
	NewAccounts   int // POST to newAccount (creations, look-ups, re-creations)
	NewOrders     int // POST to newOrder
	Challenges    int // POST to a challenge URL (validation requests and POST-as-GET)
	Finalizes     int // POST to an order's finalize URL
	OrderPolls    int // POST to an order URL
	AuthzPolls    int // POST to an authorization URL
	CertDownloads int // POST to a certificate URL
	Revocations   int // POST to revokeCert
	Requests      int // every request
}

// CA is a running test CA. Its methods are safe for concurrent use; the
// fault-injection setters take effect for requests that arrive after they
// return.
type CA struct {
	server  *httptest.Server
	dns     *loopbackdns.Server
	pebble  *ca.CAImpl
	db      *db.MemoryStore
	tlsRoot []byte
	slow    *slowHandler
}

// Start runs a new CA on loopback. It returns an error if the options are
// invalid or a listener cannot be bound. Start sets Pebble's environment
// variables while it builds Pebble (see pebble.go); concurrent Starts are
// serialised for that moment only.
func Start(opts Options) (*CA, error) {
	if err := opts.validate(); err != nil {
		return nil, fmt.Errorf("start test CA: %w", err)
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}

	tlsRoot, serverCert, err := newServerTLS()
	if err != nil {
		return nil, fmt.Errorf("start test CA: %w", err)
	}
	dnsServer, err := loopbackdns.Start()
	if err != nil {
		return nil, fmt.Errorf("start test CA: %w", err)
	}
	dnsAddr := dnsServer.Addr()
	if opts.DNSServer != "" {
		dnsAddr = opts.DNSServer
	}
	p, err := newPebble(opts, dnsAddr, pebbleLogger(logger))
	if err != nil {
		dnsServer.Close()
		return nil, fmt.Errorf("start test CA: %w", err)
	}

	slow := newSlowHandler(p, opts, logger)
	server := httptest.NewUnstartedServer(slow)
	server.TLS = serverCert
	server.StartTLS()

	logger.Info("test CA started", "directory", server.URL+directoryPath,
		"mode", opts.Mode.String(), "delay", opts.Delay, "dns", dnsAddr)
	return &CA{
		server:  server,
		dns:     dnsServer,
		pebble:  p.ca,
		db:      p.db,
		tlsRoot: tlsRoot,
		slow:    slow,
	}, nil
}

func (o Options) validate() error {
	var errs []error
	if o.Mode < Instant || o.Mode > Sync {
		errs = append(errs, fmt.Errorf("unknown mode %d", int(o.Mode)))
	}
	if o.Delay < 0 {
		errs = append(errs, fmt.Errorf("negative delay %s", o.Delay))
	}
	if o.RetryAfter < 0 {
		errs = append(errs, fmt.Errorf("negative retry-after %s", o.RetryAfter))
	}
	const maxPort = 65535
	if !o.AlwaysValid && o.DNSServer == "" && (o.HTTPPort <= 0 || o.HTTPPort > maxPort) {
		errs = append(errs, fmt.Errorf("HTTP-01 port %d out of range 1..%d (or set AlwaysValid or DNSServer)", o.HTTPPort, maxPort))
	}
	if o.DNSServer != "" {
		if _, _, err := net.SplitHostPort(o.DNSServer); err != nil {
			errs = append(errs, fmt.Errorf("DNS server %q: %w", o.DNSServer, err))
		}
	}
	// Pebble clips 100 to 99 itself; refusing it here keeps the option honest.
	if o.NonceRejectPercent < 0 || o.NonceRejectPercent > 99 {
		errs = append(errs, fmt.Errorf("nonce reject percent %d out of range 0..99", o.NonceRejectPercent))
	}
	if o.AuthzReusePercent < 0 || o.AuthzReusePercent > 100 {
		errs = append(errs, fmt.Errorf("authz reuse percent %d out of range 0..100", o.AuthzReusePercent))
	}
	return errors.Join(errs...)
}

// pebbleLogger adapts the slog.Logger to the *log.Logger Pebble takes.
func pebbleLogger(logger *slog.Logger) *log.Logger {
	if logger.Handler() == slog.DiscardHandler {
		return log.New(io.Discard, "", 0)
	}
	return slog.NewLogLogger(logger.With("component", "pebble").Handler(), slog.LevelDebug)
}

// Close stops the HTTPS and DNS servers. Requests held by Sync mode are
// answered at once (with the order as it is) so Close does not wait for
// Delay; requests caught by HoldNext are released (processed and answered).
// Pebble's VA keeps one idle goroutine per CA: Pebble offers no way to stop it.
func (c *CA) Close() error {
	c.slow.close()
	c.server.Close()
	if err := c.dns.Close(); err != nil {
		return fmt.Errorf("close test CA: %w", err)
	}
	return nil
}

// DirectoryURL is the ACME directory URL (https on 127.0.0.1).
func (c *CA) DirectoryURL() string { return c.server.URL + directoryPath }

// TLSRootPEM is the PEM of the CA certificate that signed the ACME server's
// TLS certificate; clients must trust it. The server certificate is valid for
// 127.0.0.1, ::1 and localhost.
func (c *CA) TLSRootPEM() []byte { return append([]byte(nil), c.tlsRoot...) }

// WriteTLSRoot writes TLSRootPEM to dir/acme-server-root.pem (mode 0644: it
// is public) and returns the path, for clients configured by file.
func (c *CA) WriteTLSRoot(dir string) (string, error) {
	path := filepath.Join(dir, TLSRootFileName)
	if err := os.WriteFile(path, c.tlsRoot, 0o644); err != nil {
		return "", fmt.Errorf("write test CA TLS root %s: %w", path, err)
	}
	return path, nil
}

// HTTPClient returns a new client that trusts TLSRootPEM and nothing else.
// It has no timeouts of its own: callers that need them wrap or copy it.
func (c *CA) HTTPClient() *http.Client {
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.TLSClientConfig = c.server.Client().Transport.(*http.Transport).TLSClientConfig.Clone()
	return &http.Client{Transport: transport}
}

// IssuerRootsPEM returns Pebble's issuing root certificate(s), concatenated
// PEM. Certificates the CA issues verify against these (with the
// intermediates the CA sends in the chain).
func (c *CA) IssuerRootsPEM() ([]byte, error) {
	n := c.pebble.GetNumberOfRootCerts()
	if n == 0 {
		return nil, errors.New("issuer roots of test CA: Pebble has no root certificate")
	}
	var roots []byte
	for i := range n {
		root := c.pebble.GetRootCert(i)
		if root == nil {
			return nil, fmt.Errorf("issuer roots of test CA: root %d of %d missing", i, n)
		}
		roots = append(roots, root.PEM()...)
	}
	return roots, nil
}

// Stats returns a snapshot of the request counters.
func (c *CA) Stats() Stats { return c.slow.stats.snapshot() }

// RateLimitNewOrders makes the next n newOrder requests fail with HTTP 429,
// problem type urn:ietf:params:acme:error:rateLimited, and a Retry-After of
// retryAfter in whole seconds rounded up (none if 0). It replaces any
// limit still pending; n <= 0 lifts it.
func (c *CA) RateLimitNewOrders(n int, retryAfter time.Duration) {
	c.slow.faults.rateLimit(n, retryAfter)
}

// SetUnavailable switches the CA off (every request answers 503 with a
// serverInternal problem document) or back on. Orders keep their state.
func (c *CA) SetUnavailable(down bool) { c.slow.faults.unavailable.Store(down) }

// ForgetOrder makes the order URL (and its finalize URL) answer 404 with a
// malformed problem document from now on, as if the CA had purged the order.
// It returns an error if orderURL is not an order URL of this CA.
func (c *CA) ForgetOrder(orderURL string) error {
	id, err := orderIDFromURL(orderURL)
	if err != nil {
		return fmt.Errorf("forget order %s: %w", orderURL, err)
	}
	c.slow.faults.forget(id)
	return nil
}

// IssueForAnotherKey makes the next n certificate downloads that Pebble
// answers with a certificate return instead a certificate for the same
// names, profile and validity period whose public key is a fresh key of the
// same type, not the CSR's: a mis-issuing CA. The certificate is genuine
// otherwise: Pebble issues it (to the order's account, for the order's
// valid authorizations), its own intermediate signs it, the chain has the
// same shape (leaf, then the intermediate), it verifies against
// IssuerRootsPEM, and ARI knows it. Only a client that compares the leaf's
// key with its own notices. The order still points to the genuine
// certificate, which later downloads (after n) return. It replaces any
// count still pending; n <= 0 turns the fault off.
func (c *CA) IssueForAnotherKey(n int) { c.slow.faults.setMisissue(n) }

// KeepFailedChallengesPending makes the CA answer challenge requests and
// record failed HTTP-01 validations as step-ca v0.30.2 does (observed with
// the real one: testservers.StartStepCA), from the next challenge request
// on; off, Pebble's behaviour returns for the next ones.
//
// Imitated:
//   - Every POST to a pending challenge's URL validates before it is
//     answered, a POST-as-GET included (Pebble's VA fetches the key
//     authorization; the wrapper waits for it), and the answer is 200 with
//     the challenge as it then is, for a challenge that is no longer
//     pending too (Pebble would answer 400 malformed).
//   - Key authorization not fetched (connection refused, DNS failure,
//     timeout, any HTTP status but 200): challenge, authorization and order
//     stay "pending", the order without "error", and the challenge's
//     "error" is step-ca's document, type
//     urn:ietf:params:acme:error:connection, detail "The server could not
//     connect to validation target", no "status" member. Pebble's own
//     detail (the dial error) goes only to the log.
//   - Key authorization fetched but wrong: the challenge is "invalid" with
//     type urn:ietf:params:acme:error:rejectedIdentifier, detail "The server
//     will not issue certificates for the identifier"; the authorization
//     and the order stay "pending" (step-ca never turns an authorization
//     invalid before it expires).
//   - A later successful validation makes the challenge "valid" without
//     "error", the authorization "valid" and the order "ready".
//   - Polling an authorization or an order never validates.
//
// No client sees Pebble's intermediate states ("processing", or "invalid"
// before the wrapper maps it): reads of orders, authorizations and
// challenges wait while such a validation runs.
//
// Not imitated: expiry (step-ca's orders and authorizations expire 24 h
// after the order, Pebble's pending authorizations after 1 h, which a
// failed validation does not extend); step-ca's HTTP-01 request (one GET
// that follows redirects and accepts any status below 400 whose body
// matches, where Pebble's VA sends three GETs and wants 200); the
// authorization's challenge list (step-ca offers http-01, dns-01 and
// tls-alpn-01 with one token; Pebble its own set); problems Pebble reports
// for other reasons (malformed URL, errors reading the body) keep Pebble's
// behaviour: all invalid.
func (c *CA) KeepFailedChallengesPending(on bool) { c.slow.faults.keepPending.Store(on) }

// ForgetAccount makes the CA act as if it had lost the account: every
// request signed with its kid (the account URL) gets HTTP 400 with problem
// urn:ietf:params:acme:error:accountDoesNotExist, and a newAccount request
// with its key and onlyReturnExisting gets the same, until a newAccount
// request with its key and without onlyReturnExisting re-creates the account.
// That request is answered 201 Created, as a creation, but with the same
// account URL (Pebble never lost the account: a real CA would hand out a new
// URL, and its orders would be gone, whereas here they survive) and without
// asking for External Account Binding again. Requests signed with a JWK
// (newAccount, revocation by certificate key) are not refused.
// It returns an error if accountURL is not an account of this CA.
func (c *CA) ForgetAccount(accountURL string) error {
	id, err := accountIDFromURL(accountURL)
	if err != nil {
		return fmt.Errorf("forget account %s: %w", accountURL, err)
	}
	account := c.db.GetAccountByID(id)
	if account == nil {
		return fmt.Errorf("forget account %s: no account %q", accountURL, id)
	}
	thumbprint, err := jwkThumbprint(account.Key)
	if err != nil {
		return fmt.Errorf("forget account %s: %w", accountURL, err)
	}
	c.slow.faults.forgetAccount(id, thumbprint)
	return nil
}

// HoldNext catches the next request of kind that arrives from now on (after
// the requests earlier HoldNext calls for the same kind catch: they queue)
// and holds it inside the CA until the test releases or drops it; see Hold.
// Stats count a held request when it arrives. Close releases every hold.
// It panics for a kind that is not one of the exported RequestKind values.
func (c *CA) HoldNext(kind RequestKind) *Hold {
	if kind <= otherRequest || kind >= numKinds {
		panic(fmt.Sprintf("testca: HoldNext(%s): not a request kind", kind))
	}
	h := newHold(kind)
	c.slow.holds.add(h)
	return h
}

// SetRenewalWindow makes every successful ARI renewalInfo response report
// the suggested window [start, end) for every certificate.
func (c *CA) SetRenewalWindow(start, end time.Time) { c.slow.faults.setRenewalWindow(start, end) }

// ClearRenewalWindow restores Pebble's own ARI windows.
func (c *CA) ClearRenewalWindow() { c.slow.faults.clearRenewalWindow() }

// counters are the request counters behind Stats.
type counters struct {
	byKind   [numKinds]atomic.Int64
	requests atomic.Int64
}

func (s *counters) count(kind RequestKind) {
	s.requests.Add(1)
	s.byKind[kind].Add(1)
}

func (s *counters) snapshot() Stats {
	return Stats{
		NewAccounts:   int(s.byKind[NewAccount].Load()),
		NewOrders:     int(s.byKind[NewOrder].Load()),
		Challenges:    int(s.byKind[Challenge].Load()),
		Finalizes:     int(s.byKind[Finalize].Load()),
		OrderPolls:    int(s.byKind[OrderPoll].Load()),
		AuthzPolls:    int(s.byKind[AuthzPoll].Load()),
		CertDownloads: int(s.byKind[CertDownload].Load()),
		Revocations:   int(s.byKind[Revocation].Load()),
		Requests:      int(s.requests.Load()),
	}
}
