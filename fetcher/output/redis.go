package output

import (
	"context"
	"fmt"
	"slices"

	"github.com/certfetch/certfetch/internal/kvclient"
)

// redisBackend is a Redis KVOutput's transactions (see NewRedisOutput).
type redisBackend struct {
	c *kvclient.Redis
}

func (b redisBackend) attempt(ctx context.Context, l kvLayout, change kvChange) (bool, error) {
	wrote := false
	err := b.c.Watch(ctx, []string{l.indexKey()}, func(tx *kvclient.RedisTx) error {
		raw, _, err := tx.Get(l.indexKey())
		if err != nil {
			return fmt.Errorf("read index: %w", err)
		}
		names, err := decodeIndex(raw)
		if err != nil {
			return err
		}
		keys, err := tx.ScanPrefix(l.certsPrefix())
		if err != nil {
			return fmt.Errorf("scan list: %w", err)
		}
		// The positions the index names are read (and watched) even when
		// the scan did not return them, so that a key created meanwhile
		// fails the transaction instead of being overwritten unseen.
		for _, k := range l.indexKeys(len(names)) {
			if !slices.Contains(keys, k) {
				keys = append(keys, k)
			}
		}
		current := map[string]string{}
		if len(keys) > 0 {
			if err := tx.Watch(keys...); err != nil {
				return fmt.Errorf("watch list: %w", err)
			}
			if current, err = tx.MGet(keys...); err != nil {
				return fmt.Errorf("read list: %w", err)
			}
		}
		published := l.recoverPublished(names, current)
		if !change(published) {
			return nil
		}
		p := l.plan(current, published)
		p.puts[l.indexKey()] = string(p.index)
		ok, err := tx.Exec(p.puts, p.dels)
		if err != nil {
			return fmt.Errorf("commit: %w", err)
		}
		if !ok {
			return errConflict
		}
		wrote = true
		return nil
	})
	return wrote, err
}

func (b redisBackend) close() error { return b.c.Close() }
