package acme_test

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/certfetch/certfetch/acme"
	"github.com/certfetch/certfetch/internal/testkit/testca"
)

// pathCounter counts requests by the first segment of their path (Pebble's layout:
// /dir, /nonce-plz, /order-plz, /authZ/, /chalZ/, /finalize-order/, /my-order/, /certZ/).
type pathCounter struct {
	next http.RoundTripper

	mu     sync.Mutex
	counts map[string]int
}

func (p *pathCounter) RoundTrip(req *http.Request) (*http.Response, error) {
	seg, _, _ := strings.Cut(strings.TrimPrefix(req.URL.Path, "/"), "/")

	p.mu.Lock()
	p.counts[seg]++
	p.mu.Unlock()

	return p.next.RoundTrip(req)
}

func (p *pathCounter) take() (map[string]int, int) {
	p.mu.Lock()
	defer p.mu.Unlock()

	counts, total := p.counts, 0
	for _, n := range counts {
		total += n
	}

	p.counts = map[string]int{}

	return counts, total
}

// TestAttemptsShareDirectoryAndNonces: the attempts of one Client read the directory and
// fetch a nonce once between them; every later attempt costs only the order's own
// requests (new-order, authorization, challenge, authorization poll, finalize, order poll,
// download), fewer than lego's client needs for the same order.
func TestAttemptsShareDirectoryAndNonces(t *testing.T) {
	t.Parallel()

	s := newSetup(t, testca.Options{})
	cfg := s.config(t)
	counter := &pathCounter{next: cfg.Transport, counts: map[string]int{}}
	cfg.Transport = counter
	c := s.client(t, cfg)

	first, _ := counter.take()
	assert.Equal(t, 1, first["dir"], "registration reads the directory")

	const orders = 5

	for i := range orders {
		_, _, err := obtain(t, c, acme.Request{Names: []string{fmt.Sprintf("n%d.example.com", i)}, Profile: testca.DefaultProfile}, 30*time.Second)
		require.NoError(t, err)
	}

	counts, total := counter.take()
	t.Logf("requests for %d orders: %d (%.1f per order): %v", orders, total, float64(total)/orders, counts)
	assert.Zero(t, counts["dir"], "the directory comes from the cache")
	assert.Zero(t, counts["nonce-plz"], "nonces come from the pool")
	assert.LessOrEqual(t, total, 7*orders, "at most 7 requests per order against an instant CA")
}
