package acme

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/go-acme/lego/v4/certcrypto"
)

// KeyType names the algorithm and size of a certificate (or account) private key.
type KeyType string

// The key types certfetch issues for. EC256 is the default: small, fast, and accepted by
// every public and private ACME CA we know of.
const (
	EC256   KeyType = "EC256"
	EC384   KeyType = "EC384"
	RSA2048 KeyType = "RSA2048"
	RSA3072 KeyType = "RSA3072"
	RSA4096 KeyType = "RSA4096"
)

// legoKeyTypes maps our configuration names to lego's key types.
var legoKeyTypes = map[KeyType]certcrypto.KeyType{
	EC256:   certcrypto.EC256,
	EC384:   certcrypto.EC384,
	RSA2048: certcrypto.RSA2048,
	RSA3072: certcrypto.RSA3072,
	RSA4096: certcrypto.RSA4096,
}

// errUnknownKeyType is returned (wrapped) for a KeyType outside the constants above.
var errUnknownKeyType = errors.New("unknown key type (want EC256, EC384, RSA2048, RSA3072 or RSA4096)")

func (k KeyType) lego() (certcrypto.KeyType, error) {
	if k == "" {
		return certcrypto.EC256, nil
	}

	kt, ok := legoKeyTypes[k]
	if !ok {
		return "", fmt.Errorf("%q: %w", k, errUnknownKeyType)
	}

	return kt, nil
}

// Request describes one certificate to obtain.
type Request struct {
	// Names are the DNS names (or IP addresses) of the certificate. The first one becomes
	// the common name when it fits (64 bytes). Case and order do not matter.
	Names []string `json:"names"`
	// KeyType of the certificate's private key; empty means EC256.
	KeyType KeyType `json:"keyType,omitempty"`
	// Profile is the ACME profile (draft-ietf-acme-profiles) to ask for; empty lets the CA choose.
	Profile string `json:"profile,omitempty"`
	// PreferredChain is the common name of the root the chain should end at; when no
	// alternate chain matches, the CA's default chain is used.
	PreferredChain string `json:"preferredChain,omitempty"`
	// Replaces is the ARI certificate ID (see ARICertID) of the certificate this order renews.
	Replaces string `json:"replaces,omitempty"`
}

// normalizeNames lower-cases and trims names and drops repeats, keeping the first
// occurrence's position (the first name becomes the common name).
func normalizeNames(names []string) []string {
	out := make([]string, 0, len(names))
	for _, n := range names {
		n = strings.ToLower(strings.TrimSpace(n))
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}

	return out
}

// canonicalNames returns the names normalized and sorted: the same set of names in any
// order or case gives the same result.
func canonicalNames(names []string) []string {
	return slices.Sorted(slices.Values(normalizeNames(names)))
}

// Key identifies "the same request" for the Journal: two requests with the same names (in
// any order or case), key type and profile share a key, so at most one order is live for
// them. PreferredChain and Replaces are left out on purpose: they do not change what the CA
// issues for the order, only which chain is downloaded or which certificate is marked
// replaced, so a renewal may resume an order started without them. The key is 32 lower-case
// hex characters, safe as a file name.
func (r Request) Key() string {
	kt := r.KeyType
	if kt == "" {
		kt = EC256
	}

	sum := sha256.Sum256([]byte(strings.Join(canonicalNames(r.Names), ",") + "\n" + string(kt) + "\n" + r.Profile))

	return hex.EncodeToString(sum[:16])
}

func (r Request) validate() error {
	if len(r.Names) == 0 {
		return errors.New("no names")
	}

	if slices.Contains(canonicalNames(r.Names), "") {
		return errors.New("empty name")
	}

	_, err := r.KeyType.lego()

	return err
}
