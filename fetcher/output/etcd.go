package output

import (
	"context"
	"fmt"
	"strings"

	"github.com/certfetch/certfetch/internal/kvclient"
)

// NewEtcdOutput returns a KVOutput writing to the etcd cluster conn names.
// Like NewRedisOutput it does not contact the cluster: the first publication
// connects (and authenticates), so certfetch starts while etcd is down.
//
// Each publication reads the index and the list at one revision R, then
// commits one Txn whose guard is "the index's ModRevision is what was read
// (or it does not exist) and no key of the list changed after R": etcd
// applies the puts and deletes all together or not at all, and Traefik's
// etcd provider lists the prefix in one range read at one revision, so a
// node sees the old list or the new one.
//
// etcd bounds the operations of one Txn (--max-txn-ops, 128 by default).
// Only changed values are written, but inserting a name shifts every entry
// after it: one Txn of up to 2n+1 operations for n certificates, so raise
// --max-txn-ops above twice the certificate count beyond about 60
// certificates (and --max-request-bytes, 1.5 MiB by default, beyond a few
// hundred).
func NewEtcdOutput(conn kvclient.EtcdOptions, o KVOptions) (*KVOutput, error) {
	c, err := kvclient.NewEtcd(conn)
	if err != nil {
		return nil, fmt.Errorf("etcd output: %w", err)
	}
	return newKVOutput("etcd", strings.Join(conn.Endpoints, ","), o, etcdBackend{c}), nil
}

type etcdBackend struct {
	c *kvclient.Etcd
}

func (b etcdBackend) attempt(ctx context.Context, l kvLayout, change kvChange) (bool, error) {
	idx, rev, err := b.c.Get(ctx, l.indexKey())
	if err != nil {
		return false, fmt.Errorf("read index: %w", err)
	}
	var raw []byte
	var idxMod int64 // 0 compares as "does not exist"
	if idx != nil {
		raw, idxMod = idx.Value, idx.ModRevision
	}
	names, err := decodeIndex(raw)
	if err != nil {
		return false, err
	}
	list, err := b.c.Range(ctx, l.certsPrefix(), rev)
	if err != nil {
		return false, fmt.Errorf("read list: %w", err)
	}
	current := make(map[string]string, len(list))
	for _, kv := range list {
		current[kv.Key] = string(kv.Value)
	}
	published := l.recoverPublished(names, current)
	if !change(published) {
		return false, nil
	}
	p := l.plan(current, published)

	ops := make([]kvclient.Op, 0, len(p.puts)+len(p.dels)+1)
	for k, v := range p.puts {
		ops = append(ops, kvclient.Put(k, v))
	}
	for _, k := range p.dels {
		ops = append(ops, kvclient.Delete(k))
	}
	ops = append(ops, kvclient.Put(l.indexKey(), string(p.index)))
	guard := []kvclient.Cond{kvclient.ModifiedAt(l.indexKey(), idxMod), kvclient.NoneModifiedAfter(l.certsPrefix(), rev)}
	ok, err := b.c.Txn(ctx, guard, ops...)
	if err != nil {
		return false, fmt.Errorf("commit: %w", err)
	}
	if !ok {
		return false, errConflict
	}
	return true, nil
}

func (b etcdBackend) close() error { return b.c.Close() }
