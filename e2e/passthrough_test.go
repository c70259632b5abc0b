//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const (
	viaPlugin = "plugin.example.test" // router with README's middleware
	direct    = "direct.example.test" // same backend, no middleware: the baseline
)

// TestPassThroughIsTransparent attaches the plugin to a backend's router and
// compares, request by request, what the backend receives and what the
// client gets back with a second router to the same backend that has no
// middleware. Traefik itself adds X-Forwarded-* and X-Real-Ip on both; any
// difference beyond the Host the client chose is the plugin's doing.
func TestPassThroughIsTransparent(t *testing.T) {
	t.Parallel()
	backend := newEchoBackend(t)
	s := newStack(t, stackOptions{
		mode:    thumbprintMode,
		domains: []string{viaPlugin, direct},
		dynamic: map[string]any{"app.yml": appConfig(backend.server.URL,
			route{name: "app-plugin", host: viaPlugin, plugin: true},
			route{name: "app-direct", host: direct})},
	})
	d := s.daemon(t)
	require.NoError(t, once(t, d))
	leaf := s.published(t)
	s.waitServed(t, viaPlugin, leaf)
	s.waitServed(t, direct, leaf)
	client := s.httpsClient()

	binary := make([]byte, 256*1024)
	for i := range binary {
		binary[i] = byte(i * 7)
	}
	tests := []struct {
		name, method, target string
		header               http.Header
		body                 []byte
		// seen is the request target the backend gets when Traefik
		// changes it for every router alike (sanitizePath); default target.
		seen string
	}{
		{name: "GET with query", method: http.MethodGet, target: "/a/b?x=1&y=%2F&x=2&empty=",
			header: http.Header{"Accept": {"text/html", "application/json"}, "X-Custom": {"one", "two"}, "Cookie": {"a=1; b=2"}}},
		{name: "PUT binary body", method: http.MethodPut, target: "/upload/file.bin",
			header: http.Header{"Content-Type": {"application/octet-stream"}}, body: binary},
		{name: "POST form", method: http.MethodPost, target: "/form?q=%E2%9C%93",
			header: http.Header{"Content-Type": {"application/x-www-form-urlencoded"}}, body: []byte("a=1&b=%26")},
		{name: "DELETE", method: http.MethodDelete, target: "/items/42", header: http.Header{"Authorization": {"Bearer abc"}}},
		{name: "PATCH with status from backend", method: http.MethodPatch, target: "/status/422", body: []byte(`{"x":1}`)},
		{name: "HEAD", method: http.MethodHead, target: "/head"},
		{name: "well-known sibling", method: http.MethodGet, target: "/.well-known/security.txt"},
		{name: "challenge directory without slash", method: http.MethodGet, target: "/.well-known/acme-challenge"},
		// README: the plugin's ServeMux would redirect unclean paths, but
		// Traefik's default sanitizePath cleans them before any middleware.
		{name: "unclean path", method: http.MethodGet, target: "/x/../y//z/./w", seen: "/y/z/w"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := map[string]exchange{}
			for _, host := range []string{viaPlugin, direct} {
				req, err := http.NewRequest(tt.method, "https://"+host+tt.target, bytes.NewReader(tt.body))
				require.NoError(t, err)
				for k, vs := range tt.header {
					req.Header[k] = vs
				}
				resp, err := client.Do(req)
				require.NoError(t, err)
				body, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				require.NoError(t, err)
				resp.Header.Del("Date")
				got[host] = exchange{seen: backend.last(t), status: resp.StatusCode, header: resp.Header, body: body}
			}
			p, dr := got[viaPlugin], got[direct]
			assert.Equal(t, tt.method, p.seen.Method)
			want := tt.target
			if tt.seen != "" {
				want = tt.seen
			}
			assert.Equal(t, want, p.seen.RequestURI, "path and query reach the backend unchanged")
			assert.True(t, bytes.Equal(tt.body, p.seen.Body), "the body reaches the backend byte for byte (sent %d bytes, received %d)", len(tt.body), len(p.seen.Body))
			for k, vs := range tt.header {
				assert.Equal(t, vs, p.seen.Header[k], "header %s", k)
			}
			assert.Equal(t, normalise(dr.seen), normalise(p.seen), "the backend sees the same request with and without the plugin")
			assert.Equal(t, dr.status, p.status)
			assert.Equal(t, dr.header, p.header)
			assert.Equal(t, string(dr.body), string(p.body), "the client gets the same response bytes")
		})
	}

	t.Run("streaming", func(t *testing.T) {
		resp, err := client.Get("https://" + viaPlugin + "/stream")
		require.NoError(t, err)
		defer resp.Body.Close()
		r := bufio.NewReader(resp.Body)
		first, err := r.ReadString('\n')
		require.NoError(t, err)
		assert.Equal(t, "first\n", first)
		assert.False(t, backend.streamDone.Load(), "the first chunk arrived while the handler was still running")
		close(backend.release)
		rest, err := io.ReadAll(r)
		require.NoError(t, err)
		assert.Equal(t, "second\n", string(rest))
	})

	// README says the plugin's ServeMux answers `OPTIONS *` with 400; in
	// Traefik the request never reaches a middleware: Go's http.Server
	// answers it 200 itself, with or without the plugin.
	t.Run("OPTIONS *", func(t *testing.T) {
		for _, host := range []string{viaPlugin, direct} {
			conn, br := dialHTTP1(t, s, host)
			fmt.Fprintf(conn, "OPTIONS * HTTP/1.1\r\nHost: %s\r\n\r\n", host)
			resp, err := http.ReadResponse(br, nil)
			require.NoError(t, err)
			resp.Body.Close()
			assert.Equal(t, http.StatusOK, resp.StatusCode, host)
		}
	})

	t.Run("upgrade", func(t *testing.T) {
		for _, host := range []string{viaPlugin, direct} {
			conn, br := dialHTTP1(t, s, host)
			fmt.Fprintf(conn, "GET /ws HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
				"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", host)
			resp, err := http.ReadResponse(br, nil)
			require.NoError(t, err)
			assert.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode, host)
			assert.Equal(t, "websocket", resp.Header.Get("Upgrade"), host)
			for _, msg := range []string{"hello " + host + "\n", "\x00\x01binary\xff\n"} {
				_, err = io.WriteString(conn, msg)
				require.NoError(t, err)
				echo, err := br.ReadString('\n')
				require.NoError(t, err)
				assert.Equal(t, msg, echo, "%s echoes over the upgraded connection", host)
			}
		}
	})
}

