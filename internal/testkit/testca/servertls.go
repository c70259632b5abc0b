package testca

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"time"
)

// serverTLSValidity bounds the ACME server's TLS certificates: a test CA
// lives for minutes, a demo for hours; a day leaves room for clock skew
// without making a leaked test root useful for long.
const serverTLSValidity = 24 * time.Hour

// serialBits is the size of random certificate serials (RFC 5280 allows up to
// 20 octets; CA/B Forum asks for at least 64 bits of entropy).
const serialBits = 128

// newServerTLS creates a throwaway root CA and a server certificate it signs
// for 127.0.0.1, ::1 and localhost. It returns the root as PEM and a TLS
// configuration serving the server certificate.
func newServerTLS() (rootPEM []byte, config *tls.Config, err error) {
	notBefore := time.Now().Add(-time.Hour) // tolerate a client clock slightly behind
	notAfter := notBefore.Add(serverTLSValidity)

	rootKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate test CA TLS root key: %w", err)
	}
	rootTemplate := &x509.Certificate{
		Subject:               pkix.Name{CommonName: "certfetch testca ACME server root"},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	rootDER, err := signCertificate(rootTemplate, rootTemplate, &rootKey.PublicKey, rootKey)
	if err != nil {
		return nil, nil, fmt.Errorf("sign test CA TLS root: %w", err)
	}
	root, err := x509.ParseCertificate(rootDER)
	if err != nil {
		return nil, nil, fmt.Errorf("parse test CA TLS root: %w", err)
	}

	leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate test CA TLS server key: %w", err)
	}
	leafTemplate := &x509.Certificate{
		Subject:     pkix.Name{CommonName: "certfetch testca ACME server"},
		NotBefore:   notBefore,
		NotAfter:    notAfter,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:    []string{"localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	leafDER, err := signCertificate(leafTemplate, root, &leafKey.PublicKey, rootKey)
	if err != nil {
		return nil, nil, fmt.Errorf("sign test CA TLS server certificate: %w", err)
	}

	rootPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: rootDER})
	config = &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{leafDER, rootDER}, PrivateKey: leafKey}},
		MinVersion:   tls.VersionTLS12,
	}
	return rootPEM, config, nil
}

// signCertificate gives template a random serial and signs it.
func signCertificate(template, parent *x509.Certificate, pub *ecdsa.PublicKey, signer *ecdsa.PrivateKey) ([]byte, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), serialBits))
	if err != nil {
		return nil, fmt.Errorf("draw serial: %w", err)
	}
	template.SerialNumber = serial
	return x509.CreateCertificate(rand.Reader, template, parent, pub, signer)
}
