package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/certfetch/certfetch/demo"
	"github.com/certfetch/certfetch/fetcher"
	"github.com/certfetch/certfetch/fetcher/config"
	"github.com/certfetch/certfetch/fetcher/store"
	"github.com/certfetch/certfetch/internal/testkit/testca"
)

// demoDomain is the name the demo certificate is issued for; the test CA's
// DNS resolves every name to 127.0.0.1.
const demoDomain = "demo.certfetch.test"

// cmdDemo runs the whole chain on this machine: a local test CA (Pebble)
// that needs --ca-delay after finalize, the plugin answering its HTTP-01
// challenges, and the daemon with a --timeout deadline that resumes the
// order the CA is still processing instead of abandoning it.
func cmdDemo(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("certfetch demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	caDelay := fs.Duration("ca-delay", 42*time.Second, "how long the test CA needs after finalize (the reported case: 42s)")
	timeout := fs.Duration("timeout", 30*time.Second, "order deadline of one attempt (Traefik's fixed value: 30s)")
	retryAfter := fs.Duration("retry-after", 5*time.Second, "Retry-After the CA sends while it processes the order")
	dir := fs.String("dir", "", "directory for state and output (default: a new temporary directory)")
	fs.Usage = func() {
		fmt.Fprint(stderr, "Usage: certfetch demo [flags]\n\nIssues a certificate from a local slow test CA through the plugin, with the deadline and resume machinery.\n\n")
		fs.PrintDefaults()
	}
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := runDemo(ctx, demoOptions{caDelay: *caDelay, timeout: *timeout, retryAfter: *retryAfter, dir: *dir}, stdout); err != nil {
		fmt.Fprintf(stderr, "certfetch demo: %v\n", err)
		return exitFailure
	}
	return exitOK
}

type demoOptions struct {
	caDelay, timeout, retryAfter time.Duration
	dir                          string
}

func runDemo(ctx context.Context, o demoOptions, out io.Writer) error {
	start := time.Now()
	var mu sync.Mutex // say runs on the daemon's goroutine and on ours
	say := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(out, "[%5.1fs] %s\n", time.Since(start).Seconds(), fmt.Sprintf(format, args...))
	}
	dir := o.dir
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", "certfetch-demo-"); err != nil {
			return err
		}
	}
	sb, cfg, err := demo.Start(demo.Options{
		Dir:     dir,
		CA:      testca.Options{Mode: testca.Async, Delay: o.caDelay, RetryAfter: o.retryAfter},
		Timeout: o.timeout,
	}, []string{demoDomain})
	if err != nil {
		return err
	}
	defer sb.Close()
	st := sb.Store
	say("test CA (Pebble) at %s; it needs %s after finalize and answers Retry-After: %s", sb.CA.DirectoryURL(), o.caDelay, o.retryAfter)
	say("plugin (thumbprint mode, %s) answers HTTP-01 on %s", sb.Thumbprint, sb.HTTPAddr())
	say("certfetch: deadline %s per attempt; config %s", o.timeout, sb.ConfigPath)

	logger := slog.New(slog.NewTextHandler(out, &slog.HandlerOptions{Level: slog.LevelError}))
	issued, err := runUntilPublished(ctx, cfg, st, logger, say)
	if err != nil {
		return err
	}
	stats := sb.CA.Stats()
	say("certificate issued for %s, valid until %s", demoDomain, issued.NotAfter.UTC().Format(time.RFC3339))
	say("the CA saw %d new-order request(s), %d order polls, %d certificate download(s)", stats.NewOrders, stats.OrderPolls, stats.CertDownloads)
	say("Traefik file-provider output (point providers.file.directory at it):")
	yml := filepath.Join(cfg.Output.File.Directory, cfg.Certificates[0].Name+".yml")
	fmt.Fprintf(out, "    %s\n", yml)
	entries, _ := os.ReadDir(filepath.Join(cfg.Output.File.Directory, "certs"))
	for _, e := range entries {
		fmt.Fprintf(out, "    %s\n", filepath.Join(cfg.Output.File.Directory, "certs", e.Name()))
	}
	if stats.NewOrders != 1 {
		return fmt.Errorf("the CA saw %d orders, want exactly 1", stats.NewOrders)
	}
	return nil
}

// runUntilPublished runs the daemon until the demo certificate is published, telling
// what happens to it (from the daemon's steps) and printing a line every few seconds
// while the CA is slow.
func runUntilPublished(ctx context.Context, cfg *config.Config, st *store.Store, logger *slog.Logger, say func(string, ...any)) (*store.Certificate, error) {
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	attempts := 0
	observe := func(e fetcher.Event) {
		switch e.Step {
		case fetcher.StepOrdering:
			attempts++
			say("attempt %d: ordering (or resuming the journaled order)", attempts)
		case fetcher.StepPending:
			say("attempt %d ended at its deadline: %v", attempts, e.Err)
			say("the order stays journaled and is resumed after the CA's Retry-After")
		case fetcher.StepFailed:
			say("attempt %d failed: %v", attempts, e.Err)
		case fetcher.StepStored:
			say("certificate stored in the state directory")
		case fetcher.StepPublished:
			cancel()
		}
	}
	d, err := fetcher.New(cfg, st, fetcher.Options{Logger: logger, Observe: observe})
	if err != nil {
		return nil, err
	}
	defer d.Close()
	done := make(chan error, 1)
	go func() { done <- d.Run(runCtx, nil) }()
	ticker := time.NewTicker(5 * time.Second)
	defer ticker.Stop()
	for {
		select {
		case err := <-done:
			if err != nil {
				return nil, err
			}
			rec, err := st.LoadCertificate(ctx, demoDomain)
			if err != nil || len(rec.CertPEM) == 0 {
				return nil, errors.Join(errors.New("stopped before the certificate was issued"), err, ctx.Err())
			}
			return rec, nil
		case <-ticker.C:
			say("waiting for the CA ...")
		}
	}
}
