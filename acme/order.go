package acme

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"time"

	"github.com/go-acme/lego/v4/acme"
	"github.com/go-acme/lego/v4/acme/api"
	"github.com/go-acme/lego/v4/certcrypto"
	"github.com/go-acme/lego/v4/challenge"
)

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
	order, err := r.resume()
	if err != nil {
		return nil, err
	}

	if r.rec == nil {
		if order, err = r.create(); err != nil {
			return nil, err
		}
	}

	return r.advance(order)
}

// resume loads the journaled order and reads it at the CA. It leaves r.rec nil when there
// is nothing worth resuming.
func (r *run) resume() (acme.Order, error) {
	rec, err := r.c.journal.Load(r.ctx, r.key)
	if errors.Is(err, ErrNoRecord) {
		return acme.Order{}, nil
	}

	if err != nil {
		return acme.Order{}, fmt.Errorf("acme: load journaled order for %v: %w", r.req.Names, err)
	}

	r.rec = rec

	order, err := r.getOrder()

	var pd *acme.ProblemDetails

	switch {
	case err == nil && !dead(order, time.Now()):
		r.log.Info("resuming order", "order", rec.OrderURL, "status", order.Status)

		return order, nil
	case err == nil:
		r.log.Info("journaled order is dead at the CA, starting a new one", "order", rec.OrderURL, "status", order.Status, "expires", order.Expires)
	case errors.As(err, &pd) && pd.HTTPStatus == http.StatusNotFound:
		r.log.Info("journaled order is unknown to the CA, starting a new one", "order", rec.OrderURL, "problem", pd.Detail)
	default:
		return acme.Order{}, err
	}

	return acme.Order{}, r.forget()
}

// dead reports whether a journaled order is not worth resuming: invalid, or expired before
// it was issued. A valid order is always worth a try: its certificate usually outlives it.
// An unparsable expiry leaves the decision to the CA.
func dead(order acme.Order, now time.Time) bool {
	switch order.Status {
	case acme.StatusInvalid:
		return true
	case acme.StatusValid:
		return false
	}

	t, err := time.Parse(time.RFC3339, order.Expires)

	return err == nil && !t.After(now)
}

// create makes the certificate key and CSR, creates the order and journals it.
func (r *run) create() (acme.Order, error) {
	kt, err := r.req.KeyType.lego()
	if err != nil {
		return acme.Order{}, err
	}

	key, err := certcrypto.GeneratePrivateKey(kt)
	if err != nil {
		return acme.Order{}, fmt.Errorf("acme: generate %s certificate key: %w", kt, err)
	}

	// A common name is limited to 64 bytes (RFC 5280); a longer first name goes in the SANs only.
	cn := r.req.Names[0]
	if len(cn) > 64 {
		cn = ""
	}

	csr, err := certcrypto.CreateCSR(key, certcrypto.CSROptions{Domain: cn, SAN: r.req.Names})
	if err != nil {
		return acme.Order{}, fmt.Errorf("acme: create CSR for %v: %w", r.req.Names, err)
	}

	order, err := r.s.core.Orders.NewWithOptions(r.req.Names, &api.OrderOptions{Profile: r.req.Profile, ReplacesCertID: r.req.Replaces})
	if err != nil {
		return acme.Order{}, classify(fmt.Sprintf("acme: new order for %v", r.req.Names), err)
	}

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
		return acme.Order{}, fmt.Errorf("acme: journal order %s: %w", order.Location, err)
	}

	r.rec = rec
	r.retryAfter = r.s.ex.RetryAfter(r.s.core.GetDirectory().NewOrderURL)
	r.log.Info("order created", "order", rec.OrderURL, "status", order.Status, "profile", r.req.Profile)

	return order.Order, nil
}

// forget drops the journaled order: it is finished, or dead at the CA. Like Save, it
// ignores the deadline.
func (r *run) forget() error {
	if err := r.c.journal.Delete(context.WithoutCancel(r.ctx), r.key); err != nil {
		return fmt.Errorf("acme: forget journaled order %s: %w", r.rec.OrderURL, err)
	}

	r.rec = nil

	return nil
}

