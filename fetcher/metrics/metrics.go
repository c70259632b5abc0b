// Package metrics holds certfetch's Prometheus metrics and the HTTP server
// that exposes them.
//
// Names follow the Prometheus conventions: every metric starts with
// certfetch_, durations are in seconds, counters end in _total and points in
// time are Unix timestamps in seconds, exported as gauges named
// *_timestamp_seconds. The metrics live on a private registry, together with
// the standard Go runtime (go_*) and process (process_*) collectors, so
// nothing else in the binary can add to or break them.
package metrics

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/certfetch/certfetch/internal/buildinfo"
)

const namespace = "certfetch"

// issuanceBuckets are the upper bounds, in seconds, of the issuance duration
// histogram. certfetch exists for slow CAs: a public CA answers in a few
// seconds, an internal CA relaying to an upstream CA takes tens of seconds
// (42 s in the report that started the project), and a CA with manual
// approval or a long queue takes many minutes. The bounds are dense from 1 s
// to 2 min, around the default 30 s order deadline (config.DefaultTimeout,
// Traefik's own limit), so that orders just under and just over it are told
// apart, and sparse up to 30 min for deadlines configured that long. Anything
// slower lands only in +Inf. 13 buckets keep each series cheap.
var issuanceBuckets = []float64{1, 2, 5, 10, 20, 30, 45, 60, 90, 120, 300, 600, 1800}

// phaseBuckets are the upper bounds, in seconds, of the order phase histogram.
// A phase of a healthy order takes milliseconds (new order, download) to a
// few seconds (validation); finalize on a slow CA takes as long as the whole
// order, so the top bounds follow issuanceBuckets.
var phaseBuckets = []float64{0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 1800}

// Metrics records what the daemon does. It is safe for concurrent use.
//
// A nil *Metrics is valid: every method is then a no-op, so the daemon can
// run with metrics switched off without checking.
//
// Label values come from the caller. Keep them bounded: resolver names and
// certificate names come from the configuration, result and reason from the
// fixed lists documented on each method.
type Metrics struct {
	registry    *prometheus.Registry
	issuance    *prometheus.HistogramVec
	orderPolls  *prometheus.CounterVec
	failures    *prometheus.CounterVec
	expiry      *prometheus.GaugeVec
	lastSuccess *prometheus.GaugeVec
	renewal     *prometheus.GaugeVec
	inFlight    *prometheus.GaugeVec
	timeout     *prometheus.GaugeVec
	phases      *prometheus.HistogramVec
	requests    *prometheus.CounterVec
	traefik     traefikMetrics
}

// New returns Metrics registered on a new private registry, along with the
// Go runtime and process collectors and certfetch_build_info, which
// describes the running binary (see newBuildInfo).
func New() *Metrics {
	m := &Metrics{
		registry: prometheus.NewRegistry(),
		traefik:  newTraefikMetrics(),
		issuance: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace,
			Name:      "issuance_duration_seconds",
			Help:      "Time from the start of a certificate order to its outcome, by resolver and result (success, pending, failure).",
			Buckets:   issuanceBuckets,
		}, []string{"resolver", "result"}),
		orderPolls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace,
			Name:      "order_polls_total",
			Help:      "Polls of an ACME order's status, by resolver.",
		}, []string{"resolver"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace,
			Name:      "failures_total",
			Help:      "Failed certificate attempts, by resolver and reason.",
		}, []string{"resolver", "reason"}),
		expiry: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace,
			Name:      "certificate_expiry_timestamp_seconds",
			Help:      "NotAfter of the current certificate, as a Unix timestamp in seconds, by configured certificate name.",
		}, []string{"name"}),
		lastSuccess: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace,
			Name:      "last_success_timestamp_seconds",
			Help:      "Time of the last successful issuance, as a Unix timestamp in seconds, by configured certificate name.",
		}, []string{"name"}),
		renewal: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace,
			Name:      "certificate_renewal_timestamp_seconds",
			Help:      "When the current certificate is due for renewal, as a Unix timestamp in seconds, by configured certificate name.",
		}, []string{"name"}),
		inFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace,
			Name:      "orders_in_flight",
			Help:      "Order attempts running now, by resolver.",
		}, []string{"resolver"}),
		timeout: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace,
			Name:      "order_timeout_seconds",
			Help:      "The configured order deadline of one attempt, by resolver.",
		}, []string{"resolver"}),
		phases: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace,
			Name:      "order_phase_duration_seconds",
			Help:      "Time spent in one phase of an order attempt (new_order, authorization, finalize, download), by resolver and phase.",
			Buckets:   phaseBuckets,
		}, []string{"resolver", "phase"}),
		requests: newRequests(),
	}
	m.registry.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.issuance,
		m.orderPolls,
		m.failures,
		m.expiry,
		m.lastSuccess,
		m.renewal,
		m.inFlight,
		m.timeout,
		m.phases,
		m.requests,
		newBuildInfo(buildinfo.Read()),
	)
	m.registry.MustRegister(m.traefik.collectors()...)
	return m
}

