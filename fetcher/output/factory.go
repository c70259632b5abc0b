package output

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/certfetch/certfetch/fetcher/config"
)

// PublishCloser is a Publisher that holds connections.
type PublishCloser interface {
	Publisher
	// Close releases connections; the Publisher is unusable afterwards.
	Close() error
}

// New builds the outputs cfg configures (file, redis, etcd, any
// combination, at least one). With one output it returns that output; with
// several, a fan-out that publishes to each in turn. Nothing connects here:
// a store that is down makes publications fail with ErrUnavailable, not New.
// Call Close on the result when it is replaced (configuration reload) or at
// exit.
func New(cfg config.Output, logger *slog.Logger) (PublishCloser, error) {
	if logger == nil {
		logger = slog.Default()
	}
	var outs []PublishCloser
	closeAll := func() {
		for _, o := range outs {
			_ = o.Close()
		}
	}
	if cfg.HasFile() {
		f, err := NewFileOutput(FileOptions{
			Directory:         cfg.File.Directory,
			GracePeriod:       cfg.File.GracePeriod,
			GroupReadableKeys: cfg.File.GroupReadableKeys,
			Logger:            logger,
		})
		if err != nil {
			return nil, fmt.Errorf("file output: %w", err)
		}
		outs = append(outs, nopCloser{f})
	}
	if r := cfg.Redis; r != nil {
		tlsCfg, err := r.TLS.ClientConfig([]string{r.Address})
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("redis output %s: %w", r.Address, err)
		}
		o, err := NewRedisOutput(RedisOptions{
			Address: r.Address, Username: r.Username, Password: r.Password, DB: r.DB,
			TLS: tlsCfg, RootKey: r.RootKey, Timeout: r.Timeout, Logger: logger,
		})
		if err != nil {
			closeAll()
			return nil, err
		}
		outs = append(outs, o)
	}
	if e := cfg.Etcd; e != nil {
		tlsCfg, err := e.TLS.ClientConfig(e.Endpoints)
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("etcd output %s: %w", joinEndpoints(e.Endpoints), err)
		}
		o, err := NewEtcdOutput(EtcdOptions{
			Endpoints: e.Endpoints, Username: e.Username, Password: e.Password,
			TLS: tlsCfg, RootKey: e.RootKey, Timeout: e.Timeout, Logger: logger,
		})
		if err != nil {
			closeAll()
			return nil, err
		}
		outs = append(outs, o)
	}
	switch len(outs) {
	case 0:
		return nil, errors.New("output: none configured (set output.file, output.redis or output.etcd)")
	case 1:
		return outs[0], nil
	}
	return fanOut(outs), nil
}

// nopCloser gives FileOutput, which holds no connection, a Close.
type nopCloser struct{ *FileOutput }

func (nopCloser) Close() error { return nil }

// fanOut publishes to several outputs. Each call goes to every output, even
// after one failed, so a store that is down does not hold back the others;
// the error joins the failures. The daemon then keeps the certificate marked
// unpublished and publishes it again later, which is harmless for the
// outputs that already have it (publishing the same pair is idempotent).
type fanOut []PublishCloser

func (f fanOut) each(fn func(Publisher) error) error {
	var errs []error
	for _, o := range f {
		if err := fn(o); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Publish implements Publisher.
func (f fanOut) Publish(name string, certPEM, keyPEM []byte) error {
	return f.each(func(o Publisher) error { return o.Publish(name, certPEM, keyPEM) })
}

// Remove implements Publisher.
func (f fanOut) Remove(name string) error {
	return f.each(func(o Publisher) error { return o.Remove(name) })
}

// Prune implements Publisher.
func (f fanOut) Prune(now time.Time) error {
	return f.each(func(o Publisher) error { return o.Prune(now) })
}

// Close closes every output.
func (f fanOut) Close() error {
	var errs []error
	for _, o := range f {
		if err := o.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
