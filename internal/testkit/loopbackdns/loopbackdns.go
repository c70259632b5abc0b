// Package loopbackdns is a DNS server for tests that answers 127.0.0.1 to
// every A query, so that a CA under test (Pebble's VA in package testca,
// step-ca in package testservers) validates every name against loopback.
package loopbackdns

import (
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/miekg/dns"
)

// ttl is the TTL of every answer; nothing depends on caching them.
const ttl = 60

// ioTimeout bounds reads and writes on one DNS connection (loopback answers
// take microseconds; the timeout only frees stuck connections).
const ioTimeout = 5 * time.Second

// bindAttempts bounds the tries to find a port free for both TCP and UDP.
const bindAttempts = 20

// Server answers 127.0.0.1 to every A query and nothing (NOERROR, no
// records) to every other query, over TCP and UDP on the same loopback port:
// Pebble's VA queries over TCP, Go's resolver (step-ca's --resolver) over
// UDP first.
//
// Pebble's challtestsrv is not used: it registers its handler on miekg/dns's
// process-wide mux, binds by address in a goroutine that only logs bind
// errors, and so cannot run two instances per process reliably.
type Server struct {
	tcp, udp *dns.Server
	addr     string
}

// Start binds 127.0.0.1 on a port free for TCP and UDP and returns once
// both servers are serving.
func Start() (*Server, error) {
	tcpListener, udpConn, err := bindTCPAndUDP()
	if err != nil {
		return nil, err
	}
	s := &Server{addr: tcpListener.Addr().String()}
	s.tcp = &dns.Server{Listener: tcpListener, Handler: dns.HandlerFunc(answerLoopback), ReadTimeout: ioTimeout, WriteTimeout: ioTimeout}
	s.udp = &dns.Server{PacketConn: udpConn, Handler: dns.HandlerFunc(answerLoopback), ReadTimeout: ioTimeout, WriteTimeout: ioTimeout}
	for _, server := range []*dns.Server{s.tcp, s.udp} {
		if err := serve(server); err != nil {
			tcpListener.Close()
			udpConn.Close()
			return nil, fmt.Errorf("serve loopback DNS on %s: %w", s.addr, err)
		}
	}
	return s, nil
}

// bindTCPAndUDP binds a free TCP port on 127.0.0.1, then the same UDP port;
// if another process holds that UDP port it tries another.
func bindTCPAndUDP() (net.Listener, net.PacketConn, error) {
	var errs []error
	for range bindAttempts {
		tcpListener, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, nil, fmt.Errorf("listen for loopback DNS: %w", err)
		}
		udpConn, err := net.ListenPacket("udp", tcpListener.Addr().String())
		if err == nil {
			return tcpListener, udpConn, nil
		}
		tcpListener.Close()
		errs = append(errs, err)
	}
	return nil, nil, fmt.Errorf("listen for loopback DNS: no port free for TCP and UDP: %w", errors.Join(errs...))
}

// serve starts server and waits until it serves.
func serve(server *dns.Server) error {
	started := make(chan struct{})
	server.NotifyStartedFunc = func() { close(started) }
	served := make(chan error, 1)
	go func() { served <- server.ActivateAndServe() }()
	select {
	case <-started:
		return nil
	case err := <-served:
		return err
	}
}

// Addr is the server's host:port (the same for TCP and UDP).
func (s *Server) Addr() string { return s.addr }

// Close stops both servers and closes their sockets.
func (s *Server) Close() error {
	var errs []error
	for _, server := range []*dns.Server{s.tcp, s.udp} {
		if err := server.Shutdown(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("shut down loopback DNS on %s: %w", s.addr, err)
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
			Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: ttl},
			A:   net.IPv4(127, 0, 0, 1),
		})
	}
	_ = w.WriteMsg(reply) // the client went away; nothing to do
}
