package acme_test

import (
	"context"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/certfetch/certfetch/acme"
	"github.com/certfetch/certfetch/internal/testkit/testca"
)

// hookLog records what the observation hooks report.
type hookLog struct {
	mu       sync.Mutex
	requests []acme.RequestInfo
	events   []string // "start:<phase>" and "done:<phase>"
}

func (h *hookLog) install(cfg *acme.Config) {
	cfg.OnRequest = func(info acme.RequestInfo) {
		h.mu.Lock()
		defer h.mu.Unlock()
		h.requests = append(h.requests, info)
	}
	cfg.OnPhaseStart = func(phase string) {
		h.mu.Lock()
		defer h.mu.Unlock()
		h.events = append(h.events, "start:"+phase)
	}
	cfg.OnPhase = func(phase string, _ time.Duration) {
		h.mu.Lock()
		defer h.mu.Unlock()
		h.events = append(h.events, "done:"+phase)
	}
}

// take returns what was reported since the last take.
func (h *hookLog) take() ([]acme.RequestInfo, []string) {
	h.mu.Lock()
	defer h.mu.Unlock()

	requests, events := h.requests, h.events
	h.requests, h.events = nil, nil

	return requests, events
}

func kinds(requests []acme.RequestInfo) []string {
	out := make([]string, 0, len(requests))
	for _, r := range requests {
		out = append(out, r.Kind)
	}

	return out
}

// TestHooksReportRequestsAndPhases: OnRequest names every request that reaches the CA
// with its answer and Retry-After, and OnPhaseStart/OnPhase bracket the phases, for an
// order the CA finalizes at once, asynchronously or synchronously.
func TestHooksReportRequestsAndPhases(t *testing.T) {
	t.Parallel()

	tests := []struct {
		desc string
		ca   testca.Options
		// wantOrderRetry is the Retry-After on finalize and order polls (0: none sent).
		wantOrderRetry time.Duration
		// wantHold is the least time the finalize request waits for its answer.
		wantHold time.Duration
	}{
		{desc: "instant"},
		{desc: "async with Retry-After", ca: testca.Options{Mode: testca.Async, Delay: 2 * time.Second, RetryAfter: time.Second}, wantOrderRetry: time.Second},
		{desc: "sync: finalize held", ca: testca.Options{Mode: testca.Sync, Delay: 2 * time.Second}, wantHold: 2 * time.Second},
	}

	for _, test := range tests {
		t.Run(test.desc, func(t *testing.T) {
			t.Parallel()

			s := newSetup(t, test.ca)
			cfg := s.config(t)

			var h hookLog
			h.install(&cfg)

			c := s.client(t, cfg)
			requests, events := h.take()
			assert.Empty(t, events)
			assert.Equal(t, []string{acme.RequestDirectory, acme.RequestNewNonce, acme.RequestNewAccount}, kinds(requests))
			assert.Equal(t, http.StatusCreated, requests[2].StatusCode, "a new account")

			_, _, err := obtain(t, c, acme.Request{Names: []string{"hooks.example.com"}}, time.Minute)
			require.NoError(t, err)

			requests, events = h.take()
			assert.Equal(t, []string{
				"start:" + acme.PhaseNewOrder, "done:" + acme.PhaseNewOrder,
				"start:" + acme.PhaseAuthorization, "done:" + acme.PhaseAuthorization,
				"start:" + acme.PhaseFinalize, "done:" + acme.PhaseFinalize,
				"start:" + acme.PhaseDownload, "done:" + acme.PhaseDownload,
			}, events)

			got := kinds(requests)
			assert.Equal(t, acme.RequestNewOrder, got[0], "the nonce comes from the pool")
			assert.Equal(t, acme.RequestCertificate, got[len(got)-1])
			assert.NotContains(t, got, acme.RequestOther)
			assert.NotContains(t, got, acme.RequestDirectory, "the directory comes from the cache")

			for _, kind := range []string{acme.RequestAuthorization, acme.RequestChallenge, acme.RequestFinalize} {
				assert.Contains(t, got, kind)
			}

			fin := requests[slices.Index(got, acme.RequestFinalize)]
			assert.Equal(t, http.MethodPost, fin.Method)
			assert.Equal(t, http.StatusOK, fin.StatusCode)
			assert.GreaterOrEqual(t, fin.Duration, test.wantHold)
			assert.Equal(t, test.wantOrderRetry, fin.RetryAfter)

			for _, r := range requests {
				assert.NoError(t, r.Err)

				if r.Kind == acme.RequestOrder && test.wantOrderRetry > 0 && r.RetryAfterHeader != "" {
					assert.Equal(t, test.wantOrderRetry, r.RetryAfter, "order poll while processing")
				}
			}

			// A second client with the same key finds the account: 200, not 201.
			cfg.OnRequest = func(info acme.RequestInfo) {
				if info.Kind == acme.RequestNewAccount {
					assert.Equal(t, http.StatusOK, info.StatusCode, "the existing account")
				}
			}
			s.client(t, cfg)
		})
	}
}

// TestHooksReportFailures: a request that gets no answer is reported with its error.
func TestHooksReportFailures(t *testing.T) {
	t.Parallel()

	s := newSetup(t, testca.Options{})
	cfg := s.config(t)

	var h hookLog
	h.install(&cfg)

	c := s.client(t, cfg)
	h.take()
	s.ca.SetUnavailable(true)

	_, _, err := obtain(t, c, acme.Request{Names: []string{"down.example.com"}}, time.Minute)
	var ue *acme.UnreachableError
	require.ErrorAs(t, err, &ue)

	requests, events := h.take()
	assert.Equal(t, []string{"start:" + acme.PhaseNewOrder}, events, "the phase started and never completed")
	require.NotEmpty(t, requests)
	assert.Equal(t, acme.RequestNewOrder, requests[0].Kind)
	assert.Equal(t, http.StatusServiceUnavailable, requests[0].StatusCode)
}

// TestReadDirectory reads what the CA offers, once per call, without an account.
func TestReadDirectory(t *testing.T) {
	t.Parallel()

	tests := []struct {
		desc    string
		ca      testca.Options
		wantEAB bool
	}{
		{desc: "open CA"},
		{desc: "EAB required", ca: testca.Options{EABKeys: map[string]string{"kid": "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W"}}, wantEAB: true},
	}

	for _, test := range tests {
		t.Run(test.desc, func(t *testing.T) {
			t.Parallel()

			s := newSetup(t, test.ca)
			cfg := s.config(t)

			var h hookLog
			h.install(&cfg)

			for range 2 {
				dir, err := acme.ReadDirectory(context.Background(), cfg)
				require.NoError(t, err)
				assert.Equal(t, s.ca.DirectoryURL(), dir.URL)
				assert.Contains(t, dir.Profiles, testca.DefaultProfile)
				assert.Contains(t, dir.RenewalInfoURL, "/renewalInfo")
				assert.Equal(t, test.wantEAB, dir.ExternalAccountRequired)
			}

			requests, _ := h.take()
			assert.Equal(t, []string{acme.RequestDirectory, acme.RequestDirectory}, kinds(requests), "every call reads the directory")
			assert.Equal(t, http.StatusOK, requests[0].StatusCode)
		})
	}

	_, err := acme.ReadDirectory(context.Background(), acme.Config{})
	assert.EqualError(t, err, "acme: read directory: no directory URL")
}
