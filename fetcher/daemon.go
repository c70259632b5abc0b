// Package fetcher is the certfetch daemon: it keeps every configured certificate issued,
// published and renewed through the ACME engine (package acme), keeps its state in the
// store (package store: a directory, or Redis or etcd shared by several instances) and
// publishes certificates for Traefik (package output: its file provider, or its Redis and
// etcd providers). It alone translates the configuration (package config) into stores
// and outputs.
//
// Each certificate's life is a small state machine (see State) whose state lives in the
// store; a visit (visit.go) is the only thing that moves it. The daemon schedules every
// certificate on its own (scheduler.go): one certificate's deadline, back-off or lease
// never delays another's.
package fetcher

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/certfetch/certfetch/fetcher/config"
	"github.com/certfetch/certfetch/fetcher/metrics"
	"github.com/certfetch/certfetch/fetcher/store"
	"github.com/certfetch/certfetch/fetcher/traefik"
	"github.com/certfetch/certfetch/internal/wait"
)

// pruneInterval is how often superseded output files are pruned while the daemon runs:
// often enough that the grace period (10 minutes by default) is not overshot by much.
const pruneInterval = 5 * time.Minute

// Options are the daemon's collaborators; the zero value works.
type Options struct {
	// Logger for progress and errors; nil: slog.Default().
	Logger *slog.Logger
	// Metrics to update; nil: none.
	Metrics *metrics.Metrics
	// Now is the clock; nil: time.Now. Tests move it to make renewals due.
	Now func() time.Time
	// LockTTL is the lease on a certificate while an instance works on it (shared
	// stores); 0: config.DefaultLockTTL.
	LockTTL time.Duration
	// Observe, when set, is called at every Step of every certificate, on the goroutine
	// of its visit; it must be quick.
	Observe func(Event)
}

// Daemon manages the certificates of one configuration. Its methods are safe for
// concurrent use; Run and Once must not run at the same time.
type Daemon struct {
	store      *store.Store
	log        *slog.Logger
	metrics    *metrics.Metrics
	now        func() time.Time
	lockTTL    time.Duration
	observe    func(Event)
	responders *responders
	sched      *scheduler

	mu        sync.Mutex
	cfg       *config.Config
	certs     map[string]*config.Certificate
	order     []string // certs' names: the file's in file order, then the discovered
	out       *outputs
	resolvers map[string]*resolver
	memos     map[string]*memo
	views     map[string]view
	onVisit   func()

	// Discovery of Traefik's routers (discovery.go); zero without a traefik section.
	traefik    *traefik.Client
	discovered *store.Discovery // nil until read from the store
	// discoveryReady is set by the first successful read of Traefik's API in this
	// process: until then a name the outputs serve may be a discovered certificate
	// not known yet (an imported one), so the sweep waits.
	discoveryReady bool
	// discoveryUnsaved is set while the store refused the last discovery record: the
	// next read writes it again even when nothing changed.
	discoveryUnsaved bool
	pollNow          chan struct{}

	reqs requestBook // operators' requests (renew.go)
}

// view is what Summary knows of a certificate: the outcome of its last visit.
type view struct {
	state   State
	failing bool
	renewAt time.Time
}

// New returns a Daemon for cfg, keeping state in st. It builds the outputs and resolvers
// (a listen-mode resolver binds its address here) but contacts no CA.
func New(cfg *config.Config, st *store.Store, opts Options) (*Daemon, error) {
	d := &Daemon{
		store:   st,
		log:     cmp.Or(opts.Logger, slog.Default()),
		metrics: opts.Metrics,
		now:     opts.Now,
		lockTTL: cmp.Or(opts.LockTTL, config.DefaultLockTTL),
		observe: opts.Observe,
		memos:   map[string]*memo{},
		views:   map[string]view{},
		pollNow: make(chan struct{}, 1),
	}
	if d.now == nil {
		d.now = time.Now
	}
	d.responders = newResponders(d.log)
	d.sched = newScheduler(d.now, d.visitScheduled, d.withdraw)
	if err := d.apply(cfg); err != nil {
		return nil, err
	}
	return d, nil
}

