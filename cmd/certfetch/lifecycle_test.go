package main

import (
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/certfetch/certfetch/demo"
	"github.com/certfetch/certfetch/fetcher"
	"github.com/certfetch/certfetch/internal/testkit/testca"
)

// TestOnceRenews: `certfetch once`, run again after the renewal time, renews: a new
// certificate is published and the CA sees a second order (the bug that started the
// lifecycle issue: a `once` that republished and never renewed). The certificates are
// valid 60 s, so the test waits about 40 s on the clock: renewal is about time.
func TestOnceRenews(t *testing.T) {
	t.Parallel()
	const domain = "minute.example.test"
	sb := startSandbox(t, demo.Options{Profile: testca.MinuteProfile}, []string{domain})

	once(t, sb, exitOK)
	first := servedCertificate(t, sb, domain, domain)
	require.Equal(t, 1, sb.CA.Stats().NewOrders)
	require.Equal(t, 59*time.Second, first.NotAfter.Sub(first.NotBefore).Round(time.Second), "a 60 s certificate (NotAfter inclusive)")
	st, _ := status(t, sb.ConfigPath, exitOK)
	require.Equal(t, fetcher.StatePublished, st[domain].State)
	renewAt := st[domain].RenewAt
	require.True(t, renewAt.After(first.NotBefore) && renewAt.Before(first.NotAfter), "renewAt %s within the validity", renewAt)

	// Before the renewal time there is nothing to do.
	once(t, sb, exitOK)
	assert.Equal(t, 1, sb.CA.Stats().NewOrders, "no order before the renewal time")
	assert.Equal(t, first.SerialNumber, servedCertificate(t, sb, domain, domain).SerialNumber)

	// The renewal time (a third of the lifetime left, inside the CA's ARI window) comes
	// about 40 s after issuance.
	require.Eventually(t, func() bool { return time.Now().After(renewAt) }, 2*time.Minute, 100*time.Millisecond)
	stderr := once(t, sb, exitOK)
	second := servedCertificate(t, sb, domain, domain)
	assert.NotEqual(t, first.SerialNumber, second.SerialNumber, "a new certificate is published")
	assert.True(t, second.NotAfter.After(first.NotAfter))
	assert.Equal(t, 2, sb.CA.Stats().NewOrders, "one renewal order")
	assert.Contains(t, stderr, "renewal=true")

	st, table := status(t, sb.ConfigPath, exitOK)
	assert.Equal(t, fetcher.StatePublished, st[domain].State, table)
	assert.True(t, st[domain].NotAfter.Equal(second.NotAfter), "status shows the new certificate")
	assert.Empty(t, st[domain].LastError)
	journalEmpty(t, sb)
	noTornFiles(t, sb)
}

// TestOnceResumesAndWithdraws: a `once` that outlives its deadline leaves the order
// journaled and exits 1; the next `once`, right away, waits for the CA's Retry-After and
// completes the same order. A certificate renamed in the configuration is published
// under its new name from the stored certificate, the old name withdrawn; a certificate
// removed from the configuration is withdrawn. One order in all.
func TestOnceResumesAndWithdraws(t *testing.T) {
	t.Parallel()
	const domain = "slow.example.test"
	// The CA needs 6 s after finalize and asks for a poll every 4 s; an attempt may take
	// 5 s. So the first `once` polls at 0 and 4 s and leaves the order journaled with its
	// next poll at 8 s, 3 s after its deadline: the second `once` starts inside those 3 s
	// even on a loaded machine (with a 1 s Retry-After it did not always), waits, and
	// finds the certificate ready.
	sb := startSandbox(t, demo.Options{
		CA:      testca.Options{Mode: testca.Async, Delay: 6 * time.Second, RetryAfter: 4 * time.Second},
		Timeout: 5 * time.Second,
	}, []string{domain})
	cfg := newConfigWriter(t, sb)
	cfg.write(t, sb.ConfigPath, "", certSpec{domains: []string{domain}})

	stderr := once(t, sb, exitFailure)
	assert.Contains(t, stderr, "deadline passed; the order stays alive at the CA and is resumed")
	assert.NoFileExists(t, filepath.Join(sb.OutputDir(), domain+".yml"))
	st, table := status(t, sb.ConfigPath, exitOK) // a slow CA's order needs no operator
	pending := st[domain]
	assert.Equal(t, fetcher.StateOrdering, pending.State, table)
	assert.True(t, strings.HasPrefix(pending.Order, strings.TrimSuffix(sb.CA.DirectoryURL(), "/dir")), "the journaled order: %q", pending.Order)
	assert.Equal(t, "deadline", pending.Reason)
	assert.Contains(t, statusRow(t, table, domain)[colState], "ordering")
	assert.Contains(t, statusRow(t, table, domain)[colProblem], "deadline")

	stderr = once(t, sb, exitOK)
	assert.Contains(t, stderr, "waiting for the CA's Retry-After before resuming the order")
	_, resumed := findLog(stderr, time.Time{}, `msg="resuming order"`, pending.Order)
	assert.True(t, resumed, "the journaled order is resumed:\n%s", stderr)
	leaf := servedCertificate(t, sb, domain, domain)
	assert.Equal(t, 1, sb.CA.Stats().NewOrders, "the first order completed, no second one")
	st, table = status(t, sb.ConfigPath, exitOK)
	assert.Equal(t, fetcher.StatePublished, st[domain].State, table)
	assert.Empty(t, st[domain].Order)
	assert.Empty(t, st[domain].LastError)
	journalEmpty(t, sb)

	// Renamed: the stored certificate is published under the new name, the old withdrawn.
	cfg.write(t, sb.ConfigPath, "", certSpec{name: "renamed", domains: []string{domain}})
	stderr = once(t, sb, exitOK)
	assert.Contains(t, stderr, "certificate renamed in the configuration: its stored certificate is kept")
	assert.Equal(t, leaf.SerialNumber, servedCertificate(t, sb, "renamed", domain).SerialNumber, "the same certificate")
	assert.NoFileExists(t, filepath.Join(sb.OutputDir(), domain+".yml"), "the old name is withdrawn")
	assert.Equal(t, 1, sb.CA.Stats().NewOrders, "a rename costs no order")
	st, table = status(t, sb.ConfigPath, exitOK)
	assert.Equal(t, fetcher.StatePublished, st["renamed"].State, table)
	assert.Len(t, st, 1, table)

	// Removed: withdrawn.
	cfg.write(t, sb.ConfigPath, "")
	stderr = once(t, sb, exitOK)
	assert.Contains(t, stderr, "certificate removed from the configuration: withdrawn")
	assert.NoFileExists(t, filepath.Join(sb.OutputDir(), "renamed.yml"))
	assert.Equal(t, 1, sb.CA.Stats().NewOrders)
	noTornFiles(t, sb)
}

