package fetcher

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/certfetch/certfetch/acme"
	"github.com/certfetch/certfetch/fetcher/config"
)

// defaultHTTP is a resolver's HTTP timeouts when the configuration sets none.
var defaultHTTP = config.HTTPTimeouts{
	DialTimeout:           config.DefaultDialTimeout,
	TLSHandshakeTimeout:   config.DefaultTLSHandshakeTimeout,
	ResponseHeaderTimeout: config.DefaultResponseHeaderTimeout,
	RequestTimeout:        config.DefaultRequestTimeout,
}

// TestRecommend checks the arithmetic and the reasoning of the recommendation on
// reports as the probe makes them.
func TestRecommend(t *testing.T) {
	t.Parallel()
	done := func(n int, total, finalize float64) ProbeOrder {
		return ProbeOrder{Order: n, TotalSeconds: total, FinalizeSeconds: finalize}
	}
	fast := &ProbeRequest{Kind: acme.RequestNewOrder, Seconds: 0.01}
	tests := []struct {
		desc       string
		report     ProbeReport
		configured time.Duration
		http       config.HTTPTimeouts
		// want* are the recommendation; wantNil: none.
		wantNil                 bool
		wantTimeout             string
		wantTimeoutEnough       bool
		wantHeader, wantRequest string
		wantHeaderEnough        bool
		// wantReasons are substrings of the reasons, timeout's and header's together.
		wantReasons []string
		// wantNot are substrings the reasons must not contain.
		wantNot []string
	}{
		{
			desc: "async 42 s CA with Retry-After 5 s, the default 30 s deadline",
			report: ProbeReport{
				Orders:         []ProbeOrder{done(1, 47.0, 45.0), done(2, 46.5, 45.0)},
				RetryAfter:     []RetryAfterCount{{Where: acme.RequestFinalize, Seconds: 5, Count: 2}, {Where: acme.RequestOrder, Seconds: 5, Count: 16}},
				SlowestRequest: fast,
				CA:             ProbeCA{Finalize: FinalizeAsynchronous, FinalizeHoldSeconds: 0.003},
			},
			configured: 30 * time.Second, http: defaultHTTP,
			// 47 s + max(23.5 s, 20 s, 5 s) = 70.5 s → 80 s.
			wantTimeout: "1m20s", wantHeader: "30s", wantRequest: "1m0s", wantHeaderEnough: true,
			wantReasons: []string{
				"the slowest of 2 completed order(s), order 1, took 47.0s from new order to certificate in hand (finalize → valid 45.0s)",
				"margin 23.5s: the largest of half of it (23.5s), 20s, and the longest Retry-After on a poll (5s)",
				"47.0s + 23.5s = 70.5s, rounded up to 1m20s",
				"configured 30s is too short", "certfetch resumes it",
				"every request other than finalize was answered within 0.010s (slowest: new_order)",
				"configured 30s is enough: keep it",
				"the CA finalizes asynchronously: it answered the finalize request within 0.003s", "exempts the finalize request from http.responseHeaderTimeout and http.requestTimeout: only the order deadline (timeout) bounds it; this CA does not need it",
			},
			wantNot: []string{"finalizes synchronously"},
		},
		{
			desc: "sync 42 s CA: the hold, the exemption, and a client without it",
			report: ProbeReport{
				Orders:         []ProbeOrder{done(1, 43.0, 42.0)},
				SlowestRequest: fast,
				CA:             ProbeCA{Finalize: FinalizeSynchronous, FinalizeHoldSeconds: 42.0},
			},
			configured: 30 * time.Second, http: defaultHTTP,
			// 43 s + 21.5 s = 64.5 s → 70 s; a lego client: 42 s + 21 s = 63 s → 70 s.
			wantTimeout: "1m10s", wantHeader: "30s", wantRequest: "1m0s", wantHeaderEnough: true,
			wantReasons: []string{
				"the CA finalizes synchronously: it held the finalize request open up to 42.0s and answered with the order valid",
				"certfetch exempts the finalize request from http.responseHeaderTimeout and http.requestTimeout: only the order deadline (timeout) bounds it, so responseHeaderTimeout need not cover that hold",
				"would need a response header timeout above 42.0s (1m10s with the margin)",
			},
		},
		{
			desc: "sync but quick (step-ca): nothing to explain",
			report: ProbeReport{
				Orders:         []ProbeOrder{done(1, 2.1, 0.02)},
				SlowestRequest: &ProbeRequest{Kind: acme.RequestNewAccount, Seconds: 0.05},
				CA:             ProbeCA{Finalize: FinalizeSynchronous, FinalizeHoldSeconds: 0.02},
			},
			configured: 30 * time.Second, http: defaultHTTP,
			wantTimeout: "30s", wantTimeoutEnough: true, wantHeader: "30s", wantRequest: "1m0s", wantHeaderEnough: true,
			wantReasons: []string{"2.100s + 20.0s = 22.1s, rounded up to 30s", "configured 30s is enough", "a hold this short fits any response header timeout"},
			wantNot:     []string{"exempts", "lego"},
		},
		{
			desc:       "the printed sum adds up",
			report:     ProbeReport{Orders: []ProbeOrder{done(1, 46.043, 45.0)}, SlowestRequest: fast},
			configured: 30 * time.Second, http: defaultHTTP,
			wantTimeout: "1m10s", wantHeader: "30s", wantRequest: "1m0s", wantHeaderEnough: true,
			wantReasons: []string{"46.0s + 23.0s = 69.0s, rounded up to 1m10s"},
		},
		{
			desc:       "configured deadline covers the orders but not the margin",
			report:     ProbeReport{Orders: []ProbeOrder{done(1, 47.0, 45.0)}, SlowestRequest: fast, CA: ProbeCA{Finalize: FinalizeAsynchronous}},
			configured: 50 * time.Second, http: defaultHTTP,
			wantTimeout: "1m20s", wantHeader: "30s", wantRequest: "1m0s", wantHeaderEnough: true,
			wantReasons: []string{"configured 50s covers the orders seen, without the margin"},
		},
		{
			desc:       "a long Retry-After widens the margin",
			report:     ProbeReport{Orders: []ProbeOrder{done(1, 100.0, 95.0)}, RetryAfter: []RetryAfterCount{{Where: acme.RequestOrder, Seconds: 60, Count: 2}}, SlowestRequest: fast},
			configured: 5 * time.Minute, http: defaultHTTP,
			// 100 s + max(50 s, 20 s, 60 s) = 160 s.
			wantTimeout: "2m40s", wantTimeoutEnough: true, wantHeader: "30s", wantRequest: "1m0s", wantHeaderEnough: true,
			wantReasons: []string{"margin 60.0s", "configured 5m0s is enough"},
		},
		{
			desc: "slow answers raise the header timeout, and the request timeout with it",
			report: ProbeReport{
				Orders:         []ProbeOrder{done(1, 20.0, 1.0)},
				SlowestRequest: &ProbeRequest{Kind: acme.RequestNewOrder, Seconds: 15.0},
			},
			configured: time.Minute,
			http:       config.HTTPTimeouts{ResponseHeaderTimeout: 30 * time.Second, RequestTimeout: 40 * time.Second},
			// 3 × 15 s = 45 s → 50 s.
			wantTimeout: "40s", wantTimeoutEnough: true, wantHeader: "50s", wantRequest: "50s",
			wantReasons: []string{
				"every request other than finalize was answered within 15.0s (slowest: new_order); 3× that, at least the engine's 30s, rounded up: 50s",
				"configured 30s is too short: raise it to 50s",
				"raise http.requestTimeout (40s) to at least 50s too",
			},
		},
		{
			desc: "a failed order is not counted",
			report: ProbeReport{
				Orders:         []ProbeOrder{done(1, 10.0, 5.0), {Order: 2, TotalSeconds: 600, Error: "probe: order 2 not complete within --timeout 10m0s"}},
				SlowestRequest: fast,
			},
			configured: 30 * time.Second, http: defaultHTTP,
			wantTimeout: "30s", wantTimeoutEnough: true, wantHeader: "30s", wantRequest: "1m0s", wantHeaderEnough: true,
			wantReasons: []string{"the slowest of 1 completed order(s), order 1, took 10.0s", "order 2 failed and is not counted: probe: order 2 not complete"},
		},
		{
			desc:       "no order completed: no recommendation",
			report:     ProbeReport{Orders: []ProbeOrder{{Order: 1, Error: "probe: order 1: acme: authorization for a.example is invalid"}}},
			configured: 30 * time.Second, http: defaultHTTP,
			wantNil: true,
		},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			rec := recommend(&tc.report, tc.configured, tc.http)
			if tc.wantNil {
				assert.Nil(t, rec)
				return
			}
			require.NotNil(t, rec)
			assert.Equal(t, tc.wantTimeout, rec.Timeout)
			want, err := time.ParseDuration(tc.wantTimeout)
			require.NoError(t, err)
			assert.InDelta(t, want.Seconds(), rec.TimeoutSeconds, 0.001)
			assert.Equal(t, tc.configured.String(), rec.ConfiguredTimeout)
			assert.Equal(t, tc.wantTimeoutEnough, rec.ConfiguredTimeoutEnough)
			assert.Equal(t, tc.wantHeader, rec.ResponseHeaderTimeout)
			assert.Equal(t, tc.http.ResponseHeaderTimeout.String(), rec.ConfiguredResponseHeaderTimeout)
			assert.Equal(t, tc.wantHeaderEnough, rec.ConfiguredResponseHeaderTimeoutEnough)
			assert.Equal(t, tc.wantRequest, rec.RequestTimeout)
			reasons := strings.Join(append(rec.TimeoutReasons, rec.ResponseHeaderTimeoutReasons...), "\n")
			for _, s := range tc.wantReasons {
				assert.Contains(t, reasons, s)
			}
			for _, s := range tc.wantNot {
				assert.NotContains(t, reasons, s)
			}
		})
	}
}

