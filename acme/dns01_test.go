package acme_test

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/go-acme/lego/v4/certcrypto"
	"github.com/go-acme/lego/v4/challenge"
	"github.com/go-acme/lego/v4/providers/dns/rfc2136"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/certfetch/certfetch/acme"
	"github.com/certfetch/certfetch/acme/dns01"
	"github.com/certfetch/certfetch/internal/testkit/loopbackdns"
	"github.com/certfetch/certfetch/internal/testkit/testca"
	"github.com/certfetch/certfetch/internal/testkit/testservers"
)

// dnsPropagationTimeout is the rfc2136 provider's propagation timeout in these tests:
// BIND serves an update at once, so the check passes at its first try; a test that
// expects the record never to be seen waits this long.
const dnsPropagationTimeout = 2 * time.Second

// dnsSetup is a real BIND authoritative for the test zone and a test CA whose validator
// resolves through it, so DNS-01 is validated against the TXT records BIND serves.
type dnsSetup struct {
	bind *testservers.BIND
	ca   *testca.CA
}

func newDNSSetup(t *testing.T, opts testca.Options) dnsSetup {
	t.Helper()

	b := testservers.StartBIND(t)
	opts.DNSServer = b.Addr

	ca, err := testca.Start(opts)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, ca.Close()) })

	return dnsSetup{bind: b, ca: ca}
}

// provider returns lego's rfc2136 provider for BIND, signing with secret (base64).
func (s dnsSetup) provider(t *testing.T, secret string) *rfc2136.DNSProvider {
	t.Helper()

	cfg := rfc2136.NewDefaultConfig()
	cfg.Nameserver = s.bind.Addr
	cfg.TSIGKey, cfg.TSIGAlgorithm, cfg.TSIGSecret = s.bind.TSIGKey, s.bind.TSIGAlgorithm, secret
	cfg.DNSTimeout = 2 * time.Second
	cfg.PropagationTimeout, cfg.PollingInterval = dnsPropagationTimeout, 100*time.Millisecond
	// No pause between two authorizations: nothing caches the test zone.
	cfg.SequenceInterval = 0

	p, err := rfc2136.NewDNSProviderConfig(cfg)
	require.NoError(t, err)

	return p
}

// solverOptions checks propagation at BIND's own port, against BIND as resolver.
func (s dnsSetup) solverOptions(t *testing.T) dns01.Options {
	t.Helper()

	_, port, err := net.SplitHostPort(s.bind.Addr)
	require.NoError(t, err)

	n, err := strconv.Atoi(port)
	require.NoError(t, err)

	return dns01.Options{Resolvers: []string{s.bind.Addr}, NameserverPort: n, Logger: testLogger(t)}
}

// config returns a client configuration for DNS-01 with solver.
func (s dnsSetup) config(t *testing.T, solver challenge.Provider) acme.Config {
	t.Helper()

	cfg := caConfig(t, s.ca)
	cfg.Solver, cfg.ChallengeType = solver, challenge.DNS01

	return cfg
}

// rfc2136Solver is the rfc2136 provider with the right key behind a dns01.Solver.
func (s dnsSetup) rfc2136Solver(t *testing.T, opts dns01.Options) *dns01.Solver {
	t.Helper()

	solver, err := dns01.New("rfc2136", s.provider(t, s.bind.TSIGSecret), opts)
	require.NoError(t, err)

	return solver
}

// neverSeen returns options whose only resolver never has the record (a DNS server that
// answers every TXT query with nothing) and that require it there.
func neverSeen(t *testing.T) dns01.Options {
	t.Helper()

	lb, err := loopbackdns.Start()
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, lb.Close()) })

	return dns01.Options{Resolvers: []string{lb.Addr()}, RequireAllRNS: true, DisableANSChecks: true, Logger: testLogger(t)}
}

// TestDNS01WildcardAndApex issues one certificate for "*.dns.test" and "dns.test" over
// DNS-01 against BIND: both authorizations prove themselves with a TXT record at
// _acme-challenge.dns.test, which lego's rfc2136 provider can hold only one of at a time
// (it replaces the name's records), so the engine must solve them one after the other.
// The leaf verifies against the CA's roots for a name under the wildcard, and no
// challenge record is left in the zone.
func TestDNS01WildcardAndApex(t *testing.T) {
	t.Parallel()

	s := newDNSSetup(t, testca.Options{})
	c := s.client(t, s.config(t, s.rfc2136Solver(t, s.solverOptions(t))))

	req := acme.Request{Names: []string{"*.dns.test", "dns.test"}, Profile: testca.DefaultProfile}
	cert, _, err := obtain(t, c, req, time.Minute)
	require.NoError(t, err)
	requireCert(t, cert, "*.dns.test", "dns.test")

	roots, err := s.ca.IssuerRootsPEM()
	require.NoError(t, err)

	pool := x509.NewCertPool()
	require.True(t, pool.AppendCertsFromPEM(roots))

	chain, err := certcrypto.ParsePEMBundle(cert.ChainPEM)
	require.NoError(t, err)

	inter := x509.NewCertPool()
	for _, ic := range chain[1:] {
		inter.AddCert(ic)
	}

	_, err = cert.Leaf.Verify(x509.VerifyOptions{DNSName: "app.dns.test", Roots: pool, Intermediates: inter})
	require.NoError(t, err, "a name under the wildcard")

	assert.Equal(t, 1, s.ca.Stats().NewOrders)
	assert.Empty(t, s.bind.ChallengeRecords(t), "no challenge record left in the zone")
}

