package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/certfetch/certfetch/acme"
	"github.com/certfetch/certfetch/demo"
	"github.com/certfetch/certfetch/fetcher/store"
	"github.com/certfetch/certfetch/internal/testkit/testca"
)

// The renew and revoke commands, run as processes (this test binary acting as certfetch)
// beside `certfetch run` processes or none, against the in-process test CA.

// TestRenewForce renews a certificate now, wherever the work has to happen: without a
// daemon (the command takes the state directory), with `certfetch run` holding the state
// directory (the command leaves a request and sends SIGHUP), and with two instances on a
// shared Redis store (the command works under the certificate's lease). Each time: a new
// certificate, served, in exactly one new order.
func TestRenewForce(t *testing.T) {
	t.Parallel()
	tests := []struct {
		desc      string
		redis     bool
		daemons   int
		wantAsked bool // the command asked a daemon (SIGHUP)
	}{
		{desc: "no daemon"},
		{desc: "certfetch run holds the state directory", daemons: 1, wantAsked: true},
		{desc: "two instances on a shared Redis store", redis: true, daemons: 2},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			const domain = "force.example.test"
			opts := demo.Options{}
			if tc.redis {
				opts.Storage = sharedBackends[0].storage(t)
			}
			sb := startSandbox(t, opts, []string{domain})
			var daemons []*proc
			for range tc.daemons {
				daemons = append(daemons, startProc(t, nil, "run", "--config", sb.ConfigPath))
			}
			if tc.daemons == 0 {
				once(t, sb, exitOK)
			}
			require.Eventually(t, published(sb, domain), processTimeout, tick)
			first := servedCertificate(t, sb, domain, domain)
			require.Equal(t, 1, sb.CA.Stats().NewOrders)

			code, stdout, stderr := runCertfetch(t, nil, "renew", "--force", domain, "--config", sb.ConfigPath)
			require.Equal(t, exitOK, code, "stdout:\n%s\nstderr:\n%s", stdout, stderr)
			second := servedCertificate(t, sb, domain, domain)
			assert.NotEqual(t, first.SerialNumber, second.SerialNumber, "a new certificate is served when the command returns")
			assert.Equal(t, domain+": renewed: serial "+acme.SerialHex(second)+", valid until "+
				second.NotAfter.UTC().Format(time.RFC3339)+"\n", stdout)
			assert.NotEqual(t, first.RawSubjectPublicKeyInfo, second.RawSubjectPublicKeyInfo, "with a new key")
			assert.Equal(t, 2, sb.CA.Stats().NewOrders, "one new order, no duplicate")
			assert.Equal(t, tc.wantAsked, strings.Contains(stderr, "SIGHUP sent"), stderr)
			if tc.wantAsked {
				assert.Contains(t, stderr, "holds the state directory: asked it to carry the request out")
				assert.True(t, daemons[0].logged(`msg="request received"`, "action=renew")())
			}

			st, table := status(t, sb.ConfigPath, exitOK)
			assert.Nil(t, st[domain].Request, "no request left pending:\n%s", table)
			require.NotNil(t, st[domain].LastRequest)
			assert.Empty(t, st[domain].LastRequest.Error)
			for _, d := range daemons {
				d.stop(t)
			}
			assert.Equal(t, 2, sb.CA.Stats().NewOrders, "the daemons did not order again")
		})
	}
}

