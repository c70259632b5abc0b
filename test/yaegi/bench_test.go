package yaegi_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/certfetch/certfetch"
	"github.com/stretchr/testify/require"
)

// Benchmarks of the middleware alone (no network): the plugin compiled, the
// plugin interpreted by Yaegi as Traefik loads it, and the naive interpreted
// baseline in testdata/naive. Compare with benchstat:
//
//	go test -run '^$' -bench . -benchmem -count 10 > bench.txt
//	benchstat -col /impl bench.txt

// discardWriter is a ResponseWriter that costs nothing, so the numbers are
// the middleware's own.
type discardWriter struct{ h http.Header }

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *discardWriter) WriteHeader(int)             {}

var noop = http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})

func benchHandlers(b *testing.B) map[string]http.Handler {
	b.Helper()
	compiled, err := certfetch.New(context.Background(), noop, &certfetch.Config{Thumbprint: thumbprint}, "bench")
	require.NoError(b, err)
	interpreted, err := loadPlugin(b).newHandler(map[string]any{"thumbprint": thumbprint}, noop)
	require.NoError(b, err)
	naive, err := interpret(b, "testdata/naive", "naive", "").newHandler(nil, noop)
	require.NoError(b, err)
	return map[string]http.Handler{"compiled": compiled, "interpreted": interpreted, "naive-interpreted": naive}
}

func benchmarkPath(b *testing.B, target string) {
	handlers := benchHandlers(b)
	for _, impl := range []string{"compiled", "interpreted", "naive-interpreted"} {
		h := handlers[impl]
		b.Run("impl="+impl, func(b *testing.B) {
			req := httptest.NewRequest(http.MethodGet, target, nil)
			w := &discardWriter{h: http.Header{}}
			b.ReportAllocs()
			for b.Loop() {
				h.ServeHTTP(w, req)
			}
		})
	}
}

func BenchmarkPassThrough(b *testing.B) { benchmarkPath(b, "/api/v1/items?id=42") }

func BenchmarkChallenge(b *testing.B) { benchmarkPath(b, challengeDir+token) }