func (s dnsSetup) client(t *testing.T, cfg acme.Config) *acme.Client {
	t.Helper()

	c, err := acme.NewClient(context.Background(), cfg)
	require.NoError(t, err)

	return c
}

// TestDNS01ReportedCase is the reported slow-CA case over DNS-01: the CA needs 42 s after
// finalize, the deadline is 30 s. The first attempt ends with the order pending and the
// records cleaned up; the next resumes the same order; the CA saw one order.
func TestDNS01ReportedCase(t *testing.T) {
	t.Parallel()

	s := newDNSSetup(t, testca.Options{Mode: testca.Async, Delay: reportedDelay, RetryAfter: 5 * time.Second})
	c := s.client(t, s.config(t, s.rfc2136Solver(t, s.solverOptions(t))))
	req := acme.Request{Names: []string{"*.slow.dns.test", "slow.dns.test"}, Profile: testca.DefaultProfile}

	_, took, err := obtain(t, c, req, 30*time.Second)
	pe := requirePending(t, err, context.DeadlineExceeded)
	assert.Equal(t, "processing", pe.Status)
	assert.Less(t, took, 30*time.Second+deadlineSlack)
	assert.Empty(t, s.bind.ChallengeRecords(t), "records cleaned up after the first attempt")

	cert, _, err := obtain(t, c, req, 30*time.Second)
	require.NoError(t, err)
	assert.Equal(t, pe.OrderURL, cert.OrderURL, "the next attempt must resume the same order")
	requireCert(t, cert, "*.slow.dns.test", "slow.dns.test")

	stats := s.ca.Stats()
	assert.Equal(t, 1, stats.NewOrders)
	assert.Equal(t, 1, stats.Finalizes)
	assert.Empty(t, s.bind.ChallengeRecords(t))
}

// TestDNS01DeadlinePassesWhilePropagating: the record never shows at the resolver the
// check asks, and the deadline passes during the wait. The order stays journaled and
// the record is removed; the next attempt, whose check sees BIND, presents the record
// again and completes the same order.
func TestDNS01DeadlinePassesWhilePropagating(t *testing.T) {
	t.Parallel()

	s := newDNSSetup(t, testca.Options{})
	slowOpts := neverSeen(t)
	provider := s.provider(t, s.bind.TSIGSecret)
	slow, err := dns01.New("rfc2136", longPropagation{provider}, slowOpts)
	require.NoError(t, err)

	cfg := s.config(t, slow)
	req := acme.Request{Names: []string{"deadline.dns.test"}, Profile: testca.DefaultProfile}

	_, took, err := obtain(t, s.client(t, cfg), req, 3*time.Second)
	pe := requirePending(t, err, context.DeadlineExceeded)
	assert.Equal(t, "pending", pe.Status)
	assert.Less(t, took, 3*time.Second+deadlineSlack)
	assert.Empty(t, s.bind.ChallengeRecords(t), "records cleaned up at the deadline")

	rec, err := cfg.Journal.Load(context.Background(), req.Key())
	require.NoError(t, err, "the order must stay journaled")
	assert.Empty(t, rec.Presented, "the cleanup is journaled")

	cfg.Solver = s.rfc2136Solver(t, s.solverOptions(t))
	cert, _, err := obtain(t, s.client(t, cfg), req, time.Minute)
	require.NoError(t, err)
	assert.Equal(t, pe.OrderURL, cert.OrderURL)
	assert.Equal(t, 1, s.ca.Stats().NewOrders)
	assert.Empty(t, s.bind.ChallengeRecords(t))
}

// longPropagation gives a provider a propagation timeout far beyond the test's deadline.
type longPropagation struct{ challenge.Provider }

func (longPropagation) Timeout() (timeout, interval time.Duration) {
	return time.Hour, 100 * time.Millisecond
}

// killedCleanUp is a provider whose process dies before it removes anything: CleanUp
// fails, so the record stays in the zone and in the journal.
type killedCleanUp struct{ challenge.Provider }

func (killedCleanUp) CleanUp(string, string, string) error {
	return errors.New("killed before cleaning up")
}