// TestRenewForceWaitsForTheLease asks for a renewal while an instance on a shared store
// holds the certificate's lease for its first issuance, which the CA takes 5 s to
// finish: the command waits for the lease (saying who holds it), then finds a
// certificate issued after its request and orders nothing: one order in all.
func TestRenewForceWaitsForTheLease(t *testing.T) {
	t.Parallel()
	const domain = "lease.example.test"
	sb := startSandbox(t, demo.Options{
		Storage: sharedBackends[0].storage(t),
		CA:      testca.Options{Mode: testca.Async, Delay: 5 * time.Second, RetryAfter: time.Second},
		Timeout: time.Minute,
	}, []string{domain})
	daemon := startProc(t, nil, "run", "--config", sb.ConfigPath)
	require.Eventually(t, func() bool { return sb.CA.Stats().Finalizes == 1 }, processTimeout, tick,
		"the instance finalizes; the CA now processes the order")

	code, stdout, stderr := runCertfetch(t, nil, "renew", "--force", domain, "--config", sb.ConfigPath)
	require.Equal(t, exitOK, code, "stdout:\n%s\nstderr:\n%s", stdout, stderr)
	assert.Contains(t, stderr, "is being worked on by ", "the command says whom it waits for")
	assert.Contains(t, stderr, "the certificate was replaced since the request; no new order")
	assert.Equal(t, 1, sb.CA.Stats().NewOrders, "the issuance in flight is the renewal")
	served := servedCertificate(t, sb, domain, domain)
	assert.Contains(t, stdout, "renewed: serial "+acme.SerialHex(served))
	daemon.stop(t)
}

// TestRevoke revokes the certificate in service with keyCompromise while `certfetch run`
// holds the state directory: the CA records the revocation with reason 1, the
// replacement has another key and is served. Then the record is restored from a backup
// taken before the revocation: the daemon never publishes the revoked certificate again,
// it replaces it.
func TestRevoke(t *testing.T) {
	t.Parallel()
	const domain = "revoke.example.test"
	sb := startSandbox(t, demo.Options{}, []string{domain})
	daemon := startProc(t, nil, "run", "--config", sb.ConfigPath)
	require.Eventually(t, published(sb, domain), processTimeout, tick)
	revoked := servedCertificate(t, sb, domain, domain)
	revokedFile := servedCertFile(t, sb, domain)
	recordPath := filepath.Join(sb.Dir, "state", "certificates", domain+".json")
	backup, err := os.ReadFile(recordPath)
	require.NoError(t, err)

	code, stdout, stderr := runCertfetch(t, nil, "revoke", domain, "--reason", "keyCompromise", "--config", sb.ConfigPath)
	require.Equal(t, exitOK, code, "stdout:\n%s\nstderr:\n%s", stdout, stderr)
	status1, ok := sb.CA.Revoked(revoked.SerialNumber)
	require.True(t, ok, "the CA revoked serial %s", acme.SerialHex(revoked))
	assert.Equal(t, 1, status1.Reason, "keyCompromise")
	replacement := servedCertificate(t, sb, domain, domain)
	assert.NotEqual(t, revoked.SerialNumber, replacement.SerialNumber)
	assert.NotEqual(t, revoked.RawSubjectPublicKeyInfo, replacement.RawSubjectPublicKeyInfo, "a new key")
	assert.Equal(t, domain+": revoked serial "+acme.SerialHex(revoked)+" (keyCompromise)\n"+
		domain+": renewed: serial "+acme.SerialHex(replacement)+", valid until "+replacement.NotAfter.UTC().Format(time.RFC3339)+"\n", stdout)
	assert.Contains(t, stderr, "SIGHUP sent")
	assert.Equal(t, 2, sb.CA.Stats().NewOrders)

	// A backup from before the revocation comes back.
	restored := time.Now()
	require.NoError(t, os.WriteFile(recordPath, backup, 0o600))
	st, table := status(t, sb.ConfigPath, exitFailure)
	assert.Contains(t, st[domain].Problem, "revoked at the CA (keyCompromise, serial "+acme.SerialHex(revoked), table)
	require.NoError(t, daemon.cmd.Process.Signal(syscall.SIGHUP)) // a reload looks at every certificate
	require.Eventually(t, func() bool {
		return servedCertificate(t, sb, domain, domain).SerialNumber.Cmp(replacement.SerialNumber) != 0
	}, processTimeout, tick, "the restored record is replaced")
	now := servedCertificate(t, sb, domain, domain)
	assert.NotEqual(t, revoked.SerialNumber, now.SerialNumber)
	assert.NotEqual(t, revoked.RawSubjectPublicKeyInfo, now.RawSubjectPublicKeyInfo)
	assert.True(t, daemon.logged("the stored certificate was revoked (a stale or restored record)")())
	_, republished := findLog(daemon.stderr.String(), restored, `msg="certificate published"`, filepath.Base(revokedFile))
	assert.False(t, republished, "the revoked certificate was published again")
	// One order, sent twice: the restored certificate was replaced already, so the CA
	// refuses the order's "replaces" and it is sent again without.
	assert.Equal(t, 4, sb.CA.Stats().NewOrders)
	status(t, sb.ConfigPath, exitOK)
	daemon.stop(t)
}

