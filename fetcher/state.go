package fetcher

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/certfetch/certfetch/acme"
	"github.com/certfetch/certfetch/fetcher/config"
	"github.com/certfetch/certfetch/fetcher/store"
)

// State is where a certificate is in its life. It is derived, never stored: from the
// configuration, the certificate record and the order journal in the store, and, for
// publication, from the outputs. So it is the same for every process that looks (the
// daemon, `status`, another instance on a shared store), and it survives any crash.
//
//	absent ──order──▶ ordering ──stored──▶ issued ──published──▶ published
//	                     ▲                                            │ renewal time
//	                     └─────────── renewing ◀──order── due ◀──────┘
//	any ──removed from the configuration──▶ withdrawn
//
// A failure changes no state: it sets the record's last error, reason and retry time,
// and the certificate in service stays published.
type State string

const (
	// StateAbsent: no usable certificate stored (never issued, or the stored one no
	// longer matches the configuration's domains, key type or resolver) and no order.
	StateAbsent State = "absent"
	// StateOrdering: an order for it is journaled (in flight, or waiting to be resumed),
	// and no usable certificate is stored yet.
	StateOrdering State = "ordering"
	// StateIssued: a usable certificate is stored but not (yet) in every output.
	StateIssued State = "issued"
	// StatePublished: stored, in every output, not due.
	StatePublished State = "published"
	// StateDue: its renewal time has come; no renewal order yet.
	StateDue State = "due"
	// StateRenewing: due, and a renewal order is journaled.
	StateRenewing State = "renewing"
	// StateWithdrawn: no longer configured; its outputs were removed (its record stays
	// in the store, so adding it back costs no order while it is valid).
	StateWithdrawn State = "withdrawn"
)

// usable reports whether rec holds a certificate that serves cert as configured: the
// configuration is the truth for names, key type and resolver; a record that differs
// (the configuration changed) needs a new certificate.
func usable(rec *store.Certificate, cert *config.Certificate) bool {
	return rec != nil && len(rec.CertPEM) > 0 && slices.Equal(rec.Domains, cert.Domains) &&
		rec.Resolver == cert.Resolver && recordKeyType(rec) == cert.KeyType
}

// unusableRecord returns the *store.CorruptError of a record that decodes but whose
// certificate cannot be served (its certificate or key does not parse, or they do not
// match): it is as corrupt as one that does not decode, and would otherwise count as a
// usable certificate that never publishes and is not renewed before its renewal time.
// nil for a record without a certificate, or a good one.
func unusableRecord(st *store.Store, name string, rec *store.Certificate) error {
	if len(rec.CertPEM) == 0 {
		return nil
	}
	if _, err := tls.X509KeyPair(rec.CertPEM, rec.KeyPEM); err != nil {
		raw, _ := json.MarshalIndent(rec, "", "  ") // as the store wrote it, for Quarantine
		return &store.CorruptError{Key: "certificates/" + name, Where: st.Locate("certificates/" + name), Raw: raw,
			Err: fmt.Errorf("its certificate and key cannot be used: %w", err)}
	}
	return nil
}

// recordKeyType is the key type of rec's certificate. Records written before the key
// type was stored have none: it is read from the key itself.
func recordKeyType(rec *store.Certificate) acme.KeyType {
	if rec.KeyType != "" {
		return rec.KeyType
	}
	kt, err := acme.KeyTypeOf(rec.KeyPEM)
	if err != nil {
		return ""
	}
	return kt
}

// deriveState is the state of a configured certificate whose record is rec (nil: none),
// given whether an order for it is journaled and whether every output has it.
func deriveState(rec *store.Certificate, cert *config.Certificate, ordering, published bool, now time.Time) State {
	switch {
	case !usable(rec, cert) && ordering:
		return StateOrdering
	case !usable(rec, cert):
		return StateAbsent
	case !now.Before(rec.RenewAt) && ordering:
		return StateRenewing
	case !now.Before(rec.RenewAt):
		return StateDue
	case !published:
		return StateIssued
	default:
		return StatePublished
	}
}

// Step is one thing that happened to a certificate, reported to Options.Observe as it
// happens: the transitions of State and the points in between where a crash must lose
// nothing (tests stop the process there).
type Step string

const (
	StepOrdering  Step = "ordering"  // an attempt starts: a new order or a journaled one resumed
	StepPending   Step = "pending"   // the attempt's deadline passed; the order stays journaled
	StepFailed    Step = "failed"    // an attempt or a publication failed; nothing in service changed
	StepObtained  Step = "obtained"  // the CA's certificate is in hand, checked, journaled, not stored yet
	StepStored    Step = "stored"    // stored in the state store; the order not forgotten yet
	StepCollected Step = "collected" // the order forgotten
	StepPublished Step = "published" // every output has it
	StepWithdrawn Step = "withdrawn" // removed from every output
)

// Event is a Step of one certificate.
type Event struct {
	Name string
	Step Step
	// Err is the failure, for StepFailed and StepPending.
	Err error
}
