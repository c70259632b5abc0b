package testservers

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// BINDZone is the zone StartBIND serves: a name of the reserved .test TLD
// (RFC 6761), so that no real resolver ever answers for it.
const BINDZone = "dns.test."

// BINDOutsideZone is a name BIND is not authoritative for: it refuses
// queries and updates for it (recursion is off), as a server that does not
// host the zone a certificate's name is in.
const BINDOutsideZone = "elsewhere.test."

// BINDTSIGAlgorithm is the TSIG algorithm of the generated key: HMAC-SHA256,
// what `tsig-keygen` generates by default and lego's rfc2136 accepts.
const BINDTSIGAlgorithm = dns.HmacSHA256

// bindTSIGKeyName is the name of the key allowed to update the zone.
const bindTSIGKeyName = "certfetch-test."

// bindInstanceName is the TXT record, relative to the zone, that holds an
// instance's random token: readiness asks for it, so an answer from any other
// server on the same address cannot pass for this one.
const bindInstanceName = "certfetch-instance"

// bindQueryTimeout bounds one query to BIND (loopback answers take
// microseconds; the bound only stops a test hanging on a dead server).
const bindQueryTimeout = 2 * time.Second

// BIND is a running (or killed) BIND9 named, authoritative for BINDZone,
// that accepts RFC 2136 updates of TXT records signed with its TSIG key.
type BIND struct {
	*Server
	// Addr is the host:port BIND answers on, UDP and TCP.
	Addr string
	// Zone is BINDZone.
	Zone string
	// TSIGKey, TSIGAlgorithm and TSIGSecret (base64) sign updates: what
	// lego's rfc2136 provider takes as DNSUPDATE_TSIG_KEY,
	// DNSUPDATE_TSIG_ALGORITHM and DNSUPDATE_TSIG_SECRET.
	TSIGKey, TSIGAlgorithm, TSIGSecret string
	// instance is the random token BIND serves at bindInstanceName.
	instance string
}

// StartBIND starts BIND9's named (Debian package bind9, 9.18) in the
// foreground as the current user, on a free 127.0.0.1 port (UDP and TCP)
// reserved for it (reservePort), with everything it reads and writes in a
// temporary directory: named.conf, the zone file of BINDZone (SOA, NS
// ns.dns.test., ns.dns.test. A 127.0.0.1, and a random token of this instance
// at bindInstanceName) and the zone's journal of dynamic updates, which
// survives Kill and Start. A fresh hmac-sha256 TSIG key is allowed to change
// TXT records anywhere in the zone (update-policy zonesub); unsigned or wrongly
// signed updates are refused. Recursion is off, so names outside the zone get
// REFUSED. Zone transfers are allowed from loopback (ChallengeRecords).
// Readiness is this instance's token, answered over UDP and over TCP.
//
// Why the reservation and the token: named binds its UDP socket so that a
// second named can bind the same address and port, and the kernel then gives
// the first one's queries and updates to the other (updates signed with one's
// key fail at the other with "bad authentication"; queries land on a server
// that is being killed). Test packages run in parallel processes, and a free
// port is free again while a test's BIND is killed or not yet listening.
func StartBIND(t testing.TB) *BIND {
	t.Helper()
	bin := lookPath(t, "named", "bind9")
	dir := t.TempDir()
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		t.Fatalf("testservers: BIND TSIG key: %v", err)
	}
	token := make([]byte, 16)
	if _, err := rand.Read(token); err != nil {
		t.Fatalf("testservers: BIND instance token: %v", err)
	}
	b := &BIND{
		Addr:          net.JoinHostPort("127.0.0.1", strconv.Itoa(reservePort(t))),
		Zone:          BINDZone,
		TSIGKey:       bindTSIGKeyName,
		TSIGAlgorithm: BINDTSIGAlgorithm,
		TSIGSecret:    base64.StdEncoding.EncodeToString(secret),
		instance:      hex.EncodeToString(token),
	}
	if err := b.writeConfig(dir); err != nil {
		t.Fatalf("testservers: BIND configuration: %v", err)
	}
	// -g: foreground, log to stderr (the server log); -n 1: one worker
	// thread is plenty for a test zone and spares the shared cores.
	args := []string{"-g", "-n", "1", "-c", filepath.Join(dir, "named.conf")}
	b.Server = &Server{t: t, name: "named", bin: bin, args: args, dir: dir, addr: b.Addr,
		ready: b.ready}
	b.Start()
	return b
}

