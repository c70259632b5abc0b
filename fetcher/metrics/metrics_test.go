package metrics_test

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/certfetch/certfetch/fetcher/metrics"
	"github.com/certfetch/certfetch/internal/buildinfo"
)

// certfetchNames are the metric families that record what the daemon does
// (certfetch_build_info, set from the start, is tested on its own).
var certfetchNames = []string{
	"certfetch_issuance_duration_seconds",
	"certfetch_order_polls_total",
	"certfetch_failures_total",
	"certfetch_certificate_expiry_timestamp_seconds",
	"certfetch_last_success_timestamp_seconds",
	"certfetch_certificate_renewal_timestamp_seconds",
	"certfetch_orders_in_flight",
	"certfetch_order_timeout_seconds",
	"certfetch_order_phase_duration_seconds",
}

const (
	issuanceHeader = `# HELP certfetch_issuance_duration_seconds Time from the start of a certificate order to its outcome, by resolver and result (success, pending, failure).
# TYPE certfetch_issuance_duration_seconds histogram
`
	expiryHeader = `# HELP certfetch_certificate_expiry_timestamp_seconds NotAfter of the current certificate, as a Unix timestamp in seconds, by configured certificate name.
# TYPE certfetch_certificate_expiry_timestamp_seconds gauge
`
	lastSuccessHeader = `# HELP certfetch_last_success_timestamp_seconds Time of the last successful issuance, as a Unix timestamp in seconds, by configured certificate name.
# TYPE certfetch_last_success_timestamp_seconds gauge
`
)

// serveMetrics serves m's Handler on a test server and returns the
// /metrics URL.
func serveMetrics(t *testing.T, m *metrics.Metrics) string {
	t.Helper()
	srv := httptest.NewServer(m.Handler())
	t.Cleanup(srv.Close)
	return srv.URL + "/metrics"
}