// TestRevokeRefusedChangesNothing: a CA that refuses the revocation leaves the
// certificate in service and on its schedule; the command exits 1 with the CA's problem.
func TestRevokeRefusedChangesNothing(t *testing.T) {
	t.Parallel()
	const domain = "refused.example.test"
	sb := startSandbox(t, demo.Options{}, []string{domain})
	once(t, sb, exitOK)
	first := servedCertificate(t, sb, domain, domain)
	before, _ := status(t, sb.ConfigPath, exitOK)
	sb.CA.RefuseRevocations(true)

	code, stdout, stderr := runCertfetch(t, nil, "revoke", "--reason", "superseded", domain, "--config", sb.ConfigPath)
	assert.Equal(t, exitFailure, code)
	assert.Empty(t, stdout)
	assert.Contains(t, stderr, "certfetch: revoke "+domain+": acme: revoke certificate "+acme.SerialHex(first)+
		": acme: error: 403 :: POST :: "+strings.TrimSuffix(sb.CA.DirectoryURL(), "/dir")+
		"/revoke-cert :: urn:ietf:params:acme:error:unauthorized :: the test CA refuses revocations (RefuseRevocations)\n")
	assert.Equal(t, first.SerialNumber, servedCertificate(t, sb, domain, domain).SerialNumber)
	assert.Equal(t, 1, sb.CA.Stats().NewOrders, "no order")
	after, _ := status(t, sb.ConfigPath, exitOK)
	assert.Equal(t, before[domain].RenewAt, after[domain].RenewAt, "the schedule is unchanged")
	assert.Contains(t, after[domain].LastRequest.Error, "unauthorized")
}

