package prometheus_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
)

// dashboardFile is the Grafana dashboard shipped beside the rules.
const dashboardFile = "../grafana/certfetch.json"

// dashboard is the part of Grafana's dashboard JSON model read here.
type dashboard struct {
	UID        string `json:"uid"`
	Title      string `json:"title"`
	Schema     int    `json:"schemaVersion"`
	Templating struct {
		List []struct {
			Name string `json:"name"`
			Type string `json:"type"`
		} `json:"list"`
	} `json:"templating"`
	Panels []panel `json:"panels"`
}

type panel struct {
	ID          int    `json:"id"`
	Type        string `json:"type"`
	Title       string `json:"title"`
	Description string `json:"description"`
	Datasource  *struct {
		Type string `json:"type"`
		UID  string `json:"uid"`
	} `json:"datasource"`
	GridPos struct{ X, Y, W, H int } `json:"gridPos"`
	Targets []struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // inside collapsed rows
}

// grafanaVariables are replaced by a value of the right kind before the
// expressions are parsed.
var grafanaVariables = strings.NewReplacer("$__rate_interval", "5m", "$instance", ".*")

// TestDashboard: the dashboard parses, every query names only metrics
// certfetch exports and is valid PromQL (promtool parses each one as a
// recording rule), panels do not overlap, and together with the alert
// rules every certfetch metric is shown or watched somewhere.
func TestDashboard(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile(dashboardFile)
	require.NoError(t, err)
	dec := json.NewDecoder(strings.NewReader(string(data)))
	var d dashboard
	require.NoError(t, dec.Decode(&d))
	assert.Equal(t, "certfetch", d.UID)
	assert.NotEmpty(t, d.Title)
	assert.GreaterOrEqual(t, d.Schema, 36)
	variables := map[string]string{}
	for _, v := range d.Templating.List {
		variables[v.Name] = v.Type
	}
	assert.Equal(t, map[string]string{"datasource": "datasource", "instance": "query"}, variables)

	used := map[string]bool{}
	var rules []map[string]string
	var occupied [][24]bool
	var visit func(panels []panel)
	visit = func(panels []panel) {
		for _, p := range panels {
			visit(p.Panels)
			assert.LessOrEqual(t, p.GridPos.X+p.GridPos.W, 24, "panel %q is wider than the grid", p.Title)
			for y := p.GridPos.Y; y < p.GridPos.Y+p.GridPos.H; y++ {
				for len(occupied) <= y {
					occupied = append(occupied, [24]bool{})
				}
				for x := p.GridPos.X; x < p.GridPos.X+p.GridPos.W && x < 24; x++ {
					assert.False(t, occupied[y][x], "panel %q overlaps another at %d,%d", p.Title, x, y)
					occupied[y][x] = true
				}
			}
			if p.Type == "row" {
				continue
			}
			require.NotNil(t, p.Datasource, "panel %q has no datasource", p.Title)
			assert.Equal(t, "${datasource}", p.Datasource.UID, "panel %q uses the datasource variable", p.Title)
			assert.NotEmpty(t, p.Description, "panel %q says what it shows", p.Title)
			assert.NotEmpty(t, p.Targets, "panel %q has no query", p.Title)
			for _, q := range p.Targets {
				for _, name := range certfetchSeries.FindAllString(q.Expr, -1) {
					assert.True(t, knownSeries(name), "panel %q: %s is not a metric certfetch exports", p.Title, name)
					used[strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(name, "_bucket"), "_count"), "_sum")] = true
				}
				rules = append(rules, map[string]string{
					"record": fmt.Sprintf("dashboard:panel_%d_%s", p.ID, q.RefID),
					"expr":   grafanaVariables.Replace(q.Expr),
				})
			}
		}
	}
	visit(d.Panels)
	require.NotEmpty(t, rules)

	// promtool parses every query (as a recording rule).
	out, err := yaml.Marshal(map[string]any{"groups": []any{map[string]any{"name": "dashboard", "rules": rules}}})
	require.NoError(t, err)
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "dashboard.rules.yml"), out, 0o644))
	msg, err := runPromtool(t, dir, "check", "rules", "dashboard.rules.yml")
	require.NoError(t, err, "a dashboard query is not valid PromQL:\n%s", msg)

	// Every certfetch metric is on the dashboard or in an alert.
	rulesYAML, err := os.ReadFile(rulesFile)
	require.NoError(t, err)
	for _, name := range certfetchSeries.FindAllString(string(rulesYAML), -1) {
		used[regexp.MustCompile(`_(bucket|count|sum)$`).ReplaceAllString(name, "")] = true
	}
	for name := range metricNames {
		assert.True(t, used[name], "%s is neither on the dashboard nor in an alert", name)
	}
}
