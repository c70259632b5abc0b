package dns01_test

import (
	"context"
	"errors"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/certfetch/certfetch/acme/dns01"
	"github.com/certfetch/certfetch/internal/testkit/loopbackdns"
	"github.com/certfetch/certfetch/internal/testkit/testservers"
)

// txtProvider is a provider that publishes nothing itself: the test decides what the
// zone holds. It reports a short propagation timeout.
type txtProvider struct{}

func (txtProvider) Present(string, string, string) error { return nil }
func (txtProvider) CleanUp(string, string, string) error { return nil }
func (txtProvider) Timeout() (timeout, interval time.Duration) {
	return time.Second, 50 * time.Millisecond
}

// TestWaitPropagation checks the propagation options against a real BIND (the record
// absent: nothing presents it) and a resolver that never has it.
func TestWaitPropagation(t *testing.T) {
	t.Parallel()

	b := testservers.StartBIND(t)
	_, port, err := net.SplitHostPort(b.Addr)
	require.NoError(t, err)
	nsPort, err := strconv.Atoi(port)
	require.NoError(t, err)

	lb, err := loopbackdns.Start()
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, lb.Close()) })

	tests := []struct {
		desc     string
		opts     dns01.Options
		deadline time.Duration
		// wantWhere: a *PropagationError whose last check failed so; wantDeadline:
		// the context's error; neither: success.
		wantWhere    string
		wantDeadline bool
		// minTook is the least the wait must take.
		minTook time.Duration
	}{
		{desc: "checks disabled: only the delay", opts: dns01.Options{Resolvers: []string{lb.Addr()}, DisableChecks: true, DelayBeforeChecks: 200 * time.Millisecond}, deadline: time.Minute, minTook: 200 * time.Millisecond},
		{desc: "authoritative nameserver lacks the record", opts: dns01.Options{Resolvers: []string{b.Addr}, NameserverPort: nsPort}, deadline: time.Minute, wantWhere: "authoritative nameserver 127.0.0.1:" + port + " answered NXDOMAIN", minTook: time.Second - 50*time.Millisecond},
		{desc: "resolver lacks the record, authoritative not asked", opts: dns01.Options{Resolvers: []string{lb.Addr()}, RequireAllRNS: true, DisableANSChecks: true}, deadline: time.Minute, wantWhere: "resolver " + lb.Addr() + ": record not found"},
		{desc: "nothing required: seen at once", opts: dns01.Options{Resolvers: []string{lb.Addr()}, DisableANSChecks: true}, deadline: time.Minute},
		{desc: "deadline before the timeout", opts: dns01.Options{Resolvers: []string{b.Addr}, NameserverPort: nsPort}, deadline: 300 * time.Millisecond, wantDeadline: true},
	}

	for _, test := range tests {
		t.Run(test.desc, func(t *testing.T) {
			t.Parallel()

			s, err := dns01.New("test", txtProvider{}, test.opts)
			require.NoError(t, err)

			start := time.Now() // before the deadline is set: took never comes out shorter
			ctx, cancel := context.WithTimeout(context.Background(), test.deadline)
			defer cancel()

			err = s.WaitPropagation(ctx, "x."+b.Zone, "token", "token.thumbprint")
			took := time.Since(start)

			assert.GreaterOrEqual(t, took, test.minTook)

			var pe *dns01.PropagationError

			switch {
			case test.wantWhere != "":
				require.ErrorAs(t, err, &pe)
				assert.Contains(t, err.Error(), "dns-01 test: _acme-challenge.x.dns.test not visible after 1s: "+test.wantWhere)
			case test.wantDeadline:
				require.ErrorIs(t, err, context.DeadlineExceeded)
				assert.False(t, errors.As(err, &pe), "the deadline, not the propagation timeout, ended the wait")
			default:
				require.NoError(t, err)
			}
		})
	}
}

// TestSequential reports a provider's own Sequential, and false for one without it.
func TestSequential(t *testing.T) {
	t.Parallel()

	s, err := dns01.New("test", txtProvider{}, dns01.Options{Resolvers: []string{"127.0.0.1:53"}})
	require.NoError(t, err)

	one, _ := s.Sequential()
	assert.False(t, one)

	s, err = dns01.New("test", sequentialProvider{}, dns01.Options{Resolvers: []string{"127.0.0.1:53"}})
	require.NoError(t, err)

	one, pause := s.Sequential()
	assert.True(t, one)
	assert.Equal(t, 3*time.Second, pause)
}

type sequentialProvider struct{ txtProvider }

func (sequentialProvider) Sequential() time.Duration { return 3 * time.Second }