// TestRetryAfters groups the Retry-After values by where they came from, and ignores
// answers without one (a "Retry-After: 0" counts: the CA sent it).
func TestRetryAfters(t *testing.T) {
	t.Parallel()
	tests := []struct {
		desc     string
		requests []acme.RequestInfo
		want     []RetryAfterCount
	}{
		{desc: "none", requests: []acme.RequestInfo{{Kind: acme.RequestOrder}}, want: []RetryAfterCount{}},
		{
			desc: "grouped by kind, then value",
			requests: []acme.RequestInfo{
				{Kind: acme.RequestOrder, RetryAfterHeader: "5", RetryAfter: 5 * time.Second},
				{Kind: acme.RequestFinalize, RetryAfterHeader: "5", RetryAfter: 5 * time.Second},
				{Kind: acme.RequestOrder, RetryAfterHeader: "3", RetryAfter: 3 * time.Second},
				{Kind: acme.RequestOrder, RetryAfterHeader: "5", RetryAfter: 5 * time.Second},
				{Kind: acme.RequestAuthorization},
				{Kind: acme.RequestAuthorization, RetryAfterHeader: "0"},
			},
			want: []RetryAfterCount{
				{Where: acme.RequestAuthorization, Seconds: 0, Count: 1},
				{Where: acme.RequestFinalize, Seconds: 5, Count: 1},
				{Where: acme.RequestOrder, Seconds: 3, Count: 1},
				{Where: acme.RequestOrder, Seconds: 5, Count: 2},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			assert.Equal(t, tc.want, retryAfters(tc.requests))
		})
	}
}