// newBuildInfo is certfetch_build_info{version,revision,goversion}, the
// Prometheus convention for describing a binary: one series whose value is
// always 1 and whose labels say what runs, so that dashboards and alerts can
// join on them (e.g. `* on(instance) group_left(version) certfetch_build_info`)
// and a rollout shows as the labels changing. version is the module version
// ("(devel)" for go run), revision the commit with "+dirty" for uncommitted
// changes ("unknown" without VCS data), goversion the toolchain, all as
// internal/buildinfo reads them from the binary.
func newBuildInfo(info buildinfo.Info) prometheus.Collector {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: namespace,
		Name:      "build_info",
		Help:      "Always 1; the labels describe the running certfetch binary: module version, VCS revision (+dirty for uncommitted changes) and Go version.",
	}, []string{"version", "revision", "goversion"})
	g.WithLabelValues(info.Version, info.RevisionLabel(), info.GoVersion).Set(1)
	return g
}

// ObserveIssuance records how long an order took, in
// certfetch_issuance_duration_seconds{resolver,result}. result is "success"
// (certificate issued), "pending" (the deadline passed while the order is
// still alive at the CA, to be resumed) or "failure".
func (m *Metrics) ObserveIssuance(resolver, result string, d time.Duration) {
	if m == nil {
		return
	}
	m.issuance.WithLabelValues(resolver, result).Observe(d.Seconds())
}

// OrderPoll counts one poll of an order's status, in
// certfetch_order_polls_total{resolver}.
func (m *Metrics) OrderPoll(resolver string) {
	if m == nil {
		return
	}
	m.orderPolls.WithLabelValues(resolver).Inc()
}

// Failure counts one failed attempt, in
// certfetch_failures_total{resolver,reason}. reason is a short fixed word:
// rate_limited, unreachable, authorization, order_invalid, bad_certificate,
// account, deadline, store, publish or other.
func (m *Metrics) Failure(resolver, reason string) {
	if m == nil {
		return
	}
	m.failures.WithLabelValues(resolver, reason).Inc()
}

// SetCertificate sets certfetch_certificate_expiry_timestamp_seconds{name} to
// the certificate's notAfter.
func (m *Metrics) SetCertificate(name string, notAfter time.Time) {
	if m == nil {
		return
	}
	m.expiry.WithLabelValues(name).Set(unixSeconds(notAfter))
}

// SetLastSuccess sets certfetch_last_success_timestamp_seconds{name} to t.
func (m *Metrics) SetLastSuccess(name string, t time.Time) {
	if m == nil {
		return
	}
	m.lastSuccess.WithLabelValues(name).Set(unixSeconds(t))
}

// SetRenewal sets certfetch_certificate_renewal_timestamp_seconds{name} to
// when the certificate is due for renewal.
func (m *Metrics) SetRenewal(name string, renewAt time.Time) {
	if m == nil {
		return
	}
	m.renewal.WithLabelValues(name).Set(unixSeconds(renewAt))
}

