package kvclient

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/certfetch/certfetch/internal/secret"
)

// EtcdOptions say how to reach one etcd cluster.
type EtcdOptions struct {
	// Endpoints are host:port or http(s)://host:port of cluster members.
	Endpoints []string
	// Username and Password authenticate with etcd's auth (both or
	// neither). The password is revealed only to the etcd client.
	Username string
	Password secret.Secret
	// TLS, when set, secures the connections (and may carry a client
	// certificate); nil for plain connections.
	TLS *tls.Config
	// Timeout bounds each operation and the dial; 0 means DefaultTimeout.
	Timeout time.Duration
}

// ErrLeaseNotFound is returned (wrapped) by KeepAliveOnce when the etcd
// lease no longer exists: it expired or was revoked.
var ErrLeaseNotFound = errors.New("etcd lease not found")

// errClosed is what every method returns after Close.
var errClosed = errors.New("etcd: client closed")

// Etcd is a client of one etcd cluster, safe for concurrent use.
//
// It connects on first use, not in NewEtcd: with a username the etcd client
// authenticates as it connects and fails while the cluster is down, which
// must not stop certfetch from starting (or reloading) during an outage.
//
// With a username it also reconnects after a failure that may have left the
// connection unusable: measured against etcd 3.4, a client that
// authenticated before the server restarted keeps a token the restarted
// server no longer knows, and its token refresh, sent with that stale token,
// is refused too, so every request times out until the client is replaced.
// The failing operation reports ErrUnavailable; the next one connects afresh.
type Etcd struct {
	cfg     clientv3.Config
	timeout time.Duration
	desc    string

	mu     sync.Mutex
	client *clientv3.Client // nil until connected, and after a reconnect is due
	dial   *dial            // the connection being made, if any
	closed bool
}

// dial is one connection attempt; err is set before done closes.
type dial struct {
	done chan struct{}
	err  error
}

// NewEtcd returns a client for o without connecting.
func NewEtcd(o EtcdOptions) (*Etcd, error) {
	if len(o.Endpoints) == 0 {
		return nil, errors.New("etcd: no endpoints")
	}
	timeout := timeoutOrDefault(o.Timeout)
	return &Etcd{
		cfg: clientv3.Config{
			Endpoints: o.Endpoints, Username: o.Username, Password: o.Password.Reveal(), TLS: o.TLS,
			DialTimeout: timeout,
			// Errors reach the caller, which logs them once through slog;
			// the client's own zap output would repeat them, unstructured.
			Logger: zap.NewNop(),
		},
		timeout: timeout,
		desc:    "etcd " + strings.Join(o.Endpoints, ","),
	}, nil
}

// String names the cluster ("etcd host:port,..."), never the credentials.
func (e *Etcd) String() string { return e.desc }

// Close closes the connection; later calls fail (not with ErrUnavailable).
func (e *Etcd) Close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.closed = true
	if e.client == nil {
		return nil
	}
	err := e.client.Close()
	e.client = nil
	return err
}

// connect returns the current client, connecting when there is none.
// Connecting takes up to the timeout (with a username the client
// authenticates as it connects); concurrent callers share one attempt, and a
// caller whose ctx ends first stops waiting for it.
func (e *Etcd) connect(ctx context.Context) (*clientv3.Client, error) {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil, errClosed
	}
	if c := e.client; c != nil {
		e.mu.Unlock()
		return c, nil
	}
	d := e.dial
	if d == nil {
		d = &dial{done: make(chan struct{})}
		e.dial = d
		go e.connectOnce(d)
	}
	e.mu.Unlock()
	select {
	case <-ctx.Done():
		return nil, fmt.Errorf("etcd connect: %w", ctx.Err())
	case <-d.done:
	}
	if d.err != nil {
		return nil, fmt.Errorf("etcd connect: %w", d.err)
	}
	return e.connect(ctx)
}

// connectOnce makes the attempt d and installs its client.
func (e *Etcd) connectOnce(d *dial) {
	c, err := clientv3.New(e.cfg)
	e.mu.Lock()
	defer close(d.done)
	defer e.mu.Unlock()
	e.dial = nil
	switch {
	case err != nil:
		d.err = err
	case e.closed:
		_ = c.Close()
		d.err = errClosed
	default:
		e.client = c
	}
}

// do runs one operation on the current client, bounded by the timeout, and
// classifies its error.
func (e *Etcd) do(ctx context.Context, op func(context.Context, *clientv3.Client) error) error {
	c, err := e.connect(ctx)
	if err != nil {
		return classify(ctx, err, !errors.Is(err, errClosed) && etcdDown(err))
	}
	octx, cancel := context.WithTimeout(ctx, e.timeout)
	defer cancel()
	err = op(octx, c)
	if err == nil {
		return nil
	}
	return classify(ctx, err, e.afterFailure(c, err))
}

