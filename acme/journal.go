package acme

import (
	"context"
	"errors"
	"sync"
	"time"
)

// ErrNoRecord is returned by Journal.Load when no order is journaled for the key.
var ErrNoRecord = errors.New("acme: no journaled order")

// Record is what the engine journals about a live order, before it takes any step after
// new-order: enough to resume the order in another process after a crash or a deadline.
// Once the certificate is downloaded it is journaled too, and the record stays until the
// caller has stored the certificate (Client.Collected). It is plain JSON. It holds the
// certificate's private key: store it like one (mode 0600).
type Record struct {
	// Key is Request.Key() of Request.
	Key     string  `json:"key"`
	Request Request `json:"request"`
	// OrderURL is the order's Location at the CA.
	OrderURL string `json:"orderURL"`
	// PrivateKeyPEM is the certificate's private key; CSR (DER) was signed with it and is
	// what a resumed order finalizes with, so the certificate matches the key.
	PrivateKeyPEM string    `json:"privateKeyPEM"`
	CSR           []byte    `json:"csr"`
	Created       time.Time `json:"created"`
	// CertificatePEM is the chain the order produced, checked against the key and the
	// names; empty until downloaded. CertificateURL is where it came from.
	CertificatePEM string `json:"certificatePEM,omitempty"`
	CertificateURL string `json:"certificateURL,omitempty"`
	// Presented lists the DNS-01 challenges published for the order and not yet cleaned
	// up. Each is journaled before the Solver presents it and dropped once it is cleaned
	// up, so that what a killed process left behind is removed at the next start
	// (Client.CleanUpLeftovers) or when the order is resumed. Empty for HTTP-01, whose
	// challenges are not journaled; absent from journals written before DNS-01.
	Presented []PresentedChallenge `json:"presented,omitempty"`
}

// PresentedChallenge is the arguments of one Solver.Present call, as CleanUp takes them.
// None of them is secret: the record's value is a hash of KeyAuth, and KeyAuth is the
// token and the account key's thumbprint.
type PresentedChallenge struct {
	// Domain is the authorization's identifier ("example.com" for "*.example.com" too).
	Domain  string `json:"domain"`
	Token   string `json:"token"`
	KeyAuth string `json:"keyAuth"`
}

// Journal persists Records by request key. The engine calls it for one key at a time (per
// Client); implementations must be safe for concurrent use with distinct keys.
type Journal interface {
	// Load returns the record for key, or an error wrapping ErrNoRecord.
	Load(ctx context.Context, key string) (*Record, error)
	// Save stores rec under rec.Key, replacing any previous record, durably before it returns.
	Save(ctx context.Context, rec *Record) error
	// Delete removes the record for key; deleting a missing record is not an error.
	Delete(ctx context.Context, key string) error
}

// MemoryJournal is a Journal in memory, for tests and one-shot runs: an order survives a
// deadline but not the process.
type MemoryJournal struct {
	mu      sync.Mutex
	records map[string]Record
}

// NewMemoryJournal returns an empty MemoryJournal.
func NewMemoryJournal() *MemoryJournal {
	return &MemoryJournal{records: map[string]Record{}}
}

// Load implements Journal.
func (j *MemoryJournal) Load(_ context.Context, key string) (*Record, error) {
	j.mu.Lock()
	defer j.mu.Unlock()

	rec, ok := j.records[key]
	if !ok {
		return nil, ErrNoRecord
	}

	return &rec, nil
}

// Save implements Journal.
func (j *MemoryJournal) Save(_ context.Context, rec *Record) error {
	j.mu.Lock()
	defer j.mu.Unlock()

	j.records[rec.Key] = *rec

	return nil
}

// Delete implements Journal.
func (j *MemoryJournal) Delete(_ context.Context, key string) error {
	j.mu.Lock()
	defer j.mu.Unlock()

	delete(j.records, key)

	return nil
}
