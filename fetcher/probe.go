package fetcher

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-acme/lego/v4/challenge"

	"github.com/certfetch/certfetch/acme"
	"github.com/certfetch/certfetch/acme/http01"
	"github.com/certfetch/certfetch/fetcher/config"
	"github.com/certfetch/certfetch/fetcher/store"
)

// ChallengeSolver returns the publisher rc configures: the DNS-01 solver of
// rc.DNSChallenge, or the HTTP-01 publisher rc.HTTPChallenge configures (webroot files, a
// listening responder, or nothing for the plugin's stateless mode), and the function that
// releases it (it closes a listen-mode responder, waiting for requests in flight until
// ctx ends; for the other modes it does nothing). In listen mode the address is bound
// here: it fails while another process, such as a running daemon, holds it.
func ChallengeSolver(rc *config.Resolver) (challenge.Provider, func(ctx context.Context) error, error) {
	noop := func(context.Context) error { return nil }
	switch hc := rc.HTTPChallenge; {
	case rc.DNSChallenge != nil:
		solver, err := dnsSolver(rc, nil)
		if err != nil {
			return nil, nil, err
		}
		return solver, noop, nil
	case hc.Webroot != "":
		return http01.NewWebroot(hc.Webroot), noop, nil
	case hc.Listen != "":
		r := http01.NewResponder()
		if err := r.Listen(hc.Listen); err != nil {
			return nil, nil, fmt.Errorf("resolver %s: httpChallenge.listen: %w", rc.Name, err)
		}
		return r, r.Close, nil
	default:
		return http01.Stateless{}, noop, nil
	}
}

// challengeMode names rc's challenge mode as the configuration spells it.
func challengeMode(rc *config.Resolver) string {
	switch {
	case rc.DNSChallenge != nil:
		return "dnsChallenge " + rc.DNSChallenge.Provider
	case rc.HTTPChallenge.Webroot != "":
		return "webroot"
	case rc.HTTPChallenge.Listen != "":
		return "listen"
	default:
		return "stateless"
	}
}

// DefaultProbeCount is how many orders `certfetch probe` places: one order says little
// about a CA's spread, and every order is a real certificate, so three.
const DefaultProbeCount = 3

// DefaultProbeTimeout bounds each probe order, and each request of it: far above what
// any CA we know needs (the engine's own bound for an order without deadline), so that
// the probe measures a slow CA instead of cutting it short.
const DefaultProbeTimeout = 10 * time.Minute

// defaultProbeTick is how often the probe reports a phase that is still running: often
// enough that a person sees it is alive, rarely enough to stay readable over a minute.
const defaultProbeTick = 5 * time.Second

// ProbeTarget is what a probe orders and from which CA.
type ProbeTarget struct {
	// Resolver is the configured resolver whose CA, account and challenge the probe uses.
	Resolver *config.Resolver
	// Names of every probe order, lower case.
	Names []string
	// KeyType of the certificates' keys.
	KeyType acme.KeyType
	// ConfiguredTimeout is the order deadline the configuration gives these names (the
	// certificate's, else the resolver's, else the global timeout).
	ConfiguredTimeout time.Duration
}

// ResolveProbeTarget picks the resolver (resolver, or the only one) and the names (names,
// or the domains of the resolver's first configured certificate, with its key type and
// deadline). Its errors are the user's to fix: an unknown or missing resolver name, no
// names.
func ResolveProbeTarget(cfg *config.Config, resolver string, names []string) (ProbeTarget, error) {
	rc, err := cfg.ResolverNamed(resolver)
	if err != nil {
		return ProbeTarget{}, fmt.Errorf("probe: %w", err)
	}
	resolver = rc.Name
	t := ProbeTarget{Resolver: rc, KeyType: acme.EC256, ConfiguredTimeout: cmp.Or(rc.Timeout, cfg.Timeout)}
	if len(names) > 0 {
		for _, n := range names {
			n = strings.ToLower(strings.TrimSpace(n))
			if n == "" {
				return ProbeTarget{}, errors.New("probe: --names has an empty name")
			}
			if !slices.Contains(t.Names, n) {
				t.Names = append(t.Names, n)
			}
		}
		return t, nil
	}
	for _, c := range cfg.Certificates {
		if c.Resolver == resolver {
			t.Names, t.KeyType, t.ConfiguredTimeout = slices.Clone(c.Domains), c.KeyType, cfg.EffectiveTimeout(c)
			return t, nil
		}
	}
	return ProbeTarget{}, fmt.Errorf("probe: resolver %s has no configured certificate: name the domains with --names", resolver)
}

