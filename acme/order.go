package acme

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strings"
	"time"

	legoacme "github.com/go-acme/lego/v4/acme"
	"github.com/go-acme/lego/v4/acme/api"
	"github.com/go-acme/lego/v4/certcrypto"
	"github.com/go-acme/lego/v4/challenge"

	"github.com/certfetch/certfetch/internal/wait"
)

// maxChallengeRetries is how many times the engine asks the CA again to validate a
// challenge that the CA reports failed while keeping it pending (step-ca does; RFC 8555
// §8.2 lets a client request a retry by POSTing the challenge again). A retry helps when
// the failure was a moment's (a router being reloaded, a listener restarting); a wrong
// route or thumbprint fails every time. Two retries, spaced by the poll schedule, cover
// the former within seconds, then the order is given up and the daemon backs off instead
// of hammering the CA, which RFC 8555 §8.2 asks servers to rate-limit.
const maxChallengeRetries = 2

// run is one Obtain attempt: the state machine that drives one order to a certificate.
type run struct {
	c   *Client
	s   *session
	ctx context.Context
	req Request
	key string
	log *slog.Logger

	rec        *Record       // the journaled order; nil until resumed or created, and once forgotten
	status     string        // the order's last status seen in this attempt
	retryAfter time.Duration // the CA's last Retry-After for the order (or its finalize)
}

func (r *run) obtain() (*Certificate, error) {
	order, cert, err := r.resume()
	if err != nil || cert != nil {
		return cert, err
	}

	if r.rec == nil {
		if order, err = r.create(); err != nil {
			return nil, err
		}
	}

	return r.advance(order)
}

// resume loads the journaled order. It returns the certificate the order already produced
// when the journal has it, else the order as the CA has it now. It leaves r.rec nil when
// there is nothing worth resuming.
func (r *run) resume() (legoacme.Order, *Certificate, error) {
	rec, err := r.c.journal.Load(r.ctx, r.key)
	if errors.Is(err, ErrNoRecord) {
		return legoacme.Order{}, nil, nil
	}

	if err != nil {
		return legoacme.Order{}, nil, fmt.Errorf("acme: load journaled order for %v: %w", r.req.Names, err)
	}

	r.rec = rec

	// A killed process may have left challenges published; one that cannot be removed now
	// stays journaled and is tried again later.
	if err := r.c.cleanUpLeftovers(r.ctx, r.log, rec); err != nil {
		r.log.Warn("challenges left by an earlier attempt are still published", "err", err)
	}

	if rec.CertificatePEM != "" {
		cert, err := r.certificate([]byte(rec.CertificatePEM), rec.CertificateURL)
		if err == nil {
			r.log.Info("returning the certificate the journaled order already produced", "order", rec.OrderURL)

			return legoacme.Order{}, cert, nil
		}

		r.log.Warn("journaled certificate unusable, starting a new order", "order", rec.OrderURL, "err", err)

		return legoacme.Order{}, nil, r.forget()
	}

	order, err := r.getOrder()

	var pd *legoacme.ProblemDetails

	switch {
	case err == nil && !dead(order, time.Now()):
		r.log.Info("resuming order", "order", rec.OrderURL, "status", order.Status)

		return order, nil, nil
	case err == nil:
		r.log.Info("journaled order is dead at the CA, starting a new one", "order", rec.OrderURL, "status", order.Status, "expires", order.Expires)
	case accountGone(err):
		return legoacme.Order{}, nil, err
	case errors.As(err, &pd) && unusableOrder(pd):
		r.log.Info("journaled order is not available from the CA, starting a new one", "order", rec.OrderURL, "problem", pd.Detail, "status", pd.HTTPStatus)
	default:
		return legoacme.Order{}, nil, err
	}

	return legoacme.Order{}, nil, r.forget()
}

// unusableOrder reports whether the CA's answer to reading a journaled order means the
// order cannot be used any more: gone (404), or not this account's (401, 403: the CA
// forgot the account that created it). Rate limits and bad nonces are not about the order.
func unusableOrder(pd *legoacme.ProblemDetails) bool {
	switch pd.HTTPStatus {
	case http.StatusNotFound, http.StatusUnauthorized, http.StatusForbidden, http.StatusGone:
		return true
	}

	return false
}

