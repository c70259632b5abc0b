// Package acmejson reads Traefik's acme.json, the storage of its
// certificatesResolvers, into what certfetch can take over: per resolver, the
// ACME account (key and URL) and the certificates, each checked against its
// key and its domains. It knows nothing of certfetch's configuration or
// store; the importer in package fetcher maps the resolvers and applies the
// result.
//
// The format (Traefik's pkg/provider/acme local_store.go, account.go,
// store.go; the same JSON in Traefik v2.11 and v3):
//
//	{"<resolver>": {
//	  "Account": {"Email", "Registration": {"body": {...}, "uri"}, "PrivateKey", "KeyType"},
//	  "Certificates": [{"domain": {"main", "sans"}, "certificate", "key", "Store"}]}}
//
// PrivateKey is base64 of the account key's DER; certificate and key are
// base64 of PEM (the certificate is the full chain). Two eras exist:
//   - lego v4 (Traefik up to v3.6.21, v3.7.5, v2.11.52): KeyType holds the
//     resolver's certificate key type (P256, P384, 2048, 3072, 4096, 8192),
//     keys are PKCS #1 "RSA PRIVATE KEY" or SEC 1 "EC PRIVATE KEY", the
//     account key PKCS #1 DER;
//   - lego v5 (from v3.6.22, v3.7.6, v2.11.53): no KeyType, PKCS #8
//     "PRIVATE KEY" keys, the account key possibly PKCS #8 DER.
//
// Both are read; every key is accepted as PKCS #1, SEC 1 or PKCS #8.
package acmejson

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/certfetch/certfetch/acme"
)

// Format is the era of a resolver's entry in acme.json.
type Format string

const (
	// FormatLegoV4: KeyType present; PKCS #1 / SEC 1 keys.
	FormatLegoV4 Format = "lego v4"
	// FormatLegoV5: no KeyType; PKCS #8 keys.
	FormatLegoV5 Format = "lego v5"
)

// File is a parsed and checked acme.json.
type File struct {
	// Resolvers in name order.
	Resolvers []*Resolver
}

// Resolver is one certificatesResolvers entry of Traefik.
type Resolver struct {
	// Name is Traefik's resolver name (the key in acme.json).
	Name string
	// Format is the era the entry was written in; empty without an account.
	Format Format
	// Account is nil when the resolver has none (then it has no certificates
	// either: Parse refuses certificates without an account).
	Account *Account
	// Certificates are every entry in file order, skipped ones included.
	Certificates []*Certificate
}

// Account is a resolver's ACME account.
type Account struct {
	Email string
	// URL is the account's URL at the CA (Registration.uri): acme.json does
	// not record the CA's directory, this URL names the CA's host.
	URL string
	// KeyPEM is the account key as PEM (PKCS #1 or SEC 1, acme.MarshalKey),
	// whatever DER acme.json held. A secret: never print it.
	KeyPEM []byte
	// KeyType is the account key's type (Traefik: RSA4096).
	KeyType acme.KeyType
}

// Certificate is one entry of a resolver's Certificates.
type Certificate struct {
	// Index is the entry's position in the resolver's Certificates array.
	Index int
	// Domains are domain.main then domain.sans, lower case, without repeats.
	Domains []string
	// Store is Traefik's TLS store for the certificate ("default").
	Store string
	// CertPEM (leaf first) and KeyPEM are the entry's decoded PEM; KeyPEM is
	// a secret. Both empty for an entry skipped as empty.
	CertPEM []byte
	KeyPEM  []byte
	// KeyType is the certificate key's type; empty when skipped for it.
	KeyType acme.KeyType
	// Serial (hex) and validity of the leaf; zero for an empty entry.
	Serial    string
	NotBefore time.Time
	NotAfter  time.Time
	// Skip says why the entry is not imported (SkipEmpty, SkipExpired,
	// SkipKeyType, with details); empty when it is importable.
	Skip string
}

// Reasons an entry is skipped: left to certfetch's normal issuance, the
// import goes on with the other entries.
const (
	// SkipEmpty: Traefik skips (and later deletes) such entries too.
	SkipEmpty = "empty certificate or key (Traefik skips such entries too)"
	// SkipExpired is followed by the date.
	SkipExpired = "expired"
	// SkipKeyType: RSA 8192, which Traefik issues and certfetch does not.
	SkipKeyType = "RSA 8192 key: not a key type certfetch issues (EC256, EC384, RSA2048, RSA3072, RSA4096)"
)