// TestRequestToTheDaemon covers what the command reports when the daemon does not
// deliver: no outcome within --wait (the daemon goes on), and a daemon whose
// configuration lacks the name (it drops the request).
func TestRequestToTheDaemon(t *testing.T) {
	t.Parallel()
	const domain = "ask.example.test"
	sb := startSandbox(t, demo.Options{}, []string{domain})
	daemon := startProc(t, nil, "run", "--config", sb.ConfigPath)
	require.Eventually(t, published(sb, domain), processTimeout, tick)
	first := servedCertificate(t, sb, domain, domain)

	t.Run("no outcome within --wait", func(t *testing.T) {
		hold := sb.CA.HoldNext(testca.NewOrder)
		code, _, stderr := runCertfetch(t, nil, "renew", "--force", domain, "--config", sb.ConfigPath, "--wait", "2s")
		assert.Equal(t, exitFailure, code)
		assert.Contains(t, stderr, "certfetch: renew "+domain+": no outcome within 2s (--wait): certfetch (pid ")
		assert.Contains(t, stderr, ") goes on with the request; certfetch status shows it")
		st, table := status(t, sb.ConfigPath, exitOK)
		require.NotNil(t, st[domain].Request, table)
		assert.Equal(t, daemon.cmd.Process.Pid, st[domain].Request.HolderPID)
		assert.Regexp(t, `^renew requested \S+Z by \S+:\d+, waiting for certfetch \(pid `+strconv.Itoa(daemon.cmd.Process.Pid)+`\)$`,
			statusRow(t, table, domain)[colProblem])
		hold.Release()
		require.Eventually(t, func() bool {
			return servedCertificate(t, sb, domain, domain).SerialNumber.Cmp(first.SerialNumber) != 0
		}, processTimeout, tick, "the daemon carries the request out anyway")
	})

	t.Run("Ctrl-C stops the waiting, not the renewal", func(t *testing.T) {
		before := servedCertificate(t, sb, domain, domain)
		hold := sb.CA.HoldNext(testca.NewOrder)
		p := startProc(t, nil, "renew", "--force", domain, "--config", sb.ConfigPath)
		<-hold.Reached() // the daemon is ordering
		require.NoError(t, p.cmd.Process.Signal(syscall.SIGINT))
		assert.Equal(t, exitFailure, p.wait(t, processTimeout))
		assert.Contains(t, p.stderr.String(), "certfetch: renew "+domain+": interrupted: certfetch (pid ")
		hold.Release()
		require.Eventually(t, func() bool {
			return servedCertificate(t, sb, domain, domain).SerialNumber.Cmp(before.SerialNumber) != 0
		}, processTimeout, tick, "the daemon carries the request out anyway")
	})

	t.Run("a name the daemon does not know", func(t *testing.T) {
		// The command reads a configuration with one more certificate than the daemon's.
		data, err := os.ReadFile(sb.ConfigPath)
		require.NoError(t, err)
		other := filepath.Join(sb.Dir, "other.yml")
		text := strings.Replace(string(data), "output:\n", "  - domains: [extra.example.test]\noutput:\n", 1)
		require.NoError(t, os.WriteFile(other, []byte(text), 0o600))
		code, _, stderr := runCertfetch(t, nil, "renew", "--force", "extra.example.test", "--config", other)
		assert.Equal(t, exitUsage, code, stderr)
		assert.Contains(t, stderr, "dropped the request: extra.example.test is not in the configuration it runs with")
		assert.True(t, daemon.logged(`msg="request for a certificate that is not configured: dropped"`, "name=extra.example.test")())
	})
	daemon.stop(t)
}

// TestRequestTakenOverWhenTheDaemonGoes kills the daemon while it carries out a
// renewal the command asked for (its new-order request never reaches the CA): the
// command takes the state directory and carries the request out itself.
func TestRequestTakenOverWhenTheDaemonGoes(t *testing.T) {
	t.Parallel()
	const domain = "takeover.example.test"
	sb := startSandbox(t, demo.Options{}, []string{domain})
	daemon := startProc(t, nil, "run", "--config", sb.ConfigPath)
	require.Eventually(t, published(sb, domain), processTimeout, tick)
	first := servedCertificate(t, sb, domain, domain)

	hold := sb.CA.HoldNext(testca.NewOrder)
	p := startProc(t, nil, "renew", "--force", domain, "--config", sb.ConfigPath)
	<-hold.Reached()
	daemon.kill(t)
	hold.Drop()
	require.Equal(t, exitOK, p.wait(t, processTimeout), "stderr:\n%s", p.stderr.String())
	assert.Contains(t, p.stderr.String(), "no longer holds the state directory; carrying the request out here")
	second := servedCertificate(t, sb, domain, domain)
	assert.NotEqual(t, first.SerialNumber, second.SerialNumber)
	assert.Contains(t, p.stdout.String(), "renewed: serial "+acme.SerialHex(second))
	assert.Equal(t, 3, sb.CA.Stats().NewOrders, "the first issuance, the dropped request, the command's order")
	_, err := sb.Store.LoadRequest(t.Context(), domain)
	assert.ErrorIs(t, err, store.ErrNotFound, "the request is deleted")
}