// ProbeOptions configure Probe; the zero value places DefaultProbeCount orders.
type ProbeOptions struct {
	// Count of orders, one after the other; 0: DefaultProbeCount.
	Count int
	// Timeout bounds each order and each of its requests; 0: DefaultProbeTimeout. The
	// resolver's http.responseHeaderTimeout and requestTimeout are lifted to it, so that a
	// slow answer is measured rather than cut (dial and TLS handshake timeouts stay).
	Timeout time.Duration
	// Progress, when set, receives one line at a time while the probe runs: each step as
	// it starts and ends, and a line every TickEvery while one takes long. It is called
	// from one goroutine at a time.
	Progress func(line string)
	// TickEvery is the interval of the "still waiting" lines; 0: 5 s.
	TickEvery time.Duration
	// Logger receives the engine's logs; nil discards them.
	Logger *slog.Logger
}

// ProbeReport is what Probe measured; `certfetch probe --json` prints it. Durations are
// seconds (fields named ...Seconds) with millisecond precision; README lists every field.
type ProbeReport struct {
	Resolver     string   `json:"resolver"`
	DirectoryURL string   `json:"directoryURL"`
	Challenge    string   `json:"challenge"`
	Names        []string `json:"names"`
	KeyType      string   `json:"keyType"`
	// Profile the orders asked for; "" lets the CA choose.
	Profile string `json:"profile"`
	// Count of orders asked for; len(Orders) is how many were placed.
	Count            int          `json:"count"`
	TimeoutSeconds   float64      `json:"timeoutSeconds"`
	Started          time.Time    `json:"started"`
	DirectorySeconds float64      `json:"directorySeconds"`
	Account          ProbeAccount `json:"account"`
	CA               ProbeCA      `json:"ca"`
	Orders           []ProbeOrder `json:"orders"`
	// RetryAfter is every Retry-After the CA sent, set-up included, by request kind and value.
	RetryAfter []RetryAfterCount `json:"retryAfter"`
	// SlowestRequest is the slowest answer of any request but finalize (nil before any).
	SlowestRequest *ProbeRequest `json:"slowestRequest"`
	// Recommendation is nil when no order completed.
	Recommendation *ProbeRecommendation `json:"recommendation"`
	// Notes are findings beside the figures (a profile the CA does not offer, EAB).
	Notes []string `json:"notes"`
	// Error is why the probe stopped early; empty when every order completed.
	Error string `json:"error,omitempty"`
}

// ProbeAccount is the account step: newAccount with the stored key.
type ProbeAccount struct {
	// URL the CA returned for the key; StoredURL the one in the state store ("" if none).
	URL       string `json:"url"`
	StoredURL string `json:"storedURL"`
	// Status: "existing" (the CA knew the key: 200) or "registered" (created now: 201).
	Status  string  `json:"status"`
	Seconds float64 `json:"seconds"`
}

// ProbeCA is what the CA offers and how it finalizes.
type ProbeCA struct {
	// Profiles maps profile names to descriptions (meta.profiles); empty when none.
	Profiles map[string]string `json:"profiles"`
	// ARI: the directory has renewalInfo (RFC 9773), at RenewalInfoURL.
	ARI            bool   `json:"ari"`
	RenewalInfoURL string `json:"renewalInfoURL"`
	// EABRequired is meta.externalAccountRequired; EABConfigured says whether the resolver has eab.
	EABRequired   bool `json:"eabRequired"`
	EABConfigured bool `json:"eabConfigured"`
	// Finalize is "synchronous" (every finalize answer was the order valid), "asynchronous"
	// (at least one was not: the order had to be polled), or "" (no order finalized).
	Finalize string `json:"finalize"`
	// FinalizeHoldSeconds is the longest a finalize request waited for its answer.
	FinalizeHoldSeconds float64 `json:"finalizeHoldSeconds"`
}