// apply installs cfg. Resolvers and outputs whose settings did not change are kept, with
// their ACME clients and what they published.
func (d *Daemon) apply(cfg *config.Config) error {
	d.mu.Lock()
	oldOut, oldResolvers := d.out, d.resolvers
	d.mu.Unlock()

	out := oldOut
	if out == nil || !out.same(cfg.Output) {
		pub, err := OpenOutput(cfg.Output, d.log)
		if err != nil {
			return err
		}
		out = newOutputs(cfg.Output, pub)
	}
	resolvers := map[string]*resolver{}
	for name, rc := range cfg.Resolvers {
		if old := oldResolvers[name]; old != nil && old.sameConfig(rc) {
			resolvers[name] = old
			continue
		}
		r, err := newResolver(rc, d.store, d.responders, d.log, d.metrics)
		if err != nil {
			for n, r := range resolvers {
				if oldResolvers[n] != r {
					r.close()
				}
			}
			if out != oldOut {
				_ = out.Close()
			}
			return err
		}
		resolvers[name] = r
	}

	client, err := d.traefikClientFor(cfg)
	if err != nil {
		return err
	}

	d.mu.Lock()
	d.cfg, d.out, d.resolvers, d.traefik = cfg, out, resolvers, client
	d.rebuildLocked()
	d.mu.Unlock()

	if oldOut != nil && oldOut != out {
		// A publication in flight may fail with the closed outputs; every certificate is
		// due at once and published again through the new ones.
		if err := oldOut.Close(); err != nil {
			d.log.Warn("close the previous outputs", "err", err)
		}
	}
	for name, r := range oldResolvers {
		if resolvers[name] != r {
			r.close()
		}
		if resolvers[name] == nil {
			d.metrics.DeleteResolver(name)
		}
	}
	for name, rc := range cfg.Resolvers {
		d.metrics.InitResolver(name, reasons, phases)
		d.metrics.SetOrderTimeout(name, cmp.Or(rc.Timeout, cfg.Timeout))
	}
	return nil
}

// rebuildLocked makes certs and order the file's certificates and the discovered ones;
// d.mu is held.
func (d *Daemon) rebuildLocked() {
	doc := d.discovered
	if doc == nil || d.cfg.Traefik == nil {
		doc = &store.Discovery{}
	}
	all := managed(d.cfg, doc)
	d.certs = make(map[string]*config.Certificate, len(all))
	d.order = make([]string, 0, len(all))
	for _, c := range all {
		d.certs[c.Name] = c
		d.order = append(d.order, c.Name)
	}
}

// certificateNamed returns the certificate certs holds under name, nil when none.
func certificateNamed(certs []*config.Certificate, name string) *config.Certificate {
	i := slices.IndexFunc(certs, func(c *config.Certificate) bool { return c.Name == name })
	if i < 0 {
		return nil
	}
	return certs[i]
}

// names returns the managed certificate names: the file's in file order, then the
// discovered ones.
func (d *Daemon) names() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.order)
}

// configured returns the set of configured certificate names.
func (d *Daemon) configured() map[string]bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	set := make(map[string]bool, len(d.certs))
	for name := range d.certs {
		set[name] = true
	}
	return set
}

// Reload replaces the configuration (SIGHUP). Added certificates are visited at once,
// removed ones withdrawn from the outputs (after any visit of theirs in flight), changed
// ones visited again at once for a new order; a certificate whose configuration did not
// change keeps its schedule and its order in flight, and is visited at once too, which
// costs one record read: its stored certificate is published if this process does not
// serve it yet (another instance on a shared store renewed or revoked it: `systemctl
// reload` on every instance publishes the replacement at once). On error the old
// configuration stays in force.
func (d *Daemon) Reload(ctx context.Context, cfg *config.Config) error {
	if err := d.apply(cfg); err != nil {
		return err
	}
	d.sched.set(ctx, d.names())
	d.sched.due(d.names()...)
	d.sweep(ctx)
	d.pollSoon()
	return nil
}

