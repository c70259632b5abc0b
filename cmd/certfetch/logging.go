package main

import (
	"context"
	"io"
	"log/slog"
	"sync"

	"github.com/certfetch/certfetch/fetcher/config"
)

// logging is the process's log output, whose level and format a reload (SIGHUP) changes
// without rebuilding the loggers handed out before: every logger derived from Logger
// writes through the handler in force when it logs.
type logging struct {
	w     io.Writer
	level slog.LevelVar

	mu   sync.Mutex
	base slog.Handler
	gen  uint64 // bumped at every apply, so derived handlers rebuild
}

func newLogging(l config.Log, w io.Writer) *logging {
	lg := &logging{w: w}
	lg.apply(l)
	return lg
}

// apply switches to l's level and format.
func (lg *logging) apply(l config.Log) {
	lg.level.Set(l.Level)
	opts := &slog.HandlerOptions{Level: &lg.level, ReplaceAttr: readableDurations}
	var h slog.Handler = slog.NewTextHandler(lg.w, opts)
	if l.Format == config.LogFormatJSON {
		h = slog.NewJSONHandler(lg.w, opts)
	}
	lg.mu.Lock()
	lg.base, lg.gen = h, lg.gen+1
	lg.mu.Unlock()
}

func (lg *logging) current() (slog.Handler, uint64) {
	lg.mu.Lock()
	defer lg.mu.Unlock()
	return lg.base, lg.gen
}

// Logger returns a logger writing through the handler in force.
func (lg *logging) Logger() *slog.Logger { return slog.New(&switchHandler{lg: lg}) }

// readableDurations writes durations as Go durations ("1m30s") instead of slog's JSON
// nanoseconds (the text handler already does), so that JSON logs read like the text ones.
func readableDurations(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindDuration {
		return slog.String(a.Key, a.Value.Duration().String())
	}
	return a
}

// switchHandler is a slog.Handler that writes through logging's current handler, with
// the attributes and groups added to it replayed on that handler.
type switchHandler struct {
	lg  *logging
	ops []func(slog.Handler) slog.Handler // WithAttrs/WithGroup, in order

	mu     sync.Mutex
	gen    uint64
	cached slog.Handler
}

func (s *switchHandler) handler() slog.Handler {
	base, gen := s.lg.current()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cached == nil || s.gen != gen {
		h := base
		for _, op := range s.ops {
			h = op(h)
		}
		s.cached, s.gen = h, gen
	}
	return s.cached
}

func (s *switchHandler) Enabled(ctx context.Context, level slog.Level) bool {
	return level >= s.lg.level.Level()
}

func (s *switchHandler) Handle(ctx context.Context, r slog.Record) error {
	return s.handler().Handle(ctx, r)
}

func (s *switchHandler) with(op func(slog.Handler) slog.Handler) slog.Handler {
	ops := append(append([]func(slog.Handler) slog.Handler(nil), s.ops...), op)
	return &switchHandler{lg: s.lg, ops: ops}
}

func (s *switchHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return s.with(func(h slog.Handler) slog.Handler { return h.WithAttrs(attrs) })
}

func (s *switchHandler) WithGroup(name string) slog.Handler {
	return s.with(func(h slog.Handler) slog.Handler { return h.WithGroup(name) })
}
