package testca

import (
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/letsencrypt/pebble/v2/acme"
	"github.com/letsencrypt/pebble/v2/ca"
	"github.com/letsencrypt/pebble/v2/core"
	"github.com/letsencrypt/pebble/v2/db"
	"github.com/letsencrypt/pebble/v2/va"
)

// Pebble v2.10.3's endpoint paths (unexported constants in its wfe package).
// The tests fail if they drift: every counter and fault depends on them.
const (
	directoryPath   = "/dir"
	noncePath       = "/nonce-plz"
	newAccountPath  = "/sign-me-up"
	acctPath        = "/my-account/"
	newOrderPath    = "/order-plz"
	orderPath       = "/my-order/"
	finalizePath    = "/finalize-order/"
	authzPath       = "/authZ/"
	challengePath   = "/chalZ/"
	certPath        = "/certZ/"
	renewalInfoPath = "/draft-ietf-acme-ari-03/renewalInfo/"
	revokeCertPath  = "/revoke-cert"
)

// ACME problem types (RFC 8555 §6.7) the wrapper sends or recognises.
const (
	problemRateLimited         = "urn:ietf:params:acme:error:rateLimited"
	problemMalformed           = "urn:ietf:params:acme:error:malformed"
	problemServerInternal      = "urn:ietf:params:acme:error:serverInternal"
	problemAccountDoesNotExist = "urn:ietf:params:acme:error:accountDoesNotExist"
	problemConnection          = "urn:ietf:params:acme:error:connection"
	problemDNS                 = "urn:ietf:params:acme:error:dns"
	problemUnauthorized        = "urn:ietf:params:acme:error:unauthorized"
	problemRejectedIdentifier  = "urn:ietf:params:acme:error:rejectedIdentifier"
)

// maxRequestBody bounds the request bodies the wrapper reads (a JWS with a
// CSR is a few kilobytes).
const maxRequestBody = 1 << 20

// slowHandler wraps Pebble's handler: it counts requests, holds them,
// injects faults and delays orders after finalize. Request bodies and the
// Host header reach Pebble untouched (the JWS signs the URL).
type slowHandler struct {
	pebble     http.Handler
	db         *db.MemoryStore
	ca         *ca.CAImpl
	va         *va.VAImpl
	mode       SlowMode
	retryAfter time.Duration
	delay      time.Duration
	// noAuthzReuse: Options.AuthzReusePercent is 0 (see hideValidAuthzs).
	noAuthzReuse bool
	logger       *slog.Logger
	stats        counters
	faults       faults
	holds        holds
	// validations counts challenge validations in progress under
	// KeepFailedChallengesPending; reads of orders, authorizations and
	// challenges wait for them.
	validations inflight

	mu      sync.Mutex
	readyAt map[string]time.Time // order ID -> when the slow CA is done with it

	closing   chan struct{} // closed by close: releases held requests
	closeOnce sync.Once
}

func newSlowHandler(p *pebble, opts Options, logger *slog.Logger) *slowHandler {
	h := &slowHandler{
		pebble:       p.handler,
		db:           p.db,
		ca:           p.ca,
		va:           p.va,
		mode:         opts.Mode,
		retryAfter:   opts.RetryAfter,
		delay:        opts.Delay,
		logger:       logger,
		noAuthzReuse: opts.AuthzReusePercent == 0,
		readyAt:      make(map[string]time.Time),
		closing:      make(chan struct{}),
	}
	h.faults.forgotten = make(map[string]bool)
	h.faults.forgottenAccounts = make(map[string]string)
	return h
}

// close releases every held request (Sync finalizes and HoldNext holds) so
// that the server can shut down without waiting.
func (h *slowHandler) close() {
	h.closeOnce.Do(func() { close(h.closing) })
	h.holds.close()
}