func TestMetricsExposition(t *testing.T) {
	t.Parallel()
	jan2027 := time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC) // 1798761600
	tests := []struct {
		desc   string
		record func(m *metrics.Metrics)
		names  []string
		want   string
	}{
		{
			desc:   "a new Metrics exposes no certfetch series",
			record: func(*metrics.Metrics) {},
			names:  certfetchNames,
			want:   "",
		},
		{
			desc: "Traefik discovery: reads by result from 0, their cost, what the last read found",
			record: func(m *metrics.Metrics) {
				m.ObserveTraefikPoll(2, 1500, nil)
				m.ObserveTraefikPoll(1, 0, errors.New("connection refused"))
				m.SetTraefikDiscovery(1000, 12, 3)
			},
			names: []string{"certfetch_traefik_polls_total", "certfetch_traefik_api_requests_total", "certfetch_traefik_api_response_bytes_total",
				"certfetch_traefik_routers", "certfetch_traefik_discovered_certificates", "certfetch_traefik_router_problems"},
			want: `# HELP certfetch_traefik_api_requests_total Requests sent to Traefik's API.
# TYPE certfetch_traefik_api_requests_total counter
certfetch_traefik_api_requests_total 3
# HELP certfetch_traefik_api_response_bytes_total Bytes of the bodies Traefik's API answered.
# TYPE certfetch_traefik_api_response_bytes_total counter
certfetch_traefik_api_response_bytes_total 1500
# HELP certfetch_traefik_discovered_certificates Certificates that Traefik's routers ask for, including those within their withdrawal grace period.
# TYPE certfetch_traefik_discovered_certificates gauge
certfetch_traefik_discovered_certificates 12
# HELP certfetch_traefik_polls_total Reads of Traefik's routers from its API, by result (success, failure); a failed read withdraws nothing.
# TYPE certfetch_traefik_polls_total counter
certfetch_traefik_polls_total{result="failure"} 1
certfetch_traefik_polls_total{result="success"} 1
# HELP certfetch_traefik_router_problems Routers certfetch cannot serve (see certfetch status), in the last successful read.
# TYPE certfetch_traefik_router_problems gauge
certfetch_traefik_router_problems 3
# HELP certfetch_traefik_routers Routers (HTTP and TCP) in the last successful read of Traefik's API.
# TYPE certfetch_traefik_routers gauge
certfetch_traefik_routers 1000
`,
		},
		{
			desc: "ObserveIssuance fills the slow-CA buckets by resolver and result",
			record: func(m *metrics.Metrics) {
				m.ObserveIssuance("internal", "success", 42*time.Second)
				m.ObserveIssuance("internal", "success", 500*time.Millisecond)
				m.ObserveIssuance("internal", "pending", 31*time.Minute)
			},
			names: []string{"certfetch_issuance_duration_seconds"},
			want: issuanceHeader + `certfetch_issuance_duration_seconds_bucket{resolver="internal",result="pending",le="1"} 0
certfetch_issuance_duration_seconds_bucket{resolver="internal",result="pending",le="2"} 0
certfetch_issuance_duration_seconds_bucket{resolver="internal",result="pending",le="5"} 0
certfetch_issuance_duration_seconds_bucket{resolver="internal",result="pending",le="10"} 0
certfetch_issuance_duration_seconds_bucket{resolver="internal",result="pending",le="20"} 0
certfetch_issuance_duration_seconds_bucket{resolver="internal",result="pending",le="30"} 0
certfetch_issuance_duration_seconds_bucket{resolver="internal",result="pending",le="45"} 0
certfetch_issuance_duration_seconds_bucket{resolver="internal",result="pending",le="60"} 0
certfetch_issuance_duration_seconds_bucket{resolver="internal",result="pending",le="90"} 0
certfetch_issuance_duration_seconds_bucket{resolver="internal",result="pending",le="120"} 0
certfetch_issuance_duration_seconds_bucket{resolver="internal",result="pending",le="300"} 0
certfetch_issuance_duration_seconds_bucket{resolver="internal",result="pending",le="600"} 0
certfetch_issuance_duration_seconds_bucket{resolver="internal",result="pending",le="1800"} 0
certfetch_issuance_duration_seconds_bucket{resolver="internal",result="pending",le="+Inf"} 1
certfetch_issuance_duration_seconds_sum{resolver="internal",result="pending"} 1860
certfetch_issuance_duration_seconds_count{resolver="internal",result="pending"} 1
certfetch_issuance_duration_seconds_bucket{resolver="internal",result="success",le="1"} 1
certfetch_issuance_duration_seconds_bucket{resolver="internal",result="success",le="2"} 1
certfetch_issuance_duration_seconds_bucket{resolver="internal",result="success",le="5"} 1
certfetch_issuance_duration_seconds_bucket{resolver="internal",result="success",le="10"} 1
certfetch_issuance_duration_seconds_bucket{resolver="internal",result="success",le="20"} 1
certfetch_issuance_duration_seconds_bucket{resolver="internal",result="success",le="30"} 1
certfetch_issuance_duration_seconds_bucket{resolver="internal",result="success",le="45"} 2
certfetch_issuance_duration_seconds_bucket{resolver="internal",result="success",le="60"} 2
certfetch_issuance_duration_seconds_bucket{resolver="internal",result="success",le="90"} 2
certfetch_issuance_duration_seconds_bucket{resolver="internal",result="success",le="120"} 2
certfetch_issuance_duration_seconds_bucket{resolver="internal",result="success",le="300"} 2
certfetch_issuance_duration_seconds_bucket{resolver="internal",result="success",le="600"} 2
certfetch_issuance_duration_seconds_bucket{resolver="internal",result="success",le="1800"} 2
certfetch_issuance_duration_seconds_bucket{resolver="internal",result="success",le="+Inf"} 2
certfetch_issuance_duration_seconds_sum{resolver="internal",result="success"} 42.5
certfetch_issuance_duration_seconds_count{resolver="internal",result="success"} 2
`,
		},
		{
			desc: "OrderPoll counts per resolver",
			record: func(m *metrics.Metrics) {
				m.OrderPoll("internal")
				m.OrderPoll("internal")
				m.OrderPoll("letsencrypt")
			},
			names: []string{"certfetch_order_polls_total"},
			want: `# HELP certfetch_order_polls_total Polls of an ACME order's status, by resolver.
# TYPE certfetch_order_polls_total counter
certfetch_order_polls_total{resolver="internal"} 2
certfetch_order_polls_total{resolver="letsencrypt"} 1
`,
		},
		{
			desc: "Failure counts per resolver and reason",
			record: func(m *metrics.Metrics) {
				m.Failure("internal", "rate_limited")
				m.Failure("internal", "rate_limited")
				m.Failure("internal", "deadline")
				m.Failure("letsencrypt", "unreachable")
			},
			names: []string{"certfetch_failures_total"},
			want: `# HELP certfetch_failures_total Failed certificate attempts, by resolver and reason.
# TYPE certfetch_failures_total counter
certfetch_failures_total{reason="deadline",resolver="internal"} 1
certfetch_failures_total{reason="rate_limited",resolver="internal"} 2
certfetch_failures_total{reason="unreachable",resolver="letsencrypt"} 1
`,
		},
		{
			desc: "SetCertificate exposes notAfter in Unix seconds, the last value winning, even for year 9999",
			record: func(m *metrics.Metrics) {
				m.SetCertificate("web", jan2027.Add(-time.Hour))
				m.SetCertificate("web", jan2027)
				m.SetCertificate("forever", time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC))
			},
			names: []string{"certfetch_certificate_expiry_timestamp_seconds"},
			want: expiryHeader + `certfetch_certificate_expiry_timestamp_seconds{name="forever"} 253402300799
certfetch_certificate_expiry_timestamp_seconds{name="web"} 1798761600
`,
		},
		{
			desc: "SetLastSuccess exposes the time in Unix seconds, keeping sub-second precision",
			record: func(m *metrics.Metrics) {
				m.SetLastSuccess("web", jan2027.Add(500*time.Millisecond))
			},
			names: []string{"certfetch_last_success_timestamp_seconds"},
			want: lastSuccessHeader + `certfetch_last_success_timestamp_seconds{name="web"} 1798761600.5
`,
		},
		{
			desc: "DeleteCertificate removes expiry and last success of that name only",
			record: func(m *metrics.Metrics) {
				for _, name := range []string{"web", "dropped"} {
					m.SetCertificate(name, jan2027)
					m.SetLastSuccess(name, jan2027)
				}
				m.DeleteCertificate("dropped")
			},
			names: []string{"certfetch_certificate_expiry_timestamp_seconds", "certfetch_last_success_timestamp_seconds"},
			want: expiryHeader + `certfetch_certificate_expiry_timestamp_seconds{name="web"} 1798761600
` + lastSuccessHeader + `certfetch_last_success_timestamp_seconds{name="web"} 1798761600
`,
		},
		{
			desc: "SetRenewal exposes the renewal time; DeleteCertificate removes it",
			record: func(m *metrics.Metrics) {
				m.SetRenewal("web", jan2027)
				m.SetRenewal("dropped", jan2027)
				m.DeleteCertificate("dropped")
			},
			names: []string{"certfetch_certificate_renewal_timestamp_seconds"},
			want: `# HELP certfetch_certificate_renewal_timestamp_seconds When the current certificate is due for renewal, as a Unix timestamp in seconds, by configured certificate name.
# TYPE certfetch_certificate_renewal_timestamp_seconds gauge
certfetch_certificate_renewal_timestamp_seconds{name="web"} 1798761600
`,
		},
		{
			desc: "orders in flight go up and down; the order timeout is per resolver; DeleteResolver removes both",
			record: func(m *metrics.Metrics) {
				m.OrderStarted("internal")
				m.OrderStarted("internal")
				m.OrderDone("internal")
				m.SetOrderTimeout("internal", 90*time.Second)
				m.OrderStarted("old")
				m.SetOrderTimeout("old", time.Minute)
				m.DeleteResolver("old")
			},
			names: []string{"certfetch_orders_in_flight", "certfetch_order_timeout_seconds"},
			want: `# HELP certfetch_order_timeout_seconds The configured order deadline of one attempt, by resolver.
# TYPE certfetch_order_timeout_seconds gauge
certfetch_order_timeout_seconds{resolver="internal"} 90
# HELP certfetch_orders_in_flight Order attempts running now, by resolver.
# TYPE certfetch_orders_in_flight gauge
certfetch_orders_in_flight{resolver="internal"} 1
`,
		},
		{
			desc: "ObservePhase fills the phase histogram",
			record: func(m *metrics.Metrics) {
				m.ObservePhase("internal", "finalize", 42*time.Second)
			},
			names: []string{"certfetch_order_phase_duration_seconds"},
			want: `# HELP certfetch_order_phase_duration_seconds Time spent in one phase of an order attempt (new_order, authorization, finalize, download), by resolver and phase.
# TYPE certfetch_order_phase_duration_seconds histogram
certfetch_order_phase_duration_seconds_bucket{phase="finalize",resolver="internal",le="0.05"} 0
certfetch_order_phase_duration_seconds_bucket{phase="finalize",resolver="internal",le="0.1"} 0
certfetch_order_phase_duration_seconds_bucket{phase="finalize",resolver="internal",le="0.25"} 0
certfetch_order_phase_duration_seconds_bucket{phase="finalize",resolver="internal",le="0.5"} 0
certfetch_order_phase_duration_seconds_bucket{phase="finalize",resolver="internal",le="1"} 0
certfetch_order_phase_duration_seconds_bucket{phase="finalize",resolver="internal",le="2"} 0
certfetch_order_phase_duration_seconds_bucket{phase="finalize",resolver="internal",le="5"} 0
certfetch_order_phase_duration_seconds_bucket{phase="finalize",resolver="internal",le="10"} 0
certfetch_order_phase_duration_seconds_bucket{phase="finalize",resolver="internal",le="30"} 0
certfetch_order_phase_duration_seconds_bucket{phase="finalize",resolver="internal",le="60"} 1
certfetch_order_phase_duration_seconds_bucket{phase="finalize",resolver="internal",le="120"} 1
certfetch_order_phase_duration_seconds_bucket{phase="finalize",resolver="internal",le="300"} 1
certfetch_order_phase_duration_seconds_bucket{phase="finalize",resolver="internal",le="1800"} 1
certfetch_order_phase_duration_seconds_bucket{phase="finalize",resolver="internal",le="+Inf"} 1
certfetch_order_phase_duration_seconds_sum{phase="finalize",resolver="internal"} 42
certfetch_order_phase_duration_seconds_count{phase="finalize",resolver="internal"} 1
`,
		},
		{
			desc: "DeleteCertificate of an unknown name changes nothing",
			record: func(m *metrics.Metrics) {
				m.SetCertificate("web", jan2027)
				m.DeleteCertificate("unknown")
			},
			names: []string{"certfetch_certificate_expiry_timestamp_seconds", "certfetch_last_success_timestamp_seconds"},
			want: expiryHeader + `certfetch_certificate_expiry_timestamp_seconds{name="web"} 1798761600
`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			t.Parallel()
			m := metrics.New()
			url := serveMetrics(t, m)
			tt.record(m)
			require.NoError(t, testutil.ScrapeAndCompare(url, strings.NewReader(tt.want), tt.names...))
		})
	}
}

