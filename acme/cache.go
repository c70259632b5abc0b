package acme

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/certfetch/certfetch/internal/wait"
)

// caCache is what the attempts of one Client share about their CA: the directory, a pool
// of unused nonces, and the request-rate limit. Each attempt still has its own lego Core
// bound to its own context (see session), but the Core's two set-up requests, the
// directory GET and the first nonce HEAD, are answered from here without the network
// once any attempt has made them. That is how a fleet of attempts stays cancellable one
// by one and still costs fewer requests per certificate than one lego client that lives
// for all of them. Safe for concurrent use.
//
// Nonces. RFC 8555 §7.2: every response carries a fresh Replay-Nonce, and a nonce is good
// for any one request to the same server. lego keeps the nonces of a Core's responses in
// that Core, so the last one of every attempt is wasted and every new attempt starts with
// a HEAD newNonce. The exchange therefore takes the Replay-Nonce out of every response
// (except the answer to newNonce itself, which lego reads) into this shared pool, and
// answers lego's HEAD newNonce from the pool when it holds one. A nonce is handed out
// once; one the CA no longer accepts costs a badNonce answer, which lego retries with the
// fresh nonce that answer carries.
type caCache struct {
	dirURL  string
	limiter *rate.Limiter // nil: no limit

	mu          sync.Mutex
	directory   []byte // the directory's JSON; nil until read
	fetched     time.Time
	newNonceURL string
	endpoints   map[string]string // the directory's resource URLs -> Request* kind
	renewalInfo string            // the ARI base URL; "" when the CA has none
	nonces      []pooledNonce     // oldest first
}

type pooledNonce struct {
	value string
	at    time.Time
}

const (
	// directoryTTL is how long a directory read is reused. Directories change with CA
	// upgrades, a few times a year; an hour bounds how long a changed one goes unseen
	// while costing one request per hour per resolver.
	directoryTTL = time.Hour

	// nonceTTL bounds how old a pooled nonce may be. The RFC sets no lifetime and CAs keep
	// a window of recent nonces; a stale one costs a badNonce round trip, so a minute keeps
	// nearly every pooled nonce good under any traffic.
	nonceTTL = time.Minute

	// maxPooledNonces bounds the pool. Each response adds one nonce and each signed
	// request takes one, so the pool hovers near the number of attempts in flight;
	// anything beyond that would only age.
	maxPooledNonces = 64
)

// newCACache returns the cache for the CA at dirURL. requestsPerSecond > 0 limits the
// requests that reach the network (burst: one second's worth, at least 1).
func newCACache(dirURL string, requestsPerSecond float64) *caCache {
	c := &caCache{dirURL: dirURL}

	if requestsPerSecond > 0 {
		c.limiter = rate.NewLimiter(rate.Limit(requestsPerSecond), max(1, int(requestsPerSecond)))
	}

	return c
}

// answer returns a response made from the cache for req, or nil when req must go to the
// network: the directory while it is fresh, and a nonce while the pool has one.
func (c *caCache) answer(req *http.Request) *http.Response {
	c.mu.Lock()
	defer c.mu.Unlock()

	url := req.URL.String()

	switch {
	case req.Method == http.MethodGet && url == c.dirURL && c.directory != nil && time.Since(c.fetched) < directoryTTL:
		header := http.Header{"Content-Type": {"application/json"}}

		return synthesized(req, header, c.directory)
	case (req.Method == http.MethodHead || req.Method == http.MethodGet) && url == c.newNonceURL:
		nonce, ok := c.takeNonce()
		if !ok {
			return nil
		}

		return synthesized(req, http.Header{"Replay-Nonce": {nonce}, "Cache-Control": {"no-store"}}, nil)
	}

	return nil
}