func (h *slowHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	kind := kindOf(r)
	h.stats.count(kind)
	var jws jwsRequest
	if r.Method == http.MethodPost {
		// Read the whole body first: a held request must not depend on a
		// client that may be killed meanwhile, and faults need the JWS.
		body, err := io.ReadAll(io.LimitReader(r.Body, maxRequestBody))
		if err != nil {
			h.writeProblem(w, r, http.StatusBadRequest, problemMalformed, "read request body: "+err.Error(), 0)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		jws, _ = parseJWS(body) // Pebble refuses what is not a JWS
	}
	if hold := h.holds.take(kind); hold != nil {
		defer h.holds.handled(hold)
		defer close(hold.done)
		h.logger.Debug("test CA: holding request", "kind", kind.String(), "path", r.URL.Path)
		if hold.wait() {
			h.logger.Debug("test CA: dropping held request", "kind", kind.String(), "path", r.URL.Path)
			panic(http.ErrAbortHandler) // net/http closes the connection without an answer
		}
	}

	path := r.URL.Path
	if h.faults.unavailable.Load() {
		h.writeProblem(w, r, http.StatusServiceUnavailable, problemServerInternal,
			"the test CA is unavailable (SetUnavailable)", 0)
		return
	}
	if h.forgottenKID(w, r, jws) {
		return
	}
	if id, ok := orderIDOf(path); ok && h.faults.isForgotten(id) {
		h.writeProblem(w, r, http.StatusNotFound, problemMalformed,
			fmt.Sprintf("no order %q (ForgetOrder)", id), 0)
		return
	}

	switch kind {
	case NewAccount:
		h.newAccount(w, r, jws)
	case NewOrder:
		if retryAfter, limited := h.faults.takeRateLimit(); limited {
			h.writeProblem(w, r, http.StatusTooManyRequests, problemRateLimited,
				"too many new orders (RateLimitNewOrders)", retryAfter)
			return
		}
		h.newOrder(w, r, jws)
	case Challenge:
		if h.faults.keepPending.Load() {
			h.validateLikeStepCA(w, r, jws)
			return
		}
		h.validations.wait(h.closing)
		h.pebble.ServeHTTP(w, r)
	case AuthzPoll:
		h.validations.wait(h.closing)
		h.pebble.ServeHTTP(w, r)
	case Finalize, OrderPoll:
		// The slow modes delay an order after finalize; Instant leaves both
		// requests to Pebble.
		h.validations.wait(h.closing)
		switch {
		case h.mode == Instant:
			h.pebble.ServeHTTP(w, r)
		case kind == Finalize:
			h.finalize(w, r, strings.TrimPrefix(path, finalizePath))
		default:
			h.pollOrder(w, r, strings.TrimPrefix(path, orderPath))
		}
	case CertDownload:
		h.certificate(w, r)
	case Revocation:
		h.revoke(w, r)
	default:
		if strings.HasPrefix(path, renewalInfoPath) {
			h.renewalInfo(w, r)
			return
		}
		h.pebble.ServeHTTP(w, r)
	}
}

// newOrder gives orders that name no profile DefaultProfile: Pebble would
// pick a random one.
func (h *slowHandler) newOrder(w http.ResponseWriter, r *http.Request, jws jwsRequest) {
	restore := h.hideValidAuthzs(jws)
	rec := h.record(r)
	restore()
	if rec.Code != http.StatusCreated || requestedProfile(jws.payload) != "" {
		writeRecorded(w, rec, rec.Body.Bytes())
		return
	}
	id, ok := orderIDFromLocation(rec.Header().Get("Location"))
	order := h.db.GetOrderByID(id)
	if !ok || order == nil {
		writeRecorded(w, rec, rec.Body.Bytes())
		return
	}
	order.Lock()
	order.Profile = DefaultProfile
	order.Unlock()
	h.writeOrder(w, rec, func(fields map[string]json.RawMessage) {
		fields["profile"] = jsonString(DefaultProfile)
	})
}

// hideValidAuthzs makes Pebble create pending authorizations for a newOrder
// request when Options.AuthzReusePercent is 0: Pebble tests
// `rand.Intn(100) > percent`, so it still reuses a valid authorization for 1
// order in 100 at 0%, and an order that comes back ready skips the validation a
// test is about. Until the returned function runs (right after Pebble has
// handled the request), the account's valid authorizations for the order's
// identifiers read as deactivated, which Pebble does not reuse; they are valid
// again afterwards. An order read at that moment by another request would look
// invalid; tests do not read a finished order of the same name while ordering
// it again.
func (h *slowHandler) hideValidAuthzs(jws jwsRequest) (restore func()) {
	var order struct {
		Identifiers []acme.Identifier `json:"identifiers"`
	}
	if !h.noAuthzReuse || jws.kid == "" || json.Unmarshal(jws.payload, &order) != nil {
		return func() {}
	}
	account := path.Base(urlPath(jws.kid))
	var hidden []*core.Authorization
	for _, ident := range order.Identifiers {
		for {
			authz := h.db.FindValidAuthorization(account, ident)
			if authz == nil {
				break
			}
			authz.Lock()
			authz.Status = acme.StatusDeactivated
			authz.Unlock()
			hidden = append(hidden, authz)
		}
	}
	return func() {
		for _, authz := range hidden {
			authz.Lock()
			authz.Status = acme.StatusValid
			authz.Unlock()
		}
	}
}

// finalize forwards the finalize to Pebble at once and, if Pebble accepts
// it, starts the order's delay. Async answers "processing" at once; Sync
// holds the answer until the delay has passed.
func (h *slowHandler) finalize(w http.ResponseWriter, r *http.Request, id string) {
	rec := h.record(r)
	if rec.Code != http.StatusOK {
		writeRecorded(w, rec, rec.Body.Bytes())
		return
	}
	readyAt := time.Now().Add(h.delay)
	h.mu.Lock()
	h.readyAt[id] = readyAt
	h.mu.Unlock()

	if h.mode == Async {
		h.writeProcessing(w, rec)
		return
	}
	hold := time.NewTimer(time.Until(readyAt))
	defer hold.Stop()
	select {
	case <-hold.C:
	case <-h.closing:
	case <-r.Context().Done():
		h.logger.Debug("test CA: client left a held finalize; the order still completes", "order", id)
		return
	}
	h.writeCurrentOrder(w, r, rec, id)
}

// pollOrder reports "processing" while the order's delay runs.
func (h *slowHandler) pollOrder(w http.ResponseWriter, r *http.Request, id string) {
	rec := h.record(r)
	h.mu.Lock()
	readyAt, delayed := h.readyAt[id]
	h.mu.Unlock()
	if rec.Code == http.StatusOK && delayed && time.Now().Before(readyAt) {
		h.writeProcessing(w, rec)
		return
	}
	writeRecorded(w, rec, rec.Body.Bytes())
}

// renewalInfo replaces the suggested window of every successful answer when
// SetRenewalWindow is in force (Pebble still answers unknown certificates),
// and otherwise the window of short-lived certificates (shortARI).
func (h *slowHandler) renewalInfo(w http.ResponseWriter, r *http.Request) {
	rec := h.record(r)
	if rec.Code != http.StatusOK {
		writeRecorded(w, rec, rec.Body.Bytes())
		return
	}
	window, forced := h.faults.renewalWindow()
	if !forced {
		cert := h.ariCertificate(strings.TrimPrefix(r.URL.Path, renewalInfoPath))
		if cert == nil || validity(cert) > shortARIValidity {
			writeRecorded(w, rec, rec.Body.Bytes())
			return
		}
		var retryAfter time.Duration
		window, retryAfter = shortARI(cert)
		setRetryAfter(rec.Header(), retryAfter)
	}
	body, err := json.Marshal(map[string]any{"suggestedWindow": window})
	if err != nil {
		h.writeProblem(w, r, http.StatusInternalServerError, problemServerInternal, "encode renewal window: "+err.Error(), 0)
		return
	}
	writeRecorded(w, rec, body)
}

// shortARIValidity is the longest validity shortARI applies to. Pebble's
// own window, [2/3 of the validity - 24 h, 2/3 + 24 h] clipped to the
// validity, is the whole validity for certificates valid 36 h or less.
const shortARIValidity = time.Hour

// shortARI is the renewal information the CA gives a certificate valid
// shortARIValidity or less (MinuteProfile's): the window
// [NotBefore + validity/2, NotBefore + 2*validity/3), that is 30-40 s for a
// 60 s certificate, and Retry-After validity/6 (10 s).
//
// Pebble v2.10.3 would answer, for a 60 s certificate, the window
// [NotBefore, NotAfter] (its ±24 h around 2/3 of the validity, clipped to
// the validity) with Retry-After 6 h: a client following RFC 9773 §4.2
// picks a random time in the window, so it could renew the moment it got
// the certificate, and it would not ask again before the certificate is
// long expired. The window here leaves the client half the validity of use
// and a third of it (20 s) to get the next certificate, and lets it ask
// again well within the validity.
func shortARI(cert *x509.Certificate) (suggestedWindow, time.Duration) {
	v := validity(cert)
	start := cert.NotBefore.Add(v / 2)
	end := cert.NotBefore.Add(2 * v / 3)
	return suggestedWindow{Start: start.UTC(), End: end.UTC()}, v / 6
}

// validity is the certificate's validity period: NotAfter is inclusive
// (RFC 5280 §4.1.2.5), so a certificate Pebble issues for 60 s has NotAfter
// NotBefore + 59 s.
func validity(cert *x509.Certificate) time.Duration {
	return cert.NotAfter.Add(time.Second).Sub(cert.NotBefore)
}

// ariCertificate returns the certificate an ARI path names
// ("<base64url AKI>.<base64url serial>"), or nil; nil for a revoked
// certificate too, whose window Pebble sets to "renew now".
func (h *slowHandler) ariCertificate(certID string) *x509.Certificate {
	_, serialPart, ok := strings.Cut(certID, ".")
	if !ok {
		return nil
	}
	serial, err := base64URL(serialPart)
	if err != nil || len(serial) == 0 {
		return nil
	}
	sn := new(big.Int).SetBytes(serial)
	cert := h.db.GetCertificateBySerial(sn)
	if cert == nil || h.db.GetRevokedCertificateBySerial(sn) != nil {
		return nil
	}
	return cert.Cert
}

// writeProcessing writes Pebble's order answer as "processing", without a
// certificate URL, with the configured Retry-After.
func (h *slowHandler) writeProcessing(w http.ResponseWriter, rec *httptest.ResponseRecorder) {
	setRetryAfter(rec.Header(), h.retryAfter)
	h.writeOrder(w, rec, func(fields map[string]json.RawMessage) {
		fields["status"] = jsonString(acme.StatusProcessing)
		delete(fields, "certificate")
	})
}

// writeCurrentOrder writes Pebble's finalize answer updated to the order's
// state now (Pebble's answer is a snapshot from the moment of finalize).
func (h *slowHandler) writeCurrentOrder(w http.ResponseWriter, r *http.Request, rec *httptest.ResponseRecorder, id string) {
	order := h.db.GetOrderByID(id) // also recomputes the order's status
	if order == nil {
		writeRecorded(w, rec, rec.Body.Bytes())
		return
	}
	order.RLock()
	status := order.Status
	certID := ""
	if order.CertificateObject != nil {
		certID = order.CertificateObject.ID
	}
	order.RUnlock()
	h.writeOrder(w, rec, func(fields map[string]json.RawMessage) {
		fields["status"] = jsonString(status)
		delete(fields, "certificate")
		if certID != "" {
			certURL := url.URL{Scheme: "https", Host: r.Host, Path: certPath + certID}
			fields["certificate"] = jsonString(certURL.String())
		}
	})
}

// writeOrder writes the recorded order answer after edit has changed its
// JSON fields. If the body is not a JSON object it passes unchanged.
func (h *slowHandler) writeOrder(w http.ResponseWriter, rec *httptest.ResponseRecorder, edit func(map[string]json.RawMessage)) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(rec.Body.Bytes(), &fields); err != nil {
		h.logger.Warn("test CA: order answer is not a JSON object; passing it unchanged", "err", err)
		writeRecorded(w, rec, rec.Body.Bytes())
		return
	}
	edit(fields)
	body, err := json.MarshalIndent(fields, "", "  ")
	if err != nil { // cannot happen: the values are valid JSON already
		writeRecorded(w, rec, rec.Body.Bytes())
		return
	}
	writeRecorded(w, rec, body)
}

