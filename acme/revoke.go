package acme

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"

	legoacme "github.com/go-acme/lego/v4/acme"
	"github.com/go-acme/lego/v4/certcrypto"
)

// RevocationReason is an RFC 5280 §5.3.1 CRLReason code, sent with a revocation request
// (RFC 8555 §7.6). Only the codes a subscriber may give are named here; CAs refuse the
// others (certificateHold, removeFromCRL, privilegeWithdrawn, aACompromise, cACompromise
// are the CA's own business) with badRevocationReason.
type RevocationReason int

// The revocation reasons a subscriber gives.
const (
	ReasonUnspecified          RevocationReason = 0
	ReasonKeyCompromise        RevocationReason = 1
	ReasonAffiliationChanged   RevocationReason = 3
	ReasonSuperseded           RevocationReason = 4
	ReasonCessationOfOperation RevocationReason = 5
)

// RevocationReasons lists the reasons ParseRevocationReason accepts, in code order.
var RevocationReasons = []RevocationReason{
	ReasonUnspecified, ReasonKeyCompromise, ReasonAffiliationChanged, ReasonSuperseded, ReasonCessationOfOperation,
}

var reasonNames = map[RevocationReason]string{
	ReasonUnspecified:          "unspecified",
	ReasonKeyCompromise:        "keyCompromise",
	ReasonAffiliationChanged:   "affiliationChanged",
	ReasonSuperseded:           "superseded",
	ReasonCessationOfOperation: "cessationOfOperation",
}

// String is the reason's RFC 5280 name, or "reason(N)" for a code without one here.
func (r RevocationReason) String() string {
	if name, ok := reasonNames[r]; ok {
		return name
	}
	return "reason(" + strconv.Itoa(int(r)) + ")"
}

// ParseRevocationReason accepts a reason's RFC 5280 name (any letter case, such as
// keyCompromise or keycompromise) or its code (1).
func ParseRevocationReason(s string) (RevocationReason, error) {
	if n, err := strconv.Atoi(s); err == nil {
		if _, ok := reasonNames[RevocationReason(n)]; ok {
			return RevocationReason(n), nil
		}
	}
	for _, r := range RevocationReasons {
		if strings.EqualFold(s, r.String()) {
			return r, nil
		}
	}
	names := make([]string, len(RevocationReasons))
	for i, r := range RevocationReasons {
		names[i] = fmt.Sprintf("%s (%d)", r, int(r))
	}
	return 0, fmt.Errorf("unknown revocation reason %q (want one of %s)", s, strings.Join(names, ", "))
}

// alreadyRevoked is the problem type of a revocation request for a certificate the CA has
// revoked before (RFC 8555 §7.6).
const alreadyRevoked = "urn:ietf:params:acme:error:alreadyRevoked"

// Revoke asks the CA to revoke the first certificate in certPEM with reason, signing the
// request with the account (kid; RFC 8555 §7.6): a CA lets an account revoke the
// certificates it obtained. A CA that answers alreadyRevoked has what the caller wants:
// Revoke returns nil, so that a revocation whose outcome was lost (a crash, a store that
// refused the write) is simply asked again. A CA that no longer knows the account gets
// the key registered again, once, as Obtain does.
//
// Errors: *RateLimitError, *UnreachableError (network, 5xx), or the CA's problem (for
// example unauthorized: the certificate is not this account's; badRevocationReason), all
// prefixed with "acme: revoke certificate <serial>".
func (c *Client) Revoke(ctx context.Context, certPEM []byte, reason RevocationReason) error {
	leaf, err := certcrypto.ParsePEMCertificate(certPEM)
	if err != nil {
		return fmt.Errorf("acme: revoke certificate: %w", err)
	}

	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc

		ctx, cancel = context.WithTimeout(ctx, c.orderTimeout)
		defer cancel()
	}

	op := "acme: revoke certificate " + SerialHex(leaf)

	seen := c.registrationCount()

	err = c.revokeOnce(ctx, leaf, reason, op)
	if accountGone(err) {
		if err := c.reregister(ctx, seen, err); err != nil {
			return err
		}

		err = c.revokeOnce(ctx, leaf, reason, op)
	}

	var pd *legoacme.ProblemDetails
	if errors.As(err, &pd) && pd.Type == alreadyRevoked {
		c.log.Info("the CA had revoked the certificate already", "serial", SerialHex(leaf))

		return nil
	}

	if err == nil {
		c.log.Info("certificate revoked", "serial", SerialHex(leaf), "reason", reason.String())
	}

	return err
}

func (c *Client) revokeOnce(ctx context.Context, leaf *x509.Certificate, reason RevocationReason, op string) error {
	s, err := c.newSession(ctx, c.AccountURL())
	if err != nil {
		return err
	}

	code := uint(reason)

	err = s.core.Certificates.Revoke(legoacme.RevokeCertMessage{
		Certificate: base64.RawURLEncoding.EncodeToString(leaf.Raw),
		Reason:      &code,
	})
	if err != nil {
		return classify(op, err)
	}

	return nil
}

// SerialHex is the certificate's serial number in lower-case hex, as CAs and openssl
// show it.
func SerialHex(cert *x509.Certificate) string { return cert.SerialNumber.Text(16) }

// ParseLeaf parses the first certificate of the PEM chain certPEM (the leaf, as the
// engine and the stores keep chains).
func ParseLeaf(certPEM []byte) (*x509.Certificate, error) {
	leaf, err := certcrypto.ParsePEMCertificate(certPEM)
	if err != nil {
		return nil, fmt.Errorf("acme: parse certificate: %w", err)
	}

	return leaf, nil
}

// Fingerprint is the lower-case hex SHA-256 of the DER of the first certificate in
// certPEM: what identifies one certificate (a renewal has another one, even for the same
// key and names).
func Fingerprint(certPEM []byte) (string, error) {
	leaf, err := certcrypto.ParsePEMCertificate(certPEM)
	if err != nil {
		return "", fmt.Errorf("acme: certificate fingerprint: %w", err)
	}

	sum := sha256.Sum256(leaf.Raw)

	return hex.EncodeToString(sum[:]), nil
}

// PublicKeyFingerprint is the lower-case hex SHA-256 of the DER SubjectPublicKeyInfo of
// the first certificate in certPEM: what identifies its key, whichever certificate
// carries it.
func PublicKeyFingerprint(certPEM []byte) (string, error) {
	leaf, err := certcrypto.ParsePEMCertificate(certPEM)
	if err != nil {
		return "", fmt.Errorf("acme: public key fingerprint: %w", err)
	}

	sum := sha256.Sum256(leaf.RawSubjectPublicKeyInfo)

	return hex.EncodeToString(sum[:]), nil
}
