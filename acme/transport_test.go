package acme

import (
	"context"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// holdingServer answers /slow never, /body with headers at once and a body that never
// ends (until the test is over), /busy with 503 (a problem document), /broken with 502
// (no problem document), and anything else with Retry-After.
func holdingServer(t *testing.T) *httptest.Server {
	t.Helper()

	testOver := make(chan struct{})
	mux := http.NewServeMux()
	mux.HandleFunc("/slow", func(http.ResponseWriter, *http.Request) { <-testOver })
	mux.HandleFunc("/body", func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		<-testOver
	})
	mux.HandleFunc("/busy", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/problem+json")
		w.Header().Set("Retry-After", "9")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, `{"type":"urn:ietf:params:acme:error:serverInternal","detail":"down for maintenance"}`)
	})
	mux.HandleFunc("/broken", func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "bad gateway", http.StatusBadGateway)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Retry-After", "7")
		_, _ = io.WriteString(w, "{}")
	})

	srv := httptest.NewTLSServer(mux)
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(testOver) }) // runs first: Close waits for the handlers

	return srv
}

func TestExchange(t *testing.T) {
	t.Parallel()

	srv := holdingServer(t)
	short := Timeouts{ResponseHeader: 100 * time.Millisecond, Request: 300 * time.Millisecond}

	tests := []struct {
		desc string
		path string
		// timeouts are the exchange's (zero: defaults); long exempts the request from
		// them (finalize); ctxTimeout bounds the operation.
		timeouts   Timeouts
		long       bool
		ctxTimeout time.Duration
		check      func(t *testing.T, ex *exchange, url string, body []byte, err error)
	}{
		{
			desc: "Retry-After recorded",
			path: "/order",
			check: func(t *testing.T, ex *exchange, url string, _ []byte, err error) {
				require.NoError(t, err)
				assert.Equal(t, 7*time.Second, ex.RetryAfter(url))
			},
		},
		{
			desc:     "response header timeout",
			path:     "/slow",
			timeouts: short,
			check: func(t *testing.T, _ *exchange, _ string, _ []byte, err error) {
				var ue *UnreachableError
				require.ErrorAs(t, err, &ue)
				assert.ErrorContains(t, err, "no response headers within 100ms")
			},
		},
		{
			desc:     "whole request timeout",
			path:     "/body",
			timeouts: Timeouts{ResponseHeader: time.Minute, Request: short.Request},
			check: func(t *testing.T, _ *exchange, _ string, _ []byte, err error) {
				var ue *UnreachableError
				require.ErrorAs(t, err, &ue)
				assert.ErrorContains(t, err, "request not complete within 300ms")
			},
		},
		{
			desc:       "finalize waits past the timeouts until the deadline",
			path:       "/slow",
			timeouts:   short,
			long:       true,
			ctxTimeout: 3 * short.Request,
			check: func(t *testing.T, _ *exchange, _ string, _ []byte, err error) {
				require.ErrorIs(t, err, context.DeadlineExceeded)

				var ue *UnreachableError
				assert.False(t, errors.As(err, &ue))
			},
		},
		{
			desc: "503 with a problem document",
			path: "/busy",
			check: func(t *testing.T, _ *exchange, _ string, _ []byte, err error) {
				var ue *UnreachableError
				require.ErrorAs(t, err, &ue)
				assert.Equal(t, http.StatusServiceUnavailable, ue.StatusCode)
				assert.Equal(t, 9*time.Second, ue.RetryAfter)
				require.NotNil(t, ue.Problem)
				assert.Equal(t, "down for maintenance", ue.Problem.Detail)
			},
		},
		{
			desc: "502 without a problem document",
			path: "/broken",
			check: func(t *testing.T, _ *exchange, _ string, _ []byte, err error) {
				var ue *UnreachableError
				require.ErrorAs(t, err, &ue)
				assert.Equal(t, http.StatusBadGateway, ue.StatusCode)
				assert.Nil(t, ue.Problem)
			},
		},
	}

	for _, test := range tests {
		t.Run(test.desc, func(t *testing.T) {
			t.Parallel()

			ctx := context.Background()

			if test.ctxTimeout > 0 {
				var cancel context.CancelFunc

				ctx, cancel = context.WithTimeout(ctx, test.ctxTimeout)
				defer cancel()
			}

			ex := newExchange(ctx, srv.Client().Transport, test.timeouts, newCACache(srv.URL+"/directory", 0), nil)
			url := srv.URL + test.path

			if test.long {
				ex.allowLong(url)
			}

			var body []byte

			resp, err := ex.client().Get(url)
			if err == nil {
				body, err = io.ReadAll(resp.Body)
				_ = resp.Body.Close()
			}

			test.check(t, ex, url, body, err)
		})
	}
}

func TestNewTransport(t *testing.T) {
	t.Parallel()

	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") }))
	t.Cleanup(srv.Close)

	dir := t.TempDir()
	rootFile := filepath.Join(dir, "root.pem")
	require.NoError(t, os.WriteFile(rootFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600))

	junkFile := filepath.Join(dir, "junk.pem")
	require.NoError(t, os.WriteFile(junkFile, []byte("not a certificate"), 0o600))

	tests := []struct {
		desc       string
		opts       TransportOptions
		wantNewErr string
		wantGetErr bool
	}{
		{desc: "root from file", opts: TransportOptions{RootCAFiles: []string{rootFile}, DialTimeout: time.Second, TLSHandshakeTimeout: time.Second}},
		{desc: "root from file plus system pool", opts: TransportOptions{RootCAFiles: []string{rootFile}, SystemRoots: true}},
		{desc: "system pool does not know a private CA", opts: TransportOptions{}, wantGetErr: true},
		{desc: "missing file", opts: TransportOptions{RootCAFiles: []string{filepath.Join(dir, "missing.pem")}}, wantNewErr: "read root CA file"},
		{desc: "file without a certificate", opts: TransportOptions{RootCAFiles: []string{junkFile}}, wantNewErr: "no PEM certificate"},
	}

	for _, test := range tests {
		t.Run(test.desc, func(t *testing.T) {
			t.Parallel()

			tr, err := NewTransport(test.opts)
			if test.wantNewErr != "" {
				require.ErrorContains(t, err, test.wantNewErr)

				return
			}

			require.NoError(t, err)
			assert.Zero(t, tr.ResponseHeaderTimeout, "the Client applies timeouts per request")

			resp, err := (&http.Client{Transport: tr}).Get(srv.URL)
			if test.wantGetErr {
				require.Error(t, err)

				return
			}

			require.NoError(t, err)
			require.NoError(t, resp.Body.Close())
		})
	}
}