// dead reports whether a journaled order is not worth resuming: invalid, or expired before
// it was issued. A valid order is always worth a try: its certificate usually outlives it.
// An unparsable expiry leaves the decision to the CA.
func dead(order legoacme.Order, now time.Time) bool {
	switch order.Status {
	case legoacme.StatusInvalid:
		return true
	case legoacme.StatusValid:
		return false
	}

	t, err := time.Parse(time.RFC3339, order.Expires)

	return err == nil && !t.After(now)
}

// create makes the certificate key and CSR, creates the order and journals it.
func (r *run) create() (legoacme.Order, error) {
	kt, err := r.req.KeyType.lego()
	if err != nil {
		return legoacme.Order{}, err
	}

	key, err := certcrypto.GeneratePrivateKey(kt)
	if err != nil {
		return legoacme.Order{}, fmt.Errorf("acme: generate %s certificate key: %w", kt, err)
	}

	// A common name is limited to 64 bytes (RFC 5280); a longer first name goes in the SANs only.
	cn := r.req.Names[0]
	if len(cn) > 64 {
		cn = ""
	}

	csr, err := certcrypto.CreateCSR(key, certcrypto.CSROptions{Domain: cn, SAN: r.req.Names})
	if err != nil {
		return legoacme.Order{}, fmt.Errorf("acme: create CSR for %v: %w", r.req.Names, err)
	}

	r.c.phaseStart(PhaseNewOrder)

	start := time.Now()

	order, err := r.s.core.Orders.NewWithOptions(r.req.Names, &api.OrderOptions{Profile: r.req.Profile, ReplacesCertID: r.req.Replaces})
	if err != nil {
		return legoacme.Order{}, classify(fmt.Sprintf("acme: new order for %v", r.req.Names), err)
	}

	r.c.phase(PhaseNewOrder, start)
	r.s.ex.setKind(order.Location, RequestOrder)

	rec := &Record{
		Key:           r.key,
		Request:       r.req,
		OrderURL:      order.Location,
		PrivateKeyPEM: string(certcrypto.PEMEncode(key)),
		CSR:           csr,
		Created:       time.Now().UTC(),
	}

	// The journal write must land even if the deadline passes right now: without it the
	// order would be lost, which is the one thing this engine exists to prevent.
	if err := r.c.journal.Save(context.WithoutCancel(r.ctx), rec); err != nil {
		return legoacme.Order{}, fmt.Errorf("acme: journal order %s: %w", order.Location, err)
	}

	r.rec = rec
	r.retryAfter = r.s.ex.RetryAfter(r.s.core.GetDirectory().NewOrderURL)
	r.log.Info("order created", "order", rec.OrderURL, "status", order.Status, "profile", r.req.Profile)

	return order.Order, nil
}

// forget drops the journaled order: it is dead at the CA, or what it produced is unusable.
// Like Save, it ignores the deadline.
func (r *run) forget() error {
	if err := r.c.journal.Delete(context.WithoutCancel(r.ctx), r.key); err != nil {
		return fmt.Errorf("acme: forget journaled order %s: %w", r.rec.OrderURL, err)
	}

	r.rec = nil

	return nil
}

// advance drives the order from its current status to a certificate.
func (r *run) advance(order legoacme.Order) (*Certificate, error) {
	// polls counts the waits in the current status: the blind poll schedule (1, 2, 4 ...
	// s) starts again when the status changes, so that an order that just turned
	// "processing" is first read after 1 s, not after the authorizations' longer waits.
	polls := 0

	var finalizing time.Time

	for {
		if order.Status != r.status {
			polls = 0
		}

		r.status = order.Status

		var err error

		switch order.Status {
		case legoacme.StatusPending:
			r.c.phaseStart(PhaseAuthorization)

			start := time.Now()

			if order, err = r.authorize(order, polls); err == nil {
				r.c.phase(PhaseAuthorization, start)
			}

			polls++
		case legoacme.StatusReady:
			r.c.phaseStart(PhaseFinalize)

			finalizing = time.Now()
			order, err = r.finalize(order)
		case legoacme.StatusProcessing:
			if err = r.wait(polls); err == nil {
				order, err = r.getOrder()
			}

			polls++
		case legoacme.StatusValid:
			if !finalizing.IsZero() {
				r.c.phase(PhaseFinalize, finalizing)
			}

			return r.download(order)
		case legoacme.StatusInvalid:
			url := r.rec.OrderURL
			if err := r.forget(); err != nil {
				return nil, err
			}

			return nil, &OrderInvalidError{OrderURL: url, Problem: order.Error}
		default:
			return nil, fmt.Errorf("acme: order %s: unexpected status %q", r.rec.OrderURL, order.Status)
		}

		if err != nil {
			return nil, err
		}
	}
}