// Close releases the resolvers' listeners and the outputs' connections.
func (d *Daemon) Close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.out != nil {
		_ = d.out.Close()
	}
	for _, r := range d.resolvers {
		r.close()
	}
}

// Run keeps all certificates issued, published and renewed until ctx ends: each is
// visited when it is due (scheduler.go), outputs are swept of certificates no longer
// configured at the start and on every reload, and superseded files are pruned every
// pruneInterval. onVisit, when set, is called after every visit (for sd_notify STATUS; it
// should rate-limit itself). Failures are logged, recorded in the state and retried with
// back-off; they never touch a certificate in service. Run returns nil when ctx ends,
// after the visits in flight stopped (an order in flight stays journaled).
func (d *Daemon) Run(ctx context.Context, onVisit func()) error {
	d.mu.Lock()
	d.onVisit = onVisit
	d.mu.Unlock()
	if d.discovering() {
		// The first read comes before the first visit, so that a discovered certificate
		// is neither withdrawn by the sweep nor left unvisited until the next read.
		_ = d.startDiscovery(ctx)
	}
	// The loop runs without a traefik section too: a reload may add one.
	go d.discover(ctx)
	d.cleanUpLeftovers(ctx)
	d.sched.set(ctx, d.names())
	d.HandleRequests(ctx)
	d.sweep(ctx)
	go wait.Every(ctx, pruneInterval, func() { d.prune(ctx) })
	d.sched.run(ctx)
	return nil
}

// Once does in one go what Run does over time: every certificate is visited once
// (published, its renewal information asked when due, issued, resumed or renewed when
// due, waiting for a journaled order's Retry-After when it ends within the deadline), the
// outputs are swept of certificates no longer configured, and superseded files are
// pruned. It returns the joined errors of the certificates that are not in order: an
// attempt failed, a failure's back-off is still running, a publication failed, or an
// order outlived its deadline (the next run resumes it).
func (d *Daemon) Once(ctx context.Context) error {
	var discoveryErr error
	if d.discovering() {
		discoveryErr = d.startDiscovery(ctx)
	}
	d.cleanUpLeftovers(ctx)
	d.HandleRequests(ctx)
	names := d.names()
	errs := make([]error, len(names), len(names)+1)
	var wg sync.WaitGroup
	slots := make(chan struct{}, maxVisits)
	for i, name := range names {
		wg.Go(func() {
			slots <- struct{}{}
			defer func() { <-slots }()
			if res := d.visit(ctx, name, true); res.err != nil {
				errs[i] = fmt.Errorf("certificate %s: %w", name, res.err)
			}
		})
	}
	wg.Wait()
	d.sweep(ctx)
	d.prune(ctx)
	return errors.Join(append(errs, discoveryErr)...)
}

// visitScheduled is the scheduler's visit.
func (d *Daemon) visitScheduled(ctx context.Context, name string) time.Time {
	res := d.visit(ctx, name, false)
	d.mu.Lock()
	onVisit := d.onVisit
	d.mu.Unlock()
	if onVisit != nil {
		onVisit()
	}
	return res.next
}

// visit visits the configured certificate name with the configuration in force now,
// carrying out the operator's request pending for it, if any.
func (d *Daemon) visit(ctx context.Context, name string, once bool) result {
	v := d.newVisit(name, once)
	if v == nil {
		// Removed meanwhile: the scheduler withdraws it after this visit.
		return result{next: d.now().Add(maxIdle)}
	}
	v.force = d.reqs.get(name)
	res := v.run(ctx)
	d.record(name, v, res)
	d.carried(ctx, v)
	return res
}

// newVisit prepares a visit of the configured certificate name with the configuration
// in force now; nil when name is not configured.
func (d *Daemon) newVisit(name string, once bool) *visit {
	d.mu.Lock()
	cfg, cert, out := d.cfg, d.certs[name], d.out
	var r *resolver
	if cert != nil {
		r = d.resolvers[cert.Resolver]
	}
	m := d.memos[name]
	if m == nil && cert != nil {
		m = &memo{}
		d.memos[name] = m
	}
	d.mu.Unlock()
	if cert == nil {
		return nil
	}
	return &visit{d: d, cfg: cfg, cert: cert, r: r, out: out, memo: m, once: once,
		log: d.log.With("name", name, "resolver", cert.Resolver)}
}