// ProbeOrder is one order: its phases as the engine reports them, and its requests.
type ProbeOrder struct {
	Order    int    `json:"order"`
	OrderURL string `json:"orderURL"`
	// The phases: newOrder (the request), authorization (publish, trigger and poll until
	// every authorization is valid; 0 when the CA reused valid ones), finalize (from the
	// finalize request until the order is valid), download (fetch and check the chain).
	NewOrderSeconds      float64 `json:"newOrderSeconds"`
	AuthorizationSeconds float64 `json:"authorizationSeconds"`
	FinalizeSeconds      float64 `json:"finalizeSeconds"`
	DownloadSeconds      float64 `json:"downloadSeconds"`
	// TotalSeconds: from the start of the order to the certificate in hand (or the failure).
	TotalSeconds float64 `json:"totalSeconds"`
	// FinalizeRequestSeconds: how long the finalize request waited for its answer.
	FinalizeRequestSeconds float64 `json:"finalizeRequestSeconds"`
	// Finalize: "synchronous" (the finalize answer was the order valid) or "asynchronous"
	// (it was not: OrderPolls polls followed); "" when the order did not finalize.
	Finalize           string            `json:"finalize"`
	OrderPolls         int               `json:"orderPolls"`
	AuthorizationPolls int               `json:"authorizationPolls"`
	Requests           int               `json:"requests"`
	RetryAfter         []RetryAfterCount `json:"retryAfter"`
	CertificateURL     string            `json:"certificateURL,omitempty"`
	Serial             string            `json:"serial,omitempty"`
	NotBefore          *time.Time        `json:"notBefore,omitempty"`
	NotAfter           *time.Time        `json:"notAfter,omitempty"`
	Error              string            `json:"error,omitempty"`
}

// RetryAfterCount is how many answers to requests of kind Where (acme.Request*) carried a
// Retry-After of Seconds.
type RetryAfterCount struct {
	Where   string  `json:"where"`
	Seconds float64 `json:"seconds"`
	Count   int     `json:"count"`
}

// ProbeRequest is one request: its kind (acme.Request*) and how long its answer took.
type ProbeRequest struct {
	Kind    string  `json:"kind"`
	Seconds float64 `json:"seconds"`
}

// ProbeRecommendation is the advice derived from the orders that completed. Durations are
// Go durations as the configuration takes them, and seconds.
type ProbeRecommendation struct {
	Timeout                 string   `json:"timeout"`
	TimeoutSeconds          float64  `json:"timeoutSeconds"`
	ConfiguredTimeout       string   `json:"configuredTimeout"`
	ConfiguredTimeoutEnough bool     `json:"configuredTimeoutEnough"`
	TimeoutReasons          []string `json:"timeoutReasons"`

	ResponseHeaderTimeout                 string   `json:"responseHeaderTimeout"`
	ResponseHeaderTimeoutSeconds          float64  `json:"responseHeaderTimeoutSeconds"`
	ConfiguredResponseHeaderTimeout       string   `json:"configuredResponseHeaderTimeout"`
	ConfiguredResponseHeaderTimeoutEnough bool     `json:"configuredResponseHeaderTimeoutEnough"`
	ResponseHeaderTimeoutReasons          []string `json:"responseHeaderTimeoutReasons"`
	// RequestTimeout is http.requestTimeout: the configured one, raised to
	// ResponseHeaderTimeout when it is shorter (the configuration requires that).
	RequestTimeout string `json:"requestTimeout"`
}

// Finalize modes.
const (
	FinalizeSynchronous  = "synchronous"
	FinalizeAsynchronous = "asynchronous"
)

// Probe places real orders for target against its resolver's CA, one after the other, and
// measures them; the CA issues a real certificate for each. It uses the resolver's
// account key from st (creating it when there is none, as `certfetch thumbprint` does, so
// that the plugin's thumbprint and an External Account Binding apply to the key the daemon
// uses) and its challenge, but an in-memory journal: it writes no order, account URL or
// certificate to st and publishes nothing, so it can run beside the daemon.
//
// It stops at the first order that fails (the next would most likely fail alike, and
// cost the CA another order). The report is never nil once the set-up began: on error it
// holds what was measured, and Error says what went wrong.
func Probe(ctx context.Context, st *store.Store, target ProbeTarget, opts ProbeOptions) (*ProbeReport, error) {
	opts.Count = cmp.Or(opts.Count, DefaultProbeCount)
	opts.Timeout = cmp.Or(opts.Timeout, DefaultProbeTimeout)
	opts.TickEvery = cmp.Or(opts.TickEvery, defaultProbeTick)
	if opts.Progress == nil {
		opts.Progress = func(string) {}
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	rc := target.Resolver
	p := &prober{target: target, opts: opts, start: time.Now()}
	p.report = &ProbeReport{
		Resolver: rc.Name, DirectoryURL: rc.CAServer, Challenge: challengeMode(rc), Names: target.Names,
		KeyType: string(cmp.Or(target.KeyType, acme.EC256)), Profile: rc.Profile, Count: opts.Count,
		TimeoutSeconds: seconds(opts.Timeout), Started: p.start.UTC(),
		CA:     ProbeCA{Profiles: map[string]string{}, EABConfigured: rc.EAB != nil},
		Orders: []ProbeOrder{}, RetryAfter: []RetryAfterCount{}, Notes: []string{},
	}
	stopTicks := p.ticks()
	defer stopTicks()
	err := p.run(ctx, st)
	stopTicks()
	p.finish()
	if err != nil {
		p.report.Error = err.Error()
	}
	return p.report, err
}

// prober is one Probe run. The engine's hooks and the ticker share its state under mu.
type prober struct {
	target ProbeTarget
	opts   ProbeOptions
	start  time.Time
	report *ProbeReport

	mu       sync.Mutex
	step     string             // what runs now, for the ticker ("" between steps)
	stepAt   time.Time          // when it started
	order    *orderTrack        // the order in progress; nil during set-up
	requests []acme.RequestInfo // every request, set-up and orders
}

// orderTrack collects one order's hooks.
type orderTrack struct {
	n        int
	phase    string // the engine phase in progress (acme.Phase*)
	phases   map[string]time.Duration
	requests []acme.RequestInfo
	// finalizing is true from the finalize phase's start until its request is answered.
	finalizing bool
}

// say emits one progress line; mu is held.
func (p *prober) say(format string, args ...any) {
	p.opts.Progress(fmt.Sprintf(format, args...))
}

// begin marks the start of a step and announces it.
func (p *prober) begin(step, format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.step, p.stepAt = step, time.Now()
	p.say(format, args...)
}

// ticks reports every TickEvery a step that has run that long, until the returned
// function is called (any number of times).
func (p *prober) ticks() (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(p.opts.TickEvery)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				p.tick()
			}
		}
	})
	var once sync.Once
	return func() {
		once.Do(func() { close(done) })
		wg.Wait()
	}
}

