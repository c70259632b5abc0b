package testca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/letsencrypt/pebble/v2/acme"
	"github.com/letsencrypt/pebble/v2/core"
)

// faults holds the run-time switches; every method is safe for concurrent use.
type faults struct {
	unavailable atomic.Bool
	keepPending atomic.Bool // KeepFailedChallengesPending
	refuseRevoc atomic.Bool // RefuseRevocations

	mu                  sync.Mutex
	rateLimited         int // newOrder requests still to refuse
	rateLimitRetryAfter time.Duration
	forgotten           map[string]bool // order IDs
	window              *suggestedWindow
	misissue            int               // certificate downloads still to mis-issue
	forgottenAccounts   map[string]string // account ID -> JWK thumbprint (base64url)
}

// suggestedWindow is the ARI window (RFC 9773 §4.2) in JSON form.
type suggestedWindow struct {
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
}

func (f *faults) rateLimit(n int, retryAfter time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rateLimited = max(n, 0)
	f.rateLimitRetryAfter = retryAfter
}

// takeRateLimit consumes one refusal if any is left.
func (f *faults) takeRateLimit() (retryAfter time.Duration, limited bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.rateLimited == 0 {
		return 0, false
	}
	f.rateLimited--
	return f.rateLimitRetryAfter, true
}

func (f *faults) forget(orderID string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.forgotten[orderID] = true
}

func (f *faults) isForgotten(orderID string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.forgotten[orderID]
}

func (f *faults) setRenewalWindow(start, end time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.window = &suggestedWindow{Start: start.UTC(), End: end.UTC()}
}

func (f *faults) clearRenewalWindow() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.window = nil
}

func (f *faults) renewalWindow() (suggestedWindow, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.window == nil {
		return suggestedWindow{}, false
	}
	return *f.window, true
}

func (f *faults) setMisissue(n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.misissue = max(n, 0)
}

func (f *faults) misissuePending() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.misissue > 0
}

// takeMisissue consumes one mis-issued download if any is left.
func (f *faults) takeMisissue() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.misissue == 0 {
		return false
	}
	f.misissue--
	return true
}

func (f *faults) forgetAccount(id, thumbprint string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.forgottenAccounts[id] = thumbprint
}

// accountForgotten reports whether the account with this ID is forgotten.
func (f *faults) accountForgotten(id string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.forgottenAccounts[id]
	return ok
}

// forgottenAccountWithKey returns the ID of the forgotten account whose key
// has this thumbprint.
func (f *faults) forgottenAccountWithKey(thumbprint string) (string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for id, t := range f.forgottenAccounts {
		if t == thumbprint {
			return id, true
		}
	}
	return "", false
}

func (f *faults) rememberAccount(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.forgottenAccounts, id)
}

// jwsRequest is what the wrapper reads of a POST's flattened JWS (RFC 8555
// §6.2). The signature is not checked here: Pebble checks it for every
// request the wrapper passes on, and the faults below never need a verified
// sender (a forged kid gets the same answer as from a CA that forgot it).
type jwsRequest struct {
	kid     string          // protected header "kid", "" if absent
	jwk     json.RawMessage // protected header "jwk", nil if absent
	payload []byte
	// postAsGet is true for an empty payload (RFC 8555 §6.3).
	postAsGet bool
}

// parseJWS reads body as a flattened JWS; ok is false if it is not one.
func parseJWS(body []byte) (jwsRequest, bool) {
	var envelope struct {
		Protected string `json:"protected"`
		Payload   string `json:"payload"`
	}
	if json.Unmarshal(body, &envelope) != nil {
		return jwsRequest{}, false
	}
	protected, err := base64URL(envelope.Protected)
	if err != nil {
		return jwsRequest{}, false
	}
	var header struct {
		KID string          `json:"kid"`
		JWK json.RawMessage `json:"jwk"`
	}
	if json.Unmarshal(protected, &header) != nil {
		return jwsRequest{}, false
	}
	payload, err := base64URL(envelope.Payload)
	if err != nil {
		return jwsRequest{}, false
	}
	return jwsRequest{kid: header.KID, jwk: header.JWK, payload: payload, postAsGet: envelope.Payload == ""}, true
}

