// Package output publishes issued certificates where a TLS terminator picks
// them up. FileOutput serves Traefik's file provider; other back ends (Redis,
// etcd) implement the same Publisher interface.
package output

import "time"

// Publisher hands certificates to a TLS terminator. Implementations are safe
// for concurrent use.
type Publisher interface {
	// Publish makes certPEM (leaf first, then the chain) and keyPEM the
	// certificate served under name, replacing the previous one so that a
	// reader sees either the old pair or the new pair, never a mix. It
	// refuses a key that does not match the certificate.
	Publish(name string, certPEM, keyPEM []byte) error
	// Remove withdraws the certificate published under name (it was dropped
	// from the configuration). Removing an unknown name is not an error.
	Remove(name string) error
	// Prune deletes material superseded at least the grace period before
	// now. Call it periodically; Publish and Remove never delete at once.
	Prune(now time.Time) error
}