func (p *prober) tick() {
	p.mu.Lock()
	defer p.mu.Unlock()
	in := time.Since(p.stepAt)
	if p.step == "" || in < p.opts.TickEvery {
		return
	}
	detail := ""
	if o := p.order; o != nil {
		switch {
		case o.finalizing:
			detail = " (the CA holds the finalize request open)"
		case o.phase == acme.PhaseFinalize:
			detail = fmt.Sprintf(" (the CA is processing the order: %s%s)", polls(count(o.requests, acme.RequestOrder), "order"), lastRetryAfter(o.requests))
		case o.phase == acme.PhaseAuthorization:
			detail = fmt.Sprintf(" (the CA is validating: %s%s)", polls(count(o.requests, acme.RequestAuthorization), "authorization"), lastRetryAfter(o.requests))
		}
	}
	p.say("%s: still waiting, %s so far%s", p.step, fmtSeconds(in), detail)
}

// hooks wire the engine's reports into p.
func (p *prober) hooks(cfg *acme.Config) {
	cfg.OnRequest = func(info acme.RequestInfo) {
		p.mu.Lock()
		defer p.mu.Unlock()
		p.requests = append(p.requests, info)
		if o := p.order; o != nil {
			o.requests = append(o.requests, info)
			if info.Kind == acme.RequestFinalize {
				o.finalizing = false
			}
		}
	}
	cfg.OnPhaseStart = func(phase string) {
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.order == nil {
			return
		}
		p.order.phase, p.order.finalizing = phase, phase == acme.PhaseFinalize
		p.step, p.stepAt = p.orderLabel(p.order.n)+": "+phaseLabel(phase), time.Now()
		p.say("%s", p.step)
	}
	cfg.OnPhase = func(phase string, d time.Duration) {
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.order != nil {
			p.order.phases[phase] += d
		}
	}
}

func (p *prober) orderLabel(n int) string { return fmt.Sprintf("order %d/%d", n, p.opts.Count) }

// phaseLabel names an engine phase for people.
func phaseLabel(phase string) string {
	switch phase {
	case acme.PhaseNewOrder:
		return "new order"
	case acme.PhaseAuthorization:
		return "validation (authorizations)"
	case acme.PhaseFinalize:
		return "finalize → valid"
	case acme.PhaseDownload:
		return "download"
	}
	return phase
}

