package store

import (
	"context"
	"time"
)

// remote is what the Redis and etcd backends share.
type remote struct {
	prefix   string
	timeout  time.Duration
	instance string
	desc     string // for errors and String: no credentials
}

// newRemote applies the defaults: DefaultPrefix, DefaultTimeout, host:pid.
func newRemote(prefix string, timeout time.Duration, instance string) remote {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	if instance == "" {
		instance = defaultInstance()
	}
	return remote{prefix: prefix, timeout: timeout, instance: instance}
}

func (r *remote) String() string { return r.desc }

// op bounds one operation by the timeout.
func (r *remote) op(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, r.timeout)
}

// subject names key (relative to the prefix) on the server in errors; the
// server alone without a key.
func (r *remote) subject(key string) string {
	if key == "" {
		return r.desc
	}
	return r.prefix + key + " on " + r.desc
}
