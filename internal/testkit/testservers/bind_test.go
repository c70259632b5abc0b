package testservers

import (
	"encoding/base64"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// bindUpdate sends an RFC 2136 update to zone that inserts one TXT record,
// signed with key and secret, and returns BIND's answer code.
func bindUpdate(t *testing.T, b *BIND, zone, fqdn, value, secret string) int {
	t.Helper()
	m := new(dns.Msg).SetUpdate(zone)
	m.Insert([]dns.RR{&dns.TXT{
		Hdr: dns.RR_Header{Name: fqdn, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 60},
		Txt: []string{value},
	}})
	m.SetTsig(b.TSIGKey, b.TSIGAlgorithm, 300, time.Now().Unix())
	c := &dns.Client{Net: "tcp", Timeout: bindQueryTimeout, TsigSecret: map[string]string{b.TSIGKey: secret}}
	r, _, err := c.Exchange(m, b.Addr)
	if err != nil {
		// miekg/dns fails the exchange when the answer's TSIG does not
		// verify: BIND answers a bad key unsigned (NOTAUTH).
		require.NotNil(t, r, "update of %s: %v", fqdn, err)
	}
	return r.Rcode
}

func TestBIND(t *testing.T) {
	t.Parallel()
	b := StartBIND(t)
	wrongSecret := base64.StdEncoding.EncodeToString(make([]byte, 32))

	tests := []struct {
		desc      string
		zone      string
		fqdn      string
		secret    string
		wantRcode int
		// wantServed: the value is served afterwards.
		wantServed bool
	}{
		{desc: "signed update in the zone", zone: b.Zone, fqdn: "_acme-challenge.a." + b.Zone, secret: b.TSIGSecret, wantRcode: dns.RcodeSuccess, wantServed: true},
		{desc: "wrong TSIG secret", zone: b.Zone, fqdn: "_acme-challenge.b." + b.Zone, secret: wrongSecret, wantRcode: dns.RcodeNotAuth},
		{desc: "zone BIND does not serve", zone: BINDOutsideZone, fqdn: "_acme-challenge.c." + BINDOutsideZone, secret: b.TSIGSecret, wantRcode: dns.RcodeNotAuth},
	}
	for _, test := range tests {
		t.Run(test.desc, func(t *testing.T) {
			rcode := bindUpdate(t, b, test.zone, test.fqdn, "v-"+test.desc, test.secret)
			assert.Equal(t, dns.RcodeToString[test.wantRcode], dns.RcodeToString[rcode])
			if test.wantServed {
				assert.Equal(t, []string{"v-" + test.desc}, b.TXT(t, test.fqdn))
			}
		})
	}
	assert.Equal(t, []string{"_acme-challenge.a.dns.test. v-signed update in the zone"}, b.ChallengeRecords(t))

	b.Kill()
	_, err := b.query(b.Zone, dns.TypeSOA, "tcp")
	require.Error(t, err, "a killed BIND answers nothing")
	b.Start()
	assert.Equal(t, []string{"v-signed update in the zone"}, b.TXT(t, "_acme-challenge.a."+b.Zone),
		"the zone's journal keeps updates across a kill")
}

// TestBINDReadinessIsPerInstance: a server answering on a BIND's address is
// not taken for it unless it serves that instance's token (what a port shared
// by two named processes looked like), and a BIND's port stays reserved.
func TestBINDReadinessIsPerInstance(t *testing.T) {
	t.Parallel()
	a, b := StartBIND(t), StartBIND(t)
	require.NotEqual(t, a.Addr, b.Addr)
	require.NoError(t, a.ready())

	impostor := &BIND{Addr: a.Addr, Zone: a.Zone, instance: b.instance}
	err := impostor.ready()
	require.Error(t, err)
	assert.Contains(t, err.Error(), "not this instance's token")

	_, port, err := net.SplitHostPort(a.Addr)
	require.NoError(t, err)
	f, err := os.Open(filepath.Join(os.TempDir(), "certfetch-test-ports", port))
	require.NoError(t, err)
	defer f.Close()
	assert.ErrorIs(t, syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB), syscall.EWOULDBLOCK,
		"another process cannot reserve the port of a running BIND")
}