// OrderStarted and OrderDone move certfetch_orders_in_flight{resolver}.
func (m *Metrics) OrderStarted(resolver string) {
	if m == nil {
		return
	}
	m.inFlight.WithLabelValues(resolver).Inc()
}

// OrderDone: see OrderStarted.
func (m *Metrics) OrderDone(resolver string) {
	if m == nil {
		return
	}
	m.inFlight.WithLabelValues(resolver).Dec()
}

// SetOrderTimeout sets certfetch_order_timeout_seconds{resolver}.
func (m *Metrics) SetOrderTimeout(resolver string, d time.Duration) {
	if m == nil {
		return
	}
	m.timeout.WithLabelValues(resolver).Set(d.Seconds())
}

// ObservePhase records one phase of an order in
// certfetch_order_phase_duration_seconds{resolver,phase}; phase is one of
// the acme.Phase* names.
func (m *Metrics) ObservePhase(resolver, phase string, d time.Duration) {
	if m == nil {
		return
	}
	m.phases.WithLabelValues(resolver, phase).Observe(d.Seconds())
}

// DeleteCertificate removes the series of a certificate dropped from the
// configuration, so that alerts on expiry stop firing for it. Deleting an
// unknown name does nothing.
func (m *Metrics) DeleteCertificate(name string) {
	if m == nil {
		return
	}
	m.expiry.DeleteLabelValues(name)
	m.lastSuccess.DeleteLabelValues(name)
	m.renewal.DeleteLabelValues(name)
}

// issuanceResults are the result label values of ObserveIssuance.
var issuanceResults = []string{"success", "pending", "failure"}

// InitResolver creates every series of a resolver at zero: the failure
// counters for each of reasons, the issuance histogram for each result, the
// phase histogram for each of phases, the poll counter and the orders in
// flight. Prometheus' increase() and rate() count nothing for a series'
// first sample, so without this the first failure (or pending order) of
// each kind after a start would go unseen by the alert rules.
func (m *Metrics) InitResolver(resolver string, reasons, phases []string) {
	if m == nil {
		return
	}
	for _, r := range reasons {
		m.failures.WithLabelValues(resolver, r)
	}
	for _, r := range issuanceResults {
		m.issuance.WithLabelValues(resolver, r)
	}
	for _, p := range phases {
		m.phases.WithLabelValues(resolver, p)
	}
	m.orderPolls.WithLabelValues(resolver)
	m.inFlight.WithLabelValues(resolver)
}

// DeleteResolver removes the series of a resolver dropped from the
// configuration.
func (m *Metrics) DeleteResolver(name string) {
	if m == nil {
		return
	}
	m.timeout.DeleteLabelValues(name)
	m.inFlight.DeleteLabelValues(name)
	m.orderPolls.DeleteLabelValues(name)
	m.failures.DeletePartialMatch(prometheus.Labels{"resolver": name})
	m.issuance.DeletePartialMatch(prometheus.Labels{"resolver": name})
	m.phases.DeletePartialMatch(prometheus.Labels{"resolver": name})
}

// Handler returns the HTTP handler to serve: GET /metrics exposes the
// private registry in the formats Prometheus negotiates, GET /healthz answers
// 200 "ok\n" while the process serves HTTP. Anything else is 404 (405 for
// other methods on those paths). On a nil *Metrics only /healthz is served.
func (m *Metrics) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	if m != nil {
		mux.Handle("GET /metrics", promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{}))
	}
	return mux
}

// unixSeconds converts t to Unix seconds with sub-second precision. It avoids
// t.UnixNano, which overflows after 2262: RFC 5280 lets a certificate without
// a defined end carry notAfter 9999-12-31T23:59:59Z.
func unixSeconds(t time.Time) float64 {
	return float64(t.Unix()) + float64(t.Nanosecond())/1e9
}
