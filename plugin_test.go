package certfetch

// These tests use the standard library only and also pass under `yaegi test`
// (make test-yaegi), so they hold for the interpreted plugin too. Yaegi runs
// Go 1.21 semantics: loop variables are copied before closures capture them.

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const (
	testThumbprint = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
	testToken      = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"
	testKeyAuth    = testToken + "." + testThumbprint
	nextBody       = "from next"
)

// nextHandler records that it ran and answers 299 with nextBody, a status no
// challenge path produces.
type nextHandler struct {
	called bool
	w      http.ResponseWriter
}

func (n *nextHandler) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	n.called = true
	n.w = w
	w.WriteHeader(299)
	_, _ = io.WriteString(w, nextBody)
}

func newPlugin(t *testing.T, cfg *Config, next http.Handler) http.Handler {
	t.Helper()
	h, err := New(context.Background(), next, cfg, "test")
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return h
}

func TestNewRejectsBadConfig(t *testing.T) {
	t.Parallel()
	tests := []struct {
		desc string
		cfg  Config
		want string
	}{
		{desc: "no mode", cfg: Config{}, want: "set exactly one of thumbprint, webroot or upstream (none is set)"},
		{desc: "two modes", cfg: Config{Thumbprint: testThumbprint, Webroot: "/srv"}, want: "(thumbprint and webroot are set)"},
		{desc: "three modes", cfg: Config{Thumbprint: testThumbprint, Webroot: "/srv", Upstream: "http://127.0.0.1:1"}, want: "(thumbprint and webroot and upstream are set)"},
		{desc: "short thumbprint", cfg: Config{Thumbprint: "abc"}, want: `thumbprint: want the 43-character base64url SHA-256 JWK thumbprint of the account key (certfetch thumbprint prints it), got "abc"`},
		{desc: "padded thumbprint", cfg: Config{Thumbprint: testThumbprint[:42] + "="}, want: "thumbprint: want the 43-character"},
		{desc: "relative webroot", cfg: Config{Webroot: "srv/www"}, want: `webroot: want an absolute directory path, got "srv/www"`},
		{desc: "upstream without scheme", cfg: Config{Upstream: "127.0.0.1:8402", UpstreamTimeout: "1s"}, want: `upstream: want a base URL such as http://127.0.0.1:8402, got "127.0.0.1:8402"`},
		{desc: "upstream ftp", cfg: Config{Upstream: "ftp://h:1", UpstreamTimeout: "1s"}, want: "upstream: want a base URL"},
		{desc: "upstream with path", cfg: Config{Upstream: "http://h:1/acme", UpstreamTimeout: "1s"}, want: "upstream: want a base URL"},
		{desc: "upstream with query", cfg: Config{Upstream: "http://h:1?x=1", UpstreamTimeout: "1s"}, want: "upstream: want a base URL"},
		{desc: "upstream with user", cfg: Config{Upstream: "http://u:p@h:1", UpstreamTimeout: "1s"}, want: "upstream: want a base URL"},
		{desc: "timeout not a duration", cfg: Config{Upstream: "http://h:1", UpstreamTimeout: "3"}, want: `upstreamTimeout: want a positive duration such as "3s", got "3"`},
		{desc: "timeout negative", cfg: Config{Upstream: "http://h:1", UpstreamTimeout: "-1s"}, want: "upstreamTimeout: want a positive duration"},
		{desc: "bad domain", cfg: Config{Thumbprint: testThumbprint, Domains: []string{"ok.example", "bad_name.example"}}, want: `domains[1]: want a DNS name or *.name, got "bad_name.example"`},
		{desc: "empty domain", cfg: Config{Thumbprint: testThumbprint, Domains: []string{""}}, want: `domains[0]: want a DNS name or *.name, got ""`},
		{desc: "wildcard in the middle", cfg: Config{Thumbprint: testThumbprint, Domains: []string{"a.*.example"}}, want: "domains[0]"},
	}
	for _, tc := range tests {
		// Not t.Parallel: Yaegi shares the loop variable between parallel
		// closures even when it is copied.
		t.Run(tc.desc, func(t *testing.T) {
			cfg := tc.cfg
			_, err := New(context.Background(), &nextHandler{}, &cfg, "mw")
			if err == nil {
				t.Fatalf("New accepted %+v", tc.cfg)
			}
			if !strings.HasPrefix(err.Error(), `certfetch "mw": `) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q, want it to name the middleware and contain %q", err, tc.want)
			}
		})
	}
}