func TestMetricsIncludesRuntimeCollectors(t *testing.T) {
	t.Parallel()
	resp, err := http.Get(serveMetrics(t, metrics.New()))
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	require.NoError(t, err)

	for _, name := range []string{"go_goroutines", "go_memstats_heap_alloc_bytes", "process_start_time_seconds", "process_cpu_seconds_total"} {
		assert.Contains(t, families, name)
	}
}

func TestMetricsConcurrentUse(t *testing.T) {
	t.Parallel()
	const goroutines, perGoroutine = 8, 100
	m := metrics.New()
	url := serveMetrics(t, m)

	var wg sync.WaitGroup
	for range goroutines {
		wg.Go(func() {
			for range perGoroutine {
				m.OrderPoll("internal")
				m.Failure("internal", "other")
				m.SetCertificate("web", time.Unix(1798761600, 0))
			}
		})
	}
	wg.Wait()

	want := `# HELP certfetch_order_polls_total Polls of an ACME order's status, by resolver.
# TYPE certfetch_order_polls_total counter
certfetch_order_polls_total{resolver="internal"} 800
# HELP certfetch_failures_total Failed certificate attempts, by resolver and reason.
# TYPE certfetch_failures_total counter
certfetch_failures_total{reason="other",resolver="internal"} 800
`
	require.NoError(t, testutil.ScrapeAndCompare(url, strings.NewReader(want),
		"certfetch_order_polls_total", "certfetch_failures_total"))
}

