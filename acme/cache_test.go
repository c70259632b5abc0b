package acme

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestCACacheNonces(t *testing.T) {
	t.Parallel()

	const dirURL = "https://ca.test/dir"

	newNonceReq := httptest.NewRequest(http.MethodHead, "https://ca.test/nonce", nil)

	// The pool is given as ages, not times: the subtests are parallel and may start long
	// after the table is built (behind the package's slow tests), and a time taken here
	// could be older than nonceTTL by then.
	type pooled struct {
		value string
		age   time.Duration
	}

	tests := []struct {
		desc string
		pool []pooled // oldest first
		want []string // nonces answered, in order; then the pool is empty
	}{
		{desc: "empty pool: to the network"},
		{desc: "newest first, each once", pool: []pooled{{"a", 0}, {"b", 0}}, want: []string{"b", "a"}},
		{desc: "stale nonces are dropped", pool: []pooled{{"old", 2 * nonceTTL}, {"new", 0}}, want: []string{"new"}},
		{desc: "all stale", pool: []pooled{{"x", nonceTTL}}},
	}

	for _, test := range tests {
		t.Run(test.desc, func(t *testing.T) {
			t.Parallel()

			c := newCACache(dirURL, 0)
			c.newNonceURL = "https://ca.test/nonce"

			now := time.Now()
			for _, p := range test.pool {
				c.nonces = append(c.nonces, pooledNonce{value: p.value, at: now.Add(-p.age)})
			}

			for _, want := range test.want {
				resp := c.answer(newNonceReq)
				require.NotNil(t, resp)
				assert.Equal(t, want, resp.Header.Get("Replay-Nonce"))
			}

			assert.Nil(t, c.answer(newNonceReq), "once the pool is empty, the request goes to the CA")
		})
	}
}

func TestCACacheObserve(t *testing.T) {
	t.Parallel()

	const dirURL = "https://ca.test/dir"

	c := newCACache(dirURL, 0)

	dirResp := &http.Response{StatusCode: http.StatusOK, Header: http.Header{"Replay-Nonce": {"n1"}},
		Body: http.NoBody}
	dirResp.Body = nopBody(`{"newNonce":"https://ca.test/nonce","newAccount":"https://ca.test/acct","newOrder":"https://ca.test/order"}`)
	require.NoError(t, c.observe(httptest.NewRequest(http.MethodGet, dirURL, nil), dirResp))
	assert.Empty(t, dirResp.Header.Get("Replay-Nonce"), "a response's nonce goes to the pool, not to lego")

	cached := c.answer(httptest.NewRequest(http.MethodGet, dirURL, nil))
	require.NotNil(t, cached, "the directory is answered from the cache")

	nonce := c.answer(httptest.NewRequest(http.MethodHead, "https://ca.test/nonce", nil))
	require.NotNil(t, nonce)
	assert.Equal(t, "n1", nonce.Header.Get("Replay-Nonce"))

	fromCA := &http.Response{StatusCode: http.StatusOK, Header: http.Header{"Replay-Nonce": {"n2"}}, Body: http.NoBody}
	require.NoError(t, c.observe(httptest.NewRequest(http.MethodHead, "https://ca.test/nonce", nil), fromCA))
	assert.Equal(t, "n2", fromCA.Header.Get("Replay-Nonce"), "lego reads the nonce of a newNonce answer itself")

	c.fetched = time.Now().Add(-directoryTTL)
	assert.Nil(t, c.answer(httptest.NewRequest(http.MethodGet, dirURL, nil)), "an old directory is read again")
}

func TestCACacheRateLimit(t *testing.T) {
	t.Parallel()

	c := newCACache("https://ca.test/dir", 1) // one request per second, burst 1
	require.NoError(t, c.wait(context.Background()), "the burst passes at once")

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()

	require.ErrorIs(t, c.wait(ctx), context.DeadlineExceeded, "the next one waits for the limit, and the wait ends with the attempt")
	assert.NoError(t, newCACache("https://ca.test/dir", 0).wait(ctx), "0 means no limit")
}

func nopBody(s string) *nopReadCloser { return &nopReadCloser{Reader: strings.NewReader(s)} }

type nopReadCloser struct{ *strings.Reader }

func (nopReadCloser) Close() error { return nil }