func TestNewDefaultsAndNoIO(t *testing.T) {
	t.Parallel()
	cfg := CreateConfig()
	if cfg.UpstreamTimeout != defaultUpstreamTimeout {
		t.Fatalf("default UpstreamTimeout = %q", cfg.UpstreamTimeout)
	}
	// The catalog calls New on a machine without our directories.
	cfg.Webroot = filepath.Join(t.TempDir(), "does", "not", "exist")
	newPlugin(t, cfg, &nextHandler{})
	if _, err := New(context.Background(), nil, CreateConfig(), "x"); err == nil {
		t.Fatal("New accepted a nil next handler")
	}
}

func TestValidToken(t *testing.T) {
	t.Parallel()
	tests := []struct {
		desc  string
		token string
		want  bool
	}{
		{desc: "real token", token: testToken, want: true},
		{desc: "minimum length", token: strings.Repeat("a", 22), want: true},
		{desc: "maximum length", token: strings.Repeat("_", 255), want: true},
		{desc: "too short", token: strings.Repeat("a", 21)},
		{desc: "too long", token: strings.Repeat("a", 256)},
		{desc: "empty", token: ""},
		{desc: "padding", token: testToken + "="},
		{desc: "plus from std alphabet", token: strings.Repeat("a", 22) + "+"},
		{desc: "slash", token: strings.Repeat("a", 22) + "/x"},
		{desc: "dot dot", token: "..aaaaaaaaaaaaaaaaaaaaaaaa"},
		{desc: "percent", token: strings.Repeat("a", 22) + "%2e"},
		{desc: "space", token: strings.Repeat("a", 22) + " "},
		{desc: "non-ASCII", token: strings.Repeat("a", 22) + "é"},
		{desc: "NUL", token: strings.Repeat("a", 22) + "\x00"},
	}
	for _, tc := range tests {
		if got := ValidToken(tc.token); got != tc.want {
			t.Errorf("%s: ValidToken(%q) = %v, want %v", tc.desc, tc.token, got, tc.want)
		}
	}
}

// reqCase is one request against a plugin and what must come back. A
// wantStatus of 299 means "passed to next".
type reqCase struct {
	desc       string
	method     string
	target     string
	host       string
	wantStatus int
	wantBody   string
}