func TestHandler(t *testing.T) {
	t.Parallel()
	tests := []struct {
		desc       string
		metrics    *metrics.Metrics
		method     string
		path       string
		wantStatus int
		wantType   string
		wantBody   string
	}{
		{
			desc:       "healthz answers ok",
			metrics:    metrics.New(),
			method:     http.MethodGet,
			path:       "/healthz",
			wantStatus: http.StatusOK,
			wantType:   "text/plain; charset=utf-8",
			wantBody:   "ok\n",
		},
		{
			desc:       "healthz answers HEAD",
			metrics:    metrics.New(),
			method:     http.MethodHead,
			path:       "/healthz",
			wantStatus: http.StatusOK,
			wantType:   "text/plain; charset=utf-8",
		},
		{
			desc:       "healthz refuses POST",
			metrics:    metrics.New(),
			method:     http.MethodPost,
			path:       "/healthz",
			wantStatus: http.StatusMethodNotAllowed,
		},
		{
			desc:       "metrics uses the Prometheus text format",
			metrics:    metrics.New(),
			method:     http.MethodGet,
			path:       "/metrics",
			wantStatus: http.StatusOK,
			wantType:   "text/plain; version=0.0.4; charset=utf-8; escaping=underscores",
		},
		{
			desc:       "other paths are not found",
			metrics:    metrics.New(),
			method:     http.MethodGet,
			path:       "/",
			wantStatus: http.StatusNotFound,
		},
		{
			desc:       "nil Metrics still answers healthz",
			metrics:    nil,
			method:     http.MethodGet,
			path:       "/healthz",
			wantStatus: http.StatusOK,
			wantType:   "text/plain; charset=utf-8",
			wantBody:   "ok\n",
		},
		{
			desc:       "nil Metrics serves no metrics",
			metrics:    nil,
			method:     http.MethodGet,
			path:       "/metrics",
			wantStatus: http.StatusNotFound,
		},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			t.Parallel()
			rec := httptest.NewRecorder()
			tt.metrics.Handler().ServeHTTP(rec, httptest.NewRequest(tt.method, tt.path, nil))

			res := rec.Result()
			assert.Equal(t, tt.wantStatus, res.StatusCode)
			if tt.wantType != "" {
				assert.Equal(t, tt.wantType, res.Header.Get("Content-Type"))
			}
			if tt.wantBody != "" {
				body, err := io.ReadAll(res.Body)
				require.NoError(t, err)
				assert.Equal(t, tt.wantBody, string(body))
			}
		})
	}
}