// rsa8192 is the one RSA size Traefik issues that certfetch does not.
const rsa8192 = 8192

// traefikKeyTypes are the values Traefik's lego v4 writes in Account.KeyType
// (lego's certcrypto names; Traefik never writes another).
var traefikKeyTypes = []string{"P256", "P384", "2048", "3072", "4096", "8192"}

// The JSON shapes Traefik writes. Base64 fields are strings, decoded here, so
// that an error names the field (encoding/json reports bad base64 without a
// location).
type storedData struct {
	Account      *account
	Certificates []*certAndStore
}

type account struct {
	Email        string
	Registration *struct {
		URI string `json:"uri"`
	}
	PrivateKey string
	KeyType    string
}

type certAndStore struct {
	Domain struct {
		Main string   `json:"main"`
		SANs []string `json:"sans"`
	} `json:"domain"`
	Certificate string `json:"certificate"`
	Key         string `json:"key"`
	Store       string
}

// Parse reads an acme.json document; now decides which certificates are
// expired. It imports nothing: a file with any problem (not JSON, truncated,
// an account or an entry that does not check out) is refused as a whole, with
// one *Error per problem (errors.Join: one line each, resolvers in name order,
// entries in file order) naming every resolver and entry at fault, so that
// one run shows them all. Entries that are merely not importable (Skip) are
// not problems.
func Parse(data []byte, now time.Time) (*File, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, &Error{Index: AccountIndex, Problem: "the file is empty: Traefik has stored nothing in it"}
	}
	var raw map[string]*storedData
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, syntaxError(data, err)
	}
	var (
		f    File
		errs []error
	)
	for _, name := range slices.Sorted(maps.Keys(raw)) {
		r, rerrs := parseResolver(name, raw[name], now)
		errs = append(errs, rerrs...)
		f.Resolvers = append(f.Resolvers, r)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return &f, nil
}

func parseResolver(name string, sd *storedData, now time.Time) (*Resolver, []error) {
	r := &Resolver{Name: name}
	if sd == nil {
		return r, nil
	}
	var errs []error
	fail := func(index int, domain, format string, args ...any) {
		errs = append(errs, &Error{Resolver: name, Index: index, Domain: domain, Problem: fmt.Sprintf(format, args...)})
	}
	if sd.Account != nil {
		acct, format, err := parseAccount(sd.Account)
		if err != nil {
			fail(AccountIndex, "", "%v", err)
		}
		r.Account, r.Format = acct, format
	} else if len(sd.Certificates) > 0 {
		fail(AccountIndex, "", "no account, but %d certificates: they cannot be renewed with the account that "+
			"ordered them (the file is damaged, or was edited)", len(sd.Certificates))
	}
	for i, cs := range sd.Certificates {
		c, err := parseCertificate(i, cs, now)
		if err != nil {
			fail(i, mainOf(cs), "%v", err)
			continue
		}
		r.Certificates = append(r.Certificates, c)
	}
	return r, errs
}

func mainOf(cs *certAndStore) string {
	if cs == nil {
		return ""
	}
	return cs.Domain.Main
}

func parseAccount(a *account) (*Account, Format, error) {
	format := FormatLegoV5
	if a.KeyType != "" {
		if !slices.Contains(traefikKeyTypes, a.KeyType) {
			return nil, "", fmt.Errorf("KeyType %q: unknown key type (Traefik writes %s)", a.KeyType, strings.Join(traefikKeyTypes, ", "))
		}
		format = FormatLegoV4
	}
	if a.Registration == nil || a.Registration.URI == "" {
		return nil, "", errors.New("no Registration.uri: the account was never registered at the CA")
	}
	if u, err := url.Parse(a.Registration.URI); err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, "", fmt.Errorf("Registration.uri %q is not an https URL", a.Registration.URI)
	}
	der, err := base64.StdEncoding.DecodeString(a.PrivateKey)
	if err != nil {
		return nil, "", fmt.Errorf("PrivateKey: not base64: %w", err)
	}
	key, err := parseDERKey(der)
	if err != nil {
		return nil, "", fmt.Errorf("PrivateKey: %w", err)
	}
	keyPEM := acme.MarshalKey(key)
	kt, err := acme.KeyTypeOf(keyPEM)
	if err != nil {
		return nil, "", fmt.Errorf("PrivateKey: %w", err)
	}
	return &Account{Email: a.Email, URL: a.Registration.URI, KeyPEM: keyPEM, KeyType: kt}, format, nil
}