func runRequests(t *testing.T, h http.Handler, cases []reqCase) {
	t.Helper()
	for _, tc := range cases {
		method := tc.method
		if method == "" {
			method = http.MethodGet
		}
		req := httptest.NewRequest(method, tc.target, nil)
		if tc.host != "" {
			req.Host = tc.host
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != tc.wantStatus {
			t.Errorf("%s: %s %s (Host %s): status %d, want %d (body %q)", tc.desc, method, tc.target, req.Host, rec.Code, tc.wantStatus, rec.Body.String())
			continue
		}
		if tc.wantBody != "" && rec.Body.String() != tc.wantBody {
			t.Errorf("%s: body %q, want %q", tc.desc, rec.Body.String(), tc.wantBody)
		}
	}
}

func TestThumbprintMode(t *testing.T) {
	t.Parallel()
	h := newPlugin(t, &Config{Thumbprint: testThumbprint}, &nextHandler{})
	runRequests(t, h, []reqCase{
		{desc: "challenge", target: ChallengePrefix + testToken, wantStatus: 200, wantBody: testKeyAuth},
		{desc: "any host", target: ChallengePrefix + testToken, host: "other.example:8080", wantStatus: 200, wantBody: testKeyAuth},
		{desc: "pass-through root", target: "/", wantStatus: 299, wantBody: nextBody},
		{desc: "pass-through path", target: "/api/v1?x=1", wantStatus: 299, wantBody: nextBody},
		{desc: "bare challenge dir", target: "/.well-known/acme-challenge", wantStatus: 299, wantBody: nextBody},
		{desc: "other well-known", target: "/.well-known/security.txt", wantStatus: 299, wantBody: nextBody},
		{desc: "prefix lookalike", target: "/.well-known/acme-challengeX/" + testToken, wantStatus: 299},
		{desc: "empty token", target: ChallengePrefix, wantStatus: 404},
		{desc: "short token", target: ChallengePrefix + "abc", wantStatus: 404},
		{desc: "padded token", target: ChallengePrefix + testToken + "=", wantStatus: 404},
		{desc: "nested path", target: ChallengePrefix + testToken + "/x", wantStatus: 404},
		{desc: "encoded slash", target: ChallengePrefix + testToken + "%2Fx", wantStatus: 404},
		{desc: "POST", method: http.MethodPost, target: ChallengePrefix + testToken, wantStatus: 405},
		{desc: "PUT", method: http.MethodPut, target: ChallengePrefix + testToken, wantStatus: 405},
	})
}

func TestAnswerHeaders(t *testing.T) {
	t.Parallel()
	h := newPlugin(t, &Config{Thumbprint: testThumbprint}, &nextHandler{})
	for _, method := range []string{http.MethodGet, http.MethodHead} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(method, ChallengePrefix+testToken, nil))
		hdr := rec.Header()
		if rec.Code != 200 || hdr.Get("Content-Type") != "text/plain" || hdr.Get("Cache-Control") != "no-store" ||
			hdr.Get("Content-Length") != "87" {
			t.Errorf("%s: status %d, headers %v", method, rec.Code, hdr)
		}
		wantBody := testKeyAuth
		if method == http.MethodHead {
			wantBody = ""
		}
		if rec.Body.String() != wantBody {
			t.Errorf("%s: body %q, want %q", method, rec.Body.String(), wantBody)
		}
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodDelete, ChallengePrefix+testToken, nil))
	if rec.Code != 405 || rec.Header().Get("Allow") != "GET, HEAD" {
		t.Errorf("DELETE: status %d, Allow %q", rec.Code, rec.Header().Get("Allow"))
	}
}

func TestPassThroughKeepsResponseWriter(t *testing.T) {
	t.Parallel()
	next := &nextHandler{}
	h := newPlugin(t, &Config{Thumbprint: testThumbprint}, next)
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodPost, "/upload?a=b", strings.NewReader("payload"))
	req.Header.Set("X-Custom", "kept")
	h.ServeHTTP(rec, req)
	if !next.called {
		t.Fatal("next was not called")
	}
	// The very same writer reaches next: Flusher, Hijacker and the rest survive.
	if next.w != http.ResponseWriter(rec) {
		t.Fatalf("next got a wrapped writer %T", next.w)
	}
	if req.Header.Get("X-Custom") != "kept" || len(req.Header) != 1 {
		t.Fatalf("request headers changed: %v", req.Header)
	}
}

func TestDomainAllowList(t *testing.T) {
	t.Parallel()
	h := newPlugin(t, &Config{Thumbprint: testThumbprint, Domains: []string{"Www.Example.com", "*.apps.example.org"}}, &nextHandler{})
	target := ChallengePrefix + testToken
	runRequests(t, h, []reqCase{
		{desc: "exact", target: target, host: "www.example.com", wantStatus: 200, wantBody: testKeyAuth},
		{desc: "exact with port and case", target: target, host: "WWW.example.COM:80", wantStatus: 200},
		{desc: "trailing dot", target: target, host: "www.example.com.", wantStatus: 200},
		{desc: "wildcard child", target: target, host: "a.apps.example.org", wantStatus: 200},
		{desc: "wildcard grandchild", target: target, host: "x.a.apps.example.org", wantStatus: 200},
		{desc: "wildcard apex is not covered", target: target, host: "apps.example.org", wantStatus: 299},
		{desc: "suffix lookalike", target: target, host: "evilapps.example.org", wantStatus: 299},
		{desc: "other host", target: target, host: "example.com", wantStatus: 299},
		{desc: "other host, bad method passes too", method: http.MethodPost, target: target, host: "example.com", wantStatus: 299},
		{desc: "IPv6 literal", target: target, host: "[::1]:80", wantStatus: 299},
	})
}