// afterFailure reports whether err means the cluster was not reached, and
// drops c for a reconnect when err may have left it stuck (see Etcd); a
// refused token then counts as not reached too, since the next operation
// authenticates afresh. A failure of a client another operation dropped
// meanwhile counts as not reached.
func (e *Etcd) afterFailure(c *clientv3.Client, err error) (down bool) {
	down = etcdDown(err)
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.client != c {
		return !e.closed
	}
	if e.cfg.Username != "" && (down || errors.Is(err, rpctypes.ErrInvalidAuthToken)) {
		_ = c.Close()
		e.client = nil
		return true
	}
	return down
}

// etcdDown: gRPC's Unavailable and DeadlineExceeded (no member reached, no
// leader, the timeout ran out) mean the cluster could not serve.
func etcdDown(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	code := status.Code(err)
	var ee rpctypes.EtcdError
	if errors.As(err, &ee) {
		code = ee.Code()
	}
	return code == codes.Unavailable || code == codes.DeadlineExceeded
}

// LeaseID names an etcd lease; 0 is none.
type LeaseID int64

// KeyValue is one key as etcd stores it.
type KeyValue struct {
	Key   string
	Value []byte
	// CreateRevision is the revision that created this incarnation of the
	// key; ModRevision the one that last wrote it.
	CreateRevision, ModRevision int64
	// Lease is the lease the key is attached to; 0 for none.
	Lease LeaseID
}

func keyValue(kv *mvccpb.KeyValue) *KeyValue {
	return &KeyValue{Key: string(kv.Key), Value: kv.Value, CreateRevision: kv.CreateRevision, ModRevision: kv.ModRevision, Lease: LeaseID(kv.Lease)}
}

// Get returns key (nil when it does not exist) and the revision of the
// store the read saw.
func (e *Etcd) Get(ctx context.Context, key string) (kv *KeyValue, rev int64, err error) {
	err = e.do(ctx, func(ctx context.Context, c *clientv3.Client) error {
		resp, err := c.Get(ctx, key)
		if err != nil {
			return err
		}
		rev = resp.Header.Revision
		if len(resp.Kvs) > 0 {
			kv = keyValue(resp.Kvs[0])
		}
		return nil
	})
	return kv, rev, err
}

// Range returns every key under prefix with its value, as of revision rev
// (0: the latest), sorted by key.
func (e *Etcd) Range(ctx context.Context, prefix string, rev int64) ([]*KeyValue, error) {
	return e.rangeOf(ctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(rev))
}

// Keys returns the keys under prefix without their values, sorted.
func (e *Etcd) Keys(ctx context.Context, prefix string) ([]string, error) {
	kvs, err := e.rangeOf(ctx, prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, err
	}
	keys := make([]string, len(kvs))
	for i, kv := range kvs {
		keys[i] = kv.Key
	}
	return keys, nil
}

func (e *Etcd) rangeOf(ctx context.Context, prefix string, opts ...clientv3.OpOption) ([]*KeyValue, error) {
	var kvs []*KeyValue
	err := e.do(ctx, func(ctx context.Context, c *clientv3.Client) error {
		resp, err := c.Get(ctx, prefix, opts...)
		if err != nil {
			return err
		}
		for _, kv := range resp.Kvs {
			kvs = append(kvs, keyValue(kv))
		}
		return nil
	})
	return kvs, err
}

// Cond is one comparison in a transaction's guard.
type Cond struct{ cmp clientv3.Cmp }

// CreatedAt holds when the key's current incarnation was created at
// revision rev; with rev 0, when the key does not exist.
func CreatedAt(key string, rev int64) Cond {
	return Cond{clientv3.Compare(clientv3.CreateRevision(key), "=", rev)}
}

// ModifiedAt holds when the key was last written at revision rev; with rev
// 0, when the key does not exist.
func ModifiedAt(key string, rev int64) Cond {
	return Cond{clientv3.Compare(clientv3.ModRevision(key), "=", rev)}
}

// NoneModifiedAfter holds when no key under prefix was written after
// revision rev.
func NoneModifiedAfter(prefix string, rev int64) Cond {
	return Cond{clientv3.Compare(clientv3.ModRevision(prefix), "<", rev+1).WithPrefix()}
}

// Op is one write in a transaction.
type Op struct{ op clientv3.Op }

// Put writes value under key.
func Put(key, value string) Op { return Op{clientv3.OpPut(key, value)} }