// takeNonce pops the newest nonce younger than nonceTTL, dropping older ones. c.mu is held.
func (c *caCache) takeNonce() (string, bool) {
	for len(c.nonces) > 0 {
		n := c.nonces[len(c.nonces)-1]
		c.nonces = c.nonces[:len(c.nonces)-1]

		if time.Since(n.at) < nonceTTL {
			return n.value, true
		}

		c.nonces = c.nonces[:0] // the rest is older still
	}

	return "", false
}

// observe takes what the cache keeps from a response that came from the network: the
// directory (resp.Body is replaced by a copy), and the Replay-Nonce (removed from the
// response, except for newNonce answers, which lego reads). It returns an error only
// when reading the directory's body failed.
func (c *caCache) observe(req *http.Request, resp *http.Response) error {
	url := req.URL.String()

	c.mu.Lock()
	isNonceURL := url == c.newNonceURL
	c.mu.Unlock()

	if nonce := resp.Header.Get("Replay-Nonce"); nonce != "" && !isNonceURL {
		resp.Header.Del("Replay-Nonce")
		c.putNonce(nonce)
	}

	if req.Method != http.MethodGet || url != c.dirURL || resp.StatusCode != http.StatusOK {
		return nil
	}

	body, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(body))

	if err != nil {
		return err
	}

	var dir struct {
		NewNonce    string `json:"newNonce"`
		NewAccount  string `json:"newAccount"`
		NewOrder    string `json:"newOrder"`
		RevokeCert  string `json:"revokeCert"`
		KeyChange   string `json:"keyChange"`
		RenewalInfo string `json:"renewalInfo"`
	}

	// A body that is not a directory is left to lego to report; it is not cached.
	if json.Unmarshal(body, &dir) == nil && strings.HasPrefix(dir.NewNonce, "https://") {
		endpoints := map[string]string{
			dir.NewNonce:   RequestNewNonce,
			dir.NewAccount: RequestNewAccount,
			dir.NewOrder:   RequestNewOrder,
			dir.RevokeCert: RequestRevoke,
			dir.KeyChange:  RequestKeyChange,
		}
		delete(endpoints, "")

		c.mu.Lock()
		c.directory, c.fetched, c.newNonceURL = body, time.Now(), dir.NewNonce
		c.endpoints, c.renewalInfo = endpoints, dir.RenewalInfo
		c.mu.Unlock()
	}

	return nil
}

// kindOf names a request to url from the directory: one of its resources (or the
// directory itself), RequestOther for anything else.
func (c *caCache) kindOf(url string) string {
	c.mu.Lock()
	defer c.mu.Unlock()

	if url == c.dirURL {
		return RequestDirectory
	}

	if kind, ok := c.endpoints[url]; ok {
		return kind
	}

	if c.renewalInfo != "" && strings.HasPrefix(url, c.renewalInfo) {
		return RequestRenewalInfo
	}

	return RequestOther
}

func (c *caCache) putNonce(nonce string) {
	c.mu.Lock()
	defer c.mu.Unlock()

	if len(c.nonces) == maxPooledNonces {
		c.nonces = append(c.nonces[:0], c.nonces[1:]...)
	}

	c.nonces = append(c.nonces, pooledNonce{value: nonce, at: time.Now()})
}

// wait blocks until the rate limit lets one more request through, or ctx ends (then it
// returns ctx's error and the request is not counted).
func (c *caCache) wait(ctx context.Context) error {
	if c.limiter == nil {
		return nil
	}

	r := c.limiter.Reserve()
	if err := wait.Sleep(ctx, r.Delay()); err != nil {
		r.Cancel()

		return err
	}

	return nil
}

// synthesized is a 200 response to req with header and body, as if from the CA.
func synthesized(req *http.Request, header http.Header, body []byte) *http.Response {
	return &http.Response{
		Status:        "200 OK",
		StatusCode:    http.StatusOK,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        header,
		Body:          io.NopCloser(bytes.NewReader(body)),
		ContentLength: int64(len(body)),
		Request:       req,
	}
}