// dialHTTP1 opens a raw HTTP/1.1 connection over TLS to Traefik's websecure
// entry point for requests http.Client cannot send (OPTIONS *, an Upgrade
// followed by raw bytes). It is closed at test end.
func dialHTTP1(t testing.TB, s *stack, host string) (*tls.Conn, *bufio.Reader) {
	t.Helper()
	conn, err := tls.DialWithDialer(&netDialer, "tcp", fmt.Sprintf("127.0.0.1:%d", s.traefik.websecure),
		&tls.Config{ServerName: host, RootCAs: s.roots, NextProtos: []string{"http/1.1"}})
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	require.NoError(t, conn.SetDeadline(time.Now().Add(10*time.Second)))
	return conn, bufio.NewReader(conn)
}

// netDialer bounds connection setup to Traefik.
var netDialer = net.Dialer{Timeout: 5 * time.Second}

// exchange is one request/response through Traefik.
type exchange struct {
	seen   seenRequest
	status int
	header http.Header
	body   []byte
}

// seenRequest is what the backend received.
type seenRequest struct {
	Method, RequestURI, Host, Proto string
	Header                          http.Header
	Body                            []byte `json:"-"`
	BodySHA256                      string // what comparisons and the echo show
	ContentLength                   int64
	TransferEncoding                []string
}

// normalise removes what differs by design between the two routers: the
// Host the client asked for (and Traefik's copy in X-Forwarded-Host).
// The body stays represented by its digest.
func normalise(r seenRequest) seenRequest {
	r.Host = ""
	r.Body = nil // compared by BodySHA256: a diff of 256 KiB helps nobody
	r.Header = r.Header.Clone()
	r.Header.Del("X-Forwarded-Host")
	return r
}

// echoBackend records each request and answers with a response that
// depends on it (status, repeated headers, a body that is the request's
// canonical dump), so any change on the way in shows on the way out too.
type echoBackend struct {
	server     *httptest.Server
	requests   chan seenRequest
	release    chan struct{} // closed by the test to let /stream finish
	streamDone atomic.Bool
}

func newEchoBackend(t testing.TB) *echoBackend {
	t.Helper()
	b := &echoBackend{requests: make(chan seenRequest, 16), release: make(chan struct{})}
	b.server = httptest.NewServer(http.HandlerFunc(b.serve))
	t.Cleanup(b.server.Close)
	return b
}

func (b *echoBackend) serve(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/stream":
		defer b.streamDone.Store(true)
		io.WriteString(w, "first\n")
		w.(http.Flusher).Flush()
		select {
		case <-b.release:
		case <-time.After(15 * time.Second): // bound: a buffering proxy must not hang the suite
		case <-r.Context().Done():
		}
		io.WriteString(w, "second\n")
		return
	case "/ws":
		b.upgrade(w, r)
		return
	}
	body, _ := io.ReadAll(r.Body)
	seen := seenRequest{Method: r.Method, RequestURI: r.RequestURI, Host: r.Host, Proto: r.Proto,
		Header: r.Header.Clone(), Body: body, BodySHA256: fmt.Sprintf("%x", sha256.Sum256(body)), ContentLength: r.ContentLength, TransferEncoding: r.TransferEncoding}
	b.requests <- seen
	status := http.StatusOK
	if code, ok := strings.CutPrefix(r.URL.Path, "/status/"); ok {
		fmt.Sscanf(code, "%d", &status)
	}
	w.Header()["X-Multi"] = []string{"a", "b"}
	w.Header().Set("Content-Type", "application/json")
	http.SetCookie(w, &http.Cookie{Name: "s", Value: "1", Path: "/"})
	http.SetCookie(w, &http.Cookie{Name: "t", Value: "2", Path: "/"})
	w.WriteHeader(status)
	norm := normalise(seen)
	keys := make([]string, 0, len(norm.Header))
	for k := range norm.Header {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	json.NewEncoder(w).Encode(struct {
		Req  seenRequest
		Keys []string
	}{norm, keys})
}

// upgrade switches to an echo protocol over the hijacked connection, the
// way a websocket server takes over a connection.
func (b *echoBackend) upgrade(w http.ResponseWriter, r *http.Request) {
	if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		http.Error(w, "upgrade required", http.StatusUpgradeRequired)
		return
	}
	conn, rw, err := w.(http.Hijacker).Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(15 * time.Second))
	rw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
	rw.Flush()
	io.Copy(conn, rw.Reader) // echo until the client closes
}

// last returns the request the backend received last, bounded in time.
func (b *echoBackend) last(t testing.TB) seenRequest {
	t.Helper()
	select {
	case r := <-b.requests:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("the backend received no request")
		return seenRequest{}
	}
}
