// Package fetcher is the certfetch daemon: it keeps every configured
// certificate issued and renewed through the ACME engine (package acme),
// keeps its state in the store (package store: a directory, or Redis or etcd
// shared by several instances) and publishes certificates for Traefik
// (package output: its file provider, or its Redis and etcd providers). It
// alone translates the configuration (package config) into stores and
// outputs.
package fetcher

import (
	"cmp"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/certfetch/certfetch/acme"
	"github.com/certfetch/certfetch/fetcher/config"
	"github.com/certfetch/certfetch/fetcher/metrics"
	"github.com/certfetch/certfetch/fetcher/output"
	"github.com/certfetch/certfetch/fetcher/store"
)

const (
	// Failed attempts back off exponentially from backoffBase to backoffMax
	// (1, 2, 4 ... 60 minutes) with ±25 % jitter, so that many certificates
	// failing together (CA down) do not come back in lockstep.
	backoffBase = time.Minute
	backoffMax  = time.Hour

	// pendingRetryMin and pendingRetryMax bound how soon an order that
	// outlived its deadline is resumed: the CA's Retry-After within these
	// bounds, pendingRetryMin when it sent none.
	pendingRetryMin = time.Second
	pendingRetryMax = 5 * time.Minute

	// ariRecheck is how often the daemon asks the CA's renewal information
	// again when the CA sends no Retry-After (RFC 9773 §4.3 suggests a few
	// times a day).
	ariRecheck = 6 * time.Hour
)

// Options are the daemon's collaborators; the zero value works.
type Options struct {
	// Logger for progress and errors; nil: slog.Default().
	Logger *slog.Logger
	// Metrics to update; nil: none.
	Metrics *metrics.Metrics
	// Now is the clock; nil: time.Now. Tests move it to make renewals due.
	Now func() time.Time
	// LockTTL is the lease on a certificate while an instance works on it
	// (shared stores); 0: config.DefaultLockTTL.
	LockTTL time.Duration
}

// Daemon manages the certificates of one configuration. Its methods are safe
// for concurrent use; Run and Once must not run at the same time.
type Daemon struct {
	store   *store.Store
	log     *slog.Logger
	metrics *metrics.Metrics
	now     func() time.Time
	lockTTL time.Duration

	mu        sync.Mutex
	cfg       *config.Config
	out       output.PublishCloser
	pubs      *publications // what out has been given, by this process
	resolvers map[string]*resolver
	wake      chan struct{}
}

// New returns a Daemon for cfg, keeping state in st.
func New(cfg *config.Config, st *store.Store, opts Options) (*Daemon, error) {
	d := &Daemon{
		store:   st,
		log:     opts.Logger,
		metrics: opts.Metrics,
		now:     opts.Now,
		lockTTL: cmp.Or(opts.LockTTL, config.DefaultLockTTL),
		wake:    make(chan struct{}, 1),
	}
	if d.log == nil {
		d.log = slog.Default()
	}
	if d.now == nil {
		d.now = time.Now
	}
	if err := d.apply(cfg); err != nil {
		return nil, err
	}
	return d, nil
}

// apply installs cfg: resolvers whose settings changed are rebuilt, and the
// outputs of certificates no longer configured are removed.
func (d *Daemon) apply(cfg *config.Config) error {
	out, err := newOutput(cfg.Output, d.log)
	if err != nil {
		return err
	}
	resolvers := map[string]*resolver{}
	for name, rc := range cfg.Resolvers {
		if old := d.resolvers[name]; old != nil && old.sameConfig(rc) {
			resolvers[name] = old
			continue
		}
		r, err := newResolver(rc, d.store, d.log, d.metrics)
		if err != nil {
			closeAll(out, resolvers, d.resolvers)
			return err
		}
		resolvers[name] = r
	}

	d.mu.Lock()
	oldCfg, oldOut, oldResolvers := d.cfg, d.out, d.resolvers
	d.cfg, d.out, d.pubs, d.resolvers = cfg, out, newPublications(), resolvers
	d.mu.Unlock()

	if oldOut != nil {
		// A publication of the pass in flight may fail with the closed
		// output; the certificate stays marked unpublished and is published
		// on the next pass.
		if err := oldOut.Close(); err != nil {
			d.log.Warn("close the previous output", "err", err)
		}
	}

	for name, r := range oldResolvers {
		if resolvers[name] != r {
			r.close()
		}
	}
	if oldCfg != nil {
		for _, c := range oldCfg.Certificates {
			if !slices.ContainsFunc(cfg.Certificates, func(n *config.Certificate) bool { return n.Name == c.Name }) {
				d.log.Info("certificate removed from the configuration", "name", c.Name)
				if err := out.Remove(context.Background(), c.Name); err != nil {
					d.log.Error("remove output", "name", c.Name, "err", err)
				}
				d.metrics.DeleteCertificate(c.Name)
			}
		}
	}
	return nil
}

// Reload replaces the configuration (SIGHUP). Certificates added are issued
// and certificates removed are unpublished on the next pass, which Reload
// triggers at once. On error the old configuration stays in force.
func (d *Daemon) Reload(cfg *config.Config) error {
	if err := d.apply(cfg); err != nil {
		return err
	}
	select {
	case d.wake <- struct{}{}:
	default:
	}
	return nil
}

// Close releases the resolvers' listeners and the outputs' connections.
func (d *Daemon) Close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	closeAll(d.out, d.resolvers, nil)
}

// closeAll closes out and the resolvers of built that are not in keep (a
// failed apply closes what it built, but not what the running
// configuration still uses).
func closeAll(out output.PublishCloser, built, keep map[string]*resolver) {
	if out != nil {
		_ = out.Close()
	}
	for name, r := range built {
		if keep[name] != r {
			r.close()
		}
	}
}

