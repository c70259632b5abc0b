package metrics

import "github.com/prometheus/client_golang/prometheus"

// traefikMetrics describe the discovery of Traefik's routers (the traefik section).
type traefikMetrics struct {
	polls       *prometheus.CounterVec
	requests    prometheus.Counter
	bytes       prometheus.Counter
	lastSuccess prometheus.Gauge
	routers     prometheus.Gauge
	discovered  prometheus.Gauge
	problems    prometheus.Gauge
}

func newTraefikMetrics() traefikMetrics {
	gauge := func(name, help string) prometheus.Gauge {
		return prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace, Subsystem: "traefik", Name: name, Help: help})
	}
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Subsystem: "traefik", Name: name, Help: help})
	}
	t := traefikMetrics{
		polls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: "traefik", Name: "polls_total",
			Help: "Reads of Traefik's routers from its API, by result (success, failure); a failed read withdraws nothing.",
		}, []string{"result"}),
		requests:    counter("api_requests_total", "Requests sent to Traefik's API."),
		bytes:       counter("api_response_bytes_total", "Bytes of the bodies Traefik's API answered."),
		lastSuccess: gauge("last_success_timestamp_seconds", "When Traefik's routers were last read in full (Unix seconds); 0 before the first read."),
		routers:     gauge("routers", "Routers (HTTP and TCP) in the last successful read of Traefik's API."),
		discovered:  gauge("discovered_certificates", "Certificates that Traefik's routers ask for, including those within their withdrawal grace period."),
		problems:    gauge("router_problems", "Routers certfetch cannot serve (see certfetch status), in the last successful read."),
	}
	// Both results exist from the start, so that increase() sees the first failure.
	t.polls.WithLabelValues("success")
	t.polls.WithLabelValues("failure")
	return t
}

func (t traefikMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{t.polls, t.requests, t.bytes, t.lastSuccess, t.routers, t.discovered, t.problems}
}

// ObserveTraefikPoll records one read of Traefik's API: the requests it sent and the
// bytes it received (also for a failed read), and its result.
func (m *Metrics) ObserveTraefikPoll(requests int, bytes int64, err error) {
	if m == nil {
		return
	}
	m.traefik.requests.Add(float64(requests))
	m.traefik.bytes.Add(float64(bytes))
	if err != nil {
		m.traefik.polls.WithLabelValues("failure").Inc()
		return
	}
	m.traefik.polls.WithLabelValues("success").Inc()
	m.traefik.lastSuccess.SetToCurrentTime()
}

// SetTraefikDiscovery records what the last successful read found.
func (m *Metrics) SetTraefikDiscovery(routers, certificates, problems int) {
	if m == nil {
		return
	}
	m.traefik.routers.Set(float64(routers))
	m.traefik.discovered.Set(float64(certificates))
	m.traefik.problems.Set(float64(problems))
}
