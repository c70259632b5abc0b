package metrics_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/certfetch/certfetch/fetcher/metrics"
)

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), nil))
}

// get fetches url with a client that does not keep connections, so that a
// shut-down server cannot be reached through an idle one.
func get(t *testing.T, url string) (*http.Response, string) {
	t.Helper()
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	resp, err := client.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp, string(body)
}

// requireRefused waits until nothing accepts connections on addr any more.
func requireRefused(t *testing.T, addr net.Addr) {
	t.Helper()
	require.Eventually(t, func() bool {
		conn, err := net.Dial("tcp", addr.String())
		if err != nil {
			return errors.Is(err, syscall.ECONNREFUSED)
		}
		conn.Close()
		return false
	}, 10*time.Second, 10*time.Millisecond)
}

func TestServe(t *testing.T) {
	t.Parallel()
	m := metrics.New()
	m.OrderPoll("internal")
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()

	addr, err := metrics.Serve(ctx, "127.0.0.1:0", m.Handler(), testLogger(t))
	require.NoError(t, err)
	tcp, ok := addr.(*net.TCPAddr)
	require.True(t, ok, "bound address %v is not TCP", addr)
	assert.True(t, tcp.IP.IsLoopback())
	assert.NotZero(t, tcp.Port)

	resp, body := get(t, "http://"+addr.String()+"/healthz")
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, "ok\n", body)
	resp, body = get(t, "http://"+addr.String()+"/metrics")
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Contains(t, body, `certfetch_order_polls_total{resolver="internal"} 1`)

	cancel()
	requireRefused(t, addr)
}

func TestServeFinishesRequestsInFlight(t *testing.T) {
	t.Parallel()
	entered, release := make(chan struct{}), make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		close(entered)
		<-release
		_, _ = io.WriteString(w, "done")
	})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	addr, err := metrics.Serve(ctx, "127.0.0.1:0", h, testLogger(t))
	require.NoError(t, err)

	type result struct {
		status int
		body   string
	}
	done := make(chan result, 1)
	go func() {
		resp, err := http.Get("http://" + addr.String() + "/slow")
		if err != nil {
			done <- result{body: err.Error()}
			return
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		done <- result{status: resp.StatusCode, body: string(body)}
	}()
	select {
	case <-entered:
	case r := <-done:
		require.FailNow(t, "request ended before reaching the handler", "%+v", r)
	}

	cancel()
	requireRefused(t, addr) // shutting down: no new connections...
	close(release)          // ...but the request in flight completes.
	assert.Equal(t, result{status: http.StatusOK, body: "done"}, <-done)
}

func TestServeListenError(t *testing.T) {
	t.Parallel()
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { busy.Close() })

	tests := []struct {
		desc string
		addr string
	}{
		{desc: "address in use", addr: busy.Addr().String()},
		{desc: "malformed address", addr: "127.0.0.1:notaport"},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			t.Parallel()
			addr, err := metrics.Serve(t.Context(), tt.addr, http.NotFoundHandler(), testLogger(t))
			require.ErrorContains(t, err, "metrics: listen on")
			assert.Nil(t, addr)
		})
	}
}
