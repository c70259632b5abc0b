// Package acmejsontest writes acme.json files the way Traefik does, for tests:
// Traefik's JSON shape (pkg/provider/acme StoredData, Account,
// CertAndStore, marshalled with two-space indentation), in the lego v4 era
// (KeyType, PKCS #1 / SEC 1 keys) or the lego v5 era (no KeyType, PKCS #8),
// from keys and certificates the test makes. Traefik v3.6.22 and later cannot
// be built here, so this is where the lego v5 format comes from.
package acmejsontest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Format is the era whose encoding Marshal writes.
type Format int

const (
	// LegoV4: Account.KeyType set, keys PKCS #1 (RSA) or SEC 1 (EC), the
	// account key PKCS #1 DER.
	LegoV4 Format = iota
	// LegoV5: no KeyType, every key PKCS #8.
	LegoV5
)

func (f Format) String() string {
	if f == LegoV5 {
		return "lego v5"
	}
	return "lego v4"
}

// Resolver is one resolver's entry.
type Resolver struct {
	// Account is written as null when nil.
	Account *Account
	// KeyType is Account.KeyType in the lego v4 era ("4096" when empty);
	// ignored in the lego v5 era.
	KeyType      string
	Certificates []Entry
}

// Account is an ACME account as Traefik stores it.
type Account struct {
	Email string
	URL   string
	Key   crypto.Signer
}

// Entry is one certificate entry. Key is encoded per Format; a nil Key or
// CertPEM writes an empty field (Traefik skips such entries).
type Entry struct {
	Main    string
	SANs    []string
	CertPEM []byte
	Key     crypto.Signer
	Store   string
}

// The JSON shapes, with Traefik's field names.
type storedData struct {
	Account      *account
	Certificates []*certAndStore
}

type account struct {
	Email        string
	Registration *registration
	PrivateKey   []byte
	KeyType      string `json:",omitempty"`
}

type registration struct {
	Body map[string]any `json:"body"`
	URI  string         `json:"uri,omitempty"`
}

type certAndStore struct {
	Domain      domain `json:"domain"`
	Certificate []byte `json:"certificate,omitempty"`
	Key         []byte `json:"key,omitempty"`
	Store       string
}

type domain struct {
	Main string   `json:"main,omitempty"`
	SANs []string `json:"sans,omitempty"`
}

// Marshal returns the acme.json of resolvers in format f.
func Marshal(t testing.TB, resolvers map[string]*Resolver, f Format) []byte {
	t.Helper()
	out := map[string]*storedData{}
	for name, r := range resolvers {
		sd := &storedData{}
		if a := r.Account; a != nil {
			sd.Account = &account{
				Email:        a.Email,
				Registration: &registration{Body: map[string]any{"status": "valid", "contact": []string{"mailto:" + a.Email}}, URI: a.URL},
				PrivateKey:   accountDER(t, a.Key, f),
			}
			if f == LegoV4 {
				sd.Account.KeyType = r.KeyType
				if sd.Account.KeyType == "" {
					sd.Account.KeyType = "4096"
				}
			}
		}
		for _, e := range r.Certificates {
			cs := &certAndStore{Domain: domain{Main: e.Main, SANs: e.SANs}, Certificate: e.CertPEM, Store: e.Store}
			if cs.Store == "" {
				cs.Store = "default"
			}
			if e.Key != nil {
				cs.Key = KeyPEM(t, e.Key, f)
			}
			sd.Certificates = append(sd.Certificates, cs)
		}
		out[name] = sd
	}
	data, err := json.MarshalIndent(out, "", "  ")
	require.NoError(t, err)
	return data
}

// accountDER encodes an account key as Traefik's PrivateKey field holds it.
func accountDER(t testing.TB, key crypto.Signer, f Format) []byte {
	t.Helper()
	_, der := encodeKey(t, key, f)
	return der
}

// KeyPEM encodes a certificate key as Traefik stores it in format f.
func KeyPEM(t testing.TB, key crypto.Signer, f Format) []byte {
	t.Helper()
	blockType, der := encodeKey(t, key, f)
	return pem.EncodeToMemory(&pem.Block{Type: blockType, Bytes: der})
}

// encodeKey returns the DER of key in format f and its PEM block type: lego v4
// writes PKCS #1 for RSA and SEC 1 for EC, lego v5 (and v4 for other keys)
// PKCS #8.
func encodeKey(t testing.TB, key crypto.Signer, f Format) (string, []byte) {
	t.Helper()
	var (
		blockType = "PRIVATE KEY"
		der       []byte
		err       error
	)
	switch k := key.(type) {
	case *rsa.PrivateKey:
		if f == LegoV4 {
			blockType, der = "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(k)
		}
	case *ecdsa.PrivateKey:
		if f == LegoV4 {
			blockType = "EC PRIVATE KEY"
			der, err = x509.MarshalECPrivateKey(k)
		}
	}
	if der == nil && err == nil {
		der, err = x509.MarshalPKCS8PrivateKey(key)
	}
	require.NoError(t, err)
	return blockType, der
}

// keys caches generated keys by kind: RSA 4096 and 8192 keys take seconds.
var keys = struct {
	sync.Mutex
	m map[string]crypto.Signer
}{m: map[string]crypto.Signer{}}

// Key returns a key of kind (Traefik's spelling: "P256", "P384", "2048",
// "3072", "4096", "8192"; also "P521"), the same one for the same kind in a
// test binary. name tells keys of one kind apart ("" is fine).
func Key(t testing.TB, kind, name string) crypto.Signer {
	t.Helper()
	keys.Lock()
	defer keys.Unlock()
	if k := keys.m[kind+"/"+name]; k != nil {
		return k
	}
	var (
		k   crypto.Signer
		err error
	)
	switch kind {
	case "P256":
		k, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "P384":
		k, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case "P521":
		k, err = ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	default:
		var bits int
		_, err = fmt.Sscanf(kind, "%d", &bits)
		if err == nil {
			k, err = rsa.GenerateKey(rand.Reader, bits)
		}
	}
	require.NoError(t, err, "key %s", kind)
	keys.m[kind+"/"+name] = k
	return k
}

// Certificate returns a PEM chain (leaf, then a throwaway issuer) for names,
// with key's public key, valid from notBefore to notAfter. Names that parse
// as IP addresses become IP SANs.
func Certificate(t testing.TB, key crypto.Signer, notBefore, notAfter time.Time, names ...string) []byte {
	t.Helper()
	issuerKey := Key(t, "P256", "issuer")
	issuer := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "acmejsontest issuer"},
		NotBefore: notBefore.Add(-time.Hour), NotAfter: notAfter.Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	issuerDER, err := x509.CreateCertificate(rand.Reader, issuer, issuer, issuerKey.Public(), issuerKey)
	require.NoError(t, err)
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	require.NoError(t, err)
	leaf := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: names[0]},
		NotBefore: notBefore, NotAfter: notAfter,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			leaf.IPAddresses = append(leaf.IPAddresses, ip)
		} else {
			leaf.DNSNames = append(leaf.DNSNames, n)
		}
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leaf, issuer, key.Public(), issuerKey)
	require.NoError(t, err)
	return append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leafDER}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: issuerDER})...)
}
