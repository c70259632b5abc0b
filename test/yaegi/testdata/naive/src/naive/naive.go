// Package naive is the baseline the benchmarks compare against: the obvious
// interpreted middleware, whose every request runs through Yaegi (prefix
// check, then next.ServeHTTP).
package naive

import (
	"context"
	"io"
	"net/http"
	"strings"
)

const prefix = "/.well-known/acme-challenge/"

// Config is empty: the baseline answers a fixed thumbprint.
type Config struct{}

// CreateConfig returns the empty configuration.
func CreateConfig() *Config { return &Config{} }

// New returns the interpreted handler.
func New(_ context.Context, next http.Handler, _ *Config, _ string) (http.Handler, error) {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, prefix) {
			next.ServeHTTP(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, strings.TrimPrefix(r.URL.Path, prefix)+".NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs")
	}), nil
}
