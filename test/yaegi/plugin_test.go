package yaegi_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const (
	thumbprint   = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
	token        = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"
	keyAuth      = token + "." + thumbprint
	otherToken   = "Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXV4Zm9vYmFyYmF"
	challengeDir = "/.well-known/acme-challenge/"
	backendBody  = "backend"
)

// backend stands for the service behind the router: it answers 299 so that a
// pass-through is told apart from anything the plugin answers.
var backend = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
	w.WriteHeader(299)
	_, _ = io.WriteString(w, backendBody)
})

// serve runs the interpreted middleware in front of next on a real HTTP server.
func serve(t *testing.T, p *interpretedPlugin, settings map[string]any, next http.Handler) *httptest.Server {
	t.Helper()
	h, err := p.newHandler(settings, next)
	require.NoError(t, err)
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

func get(t *testing.T, srv *httptest.Server, method, target, host string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, srv.URL+target, nil)
	require.NoError(t, err)
	req.Host = host
	resp, err := srv.Client().Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(body)
}

func TestInterpretedModes(t *testing.T) {
	t.Parallel()
	p := loadPlugin(t)

	webroot := t.TempDir()
	dir := filepath.Join(webroot, ".well-known", "acme-challenge")
	require.NoError(t, os.MkdirAll(dir, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, token), []byte(keyAuth), 0o644))

	responder := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == challengeDir+token && r.Host == "www.example.com" {
			_, _ = io.WriteString(w, keyAuth)
			return
		}
		http.NotFound(w, r)
	}))
	t.Cleanup(responder.Close)

	tests := []struct {
		desc     string
		settings map[string]any
		// unknownStatus is the answer for a token nobody published: the
		// stateless mode answers every valid token.
		unknownStatus int
	}{
		{desc: "thumbprint", settings: map[string]any{"thumbprint": thumbprint, "domains": "www.example.com,*.apps.example.com"}, unknownStatus: 200},
		{desc: "webroot", settings: map[string]any{"Webroot": webroot, "domains": []any{"www.example.com", "*.apps.example.com"}}, unknownStatus: 404},
		{desc: "upstream", settings: map[string]any{"upstream": responder.URL, "upstreamTimeout": "2s", "DOMAINS": "www.example.com,*.apps.example.com"}, unknownStatus: 404},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			srv := serve(t, p, tc.settings, backend)
			checks := []struct {
				desc, method, target, host string
				status                     int
				body                       string
			}{
				{desc: "challenge", method: "GET", target: challengeDir + token, host: "www.example.com", status: 200, body: keyAuth},
				{desc: "HEAD", method: "HEAD", target: challengeDir + token, host: "www.example.com", status: 200},
				{desc: "unknown token", method: "GET", target: challengeDir + otherToken, host: "www.example.com", status: tc.unknownStatus},
				{desc: "invalid token", method: "GET", target: challengeDir + "a=b", host: "www.example.com", status: 404},
				{desc: "POST", method: "POST", target: challengeDir + token, host: "www.example.com", status: 405},
				{desc: "host not allowed", method: "GET", target: challengeDir + token, host: "evil.example.net", status: 299, body: backendBody},
				{desc: "pass-through", method: "GET", target: "/app", host: "www.example.com", status: 299, body: backendBody},
			}
			for _, c := range checks {
				status, body := get(t, srv, c.method, c.target, c.host)
				assert.Equal(t, c.status, status, c.desc)
				if c.body != "" || c.method == "HEAD" {
					assert.Equal(t, c.body, body, c.desc)
				}
			}
		})
	}
}

