// Package systemd_test checks the shipped systemd units: the hardening the
// README promises is present, and the one-shot unit keeps the same sandbox as
// the daemon. systemd-analyze (package systemd) scores them; see README.
package systemd_test

import (
	"bufio"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// unit maps "Section.Key" to every value assigned to it, in order.
type unit map[string][]string

// parseUnit reads the subset of systemd's unit syntax these files use:
// sections, Key=Value lines, comments. No line continuations.
func parseUnit(t *testing.T, path string) unit {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	u := unit{}
	section := ""
	scanner := bufio.NewScanner(f)
	for line := 1; scanner.Scan(); line++ {
		text := strings.TrimSpace(scanner.Text())
		switch {
		case text == "" || strings.HasPrefix(text, "#") || strings.HasPrefix(text, ";"):
		case strings.HasPrefix(text, "[") && strings.HasSuffix(text, "]"):
			section = strings.Trim(text, "[]")
		default:
			key, value, ok := strings.Cut(text, "=")
			require.True(t, ok, "%s:%d: not Key=Value: %q", path, line, text)
			require.NotEmpty(t, section, "%s:%d: outside a section", path, line)
			require.False(t, strings.HasSuffix(value, `\`), "%s:%d: line continuations are not parsed", path, line)
			u[section+"."+key] = append(u[section+"."+key], value)
		}
	}
	require.NoError(t, scanner.Err())
	return u
}

// sandbox is the hardening both service units must carry, value for value.
var sandbox = map[string][]string{
	"User":                    {"certfetch"},
	"Group":                   {"certfetch"},
	"StateDirectory":          {"certfetch"},
	"StateDirectoryMode":      {"0700"},
	"UMask":                   {"0077"},
	"ReadWritePaths":          {"/etc/traefik/certfetch", "-/var/lib/certfetch-webroot"},
	"CapabilityBoundingSet":   {""},
	"AmbientCapabilities":     {""},
	"NoNewPrivileges":         {"yes"},
	"ProtectSystem":           {"strict"},
	"ProtectHome":             {"yes"},
	"PrivateTmp":              {"yes"},
	"PrivateDevices":          {"yes"},
	"DevicePolicy":            {"closed"},
	"PrivateIPC":              {"yes"},
	"PrivateMounts":           {"yes"},
	"PrivateUsers":            {"yes"},
	"ProtectKernelTunables":   {"yes"},
	"ProtectKernelModules":    {"yes"},
	"ProtectKernelLogs":       {"yes"},
	"ProtectControlGroups":    {"yes"},
	"ProtectClock":            {"yes"},
	"ProtectHostname":         {"yes"},
	"ProtectProc":             {"invisible"},
	"ProcSubset":              {"pid"},
	"KeyringMode":             {"private"},
	"RemoveIPC":               {"yes"},
	"RestrictAddressFamilies": {"AF_INET AF_INET6 AF_UNIX"},
	"RestrictNamespaces":      {"yes"},
	"RestrictRealtime":        {"yes"},
	"RestrictSUIDSGID":        {"yes"},
	"LockPersonality":         {"yes"},
	"MemoryDenyWriteExecute":  {"yes"},
	"SystemCallArchitectures": {"native"},
	"SystemCallFilter":        {"@system-service", "~@privileged @resources"},
	"SystemCallErrorNumber":   {"EPERM"},
}

func TestServiceUnits(t *testing.T) {
	t.Parallel()
	tests := []struct {
		desc string
		file string
		want map[string][]string // Service.* directives besides sandbox
	}{
		{desc: "daemon", file: "certfetch.service", want: map[string][]string{
			"Type":         {"notify"},
			"NotifyAccess": {"main"},
			"ExecStart":    {"/usr/local/bin/certfetch run --config /etc/certfetch/certfetch.yml"},
			"ExecReload":   {"/bin/kill -HUP $MAINPID"},
			"Restart":      {"on-failure"},
			"WatchdogSec":  {"60s"},
		}},
		{desc: "one-shot", file: "certfetch-once.service", want: map[string][]string{
			"Type":      {"oneshot"},
			"ExecStart": {"/usr/local/bin/certfetch once --config /etc/certfetch/certfetch.yml"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			t.Parallel()
			u := parseUnit(t, tt.file)
			for key, values := range sandbox {
				assert.Equal(t, values, u["Service."+key], key)
			}
			for key, values := range tt.want {
				assert.Equal(t, values, u["Service."+key], key)
			}
			assert.Empty(t, u["Service.IPAddressDeny"], "the CA may be anywhere")
			assert.Empty(t, u["Service.DynamicUser"], "the output directory needs a stable owner")
		})
	}
}

// TestTimer: the timer runs often enough for short certificates: step-ca's default
// 24-hour certificates are due in their last 8 hours, which an hourly run with a random
// delay of at most 15 minutes always meets.
func TestTimer(t *testing.T) {
	t.Parallel()
	u := parseUnit(t, "certfetch-once.timer")
	assert.Equal(t, unit{
		"Unit.Description":         {"Run certfetch every hour"},
		"Unit.Documentation":       {"https://github.com/certfetch/certfetch"},
		"Timer.OnCalendar":         {"hourly"},
		"Timer.RandomizedDelaySec": {"15m"},
		"Timer.FixedRandomDelay":   {"yes"},
		"Timer.Persistent":         {"true"},
		"Install.WantedBy":         {"timers.target"},
	}, u)
}
