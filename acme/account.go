package acme

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"fmt"

	"github.com/go-acme/lego/v4/certcrypto"
	jose "github.com/go-jose/go-jose/v4"
)

// Account is the ACME account a Client acts for.
type Account struct {
	// Key signs every request; required. GenerateKey makes one, MarshalKey and ParseKey
	// persist it: the caller stores it, the engine never writes or logs it.
	Key crypto.Signer
	// Contact URLs, e.g. "mailto:admin@example.com"; optional.
	Contact []string
	// EAB is the External Account Binding a CA may require for new accounts.
	EAB *EAB
	// URL of an existing registration for Key. Empty: NewClient registers, and a CA that
	// already knows the key returns its existing account (RFC 8555 §7.3.1).
	URL string
}

// EAB is an External Account Binding (RFC 8555 §7.3.4).
type EAB struct {
	KID string
	// HMAC is the MAC key, base64url with or without padding. It is a secret: String
	// redacts it.
	HMAC string
}

// String implements fmt.Stringer without the HMAC key.
func (e EAB) String() string {
	return fmt.Sprintf("EAB{KID: %q, HMAC: <redacted>}", e.KID)
}

// GenerateKey returns a new private key of type kt (empty: EC256), for an account or a
// certificate.
func GenerateKey(kt KeyType) (crypto.Signer, error) {
	lkt, err := kt.lego()
	if err != nil {
		return nil, fmt.Errorf("acme: generate key: %w", err)
	}

	key, err := certcrypto.GeneratePrivateKey(lkt)
	if err != nil {
		return nil, fmt.Errorf("acme: generate %s key: %w", kt, err)
	}

	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("acme: generate %s key: %T is not a crypto.Signer", kt, key)
	}

	return signer, nil
}

// MarshalKey returns key as PEM (SEC 1 "EC PRIVATE KEY" or PKCS #1 "RSA PRIVATE KEY").
func MarshalKey(key crypto.Signer) []byte {
	return certcrypto.PEMEncode(key)
}

// ParseKey parses a PEM private key (PKCS #1, PKCS #8 or SEC 1).
func ParseKey(pemBytes []byte) (crypto.Signer, error) {
	key, err := certcrypto.ParsePEMPrivateKey(pemBytes)
	if err != nil {
		return nil, fmt.Errorf("acme: parse private key: %w", err)
	}

	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("acme: parse private key: %T is not a crypto.Signer", key)
	}

	return signer, nil
}

// Thumbprint returns base64url(SHA-256 JWK thumbprint, RFC 7638) of key's public key: the
// part after the dot of every HTTP-01 key authorization, and the plugin's thumbprint
// setting. It needs no CA, so it can be printed before the first order.
func Thumbprint(key crypto.Signer) (string, error) {
	sum, err := (&jose.JSONWebKey{Key: key.Public()}).Thumbprint(crypto.SHA256)
	if err != nil {
		return "", fmt.Errorf("acme: account key thumbprint: %w", err)
	}

	return base64.RawURLEncoding.EncodeToString(sum), nil
}

// KeyTypeOf returns the KeyType of the PEM private key keyPEM.
func KeyTypeOf(keyPEM []byte) (KeyType, error) {
	key, err := ParseKey(keyPEM)
	if err != nil {
		return "", err
	}

	switch k := key.Public().(type) {
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return EC256, nil
		case elliptic.P384():
			return EC384, nil
		}
	case *rsa.PublicKey:
		switch k.N.BitLen() {
		case 2048:
			return RSA2048, nil
		case 3072:
			return RSA3072, nil
		case 4096:
			return RSA4096, nil
		}
	}

	return "", fmt.Errorf("acme: key type of %T: %w", key.Public(), errUnknownKeyType)
}
