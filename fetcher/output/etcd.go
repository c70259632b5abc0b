package output

import (
	"context"
	"fmt"

	"github.com/certfetch/certfetch/internal/kvclient"
)

// etcdBackend is an etcd KVOutput's transactions (see NewEtcdOutput).
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
