package http01_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-acme/lego/v4/challenge"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/certfetch/certfetch"
	"github.com/certfetch/certfetch/acme/http01"
)

const (
	domain  = "example.com"
	token   = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"
	keyAuth = token + ".9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"
)

// The publishers fit lego's challenge.Provider, so DNS-01 providers fit the same slot.
var (
	_ challenge.Provider = (*http01.Webroot)(nil)
	_ challenge.Provider = (*http01.Responder)(nil)
	_ challenge.Provider = http01.Stateless{}
)

func TestWebroot(t *testing.T) {
	t.Parallel()

	tests := []struct {
		desc    string
		token   string
		wantErr string
	}{
		{desc: "valid token", token: token},
		{desc: "path traversal", token: "../../etc/passwd-aaaaaaaaaaaaaaaaa", wantErr: "invalid token"},
		{desc: "padding", token: strings.TrimSuffix(token, "A") + "=", wantErr: "invalid token"},
	}

	for _, test := range tests {
		t.Run(test.desc, func(t *testing.T) {
			t.Parallel()

			root := t.TempDir()
			w := http01.NewWebroot(root)

			err := w.Present(domain, test.token, keyAuth)
			if test.wantErr != "" {
				require.ErrorContains(t, err, test.wantErr)

				entries, rerr := os.ReadDir(root)
				require.NoError(t, rerr)
				assert.Empty(t, entries, "nothing may be written for a bad token")

				return
			}

			require.NoError(t, err)

			dir := filepath.Join(root, ".well-known", "acme-challenge")
			path := filepath.Join(dir, test.token)

			got, err := os.ReadFile(path)
			require.NoError(t, err)
			assert.Equal(t, keyAuth, string(got))

			info, err := os.Stat(path)
			require.NoError(t, err)
			assert.Equal(t, os.FileMode(0o644), info.Mode().Perm())

			entries, err := os.ReadDir(dir)
			require.NoError(t, err)
			assert.Len(t, entries, 1, "no temporary file may stay behind")

			require.NoError(t, w.CleanUp(domain, test.token, keyAuth))
			assert.NoFileExists(t, path)
			require.NoError(t, w.CleanUp(domain, test.token, keyAuth), "cleaning up twice is harmless")
		})
	}
}

func TestResponder(t *testing.T) {
	t.Parallel()

	r := http01.NewResponder()
	require.NoError(t, r.Present(domain, token, keyAuth))
	require.Error(t, r.Present(domain, "bad/token", keyAuth))

	removed := strings.Repeat("b", 43)
	require.NoError(t, r.Present(domain, removed, removed+".x"))
	require.NoError(t, r.CleanUp(domain, removed, removed+".x"))

	tests := []struct {
		desc     string
		method   string
		path     string
		wantCode int
		wantBody string
	}{
		{desc: "known token", method: http.MethodGet, path: certfetch.ChallengePrefix + token, wantCode: http.StatusOK, wantBody: keyAuth},
		{desc: "HEAD", method: http.MethodHead, path: certfetch.ChallengePrefix + token, wantCode: http.StatusOK},
		{desc: "unknown token", method: http.MethodGet, path: certfetch.ChallengePrefix + strings.Repeat("a", 43), wantCode: http.StatusNotFound},
		{desc: "cleaned-up token", method: http.MethodGet, path: certfetch.ChallengePrefix + removed, wantCode: http.StatusNotFound},
		{desc: "invalid token", method: http.MethodGet, path: certfetch.ChallengePrefix + "a.b", wantCode: http.StatusNotFound},
		{desc: "other path", method: http.MethodGet, path: "/" + token, wantCode: http.StatusNotFound},
		{desc: "POST", method: http.MethodPost, path: certfetch.ChallengePrefix + token, wantCode: http.StatusMethodNotAllowed},
	}

	for _, test := range tests {
		t.Run(test.desc, func(t *testing.T) {
			t.Parallel()

			rec := httptest.NewRecorder()
			r.ServeHTTP(rec, httptest.NewRequest(test.method, "http://"+domain+test.path, nil))

			assert.Equal(t, test.wantCode, rec.Code)

			if test.wantCode == http.StatusOK {
				assert.Equal(t, "text/plain", rec.Header().Get("Content-Type"))
			}

			if test.wantBody != "" {
				assert.Equal(t, test.wantBody, rec.Body.String())
			}
		})
	}
}

func TestResponderListen(t *testing.T) {
	t.Parallel()

	r := http01.NewResponder()
	require.NoError(t, r.Present(domain, token, keyAuth))
	require.NoError(t, r.Listen("127.0.0.1:0"))
	require.Error(t, r.Listen("127.0.0.1:0"), "a responder listens once")

	req, err := http.NewRequest(http.MethodGet, "http://"+r.Addr().String()+certfetch.ChallengePrefix+token, nil)
	require.NoError(t, err)
	req.Host = domain // what the plugin's upstream mode preserves

	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)

	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	assert.Equal(t, keyAuth, string(body))

	require.NoError(t, r.Close(context.Background()))

	_, err = http.DefaultClient.Do(req)
	require.Error(t, err, "closed")
}

func TestStateless(t *testing.T) {
	t.Parallel()

	require.NoError(t, http01.Stateless{}.Present(domain, token, keyAuth))
	require.Error(t, http01.Stateless{}.Present(domain, "bad token", keyAuth))
	require.NoError(t, http01.Stateless{}.CleanUp(domain, token, keyAuth))
}
