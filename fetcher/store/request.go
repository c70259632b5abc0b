package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/certfetch/certfetch/acme"
)

// RequestAction is what an operator asks of one certificate outside its schedule.
type RequestAction string

const (
	// RequestRenew: a new certificate now, whatever the schedule (`certfetch renew --force`).
	RequestRenew RequestAction = "renew"
	// RequestRevoke: revoke the certificate in service at the CA, then replace it
	// (`certfetch revoke`).
	RequestRevoke RequestAction = "revoke"
)

// Request is an operator's request about one certificate. `certfetch renew` and
// `revoke` carry it out themselves when they can take the certificate's lease (a shared
// store, or a state directory no daemon holds); otherwise they leave it under
// requests/<name> for the daemon that holds the state directory. Only those commands
// write request records, and only the process that carried a request out deletes it,
// after it recorded the outcome in the certificate's record (Certificate.LastRequest).
type Request struct {
	// ID identifies the request: its outcome carries the same ID.
	ID string `json:"id"`
	// Name is the configured certificate's name.
	Name   string        `json:"name"`
	Action RequestAction `json:"action"`
	// Reason is the revocation reason (RequestRevoke only).
	Reason acme.RevocationReason `json:"reason,omitempty"`
	// Requested is when the command made the request, and By who did (host:pid).
	Requested time.Time `json:"requested"`
	By        string    `json:"by,omitempty"`
	// Target is the fingerprint (acme.Fingerprint) of the certificate in service when
	// the request was made, empty when there was none: the request is carried out once
	// that certificate is no longer in service (renewed meanwhile by anyone counts: no
	// second order). CertificatePEM is that certificate, for RequestRevoke: it is
	// revoked even if it was replaced meanwhile.
	Target         string `json:"target,omitempty"`
	CertificatePEM []byte `json:"certificatePEM,omitempty"`
}

// RequestOutcome is what became of a Request, in the certificate's record.
type RequestOutcome struct {
	ID        string                `json:"id"`
	Action    RequestAction         `json:"action"`
	Reason    acme.RevocationReason `json:"reason,omitempty"`
	Requested time.Time             `json:"requested"`
	// Done is when the request was carried out: the revocation made and the
	// replacement's first attempt ended. A replacement order that outlived its deadline
	// is resumed like any other order; the record's certificate shows when it is in.
	// Zero while the replacement's first attempt runs (it was started: Replaces is set).
	Done time.Time `json:"done,omitzero"`
	// Error is why the request failed: the CA refused the revocation (then nothing
	// else changed), or the replacement's attempt failed (it is retried with back-off).
	Error string `json:"error,omitempty"`
	// Replaces is the fingerprint of the certificate the request replaces, set once
	// the replacement was started: while that certificate is in service, the
	// certificate is due (an order that outlived its deadline is resumed, a failure
	// retried with back-off), whatever its renewal time or the CA's renewal window.
	Replaces string `json:"replaces,omitempty"`
}

// Revocation is a certificate revoked at the CA: it is never published again, by any
// instance, whatever record holds it.
type Revocation struct {
	// SHA256 is the certificate's fingerprint (acme.Fingerprint).
	SHA256 string `json:"sha256"`
	// PublicKeySHA256 is its key's fingerprint (acme.PublicKeyFingerprint): with
	// keyCompromise, no certificate with this key is published again.
	PublicKeySHA256 string                `json:"publicKeySHA256"`
	Serial          string                `json:"serial"`
	Reason          acme.RevocationReason `json:"reason"`
	RevokedAt       time.Time             `json:"revokedAt"`
	// NotAfter is the revoked certificate's expiry: entries are dropped from records
	// once it has passed.
	NotAfter time.Time `json:"notAfter,omitzero"`
	// Name is the certificate's configured name when it was revoked.
	Name string `json:"name,omitempty"`
}

// unfenced returns ctx without its lease: writes that must not depend on holding a
// certificate's lease (a fact the CA already acted on, a request an operator made).
func unfenced(ctx context.Context) context.Context {
	return context.WithValue(ctx, leaseKey{}, (*Lease)(nil))
}

// CreateRequest stores req under requests/<req.Name> unless a request for that name is
// pending; then it returns the pending one and created is false. The check and the
// write are one atomic step, so two commands never overwrite each other's request.
func (s *Store) CreateRequest(ctx context.Context, req *Request) (created bool, pending *Request, err error) {
	if err := checkName(req.Name); err != nil {
		return false, nil, fmt.Errorf("create request: %w", err)
	}
	data, err := json.MarshalIndent(req, "", "  ")
	if err != nil {
		return false, nil, fmt.Errorf("encode %s/%s: %w", requestsDir, req.Name, err)
	}
	created, err = s.b.Create(unfenced(ctx), requestsDir+"/"+req.Name, data)
	if err != nil || created {
		return created, nil, err
	}
	pending, err = s.LoadRequest(ctx, req.Name)
	if errors.Is(err, ErrNotFound) {
		// Carried out and deleted between the two steps: try once more.
		return s.CreateRequest(ctx, req)
	}
	return false, pending, err
}

// LoadRequest returns the pending request for the certificate name, or an error
// wrapping ErrNotFound.
func (s *Store) LoadRequest(ctx context.Context, name string) (*Request, error) {
	var r Request
	if err := s.read(ctx, requestsDir, name, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// Requests returns every pending request, sorted by certificate name.
func (s *Store) Requests(ctx context.Context) ([]*Request, error) {
	return loadAll(ctx, s, requestsDir, s.LoadRequest)
}

// DeleteRequest deletes the pending request for name if it is the one with id (a
// request made since is left alone); a missing one is not an error. Unfenced: the
// request belongs to the operator, not to the certificate's lease.
func (s *Store) DeleteRequest(ctx context.Context, name, id string) error {
	r, err := s.LoadRequest(ctx, name)
	switch {
	case errors.Is(err, ErrNotFound):
		return nil
	case err != nil:
		var corrupt *CorruptError
		if !errors.As(err, &corrupt) {
			return fmt.Errorf("delete request %s: %w", name, err)
		}
		// A request nobody can read is nobody's: drop it.
	case r.ID != id:
		return nil
	}
	if err := s.remove(unfenced(ctx), requestsDir, name); err != nil {
		return fmt.Errorf("delete request %s: %w", name, err)
	}
	return nil
}

// RecordRevocation keeps rev under revoked/<rev.SHA256>, beside the certificate records:
// a record restored from a backup taken before the revocation, which lacks it in
// Certificate.Revoked, still cannot bring the certificate back into service. Unfenced:
// the CA has revoked the certificate, whoever holds the lease now.
func (s *Store) RecordRevocation(ctx context.Context, rev Revocation) error {
	return s.write(unfenced(ctx), revokedDir, rev.SHA256, rev)
}

// LoadRevocation returns the revocation of the certificate with fingerprint sha256
// (acme.Fingerprint), or an error wrapping ErrNotFound when it was never revoked
// through certfetch.
func (s *Store) LoadRevocation(ctx context.Context, sha256 string) (*Revocation, error) {
	var r Revocation
	if err := s.read(ctx, revokedDir, sha256, &r); err != nil {
		return nil, err
	}
	return &r, nil
}