// TestRequestCommandLine covers the command lines renew and revoke refuse, and their
// help.
func TestRequestCommandLine(t *testing.T) {
	t.Parallel()
	sb := startSandbox(t, demo.Options{CA: testca.Options{AlwaysValid: true}}, []string{"cli.example.test"})
	tests := []struct {
		desc       string
		args       []string
		wantCode   int
		wantStderr string
	}{
		{desc: "renew without --force", args: []string{"renew", "cli.example.test"}, wantCode: exitUsage,
			wantStderr: "certfetch: renew needs --force: the daemon renews every certificate on schedule; --force renews one now"},
		{desc: "renew two names", args: []string{"renew", "--force", "a", "b"}, wantCode: exitUsage,
			wantStderr: "certfetch: name exactly one certificate, got 2"},
		{desc: "revoke without --reason", args: []string{"revoke", "cli.example.test"}, wantCode: exitUsage,
			wantStderr: "certfetch: revoke needs --reason (" + reasonList + ")"},
		{desc: "revoke with a reason a subscriber cannot give", args: []string{"revoke", "cli.example.test", "--reason", "cACompromise"},
			wantCode: exitUsage, wantStderr: `certfetch: unknown revocation reason "cACompromise"`},
		{desc: "unknown certificate", args: []string{"renew", "--force", "nope.example.test"}, wantCode: exitUsage,
			wantStderr: "certfetch: renew nope.example.test: no such certificate in the configuration (configured: [cli.example.test])"},
		{desc: "revoke before the first issuance", args: []string{"revoke", "cli.example.test", "--reason", "unspecified"},
			wantCode: exitFailure, wantStderr: "certfetch: revoke cli.example.test: no certificate was issued for it; nothing to revoke"},
		{desc: "revoke --help names the reasons", args: []string{"revoke", "--help"}, wantCode: exitOK,
			wantStderr: "RFC 5280 revocation reason (required): " + reasonList},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			code, _, stderr := certfetch(append(tc.args, "--config", sb.ConfigPath)...)
			assert.Equal(t, tc.wantCode, code, stderr)
			assert.Contains(t, stderr, tc.wantStderr)
		})
	}
	assert.Zero(t, sb.CA.Stats().NewOrders)
}

// TestRequestRefusesRootOnAnotherUsersStateDirectory: root would leave a request and
// records the daemon's user cannot read.
func TestRequestRefusesRootOnAnotherUsersStateDirectory(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("needs root: the check is for root")
	}
	sb := startSandbox(t, demo.Options{CA: testca.Options{AlwaysValid: true}}, []string{"owner.example.test"})
	state := filepath.Join(sb.Dir, "state")
	require.NoError(t, os.Chown(state, 65534, 65534))
	code, _, stderr := certfetch("renew", "--force", "owner.example.test", "--config", sb.ConfigPath)
	assert.Equal(t, exitUsage, code)
	assert.Contains(t, stderr, "certfetch: renew owner.example.test: the state directory "+state+
		" belongs to uid 65534: run the command as that user (sudo -u certfetch certfetch ...)")
	assert.Zero(t, sb.CA.Stats().NewOrders)
}

// TestReasonListNamesEveryReason keeps the usage text's reasons equal to the ones
// acme accepts.
func TestReasonListNamesEveryReason(t *testing.T) {
	t.Parallel()
	want := make([]string, len(acme.RevocationReasons))
	for i, r := range acme.RevocationReasons {
		want[i] = r.String() + "(" + strconv.Itoa(int(r)) + ")"
	}
	assert.Equal(t, strings.Join(want, ", "), reasonList)
	assert.Contains(t, usage, reasonList)
}

// servedCertFile is the certificate file the output's YAML for name points at.
func servedCertFile(t *testing.T, sb *demo.Sandbox, name string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(sb.OutputDir(), name+".yml"))
	require.NoError(t, err)
	var doc struct {
		TLS struct {
			Certificates []struct {
				CertFile string `yaml:"certFile"`
			} `yaml:"certificates"`
		} `yaml:"tls"`
	}
	require.NoError(t, yaml.Unmarshal(data, &doc))
	require.Len(t, doc.TLS.Certificates, 1)
	return doc.TLS.Certificates[0].CertFile
}
