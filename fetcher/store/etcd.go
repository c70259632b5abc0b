package store

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// EtcdOptions configure OpenEtcd.
type EtcdOptions struct {
	// Endpoints are the cluster's client URLs (https://host:2379).
	Endpoints []string
	// Username and Password authenticate when the cluster has auth
	// enabled. The caller reads the password from a file; it never appears
	// in errors or String.
	Username, Password string
	// TLS, when set, is used for https endpoints (and may carry a client
	// certificate).
	TLS *tls.Config
	// Prefix is put before every key; default DefaultPrefix.
	Prefix string
	// Timeout bounds each operation and the dial; default DefaultTimeout.
	Timeout time.Duration
	// Instance names this certfetch instance in lock records and
	// LockedError; default host:pid.
	Instance string
}

// etcdBackend keeps records under prefix+key. A lock is the key
// prefix+"locks/"+name, attached to an etcd lease and holding the instance
// name; its create revision is the fencing token.
type etcdBackend struct {
	remote
	c *clientv3.Client
}

// OpenEtcd connects to etcd and reads one key under the prefix, so that a
// wrong endpoint, credentials or permissions fail here with a clear error.
// Close the Store when done.
func OpenEtcd(ctx context.Context, o EtcdOptions) (*Store, error) {
	if len(o.Endpoints) == 0 {
		return nil, errors.New("open etcd: no endpoints")
	}
	e := &etcdBackend{remote: newRemote(o.Prefix, o.Timeout, o.Instance)}
	e.desc = fmt.Sprintf("etcd %s prefix %q", strings.Join(o.Endpoints, ","), e.prefix)
	c, err := clientv3.New(clientv3.Config{
		Endpoints: o.Endpoints, Username: o.Username, Password: o.Password, TLS: o.TLS,
		DialTimeout: e.timeout,
		// Errors are returned to the caller, which logs them once; the
		// client's own retry chatter would only repeat them.
		Logger: zap.NewNop(),
	})
	if err != nil {
		return nil, e.fail(ctx, "open", "", err)
	}
	e.c = c
	octx, cancel := e.op(ctx)
	defer cancel()
	if _, err := c.Get(octx, e.prefix, clientv3.WithPrefix(), clientv3.WithCountOnly()); err != nil {
		c.Close()
		return nil, e.fail(ctx, "open", "", err)
	}
	return &Store{b: e}, nil
}

func (e *etcdBackend) Close() error { return e.c.Close() }

// fail wraps a client error: ErrUnavailable when the server could not be
// reached in time and the caller's context is still alive.
func (e *etcdBackend) fail(ctx context.Context, op, key string, err error) error {
	subject := e.subject(key)
	code := status.Code(err)
	if ctx.Err() == nil && (errors.Is(err, context.DeadlineExceeded) || code == codes.Unavailable || code == codes.DeadlineExceeded) {
		return fmt.Errorf("etcd %s %s: %w: %w", op, subject, ErrUnavailable, err)
	}
	return fmt.Errorf("etcd %s %s: %w", op, subject, err)
}

