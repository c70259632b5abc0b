// Package prometheus_test checks the shipped Prometheus alerting rules
// (certfetch.rules.yml) with the real promtool: `promtool check rules` for
// syntax and PromQL, `promtool test rules` for the behaviour pinned down in
// certfetch.rules.test.yml (when each alert fires, when it clears, and the
// exact text the operator reads). promtool ships in the Debian package
// prometheus (2.42 here); a missing promtool fails the tests, it does not
// skip them.
//
// On top, the rules are checked for what promtool does not know: every
// alert has a severity and tells the operator what happened and what to do,
// names only metrics certfetch exports, and is tested firing and not firing;
// and the tests are shown to catch changes of the thresholds (a copy of the
// rules with one threshold changed must fail them). dashboard_test.go checks
// the Grafana dashboard (dist/grafana) against the same list of metrics.
package prometheus_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
)

const rulesFile = "certfetch.rules.yml"

// testFiles are promtool's unit tests: one evaluated every minute, one every
// hour (promtool evaluates every rule at each step up to the last
// eval_time, and the certificate tests span 32 days).
var testFiles = []string{"certfetch.rules.test.yml", "certfetch.days.test.yml"}

// metricNames are the metrics certfetch exports (README, "Metrics"), besides
// the standard go_* and process_* ones. Histograms also expose _bucket,
// _sum and _count series.
var metricNames = map[string]string{
	"certfetch_issuance_duration_seconds":              "histogram",
	"certfetch_order_phase_duration_seconds":           "histogram",
	"certfetch_order_polls_total":                      "counter",
	"certfetch_failures_total":                         "counter",
	"certfetch_certificate_expiry_timestamp_seconds":   "gauge",
	"certfetch_certificate_renewal_timestamp_seconds":  "gauge",
	"certfetch_last_success_timestamp_seconds":         "gauge",
	"certfetch_orders_in_flight":                       "gauge",
	"certfetch_order_timeout_seconds":                  "gauge",
	"certfetch_build_info":                             "gauge",
	"certfetch_traefik_polls_total":                    "counter",
	"certfetch_traefik_api_requests_total":             "counter",
	"certfetch_traefik_api_response_bytes_total":       "counter",
	"certfetch_traefik_last_success_timestamp_seconds": "gauge",
	"certfetch_traefik_routers":                        "gauge",
	"certfetch_traefik_discovered_certificates":        "gauge",
	"certfetch_traefik_router_problems":                "gauge",
}

// otherMetrics are the non-certfetch series the rules may use: Prometheus's
// own up, and the process collector certfetch registers.
var otherMetrics = []string{"up", "process_start_time_seconds"}

// knownSeries reports whether name is a series certfetch exports.
func knownSeries(name string) bool {
	if _, ok := metricNames[name]; ok {
		return true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suffix); ok && metricNames[base] == "histogram" {
			return true
		}
	}
	return false
}

// certfetchSeries matches every certfetch metric name in a PromQL expression.
var certfetchSeries = regexp.MustCompile(`\bcertfetch_[a-z_]+`)

// promtool returns the path of promtool or fails the test.
func promtool(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("promtool")
	require.NoError(t, err, "promtool not found: install the Debian package prometheus (apt-get install -y prometheus)")
	return path
}

