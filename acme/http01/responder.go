package http01

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/certfetch/certfetch"
)

// Responder answers HTTP-01 challenges from memory: GET (or HEAD)
// /.well-known/acme-challenge/<token> gets 200 text/plain with exactly the key
// authorization, an unknown or invalid token 404, other methods 405. It is what the
// plugin's upstream mode forwards to. The Host header is not checked: the token alone
// identifies the challenge. Safe for concurrent use.
type Responder struct {
	mu       sync.RWMutex
	keyAuths map[string]string // token -> key authorization
	server   *http.Server
	listener net.Listener
}

// NewResponder returns a Responder with no challenges and no listener.
func NewResponder() *Responder {
	return &Responder{keyAuths: map[string]string{}}
}

// Present implements challenge.Provider.
func (r *Responder) Present(domain, token, keyAuth string) error {
	if err := checkToken(domain, token); err != nil {
		return err
	}

	r.mu.Lock()
	r.keyAuths[token] = keyAuth
	r.mu.Unlock()

	return nil
}

// CleanUp implements challenge.Provider.
func (r *Responder) CleanUp(_, token, _ string) error {
	r.mu.Lock()
	delete(r.keyAuths, token)
	r.mu.Unlock()

	return nil
}

// ServeHTTP implements http.Handler.
func (r *Responder) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	token, ok := strings.CutPrefix(req.URL.Path, certfetch.ChallengePrefix)
	if !ok || !certfetch.ValidToken(token) {
		http.NotFound(w, req)

		return
	}

	if req.Method != http.MethodGet && req.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)

		return
	}

	r.mu.RLock()
	keyAuth, ok := r.keyAuths[token]
	r.mu.RUnlock()

	if !ok {
		http.NotFound(w, req)

		return
	}

	w.Header().Set("Content-Type", "text/plain")
	_, _ = io.WriteString(w, keyAuth)
}

// readHeaderTimeout bounds how long a client may take to send its request headers: the
// CA's validator sends them at once, a slow-loris client must not hold a connection.
const readHeaderTimeout = 10 * time.Second

// Listen starts serving on addr (e.g. "127.0.0.1:0") in the background. Addr tells the
// address actually bound; Close stops it. A Responder listens at most once.
func (r *Responder) Listen(addr string) error {
	if r.listener != nil {
		return errors.New("http01: responder already listening")
	}

	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("http01: responder listen on %s: %w", addr, err)
	}

	r.listener = ln
	r.server = &http.Server{Handler: r, ReadHeaderTimeout: readHeaderTimeout}

	go func() { _ = r.server.Serve(ln) }()

	return nil
}

// Addr returns the listening address, or nil before Listen.
func (r *Responder) Addr() net.Addr {
	if r.listener == nil {
		return nil
	}

	return r.listener.Addr()
}

// Close stops the listener and waits for requests in flight until ctx ends.
func (r *Responder) Close(ctx context.Context) error {
	if r.server == nil {
		return nil
	}

	if err := r.server.Shutdown(ctx); err != nil {
		return fmt.Errorf("http01: responder shutdown: %w", err)
	}

	return nil
}
