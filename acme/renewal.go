package acme

import (
	"errors"
	"math/rand/v2"
	"time"
)

// ErrNoRenewalInfo is returned (wrapped) by RenewalInfo when the CA offers no ACME Renewal
// Information (its directory has no renewalInfo URL).
var ErrNoRenewalInfo = errors.New("acme: the CA offers no renewal information")

// RenewalWindow is the CA's suggested renewal window for a certificate (ARI, RFC 9773 §4.2).
type RenewalWindow struct {
	// Start and End bound the window.
	Start, End time.Time
	// RetryAfter is when the CA wants to be asked again; zero when it did not say.
	RetryAfter time.Duration
	// ExplanationURL, when set, is the CA's page explaining the window (say, a
	// mis-issuance that makes it replace certificates early).
	ExplanationURL string
}

// RenewAt returns a uniformly random time in the window, as RFC 9773 §4.2 asks (so that
// the CA's clients spread their renewals), or now when the window has already begun: the
// CA wants the certificate replaced.
func (w *RenewalWindow) RenewAt(now time.Time) time.Time {
	if !now.Before(w.Start) {
		return now
	}

	span := w.End.Sub(w.Start)
	if span <= 0 {
		return w.Start
	}

	return w.Start.Add(time.Duration(rand.Int64N(int64(span))))
}