// wait sleeps before poll number attempt, following the CA's Retry-After.
func (r *run) wait(attempt int) error {
	d := pollDelay(r.retryAfter, attempt)

	attrs := []any{"order", r.rec.OrderURL, "status", r.status, "retryAfter", r.retryAfter, "nextPollIn", d}
	if deadline, ok := r.ctx.Deadline(); ok {
		attrs = append(attrs, "deadlineIn", time.Until(deadline).Round(time.Second))
	}

	r.log.Info("waiting for the CA", attrs...)

	return wait.Sleep(r.ctx, d)
}

func (r *run) getOrder() (legoacme.Order, error) {
	r.s.ex.setKind(r.rec.OrderURL, RequestOrder)

	order, err := r.s.core.Orders.Get(r.rec.OrderURL)
	r.retryAfter = r.s.ex.RetryAfter(r.rec.OrderURL)

	if r.c.onOrderPoll != nil {
		r.c.onOrderPoll()
	}

	if err != nil {
		return legoacme.Order{}, classify("acme: read order "+r.rec.OrderURL, err)
	}

	return order.Order, nil
}

// finalize sends the journaled CSR. The request may be held open by a CA that finalizes
// synchronously, so it is exempt from the per-request timeouts: only the deadline ends it.
func (r *run) finalize(order legoacme.Order) (legoacme.Order, error) {
	r.s.ex.allowLong(order.Finalize)
	r.s.ex.setKind(order.Finalize, RequestFinalize)
	r.log.Info("finalizing order", "order", r.rec.OrderURL)

	done, err := r.s.core.Orders.UpdateForCSR(order.Finalize, r.rec.CSR)
	r.retryAfter = r.s.ex.RetryAfter(order.Finalize)

	if err == nil {
		if done.Status == legoacme.StatusReady {
			// A CA that answers finalize with the order as it was before: poll it rather
			// than finalize again at once.
			done.Status = legoacme.StatusProcessing
		}

		return done.Order, nil
	}

	if isContextErr(err) {
		return legoacme.Order{}, err
	}

	// The CA refused. Its order says why: already processing or valid (an earlier
	// finalize got through, e.g. the one an expired attempt sent), or invalid.
	cur, gerr := r.getOrder()
	if gerr != nil {
		return legoacme.Order{}, gerr
	}

	if cur.Status != legoacme.StatusReady {
		return cur, nil
	}

	// Still ready: the CA rejected this CSR. A journaled order that cannot be finalized
	// with its CSR is useless; a transient failure (5xx, network) keeps it.
	var ue *UnreachableError
	if !errors.As(err, &ue) {
		if ferr := r.forget(); ferr != nil {
			return legoacme.Order{}, ferr
		}
	}

	return legoacme.Order{}, classify("acme: finalize order "+order.Finalize, err)
}

// download fetches the certificate, picks the preferred chain, checks it against the
// order, and journals it with the order: the order is forgotten only when the caller has
// stored the certificate (Client.Collected).
func (r *run) download(order legoacme.Order) (*Certificate, error) {
	r.c.phaseStart(PhaseDownload)
	r.s.ex.setKind(order.Certificate, RequestCertificate)

	start := time.Now()

	certs, err := r.s.core.Certificates.GetAll(order.Certificate, true)
	if err != nil {
		return nil, classify("acme: download certificate "+order.Certificate, err)
	}

	url := r.pickChain(certs, order.Certificate)

	cert, err := r.certificate(certs[url].Cert, url)
	if err != nil {
		if ferr := r.forget(); ferr != nil {
			return nil, errors.Join(err, ferr)
		}

		return nil, err
	}

	r.rec.CertificatePEM, r.rec.CertificateURL = string(cert.ChainPEM), url

	// Like the order itself, the certificate is journaled whatever the deadline. A failed
	// write loses nothing yet: the caller gets the certificate, and the journaled order
	// (valid at the CA) can be downloaded again.
	if err := r.c.journal.Save(context.WithoutCancel(r.ctx), r.rec); err != nil {
		r.log.Warn("cannot journal the downloaded certificate; the caller must store it", "order", r.rec.OrderURL, "err", err)
	}

	r.c.phase(PhaseDownload, start)
	r.log.Info("certificate issued", "order", cert.OrderURL, "certificate", url, "notAfter", cert.Leaf.NotAfter)

	return cert, nil
}

