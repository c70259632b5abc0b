package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"
)

const (
	// readHeaderTimeout bounds how long a client may take to send its
	// request headers, so idle or slowloris connections cannot pile up.
	// Prometheus sends its few headers at once; 5 s is ample even over a
	// slow link and shorter than Prometheus' default 10 s scrape timeout.
	readHeaderTimeout = 5 * time.Second
	// shutdownTimeout bounds the graceful shutdown once ctx ends: a scrape
	// takes milliseconds, so in-flight requests finish well within it, and a
	// stuck client cannot hold up the daemon's exit longer than this.
	shutdownTimeout = 5 * time.Second
)

// Serve listens on addr (such as "127.0.0.1:9115" or "127.0.0.1:0"), serves
// h there in the background and returns the bound address. When ctx ends it
// shuts the server down: the listener closes at once, requests in flight get
// up to shutdownTimeout to finish, then the remaining connections are closed.
// Errors after a successful listen are logged to logger, which must not be
// nil.
func Serve(ctx context.Context, addr string, h http.Handler, logger *slog.Logger) (net.Addr, error) {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics: listen on %q: %w", addr, err)
	}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: readHeaderTimeout,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	go func() {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			logger.Error("metrics server stopped", "addr", ln.Addr().String(), "err", err)
		}
	}()
	go func() {
		<-ctx.Done()
		shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
		defer cancel()
		if err := srv.Shutdown(shutdownCtx); err != nil {
			logger.Warn("metrics server: graceful shutdown timed out, closing connections", "addr", ln.Addr().String(), "err", err)
			_ = srv.Close()
		}
	}()
	return ln.Addr(), nil
}
