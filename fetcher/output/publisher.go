// Package output publishes issued certificates where a TLS terminator picks
// them up: FileOutput for Traefik's file provider, KVOutput for its Redis and
// etcd providers, FanOut for several at once. It knows nothing of certfetch's
// configuration; package fetcher builds the outputs from it.
package output

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"time"
)

// Errors a publication wraps (test with errors.Is).
var (
	// ErrNotOwned means the place where a certificate would be published holds
	// something certfetch did not write (a user's own <name>.yml in the file
	// provider's directory): it is neither replaced nor removed.
	ErrNotOwned = errors.New("not written by certfetch; certfetch leaves it alone (rename the certificate or move the file)")
	// ErrOlder means the output already serves a newer certificate under the
	// name (issued later) than the one to publish: it is kept. It happens
	// when the state store was restored from an older backup.
	ErrOlder = errors.New("the output serves a newer certificate under this name; it is kept")
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
	// Published returns the certificate (PEM chain) served under name, nil
	// when none is. A place certfetch does not own is ErrNotOwned.
	Published(ctx context.Context, name string) ([]byte, error)
	// Names returns the names certfetch serves certificates under, sorted;
	// never what it did not write.
	Names(ctx context.Context) ([]string, error)
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

// Published returns the certificate every output serves under name, nil when
// they do not all serve the same one (publishing again fixes that).
func (f fanOut) Published(ctx context.Context, name string) ([]byte, error) {
	var first []byte
	for i, o := range f {
		served, err := o.Published(ctx, name)
		if err != nil {
			return nil, err
		}
		if i > 0 && !bytes.Equal(served, first) {
			return nil, nil
		}
		first = served
	}
	return first, nil
}

// Names returns the names any output serves.
func (f fanOut) Names(ctx context.Context) ([]string, error) {
	var all []string
	for _, o := range f {
		names, err := o.Names(ctx)
		if err != nil {
			return nil, err
		}
		all = append(all, names...)
	}
	slices.Sort(all)
	return slices.Compact(all), nil
}

// Close implements PublishCloser.
func (f fanOut) Close() error {
	return f.each(func(o PublishCloser) error { return o.Close() })
}

// checkNotOlder refuses to replace served with next when served was issued later: the
// published certificate is never replaced by an older one. An unparsable served
// certificate is replaced.
func checkNotOlder(name string, served, next []byte) error {
	if len(served) == 0 || bytes.Equal(served, next) {
		return nil
	}
	current, err1 := leafNotBefore(served)
	candidate, err2 := leafNotBefore(next)
	if err1 != nil || err2 != nil || !current.After(candidate) {
		return nil
	}
	return fmt.Errorf("publish certificate %q (issued %s): served one issued %s: %w", name,
		candidate.UTC().Format(time.RFC3339), current.UTC().Format(time.RFC3339), ErrOlder)
}

func leafNotBefore(certPEM []byte) (time.Time, error) {
	block, _ := pem.Decode(certPEM)
	if block == nil {
		return time.Time{}, errors.New("no PEM block")
	}
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return time.Time{}, err
	}
	return leaf.NotBefore, nil
}
