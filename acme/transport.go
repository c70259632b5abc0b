package acme

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	legoacme "github.com/go-acme/lego/v4/acme"
	"github.com/go-acme/lego/v4/acme/api"
)

// TransportOptions configure the connection-level part of the transport to the CA.
type TransportOptions struct {
	// RootCAFiles are PEM files of roots trusted for the CA's TLS certificate (a private CA).
	RootCAFiles []string
	// SystemRoots adds the system pool to RootCAFiles. With no RootCAFiles the system pool
	// is used regardless.
	SystemRoots bool
	// DialTimeout bounds a TCP connect; default DefaultDialTimeout.
	DialTimeout time.Duration
	// TLSHandshakeTimeout bounds a TLS handshake; default DefaultTLSHandshakeTimeout.
	TLSHandshakeTimeout time.Duration
}

// Timeouts bound single requests to the CA. They are applied by the engine per request,
// not by the http.Transport, because one request is special: finalize. A CA that finalizes
// synchronously holds the finalize request open until the certificate is issued (42 s in
// the reported case); the fixed 30 s ResponseHeaderTimeout of lego's client cuts it, and
// the blind re-send then fails with badNonce. For finalize both timeouts are lifted and
// only the order deadline (the Obtain context) bounds the wait.
type Timeouts struct {
	// ResponseHeader bounds the wait for response headers; default DefaultResponseHeaderTimeout.
	ResponseHeader time.Duration
	// Request bounds a whole request including reading the body; default DefaultRequestTimeout.
	Request time.Duration
}

// The defaults of the timeouts to the CA. This package owns them; the configuration's
// defaults are these values.
//
// 10 s to connect or to complete a TLS handshake is generous for any reachable CA. Every
// request except finalize (exempt, see Timeouts) is answered at once by a working CA, so
// 30 s without response headers means it is stuck, not busy. 60 s per request leaves room
// to read a large chain over a slow link.
const (
	DefaultDialTimeout           = 10 * time.Second
	DefaultTLSHandshakeTimeout   = 10 * time.Second
	DefaultResponseHeaderTimeout = 30 * time.Second
	DefaultRequestTimeout        = 60 * time.Second
)

// idleConnTimeout keeps a connection to the CA open between the requests of an order
// (polls arrive seconds apart) without holding it for good.
const idleConnTimeout = 90 * time.Second

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}

	return d
}

// NewTransport returns the transport for an ACME CA with explicit dial and TLS handshake
// timeouts and the roots of opts. It sets no response-header or overall timeout on
// purpose: the Client applies Timeouts per request (see Timeouts).
func NewTransport(opts TransportOptions) (*http.Transport, error) {
	pool, err := rootPool(opts)
	if err != nil {
		return nil, err
	}

	dialer := &net.Dialer{Timeout: orDefault(opts.DialTimeout, DefaultDialTimeout), KeepAlive: 30 * time.Second}

	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           dialer.DialContext,
		TLSClientConfig:       &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout:   orDefault(opts.TLSHandshakeTimeout, DefaultTLSHandshakeTimeout),
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          10,
		IdleConnTimeout:       idleConnTimeout,
		ExpectContinueTimeout: time.Second,
	}, nil
}

func rootPool(opts TransportOptions) (*x509.CertPool, error) {
	if len(opts.RootCAFiles) == 0 || opts.SystemRoots {
		pool, err := x509.SystemCertPool()
		if err != nil {
			return nil, fmt.Errorf("acme: load system roots: %w", err)
		}

		if len(opts.RootCAFiles) == 0 {
			return pool, nil
		}

		return appendRoots(pool, opts.RootCAFiles)
	}

	return appendRoots(x509.NewCertPool(), opts.RootCAFiles)
}

func appendRoots(pool *x509.CertPool, files []string) (*x509.CertPool, error) {
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("acme: read root CA file: %w", err)
		}

		if !pool.AppendCertsFromPEM(data) {
			return nil, fmt.Errorf("acme: read root CA file %s: no PEM certificate in it", f)
		}
	}

	return pool, nil
}

// maxErrorBody bounds how much of a 5xx body is read for its problem document.
const maxErrorBody = 64 << 10

// exchange is the http.RoundTripper of one operation (an Obtain, a registration). lego v4
// builds its requests without a context; exchange binds every request to the operation's
// context, so a cancelled or expired Obtain ends the request in flight (and lego's loops
// with it). It also applies Timeouts per request, records the Retry-After of every
// response (lego drops it for orders and authorizations), and turns transport failures
// and 5xx answers into *UnreachableError. The directory and nonces come from the
// Client's caCache when it has them, and every request that reaches the network waits for
// the cache's rate limit. Safe for concurrent use.
type exchange struct {
	ctx      context.Context
	base     http.RoundTripper
	timeouts Timeouts
	cache    *caCache

	onRequest func(RequestInfo) // nil: not reported

	mu         sync.Mutex
	retryAfter map[string]string   // request URL -> last Retry-After value ("" when absent)
	longPolls  map[string]struct{} // request URLs exempt from Timeouts (finalize)
	kinds      map[string]string   // request URL -> Request* kind, set as the order's URLs become known
}

func newExchange(ctx context.Context, base http.RoundTripper, t Timeouts, cache *caCache, onRequest func(RequestInfo)) *exchange {
	if base == nil {
		base = http.DefaultTransport
	}

	return &exchange{
		ctx:       ctx,
		base:      base,
		cache:     cache,
		onRequest: onRequest,
		timeouts: Timeouts{
			ResponseHeader: orDefault(t.ResponseHeader, DefaultResponseHeaderTimeout),
			Request:        orDefault(t.Request, DefaultRequestTimeout),
		},
		retryAfter: map[string]string{},
		longPolls:  map[string]struct{}{},
		kinds:      map[string]string{},
	}
}