// record runs r through Pebble and returns its complete answer.
func (h *slowHandler) record(r *http.Request) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	h.pebble.ServeHTTP(rec, r)
	return rec
}

// writeRecorded writes the recorded status and headers (Replay-Nonce, Link,
// Location...) with body, fixing Content-Length.
func writeRecorded(w http.ResponseWriter, rec *httptest.ResponseRecorder, body []byte) {
	header := w.Header()
	for name, values := range rec.Header() {
		header[name] = values
	}
	header.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(rec.Code)
	_, _ = w.Write(body) // the client went away; nothing to do
}

// writeProblem writes an RFC 8555 problem document with a fresh nonce from
// Pebble (ACME servers send one on every answer to a POST; lego takes it if
// present and fetches one otherwise) and Retry-After if retryAfter > 0.
func (h *slowHandler) writeProblem(w http.ResponseWriter, r *http.Request, status int, problemType, detail string, retryAfter time.Duration) {
	h.logger.Debug("test CA: injected fault", "method", r.Method, "path", r.URL.Path, "status", status, "type", problemType)
	body, err := json.Marshal(acme.ProblemDetails{Type: problemType, Detail: detail, HTTPStatus: status})
	if err != nil { // cannot happen: three plain fields
		body = []byte(`{}`)
	}
	header := w.Header()
	if status != http.StatusServiceUnavailable { // a CA that is down hands out no nonces
		if nonce := h.freshNonce(r); nonce != "" {
			header.Set("Replay-Nonce", nonce)
		}
	}
	setRetryAfter(header, retryAfter)
	header.Set("Content-Type", "application/problem+json")
	header.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body) // the client went away; nothing to do
}