// runPromtool runs promtool in dir and returns its combined output.
func runPromtool(t *testing.T, dir string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(promtool(t), args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func TestPromtoolCheckRules(t *testing.T) {
	t.Parallel()
	out, err := runPromtool(t, ".", "check", "rules", rulesFile)
	require.NoError(t, err, out)
	assert.Contains(t, out, "SUCCESS")
}

func TestPromtoolTestRules(t *testing.T) {
	t.Parallel()
	out, err := runPromtool(t, ".", append([]string{"test", "rules"}, testFiles...)...)
	require.NoError(t, err, out)
	assert.Equal(t, len(testFiles), strings.Count(out, "SUCCESS"), out)
}

// TestPromtoolTestRulesCatchChanges runs the unit tests against copies of
// the rules with one threshold, duration or text changed each: every copy
// must fail them. A mutation whose target text is missing fails too, so the
// list follows the rules file.
func TestPromtoolTestRulesCatchChanges(t *testing.T) {
	t.Parallel()
	rules, err := os.ReadFile(rulesFile)
	require.NoError(t, err)
	const minutes, days = "certfetch.rules.test.yml", "certfetch.days.test.yml"
	// Each mutation names the test file that must catch it, so that each
	// runs one promtool test (a few seconds each on a busy machine).
	mutations := []struct{ desc, old, new, catcher string }{
		{"failure threshold", `[6h]) >= 3`, `[6h]) >= 4`, minutes},
		{"failure window", `[6h]) >= 3`, `[2h]) >= 3`, minutes},
		{"expiring-soon share", `clamp_max(0.5 *`, `clamp_max(0.6 *`, days},
		{"expiring-soon cap", `7 * 86400)`, `14 * 86400)`, days},
		{"overdue cap", `- certfetch_certificate_renewal_timestamp_seconds), 86400)`, `- certfetch_certificate_renewal_timestamp_seconds), 2 * 86400)`, days},
		{"expired boundary", `certfetch_certificate_expiry_timestamp_seconds <= time()`, `certfetch_certificate_expiry_timestamp_seconds < time() - 3600`, days},
		{"CA unreachable window", "[90m])) > 0\n          unless", "[30m])) > 0\n          unless", minutes},
		{"CA unreachable success", `result=~"success|pending"`, `result="pending"`, minutes},
		{"deadline share", `> ignoring (result) 0.8 *`, `> ignoring (result) 1.0 *`, minutes},
		{"outlived window", `result="pending"}[1d]`, `result="pending"}[12h]`, days},
		{"stuck history", `and (certfetch_orders_in_flight offset 1h) > 0`, ``, minutes},
		{"stuck deadline", `certfetch_order_timeout_seconds < 3000`, `certfetch_order_timeout_seconds < 7200`, minutes},
		{"down for", "up{job=\"certfetch\"} == 0\n        for: 5m", "up{job=\"certfetch\"} == 0\n        for: 1m", minutes},
		{"restart count", `[1h]) >= 3`, `[1h]) >= 4`, minutes},
		{"traefik api success", `unless sum without (result) (increase(certfetch_traefik_polls_total{result="success"}[15m])) > 0`, ``, minutes},
		{"advice text", `The CA could not validate the HTTP-01 challenge.`, `The CA could not validate the challenge.`, minutes},
		{"severity", "severity: critical\n        annotations:\n          summary: \"certfetch: certificate {{ $labels.name }} has expired\"",
			"severity: warning\n        annotations:\n          summary: \"certfetch: certificate {{ $labels.name }} has expired\"", days},
	}
	for _, m := range mutations {
		t.Run(m.desc, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, 1, strings.Count(string(rules), m.old), "mutation target %q must occur exactly once in %s", m.old, rulesFile)
			dir := t.TempDir()
			mutated := strings.Replace(string(rules), m.old, m.new, 1)
			require.NoError(t, os.WriteFile(filepath.Join(dir, rulesFile), []byte(mutated), 0o644))
			data, err := os.ReadFile(m.catcher)
			require.NoError(t, err)
			require.NoError(t, os.WriteFile(filepath.Join(dir, m.catcher), data, 0o644))
			out, err := runPromtool(t, dir, "check", "rules", rulesFile)
			require.NoError(t, err, "the mutated rules must still be valid, so that only the tests can catch it:\n%s", out)
			out, err = runPromtool(t, dir, "test", "rules", m.catcher)
			require.Error(t, err, "the tests pass with %s changed:\n%s", m.desc, out)
			assert.Contains(t, out, "FAILED")
		})
	}
}

// ruleFile is the part of Prometheus's rule file format read here.
type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Record      string            `yaml:"record"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

// testFile is the part of promtool's unit test format read here.
type testFile struct {
	RuleFiles []string `yaml:"rule_files"`
	Tests     []struct {
		Name          string `yaml:"name"`
		AlertRuleTest []struct {
			EvalTime  string `yaml:"eval_time"`
			Alertname string `yaml:"alertname"`
			ExpAlerts []struct {
				ExpLabels map[string]string `yaml:"exp_labels"`
			} `yaml:"exp_alerts"`
		} `yaml:"alert_rule_test"`
	} `yaml:"tests"`
}

func decodeYAML(t *testing.T, path string, v any) {
	t.Helper()
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	dec := yaml.NewDecoder(strings.NewReader(string(data)))
	dec.KnownFields(false)
	require.NoError(t, dec.Decode(v), path)
}

// TestRulesAreActionableAndTested checks each alert for what an operator
// needs and for test coverage both ways.
func TestRulesAreActionableAndTested(t *testing.T) {
	t.Parallel()
	var rules ruleFile
	decodeYAML(t, rulesFile, &rules)
	fires, silent := map[string]bool{}, map[string]bool{}
	for _, name := range testFiles {
		var tests testFile
		decodeYAML(t, name, &tests)
		require.Equal(t, []string{rulesFile}, tests.RuleFiles, name)
		for _, tc := range tests.Tests {
			for _, at := range tc.AlertRuleTest {
				if len(at.ExpAlerts) > 0 {
					fires[at.Alertname] = true
				} else {
					silent[at.Alertname] = true
				}
			}
		}
	}

	var alerts []string
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			require.NotEmpty(t, r.Alert, "group %s: only alerting rules are expected, got record %q", g.Name, r.Record)
			assert.NotContains(t, alerts, r.Alert, "alert names are unique")
			alerts = append(alerts, r.Alert)
			assert.True(t, strings.HasPrefix(r.Alert, "Certfetch"), "%s: alert names start with Certfetch", r.Alert)
			assert.Contains(t, []string{"warning", "critical"}, r.Labels["severity"], "%s: severity", r.Alert)
			assert.NotEmpty(t, r.Annotations["summary"], "%s: summary", r.Alert)
			assert.Greater(t, len(r.Annotations["description"]), 150, "%s: the description says what to do", r.Alert)
			for _, name := range certfetchSeries.FindAllString(r.Expr, -1) {
				assert.True(t, knownSeries(name), "%s: %s is not a metric certfetch exports", r.Alert, name)
			}
			for _, name := range otherMetrics {
				if regexp.MustCompile(`\b` + name + `\b`).MatchString(r.Expr) {
					assert.Contains(t, r.Expr, `{job="certfetch"}`, "%s: %s must select certfetch's job", r.Alert, name)
				}
			}
			assert.True(t, fires[r.Alert], "%s: no test expects it to fire", r.Alert)
			assert.True(t, silent[r.Alert], "%s: no test expects it to stay silent", r.Alert)
		}
	}
	assert.Len(t, alerts, 12)
	for name := range fires {
		assert.True(t, slices.Contains(alerts, name), "the tests name an unknown alert %s", name)
	}
}
