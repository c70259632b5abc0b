package loopbackdns_test

import (
	"context"
	"net"
	"testing"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/certfetch/certfetch/internal/testkit/loopbackdns"
)

func TestAnswersLoopbackOverTCPAndUDP(t *testing.T) {
	t.Parallel()
	server, err := loopbackdns.Start()
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, server.Close()) })
	tests := []struct {
		desc    string
		network string
		qtype   uint16
		wantA   bool
	}{
		{desc: "A over TCP", network: "tcp", qtype: dns.TypeA, wantA: true},
		{desc: "A over UDP", network: "udp", qtype: dns.TypeA, wantA: true},
		{desc: "AAAA: no records", network: "udp", qtype: dns.TypeAAAA},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			t.Parallel()
			query := new(dns.Msg)
			query.SetQuestion("anything.example.test.", tt.qtype)
			reply, _, err := (&dns.Client{Net: tt.network}).Exchange(query, server.Addr())
			require.NoError(t, err)
			assert.Equal(t, dns.RcodeSuccess, reply.Rcode)
			if !tt.wantA {
				assert.Empty(t, reply.Answer)
				return
			}
			require.Len(t, reply.Answer, 1)
			assert.Equal(t, "127.0.0.1", reply.Answer[0].(*dns.A).A.String())
		})
	}
}

// TestGoResolver is how step-ca's --resolver uses the server: Go's own
// resolver, dialling it for every query.
func TestGoResolver(t *testing.T) {
	t.Parallel()
	server, err := loopbackdns.Start()
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, server.Close()) })
	resolver := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, network, server.Addr())
	}}
	addrs, err := resolver.LookupHost(t.Context(), "www.example.test")
	require.NoError(t, err)
	assert.Equal(t, []string{"127.0.0.1"}, addrs)
}
