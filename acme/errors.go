package acme

import (
	"context"
	"errors"
	"fmt"
	"time"

	legoacme "github.com/go-acme/lego/v4/acme"
	"github.com/go-acme/lego/v4/acme/api"
)

// OrderPendingError is returned by Obtain when its context ends (the order deadline) while
// the order is still alive at the CA. The order stays in the Journal: the next Obtain for
// the same request resumes it. It unwraps to the context's error, so
// errors.Is(err, context.DeadlineExceeded) holds for a deadline.
type OrderPendingError struct {
	// OrderURL is the order at the CA.
	OrderURL string
	// Status is the last status the CA reported in this attempt ("pending", "ready",
	// "processing", "valid"); empty when the attempt ended before it read the order.
	Status string
	// RetryAfter is the CA's last Retry-After for the order, zero when it sent none: the
	// earliest useful time for the next attempt.
	RetryAfter time.Duration
	// Err is the context's error.
	Err error
}

func (e *OrderPendingError) Error() string {
	status := e.Status
	if status == "" {
		status = "not read in this attempt"
	}

	return fmt.Sprintf("acme: order %s still alive at the CA (status: %s, retry after %s) when the attempt ended, it will be resumed: %v",
		e.OrderURL, status, e.RetryAfter, e.Err)
}

func (e *OrderPendingError) Unwrap() error { return e.Err }

// RateLimitError is returned when the CA answers 429 rateLimited. Nothing is retried:
// the caller should wait RetryAfter (zero when the CA did not say) before the next attempt.
type RateLimitError struct {
	RetryAfter time.Duration
	Problem    *legoacme.ProblemDetails
}

func (e *RateLimitError) Error() string {
	return fmt.Sprintf("acme: rate limited by the CA, retry after %s: %s", e.RetryAfter, e.Problem.Detail)
}

func (e *RateLimitError) Unwrap() error { return e.Problem }

// UnreachableError is returned when the CA could not be reached or did not answer
// usefully: a network or TLS error, a per-request timeout (Timeouts), or a 5xx response.
// Problem is the CA's problem document when a 5xx response carried one.
type UnreachableError struct {
	URL        string
	StatusCode int
	RetryAfter time.Duration
	Problem    *legoacme.ProblemDetails
	Err        error
}

func (e *UnreachableError) Error() string {
	if e.StatusCode != 0 {
		return fmt.Sprintf("acme: CA unavailable: %s answered %d: %v", e.URL, e.StatusCode, e.Err)
	}

	return fmt.Sprintf("acme: CA unreachable at %s: %v", e.URL, e.Err)
}

func (e *UnreachableError) Unwrap() error { return e.Err }

// AuthorizationError is returned when the CA could not validate a name. Problem is what
// the CA saw (the challenge's error, e.g. "404 from http://example.com/.well-known/...").
// Either the CA turned the authorization invalid, or it kept it pending with the failed
// challenge's error (as step-ca does) and validation still failed after the engine asked
// for it again (RFC 8555 §8.2) maxChallengeRetries times; the engine then deactivated the
// authorization. Either way the order is dead and has been dropped from the Journal: the
// next attempt starts a new order. Retrying at once would fail the same way: back off.
type AuthorizationError struct {
	Domain string
	// Status of the authorization: "invalid", "deactivated", "expired" or "revoked", or
	// "pending" when the CA kept it pending with an error.
	Status  string
	Problem *legoacme.ProblemDetails
}

func (e *AuthorizationError) Error() string {
	if e.Problem == nil {
		return fmt.Sprintf("acme: authorization for %s is %s", e.Domain, e.Status)
	}

	return fmt.Sprintf("acme: authorization for %s is %s: %s: %s", e.Domain, e.Status, e.Problem.Type, e.Problem.Detail)
}

func (e *AuthorizationError) Unwrap() error {
	if e.Problem == nil {
		return nil
	}

	return e.Problem
}

// OrderInvalidError is returned when the CA turned the order invalid (e.g. it refused the
// CSR or issuance failed). The order has been dropped from the Journal; the next Obtain
// starts a new one.
type OrderInvalidError struct {
	OrderURL string
	Problem  *legoacme.ProblemDetails
}

func (e *OrderInvalidError) Error() string {
	if e.Problem == nil {
		return fmt.Sprintf("acme: order %s is invalid", e.OrderURL)
	}

	return fmt.Sprintf("acme: order %s is invalid: %v", e.OrderURL, e.Problem)
}

func (e *OrderInvalidError) Unwrap() error {
	if e.Problem == nil {
		return nil
	}

	return e.Problem
}

// CertificateMismatchError is returned when the certificate the CA issued does not match
// the order: its public key is not the key the engine generated for the order, or it does
// not cover every requested name. Such a certificate must never be served. The order has
// been dropped from the Journal; the next attempt starts a new order.
type CertificateMismatchError struct {
	OrderURL       string
	CertificateURL string
	// Reason says what does not match.
	Reason string
}

func (e *CertificateMismatchError) Error() string {
	return fmt.Sprintf("acme: the CA issued a certificate that does not match order %s (%s): %s", e.OrderURL, e.CertificateURL, e.Reason)
}

// AccountError is returned when the account cannot be used: the CA no longer knows it
// (accountDoesNotExist) and registering the account key again failed or did not help.
// The account key itself is kept: a new key would change the thumbprint the plugin
// answers with.
type AccountError struct {
	URL string
	Err error
}

func (e *AccountError) Error() string {
	return fmt.Sprintf("acme: account %s: %v", e.URL, e.Err)
}

func (e *AccountError) Unwrap() error { return e.Err }

// accountDoesNotExist is the problem type of a request signed for an account the CA does
// not know (RFC 8555 §6.7).
const accountDoesNotExist = "urn:ietf:params:acme:error:accountDoesNotExist"

// accountGone reports whether err is the CA's accountDoesNotExist problem.
func accountGone(err error) bool {
	var pd *legoacme.ProblemDetails

	return errors.As(err, &pd) && pd.Type == accountDoesNotExist
}

// classify turns the errors lego returns into the typed errors above, prefixed with op.
// Context errors and UnreachableError (made by the transport, which also turns 5xx
// answers into it) pass through unchanged.
func classify(op string, err error) error {
	var rl *legoacme.RateLimitedError
	if errors.As(err, &rl) {
		// An unparsable Retry-After leaves zero: "the CA did not say".
		d, _ := api.ParseRetryAfter(rl.RetryAfter)

		return fmt.Errorf("%s: %w", op, &RateLimitError{RetryAfter: d, Problem: rl.ProblemDetails})
	}

	return fmt.Errorf("%s: %w", op, err)
}

// isContextErr reports whether err comes from a cancelled or expired context.
func isContextErr(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}