// certificate parses the chain the journaled order produced and checks it against the
// order: the leaf's public key must be the journaled key's and it must cover every
// requested name. A mismatch is a *CertificateMismatchError.
func (r *run) certificate(chainPEM []byte, url string) (*Certificate, error) {
	mismatch := func(format string, args ...any) error {
		return &CertificateMismatchError{OrderURL: r.rec.OrderURL, CertificateURL: url, Reason: fmt.Sprintf(format, args...)}
	}

	leaf, err := certcrypto.ParsePEMCertificate(chainPEM)
	if err != nil {
		return nil, mismatch("cannot parse it: %v", err)
	}

	key, err := ParseKey([]byte(r.rec.PrivateKeyPEM))
	if err != nil {
		return nil, fmt.Errorf("acme: journaled key of order %s: %w", r.rec.OrderURL, err)
	}

	if !publicKeyEqual(key, leaf.PublicKey) {
		return nil, mismatch("its public key is not the order's key")
	}

	covered := map[string]bool{}
	for _, n := range leaf.DNSNames {
		covered[strings.ToLower(n)] = true
	}

	for _, ip := range leaf.IPAddresses {
		covered[ip.String()] = true
	}

	var missing []string

	for _, n := range r.req.Names {
		if !covered[n] {
			missing = append(missing, n)
		}
	}

	if len(missing) > 0 {
		return nil, mismatch("it does not cover %s", strings.Join(missing, ", "))
	}

	return &Certificate{
		Names:         r.req.Names,
		PrivateKeyPEM: []byte(r.rec.PrivateKeyPEM),
		ChainPEM:      chainPEM,
		Leaf:          leaf,
		URL:           url,
		OrderURL:      r.rec.OrderURL,
		RequestKey:    r.key,
	}, nil
}

// pickChain returns the URL of the chain whose top certificate was issued by the root
// named req.PreferredChain, or the CA's default chain when none is (or none is asked for).
func (r *run) pickChain(certs map[string]*legoacme.RawCertificate, defaultURL string) string {
	if r.req.PreferredChain == "" {
		return defaultURL
	}

	// The default chain first, then the alternates in a stable order.
	urls := slices.DeleteFunc(slices.Sorted(maps.Keys(certs)), func(u string) bool { return u == defaultURL })

	for _, u := range append([]string{defaultURL}, urls...) {
		chain, err := certcrypto.ParsePEMBundle(certs[u].Issuer)
		if err == nil && chain[len(chain)-1].Issuer.CommonName == r.req.PreferredChain {
			return u
		}
	}

	r.log.Info("no chain ends at the preferred root, using the CA's default chain", "preferredChain", r.req.PreferredChain)

	return defaultURL
}

// pendingAuthz is an authorization whose challenge is published.
type pendingAuthz struct {
	url, chalURL, domain string
	// presented is what the Solver was given; its Domain is the identifier (without
	// "*." for a wildcard, as lego's DNS providers expect), where domain names the
	// authorization in messages.
	presented PresentedChallenge
	// triggered: an earlier attempt already asked the CA to validate (the challenge is
	// "processing"), and a second request would be refused.
	triggered bool
	// validated: the CA answered the trigger with the challenge valid (it validates
	// synchronously, as step-ca does), so there is nothing to wait for.
	validated bool
}

// authorize solves every pending authorization of the order and returns the order as
// ready. A SequentialSolver gets them one at a time. attempt counts the order's polls:
// when every authorization is already valid but the CA still reports the order pending,
// the order is read again after a poll's wait.
func (r *run) authorize(order legoacme.Order, attempt int) (legoacme.Order, error) {
	groups := [][]string{order.Authorizations}

	var pause time.Duration

	if seq, ok := r.c.solver.(SequentialSolver); ok {
		if one, d := seq.Sequential(); one {
			groups, pause = nil, d
			for _, url := range order.Authorizations {
				groups = append(groups, []string{url})
			}
		}
	}

	solved := 0

	for _, urls := range groups {
		if solved > 0 && pause > 0 {
			if err := wait.Sleep(r.ctx, pause); err != nil {
				return legoacme.Order{}, err
			}
		}

		n, err := r.solve(urls)
		if err != nil {
			return legoacme.Order{}, r.failAuthz(err)
		}

		solved += n
	}

	if solved > 0 {
		// Every authorization is valid now, so the order is ready (RFC 8555 §7.1.6): go
		// on to finalize without reading it again. A CA that lags behind its own
		// authorizations refuses that finalize, and finalize then reads the order.
		order.Status = legoacme.StatusReady

		return order, nil
	}

	// Every authorization was valid already but the CA still reports the order pending:
	// read it again after a poll's wait.
	if err := r.wait(attempt); err != nil {
		return legoacme.Order{}, err
	}

	return r.getOrder()
}