// freshNonce asks Pebble's newNonce endpoint for a nonce, in-process.
func (h *slowHandler) freshNonce(r *http.Request) string {
	req, err := http.NewRequestWithContext(r.Context(), http.MethodHead, noncePath, nil)
	if err != nil { // cannot happen: constant method and path
		return ""
	}
	req.Host = r.Host
	req.Header.Set("User-Agent", "certfetch-testca") // Pebble refuses requests without one
	return h.record(req).Header().Get("Replay-Nonce")
}

// setRetryAfter sets Retry-After in whole seconds, rounded up so that a
// client never comes back early; d <= 0 removes it.
func setRetryAfter(header http.Header, d time.Duration) {
	if d <= 0 {
		header.Del("Retry-After")
		return
	}
	header.Set("Retry-After", strconv.Itoa(int(math.Ceil(d.Seconds()))))
}

func jsonString(s string) json.RawMessage {
	b, _ := json.Marshal(s) // a string always marshals
	return b
}

// requestedProfile returns the profile a newOrder payload asks for ("" for
// none, or for a payload that is not JSON, which Pebble rejects anyway).
func requestedProfile(payload []byte) string {
	var order struct {
		Profile string `json:"profile"`
	}
	if json.Unmarshal(payload, &order) != nil {
		return ""
	}
	return order.Profile
}

func base64URL(s string) ([]byte, error) { return base64.RawURLEncoding.DecodeString(s) }

func encodeBase64URL(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// urlPath returns the path of rawURL, or rawURL itself if it does not parse.
func urlPath(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return rawURL
	}
	return u.Path
}

// orderIDOf returns the order ID of an order or finalize URL path.
func orderIDOf(path string) (string, bool) {
	for _, prefix := range []string{orderPath, finalizePath} {
		if id, ok := strings.CutPrefix(path, prefix); ok && id != "" && !strings.Contains(id, "/") {
			return id, true
		}
	}
	return "", false
}

func orderIDFromLocation(location string) (string, bool) {
	id, err := orderIDFromURL(location)
	return id, err == nil
}

// orderIDFromURL returns the ID of an order URL of this CA.
func orderIDFromURL(orderURL string) (string, error) {
	u, err := url.Parse(orderURL)
	if err != nil {
		return "", fmt.Errorf("parse order URL: %w", err)
	}
	id, ok := strings.CutPrefix(u.Path, orderPath)
	if !ok || id == "" || strings.Contains(id, "/") {
		return "", fmt.Errorf("path %q is not %s<id>", u.Path, orderPath)
	}
	return id, nil
}
