// Package output publishes issued certificates where a TLS terminator picks
// them up: FileOutput for Traefik's file provider, KVOutput for its Redis and
// etcd providers, FanOut for several at once. It knows nothing of certfetch's
// configuration; package fetcher builds the outputs from it.
package output

import (
	"context"
	"errors"
	"time"
)

// Publisher hands certificates to a TLS terminator. Implementations are safe
// for concurrent use. ctx bounds the calls that wait on a server (KVOutput):
// one it cancels fails with (wrapping) its error.
type Publisher interface {
	// Publish makes certPEM (leaf first, then the chain) and keyPEM the
	// certificate served under name, replacing the previous one so that a
	// reader sees either the old pair or the new pair, never a mix. It
	// refuses a key that does not match the certificate.
	Publish(ctx context.Context, name string, certPEM, keyPEM []byte) error
	// Remove withdraws the certificate published under name (it was dropped
	// from the configuration). Removing an unknown name is not an error.
	Remove(ctx context.Context, name string) error
	// Prune deletes material superseded at least the grace period before
	// now. Call it periodically; Publish and Remove never delete at once.
	Prune(ctx context.Context, now time.Time) error
}

// PublishCloser is a Publisher that may hold connections.
type PublishCloser interface {
	Publisher
	// Close releases connections; the Publisher is unusable afterwards.
	Close() error
}

// FanOut returns a publisher that hands every call to each of outs (at
// least one; one is returned as is), even after one failed, so that a store
// that is down does not hold back the others; the error joins the failures.
// The daemon then keeps the certificate marked unpublished and publishes it
// again later, which is harmless for the outputs that already have it
// (publishing the same pair is idempotent). Close closes every output.
func FanOut(outs ...PublishCloser) PublishCloser {
	if len(outs) == 1 {
		return outs[0]
	}
	return fanOut(outs)
}

type fanOut []PublishCloser

func (f fanOut) each(fn func(PublishCloser) error) error {
	var errs []error
	for _, o := range f {
		if err := fn(o); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Publish implements Publisher.
func (f fanOut) Publish(ctx context.Context, name string, certPEM, keyPEM []byte) error {
	return f.each(func(o PublishCloser) error { return o.Publish(ctx, name, certPEM, keyPEM) })
}

// Remove implements Publisher.
func (f fanOut) Remove(ctx context.Context, name string) error {
	return f.each(func(o PublishCloser) error { return o.Remove(ctx, name) })
}

// Prune implements Publisher.
func (f fanOut) Prune(ctx context.Context, now time.Time) error {
	return f.each(func(o PublishCloser) error { return o.Prune(ctx, now) })
}

// Close implements PublishCloser.
func (f fanOut) Close() error {
	return f.each(func(o PublishCloser) error { return o.Close() })
}