// TestOrderResult: an order whose finalize answer was valid is synchronous; one the
// engine polled after finalize is asynchronous; one that never finalized is neither.
func TestOrderResult(t *testing.T) {
	t.Parallel()
	req := func(kind string, d time.Duration) acme.RequestInfo { return acme.RequestInfo{Kind: kind, Duration: d} }
	tests := []struct {
		desc         string
		requests     []acme.RequestInfo
		wantFinalize string
		wantHold     float64
		wantPolls    int
	}{
		{
			desc:         "synchronous: no poll after finalize",
			requests:     []acme.RequestInfo{req(acme.RequestNewOrder, 0), req(acme.RequestAuthorization, 0), req(acme.RequestFinalize, 42*time.Second), req(acme.RequestCertificate, 0)},
			wantFinalize: FinalizeSynchronous, wantHold: 42,
		},
		{
			desc:         "asynchronous: polls after finalize",
			requests:     []acme.RequestInfo{req(acme.RequestNewOrder, 0), req(acme.RequestFinalize, 3*time.Millisecond), req(acme.RequestOrder, 0), req(acme.RequestOrder, 0), req(acme.RequestCertificate, 0)},
			wantFinalize: FinalizeAsynchronous, wantHold: 0.003, wantPolls: 2,
		},
		{
			desc:         "a poll before finalize does not count (a resumed order)",
			requests:     []acme.RequestInfo{req(acme.RequestOrder, 0), req(acme.RequestFinalize, time.Second), req(acme.RequestCertificate, 0)},
			wantFinalize: FinalizeSynchronous, wantHold: 1, wantPolls: 1,
		},
		{
			desc:     "finalized, then interrupted before a poll or a download: unknown",
			requests: []acme.RequestInfo{req(acme.RequestNewOrder, 0), req(acme.RequestFinalize, 2*time.Millisecond)},
			wantHold: 0.002,
		},
		{desc: "never finalized", requests: []acme.RequestInfo{req(acme.RequestNewOrder, 0)}},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			o := orderResult(&orderTrack{n: 1, phases: map[string]time.Duration{}, requests: tc.requests}, time.Minute)
			assert.Equal(t, tc.wantFinalize, o.Finalize)
			assert.InDelta(t, tc.wantHold, o.FinalizeRequestSeconds, 0.0005)
			assert.Equal(t, tc.wantPolls, o.OrderPolls)
			assert.Equal(t, len(tc.requests), o.Requests)
		})
	}
}
