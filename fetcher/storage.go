package fetcher

import (
	"context"
	"fmt"

	"github.com/certfetch/certfetch/fetcher/config"
	"github.com/certfetch/certfetch/fetcher/store"
)

// OpenStore opens the configured state store: the directory, or a shared
// Redis or etcd store (connecting to it; ctx bounds that). The caller closes
// it.
func OpenStore(ctx context.Context, s config.Storage) (*store.Store, error) {
	switch {
	case s.Redis != nil:
		r := s.Redis
		tlsCfg, err := r.TLS.ClientConfig([]string{r.Address})
		if err != nil {
			return nil, fmt.Errorf("storage redis %s: %w", r.Address, err)
		}
		return store.OpenRedis(ctx, store.RedisOptions{
			Address: r.Address, Username: r.Username, Password: r.Password.Reveal(), DB: r.DB,
			TLS: tlsCfg, Prefix: r.RootKey + "/", Timeout: r.Timeout,
		})
	case s.Etcd != nil:
		e := s.Etcd
		tlsCfg, err := e.TLS.ClientConfig(e.Endpoints)
		if err != nil {
			return nil, fmt.Errorf("storage etcd: %w", err)
		}
		return store.OpenEtcd(ctx, store.EtcdOptions{
			Endpoints: e.Endpoints, Username: e.Username, Password: e.Password.Reveal(),
			TLS: tlsCfg, Prefix: e.RootKey + "/", Timeout: e.Timeout,
		})
	default:
		return store.Open(s.Directory)
	}
}
