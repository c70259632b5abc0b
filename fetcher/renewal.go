package fetcher

import (
	"context"
	"math/rand/v2"
	"time"

	"github.com/certfetch/certfetch/acme"
)

// renewalWindow is the CA's suggested renewal window (ARI, RFC 9773 §4.2).
type renewalWindow struct {
	start, end time.Time
	// retryAfter is when the CA wants to be asked again; 0 when it did not say.
	retryAfter time.Duration
}

func fetchRenewalWindow(ctx context.Context, client *acme.Client, certPEM []byte) (*renewalWindow, error) {
	info, err := client.RenewalInfo(ctx, certPEM)
	if err != nil {
		return nil, err
	}
	return &renewalWindow{start: info.Start, end: info.End, retryAfter: info.RetryAfter}, nil
}

// pick returns a uniformly random time in the window, as RFC 9773 §4.2
// asks (so that the CA's clients spread their renewals), or now when the
// window has already begun: the CA wants the certificate replaced.
func (w *renewalWindow) pick(now time.Time) time.Time {
	if !now.Before(w.start) {
		return now
	}
	span := w.end.Sub(w.start)
	if span <= 0 {
		return w.start
	}
	return w.start.Add(time.Duration(rand.Int64N(int64(span))))
}