func TestInterpretedConfigErrors(t *testing.T) {
	t.Parallel()
	p := loadPlugin(t)
	tests := []struct {
		desc     string
		settings map[string]any
		want     string
	}{
		{desc: "nothing set", settings: nil, want: `certfetch "certfetch-test": set exactly one of thumbprint, webroot or upstream (none is set)`},
		{desc: "two modes", settings: map[string]any{"thumbprint": thumbprint, "webroot": "/srv"}, want: "(thumbprint and webroot are set)"},
		{desc: "bad thumbprint", settings: map[string]any{"thumbprint": "abc"}, want: `thumbprint: want the 43-character base64url`},
		{desc: "duration without unit", settings: map[string]any{"upstream": "http://127.0.0.1:8402", "upstreamTimeout": 3}, want: `upstreamTimeout: want a positive duration such as "3s", got "3"`},
		{desc: "bad domain", settings: map[string]any{"thumbprint": thumbprint, "domains": "ok.example,bad name"}, want: `domains[1]: want a DNS name or *.name, got "bad name"`},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			_, err := p.newHandler(tc.settings, backend)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

// TestPassThroughIsTransparent sends requests that are not challenges through
// the interpreted middleware and checks that the backend sees them byte for
// byte, and that streaming and connection upgrades keep working.
func TestPassThroughIsTransparent(t *testing.T) {
	t.Parallel()
	p := loadPlugin(t)

	t.Run("request and response unchanged", func(t *testing.T) {
		t.Parallel()
		echo := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			body, _ := io.ReadAll(r.Body)
			w.Header().Set("X-Method", r.Method)
			w.Header().Set("X-URI", r.RequestURI)
			w.Header().Set("X-Header", r.Header.Get("X-Custom"))
			w.Header()["X-Raw-Case"] = []string{"kept"}
			w.WriteHeader(http.StatusTeapot)
			_, _ = w.Write(body)
		})
		srv := serve(t, p, map[string]any{"thumbprint": thumbprint}, echo)
		payload := "binary\x00\xffpayload"
		req, err := http.NewRequest("PATCH", srv.URL+"/api/v1/items?q=a%20b&x=1", strings.NewReader(payload))
		require.NoError(t, err)
		req.Header.Set("X-Custom", "value")
		resp, err := srv.Client().Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		assert.Equal(t, http.StatusTeapot, resp.StatusCode)
		assert.Equal(t, payload, string(body))
		assert.Equal(t, "PATCH", resp.Header.Get("X-Method"))
		assert.Equal(t, "/api/v1/items?q=a%20b&x=1", resp.Header.Get("X-URI"))
		assert.Equal(t, "value", resp.Header.Get("X-Header"))
		assert.Equal(t, []string{"kept"}, resp.Header["X-Raw-Case"])
	})

	t.Run("streaming is not buffered", func(t *testing.T) {
		t.Parallel()
		release := make(chan struct{})
		streamer := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			_, _ = io.WriteString(w, "first\n")
			w.(http.Flusher).Flush()
			<-release // the client must see "first" before we go on
			_, _ = io.WriteString(w, "second\n")
		})
		srv := serve(t, p, map[string]any{"thumbprint": thumbprint}, streamer)
		resp, err := srv.Client().Get(srv.URL + "/events")
		require.NoError(t, err)
		defer resp.Body.Close()
		r := bufio.NewReader(resp.Body)
		line, err := r.ReadString('\n')
		require.NoError(t, err)
		assert.Equal(t, "first\n", line)
		close(release)
		line, err = r.ReadString('\n')
		require.NoError(t, err)
		assert.Equal(t, "second\n", line)
	})

	t.Run("upgrade hijacks the connection", func(t *testing.T) {
		t.Parallel()
		upgrader := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Upgrade") != "websocket" {
				http.Error(w, "want upgrade", http.StatusBadRequest)
				return
			}
			conn, rw, err := w.(http.Hijacker).Hijack()
			if err != nil {
				return
			}
			defer conn.Close()
			_, _ = rw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
			_ = rw.Flush()
			msg, _ := rw.ReadString('\n')
			_, _ = rw.WriteString("echo:" + msg)
			_ = rw.Flush()
		})
		srv := serve(t, p, map[string]any{"thumbprint": thumbprint}, upgrader)
		conn, err := net.Dial("tcp", srv.Listener.Addr().String())
		require.NoError(t, err)
		defer conn.Close()
		_, err = io.WriteString(conn, "GET /ws HTTP/1.1\r\nHost: www.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		require.NoError(t, err)
		r := bufio.NewReader(conn)
		resp, err := http.ReadResponse(r, nil)
		require.NoError(t, err)
		assert.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode)
		_, err = io.WriteString(conn, "hello\n")
		require.NoError(t, err)
		line, err := r.ReadString('\n')
		require.NoError(t, err)
		assert.Equal(t, "echo:hello\n", line)
	})
}
