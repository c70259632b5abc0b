package testservers

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// redisCommand sends one inline command and returns the first reply line.
func redisCommand(t *testing.T, addr, cmd string) (string, error) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	require.NoError(t, conn.SetDeadline(time.Now().Add(5*time.Second)))
	if _, err := fmt.Fprintf(conn, "%s\r\n", cmd); err != nil {
		return "", err
	}
	buf := make([]byte, 512)
	n, err := conn.Read(buf)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(buf[:n])), nil
}

func TestRedisKillAndStartKeepPortAndData(t *testing.T) {
	t.Parallel()
	srv, addr := StartRedis(t)
	got, err := redisCommand(t, addr, "SET k v1")
	require.NoError(t, err)
	require.Equal(t, "+OK", got)

	srv.Kill()
	_, err = redisCommand(t, addr, "PING")
	require.Error(t, err, "a killed server refuses connections")

	srv.Start()
	got, err = redisCommand(t, addr, "GET k")
	require.NoError(t, err)
	assert.Equal(t, "$2\r\nv1", got, "the append-only file kept the write across a SIGKILL")
}

func TestRedisRequirePass(t *testing.T) {
	t.Parallel()
	_, addr := StartRedis(t, "--requirepass", "s3cret")
	got, err := redisCommand(t, addr, "GET k")
	require.NoError(t, err)
	assert.True(t, strings.HasPrefix(got, "-NOAUTH"), got)
}

func TestEtcdKillAndStartKeepPortAndData(t *testing.T) {
	t.Parallel()
	srv, endpoint := StartEtcd(t)
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	ctx := t.Context()
	_, err = c.Put(ctx, "k", "v1")
	require.NoError(t, err)

	srv.Kill()
	require.Error(t, etcdHealth(endpoint), "a killed server does not answer")
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	_, err = c.Get(short, "k")
	require.Error(t, err)

	srv.Start()
	resp, err := c.Get(ctx, "k")
	require.NoError(t, err)
	require.Len(t, resp.Kvs, 1)
	assert.Equal(t, "v1", string(resp.Kvs[0].Value), "the WAL kept the write across a SIGKILL")
}

// fatalTB records Fatalf instead of stopping the goroutine.
type fatalTB struct {
	testing.TB
	msg string
}

func (f *fatalTB) Helper() {}

func (f *fatalTB) Fatalf(format string, args ...any) { f.msg = fmt.Sprintf(format, args...) }

func TestMissingBinaryNamesThePackage(t *testing.T) {
	t.Parallel()
	tests := []struct {
		desc, bin, pkg string
	}{
		{desc: "redis", bin: "redis-server-missing-for-test", pkg: "redis-server"},
		{desc: "etcd", bin: "etcd-missing-for-test", pkg: "etcd-server"},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			tb := &fatalTB{TB: t}
			lookPath(tb, tc.bin, tc.pkg)
			assert.Contains(t, tb.msg, "apt-get install -y "+tc.pkg)
			assert.Contains(t, tb.msg, tc.bin)
		})
	}
}