func TestNilMetricsIsNoOp(t *testing.T) {
	t.Parallel()
	var m *metrics.Metrics
	assert.NotPanics(t, func() {
		m.ObserveIssuance("internal", "success", time.Second)
		m.OrderPoll("internal")
		m.Failure("internal", "other")
		m.SetCertificate("web", time.Now())
		m.SetLastSuccess("web", time.Now())
		m.DeleteCertificate("web")
		m.SetRenewal("web", time.Now())
		m.OrderStarted("internal")
		m.OrderDone("internal")
		m.SetOrderTimeout("internal", time.Minute)
		m.ObservePhase("internal", "finalize", time.Second)
		m.DeleteResolver("internal")
		assert.NotNil(t, m.Handler())
	})
}

// TestBuildInfo: certfetch_build_info is exposed from the start with value 1
// and the running binary's version, revision and Go version as labels.
func TestBuildInfo(t *testing.T) {
	t.Parallel()
	resp, err := http.Get(serveMetrics(t, metrics.New()))
	require.NoError(t, err)
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	require.NoError(t, err)
	family, ok := families["certfetch_build_info"]
	require.True(t, ok, "certfetch_build_info is exposed")
	require.Len(t, family.GetMetric(), 1)
	info := buildinfo.Read()
	labels := map[string]string{}
	for _, l := range family.GetMetric()[0].GetLabel() {
		labels[l.GetName()] = l.GetValue()
	}
	assert.Equal(t, map[string]string{
		"version":   info.Version,
		"revision":  info.RevisionLabel(),
		"goversion": runtime.Version(),
	}, labels)
	assert.Equal(t, 1.0, family.GetMetric()[0].GetGauge().GetValue())
}

// TestInitResolverStartsAtZero: a resolver's counters and histograms exist at zero before
// anything happened, so that the first event of each kind is an increase.
func TestInitResolverStartsAtZero(t *testing.T) {
	t.Parallel()
	m := metrics.New()
	url := serveMetrics(t, m)
	m.InitResolver("internal", []string{"deadline", "unreachable"}, []string{"finalize"})
	_, scrape := get(t, url)
	for _, want := range []string{
		`certfetch_failures_total{reason="deadline",resolver="internal"} 0`,
		`certfetch_failures_total{reason="unreachable",resolver="internal"} 0`,
		`certfetch_issuance_duration_seconds_count{resolver="internal",result="pending"} 0`,
		`certfetch_order_phase_duration_seconds_count{phase="finalize",resolver="internal"} 0`,
		`certfetch_order_polls_total{resolver="internal"} 0`,
		`certfetch_orders_in_flight{resolver="internal"} 0`,
	} {
		assert.Contains(t, scrape, want)
	}
	m.DeleteResolver("internal")
	_, scrape = get(t, url)
	assert.NotContains(t, scrape, `resolver="internal"`)
}
