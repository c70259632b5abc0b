// Package testpki issues throwaway X.509 certificates for the test harness:
// a root CA, intermediates under it and TLS server certificates, each with a
// fresh ECDSA P-256 key and a random 128-bit serial, and their PEM encodings.
//
// It exists so that the in-process test CA (package testca, for its ACME
// server's TLS) and the real step-ca (package testservers, for its root and
// intermediate) build their PKI the same way, in one place.
//
// Every certificate below a root shares the root's validity window, which
// starts an hour before NewRoot is called (a client whose clock is slightly
// behind still accepts it). Nothing here is meant to be secure beyond the
// test that made it: keys live in memory, and KeyPEM writes them unencrypted.
package testpki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"time"
)

// serialBits is the size of random certificate serials (RFC 5280 allows up
// to 20 octets; the CA/B Forum asks for at least 64 bits of entropy).
const serialBits = 128

// clockSkew is how far before NewRoot every validity window starts.
const clockSkew = time.Hour

// Cert is a certificate and its private key.
type Cert struct {
	// Certificate is the parsed certificate; Certificate.Raw is its DER.
	Certificate *x509.Certificate
	// Key is the certificate's private key, generated for it alone.
	Key *ecdsa.PrivateKey
}

// DER returns the certificate's DER encoding.
func (c *Cert) DER() []byte { return c.Certificate.Raw }

// CertPEM returns the certificate as one PEM block of type CERTIFICATE.
func (c *Cert) CertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Certificate.Raw})
}

// KeyPEM returns the private key, unencrypted, as one PEM block of type
// EC PRIVATE KEY (SEC 1), the form step-ca and OpenSSL read without a
// password.
func (c *Cert) KeyPEM() ([]byte, error) {
	der, err := x509.MarshalECPrivateKey(c.Key)
	if err != nil {
		return nil, fmt.Errorf("testpki: marshal key of %q: %w", c.Certificate.Subject.CommonName, err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), nil
}

// CA is a certificate authority: a root or an intermediate, whose key signs
// the certificates it issues.
type CA struct {
	Cert
}

// NewRoot returns a self-signed root CA named commonName, valid from an hour
// ago for validity. maxPathLen is how many intermediates may stand below it
// (0: it signs leaf certificates only). Its key usages are certificate and
// CRL signing.
func NewRoot(commonName string, maxPathLen int, validity time.Duration) (*CA, error) {
	if validity <= 0 {
		return nil, fmt.Errorf("testpki: root %q: validity %s is not positive", commonName, validity)
	}
	notBefore := time.Now().Add(-clockSkew)
	template, err := caTemplate(commonName, maxPathLen)
	if err != nil {
		return nil, err
	}
	template.NotBefore, template.NotAfter = notBefore, notBefore.Add(validity)
	cert, err := issue(template, nil)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert}, nil
}

// NewIntermediate returns an intermediate CA named commonName, signed by ca,
// with ca's validity window. maxPathLen is as for NewRoot and must be below
// ca's own.
func (ca *CA) NewIntermediate(commonName string, maxPathLen int) (*CA, error) {
	template, err := caTemplate(commonName, maxPathLen)
	if err != nil {
		return nil, err
	}
	if maxPathLen >= ca.Certificate.MaxPathLen {
		return nil, fmt.Errorf("testpki: intermediate %q: path length %d does not fit below %q (%d)",
			commonName, maxPathLen, ca.Certificate.Subject.CommonName, ca.Certificate.MaxPathLen)
	}
	cert, err := issue(template, ca)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert}, nil
}

// IssueServer returns a TLS server certificate named commonName, signed by
// ca, with ca's validity window, for dnsNames and ips (its subject
// alternative names). Its key usage is digital signature, its extended key
// usage server authentication; it is not a CA.
func (ca *CA) IssueServer(commonName string, dnsNames []string, ips []net.IP) (*Cert, error) {
	cert, err := issue(&x509.Certificate{
		Subject:     pkix.Name{CommonName: commonName},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:    dnsNames,
		IPAddresses: ips,
	}, ca)
	if err != nil {
		return nil, err
	}
	return &cert, nil
}

// caTemplate is a CA certificate without key, serial or validity.
func caTemplate(commonName string, maxPathLen int) (*x509.Certificate, error) {
	if maxPathLen < 0 {
		return nil, fmt.Errorf("testpki: CA %q: path length %d is negative", commonName, maxPathLen)
	}
	return &x509.Certificate{
		Subject:               pkix.Name{CommonName: commonName},
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            maxPathLen,
		MaxPathLenZero:        maxPathLen == 0, // else Go omits a path length of 0
	}, nil
}

// issue generates a key, gives template a random serial and signs it with
// issuer's key, or self-signs it when issuer is nil. A certificate with an
// issuer takes the issuer's validity window.
func issue(template *x509.Certificate, issuer *CA) (Cert, error) {
	name := template.Subject.CommonName
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return Cert{}, fmt.Errorf("testpki: %q: generate key: %w", name, err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), serialBits))
	if err != nil {
		return Cert{}, fmt.Errorf("testpki: %q: draw serial: %w", name, err)
	}
	template.SerialNumber = serial
	parent, signer := template, key
	if issuer != nil {
		parent, signer = issuer.Certificate, issuer.Key
		template.NotBefore, template.NotAfter = parent.NotBefore, parent.NotAfter
	}
	der, err := x509.CreateCertificate(rand.Reader, template, parent, &key.PublicKey, signer)
	if err != nil {
		return Cert{}, fmt.Errorf("testpki: %q: sign: %w", name, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return Cert{}, fmt.Errorf("testpki: %q: parse: %w", name, err)
	}
	return Cert{Certificate: cert, Key: key}, nil
}
