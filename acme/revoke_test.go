package acme_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/certfetch/certfetch/acme"
	"github.com/certfetch/certfetch/internal/testkit/testca"
)

func TestParseRevocationReason(t *testing.T) {
	t.Parallel()
	tests := []struct {
		desc, in string
		want     acme.RevocationReason
		wantErr  string
	}{
		{desc: "RFC 5280 name", in: "keyCompromise", want: acme.ReasonKeyCompromise},
		{desc: "any letter case", in: "CESSATIONOFOPERATION", want: acme.ReasonCessationOfOperation},
		{desc: "code", in: "4", want: acme.ReasonSuperseded},
		{desc: "unspecified is a reason too", in: "unspecified", want: acme.ReasonUnspecified},
		{desc: "code 2 (cACompromise) is the CA's", in: "2", wantErr: `unknown revocation reason "2"`},
		{desc: "code 7 is unused", in: "7", wantErr: "unknown revocation reason"},
		{desc: "a name outside the list", in: "certificateHold", wantErr: "want one of unspecified (0), keyCompromise (1), affiliationChanged (3), superseded (4), cessationOfOperation (5)"},
		{desc: "empty", in: "", wantErr: "unknown revocation reason"},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			got, err := acme.ParseRevocationReason(tc.in)
			if tc.wantErr != "" {
				require.ErrorContains(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
			assert.Equal(t, got, mustParse(t, got.String()), "String and Parse round-trip")
		})
	}
}

func mustParse(t *testing.T, s string) acme.RevocationReason {
	t.Helper()
	r, err := acme.ParseRevocationReason(s)
	require.NoError(t, err)
	return r
}

// TestRevoke revokes a certificate the account obtained: the CA records the reason; a
// second revocation is answered alreadyRevoked, which is success; a CA that refuses
// reports its problem.
func TestRevoke(t *testing.T) {
	t.Parallel()
	tests := []struct {
		desc    string
		reason  acme.RevocationReason
		refuse  bool
		again   bool // revoke twice
		wantErr string
	}{
		{desc: "keyCompromise", reason: acme.ReasonKeyCompromise},
		{desc: "superseded, twice: alreadyRevoked is success", reason: acme.ReasonSuperseded, again: true},
		{desc: "refused by the CA", reason: acme.ReasonUnspecified, refuse: true,
			wantErr: "acme: revoke certificate"},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			s := newSetup(t, testca.Options{})
			c := s.client(t, s.config(t))
			cert, _, err := obtain(t, c, acme.Request{Names: []string{"revoke.example.test"}}, time.Minute)
			require.NoError(t, err)

			s.ca.RefuseRevocations(tc.refuse)
			err = c.Revoke(t.Context(), cert.ChainPEM, tc.reason)
			status, revoked := s.ca.Revoked(cert.Leaf.SerialNumber)
			if tc.wantErr != "" {
				require.ErrorContains(t, err, tc.wantErr)
				assert.ErrorContains(t, err, "urn:ietf:params:acme:error:unauthorized", "the CA's problem")
				assert.False(t, revoked)
				return
			}
			require.NoError(t, err)
			require.True(t, revoked, "the CA revoked serial %s", acme.SerialHex(cert.Leaf))
			assert.Equal(t, int(tc.reason), status.Reason)
			if tc.again {
				require.NoError(t, c.Revoke(t.Context(), cert.ChainPEM, tc.reason))
				assert.Equal(t, 2, s.ca.Stats().Revocations, "asked the CA twice")
			}
		})
	}
}

func TestFingerprints(t *testing.T) {
	t.Parallel()
	s := newSetup(t, testca.Options{})
	c := s.client(t, s.config(t))
	req := acme.Request{Names: []string{"fp.example.test"}}
	first, _, err := obtain(t, c, req, time.Minute)
	require.NoError(t, err)
	second, _, err := obtain(t, c, req, time.Minute)
	require.NoError(t, err)

	fp1, err := acme.Fingerprint(first.ChainPEM)
	require.NoError(t, err)
	fp2, err := acme.Fingerprint(second.ChainPEM)
	require.NoError(t, err)
	assert.Len(t, fp1, 64)
	assert.NotEqual(t, fp1, fp2, "two certificates")
	k1, err := acme.PublicKeyFingerprint(first.ChainPEM)
	require.NoError(t, err)
	k2, err := acme.PublicKeyFingerprint(second.ChainPEM)
	require.NoError(t, err)
	assert.NotEqual(t, k1, k2, "a new key per order")
	_, err = acme.Fingerprint([]byte("not PEM"))
	assert.ErrorContains(t, err, "acme: certificate fingerprint")
}