// TestStatusExitCodes: `certfetch status` exits 0 when every certificate is in order and
// 1 when one needs an operator (a failing certificate, an unreadable record), and its
// JSON carries the state, the schedule and the failure.
func TestStatusExitCodes(t *testing.T) {
	t.Parallel()
	const good, failing = "good.example.test", "failing.example.test"
	sb := startSandbox(t, demo.Options{}, []string{good})
	cfg := newConfigWriter(t, sb)
	cfg.write(t, sb.ConfigPath, "", certSpec{domains: []string{good}})

	once(t, sb, exitOK)
	leaf := servedCertificate(t, sb, good, good)
	st, table := status(t, sb.ConfigPath, exitOK)
	g := st[good]
	assert.Equal(t, []string{good}, g.Domains)
	assert.Equal(t, demo.ResolverName, g.Resolver)
	assert.Equal(t, fetcher.StatePublished, g.State)
	assert.True(t, g.NotAfter.Equal(leaf.NotAfter), "notAfter %s", g.NotAfter)
	assert.True(t, g.RenewAt.After(leaf.NotBefore) && g.RenewAt.Before(leaf.NotAfter), "renewAt %s", g.RenewAt)
	assert.True(t, g.RetryAt.IsZero())
	assert.Zero(t, g.Failures)
	assert.Empty(t, g.Reason+g.LastError+g.Order+g.Problem)
	assert.Equal(t, "-", statusRow(t, table, good)[colProblem])
	assert.Equal(t, "file", statusRow(t, table, good)[colSource])
	assert.Equal(t, "file", g.Source)

	// A failing certificate: the CA refuses its order (429 with Retry-After).
	cfg.write(t, sb.ConfigPath, "", certSpec{domains: []string{good}}, certSpec{domains: []string{failing}})
	sb.CA.RateLimitNewOrders(1, 90*time.Second)
	once(t, sb, exitFailure)
	assert.Equal(t, 2, sb.CA.Stats().NewOrders)
	st, table = status(t, sb.ConfigPath, exitFailure)
	f := st[failing]
	assert.Equal(t, fetcher.StateAbsent, f.State)
	assert.Equal(t, "rate_limited", f.Reason)
	assert.Equal(t, 1, f.Failures)
	assert.Contains(t, f.LastError, "rate")
	assert.WithinDuration(t, time.Now().Add(90*time.Second), f.RetryAt, 30*time.Second, "not before the CA's Retry-After")
	assert.Equal(t, fetcher.StatePublished, st[good].State, "the other certificate is untouched")
	assert.Contains(t, statusRow(t, table, failing)[colProblem], "rate_limited (1): ")
	// The JSON field names are an interface too.
	_, stdout, _ := runCertfetch(t, nil, "status", "--config", sb.ConfigPath, "--json")
	var raw []map[string]any
	require.NoError(t, json.Unmarshal([]byte(stdout), &raw))
	require.Len(t, raw, 2)
	assert.ElementsMatch(t, []string{"name", "domains", "resolver", "source", "state", "notAfter", "renewAt"}, keys(raw[0]), stdout)
	assert.ElementsMatch(t, []string{"name", "domains", "resolver", "source", "state", "retryAt", "failures", "reason", "lastError"}, keys(raw[1]), stdout)
	assert.Equal(t, "-", statusRow(t, table, good)[colProblem])

	// An unreadable record needs an operator too.
	cfg.write(t, sb.ConfigPath, "", certSpec{domains: []string{good}})
	status(t, sb.ConfigPath, exitOK)
	require.NoError(t, os.WriteFile(filepath.Join(sb.Dir, "state", "certificates", good+".json"), []byte("{torn"), 0o600))
	st, table = status(t, sb.ConfigPath, exitFailure)
	assert.Contains(t, st[good].Problem, "record unreadable")
	assert.Contains(t, st[good].Problem, "certificates/"+good, "the problem names the record")
	assert.Contains(t, statusRow(t, table, good)[colProblem], "record unreadable")
	assert.Equal(t, 2, sb.CA.Stats().NewOrders)
}

