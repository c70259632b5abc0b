// Package secret holds credentials (an EAB HMAC key, a Redis or etcd
// password) so that no rendering of them leaks the value: the configuration
// reads them, and only the code that hands them to a client reveals them.
package secret

import "log/slog"

// redacted is what every rendering of a Secret prints instead of its value.
const redacted = "[redacted]"

// Secret holds a credential. Its value is reachable only through Reveal;
// fmt (%v, %+v, %#v, %s), log/slog, encoding/json and any
// encoding.TextMarshaler user print "[redacted]". The zero value is an empty
// secret.
type Secret struct {
	value string
}

// New wraps value.
func New(value string) Secret { return Secret{value: value} }

// Reveal returns the secret value. Call it only where the value is handed to
// the client that authenticates with it, never to build a message.
func (s Secret) Reveal() string { return s.value }

// String implements fmt.Stringer.
func (s Secret) String() string { return redacted }

// GoString implements fmt.GoStringer so %#v does not dump the field.
func (s Secret) GoString() string { return redacted }

// LogValue implements slog.LogValuer.
func (s Secret) LogValue() slog.Value { return slog.StringValue(redacted) }

// MarshalText implements encoding.TextMarshaler (used by encoding/json and
// yaml encoders).
func (s Secret) MarshalText() ([]byte, error) { return []byte(redacted), nil }
