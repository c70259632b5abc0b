package testca

import (
	"fmt"
	"net"
	"time"

	"github.com/miekg/dns"
)

// loopbackTTL is the TTL of every answer; nothing caches them, any value works.
const loopbackTTL = 60

// dnsIOTimeout bounds reads and writes on one DNS connection (loopback
// answers take microseconds; the timeout only frees stuck connections).
const dnsIOTimeout = 5 * time.Second

// loopbackDNS is a DNS server on a free loopback TCP port that answers
// 127.0.0.1 to every A query and nothing (NOERROR, no records) to every
// other query, so that Pebble's VA dials 127.0.0.1 for every name.
//
// It serves TCP only because Pebble's VA, given a resolver address, queries
// it over TCP. Pebble's challtestsrv is not used: it registers its handler on
// miekg/dns's process-wide mux, binds by address in a goroutine that only
// logs bind errors, and so cannot run two instances per process reliably.
type loopbackDNS struct {
	server *dns.Server
	addr   string
}

// startLoopbackDNS binds 127.0.0.1:0 and returns once the server is serving.
func startLoopbackDNS() (*loopbackDNS, error) {
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listen for test CA DNS: %w", err)
	}
	started := make(chan struct{})
	server := &dns.Server{
		Listener:          listener,
		Handler:           dns.HandlerFunc(answerLoopback),
		ReadTimeout:       dnsIOTimeout,
		WriteTimeout:      dnsIOTimeout,
		NotifyStartedFunc: func() { close(started) },
	}
	served := make(chan error, 1)
	go func() { served <- server.ActivateAndServe() }()
	select {
	case <-started:
	case err := <-served:
		return nil, fmt.Errorf("serve test CA DNS on %s: %w", listener.Addr(), err)
	}
	return &loopbackDNS{server: server, addr: listener.Addr().String()}, nil
}

// Addr is the server's host:port.
func (d *loopbackDNS) Addr() string { return d.addr }

// Close stops the server and closes its listener.
func (d *loopbackDNS) Close() error {
	if err := d.server.Shutdown(); err != nil {
		return fmt.Errorf("shut down test CA DNS on %s: %w", d.addr, err)
	}
	return nil
}

func answerLoopback(w dns.ResponseWriter, query *dns.Msg) {
	reply := new(dns.Msg)
	reply.SetReply(query)
	reply.Authoritative = true
	for _, q := range query.Question {
		if q.Qtype != dns.TypeA {
			continue
		}
		reply.Answer = append(reply.Answer, &dns.A{
			Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: loopbackTTL},
			A:   net.IPv4(127, 0, 0, 1),
		})
	}
	_ = w.WriteMsg(reply) // the client went away; nothing to do
}
