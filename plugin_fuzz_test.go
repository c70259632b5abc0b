package certfetch

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// FuzzChallengePath drives the webroot plugin with arbitrary request targets
// and hosts. It must never panic, never open a path outside
// <webroot>/.well-known/acme-challenge/, never open a file for an invalid
// token, and never answer a challenge for an invalid token.
//
//	go test -run '^$' -fuzz FuzzChallengePath -fuzztime 60s .
func FuzzChallengePath(f *testing.F) {
	for _, seed := range []string{
		ChallengePrefix + testToken,
		ChallengePrefix + "../../secret",
		ChallengePrefix + "..%2f..%2fsecret",
		ChallengePrefix + "%2e%2e/%2e%2e/" + testToken,
		"/.well-known/acme-challenge/./" + testToken,
		"/.well-known/%61cme-challenge/" + testToken,
		"//.well-known/acme-challenge/" + testToken,
		ChallengePrefix + testToken + "?x=/../../etc/passwd",
		ChallengePrefix + strings.Repeat("A", 300),
		ChallengePrefix + testToken + "%00",
		"/",
		"*",
	} {
		f.Add(seed, "example.com")
	}

	// A file with a valid token name outside the challenge directory: its
	// content must never be served.
	root := f.TempDir()
	webroot := filepath.Join(root, "webroot")
	challengeDir := filepath.Join(webroot, ".well-known", "acme-challenge")
	if err := os.MkdirAll(challengeDir, 0o755); err != nil {
		f.Fatal(err)
	}
	const secret = "SECRET-OUTSIDE-WEBROOT"
	if err := os.WriteFile(filepath.Join(root, testToken), []byte(secret), 0o644); err != nil {
		f.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(challengeDir, testToken), []byte(testKeyAuth), 0o644); err != nil {
		f.Fatal(err)
	}

	var mu sync.Mutex
	var opened []string
	record := func(name string) (*os.File, error) {
		mu.Lock()
		opened = append(opened, name)
		mu.Unlock()
		return os.Open(name)
	}
	h, err := newMiddleware(&nextHandler{}, &Config{Webroot: webroot}, "fuzz", record)
	if err != nil {
		f.Fatal(err)
	}

	f.Fuzz(func(t *testing.T, target, host string) {
		u, err := url.ParseRequestURI(target)
		if err != nil {
			return
		}
		mu.Lock()
		opened = opened[:0]
		mu.Unlock()
		req := httptest.NewRequest(http.MethodGet, "/", nil)
		req.URL = u
		req.RequestURI = target
		req.Host = host
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)

		body, _ := io.ReadAll(rec.Body)
		if strings.Contains(string(body), secret) {
			t.Fatalf("%q served a file outside the webroot", target)
		}
		mu.Lock()
		defer mu.Unlock()
		for _, name := range opened {
			if filepath.Dir(name) != challengeDir || !ValidToken(filepath.Base(name)) {
				t.Fatalf("%q opened %q, outside %s or not a valid token", target, name, challengeDir)
			}
		}
		if rec.Code == http.StatusOK {
			token := strings.TrimPrefix(u.Path, ChallengePrefix)
			if !ValidToken(token) || string(body) != testKeyAuth {
				t.Fatalf("%q answered 200 %q for token %q", target, body, token)
			}
		}
	})
}