// jwkThumbprint is the RFC 7638 SHA-256 thumbprint of a JWK, base64url.
func jwkThumbprint(key *jose.JSONWebKey) (string, error) {
	sum, err := key.Thumbprint(crypto.SHA256)
	if err != nil {
		return "", fmt.Errorf("thumbprint of account key: %w", err)
	}
	return encodeBase64URL(sum), nil
}

// accountIDFromURL returns the ID of an account URL of this CA.
func accountIDFromURL(accountURL string) (string, error) {
	id, ok := strings.CutPrefix(urlPath(accountURL), acctPath)
	if !ok || id == "" || strings.Contains(id, "/") {
		return "", fmt.Errorf("path %q is not %s<id>", urlPath(accountURL), acctPath)
	}
	return id, nil
}

// forgottenKID answers 400 accountDoesNotExist for a request signed with
// the kid of a forgotten account; it reports whether it answered.
func (h *slowHandler) forgottenKID(w http.ResponseWriter, r *http.Request, jws jwsRequest) bool {
	if jws.kid == "" {
		return false
	}
	id, err := accountIDFromURL(jws.kid)
	if err != nil || !h.faults.accountForgotten(id) {
		return false
	}
	// Pebble's own text for an unknown kid.
	h.writeProblem(w, r, http.StatusBadRequest, problemAccountDoesNotExist,
		"URL in JWS 'kid' field does not correspond to an account (ForgetAccount)", 0)
	return true
}

// newAccount re-creates a forgotten account: Pebble still has it and
// answers 200 with its URL; the wrapper answers 201 Created (a CA that had
// forgotten the account creates a new one) and forgets no more. A request
// with onlyReturnExisting gets accountDoesNotExist, as from such a CA.
func (h *slowHandler) newAccount(w http.ResponseWriter, r *http.Request, jws jwsRequest) {
	var key jose.JSONWebKey
	if len(jws.jwk) == 0 || key.UnmarshalJSON(jws.jwk) != nil {
		h.pebble.ServeHTTP(w, r) // Pebble refuses it with its own problem
		return
	}
	thumbprint, err := jwkThumbprint(&key)
	if err != nil {
		h.pebble.ServeHTTP(w, r)
		return
	}
	id, forgotten := h.faults.forgottenAccountWithKey(thumbprint)
	if !forgotten {
		h.pebble.ServeHTTP(w, r)
		return
	}
	var request struct {
		OnlyReturnExisting bool `json:"onlyReturnExisting"`
	}
	if json.Unmarshal(jws.payload, &request) == nil && request.OnlyReturnExisting {
		// Pebble's own text for this case.
		h.writeProblem(w, r, http.StatusBadRequest, problemAccountDoesNotExist,
			"unable to find existing account for only-return-existing request (ForgetAccount)", 0)
		return
	}
	rec := h.record(r)
	if rec.Code == http.StatusOK {
		h.faults.rememberAccount(id)
		rec.Code = http.StatusCreated
		h.logger.Debug("test CA: forgotten account re-created", "account", id)
	}
	writeRecorded(w, rec, rec.Body.Bytes())
}

// certificate answers a certificate download, mis-issued if
// IssueForAnotherKey asks for it. The fault is consumed only by a download
// Pebble answers with a certificate.
func (h *slowHandler) certificate(w http.ResponseWriter, r *http.Request) {
	if !h.faults.misissuePending() {
		h.pebble.ServeHTTP(w, r)
		return
	}
	rec := h.record(r)
	if rec.Code != http.StatusOK || !h.faults.takeMisissue() {
		writeRecorded(w, rec, rec.Body.Bytes())
		return
	}
	chain, err := h.misissue(strings.TrimPrefix(r.URL.Path, certPath))
	if err != nil {
		h.logger.Error("test CA: IssueForAnotherKey failed", "err", err)
		h.writeProblem(w, r, http.StatusInternalServerError, problemServerInternal, "IssueForAnotherKey: "+err.Error(), 0)
		return
	}
	writeRecorded(w, rec, chain)
}