// run does the set-up and the orders; the report fills as it goes.
func (p *prober) run(ctx context.Context, st *store.Store) error {
	rc, r := p.target.Resolver, p.report
	acct, err := AccountKey(ctx, st, rc, false)
	if err != nil {
		return fmt.Errorf("probe: %w", err)
	}
	cfg, err := ACMEConfig(rc, acct)
	if err != nil {
		return fmt.Errorf("probe: %w", err)
	}
	solver, release, err := ChallengeSolver(rc)
	if err != nil {
		return fmt.Errorf("probe: %w", err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), responderShutdown)
		defer cancel()
		if err := release(ctx); err != nil {
			p.opts.Logger.Warn("close the HTTP-01 responder", "err", err)
		}
	}()
	cfg.Timeouts = acme.Timeouts{ResponseHeader: p.opts.Timeout, Request: p.opts.Timeout}
	cfg.OrderTimeout = p.opts.Timeout
	cfg.Journal = acme.NewMemoryJournal()
	cfg.Solver = solver
	cfg.Logger = p.opts.Logger
	p.hooks(&cfg)

	setupCtx, cancel := context.WithTimeout(ctx, p.opts.Timeout)
	defer cancel()

	p.begin("directory", "directory: reading %s", rc.CAServer)
	dir, err := acme.ReadDirectory(setupCtx, cfg)
	r.DirectorySeconds = seconds(p.setupTime(acme.RequestDirectory))
	if err != nil {
		return fmt.Errorf("probe: %w", err)
	}
	p.describe(dir)
	p.begin("account", "directory: read in %s; account: newAccount with the stored key", fmtSeconds(p.setupTime(acme.RequestDirectory)))

	// Registering with the stored key finds the CA's existing account (RFC 8555 §7.3.1)
	// or creates it: either way it times the account step. The URL is not stored.
	r.Account.StoredURL = acct.URL
	cfg.Account.URL = ""
	client, err := acme.NewClient(setupCtx, cfg)
	r.Account.Seconds = seconds(p.setupTime(acme.RequestNewAccount))
	if err != nil {
		if dir.ExternalAccountRequired && rc.EAB == nil {
			err = fmt.Errorf("%w (the CA requires External Account Binding and resolver %s has no eab)", err, rc.Name)
		}
		return fmt.Errorf("probe: %w", err)
	}
	r.Account.URL, r.Account.Status = client.AccountURL(), p.accountStatus()
	p.begin("", "account: %s, %s (newAccount answered in %s)", r.Account.Status, r.Account.URL, fmtSeconds(p.setupTime(acme.RequestNewAccount)))

	req := acme.Request{Names: p.target.Names, KeyType: p.target.KeyType, Profile: rc.Profile, PreferredChain: rc.PreferredChain}
	for n := 1; n <= p.opts.Count; n++ {
		if err := p.obtain(ctx, client, req, n); err != nil {
			return err
		}
	}
	return nil
}

// describe records what the directory offers.
func (p *prober) describe(dir *acme.Directory) {
	r, rc := p.report, p.target.Resolver
	maps.Copy(r.CA.Profiles, dir.Profiles)
	r.CA.ARI, r.CA.RenewalInfoURL = dir.RenewalInfoURL != "", dir.RenewalInfoURL
	r.CA.EABRequired = dir.ExternalAccountRequired
	if rc.Profile != "" {
		if _, ok := dir.Profiles[rc.Profile]; !ok {
			r.Notes = append(r.Notes, fmt.Sprintf("the resolver asks for profile %q, which the CA's directory does not list", rc.Profile))
		}
	}
	if dir.ExternalAccountRequired && rc.EAB == nil {
		r.Notes = append(r.Notes, "the CA requires External Account Binding for new accounts and the resolver has no eab: only an account the CA already knows works")
	}
}

// setupTime sums the set-up requests of kind.
func (p *prober) setupTime(kind string) time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	var d time.Duration
	for _, info := range p.requests {
		if info.Kind == kind {
			d += info.Duration
		}
	}
	return d
}

// accountStatus reads the last newAccount answer: 201 Created is a new account.
func (p *prober) accountStatus() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	status := "existing"
	for _, info := range p.requests {
		if info.Kind == acme.RequestNewAccount && info.StatusCode == 201 {
			status = "registered"
		} else if info.Kind == acme.RequestNewAccount && info.StatusCode == 200 {
			status = "existing"
		}
	}
	return status
}