// TestDNS01CrashLeftovers: a record presented and journaled by a process that died
// before its cleanup is removed by the start-up cleanup of the next process, and the
// journal forgets it; the order is then completed, the same one.
func TestDNS01CrashLeftovers(t *testing.T) {
	t.Parallel()

	s := newDNSSetup(t, testca.Options{})
	crashing, err := dns01.New("rfc2136", killedCleanUp{longPropagation{s.provider(t, s.bind.TSIGSecret)}}, neverSeen(t))
	require.NoError(t, err)

	cfg := s.config(t, crashing)
	req := acme.Request{Names: []string{"crash.dns.test"}, Profile: testca.DefaultProfile}

	_, _, err = obtain(t, s.client(t, cfg), req, 2*time.Second)
	pe := requirePending(t, err, context.DeadlineExceeded)
	require.Len(t, s.bind.ChallengeRecords(t), 1, "the dead process left its record")

	rec, err := cfg.Journal.Load(context.Background(), req.Key())
	require.NoError(t, err)
	require.Len(t, rec.Presented, 1, "and journaled it")
	assert.Equal(t, "crash.dns.test", rec.Presented[0].Domain)

	// The next process, at start.
	cfg.Solver = s.rfc2136Solver(t, s.solverOptions(t))
	c := s.client(t, cfg)
	require.NoError(t, c.CleanUpLeftovers(context.Background(), req.Key()))
	assert.Empty(t, s.bind.ChallengeRecords(t), "the leftover record is removed")

	rec, err = cfg.Journal.Load(context.Background(), req.Key())
	require.NoError(t, err, "the order stays journaled")
	assert.Empty(t, rec.Presented)
	require.NoError(t, c.CleanUpLeftovers(context.Background(), "no-such-request"), "nothing journaled is not an error")

	cert, _, err := obtain(t, c, req, time.Minute)
	require.NoError(t, err)
	assert.Equal(t, pe.OrderURL, cert.OrderURL)
	assert.Equal(t, 1, s.ca.Stats().NewOrders)
}

// TestDNS01Failures: each way DNS-01 fails ends the attempt with an error that names the
// provider and the record's name, keeps the order journaled for the next attempt, and
// leaves no challenge record in the zone.
func TestDNS01Failures(t *testing.T) {
	t.Parallel()

	wrongSecret := base64.StdEncoding.EncodeToString(make([]byte, 32))

	tests := []struct {
		desc string
		name string
		// solver builds the solver; down stops BIND for the attempt.
		solver func(t *testing.T, s dnsSetup) *dns01.Solver
		down   bool
		// wantErr is the error type; wantText is in the message.
		wantErr  any
		wantText string
	}{
		{
			desc: "wrong TSIG key", name: "badkey.dns.test",
			solver: func(t *testing.T, s dnsSetup) *dns01.Solver {
				solver, err := dns01.New("rfc2136", s.provider(t, wrongSecret), s.solverOptions(t))
				require.NoError(t, err)

				return solver
			},
			wantErr: &dns01.ProviderError{}, wantText: "dns-01 rfc2136: present _acme-challenge.badkey.dns.test: ",
		},
		{
			desc: "server down", name: "down.dns.test",
			solver:  func(t *testing.T, s dnsSetup) *dns01.Solver { return s.rfc2136Solver(t, s.solverOptions(t)) },
			down:    true,
			wantErr: &dns01.ProviderError{}, wantText: "dns-01 rfc2136: present _acme-challenge.down.dns.test: ",
		},
		{
			desc: "zone not authoritative", name: "x." + testservers.BINDOutsideZone[:len(testservers.BINDOutsideZone)-1],
			solver:  func(t *testing.T, s dnsSetup) *dns01.Solver { return s.rfc2136Solver(t, s.solverOptions(t)) },
			wantErr: &dns01.ProviderError{}, wantText: "dns-01 rfc2136: present _acme-challenge.x.elsewhere.test: ",
		},
		{
			desc: "propagation never observed", name: "unseen.dns.test",
			solver:  func(t *testing.T, s dnsSetup) *dns01.Solver { return s.rfc2136Solver(t, neverSeen(t)) },
			wantErr: &dns01.PropagationError{}, wantText: "dns-01 rfc2136: _acme-challenge.unseen.dns.test not visible after 2s: ",
		},
	}

	for _, test := range tests {
		t.Run(test.desc, func(t *testing.T) {
			t.Parallel()

			s := newDNSSetup(t, testca.Options{})
			cfg := s.config(t, test.solver(t, s))
			req := acme.Request{Names: []string{test.name}, Profile: testca.DefaultProfile}

			if test.down {
				s.bind.Kill()
			}

			_, _, err := obtain(t, s.client(t, cfg), req, time.Minute)
			require.Error(t, err)
			assert.ErrorAs(t, err, &test.wantErr)
			assert.Contains(t, err.Error(), test.wantText)
			assert.NotContains(t, err.Error(), s.bind.TSIGSecret)

			_, err = cfg.Journal.Load(context.Background(), req.Key())
			require.NoError(t, err, "the order stays journaled for the next attempt")
			assert.Equal(t, 1, s.ca.Stats().NewOrders)

			if test.down {
				s.bind.Start()
			}

			assert.Empty(t, s.bind.ChallengeRecords(t))
		})
	}
}