// misissue has Pebble issue, for the order of the certificate with this ID,
// a second certificate for the same names, profile and validity period but a
// fresh key of the same type, and returns its chain (leaf first, then the
// same intermediates as the genuine chain; certPathRest may carry Pebble's
// "/alternate/<n>" suffix). The certificate is a genuine Pebble certificate,
// signed by the CA's intermediate and known to ARI; only its key is wrong.
func (h *slowHandler) misissue(certPathRest string) ([]byte, error) {
	id, alternate := certPathRest, 0
	if base, n, found := strings.Cut(certPathRest, "/alternate/"); found {
		no, err := strconv.Atoi(n)
		if err != nil {
			return nil, fmt.Errorf("certificate path %q: %w", certPathRest, err)
		}
		id, alternate = base, no
	}
	genuine := h.db.GetCertificateByID(id)
	if genuine == nil {
		return nil, fmt.Errorf("no certificate %q", id)
	}
	order := h.orderOfCertificate(genuine)
	if order == nil {
		return nil, fmt.Errorf("no order of account %q has certificate %q", genuine.AccountID, id)
	}
	key, err := keyLike(genuine.Cert.PublicKey)
	if err != nil {
		return nil, err
	}

	order.RLock()
	standIn := &core.Order{
		ID:                   "misissued-" + order.ID,
		AccountID:            order.AccountID,
		BeganProcessing:      true,
		AuthorizationObjects: order.AuthorizationObjects,
		ParsedCSR: &x509.CertificateRequest{
			DNSNames:    genuine.Cert.DNSNames,
			IPAddresses: genuine.Cert.IPAddresses,
			Extensions:  order.ParsedCSR.Extensions, // Pebble copies only OCSP Must-Staple
			PublicKey:   key.Public(),
		},
	}
	standIn.Profile = order.Profile
	order.RUnlock()
	standIn.NotBefore = genuine.Cert.NotBefore.UTC().Format(time.RFC3339)
	standIn.NotAfter = genuine.Cert.NotAfter.UTC().Format(time.RFC3339)

	h.ca.CompleteOrder(standIn) // logs, and issues nothing, on failure
	standIn.RLock()
	issued := standIn.CertificateObject
	standIn.RUnlock()
	if issued == nil {
		return nil, fmt.Errorf("pebble issued no certificate for order %s (see its log)", order.ID)
	}
	h.logger.Debug("test CA: mis-issued a certificate for another key", "order", order.ID, "genuine", id, "misissued", issued.ID)
	return issued.Chain(alternate), nil
}

// orderOfCertificate finds the order that issued cert among its account's
// orders. (Pebble's GetOrderByIssuedSerial knows the order only a moment
// after the order shows the certificate URL.)
func (h *slowHandler) orderOfCertificate(cert *core.Certificate) *core.Order {
	for _, order := range h.db.GetOrdersByAccountID(cert.AccountID) {
		order.RLock()
		issued := order.CertificateObject
		order.RUnlock()
		if issued != nil && issued.ID == cert.ID {
			return order
		}
	}
	return nil
}

// keyLike generates a fresh private key of the same type and size as pub.
func keyLike(pub crypto.PublicKey) (crypto.Signer, error) {
	switch pub := pub.(type) {
	case *ecdsa.PublicKey:
		return ecdsa.GenerateKey(pub.Curve, rand.Reader)
	case *rsa.PublicKey:
		return rsa.GenerateKey(rand.Reader, pub.N.BitLen())
	case ed25519.PublicKey:
		_, key, err := ed25519.GenerateKey(rand.Reader)
		return key, err
	default:
		return nil, fmt.Errorf("unsupported certificate key type %T", pub)
	}
}