// setKind records what url is (a Request* kind), for Config.OnRequest.
func (e *exchange) setKind(url, kind string) {
	e.mu.Lock()
	defer e.mu.Unlock()

	e.kinds[url] = kind
}

// kindOf names the request to url: what the order told the exchange, else what the
// directory says, else RequestOther.
func (e *exchange) kindOf(url string) string {
	e.mu.Lock()
	kind, ok := e.kinds[url]
	e.mu.Unlock()

	if ok {
		return kind
	}

	return e.cache.kindOf(url)
}

// report hands one request's outcome to Config.OnRequest.
func (e *exchange) report(req *http.Request, took time.Duration, resp *http.Response, err error) {
	if e.onRequest == nil {
		return
	}

	url := req.URL.String()
	info := RequestInfo{Kind: e.kindOf(url), Method: req.Method, URL: url, Duration: took, Err: err}

	if resp != nil {
		info.StatusCode = resp.StatusCode
		info.RetryAfterHeader = resp.Header.Get("Retry-After")
		// An unparsable Retry-After leaves zero; RetryAfterHeader still shows it.
		info.RetryAfter, _ = api.ParseRetryAfter(info.RetryAfterHeader)
	}

	e.onRequest(info)
}

// client returns a fresh *http.Client on the exchange (lego's api.New wraps the client's
// transport in place, so every Core needs its own client).
func (e *exchange) client() *http.Client {
	return &http.Client{Transport: e}
}

// allowLong exempts requests to url from Timeouts: only the context bounds them.
func (e *exchange) allowLong(url string) {
	e.mu.Lock()
	defer e.mu.Unlock()

	e.longPolls[url] = struct{}{}
}

// RetryAfter returns the Retry-After of the last response from url, zero when there was
// none or it did not parse.
func (e *exchange) RetryAfter(url string) time.Duration {
	e.mu.Lock()
	v := e.retryAfter[url]
	e.mu.Unlock()

	d, _ := api.ParseRetryAfter(v)

	return d
}

// RoundTrip implements http.RoundTripper.
func (e *exchange) RoundTrip(req *http.Request) (*http.Response, error) {
	url := req.URL.String()

	if resp := e.cache.answer(req); resp != nil {
		return resp, nil
	}

	if err := e.cache.wait(e.ctx); err != nil {
		return nil, err
	}

	e.mu.Lock()
	_, long := e.longPolls[url]
	e.mu.Unlock()

	ctx, cancel := context.WithCancelCause(e.ctx)
	stopHeader, stopRequest := func() bool { return false }, func() bool { return false }

	if !long {
		stopHeader = time.AfterFunc(e.timeouts.ResponseHeader, func() {
			cancel(fmt.Errorf("no response headers within %s", e.timeouts.ResponseHeader))
		}).Stop
		stopRequest = time.AfterFunc(e.timeouts.Request, func() {
			cancel(fmt.Errorf("request not complete within %s", e.timeouts.Request))
		}).Stop
	}

	sent := time.Now()
	resp, err := e.base.RoundTrip(req.WithContext(ctx))
	took := time.Since(sent)

	stopHeader()

	if err != nil {
		stopRequest()
		cancel(nil)

		if e.ctx.Err() != nil {
			e.report(req, took, nil, e.ctx.Err())

			return nil, e.ctx.Err()
		}

		if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
			err = cause
		}

		err = &UnreachableError{URL: url, Err: err}
		e.report(req, took, nil, err)

		return nil, err
	}

	e.report(req, took, resp, nil)

	e.mu.Lock()
	e.retryAfter[url] = resp.Header.Get("Retry-After")
	e.mu.Unlock()

	if resp.StatusCode >= http.StatusInternalServerError {
		defer cancel(nil)
		defer stopRequest()

		return nil, unavailable(url, resp)
	}

	resp.Body = &releasingBody{ReadCloser: resp.Body, ex: e, url: url, release: func() {
		stopRequest()
		cancel(nil)
	}}

	if err := e.cache.observe(req, resp); err != nil {
		return nil, err
	}

	return resp, nil
}

// unavailable reads a 5xx response into an *UnreachableError, with the CA's problem
// document when the body is one.
func unavailable(url string, resp *http.Response) error {
	defer resp.Body.Close()

	// A Retry-After that does not parse leaves zero: "the CA did not say".
	retry, _ := api.ParseRetryAfter(resp.Header.Get("Retry-After"))
	ue := &UnreachableError{URL: url, StatusCode: resp.StatusCode, RetryAfter: retry, Err: errors.New(resp.Status)}

	body, err := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	if err != nil {
		return ue
	}

	var pd legoacme.ProblemDetails
	if json.Unmarshal(body, &pd) == nil && pd.Type != "" {
		pd.URL, pd.Method, pd.HTTPStatus = url, resp.Request.Method, resp.StatusCode
		ue.Problem, ue.Err = &pd, &pd
	}

	return ue
}

// releasingBody ends the request's timers and context when the body is read to the end or
// closed (lego does not always close bodies it read fully), and reports a body cut by a
// timeout or the network as *UnreachableError.
type releasingBody struct {
	io.ReadCloser

	ex      *exchange
	url     string
	once    sync.Once
	release func()
}

func (b *releasingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == nil {
		return n, nil
	}

	b.once.Do(b.release)

	if errors.Is(err, io.EOF) || b.ex.ctx.Err() != nil {
		return n, err
	}

	return n, &UnreachableError{URL: b.url, Err: err}
}

func (b *releasingBody) Close() error {
	err := b.ReadCloser.Close()
	b.once.Do(b.release)

	return err
}
