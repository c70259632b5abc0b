package fetcher

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/certfetch/certfetch/fetcher/config"
	"github.com/certfetch/certfetch/fetcher/output"
	"github.com/certfetch/certfetch/fetcher/store"
	"github.com/certfetch/certfetch/internal/kvclient"
)

// OpenStore opens the configured state store: the directory, or a shared
// Redis or etcd store (connecting to it; ctx bounds that). The caller closes
// it.
func OpenStore(ctx context.Context, s config.Storage) (*store.Store, error) {
	switch {
	case s.Redis != nil:
		conn, err := redisConnection(s.Redis)
		if err != nil {
			return nil, fmt.Errorf("storage: %w", err)
		}
		return store.OpenRedis(ctx, conn, store.Options{Prefix: s.Redis.RootKey + "/"})
	case s.Etcd != nil:
		conn, err := etcdConnection(s.Etcd)
		if err != nil {
			return nil, fmt.Errorf("storage: %w", err)
		}
		return store.OpenEtcd(ctx, conn, store.Options{Prefix: s.Etcd.RootKey + "/"})
	default:
		return store.Open(s.Directory)
	}
}

// OpenOutput builds the outputs cfg configures (file, redis, etcd, any
// combination, at least one), fanned out when there are several. Nothing
// connects here: a store that is down makes publications fail with
// kvclient.ErrUnavailable, not OpenOutput. Close the result when it is
// replaced (configuration reload) or at exit.
func OpenOutput(cfg config.Output, logger *slog.Logger) (output.PublishCloser, error) {
	var (
		outs []output.PublishCloser
		errs []error
	)
	add := func(o output.PublishCloser, err error) {
		if err != nil {
			errs = append(errs, err)
		} else {
			outs = append(outs, o)
		}
	}
	if cfg.HasFile() {
		add(output.NewFileOutput(output.FileOptions{Directory: cfg.File.Directory, GracePeriod: cfg.File.GracePeriod,
			GroupReadableKeys: cfg.File.GroupReadableKeys, Logger: logger}))
	}
	if r := cfg.Redis; r != nil {
		add(kvOutput(r, redisConnection, output.NewRedisOutput, output.KVOptions{RootKey: r.RootKey, Logger: logger}))
	}
	if e := cfg.Etcd; e != nil {
		add(kvOutput(e, etcdConnection, output.NewEtcdOutput, output.KVOptions{RootKey: e.RootKey, Logger: logger}))
	}
	if len(outs) == 0 && len(errs) == 0 {
		errs = append(errs, errors.New("none configured (set output.file, output.redis or output.etcd)"))
	}
	if len(errs) > 0 {
		for _, o := range outs {
			_ = o.Close()
		}
		return nil, fmt.Errorf("output: %w", errors.Join(errs...))
	}
	return output.FanOut(outs...), nil
}

// kvOutput builds the KV output of the connection c: translate gives its
// client options, build the output.
func kvOutput[C, O any](c C, translate func(C) (O, error), build func(O, output.KVOptions) (*output.KVOutput, error), o output.KVOptions) (output.PublishCloser, error) {
	conn, err := translate(c)
	if err != nil {
		return nil, err
	}
	return build(conn, o)
}

// redisConnection translates a Redis connection's configuration.
func redisConnection(c *config.RedisConnection) (kvclient.RedisOptions, error) {
	tlsCfg, err := c.TLS.ClientConfig([]string{c.Address})
	if err != nil {
		return kvclient.RedisOptions{}, fmt.Errorf("redis %s: %w", c.Address, err)
	}
	return kvclient.RedisOptions{Address: c.Address, Username: c.Username, Password: c.Password, DB: c.DB, TLS: tlsCfg, Timeout: c.Timeout}, nil
}

// etcdConnection translates an etcd connection's configuration.
func etcdConnection(c *config.EtcdConnection) (kvclient.EtcdOptions, error) {
	tlsCfg, err := c.TLS.ClientConfig(c.Endpoints)
	if err != nil {
		return kvclient.EtcdOptions{}, fmt.Errorf("etcd %v: %w", c.Endpoints, err)
	}
	return kvclient.EtcdOptions{Endpoints: c.Endpoints, Username: c.Username, Password: c.Password, TLS: tlsCfg, Timeout: c.Timeout}, nil
}
