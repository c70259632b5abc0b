package output_test

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/certfetch/certfetch/fetcher/output"
	"github.com/certfetch/certfetch/internal/kvclient"
	"github.com/certfetch/certfetch/internal/secret"
	"github.com/certfetch/certfetch/internal/testkit/testservers"
)

// kvServer is a real Redis or etcd process owned by one test: its data lives
// in t.TempDir(), it listens on a free loopback port, and it is stopped when
// the test ends (package internal/testkit/testservers). stop kills it (SIGKILL, a
// crash) and start starts it again on the same port and data.
type kvServer interface {
	// newOutput returns a publisher for rootKey ("" for the default) with
	// a short timeout, closed when the test ends.
	newOutput(t *testing.T, rootKey string) *output.KVOutput
	// snapshot returns every key and value in the store, read at one point
	// in time.
	snapshot(t *testing.T) map[string]string
	// put writes one key directly, as an operator or another tool would.
	put(t *testing.T, key, value string)
	// readAtomically returns the values of keys read in one atomic
	// operation (missing keys absent); it returns errors for use in a
	// reader goroutine.
	readAtomically(ctx context.Context, keys []string) (map[string]string, error)
	// setPassword changes the password newOutput uses.
	setPassword(password string)
	stop(t *testing.T)
	start(t *testing.T)
}

// testTimeout is the publishers' per-operation timeout in tests: short, so
// that the server-down case fails fast.
const testTimeout = 2 * time.Second

// redisServer is a redis-server (see internal/testkit/testservers) with keyspace
// notifications on, as Traefik's Redis provider needs.
type redisServer struct {
	addr     string
	password string // requirepass; empty for none
	proc     *testservers.Server
	admin    *redis.Client
}

func startRedis(t *testing.T, password string) *redisServer {
	t.Helper()
	args := []string{"--notify-keyspace-events", "KEA"}
	if password != "" {
		args = append(args, "--requirepass", password)
	}
	s := &redisServer{password: password}
	s.proc, s.addr = testservers.StartRedis(t, args...)
	s.admin = redis.NewClient(&redis.Options{
		Addr: s.addr, Password: password, DisableIdentity: true,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
	})
	t.Cleanup(func() { _ = s.admin.Close() })
	return s
}

func (s *redisServer) start(*testing.T) { s.proc.Start() }

func (s *redisServer) setPassword(password string) { s.password = password }

func (s *redisServer) stop(*testing.T) { s.proc.Kill() }

func (s *redisServer) newOutput(t *testing.T, rootKey string) *output.KVOutput {
	t.Helper()
	o, err := output.NewRedisOutput(kvclient.RedisOptions{Address: s.addr, Password: secret.New(s.password), Timeout: testTimeout},
		output.KVOptions{RootKey: rootKey, Logger: quiet})
	require.NoError(t, err)
	t.Cleanup(func() { _ = o.Close() })
	return o
}

// snapshot lists the keys, then reads them with one MGET. Tests call it
// only while no publication runs; concurrent readers use readAtomically.
func (s *redisServer) snapshot(t *testing.T) map[string]string {
	t.Helper()
	ctx := context.Background()
	keys, err := s.admin.Keys(ctx, "*").Result()
	require.NoError(t, err)
	out := map[string]string{}
	if len(keys) == 0 {
		return out
	}
	values, err := s.admin.MGet(ctx, keys...).Result()
	require.NoError(t, err)
	for i, v := range values {
		if str, ok := v.(string); ok {
			out[keys[i]] = str
		}
	}
	return out
}

func (s *redisServer) put(t *testing.T, key, value string) {
	t.Helper()
	require.NoError(t, s.admin.Set(context.Background(), key, value, 0).Err())
}

// readAtomically uses one MGET, which Redis runs atomically between
// transactions: the same primitive Traefik's provider reads the list with.
func (s *redisServer) readAtomically(ctx context.Context, keys []string) (map[string]string, error) {
	values, err := s.admin.MGet(ctx, keys...).Result()
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for i, v := range values {
		if str, ok := v.(string); ok {
			out[keys[i]] = str
		}
	}
	return out, nil
}

