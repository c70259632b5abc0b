package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/certfetch/certfetch/internal/kvclient"
)

// etcdBackend keeps records under prefix+key. A lock is the key
// prefix+"locks/"+name, attached to an etcd lease and holding the instance
// name; its create revision is the fencing token.
type etcdBackend struct {
	remote
	c *kvclient.Etcd
}

func (e *etcdBackend) Put(ctx context.Context, key string, value []byte) error {
	return e.write(ctx, "put", key, kvclient.Put(e.prefix+key, string(value)))
}

func (e *etcdBackend) Create(ctx context.Context, key string, value []byte) (bool, error) {
	_, created, err := e.c.Create(ctx, e.prefix+key, string(value), 0)
	if err != nil {
		return false, e.fail("create", key, err)
	}
	return created, nil
}

func (e *etcdBackend) Delete(ctx context.Context, key string) error {
	return e.write(ctx, "delete", key, kvclient.Delete(e.prefix+key))
}

// write runs op, in a transaction guarded by the lock key's create revision
// being the token when ctx carries a lease.
func (e *etcdBackend) write(ctx context.Context, opName, key string, op kvclient.Op) error {
	l, err := fence(ctx, e, "etcd "+opName, e.prefix+key)
	if err != nil {
		return err
	}
	var guard []kvclient.Cond
	if l != nil {
		guard = append(guard, kvclient.CreatedAt(l.ops.(*etcdLease).key, l.token))
	}
	ok, err := e.c.Txn(ctx, guard, op)
	if err != nil {
		return e.fail(opName, key, err)
	}
	if !ok {
		return lostError("etcd "+opName, e.prefix+key, l)
	}
	return nil
}

func (e *etcdBackend) Get(ctx context.Context, key string) ([]byte, error) {
	kv, _, err := e.c.Get(ctx, e.prefix+key)
	if err != nil {
		return nil, e.fail("get", key, err)
	}
	if kv == nil {
		return nil, e.fail("get", key, ErrNotFound)
	}
	return kv.Value, nil
}

func (e *etcdBackend) List(ctx context.Context, dir string) ([]string, error) {
	prefix := e.prefix + dir + "/"
	found, err := e.c.Keys(ctx, prefix)
	if err != nil {
		return nil, e.fail("list", dir, err)
	}
	var keys []string
	for _, k := range found {
		name := strings.TrimPrefix(k, prefix)
		if name != "" && !strings.Contains(name, "/") {
			keys = append(keys, dir+"/"+name)
		}
	}
	return keys, nil
}

// Acquire grants an etcd lease of ttl (whole seconds, see kvclient
// Etcd.Grant) and creates the lock key on it if the key does not exist.
func (e *etcdBackend) Acquire(ctx context.Context, name string, ttl time.Duration) (*Lease, error) {
	lockKey := e.prefix + "locks/" + name
	subject := "locks/" + name
	sent := time.Now()
	id, err := e.c.Grant(ctx, ttl)
	if err != nil {
		return nil, e.fail("lock", subject, err)
	}
	kv, created, err := e.c.Create(ctx, lockKey, e.instance, id)
	if err != nil || !created {
		// The unused lease would expire by itself; revoking it now keeps
		// the server tidy.
		_ = e.c.Revoke(ctx, id)
	}
	if err != nil {
		return nil, e.fail("lock", subject, err)
	}
	if !created {
		return nil, fmt.Errorf("etcd lock %s on %s: %w", lockKey, e.desc, e.held(ctx, name, kv))
	}
	el := &etcdLease{e: e, key: lockKey, id: id, token: kv.CreateRevision}
	return newLease(e, name, el.token, e.instance, ttl, el, sent, true), nil
}

// held describes the lock kv that refused an acquisition. Its lease's time
// to live is asked right after the refusal; when that fails, Expires stays
// unknown.
func (e *etcdBackend) held(ctx context.Context, name string, kv *kvclient.KeyValue) *LeaseHeldError {
	held := &LeaseHeldError{Lock: name, Holder: string(kv.Value)}
	if kv.Lease != 0 {
		if left, err := e.c.TimeToLive(ctx, kv.Lease); err == nil {
			held.Expires = time.Now().Add(left)
		}
	}
	return held
}

// etcdLease is an etcd lease's leaseOps.
type etcdLease struct {
	e     *etcdBackend
	key   string
	id    kvclient.LeaseID
	token int64
}

// renew keeps the etcd lease alive, then checks that the lock key is still
// the one this lease created: a key deleted by hand (etcdctl del) leaves the
// lease alive but the lock free for others.
func (l *etcdLease) renew(ctx context.Context) error {
	subject := strings.TrimPrefix(l.key, l.e.prefix)
	err := l.e.c.KeepAliveOnce(ctx, l.id)
	if errors.Is(err, kvclient.ErrLeaseNotFound) {
		return fmt.Errorf("etcd renew %s: lease expired: %w", l.key, ErrLeaseLost)
	}
	if err != nil {
		return l.e.fail("renew", subject, err)
	}
	kv, _, err := l.e.c.Get(ctx, l.key)
	if err != nil {
		return l.e.fail("renew", subject, err)
	}
	if kv == nil || kv.CreateRevision != l.token {
		return fmt.Errorf("etcd renew %s: lock deleted or taken: %w", l.key, ErrLeaseLost)
	}
	return nil
}

// release deletes the lock key only if it is still this lease's, then
// revokes the lease (which deletes nothing else: only this lock is on it).
func (l *etcdLease) release(ctx context.Context) error {
	subject := strings.TrimPrefix(l.key, l.e.prefix)
	if _, err := l.e.c.Txn(ctx, []kvclient.Cond{kvclient.CreatedAt(l.key, l.token)}, kvclient.Delete(l.key)); err != nil {
		return l.e.fail("unlock", subject, err)
	}
	if err := l.e.c.Revoke(ctx, l.id); err != nil {
		return l.e.fail("unlock", subject, err)
	}
	return nil
}
