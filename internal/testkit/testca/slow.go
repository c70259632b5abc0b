package testca

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/letsencrypt/pebble/v2/acme"
	"github.com/letsencrypt/pebble/v2/db"
)

// Pebble v2.10.3's endpoint paths (unexported constants in its wfe package).
// The tests fail if they drift: every counter and fault depends on them.
const (
	directoryPath   = "/dir"
	noncePath       = "/nonce-plz"
	newOrderPath    = "/order-plz"
	orderPath       = "/my-order/"
	finalizePath    = "/finalize-order/"
	authzPath       = "/authZ/"
	certPath        = "/certZ/"
	renewalInfoPath = "/draft-ietf-acme-ari-03/renewalInfo/"
)

// ACME problem types (RFC 8555 §6.7) the wrapper sends itself.
const (
	problemRateLimited    = "urn:ietf:params:acme:error:rateLimited"
	problemMalformed      = "urn:ietf:params:acme:error:malformed"
	problemServerInternal = "urn:ietf:params:acme:error:serverInternal"
)

// slowHandler wraps Pebble's handler: it counts requests, injects faults and
// delays orders after finalize. Request bodies and the Host header reach
// Pebble untouched (the JWS signs the URL).
type slowHandler struct {
	pebble     http.Handler
	db         *db.MemoryStore
	mode       SlowMode
	retryAfter time.Duration
	delay      atomic.Int64 // time.Duration applied to the next finalize
	logger     *slog.Logger
	stats      counters
	faults     faults

	mu      sync.Mutex
	readyAt map[string]time.Time // order ID -> when the slow CA is done with it

	closing   chan struct{} // closed by close: releases held Sync finalizes
	closeOnce sync.Once
}

func newSlowHandler(pebble http.Handler, store *db.MemoryStore, opts Options, logger *slog.Logger) *slowHandler {
	h := &slowHandler{
		pebble:     pebble,
		db:         store,
		mode:       opts.Mode,
		retryAfter: opts.RetryAfter,
		logger:     logger,
		readyAt:    make(map[string]time.Time),
		closing:    make(chan struct{}),
	}
	h.delay.Store(int64(opts.Delay))
	h.faults.forgotten = make(map[string]bool)
	return h
}

func (h *slowHandler) close() { h.closeOnce.Do(func() { close(h.closing) }) }

func (h *slowHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.stats.requests.Add(1)
	path := r.URL.Path
	post := r.Method == http.MethodPost
	switch {
	case post && path == newOrderPath:
		h.stats.newOrders.Add(1)
	case post && strings.HasPrefix(path, finalizePath):
		h.stats.finalizes.Add(1)
	case post && strings.HasPrefix(path, orderPath):
		h.stats.orderPolls.Add(1)
	case post && strings.HasPrefix(path, authzPath):
		h.stats.authzPolls.Add(1)
	case post && strings.HasPrefix(path, certPath):
		h.stats.certDownloads.Add(1)
	}

	if h.faults.unavailable.Load() {
		h.writeProblem(w, r, http.StatusServiceUnavailable, problemServerInternal,
			"the test CA is unavailable (SetUnavailable)", 0)
		return
	}
	if id, ok := orderIDOf(path); ok && h.faults.isForgotten(id) {
		h.writeProblem(w, r, http.StatusNotFound, problemMalformed,
			fmt.Sprintf("no order %q (ForgetOrder)", id), 0)
		return
	}

	switch {
	case path == newOrderPath:
		if retryAfter, limited := h.faults.takeRateLimit(); limited {
			h.writeProblem(w, r, http.StatusTooManyRequests, problemRateLimited,
				"too many new orders (RateLimitNewOrders)", retryAfter)
			return
		}
		h.newOrder(w, r)
	case h.mode != Instant && strings.HasPrefix(path, finalizePath):
		h.finalize(w, r, strings.TrimPrefix(path, finalizePath))
	case h.mode != Instant && strings.HasPrefix(path, orderPath):
		h.pollOrder(w, r, strings.TrimPrefix(path, orderPath))
	case strings.HasPrefix(path, renewalInfoPath):
		h.renewalInfo(w, r)
	default:
		h.pebble.ServeHTTP(w, r)
	}
}

// newOrder gives orders that name no profile DefaultProfile: Pebble would
// pick a random one.
func (h *slowHandler) newOrder(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		h.writeProblem(w, r, http.StatusBadRequest, problemMalformed, "read newOrder body: "+err.Error(), 0)
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	rec := h.record(r)
	if rec.Code != http.StatusCreated || requestedProfile(body) != "" {
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

// finalize forwards the finalize to Pebble at once and, if Pebble accepts
// it, starts the order's delay. Async answers "processing" at once; Sync
// holds the answer until the delay has passed.
func (h *slowHandler) finalize(w http.ResponseWriter, r *http.Request, id string) {
	rec := h.record(r)
	if rec.Code != http.StatusOK {
		writeRecorded(w, rec, rec.Body.Bytes())
		return
	}
	readyAt := time.Now().Add(time.Duration(h.delay.Load()))
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
// SetRenewalWindow is in force; Pebble still answers unknown certificates.
func (h *slowHandler) renewalInfo(w http.ResponseWriter, r *http.Request) {
	window, forced := h.faults.renewalWindow()
	if !forced {
		h.pebble.ServeHTTP(w, r)
		return
	}
	rec := h.record(r)
	if rec.Code != http.StatusOK {
		writeRecorded(w, rec, rec.Body.Bytes())
		return
	}
	body, err := json.Marshal(map[string]any{"suggestedWindow": window})
	if err != nil {
		h.writeProblem(w, r, http.StatusInternalServerError, problemServerInternal, "encode renewal window: "+err.Error(), 0)
		return
	}
	writeRecorded(w, rec, body)
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

// requestedProfile returns the profile a newOrder JWS asks for ("" for none
// or for a body that is not a JWS, which Pebble rejects anyway).
func requestedProfile(jwsBody []byte) string {
	var jws struct {
		Payload string `json:"payload"`
	}
	if json.Unmarshal(jwsBody, &jws) != nil {
		return ""
	}
	payload, err := base64.RawURLEncoding.DecodeString(jws.Payload)
	if err != nil {
		return ""
	}
	var order struct {
		Profile string `json:"profile"`
	}
	if json.Unmarshal(payload, &order) != nil {
		return ""
	}
	return order.Profile
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

// faults holds the run-time switches; every method is safe for concurrent use.
type faults struct {
	unavailable atomic.Bool

	mu                  sync.Mutex
	rateLimited         int // newOrder requests still to refuse
	rateLimitRetryAfter time.Duration
	forgotten           map[string]bool // order IDs
	window              *suggestedWindow
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