// obtain places order n and records it. The certificate is dropped: Collected only makes
// the memory journal forget it, so that the next order is a new one.
func (p *prober) obtain(ctx context.Context, client *acme.Client, req acme.Request, n int) error {
	o := &orderTrack{n: n, phases: map[string]time.Duration{}}
	p.mu.Lock()
	p.order = o
	p.mu.Unlock()
	p.begin(p.orderLabel(n), "%s for %s", p.orderLabel(n), strings.Join(req.Names, ", "))

	octx, cancel := context.WithTimeout(ctx, p.opts.Timeout)
	defer cancel()
	start := time.Now()
	cert, err := client.Obtain(octx, req)
	took := time.Since(start)

	p.mu.Lock()
	p.order, p.step = nil, ""
	po := orderResult(o, took)
	p.mu.Unlock()
	if cert != nil {
		po.OrderURL, po.CertificateURL, po.Serial = cert.OrderURL, cert.URL, fmt.Sprintf("%x", cert.Leaf.SerialNumber)
		nb, na := cert.Leaf.NotBefore.UTC(), cert.Leaf.NotAfter.UTC()
		po.NotBefore, po.NotAfter = &nb, &na
	}
	if err != nil {
		var pending *acme.OrderPendingError
		switch {
		case errors.As(err, &pending) && ctx.Err() != nil:
			po.OrderURL = pending.OrderURL
			err = fmt.Errorf("probe: order %d interrupted (status %s; the CA may still issue it): %w", n, cmp.Or(pending.Status, "unknown"), err)
		case errors.As(err, &pending):
			po.OrderURL = pending.OrderURL
			err = fmt.Errorf("probe: order %d not complete within --timeout %s (status %s; the CA may still issue it): %w", n, p.opts.Timeout, cmp.Or(pending.Status, "unknown"), err)
		default:
			err = fmt.Errorf("probe: order %d: %w", n, err)
		}
		po.Error = err.Error()
		p.report.Orders = append(p.report.Orders, po)
		p.begin("", "%s failed after %s: %v", p.orderLabel(n), fmtSeconds(took), err)
		return err
	}
	p.report.Orders = append(p.report.Orders, po)
	if err := client.Collected(context.WithoutCancel(ctx), cert); err != nil {
		return fmt.Errorf("probe: order %d: %w", n, err)
	}
	p.begin("", "%s: certificate issued in %s (serial %s, not after %s); not stored, not published",
		p.orderLabel(n), fmtSeconds(took), po.Serial, po.NotAfter.Format(time.RFC3339))
	return nil
}

// orderResult turns an order's hooks into its report.
func orderResult(o *orderTrack, took time.Duration) ProbeOrder {
	po := ProbeOrder{
		Order:                o.n,
		NewOrderSeconds:      seconds(o.phases[acme.PhaseNewOrder]),
		AuthorizationSeconds: seconds(o.phases[acme.PhaseAuthorization]),
		FinalizeSeconds:      seconds(o.phases[acme.PhaseFinalize]),
		DownloadSeconds:      seconds(o.phases[acme.PhaseDownload]),
		TotalSeconds:         seconds(took),
		AuthorizationPolls:   count(o.requests, acme.RequestAuthorization),
		OrderPolls:           count(o.requests, acme.RequestOrder),
		Requests:             len(o.requests),
		RetryAfter:           retryAfters(o.requests),
	}
	finalized, pollsAfter, downloaded := false, 0, false
	for _, info := range o.requests {
		switch {
		case info.Kind == acme.RequestFinalize:
			finalized = true
			po.FinalizeRequestSeconds = seconds(info.Duration)
		case finalized && info.Kind == acme.RequestOrder:
			pollsAfter++
		case finalized && info.Kind == acme.RequestCertificate:
			downloaded = true
		}
	}
	// The engine reads the order after finalize only when the answer was not the order
	// valid, and downloads at once when it was. An order that ended between the two
	// (a deadline, an interrupt) says neither.
	switch {
	case pollsAfter > 0:
		po.Finalize = FinalizeAsynchronous
	case downloaded:
		po.Finalize = FinalizeSynchronous
	}
	return po
}

// finish computes what the report derives from the orders and requests.
func (p *prober) finish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	r := p.report
	r.RetryAfter = retryAfters(p.requests)
	for _, info := range p.requests {
		if info.Kind == acme.RequestFinalize || info.Err != nil {
			continue
		}
		if r.SlowestRequest == nil || seconds(info.Duration) > r.SlowestRequest.Seconds {
			r.SlowestRequest = &ProbeRequest{Kind: info.Kind, Seconds: seconds(info.Duration)}
		}
	}
	for _, o := range r.Orders {
		r.CA.FinalizeHoldSeconds = max(r.CA.FinalizeHoldSeconds, o.FinalizeRequestSeconds)
		switch {
		case o.Finalize == FinalizeAsynchronous:
			r.CA.Finalize = FinalizeAsynchronous
		case o.Finalize == FinalizeSynchronous && r.CA.Finalize == "":
			r.CA.Finalize = FinalizeSynchronous
		}
	}
	r.Recommendation = recommend(r, p.target.ConfiguredTimeout, p.target.Resolver.HTTP)
}