// writeConfig writes named.conf and the zone file into dir. With reuseport
// off, a second named on a port already taken fails to bind its TCP socket,
// so its readiness sees the other's token instead of sharing the port.
func (b *BIND) writeConfig(dir string) error {
	_, port, err := net.SplitHostPort(b.Addr)
	if err != nil {
		return err
	}
	zoneFile := filepath.Join(dir, strings.TrimSuffix(b.Zone, ".")+".zone")
	conf := fmt.Sprintf(`options {
	directory %[1]q;
	pid-file none;
	session-keyfile none;
	listen-on port %[2]s { 127.0.0.1; };
	listen-on-v6 { none; };
	reuseport no;
	recursion no;
	dnssec-validation no;
	notify no;
	allow-query { any; };
	allow-transfer { 127.0.0.1; };
};
controls { };
key %[3]q {
	algorithm %[4]s;
	secret %[5]q;
};
zone %[6]q {
	type primary;
	file %[7]q;
	update-policy { grant %[3]s zonesub TXT; };
};
`, dir, port, b.TSIGKey, strings.TrimSuffix(b.TSIGAlgorithm, "."), b.TSIGSecret, b.Zone, zoneFile)
	zone := fmt.Sprintf(`$TTL 60
@	IN SOA ns.%[1]s hostmaster.%[1]s 1 3600 600 86400 60
@	IN NS ns.%[1]s
ns	IN A 127.0.0.1
%[2]s	IN TXT %[3]q
`, b.Zone, bindInstanceName, b.instance)
	if err := os.WriteFile(filepath.Join(dir, "named.conf"), []byte(conf), 0o600); err != nil {
		return err
	}
	return os.WriteFile(zoneFile, []byte(zone), 0o600)
}

// ready asks over UDP and TCP for the instance token this BIND serves: the
// zone is loaded and the answers come from this process.
func (b *BIND) ready() error {
	name := bindInstanceName + "." + b.Zone
	for _, network := range []string{"udp", "tcp"} {
		r, err := b.query(name, dns.TypeTXT, network)
		if err != nil {
			return err
		}
		if got := txtValues(r); !slices.Equal(got, []string{b.instance}) {
			return fmt.Errorf("TXT query for %s over %s answered %s %q, not this instance's token %q (another server on %s?)",
				name, network, dns.RcodeToString[r.Rcode], got, b.instance, b.Addr)
		}
	}
	return nil
}

// query sends one non-recursive query to BIND over network ("udp" or "tcp").
func (b *BIND) query(name string, qtype uint16, network string) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	m.RecursionDesired = false
	c := &dns.Client{Net: network, Timeout: bindQueryTimeout}
	r, _, err := c.Exchange(m, b.Addr)
	return r, err
}

// TXT returns the TXT values BIND serves for fqdn (each record's strings
// joined), failing the test when BIND does not answer.
func (b *BIND) TXT(t testing.TB, fqdn string) []string {
	t.Helper()
	r, err := b.query(fqdn, dns.TypeTXT, "tcp")
	if err != nil {
		t.Fatalf("testservers: TXT query for %s at BIND %s: %v", fqdn, b.Addr, err)
	}
	return txtValues(r)
}

// txtValues returns the values of the TXT records in r's answer (each
// record's strings joined).
func txtValues(r *dns.Msg) []string {
	var values []string
	for _, rr := range r.Answer {
		if txt, ok := rr.(*dns.TXT); ok {
			values = append(values, strings.Join(txt.Txt, ""))
		}
	}
	return values
}

// ChallengeRecords returns every TXT record in the zone whose owner name
// starts with "_acme-challenge.", as "<owner> <value>", sorted, read by a
// zone transfer (AXFR): it proves that no challenge record is left anywhere
// in the zone, not only at the names a test thought of.
func (b *BIND) ChallengeRecords(t testing.TB) []string {
	t.Helper()
	m := new(dns.Msg)
	m.SetAxfr(b.Zone)
	tr := &dns.Transfer{DialTimeout: bindQueryTimeout, ReadTimeout: bindQueryTimeout}
	envelopes, err := tr.In(m, b.Addr)
	if err != nil {
		t.Fatalf("testservers: AXFR of %s from BIND %s: %v", b.Zone, b.Addr, err)
	}
	var records []string
	for e := range envelopes {
		if e.Error != nil {
			t.Fatalf("testservers: AXFR of %s from BIND %s: %v", b.Zone, b.Addr, e.Error)
		}
		for _, rr := range e.RR {
			txt, ok := rr.(*dns.TXT)
			if ok && strings.HasPrefix(txt.Hdr.Name, "_acme-challenge.") {
				records = append(records, txt.Hdr.Name+" "+strings.Join(txt.Txt, ""))
			}
		}
	}
	slices.Sort(records)
	return records
}

// reservePort returns a free 127.0.0.1 port that no other test process has
// reserved, and keeps it reserved until the test ends: an exclusive flock(2)
// on a file named after the port under os.TempDir()/certfetch-test-ports,
// released by the test's cleanup or by the kernel when the process dies. A
// free port alone is not enough for BIND (see StartBIND): another process's
// freePort can return the same port while this BIND starts or is killed.
func reservePort(t testing.TB) int {
	t.Helper()
	dir := filepath.Join(os.TempDir(), "certfetch-test-ports")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatalf("testservers: port reservations: %v", err)
	}
	// Reservations held by other processes are skipped; 100 tries only
	// bound a loop that should end at the first.
	for range 100 {
		port := freePort(t)
		f, err := os.OpenFile(filepath.Join(dir, strconv.Itoa(port)), os.O_CREATE|os.O_RDWR, 0o600)
		if err != nil {
			t.Fatalf("testservers: reserve port %d: %v", port, err)
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			f.Close()
			if errors.Is(err, syscall.EWOULDBLOCK) {
				continue
			}
			t.Fatalf("testservers: reserve port %d: %v", port, err)
		}
		t.Cleanup(func() { f.Close() })
		return port
	}
	t.Fatalf("testservers: no free port left unreserved in %s after 100 tries", dir)
	return 0
}