// solve publishes the challenges of the pending authorizations among urls, waits until
// they are visible (PropagationWaiter), asks the CA to validate them, waits for its
// decision, and cleans up whatever happened, a passed deadline included. It returns how
// many challenges it published.
func (r *run) solve(urls []string) (int, error) {
	var started []pendingAuthz

	defer func() {
		presented := make([]PresentedChallenge, 0, len(started))
		for _, p := range started {
			presented = append(presented, p.presented)
		}

		// Failures are logged; a challenge not removed stays journaled for later.
		_ = r.c.cleanUp(r.ctx, r.log, r.rec, presented)
	}()

	for _, url := range urls {
		p, err := r.startAuthz(url)
		if p != nil {
			started = append(started, *p)
		}

		if err != nil {
			return len(started), err
		}
	}

	waiter, _ := r.c.solver.(PropagationWaiter)

	for i := range started {
		p := &started[i]

		if waiter != nil && !p.triggered {
			if err := waiter.WaitPropagation(r.ctx, p.presented.Domain, p.presented.Token, p.presented.KeyAuth); err != nil {
				return len(started), fmt.Errorf("acme: authorize %s: %w", p.domain, err)
			}
		}

		if !p.triggered {
			if err := r.trigger(p); err != nil {
				return len(started), err
			}
		}

		r.log.Info("challenge published", "domain", p.domain, "type", r.c.chalType)
	}

	for _, p := range started {
		if err := r.awaitAuthz(p); err != nil {
			return len(started), err
		}
	}

	return len(started), nil
}

// failAuthz forgets the order when err is an *AuthorizationError (the order is dead at the
// CA) and returns err.
func (r *run) failAuthz(err error) error {
	var ae *AuthorizationError
	if errors.As(err, &ae) {
		if ferr := r.forget(); ferr != nil {
			return errors.Join(err, ferr)
		}
	}

	return err
}

// startAuthz reads one authorization and, when it is pending, publishes its challenge.
// It returns nil for an authorization that is already valid; a challenge whose
// publication was attempted is returned even with an error, so that it is cleaned up.
func (r *run) startAuthz(url string) (*pendingAuthz, error) {
	r.s.ex.setKind(url, RequestAuthorization)

	authz, err := r.s.core.Authorizations.Get(url)
	if err != nil {
		return nil, classify("acme: read authorization "+url, err)
	}

	domain := challenge.GetTargetedDomain(authz)

	switch authz.Status {
	case legoacme.StatusValid:
		return nil, nil
	case legoacme.StatusPending:
	default:
		return nil, authzError(domain, authz, nil)
	}

	chal, err := challenge.FindChallenge(r.c.chalType, authz)
	if err != nil {
		return nil, fmt.Errorf("acme: authorize %s: %w", domain, err)
	}

	keyAuth, err := r.s.core.GetKeyAuthorization(chal.Token)
	if err != nil {
		return nil, fmt.Errorf("acme: authorize %s: key authorization: %w", domain, err)
	}

	p := &pendingAuthz{
		url: url, chalURL: chal.URL, domain: domain,
		presented: PresentedChallenge{Domain: authz.Identifier.Value, Token: chal.Token, KeyAuth: keyAuth},
		// A challenge already "processing" was triggered by an earlier attempt: the CA is
		// validating it.
		triggered: chal.Status != legoacme.StatusPending,
	}
	r.s.ex.setKind(chal.URL, RequestChallenge)

	if err := r.journalPresented(p.presented); err != nil {
		return nil, err
	}

	if err := r.c.solver.Present(p.presented.Domain, chal.Token, keyAuth); err != nil {
		return p, fmt.Errorf("acme: authorize %s: publish %s challenge: %w", domain, chal.Type, err)
	}

	return p, nil
}