// Once makes one pass over all certificates: it resumes, issues or renews
// what is due (asking the CA's renewal information when it is due). It returns
// the joined errors of the certificates that failed (an order still
// processing at the CA counts: the next run resumes it).
func (d *Daemon) Once(ctx context.Context) error {
	_, err := d.pass(ctx)
	return err
}

// Run keeps all certificates issued until ctx ends: it makes a pass, sleeps
// until the earliest next due time (or a Reload), and starts again. Failures
// are logged, recorded in the state and retried with back-off; they never
// touch a certificate in service. Run returns nil when ctx ends.
func (d *Daemon) Run(ctx context.Context, afterPass func(Summary)) error {
	for {
		next, err := d.pass(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			d.log.Warn("pass finished with failures", "err", err)
		}
		if afterPass != nil {
			afterPass(d.Summary())
		}
		wait := min(max(next.Sub(d.now()), time.Second), maxIdle)
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil
		case <-timer.C:
		case <-d.wake:
			timer.Stop()
		}
	}
}

// Summary is a short account of the managed certificates, for sd_notify STATUS.
type Summary struct {
	Certificates, Failing int
	NextRenewal           time.Time
}

func (s Summary) String() string {
	next := "none"
	if !s.NextRenewal.IsZero() {
		next = s.NextRenewal.UTC().Format(time.RFC3339)
	}
	return fmt.Sprintf("%d certificates, %d failing, next renewal %s", s.Certificates, s.Failing, next)
}

// Summary reads the state of every configured certificate.
func (d *Daemon) Summary() Summary {
	d.mu.Lock()
	certs := d.cfg.Certificates
	d.mu.Unlock()
	var s Summary
	for _, c := range certs {
		s.Certificates++
		rec, err := d.store.LoadCertificate(context.Background(), c.Name)
		if err != nil {
			continue
		}
		if rec.LastError != "" {
			s.Failing++
		}
		if !rec.RenewAt.IsZero() && (s.NextRenewal.IsZero() || rec.RenewAt.Before(s.NextRenewal)) {
			s.NextRenewal = rec.RenewAt
		}
	}
	return s
}

// pass runs one attempt for every due certificate, at most the resolver's
// maxConcurrentOrders at a time per resolver, and returns the earliest time a certificate needs
// attention again.
func (d *Daemon) pass(ctx context.Context) (time.Time, error) {
	d.mu.Lock()
	cfg, out, pubs, resolvers := d.cfg, d.out, d.pubs, d.resolvers
	d.mu.Unlock()

	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
		next = d.now().Add(maxIdle)
	)
	for _, cert := range cfg.Certificates {
		r := resolvers[cert.Resolver]
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case r.slots <- struct{}{}:
			case <-ctx.Done():
				return
			}
			defer func() { <-r.slots }()
			job := &job{d: d, cfg: cfg, cert: cert, r: r, out: out, pubs: pubs}
			when, err := job.run(ctx)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, fmt.Errorf("certificate %s: %w", cert.Name, err))
			}
			if when.Before(next) {
				next = when
			}
		}()
	}
	wg.Wait()
	if err := out.Prune(ctx, d.now()); err != nil {
		d.log.Error("prune superseded output files", "err", err)
	}
	return next, errors.Join(errs...)
}

// publications remembers which certificate this process published under
// each name through the current outputs. It starts empty, so after a
// start-up or an output change every certificate is published once more
// (publishing the same certificate again is cheap: the outputs skip or
// rewrite identical content), and with a shared store every instance
// publishes the certificates the others issued. Safe for concurrent use.
type publications struct {
	mu    sync.Mutex
	certs map[string][sha256.Size]byte
}

func newPublications() *publications {
	return &publications{certs: map[string][sha256.Size]byte{}}
}

// current reports whether certPEM is what was last published as name.
func (p *publications) current(name string, certPEM []byte) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	sum, ok := p.certs[name]
	return ok && sum == sha256.Sum256(certPEM)
}

func (p *publications) mark(name string, certPEM []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.certs[name] = sha256.Sum256(certPEM)
}

// backoff returns the wait after the n-th consecutive failure (n >= 1).
func backoff(n int) time.Duration {
	d := backoffMax
	if n < 7 { // 2^6 minutes is past backoffMax
		d = min(backoffBase<<(n-1), backoffMax)
	}
	jitter := 0.75 + rand.Float64()/2 // ±25 %
	return time.Duration(float64(d) * jitter)
}

// failureReason names err for metrics and status: a short fixed word.
func failureReason(err error) string {
	var (
		pending *acme.OrderPendingError
		limited *acme.RateLimitError
		down    *acme.UnreachableError
		authz   *acme.AuthorizationError
		invalid *acme.OrderInvalidError
	)
	switch {
	case errors.As(err, &pending):
		return "deadline"
	case errors.As(err, &limited):
		return "rate_limited"
	case errors.As(err, &down):
		return "unreachable"
	case errors.As(err, &authz):
		return "authorization"
	case errors.As(err, &invalid):
		return "order_invalid"
	default:
		return "other"
	}
}

// retryAfter is the wait the CA asked for in err, if any.
func retryAfter(err error) time.Duration {
	var (
		pending *acme.OrderPendingError
		limited *acme.RateLimitError
		down    *acme.UnreachableError
	)
	switch {
	case errors.As(err, &pending):
		return pending.RetryAfter
	case errors.As(err, &limited):
		return limited.RetryAfter
	case errors.As(err, &down):
		return down.RetryAfter
	}
	return 0
}