// The recommendation's margins.
const (
	// timeoutMarginFraction: a CA's time per order varies with its load, and a probe sees
	// a few orders at one moment; half the slowest order again absorbs a busier day
	// without making a stuck order wait much longer.
	timeoutMarginFraction = 0.5
	// minTimeoutMargin: fixed costs the probe may not have met stay uncovered below it: a
	// blind poll (up to 8 s), lego's pause before re-sending after badNonce (up to 5 s
	// each), a reconnect to the CA.
	minTimeoutMargin = 20 * time.Second
	// headerFactor: a request other than finalize should be answered at once; a CA under
	// load answers several times slower than for a probe, so the header timeout allows
	// three times the slowest answer seen.
	headerFactor = 3
	// minHeaderTimeout is the engine's own default (acme.DefaultResponseHeaderTimeout):
	// 30 s without response headers means a CA is stuck, not busy; no recommendation goes
	// below it.
	minHeaderTimeout = acme.DefaultResponseHeaderTimeout
	// longHold: a finalize held open longer than this is worth explaining; a few seconds
	// fit any client's response header timeout (lego's and Traefik's: 30 s).
	longHold = 5 * time.Second
	// recommendStep: recommendations are rounded up to whole 10 s, values people write in
	// a configuration.
	recommendStep = 10 * time.Second
)

// recommend derives timeout and http.responseHeaderTimeout from the report; nil when no
// order completed. configured is the deadline the configuration gives the probed names,
// h the resolver's HTTP timeouts.
func recommend(r *ProbeReport, configured time.Duration, h config.HTTPTimeouts) *ProbeRecommendation {
	var slowest ProbeOrder
	done := 0
	for _, o := range r.Orders {
		if o.Error != "" {
			continue
		}
		done++
		if o.TotalSeconds > slowest.TotalSeconds {
			slowest = o
		}
	}
	if done == 0 {
		return nil
	}
	rec := &ProbeRecommendation{}

	// timeout: the slowest order plus a margin.
	need := fromSeconds(slowest.TotalSeconds)
	if need >= 10*time.Second {
		// To the tenth fmtSeconds shows, so that the printed sum adds up.
		need = need.Round(100 * time.Millisecond)
	}
	longestRetry := time.Duration(0)
	for _, ra := range r.RetryAfter {
		if ra.Where == acme.RequestOrder || ra.Where == acme.RequestAuthorization || ra.Where == acme.RequestFinalize {
			longestRetry = max(longestRetry, fromSeconds(ra.Seconds))
		}
	}
	half := time.Duration(float64(need) * timeoutMarginFraction)
	margin := max(half, minTimeoutMargin, longestRetry)
	timeout := roundUp(need+margin, recommendStep)
	rec.Timeout, rec.TimeoutSeconds = timeout.String(), seconds(timeout)
	rec.ConfiguredTimeout, rec.ConfiguredTimeoutEnough = configured.String(), configured >= timeout
	rec.TimeoutReasons = append(rec.TimeoutReasons,
		fmt.Sprintf("the slowest of %d completed order(s), order %d, took %s from new order to certificate in hand (finalize → valid %s)",
			done, slowest.Order, fmtSeconds(need), fmtSeconds(fromSeconds(slowest.FinalizeSeconds))),
		fmt.Sprintf("margin %s: the largest of half of it (%s), %s, and the longest Retry-After on a poll (%s)",
			fmtSeconds(margin), fmtSeconds(half), minTimeoutMargin, longestRetry),
		fmt.Sprintf("%s + %s = %s, rounded up to %s", fmtSeconds(need), fmtSeconds(margin), fmtSeconds(need+margin), timeout))
	switch {
	case configured < need:
		rec.TimeoutReasons = append(rec.TimeoutReasons, fmt.Sprintf(
			"configured %s is too short: each attempt would end with the order still at the CA; certfetch resumes it at the next attempt (one order, no certificate lost) but every issuance takes several attempts",
			configured))
	case configured < timeout:
		rec.TimeoutReasons = append(rec.TimeoutReasons, fmt.Sprintf("configured %s covers the orders seen, without the margin", configured))
	default:
		rec.TimeoutReasons = append(rec.TimeoutReasons, fmt.Sprintf("configured %s is enough", configured))
	}

	// http.responseHeaderTimeout: every answer but finalize's, times headerFactor.
	slowAnswer := time.Duration(0)
	slowKind := "none"
	if r.SlowestRequest != nil {
		slowAnswer, slowKind = fromSeconds(r.SlowestRequest.Seconds), r.SlowestRequest.Kind
	}
	floor := roundUp(max(minHeaderTimeout, headerFactor*slowAnswer), recommendStep)
	header := max(h.ResponseHeaderTimeout, floor)
	rec.ResponseHeaderTimeout, rec.ResponseHeaderTimeoutSeconds = header.String(), seconds(header)
	rec.ConfiguredResponseHeaderTimeout = h.ResponseHeaderTimeout.String()
	rec.ConfiguredResponseHeaderTimeoutEnough = h.ResponseHeaderTimeout >= floor
	rec.RequestTimeout = max(h.RequestTimeout, header).String()
	hold := fromSeconds(r.CA.FinalizeHoldSeconds)
	reasons := []string{fmt.Sprintf(
		"every request other than finalize was answered within %s (slowest: %s); %d× that, at least the engine's %s, rounded up: %s",
		fmtSeconds(slowAnswer), slowKind, headerFactor, minHeaderTimeout, floor)}
	if rec.ConfiguredResponseHeaderTimeoutEnough {
		reasons = append(reasons, fmt.Sprintf("configured %s is enough: keep it", h.ResponseHeaderTimeout))
	} else {
		reasons = append(reasons, fmt.Sprintf("configured %s is too short: raise it to %s", h.ResponseHeaderTimeout, floor))
	}
	exempt := "certfetch exempts the finalize request from http.responseHeaderTimeout and http.requestTimeout: only the order deadline (timeout) bounds it"
	switch r.CA.Finalize {
	case FinalizeSynchronous:
		reasons = append(reasons, fmt.Sprintf("the CA finalizes synchronously: it held the finalize request open up to %s and answered with the order valid", fmtSeconds(hold)))
		if hold < longHold {
			reasons = append(reasons, "a hold this short fits any response header timeout")
			break
		}
		lego := roundUp(hold+max(time.Duration(float64(hold)*timeoutMarginFraction), minTimeoutMargin), recommendStep)
		reasons = append(reasons,
			exempt+", so responseHeaderTimeout need not cover that hold; timeout does (above)",
			fmt.Sprintf("a client without that exemption (lego's default client and Traefik's built-in resolver wait 30s for response headers) would need a response header timeout above %s (%s with the margin)", fmtSeconds(hold), lego))
	case FinalizeAsynchronous:
		reasons = append(reasons,
			fmt.Sprintf("the CA finalizes asynchronously: it answered the finalize request within %s with the order processing, and the order was polled until valid", fmtSeconds(hold)),
			exempt+"; this CA does not need it")
	}
	if h.RequestTimeout < header {
		reasons = append(reasons, fmt.Sprintf("raise http.requestTimeout (%s) to at least %s too: it must not be shorter", h.RequestTimeout, header))
	}
	rec.ResponseHeaderTimeoutReasons = reasons
	for _, o := range r.Orders {
		if o.Error != "" {
			rec.TimeoutReasons = append(rec.TimeoutReasons, fmt.Sprintf("order %d failed and is not counted: %s", o.Order, o.Error))
		}
	}
	return rec
}

