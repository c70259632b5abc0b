package fetcher

import (
	"errors"
	"math/rand/v2"
	"time"

	"github.com/certfetch/certfetch/acme"
	"github.com/certfetch/certfetch/acme/dns01"
	"github.com/certfetch/certfetch/fetcher/store"
)

// The daemon's timing policy. Each function is pure (but for the jitter) so that the
// schedule can be read, and tested, in one place.
const (
	// Failed attempts back off exponentially from backoffBase to backoffMax (1, 2, 4 ...
	// 60 minutes) with ±25 % jitter, so that many certificates failing together (CA down)
	// do not come back in lockstep. An hour at most keeps a certificate whose CA was down
	// for a day from waiting most of another hour once it is back.
	backoffBase = time.Minute
	backoffMax  = time.Hour

	// pendingRetryMin and pendingRetryMax bound how soon an order that outlived its
	// deadline is resumed: the CA's Retry-After within these bounds, pendingRetryMin when
	// it sent none (the order is alive; the CA just needs more time).
	pendingRetryMin = time.Second
	pendingRetryMax = 5 * time.Minute

	// freeResumes and pendingBackoffBase shape the waits after repeated deadlines; see
	// pendingWait.
	freeResumes        = 2
	pendingBackoffBase = 15 * time.Second

	// ariRecheck is how often the daemon asks the CA's renewal information again when the
	// CA sends no Retry-After (RFC 9773 §4.3 suggests a few times a day).
	ariRecheck = 6 * time.Hour

	// leaseMargin is added to a held lease's expiry before trying to take it over: the
	// holder's clock and ours may differ by a little, and a retry a few milliseconds
	// early would find the lease still held and wait a whole TTL more.
	leaseMargin = 100 * time.Millisecond
)

// backoff returns the wait after the n-th consecutive failure (n >= 1).
func backoff(n int) time.Duration {
	d := backoffMax
	if n < 7 { // 2^6 minutes is past backoffMax
		d = min(backoffBase<<(n-1), backoffMax)
	}

	return jitter(d)
}

// jitter spreads d by ±25 %.
func jitter(d time.Duration) time.Duration {
	return time.Duration(float64(d) * (0.75 + rand.Float64()/2))
}

// pendingWait returns how long to wait before resuming an order whose attempt ended at
// its deadline for the n-th time in a row (n >= 1), given the CA's Retry-After (zero:
// none). The first freeResumes resumes follow the CA: a slow CA that needs a little more
// than the deadline (42 s against 30 s, the reported case) finishes in the second
// attempt, or the third when a poll just missed it. After that the CA needs far more
// than the deadline, or has stalled: the wait grows from pendingBackoffBase, doubling up
// to pendingRetryMax (with the failures' jitter), never shorter than Retry-After, so that
// an order the CA never finishes is not polled by a new attempt every deadline forever.
func pendingWait(n int, retryAfter time.Duration) time.Duration {
	wait := min(max(retryAfter, pendingRetryMin), pendingRetryMax)
	if n > freeResumes {
		grown := pendingRetryMax
		if k := n - freeResumes - 1; k < 5 { // 15 s << 5 is past pendingRetryMax
			grown = min(pendingBackoffBase<<k, pendingRetryMax)
		}
		wait = max(wait, jitter(grown))
	}
	return wait
}

// renewAt is when a certificate valid from notBefore to notAfter is due for renewal
// without the CA's renewal information: when fraction of its lifetime is left.
func renewAt(notBefore, notAfter time.Time, fraction float64) time.Time {
	lifetime := notAfter.Sub(notBefore)

	return notAfter.Add(-time.Duration(float64(lifetime) * fraction))
}

// leaseRetry is when to try again for a certificate whose lease another instance holds:
// right after the lease expires if the store said when (a dead holder's certificate is
// taken over within the TTL), else one TTL from now.
func leaseRetry(held *store.LeaseHeldError, now time.Time, ttl time.Duration) time.Time {
	if held == nil || held.Expires.IsZero() {
		return now.Add(ttl)
	}

	return held.Expires.Add(leaseMargin)
}

// Failure reasons, the reason label of certfetch_failures_total and the `status` column.
const (
	reasonDeadline       = "deadline"        // the order outlived the attempt; it is resumed
	reasonRateLimited    = "rate_limited"    // the CA answered 429
	reasonUnreachable    = "unreachable"     // network, TLS, timeout or 5xx
	reasonAuthorization  = "authorization"   // the CA could not validate a name
	reasonDNS            = "dns"             // the DNS provider failed, or its record never became visible
	reasonOrderInvalid   = "order_invalid"   // the CA made the order invalid
	reasonBadCertificate = "bad_certificate" // the CA issued a certificate that does not match
	reasonAccount        = "account"         // the account is unusable or its key is missing
	reasonStore          = "store"           // the state store refused a read or a write
	reasonPublish        = "publish"         // an output refused the certificate
	reasonOther          = "other"
)

// reasons are every failure reason, for metrics that start at zero.
var reasons = []string{reasonDeadline, reasonRateLimited, reasonUnreachable, reasonAuthorization, reasonDNS, reasonOrderInvalid,
	reasonBadCertificate, reasonAccount, reasonStore, reasonPublish, reasonOther}

// phases are the order phases the engine reports.
var phases = []string{acme.PhaseNewOrder, acme.PhaseAuthorization, acme.PhaseFinalize, acme.PhaseDownload}

// storeError marks a failure of the state store, publishError one of an output, so
// that failureReason tells them from the CA's failures.
type storeError struct{ err error }

func (e *storeError) Error() string { return e.err.Error() }
func (e *storeError) Unwrap() error { return e.err }

type publishError struct{ err error }

func (e *publishError) Error() string { return e.err.Error() }
func (e *publishError) Unwrap() error { return e.err }

// failureReason names err for metrics and status: one of the reason* words.
func failureReason(err error) string {
	var (
		pending  *acme.OrderPendingError
		limited  *acme.RateLimitError
		down     *acme.UnreachableError
		authz    *acme.AuthorizationError
		invalid  *acme.OrderInvalidError
		mismatch *acme.CertificateMismatchError
		account  *acme.AccountError
		missing  *accountKeyMissingError
		stored   *storeError
		publish  *publishError
		provider *dns01.ProviderError
		unseen   *dns01.PropagationError
	)

	switch {
	case errors.As(err, &pending):
		return reasonDeadline
	case errors.As(err, &provider), errors.As(err, &unseen):
		return reasonDNS
	case errors.As(err, &limited):
		return reasonRateLimited
	case errors.As(err, &down):
		return reasonUnreachable
	case errors.As(err, &authz):
		return reasonAuthorization
	case errors.As(err, &invalid):
		return reasonOrderInvalid
	case errors.As(err, &mismatch):
		return reasonBadCertificate
	case errors.As(err, &account), errors.As(err, &missing):
		return reasonAccount
	case errors.As(err, &stored):
		return reasonStore
	case errors.As(err, &publish):
		return reasonPublish
	default:
		return reasonOther
	}
}

// retryAfter is the wait the CA asked for in err, if any.
func retryAfter(err error) time.Duration {
	var (
		pending *acme.OrderPendingError
		limited *acme.RateLimitError
		down    *acme.UnreachableError
	)

	switch {
	case errors.As(err, &pending):
		return pending.RetryAfter
	case errors.As(err, &limited):
		return limited.RetryAfter
	case errors.As(err, &down):
		return down.RetryAfter
	}

	return 0
}
