package testca

import (
	"crypto/tls"
	"fmt"
	"net"
	"time"

	"github.com/certfetch/certfetch/internal/testkit/testpki"
)

// serverTLSValidity bounds the ACME server's TLS certificates: a test CA
// lives for minutes, a demo for hours; a day leaves room for clock skew
// without making a leaked test root useful for long.
const serverTLSValidity = 24 * time.Hour

// newServerTLS creates a throwaway root CA (path length 0: no intermediate)
// and a server certificate it signs for 127.0.0.1, ::1 and localhost (package
// testpki). It returns the root as PEM and a TLS configuration serving the
// server certificate, with the root in its chain.
func newServerTLS() (rootPEM []byte, config *tls.Config, err error) {
	root, err := testpki.NewRoot("certfetch testca ACME server root", 0, serverTLSValidity)
	if err != nil {
		return nil, nil, fmt.Errorf("test CA TLS: %w", err)
	}
	leaf, err := root.IssueServer("certfetch testca ACME server",
		[]string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback})
	if err != nil {
		return nil, nil, fmt.Errorf("test CA TLS: %w", err)
	}
	config = &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{leaf.DER(), root.DER()}, PrivateKey: leaf.Key}},
		MinVersion:   tls.VersionTLS12,
	}
	return root.CertPEM(), config, nil
}