// record keeps the outcome of a visit for Summary.
func (d *Daemon) record(name string, v *visit, res result) {
	vw := view{failing: res.err != nil}
	if v.last != nil {
		vw.renewAt = v.last.RenewAt
		ordering := v.last.Reason == reasonDeadline && !v.last.RetryAt.IsZero()
		vw.state = deriveState(v.last, v.cert, ordering, v.out.current(name, v.last.CertPEM), d.now())
	}
	// At debug level every visit says where the certificate stands and when it is looked
	// at next: the per-certificate schedule, readable in the log.
	v.log.Debug("certificate visited", "state", vw.state, "next", res.next, "err", res.err)
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.certs[name] != nil {
		d.views[name] = vw
	}
}

// withdraw removes a certificate that is no longer configured from the outputs: the
// scheduler's removed, and the sweep's. Its record stays in the store.
func (d *Daemon) withdraw(ctx context.Context, name string) {
	d.mu.Lock()
	out := d.out
	delete(d.memos, name)
	delete(d.views, name)
	d.mu.Unlock()
	d.metrics.DeleteCertificate(name)
	if err := out.withdraw(ctx, name); err != nil {
		d.log.Error("cannot withdraw a certificate removed from the configuration", "name", name, "err", err)
		return
	}
	d.log.Info("certificate removed from the configuration: withdrawn", "name", name)
	d.emit(name, StepWithdrawn, nil)
}

// sweep withdraws what the outputs serve under names no longer configured: certificates
// removed or renamed while certfetch was not running, or by a reload. It never touches
// what certfetch did not write.
func (d *Daemon) sweep(ctx context.Context) {
	d.mu.Lock()
	out := d.out
	d.mu.Unlock()
	if !d.sweepable() {
		d.log.Debug("Traefik's routers not read yet: nothing withdrawn")
		return
	}
	names, err := out.Names(ctx)
	if err != nil {
		d.log.Error("cannot list the published certificates; nothing withdrawn", "err", err)
		return
	}
	configured := d.configured()
	for _, name := range names {
		if !configured[name] {
			d.withdraw(ctx, name)
		}
	}
}

func (d *Daemon) prune(ctx context.Context) {
	d.mu.Lock()
	out := d.out
	d.mu.Unlock()
	if err := out.Prune(ctx, d.now()); err != nil {
		d.log.Error("prune superseded output files", "err", err)
	}
}

// emit reports a step to Options.Observe.
func (d *Daemon) emit(name string, step Step, err error) {
	if d.observe != nil {
		d.observe(Event{Name: name, Step: step, Err: err})
	}
}

// Summary is a short account of the managed certificates, for sd_notify STATUS.
type Summary struct {
	Certificates, Published, Failing int
	NextRenewal                      time.Time
}

func (s Summary) String() string {
	next := "none"
	if !s.NextRenewal.IsZero() {
		next = s.NextRenewal.UTC().Format(time.RFC3339)
	}
	return fmt.Sprintf("%d certificates, %d published, %d failing, next renewal %s", s.Certificates, s.Published, s.Failing, next)
}

// Summary sums up the outcome of every certificate's last visit; it reads no store.
func (d *Daemon) Summary() Summary {
	d.mu.Lock()
	defer d.mu.Unlock()
	s := Summary{Certificates: len(d.certs)}
	for _, vw := range d.views {
		if vw.state == StatePublished {
			s.Published++
		}
		if vw.failing {
			s.Failing++
		}
		if !vw.renewAt.IsZero() && (s.NextRenewal.IsZero() || vw.renewAt.Before(s.NextRenewal)) {
			s.NextRenewal = vw.renewAt
		}
	}
	return s
}
