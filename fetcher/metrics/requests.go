package metrics

import "github.com/prometheus/client_golang/prometheus"

// requestActions and requestResults are the label values of certfetch_requests_total.
var (
	requestActions = []string{"renew", "revoke"}
	requestResults = []string{"success", "failure"}
)

// newRequests is certfetch_requests_total{action,result}, every series created at zero
// (see InitResolver for why).
func newRequests() *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace,
		Name:      "requests_total",
		Help:      "Operator requests carried out by this process (certfetch renew --force, certfetch revoke), by action (renew, revoke) and result (success, failure).",
	}, []string{"action", "result"})
	for _, a := range requestActions {
		for _, r := range requestResults {
			c.WithLabelValues(a, r)
		}
	}
	return c
}

// Request counts an operator request carried out: action "renew" or "revoke", result
// "success" (revoked if asked, and the replacement's first attempt did not fail) or
// "failure".
func (m *Metrics) Request(action, result string) {
	if m == nil {
		return
	}
	m.requests.WithLabelValues(action, result).Inc()
}