func writeChallengeFile(t *testing.T, webroot, token, content string) {
	t.Helper()
	dir := filepath.Join(webroot, ".well-known", "acme-challenge")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, token), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestWebrootMode(t *testing.T) {
	t.Parallel()
	webroot := t.TempDir()
	h := newPlugin(t, &Config{Webroot: webroot}, &nextHandler{})
	other := strings.Repeat("b", 43)
	newline := strings.Repeat("c", 43)
	wrong := strings.Repeat("d", 43)
	huge := strings.Repeat("e", 43)
	// No directory yet: a missing file is a 404, not an error.
	runRequests(t, h, []reqCase{{desc: "no directory yet", target: ChallengePrefix + testToken, wantStatus: 404}})

	writeChallengeFile(t, webroot, testToken, testKeyAuth)
	writeChallengeFile(t, webroot, newline, newline+"."+testThumbprint+"\r\n")
	writeChallengeFile(t, webroot, wrong, "secret data that is not a key authorization")
	writeChallengeFile(t, webroot, huge, huge+"."+testThumbprint+strings.Repeat("x", 4096))
	runRequests(t, h, []reqCase{
		{desc: "present", target: ChallengePrefix + testToken, wantStatus: 200, wantBody: testKeyAuth},
		{desc: "missing", target: ChallengePrefix + other, wantStatus: 404},
		{desc: "trailing newline dropped", target: ChallengePrefix + newline, wantStatus: 200, wantBody: newline + "." + testThumbprint},
		{desc: "not a key authorization", target: ChallengePrefix + wrong, wantStatus: 502},
		{desc: "oversized file", target: ChallengePrefix + huge, wantStatus: 502},
		{desc: "pass-through", target: "/index.html", wantStatus: 299},
	})
}

func TestUpstreamMode(t *testing.T) {
	t.Parallel()
	slow := strings.Repeat("s", 43)
	missing := strings.Repeat("m", 43)
	broken := strings.Repeat("x", 43)
	garbage := strings.Repeat("g", 43)
	release := make(chan struct{})
	defer close(release)
	hosts := make(chan string, 16)
	responder := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hosts <- r.Host
		token := strings.TrimPrefix(r.URL.Path, ChallengePrefix)
		switch token {
		case testToken:
			_, _ = io.WriteString(w, testKeyAuth)
		case slow:
			select {
			case <-release:
			case <-r.Context().Done():
			}
		case broken:
			w.WriteHeader(http.StatusInternalServerError)
		case garbage:
			_, _ = io.WriteString(w, "<html>not a key authorization</html>")
		default:
			http.NotFound(w, r)
		}
	}))
	defer responder.Close()

	h := newPlugin(t, &Config{Upstream: responder.URL, UpstreamTimeout: "100ms"}, &nextHandler{})
	runRequests(t, h, []reqCase{
		{desc: "answered", target: ChallengePrefix + testToken, host: "www.example.com", wantStatus: 200, wantBody: testKeyAuth},
		{desc: "unknown token", target: ChallengePrefix + missing, wantStatus: 404},
		{desc: "responder error", target: ChallengePrefix + broken, wantStatus: 502},
		{desc: "responder garbage", target: ChallengePrefix + garbage, wantStatus: 502},
		{desc: "responder too slow", target: ChallengePrefix + slow, wantStatus: 504},
	})
	if got := <-hosts; got != "www.example.com" {
		t.Errorf("responder saw Host %q, want the challenged name", got)
	}
	if len(hosts) != 4 {
		t.Errorf("responder saw %d more requests, want 4", len(hosts))
	}
	// Pass-through and bad tokens never reach the responder.
	runRequests(t, h, []reqCase{
		{desc: "pass-through", target: "/", wantStatus: 299},
		{desc: "bad token", target: ChallengePrefix + "x", wantStatus: 404},
	})
	if len(hosts) != 4 {
		t.Errorf("pass-through or bad token reached the responder")
	}
}

func TestUpstreamUnreachable(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there any more: connection refused
	h := newPlugin(t, &Config{Upstream: "http://" + addr, UpstreamTimeout: "1s"}, &nextHandler{})
	runRequests(t, h, []reqCase{{desc: "refused", target: ChallengePrefix + testToken, wantStatus: 502}})
}
