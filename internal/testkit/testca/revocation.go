package testca

import (
	"math/big"
	"net/http"
	"time"
)

// RevocationStatus is what the CA recorded when it revoked a certificate.
type RevocationStatus struct {
	// Reason is the RFC 5280 reason code the revocation request gave; -1 when it gave
	// none.
	Reason int
	// RevokedAt is when the CA revoked it.
	RevokedAt time.Time
}

// Revoked reports whether the CA revoked the certificate with serial number serial, and
// how, reading Pebble's own database: the CA's view, not the client's (Pebble has no
// OCSP responder or CRL to ask).
func (c *CA) Revoked(serial *big.Int) (RevocationStatus, bool) {
	rc := c.db.GetRevokedCertificateBySerial(serial)
	if rc == nil {
		return RevocationStatus{}, false
	}
	st := RevocationStatus{Reason: -1, RevokedAt: rc.RevokedAt}
	if rc.Reason != nil {
		st.Reason = int(*rc.Reason)
	}
	return st, true
}

// RefuseRevocations makes the CA answer every revocation request with HTTP 403 and
// problem urn:ietf:params:acme:error:unauthorized (a CA whose policy does not let the
// account revoke), from the next request on; off, Pebble revokes again.
func (c *CA) RefuseRevocations(on bool) { c.slow.faults.refuseRevoc.Store(on) }

// revoke passes a revocation request to Pebble unless RefuseRevocations is on.
func (h *slowHandler) revoke(w http.ResponseWriter, r *http.Request) {
	if h.faults.refuseRevoc.Load() {
		h.writeProblem(w, r, http.StatusForbidden, problemUnauthorized,
			"the test CA refuses revocations (RefuseRevocations)", 0)
		return
	}
	h.pebble.ServeHTTP(w, r)
}