// step-ca v0.30.2's problem documents for failed HTTP-01 validations
// (acme/challenge.go http01Validate; see testservers.StartStepCA): the
// fixed detail of the problem type, no "status" member.
var (
	// stepCAConnectionProblem: the key authorization could not be fetched
	// (dial error, or HTTP status >= 400); the challenge stays pending.
	stepCAConnectionProblem = acme.ProblemDetails{
		Type: problemConnection, Detail: "The server could not connect to validation target",
	}
	// stepCARejectedProblem: the body did not match the key authorization;
	// the challenge is invalid, its authorization stays pending.
	stepCARejectedProblem = acme.ProblemDetails{
		Type: problemRejectedIdentifier, Detail: "The server will not issue certificates for the identifier",
	}
)

// stepCAFailure returns what step-ca stores for a validation that Pebble's
// VA failed with prob: the challenge's status and problem. ok is false for
// failures this package does not map (Pebble's outcome stands).
func stepCAFailure(prob *acme.ProblemDetails) (status string, stepProb acme.ProblemDetails, ok bool) {
	if prob == nil {
		return "", acme.ProblemDetails{}, false
	}
	switch {
	case prob.Type == problemConnection, prob.Type == problemDNS,
		prob.Type == problemUnauthorized && strings.HasPrefix(prob.Detail, "Non-200 status code"):
		return acme.StatusPending, stepCAConnectionProblem, true
	case prob.Type == problemUnauthorized && strings.HasPrefix(prob.Detail, "The key authorization file from the server did not match"):
		return acme.StatusInvalid, stepCARejectedProblem, true
	default:
		return "", acme.ProblemDetails{}, false
	}
}

// validationWait bounds the wait for Pebble's VA: its HTTP-01 client times
// out after 15 s (va.validationTimeout), plus a margin for a loaded machine.
const validationWait = 30 * time.Second

// validateLikeStepCA answers a POST to a challenge URL as step-ca does
// (KeepFailedChallengesPending): Pebble checks the request; a pending
// challenge is validated, by Pebble's VA, before the answer (a POST with
// payload "{}" starts the validation in Pebble, a POST-as-GET has the
// wrapper start it); the wrapper waits for the VA and maps a failure to
// step-ca's states (settle); the answer is the challenge as it then is,
// with 200 also for a challenge that is no longer pending (Pebble would
// refuse to update it).
//
// While it runs, reads of orders, authorizations and challenges wait
// (h.validations), so no client ever sees Pebble's intermediate states.
func (h *slowHandler) validateLikeStepCA(w http.ResponseWriter, r *http.Request, jws jwsRequest) {
	h.validations.begin()
	defer h.validations.end()
	rec := h.record(r)
	chal := h.db.GetChallengeByID(strings.TrimPrefix(r.URL.Path, challengePath))
	if chal == nil {
		writeRecorded(w, rec, rec.Body.Bytes())
		return
	}
	validating := false
	switch {
	case rec.Code == http.StatusOK && !jws.postAsGet: // Pebble started the validation
		validating = true
	case rec.Code == http.StatusOK && jws.postAsGet:
		validating = h.startValidation(chal, r.Host)
	case rec.Code == http.StatusBadRequest && strings.Contains(rec.Body.String(), "Cannot update challenge with status"):
		rec.Code = http.StatusOK // step-ca answers with the finished challenge
		rec.Header().Set("Content-Type", "application/json")
	default:
		writeRecorded(w, rec, rec.Body.Bytes())
		return
	}
	if validating {
		if err := h.settle(chal); err != nil {
			h.logger.Error("test CA: KeepFailedChallengesPending", "challenge", chal.ID, "err", err)
		}
	}
	chal.RLock()
	body, err := json.MarshalIndent(chal.Challenge, "", "   ")
	chal.RUnlock()
	if err != nil { // cannot happen: plain strings and a problem document
		writeRecorded(w, rec, rec.Body.Bytes())
		return
	}
	writeRecorded(w, rec, body)
}

