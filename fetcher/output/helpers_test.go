package output_test

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
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
)

// newPair returns a self-signed ECDSA P-256 certificate for cn and its key,
// both PEM-encoded.
func newPair(t testing.TB, cn string) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn},
		DNSNames:     []string{cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	require.NoError(t, err)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
}

// published is what a Traefik reload would load for one name.
type published struct {
	CertFile, KeyFile string
	CertPEM, KeyPEM   []byte
}

// loadPublished reads <dir>/<name>.yml as Traefik's file provider would,
// loads both PEM files and checks that the key matches the certificate. It
// returns errors instead of failing the test so a reader goroutine can use
// it.
func loadPublished(dir, name string) (published, error) {
	var p published
	data, err := os.ReadFile(filepath.Join(dir, name+".yml"))
	if err != nil {
		return p, err
	}
	var doc struct {
		TLS struct {
			Certificates []struct {
				CertFile string `yaml:"certFile"`
				KeyFile  string `yaml:"keyFile"`
			} `yaml:"certificates"`
		} `yaml:"tls"`
	}
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return p, fmt.Errorf("parse %s.yml: %w (content %q)", name, err, data)
	}
	if len(doc.TLS.Certificates) != 1 {
		return p, fmt.Errorf("%s.yml: want one certificate, got %d (content %q)", name, len(doc.TLS.Certificates), data)
	}
	p.CertFile, p.KeyFile = doc.TLS.Certificates[0].CertFile, doc.TLS.Certificates[0].KeyFile
	if p.CertPEM, err = os.ReadFile(p.CertFile); err != nil {
		return p, err
	}
	if p.KeyPEM, err = os.ReadFile(p.KeyFile); err != nil {
		return p, err
	}
	if _, err := tls.X509KeyPair(p.CertPEM, p.KeyPEM); err != nil {
		return p, fmt.Errorf("%s.yml points at a broken pair: %w", name, err)
	}
	return p, nil
}

// listDir returns the names in dir.
func listDir(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	names := make([]string, len(entries))
	for i, e := range entries {
		names[i] = e.Name()
	}
	return names
}
