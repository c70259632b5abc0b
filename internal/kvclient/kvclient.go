// Package kvclient connects certfetch to Redis and etcd, for the state store
// (fetcher/store) and the KV outputs (fetcher/output) alike: one options
// struct per server, one operation timeout, one classification of errors
// (ErrUnavailable: the server was not reached, as opposed to a refusal), the
// client settings, and etcd's reconnect after a restart. It moves keys and
// values; what they mean belongs to its callers. No other certfetch package
// imports the Redis or etcd client libraries.
//
// Every method bounds its work by the options' Timeout (a Redis.Watch call,
// transaction included, counts as one operation) and by the caller's
// context. An error that wraps ErrUnavailable says the operation may be
// retried once the server is back; any other error is the server's refusal,
// a malformed reply, or the caller's context ending.
package kvclient

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// DefaultTimeout bounds one operation when the options set none. Operations
// take milliseconds on a healthy server; 5 s rides out a slow fsync or a short
// failover while keeping a daemon pass from hanging on a dead server, whose
// work is then retried later.
const DefaultTimeout = 5 * time.Second

// ErrUnavailable is returned (wrapped, beside the client's error) when the
// server could not be reached, could not serve yet, or did not answer within
// the timeout, while the caller's context was still alive. A write that
// failed this way may or may not have happened. A refusal (wrong password,
// missing permission) and a cancelled caller are not ErrUnavailable.
var ErrUnavailable = errors.New("server unavailable")

// timeoutOrDefault applies DefaultTimeout.
func timeoutOrDefault(d time.Duration) time.Duration {
	if d <= 0 {
		return DefaultTimeout
	}
	return d
}

// classify wraps err with ErrUnavailable when down says the server was not
// reached and the caller's ctx is still alive: once the caller gave up, the
// failure says nothing about the server.
func classify(ctx context.Context, err error, down bool) error {
	if err == nil {
		return nil
	}
	if down && ctx.Err() == nil {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return err
}