// startValidation hands a pending challenge to Pebble's VA as Pebble's own
// challenge POST does (wfe.updateChallenge), for a POST-as-GET that Pebble
// has authenticated and answered. It does nothing, and returns false, for a
// challenge that is not pending or whose authorization has expired.
func (h *slowHandler) startValidation(chal *core.Challenge, host string) bool {
	// Lock one at a time: Pebble's VA locks authorization, then challenge.
	chal.RLock()
	authz := chal.Authz
	chal.RUnlock()
	authz.RLock()
	ident, order, expired := authz.Identifier, authz.Order, time.Now().After(authz.ExpiresDate)
	authz.RUnlock()
	if expired {
		return false
	}
	chal.Lock()
	pending := chal.Status == acme.StatusPending
	if pending {
		chal.Status = acme.StatusProcessing
	}
	chal.Unlock()
	if !pending {
		return false
	}
	order.RLock()
	account := h.db.GetAccountByID(order.AccountID)
	order.RUnlock()
	wildcard := strings.HasPrefix(ident.Value, "*.")
	ident.Value = strings.TrimPrefix(ident.Value, "*.")
	accountURL := (&url.URL{Scheme: "https", Host: host, Path: acctPath + account.ID}).String()
	h.va.ValidateChallenge(ident, chal, account, accountURL, wildcard)
	return true
}

// settle waits for Pebble's VA to finish with chal and, for a failure
// stepCAFailure maps, sets the challenge's status and problem to step-ca's
// and undoes what step-ca does not do: the authorization turns pending
// again, the order loses its error (and so reads pending). After a success
// it clears the error an earlier attempt left, as step-ca does.
func (h *slowHandler) settle(chal *core.Challenge) error {
	if err := h.waitFor(validationWait, func() bool {
		chal.RLock()
		defer chal.RUnlock()
		return chal.Status != acme.StatusProcessing
	}); err != nil {
		return fmt.Errorf("validation did not finish: %w", err)
	}
	chal.Lock()
	failed := chal.Status == acme.StatusInvalid
	prob := chal.Error
	authz := chal.Authz
	if chal.Status == acme.StatusValid {
		chal.Error = nil // step-ca clears the last failure's error; Pebble keeps it
	}
	chal.Unlock()
	if !failed {
		return nil
	}
	status, stepProb, ok := stepCAFailure(prob)
	if !ok {
		return nil
	}
	order := authz.Order
	// Pebble's VA sets the order's error just after the authorization's
	// status (va.process): wait for it, or it would land after the undo.
	if err := h.waitFor(time.Second, func() bool {
		order.RLock()
		defer order.RUnlock()
		return order.Error != nil
	}); err != nil {
		return fmt.Errorf("order %s: Pebble's VA set no error: %w", order.ID, err)
	}
	// Lock as Pebble's VA does: authorization, then challenge; the order on
	// its own.
	authz.Lock()
	chal.Lock()
	authz.Status = acme.StatusPending
	chal.Status = status
	chal.Error = &stepProb
	chal.Validated, chal.ValidatedDate = "", time.Time{} // step-ca records only successes
	chal.Unlock()
	authz.Unlock()
	order.Lock()
	order.Error = nil
	order.Unlock()
	h.logger.Debug("test CA: failed validation mapped to step-ca's", "challenge", chal.ID, "status", status, "pebble", prob.Detail)
	return nil
}

// waitFor polls done every millisecond until it returns true, timeout
// passes or the CA closes.
func (h *slowHandler) waitFor(timeout time.Duration, done func() bool) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !done() {
		select {
		case <-tick.C:
		case <-deadline.C:
			return fmt.Errorf("still waiting after %s", timeout)
		case <-h.closing:
			return errors.New("test CA closed")
		}
	}
	return nil
}

// inflight counts validations in progress under KeepFailedChallengesPending;
// wait blocks until there is none.
type inflight struct {
	mu   sync.Mutex
	n    int
	idle chan struct{} // closed when n drops to 0; nil while n == 0
}

func (g *inflight) begin() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.n == 0 {
		g.idle = make(chan struct{})
	}
	g.n++
}

func (g *inflight) end() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.n--
	if g.n == 0 {
		close(g.idle)
		g.idle = nil
	}
}

// wait returns when no validation is in progress or closing is closed.
func (g *inflight) wait(closing <-chan struct{}) {
	g.mu.Lock()
	idle := g.idle
	g.mu.Unlock()
	if idle == nil {
		return
	}
	select {
	case <-idle:
	case <-closing:
	}
}