// advance drives the order from its current status to a certificate.
func (r *run) advance(order acme.Order) (*Certificate, error) {
	polls := 0

	for {
		r.status = order.Status

		var err error

		switch order.Status {
		case acme.StatusPending:
			order, err = r.authorize(order, polls)
			polls++
		case acme.StatusReady:
			order, err = r.finalize(order)
		case acme.StatusProcessing:
			if err = r.wait(polls); err == nil {
				order, err = r.getOrder()
			}

			polls++
		case acme.StatusValid:
			return r.download(order)
		case acme.StatusInvalid:
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

	attrs := []any{"order", r.rec.OrderURL, "status", r.status, "retry_after", r.retryAfter, "next_poll_in", d}
	if deadline, ok := r.ctx.Deadline(); ok {
		attrs = append(attrs, "deadline_in", time.Until(deadline).Round(time.Second))
	}

	r.log.Info("waiting for the CA", attrs...)

	return sleepCtx(r.ctx, d)
}

func (r *run) getOrder() (acme.Order, error) {
	order, err := r.s.core.Orders.Get(r.rec.OrderURL)
	r.retryAfter = r.s.ex.RetryAfter(r.rec.OrderURL)

	if r.c.onOrderPoll != nil {
		r.c.onOrderPoll()
	}

	if err != nil {
		return acme.Order{}, classify("acme: read order "+r.rec.OrderURL, err)
	}

	return order.Order, nil
}

// finalize sends the journaled CSR. The request may be held open by a CA that finalizes
// synchronously, so it is exempt from the per-request timeouts: only the deadline ends it.
func (r *run) finalize(order acme.Order) (acme.Order, error) {
	r.s.ex.allowLong(order.Finalize)
	r.log.Info("finalizing order", "order", r.rec.OrderURL)

	done, err := r.s.core.Orders.UpdateForCSR(order.Finalize, r.rec.CSR)
	r.retryAfter = r.s.ex.RetryAfter(order.Finalize)

	if err == nil {
		if done.Status == acme.StatusReady {
			// A CA that answers finalize with the order as it was before: poll it rather
			// than finalize again at once.
			done.Status = acme.StatusProcessing
		}

		return done.Order, nil
	}

	if isContextErr(err) {
		return acme.Order{}, err
	}

	// The CA refused. Its order says why: already processing or valid (an earlier
	// finalize got through, e.g. the one an expired attempt sent), or invalid.
	cur, gerr := r.getOrder()
	if gerr != nil {
		return acme.Order{}, gerr
	}

	if cur.Status != acme.StatusReady {
		return cur, nil
	}

	// Still ready: the CA rejected this CSR. A journaled order that cannot be finalized
	// with its CSR is useless; a transient failure (5xx, network) keeps it.
	var ue *UnreachableError
	if !errors.As(err, &ue) {
		if ferr := r.forget(); ferr != nil {
			return acme.Order{}, ferr
		}
	}

	return acme.Order{}, classify("acme: finalize order "+order.Finalize, err)
}

// download fetches the certificate, picks the preferred chain, and forgets the order.
func (r *run) download(order acme.Order) (*Certificate, error) {
	certs, err := r.s.core.Certificates.GetAll(order.Certificate, true)
	if err != nil {
		return nil, classify("acme: download certificate "+order.Certificate, err)
	}

	url := r.pickChain(certs, order.Certificate)

	leaf, err := certcrypto.ParsePEMCertificate(certs[url].Cert)
	if err != nil {
		return nil, fmt.Errorf("acme: parse certificate %s: %w", url, err)
	}

	cert := &Certificate{
		Names:         r.req.Names,
		PrivateKeyPEM: []byte(r.rec.PrivateKeyPEM),
		ChainPEM:      certs[url].Cert,
		Leaf:          leaf,
		URL:           url,
		OrderURL:      r.rec.OrderURL,
	}

	if err := r.forget(); err != nil {
		return nil, err
	}

	r.log.Info("certificate issued", "order", cert.OrderURL, "certificate", url, "not_after", leaf.NotAfter)

	return cert, nil
}

// pickChain returns the URL of the chain whose top certificate was issued by the root
// named req.PreferredChain, or the CA's default chain when none is (or none is asked for).
func (r *run) pickChain(certs map[string]*acme.RawCertificate, defaultURL string) string {
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

	r.log.Info("no chain ends at the preferred root, using the CA's default chain", "preferred_chain", r.req.PreferredChain)

	return defaultURL
}

// pendingAuthz is an authorization whose challenge is published and triggered.
type pendingAuthz struct {
	url, domain, token, keyAuth string
}

// authorize publishes and triggers the challenge of every pending authorization, waits
// for the CA to validate them, cleans up, and re-reads the order. attempt counts the
// order's polls: when every authorization is already valid but the CA still reports the
// order pending, the re-read waits like a poll.
func (r *run) authorize(order acme.Order, attempt int) (acme.Order, error) {
	var started []pendingAuthz

	defer func() {
		for _, p := range started {
			if err := r.c.solver.CleanUp(p.domain, p.token, p.keyAuth); err != nil {
				r.log.Warn("challenge cleanup failed", "domain", p.domain, "error", err)
			}
		}
	}()

	for _, url := range order.Authorizations {
		p, err := r.startAuthz(url)
		if err != nil {
			return acme.Order{}, r.failAuthz(err)
		}

		if p != nil {
			started = append(started, *p)
		}
	}

	for _, p := range started {
		if err := r.awaitAuthz(p); err != nil {
			return acme.Order{}, r.failAuthz(err)
		}
	}

	if len(started) == 0 {
		if err := r.wait(attempt); err != nil {
			return acme.Order{}, err
		}
	}

	return r.getOrder()
}

// failAuthz forgets the order when err is an *AuthorizationError (the CA made the order
// invalid with it) and returns err.
func (r *run) failAuthz(err error) error {
	var ae *AuthorizationError
	if errors.As(err, &ae) {
		if ferr := r.forget(); ferr != nil {
			return errors.Join(err, ferr)
		}
	}

	return err
}

// startAuthz reads one authorization and, when it is pending, publishes its challenge and
// asks the CA to validate it. It returns nil for an authorization that is already valid.
func (r *run) startAuthz(url string) (*pendingAuthz, error) {
	authz, err := r.s.core.Authorizations.Get(url)
	if err != nil {
		return nil, classify("acme: read authorization "+url, err)
	}

	domain := challenge.GetTargetedDomain(authz)

	switch authz.Status {
	case acme.StatusValid:
		return nil, nil
	case acme.StatusPending:
	default:
		return nil, authzError(domain, authz)
	}

	chal, err := challenge.FindChallenge(r.c.chalType, authz)
	if err != nil {
		return nil, fmt.Errorf("acme: authorize %s: %w", domain, err)
	}

	keyAuth, err := r.s.core.GetKeyAuthorization(chal.Token)
	if err != nil {
		return nil, fmt.Errorf("acme: authorize %s: key authorization: %w", domain, err)
	}

	if err := r.c.solver.Present(domain, chal.Token, keyAuth); err != nil {
		return nil, fmt.Errorf("acme: authorize %s: publish %s challenge: %w", domain, chal.Type, err)
	}

	p := &pendingAuthz{url: url, domain: domain, token: chal.Token, keyAuth: keyAuth}

	// A challenge already "processing" was triggered by an earlier attempt: the CA is
	// validating it, and a second trigger would be refused.
	if chal.Status == acme.StatusPending {
		if _, err := r.s.core.Challenges.New(chal.URL); err != nil {
			return p, classify("acme: trigger challenge for "+domain, err)
		}
	}

	r.log.Info("challenge published", "domain", domain, "type", chal.Type)

	return p, nil
}

// awaitAuthz polls one authorization until the CA has decided it.
func (r *run) awaitAuthz(p pendingAuthz) error {
	for attempt := 0; ; attempt++ {
		if err := sleepCtx(r.ctx, pollDelay(r.s.ex.RetryAfter(p.url), attempt)); err != nil {
			return err
		}

		authz, err := r.s.core.Authorizations.Get(p.url)
		if err != nil {
			return classify("acme: read authorization "+p.url, err)
		}

		switch authz.Status {
		case acme.StatusValid:
			return nil
		case acme.StatusPending:
			r.log.Info("waiting for the CA to validate", "domain", p.domain)
		default:
			return authzError(p.domain, authz)
		}
	}
}

// authzError returns the *AuthorizationError of a failed authorization, with the problem
// of its failed challenge.
func authzError(domain string, authz acme.Authorization) error {
	ae := &AuthorizationError{Domain: domain, Status: authz.Status}

	for _, ch := range authz.Challenges {
		if ch.Error != nil {
			ae.Problem = ch.Error

			break
		}
	}

	return ae
}
