package output

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/certfetch/certfetch/fetcher/config"
)

// EtcdOptions configure an etcd KVOutput.
type EtcdOptions struct {
	// Endpoints are host:port or http(s)://host:port of cluster members.
	Endpoints []string
	// Username and Password authenticate with etcd's auth (both or
	// neither). The password is revealed only to the etcd client.
	Username string
	Password config.Secret
	// TLS is nil for plain connections.
	TLS *tls.Config
	// RootKey is Traefik's providers.etcd.rootKey.
	RootKey string
	// Timeout bounds one transaction attempt; 0 means
	// config.DefaultKVTimeout.
	Timeout time.Duration
	// Logger receives one line per change; nil means slog.Default().
	Logger *slog.Logger
}

// NewEtcdOutput returns a KVOutput writing to etcd. Like NewRedisOutput it
// does not contact the cluster: the first publication connects (and
// authenticates), so certfetch starts while etcd is down.
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
func NewEtcdOutput(opts EtcdOptions) (*KVOutput, error) {
	if len(opts.Endpoints) == 0 {
		return nil, errors.New("etcd output: at least one endpoint is required")
	}
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = config.DefaultKVTimeout
	}
	cfg := clientv3.Config{
		Endpoints:   opts.Endpoints,
		DialTimeout: timeout,
		Username:    opts.Username,
		Password:    opts.Password.Reveal(),
		TLS:         opts.TLS,
		// certfetch logs through slog; the client's own zap output would
		// duplicate every failure, unstructured.
		Logger: zap.NewNop(),
	}
	return newKVOutput("etcd", joinEndpoints(opts.Endpoints), opts.RootKey, timeout, opts.Logger, &etcdBackend{cfg: cfg}), nil
}

// etcdBackend creates its client on the first attempt, not in
// NewEtcdOutput: with a username, clientv3.New authenticates at once and
// fails while the cluster is down, which would stop certfetch from starting
// (or reloading) during an etcd outage. KVOutput's mutex serialises
// attempt and close, so the lazy client needs no lock of its own.
type etcdBackend struct {
	cfg    clientv3.Config
	client *clientv3.Client // nil until an attempt connects
}

func (b *etcdBackend) connect() (*clientv3.Client, error) {
	if b.client == nil {
		c, err := clientv3.New(b.cfg)
		if err != nil {
			return nil, fmt.Errorf("connect: %w", err)
		}
		b.client = c
	}
	return b.client, nil
}

// attempt runs one transaction. After a failure that may have left the
// client unusable it drops the client, so that the next attempt connects
// afresh: measured here against etcd 3.4, a client that authenticated
// before the server restarted keeps a token the restarted server no longer
// knows, and its token refresh, sent with that stale token, is refused too,
// so every request times out until the client is replaced.
func (b *etcdBackend) attempt(ctx context.Context, l kvLayout, change kvChange) (bool, error) {
	wrote, err := b.try(ctx, l, change)
	if err != nil && b.client != nil && b.cfg.Username != "" && (b.unavailable(err) || errors.Is(err, rpctypes.ErrInvalidAuthToken)) {
		_ = b.client.Close()
		b.client = nil
	}
	return wrote, err
}

func (b *etcdBackend) try(ctx context.Context, l kvLayout, change kvChange) (bool, error) {
	client, err := b.connect()
	if err != nil {
		return false, err
	}
	idx, err := client.Get(ctx, l.indexKey())
	if err != nil {
		return false, fmt.Errorf("read index: %w", err)
	}
	rev := idx.Header.Revision
	var raw []byte
	var idxMod int64
	if len(idx.Kvs) == 1 {
		raw, idxMod = idx.Kvs[0].Value, idx.Kvs[0].ModRevision
	}
	names, err := decodeIndex(raw)
	if err != nil {
		return false, err
	}
	list, err := client.Get(ctx, l.certsPrefix(), clientv3.WithPrefix(), clientv3.WithRev(rev))
	if err != nil {
		return false, fmt.Errorf("read list: %w", err)
	}
	current := make(map[string]string, len(list.Kvs))
	for _, kv := range list.Kvs {
		current[string(kv.Key)] = string(kv.Value)
	}
	published := l.recoverPublished(names, current)
	if !change(published) {
		return false, nil
	}
	p := l.plan(current, published)

	ops := make([]clientv3.Op, 0, len(p.puts)+len(p.dels)+1)
	for k, v := range p.puts {
		ops = append(ops, clientv3.OpPut(k, v))
	}
	for _, k := range p.dels {
		ops = append(ops, clientv3.OpDelete(k))
	}
	ops = append(ops, clientv3.OpPut(l.indexKey(), string(p.index)))
	guard := []clientv3.Cmp{
		// Unchanged index (ModRevision 0 compares "does not exist").
		clientv3.Compare(clientv3.ModRevision(l.indexKey()), "=", idxMod),
		// No key of the list written after the snapshot.
		clientv3.Compare(clientv3.ModRevision(l.certsPrefix()), "<", rev+1).WithPrefix(),
	}
	resp, err := client.Txn(ctx).If(guard...).Then(ops...).Commit()
	if err != nil {
		return false, fmt.Errorf("commit: %w", err)
	}
	if !resp.Succeeded {
		return false, errConflict
	}
	return true, nil
}

// unavailable: gRPC's Unavailable and DeadlineExceeded (no member reached,
// no leader, the timeout ran out) mean the cluster could not serve.
func (b *etcdBackend) unavailable(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ee rpctypes.EtcdError
	if errors.As(err, &ee) {
		return ee.Code() == codes.Unavailable || ee.Code() == codes.DeadlineExceeded
	}
	if s, ok := status.FromError(err); ok {
		return s.Code() == codes.Unavailable || s.Code() == codes.DeadlineExceeded
	}
	return false
}

func (b *etcdBackend) close() error {
	if b.client == nil {
		return nil
	}
	return b.client.Close()
}
