package testpki

import (
	"crypto/x509"
	"encoding/pem"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestChainVerifies(t *testing.T) {
	start := time.Now()
	root, err := NewRoot("test root", 1, 24*time.Hour)
	require.NoError(t, err)
	intermediate, err := root.NewIntermediate("test intermediate", 0)
	require.NoError(t, err)
	leaf, err := intermediate.IssueServer("test server", []string{"localhost"}, []net.IP{net.IPv6loopback})
	require.NoError(t, err)

	roots, inters := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(root.Certificate)
	inters.AddCert(intermediate.Certificate)
	for _, name := range []string{"localhost", "::1"} {
		_, err := leaf.Certificate.Verify(x509.VerifyOptions{DNSName: name, Roots: roots, Intermediates: inters})
		require.NoError(t, err, name)
	}

	for _, c := range []*Cert{&root.Cert, &intermediate.Cert, leaf} {
		cert := c.Certificate
		require.Equal(t, root.Certificate.NotBefore, cert.NotBefore, "one validity window")
		require.Equal(t, root.Certificate.NotAfter, cert.NotAfter, "one validity window")
		require.LessOrEqual(t, cert.SerialNumber.BitLen(), serialBits)
		require.Equal(t, &c.Key.PublicKey, cert.PublicKey, "the certificate is for its own key")
	}
	require.WithinDuration(t, start.Add(-clockSkew), root.Certificate.NotBefore, 2*time.Second)
	require.Equal(t, 24*time.Hour, root.Certificate.NotAfter.Sub(root.Certificate.NotBefore))
	require.NotEqual(t, root.Certificate.SerialNumber, intermediate.Certificate.SerialNumber)

	require.True(t, root.Certificate.IsCA)
	require.Equal(t, 1, root.Certificate.MaxPathLen)
	require.Equal(t, 0, intermediate.Certificate.MaxPathLen)
	require.True(t, intermediate.Certificate.MaxPathLenZero, "path length 0 is encoded")
	require.Equal(t, x509.KeyUsageCertSign|x509.KeyUsageCRLSign, intermediate.Certificate.KeyUsage)
	require.False(t, leaf.Certificate.IsCA)
	require.Equal(t, x509.KeyUsageDigitalSignature, leaf.Certificate.KeyUsage)
	require.Equal(t, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, leaf.Certificate.ExtKeyUsage)
}

func TestPEM(t *testing.T) {
	root, err := NewRoot("test root", 0, time.Hour)
	require.NoError(t, err)

	block, rest := pem.Decode(root.CertPEM())
	require.Empty(t, rest)
	require.Equal(t, "CERTIFICATE", block.Type)
	require.Equal(t, root.DER(), block.Bytes)

	keyPEM, err := root.KeyPEM()
	require.NoError(t, err)
	block, rest = pem.Decode(keyPEM)
	require.Empty(t, rest)
	require.Equal(t, "EC PRIVATE KEY", block.Type)
	key, err := x509.ParseECPrivateKey(block.Bytes)
	require.NoError(t, err)
	require.True(t, key.Equal(root.Key))
}

func TestRefusals(t *testing.T) {
	_, err := NewRoot("no validity", 0, 0)
	require.Error(t, err)
	_, err = NewRoot("negative path length", -1, time.Hour)
	require.Error(t, err)

	root, err := NewRoot("leaf-only root", 0, time.Hour)
	require.NoError(t, err)
	_, err = root.NewIntermediate("too deep", 0)
	require.Error(t, err, "a root with path length 0 signs no CA")
}
