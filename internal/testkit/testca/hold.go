package testca

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
)

// RequestKind is a kind of ACME request, as the CA counts (Stats) and holds
// (HoldNext) them. Every kind is a POST (a JWS) to one kind of URL, whatever
// its payload and whatever the CA answers.
type RequestKind int

// The request kinds. otherRequest (directory, nonces, ARI, account updates...)
// cannot be held.
const (
	otherRequest RequestKind = iota
	// NewAccount is a POST to the newAccount URL.
	NewAccount
	// NewOrder is a POST to the newOrder URL.
	NewOrder
	// Challenge is a POST to a challenge URL: a request to validate (payload
	// "{}") or a POST-as-GET that reads the challenge.
	Challenge
	// AuthzPoll is a POST to an authorization URL (a POST-as-GET, or a
	// deactivation).
	AuthzPoll
	// Finalize is a POST to an order's finalize URL.
	Finalize
	// OrderPoll is a POST to an order URL.
	OrderPoll
	// CertDownload is a POST to a certificate URL.
	CertDownload
	// Revocation is a POST to the revokeCert URL.
	Revocation
	numKinds // keep last
)

// String names the kind for logs and test names.
func (k RequestKind) String() string {
	switch k {
	case otherRequest:
		return "other"
	case NewAccount:
		return "newAccount"
	case NewOrder:
		return "newOrder"
	case Challenge:
		return "challenge"
	case AuthzPoll:
		return "authzPoll"
	case Finalize:
		return "finalize"
	case OrderPoll:
		return "orderPoll"
	case CertDownload:
		return "certDownload"
	case Revocation:
		return "revocation"
	default:
		return fmt.Sprintf("RequestKind(%d)", int(k))
	}
}

// kindOf classifies a request by method and Pebble's URL paths.
func kindOf(r *http.Request) RequestKind {
	if r.Method != http.MethodPost {
		return otherRequest
	}
	path := r.URL.Path
	switch {
	case path == newAccountPath:
		return NewAccount
	case path == newOrderPath:
		return NewOrder
	case strings.HasPrefix(path, challengePath):
		return Challenge
	case strings.HasPrefix(path, authzPath):
		return AuthzPoll
	case strings.HasPrefix(path, finalizePath):
		return Finalize
	case strings.HasPrefix(path, orderPath):
		return OrderPoll
	case strings.HasPrefix(path, certPath):
		return CertDownload
	case path == revokeCertPath:
		return Revocation
	default:
		return otherRequest
	}
}

// Hold catches the next request of one kind (see CA.HoldNext) and keeps it
// waiting inside the CA, before the CA has looked at it, until the test
// decides its fate: Release lets the CA process it, Drop closes the
// connection without an answer as if the request had never arrived.
//
// The request is read completely (headers and body) before it is held, so
// a client killed while its request is held cannot change what the CA
// processes on Release: the CA then processes a request whose sender is
// gone, exactly the "request reached the CA, the client never saw the
// answer" case of a crash. Drop is the "request never reached the CA" case.
//
// Methods are safe for concurrent use and idempotent; the first of Release,
// Drop and the CA's Close decides.
type Hold struct {
	kind    RequestKind
	reached chan struct{} // closed when the request is held
	decided chan struct{} // closed by the first of Release, Drop, Close
	done    chan struct{} // closed when a held request has been handled

	mu      sync.Mutex
	drop    bool
	decide  sync.Once
	arrived bool
}

func newHold(kind RequestKind) *Hold {
	return &Hold{
		kind:    kind,
		reached: make(chan struct{}),
		decided: make(chan struct{}),
		done:    make(chan struct{}),
	}
}

// Kind is the kind of request the hold catches.
func (h *Hold) Kind() RequestKind { return h.kind }

// Reached is closed when the held request has arrived completely and is
// being held (or, if Release or Drop came first, when it arrives and is let
// through or dropped at once). It never closes if no such request arrives.
func (h *Hold) Reached() <-chan struct{} { return h.reached }

// Release lets the held request through to the CA and returns once the CA
// has answered it (written to a client that may be gone), so the CA's state
// reflects the request when Release returns. In Sync mode a released
// finalize is answered only after Delay. Called before the request arrived,
// Release returns at once and the request will pass without waiting.
func (h *Hold) Release() { h.finish(false) }

// Drop closes the held request's connection without an answer; the CA never
// processes the request (Stats count it: it arrived). Called before the
// request arrived, Drop returns at once and the request will be dropped on
// arrival.
func (h *Hold) Drop() { h.finish(true) }

func (h *Hold) finish(drop bool) {
	h.decide.Do(func() {
		h.mu.Lock()
		h.drop = drop
		h.mu.Unlock()
		close(h.decided)
	})
	h.mu.Lock()
	arrived := h.arrived
	h.mu.Unlock()
	if arrived {
		<-h.done
	}
}

// wait marks the request as arrived, closes Reached and blocks until the
// hold is decided. It reports whether the request must be dropped.
func (h *Hold) wait() (drop bool) {
	h.mu.Lock()
	h.arrived = true
	h.mu.Unlock()
	close(h.reached)
	<-h.decided
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.drop
}

// holds queues the holds per kind, first in first out, and remembers every
// hold not yet handled so that Close can release it.
type holds struct {
	mu      sync.Mutex
	pending map[RequestKind][]*Hold
	live    map[*Hold]bool // added and not yet handled
	closed  bool
}

// add queues a hold; after close it is released at once (Close released
// everything, and a closed CA serves no more requests anyway).
func (hs *holds) add(h *Hold) {
	hs.mu.Lock()
	closed := hs.closed
	if !closed {
		if hs.pending == nil {
			hs.pending = make(map[RequestKind][]*Hold)
			hs.live = make(map[*Hold]bool)
		}
		hs.pending[h.kind] = append(hs.pending[h.kind], h)
		hs.live[h] = true
	}
	hs.mu.Unlock()
	if closed {
		h.Release()
	}
}

// take removes and returns the oldest hold for kind, or nil.
func (hs *holds) take(kind RequestKind) *Hold {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	queue := hs.pending[kind]
	if len(queue) == 0 {
		return nil
	}
	hs.pending[kind] = queue[1:]
	return queue[0]
}

// handled forgets a hold whose request has been answered or dropped.
func (hs *holds) handled(h *Hold) {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	delete(hs.live, h)
}

// close releases every hold not yet decided, caught or not.
func (hs *holds) close() {
	hs.mu.Lock()
	hs.closed = true
	live := hs.live
	hs.pending, hs.live = nil, nil
	hs.mu.Unlock()
	for h := range live {
		h.decide.Do(func() { close(h.decided) })
	}
}