// Delete deletes key; a missing key is not an error.
func Delete(key string) Op { return Op{clientv3.OpDelete(key)} }

// Txn applies ops all together if every cond holds (always without conds),
// and reports whether it did.
func (e *Etcd) Txn(ctx context.Context, conds []Cond, ops ...Op) (bool, error) {
	cmps := make([]clientv3.Cmp, len(conds))
	for i, c := range conds {
		cmps[i] = c.cmp
	}
	then := make([]clientv3.Op, len(ops))
	for i, o := range ops {
		then[i] = o.op
	}
	var ok bool
	err := e.do(ctx, func(ctx context.Context, c *clientv3.Client) error {
		resp, err := c.Txn(ctx).If(cmps...).Then(then...).Commit()
		if err == nil {
			ok = resp.Succeeded
		}
		return err
	})
	return ok, err
}

// Create writes value under key, attached to lease (0: none), only if key
// does not exist, atomically with the check. It returns the key as created
// or, when it existed, as it was then (created false); never a nil kv
// without an error.
func (e *Etcd) Create(ctx context.Context, key, value string, lease LeaseID) (kv *KeyValue, created bool, err error) {
	err = e.do(ctx, func(ctx context.Context, c *clientv3.Client) error {
		resp, err := c.Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
			Then(clientv3.OpPut(key, value, clientv3.WithLease(clientv3.LeaseID(lease)))).
			Else(clientv3.OpGet(key)).
			Commit()
		if err != nil {
			return err
		}
		created = resp.Succeeded
		if created {
			rev := resp.Header.Revision
			kv = &KeyValue{Key: key, Value: []byte(value), CreateRevision: rev, ModRevision: rev, Lease: lease}
			return nil
		}
		// The comparison and the read are one transaction: the key exists.
		rr := resp.Responses[0].GetResponseRange()
		if rr == nil || len(rr.Kvs) == 0 {
			return fmt.Errorf("etcd create %s: the key exists but could not be read", key)
		}
		kv = keyValue(rr.Kvs[0])
		return nil
	})
	return kv, created, err
}

// Grant creates a lease of ttl rounded up to whole seconds (etcd's unit; the
// server may raise it to its minimum, about 1.5 election timeouts).
func (e *Etcd) Grant(ctx context.Context, ttl time.Duration) (LeaseID, error) {
	var id LeaseID
	err := e.do(ctx, func(ctx context.Context, c *clientv3.Client) error {
		resp, err := c.Grant(ctx, int64(math.Ceil(ttl.Seconds())))
		if err == nil {
			id = LeaseID(resp.ID)
		}
		return err
	})
	return id, err
}

// KeepAliveOnce renews the lease by its granted TTL, or returns an error
// wrapping ErrLeaseNotFound when it no longer exists.
func (e *Etcd) KeepAliveOnce(ctx context.Context, id LeaseID) error {
	return e.do(ctx, func(ctx context.Context, c *clientv3.Client) error {
		_, err := c.KeepAliveOnce(ctx, clientv3.LeaseID(id))
		if errors.Is(err, rpctypes.ErrLeaseNotFound) {
			return fmt.Errorf("%w: %w", ErrLeaseNotFound, err)
		}
		return err
	})
}

// Revoke ends the lease and deletes the keys attached to it; a lease that no
// longer exists is not an error.
func (e *Etcd) Revoke(ctx context.Context, id LeaseID) error {
	return e.do(ctx, func(ctx context.Context, c *clientv3.Client) error {
		_, err := c.Revoke(ctx, clientv3.LeaseID(id))
		if errors.Is(err, rpctypes.ErrLeaseNotFound) {
			return nil
		}
		return err
	})
}

// TimeToLive returns how long the lease has left, at least: etcd counts whole
// seconds and truncates, so the lease runs out no sooner than the returned
// time and less than a second after it. The lower bound is what a waiter
// wants: one that comes back at it finds a dead holder's lease gone (or, at
// worst, held for under a second more: it asks again), where the upper bound
// would keep every takeover a second late. A lease that no longer exists has
// 0 left.
func (e *Etcd) TimeToLive(ctx context.Context, id LeaseID) (time.Duration, error) {
	var left time.Duration
	err := e.do(ctx, func(ctx context.Context, c *clientv3.Client) error {
		resp, err := c.TimeToLive(ctx, clientv3.LeaseID(id))
		switch {
		case errors.Is(err, rpctypes.ErrLeaseNotFound):
			return nil
		case err != nil:
			return err
		case resp.TTL >= 0:
			// The lease has [TTL, TTL+1) seconds left.
			left = time.Duration(resp.TTL) * time.Second
		}
		return nil
	})
	return left, err
}