func (e *etcdBackend) Get(ctx context.Context, key string) ([]byte, error) {
	octx, cancel := e.op(ctx)
	defer cancel()
	resp, err := e.c.Get(octx, e.prefix+key)
	if err != nil {
		return nil, e.fail(ctx, "get", key, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, fmt.Errorf("etcd get %s on %s: %w", e.prefix+key, e.desc, ErrNotFound)
	}
	return resp.Kvs[0].Value, nil
}

func (e *etcdBackend) Put(ctx context.Context, key string, value []byte) error {
	return e.write(ctx, "put", key, clientv3.OpPut(e.prefix+key, string(value)))
}

func (e *etcdBackend) Create(ctx context.Context, key string, value []byte) (bool, error) {
	octx, cancel := e.op(ctx)
	defer cancel()
	resp, err := e.c.Txn(octx).If(clientv3.Compare(clientv3.CreateRevision(e.prefix+key), "=", 0)).
		Then(clientv3.OpPut(e.prefix+key, string(value))).Commit()
	if err != nil {
		return false, e.fail(ctx, "create", key, err)
	}
	return resp.Succeeded, nil
}

func (e *etcdBackend) Delete(ctx context.Context, key string) error {
	return e.write(ctx, "delete", key, clientv3.OpDelete(e.prefix+key))
}

// write runs op, in a transaction that first compares the lock key's create
// revision with the token when ctx carries a lease.
func (e *etcdBackend) write(ctx context.Context, opName, key string, op clientv3.Op) error {
	l, err := fence(ctx, e, "etcd "+opName, e.prefix+key)
	if err != nil {
		return err
	}
	octx, cancel := e.op(ctx)
	defer cancel()
	if l == nil {
		if _, err := e.c.Do(octx, op); err != nil {
			return e.fail(ctx, opName, key, err)
		}
		return nil
	}
	lockKey := l.ops.(*etcdLease).key
	resp, err := e.c.Txn(octx).If(clientv3.Compare(clientv3.CreateRevision(lockKey), "=", l.token)).Then(op).Commit()
	if err != nil {
		return e.fail(ctx, opName, key, err)
	}
	if !resp.Succeeded {
		return lostError("etcd "+opName, e.prefix+key, l)
	}
	return nil
}

func (e *etcdBackend) List(ctx context.Context, dir string) ([]string, error) {
	octx, cancel := e.op(ctx)
	defer cancel()
	prefix := e.prefix + dir + "/"
	resp, err := e.c.Get(octx, prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, e.fail(ctx, "list", dir, err)
	}
	var keys []string
	for _, kv := range resp.Kvs {
		name := strings.TrimPrefix(string(kv.Key), prefix)
		if name != "" && !strings.Contains(name, "/") {
			keys = append(keys, dir+"/"+name)
		}
	}
	slices.Sort(keys)
	return keys, nil
}

// TryLock grants an etcd lease of ttl rounded up to whole seconds (etcd's
// unit; the server may raise it to its minimum, about 1.5 election
// timeouts) and creates the lock key on it if the key does not exist.
func (e *etcdBackend) TryLock(ctx context.Context, name string, ttl time.Duration) (*Lease, error) {
	lockKey := e.prefix + "locks/" + name
	subject := "locks/" + name
	octx, cancel := e.op(ctx)
	defer cancel()
	sent := time.Now()
	grant, err := e.c.Grant(octx, int64(math.Ceil(ttl.Seconds())))
	if err != nil {
		return nil, e.fail(ctx, "lock", subject, err)
	}
	resp, err := e.c.Txn(octx).
		If(clientv3.Compare(clientv3.CreateRevision(lockKey), "=", 0)).
		Then(clientv3.OpPut(lockKey, e.instance, clientv3.WithLease(grant.ID))).
		Else(clientv3.OpGet(lockKey)).
		Commit()
	if err != nil || !resp.Succeeded {
		// The unused lease would expire by itself; revoking it now keeps
		// the server tidy.
		_, _ = e.c.Revoke(octx, grant.ID)
	}
	if err != nil {
		return nil, e.fail(ctx, "lock", subject, err)
	}
	if !resp.Succeeded {
		holder := ""
		if rr := resp.Responses[0].GetResponseRange(); rr != nil && len(rr.Kvs) > 0 {
			holder = string(rr.Kvs[0].Value)
		}
		return nil, fmt.Errorf("etcd lock %s on %s: %w", lockKey, e.desc, &LockedError{Lock: name, Holder: holder})
	}
	el := &etcdLease{e: e, key: lockKey, id: grant.ID, token: resp.Header.Revision}
	return newLease(e, name, el.token, e.instance, ttl, el, sent, true), nil
}

// etcdLease is an etcd lease's leaseOps.
type etcdLease struct {
	e     *etcdBackend
	key   string
	id    clientv3.LeaseID
	token int64
}

// renew keeps the etcd lease alive, then checks that the lock key is still
// the one this lease created: a key deleted by hand (etcdctl del) leaves the
// lease alive but the lock free for others.
func (l *etcdLease) renew(ctx context.Context) error {
	subject := strings.TrimPrefix(l.key, l.e.prefix)
	_, err := l.e.c.KeepAliveOnce(ctx, l.id)
	if errors.Is(err, rpctypes.ErrLeaseNotFound) {
		return fmt.Errorf("etcd renew %s: lease expired: %w", l.key, ErrLeaseLost)
	}
	if err != nil {
		return l.e.fail(ctx, "renew", subject, err)
	}
	resp, err := l.e.c.Get(ctx, l.key)
	if err != nil {
		return l.e.fail(ctx, "renew", subject, err)
	}
	if len(resp.Kvs) == 0 || resp.Kvs[0].CreateRevision != l.token {
		return fmt.Errorf("etcd renew %s: lock deleted or taken: %w", l.key, ErrLeaseLost)
	}
	return nil
}

// release deletes the lock key only if it is still this lease's, then
// revokes the lease (which deletes nothing else: only this lock is on it).
func (l *etcdLease) release(ctx context.Context) error {
	octx, cancel := l.e.op(ctx)
	defer cancel()
	subject := strings.TrimPrefix(l.key, l.e.prefix)
	_, err := l.e.c.Txn(octx).If(clientv3.Compare(clientv3.CreateRevision(l.key), "=", l.token)).
		Then(clientv3.OpDelete(l.key)).Commit()
	if err != nil {
		return l.e.fail(ctx, "unlock", subject, err)
	}
	if _, err := l.e.c.Revoke(octx, l.id); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		return l.e.fail(ctx, "unlock", subject, err)
	}
	return nil
}