// journalPresented journals pc in the order's record before the Solver presents it, for
// DNS-01, so that a record left behind by a killed process is cleaned up later
// (Record.Presented). Like the order itself, it is written whatever the deadline.
func (r *run) journalPresented(pc PresentedChallenge) error {
	if r.c.chalType != challenge.DNS01 || slices.Contains(r.rec.Presented, pc) {
		return nil
	}

	r.rec.Presented = append(r.rec.Presented, pc)

	if err := r.c.journal.Save(context.WithoutCancel(r.ctx), r.rec); err != nil {
		r.rec.Presented = r.rec.Presented[:len(r.rec.Presented)-1]

		return fmt.Errorf("acme: journal the challenge for %s before presenting it: %w", pc.Domain, err)
	}

	return nil
}

// trigger asks the CA to validate p's challenge (RFC 8555 §7.5.1), and notes when the
// answer says the challenge is valid already.
func (r *run) trigger(p *pendingAuthz) error {
	chal, err := r.s.core.Challenges.New(p.chalURL)
	if err != nil {
		return classify("acme: trigger challenge for "+p.domain, err)
	}

	p.validated = chal.Status == legoacme.StatusValid

	return nil
}

// awaitAuthz polls one authorization until the CA has decided it. A CA that keeps the
// authorization pending but reports a failed validation on the challenge is asked to
// validate again up to maxChallengeRetries times (RFC 8555 §8.2); after that the
// authorization is deactivated, so that the CA stops holding the order, and the failure
// is an *AuthorizationError carrying the CA's problem.
func (r *run) awaitAuthz(p pendingAuthz) error {
	if p.validated {
		return nil
	}

	retries := 0

	for attempt := 0; ; attempt++ {
		if err := wait.Sleep(r.ctx, pollDelay(r.s.ex.RetryAfter(p.url), attempt)); err != nil {
			return err
		}

		authz, err := r.s.core.Authorizations.Get(p.url)
		if err != nil {
			return classify("acme: read authorization "+p.url, err)
		}

		switch authz.Status {
		case legoacme.StatusValid:
			return nil
		case legoacme.StatusPending:
		default:
			return authzError(p.domain, authz, nil)
		}

		failed, final := failedChallenge(authz, p.chalURL)
		if failed == nil {
			r.log.Info("waiting for the CA to validate", "domain", p.domain)

			continue
		}

		if final || retries == maxChallengeRetries {
			r.deactivate(p)

			return authzError(p.domain, authz, failed)
		}

		retries++
		r.log.Warn("the CA could not validate the challenge; asking it to try again", "domain", p.domain,
			"problem", failed.Type, "detail", failed.Detail, "retry", retries, "of", maxChallengeRetries)

		if err := r.trigger(&p); err != nil {
			return err
		}
	}
}

// failedChallenge returns the error of the authorization's challenge at chalURL when the
// CA reports a failed validation but keeps the authorization pending (RFC 8555 §8.2: the
// error is added after each failed validation). final is true when the challenge itself
// is invalid (step-ca does that for a wrong key authorization): asking again cannot help.
// A challenge still "processing" is being retried by the CA itself and is waited for.
func failedChallenge(authz legoacme.Authorization, chalURL string) (problem *legoacme.ProblemDetails, final bool) {
	for _, ch := range authz.Challenges {
		if ch.URL == chalURL && ch.Error != nil && ch.Status != legoacme.StatusProcessing && ch.Status != legoacme.StatusValid {
			return ch.Error, ch.Status == legoacme.StatusInvalid
		}
	}

	return nil, false
}

// deactivate gives up an authorization (RFC 8555 §7.5.2), so that the CA does not keep a
// failing order pending until it expires. Best effort: the order is forgotten either way.
func (r *run) deactivate(p pendingAuthz) {
	if err := r.s.core.Authorizations.Deactivate(p.url); err != nil {
		r.log.Warn("cannot deactivate the failed authorization", "domain", p.domain, "authorization", p.url, "err", err)
	}
}

// authzError returns the *AuthorizationError of a failed authorization, with problem, or
// else the problem of its failed challenge.
func authzError(domain string, authz legoacme.Authorization, problem *legoacme.ProblemDetails) error {
	ae := &AuthorizationError{Domain: domain, Status: authz.Status, Problem: problem}

	for _, ch := range authz.Challenges {
		if ae.Problem != nil {
			break
		}

		ae.Problem = ch.Error
	}

	return ae
}