// parseDERKey parses an account key in any DER Traefik has written: PKCS #1
// (lego v4), PKCS #8 (lego v5), or SEC 1 (an EC key). Only RSA and ECDSA keys
// sign ACME requests here.
func parseDERKey(der []byte) (crypto.Signer, error) {
	if k, err := x509.ParsePKCS1PrivateKey(der); err == nil {
		return k, nil
	}
	if k, err := x509.ParseECPrivateKey(der); err == nil {
		return k, nil
	}
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, errors.New("not a PKCS #1, SEC 1 or PKCS #8 DER private key")
	}
	switch k := k.(type) {
	case *rsa.PrivateKey:
		return k, nil
	case *ecdsa.PrivateKey:
		return k, nil
	}
	return nil, fmt.Errorf("unknown key type %T (want RSA or ECDSA)", k)
}

func parseCertificate(i int, cs *certAndStore, now time.Time) (*Certificate, error) {
	if cs == nil {
		return nil, errors.New("null entry")
	}
	domains := names(append([]string{cs.Domain.Main}, cs.Domain.SANs...))
	if cs.Domain.Main == "" || slices.Contains(domains, "") {
		return nil, errors.New("domain.main or a domain.sans entry is empty")
	}
	c := &Certificate{Index: i, Domains: domains, Store: cs.Store}
	certPEM, err := base64.StdEncoding.DecodeString(cs.Certificate)
	if err != nil {
		return nil, fmt.Errorf("certificate: not base64: %w", err)
	}
	keyPEM, err := base64.StdEncoding.DecodeString(cs.Key)
	if err != nil {
		return nil, fmt.Errorf("key: not base64: %w", err)
	}
	if len(certPEM) == 0 || len(keyPEM) == 0 {
		c.Skip = SkipEmpty
		return c, nil
	}
	c.CertPEM, c.KeyPEM = certPEM, keyPEM
	key, err := acme.ParseKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("key: %w", err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("certificate and key: %w", err)
	}
	leaf := pair.Leaf
	if covered := names(append(slices.Clone(leaf.DNSNames), ipStrings(leaf)...)); !sameSet(covered, domains) {
		return nil, fmt.Errorf("the certificate (serial %s) covers %s, the entry names %s",
			acme.SerialHex(leaf), strings.Join(covered, ", "), strings.Join(domains, ", "))
	}
	c.Serial, c.NotBefore, c.NotAfter = acme.SerialHex(leaf), leaf.NotBefore, leaf.NotAfter
	kt, err := acme.KeyTypeOf(keyPEM)
	switch {
	case err == nil:
		c.KeyType = kt
	case isRSA(key, rsa8192):
		c.Skip = SkipKeyType
	default:
		return nil, fmt.Errorf("key: %w", err)
	}
	if c.Skip == "" && !now.Before(leaf.NotAfter) {
		c.Skip = SkipExpired + " on " + leaf.NotAfter.UTC().Format(time.RFC3339)
	}
	return c, nil
}

func isRSA(key crypto.Signer, bits int) bool {
	k, ok := key.Public().(*rsa.PublicKey)
	return ok && k.N.BitLen() == bits
}

func ipStrings(leaf *x509.Certificate) []string {
	out := make([]string, len(leaf.IPAddresses))
	for i, ip := range leaf.IPAddresses {
		out[i] = ip.String()
	}
	return out
}

// names lower-cases and trims ns and drops repeats, keeping the first
// occurrence's position (main first).
func names(ns []string) []string {
	out := make([]string, 0, len(ns))
	for _, n := range ns {
		if n = strings.ToLower(strings.TrimSpace(n)); !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out
}

// sameSet reports whether a and b hold the same names, in any order.
func sameSet(a, b []string) bool {
	return slices.Equal(slices.Sorted(slices.Values(a)), slices.Sorted(slices.Values(b)))
}