// count counts the requests of kind.
func count(requests []acme.RequestInfo, kind string) int {
	n := 0
	for _, info := range requests {
		if info.Kind == kind {
			n++
		}
	}
	return n
}

// polls says "1 order poll", "3 order polls".
func polls(n int, what string) string {
	if n == 1 {
		return "1 " + what + " poll"
	}
	return fmt.Sprintf("%d %s polls", n, what)
}

// lastRetryAfter describes the last Retry-After in requests, for progress lines.
func lastRetryAfter(requests []acme.RequestInfo) string {
	for _, info := range slices.Backward(requests) {
		if info.RetryAfterHeader != "" {
			return fmt.Sprintf(", last Retry-After %s", info.RetryAfter)
		}
	}
	return ""
}

// retryAfters groups the Retry-After values of requests by kind and value, in kind order
// then value order.
func retryAfters(requests []acme.RequestInfo) []RetryAfterCount {
	type key struct {
		where string
		secs  float64
	}
	counts := map[key]int{}
	for _, info := range requests {
		if info.RetryAfterHeader != "" {
			counts[key{info.Kind, seconds(info.RetryAfter)}]++
		}
	}
	out := make([]RetryAfterCount, 0, len(counts))
	for k, n := range counts {
		out = append(out, RetryAfterCount{Where: k.where, Seconds: k.secs, Count: n})
	}
	slices.SortFunc(out, func(a, b RetryAfterCount) int {
		return cmp.Or(cmp.Compare(a.Where, b.Where), cmp.Compare(a.Seconds, b.Seconds))
	})
	return out
}

// seconds is d in seconds, to the millisecond.
func seconds(d time.Duration) float64 { return math.Round(d.Seconds()*1000) / 1000 }

func fromSeconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// roundUp rounds d up to a multiple of step.
func roundUp(d, step time.Duration) time.Duration {
	return (d + step - 1) / step * step
}

// fmtSeconds formats d for people: milliseconds below 10 s, tenths above.
func fmtSeconds(d time.Duration) string {
	if d < 10*time.Second {
		return fmt.Sprintf("%.3fs", d.Seconds())
	}
	return fmt.Sprintf("%.1fs", d.Seconds())
}