// TestReloadAppliesLoggingAndKeepsTheOrder: SIGHUP in the middle of an order applies
// log.level and log.format and adds a certificate; the order in flight goes on (one
// order per certificate).
func TestReloadAppliesLoggingAndKeepsTheOrder(t *testing.T) {
	t.Parallel()
	const first, added = "first.example.test", "added.example.test"
	sb := startSandbox(t, demo.Options{
		CA:      testca.Options{Mode: testca.Async, Delay: 4 * time.Second, RetryAfter: time.Second},
		Timeout: time.Minute,
	}, []string{first})
	cfg := newConfigWriter(t, sb)
	cfg.write(t, sb.ConfigPath, "", certSpec{domains: []string{first}})

	p := startProc(t, nil, "run", "--config", sb.ConfigPath)
	require.Eventually(t, func() bool { return sb.CA.Stats().Finalizes == 1 }, processTimeout, tick, "the order is at the CA")
	require.Eventually(t, p.logged(`msg="waiting for the CA"`, first), processTimeout, tick)
	before := p.stderr.String()
	assert.NotContains(t, before, "level=DEBUG")
	assert.NotContains(t, before, `{"time":`)

	cfg.write(t, sb.ConfigPath, "log: {level: debug, format: json}\n",
		certSpec{domains: []string{first}}, certSpec{domains: []string{added}})
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGHUP))
	require.Eventually(t, func() bool { return strings.Contains(p.stderr.String(), `"msg":"configuration reloaded"`) },
		processTimeout, tick, "JSON lines after the reload")
	require.Eventually(t, published(sb, first), processTimeout, tick)
	require.Eventually(t, published(sb, added), processTimeout, tick)
	require.Eventually(t, func() bool { return strings.Contains(p.stderr.String(), `"level":"DEBUG"`) },
		processTimeout, tick, "debug lines after the reload")
	_, after, _ := strings.Cut(p.stderr.String(), `"msg":"configuration reloaded"`)
	for _, line := range strings.Split(strings.TrimSpace(after), "\n")[1:] {
		assert.True(t, strings.HasPrefix(line, `{"time":`), "a JSON line after the reload: %s", line)
	}
	servedCertificate(t, sb, first, first)
	servedCertificate(t, sb, added, added)
	assert.Equal(t, 2, sb.CA.Stats().NewOrders, "the order in flight was kept: one order per certificate")
	p.stop(t)
	journalEmpty(t, sb)
}

// TestOneProcessPerStateDirectory: a second certfetch on the state directory of a
// running one exits 1 and says why.
func TestOneProcessPerStateDirectory(t *testing.T) {
	t.Parallel()
	const domain = "locked.example.test"
	sb := startSandbox(t, demo.Options{}, []string{domain})
	p := startProc(t, nil, "run", "--config", sb.ConfigPath)
	require.Eventually(t, p.logged(`msg="certfetch running"`), processTimeout, tick)
	for _, cmd := range []string{"once", "run"} {
		code, _, stderr := runCertfetch(t, nil, cmd, "--config", sb.ConfigPath)
		assert.Equal(t, exitFailure, code, "second %s: %s", cmd, stderr)
		assert.Contains(t, stderr, "cannot lock the state directory")
		assert.Contains(t, stderr, "another certfetch process holds the state directory")
		assert.Contains(t, stderr, filepath.Join(sb.Dir, "state", "lock"), "names the lock file")
	}
	require.Eventually(t, published(sb, domain), processTimeout, tick)
	p.stop(t)
	assert.Equal(t, 1, sb.CA.Stats().NewOrders)
	// Once the daemon stopped, `once` runs.
	once(t, sb, exitOK)
}

func keys(m map[string]any) []string { return slices.Sorted(maps.Keys(m)) }