// etcdServer is a single-member etcd (see internal/testkit/testservers).
type etcdServer struct {
	clientURL string
	// username and password are what newOutput and the admin client use
	// once enableAuth has run.
	username, password string
	proc               *testservers.Server
	admin              *clientv3.Client
}

func startEtcd(t *testing.T) *etcdServer {
	t.Helper()
	s := &etcdServer{}
	s.proc, s.clientURL = testservers.StartEtcd(t)
	s.connectAdmin(t)
	t.Cleanup(func() { _ = s.admin.Close() })
	return s
}

func (s *etcdServer) connectAdmin(t *testing.T) {
	t.Helper()
	admin, err := clientv3.New(clientv3.Config{
		Endpoints: []string{s.clientURL}, DialTimeout: 2 * time.Second, Logger: zap.NewNop(),
		Username: s.username, Password: s.password,
	})
	require.NoError(t, err)
	s.admin = admin
}

// enableAuth turns on etcd's authentication with user root (the user etcd
// requires before auth can be enabled) and password.
func (s *etcdServer) enableAuth(t *testing.T, password string) {
	t.Helper()
	ctx := context.Background()
	_, _ = s.admin.RoleAdd(ctx, "root") // exists already on some versions
	_, err := s.admin.UserAdd(ctx, "root", password)
	require.NoError(t, err)
	_, err = s.admin.UserGrantRole(ctx, "root", "root")
	require.NoError(t, err)
	_, err = s.admin.AuthEnable(ctx)
	require.NoError(t, err)
	require.NoError(t, s.admin.Close())
	s.username, s.password = "root", password
	s.connectAdmin(t)
}

// start starts etcd again; with auth on, the admin client is replaced (a
// client that authenticated before the restart is stuck, see kvclient.Etcd).
func (s *etcdServer) start(t *testing.T) {
	t.Helper()
	s.proc.Start()
	if s.username != "" {
		_ = s.admin.Close()
		s.connectAdmin(t)
	}
}

func (s *etcdServer) stop(*testing.T) { s.proc.Kill() }

func (s *etcdServer) setPassword(password string) { s.password = password }

func (s *etcdServer) newOutput(t *testing.T, rootKey string) *output.KVOutput {
	t.Helper()
	o, err := output.NewEtcdOutput(kvclient.EtcdOptions{Endpoints: []string{s.clientURL}, Username: s.username,
		Password: secret.New(s.password), Timeout: testTimeout}, output.KVOptions{RootKey: rootKey, Logger: quiet})
	require.NoError(t, err)
	t.Cleanup(func() { _ = o.Close() })
	return o
}

// snapshot is one range read over the whole key space: one revision.
func (s *etcdServer) snapshot(t *testing.T) map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := s.admin.Get(ctx, "", clientv3.WithPrefix())
	require.NoError(t, err)
	out := map[string]string{}
	for _, kv := range resp.Kvs {
		out[string(kv.Key)] = string(kv.Value)
	}
	return out
}

func (s *etcdServer) put(t *testing.T, key, value string) {
	t.Helper()
	_, err := s.admin.Put(context.Background(), key, value)
	require.NoError(t, err)
}

// readAtomically reads the whole key space at one revision, as Traefik's
// etcd provider lists its rootKey, and keeps the keys asked for.
func (s *etcdServer) readAtomically(ctx context.Context, keys []string) (map[string]string, error) {
	resp, err := s.admin.Get(ctx, "", clientv3.WithPrefix())
	if err != nil {
		return nil, err
	}
	want := map[string]bool{}
	for _, k := range keys {
		want[k] = true
	}
	out := map[string]string{}
	for _, kv := range resp.Kvs {
		if want[string(kv.Key)] {
			out[string(kv.Key)] = string(kv.Value)
		}
	}
	return out, nil
}
