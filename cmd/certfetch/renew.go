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
	"syscall"
	"time"

	"github.com/certfetch/certfetch/acme"
	"github.com/certfetch/certfetch/fetcher"
	"github.com/certfetch/certfetch/fetcher/config"
	"github.com/certfetch/certfetch/fetcher/store"
)

// `certfetch renew --force NAME` and `certfetch revoke NAME --reason R`.
//
// Both go through the certificate's lifecycle and locks as the daemon (see
// fetcher/renew.go): the command carries the request out itself under the
// certificate's lease when it can (a shared store; a state directory it can lock),
// and otherwise asks the process holding the state directory: it leaves the request
// in the store and sends that process SIGHUP, then watches the certificate's record
// for the outcome.
//
// Why a signal and not a socket: the daemon has a reload signal already (systemd's
// ExecReload, `systemctl reload`), and a reload is when it reads what changed (the
// configuration, now the requests); SIGHUP needs no listening endpoint, so nothing new
// to secure, to place in the hardened unit's file system view or to clean up after a
// crash, and the kernel lets only the daemon's user (or root) send it, the same people
// who can write its state directory. The request itself lives in the store, so it is
// durable: a daemon that is not running (or restarting) picks it up at its start, and a
// signal that arrives during a reload is not lost (the pick-up reads every pending
// request). What a signal cannot do is answer: the command reads the answer from the
// certificate's record, where the daemon writes it under the lease anyway.

// reasonList names the revocation reasons for usage texts (a constant, for the usage
// constant; TestReasonListNamesEveryReason keeps it equal to acme.RevocationReasons).
const reasonList = "unspecified(0), keyCompromise(1), affiliationChanged(3), superseded(4), cessationOfOperation(5)"

// Timing of the wait for a daemon: how often the record is read, and how often a
// progress line is printed while nothing changes.
const (
	requestPoll     = 200 * time.Millisecond
	requestProgress = 10 * time.Second
	// minRequestWait is the least default --wait.
	minRequestWait = 5 * time.Minute
)

func cmdRenew(args []string, stdout, stderr io.Writer) int {
	var force bool
	return requestCommand("renew --force NAME [--config FILE] [--wait D]", args, stdout, stderr,
		func(fs *flag.FlagSet) {
			fs.BoolVar(&force, "force", false, "renew now, whatever the schedule (required: the daemon renews on schedule by itself)")
		},
		func() (store.RequestAction, acme.RevocationReason, error) {
			if !force {
				return "", 0, errors.New("renew needs --force: the daemon renews every certificate on schedule; --force renews one now")
			}
			return store.RequestRenew, 0, nil
		})
}

func cmdRevoke(args []string, stdout, stderr io.Writer) int {
	var reason string
	return requestCommand("revoke NAME --reason R [--config FILE] [--wait D]", args, stdout, stderr,
		func(fs *flag.FlagSet) {
			fs.StringVar(&reason, "reason", "", "RFC 5280 revocation reason (required): "+reasonList+
				"; with keyCompromise the key is never published again")
		},
		func() (store.RequestAction, acme.RevocationReason, error) {
			if reason == "" {
				return "", 0, errors.New("revoke needs --reason (" + reasonList + ")")
			}
			r, err := acme.ParseRevocationReason(reason)
			return store.RequestRevoke, r, err
		})
}

// requestCommand parses a renew or revoke command line (flags before or after NAME),
// then carries the request out.
func requestCommand(summary string, args []string, stdout, stderr io.Writer, flags func(*flag.FlagSet),
	action func() (store.RequestAction, acme.RevocationReason, error),
) int {
	fs, cfgFlag := commandFlags(summary, stderr)
	wait := fs.Duration("wait", 0, fmt.Sprintf("how long to wait for the outcome (default: 3 times the certificate's order deadline plus storage.lockTTL, at least %s); the work goes on after that", minRequestWait))
	flags(fs)
	names, err := parseInterspersed(fs, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	act, reason, err := action()
	if err == nil && len(names) != 1 {
		err = fmt.Errorf("name exactly one certificate, got %d", len(names))
	}
	if err != nil {
		fmt.Fprintf(stderr, "certfetch: %v\n", err)
		fs.Usage()
		return exitUsage
	}
	cfg, _, ok := loadConfig(*cfgFlag, stderr)
	if !ok {
		return exitUsage
	}
	return carryOut(cfg, names[0], act, reason, *wait, stdout, stderr)
}

// parseInterspersed parses fs's flags wherever they stand among args and returns the
// other arguments (`revoke NAME --reason R` and `revoke --reason R NAME` alike).
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return positional, nil
		}
		positional = append(positional, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

// requester carries out one request and reports it.
type requester struct {
	cfg    *config.Config
	st     *store.Store
	req    *store.Request
	log    *slog.Logger
	stdout io.Writer
	stderr io.Writer
	wait   time.Duration
	// interrupted reports whether SIGINT or SIGTERM ended the wait.
	interrupted func() bool
}

func carryOut(cfg *config.Config, name string, action store.RequestAction, reason acme.RevocationReason, wait time.Duration, stdout, stderr io.Writer) int {
	if err := checkStateOwner(cfg.Storage.Directory); err != nil {
		fmt.Fprintf(stderr, "certfetch: %s %s: %v\n", action, name, err)
		return exitUsage
	}
	// This process may hold the state directory (it carries the request out itself);
	// another renew command would then send it SIGHUP, which must not kill it.
	signal.Ignore(syscall.SIGHUP)
	sigCtx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	st, ok := openStore(cfg, stderr)
	if !ok {
		return exitFailure
	}
	defer st.Close()
	log := newLogging(cfg.Log, stderr).Logger()
	acme.RouteLegoLog(log)

	req, err := fetcher.NewRequest(sigCtx, cfg, st, name, action, reason)
	if err != nil {
		fmt.Fprintf(stderr, "certfetch: %v\n", err)
		if errors.Is(err, fetcher.ErrUnknownCertificate) {
			return exitUsage
		}
		return exitFailure
	}
	if wait <= 0 {
		wait = defaultRequestWait(cfg, name)
	}
	ctx, cancel := context.WithTimeout(sigCtx, wait)
	defer cancel()
	r := &requester{cfg: cfg, st: st, req: req, log: log, stdout: stdout, stderr: stderr, wait: wait,
		interrupted: func() bool { return sigCtx.Err() != nil }}

	r.announce()
	unlock, err := st.LockDirectory()
	switch {
	case err == nil:
		defer unlock()
		return r.carry(ctx)
	case errors.Is(err, store.ErrDirectoryLocked):
		return r.askHolder(ctx)
	default:
		fmt.Fprintf(stderr, "certfetch: %v\n", err)
		return exitFailure
	}
}

// defaultRequestWait bounds the wait for the outcome: a visit of the certificate in
// flight (one deadline), the request's attempt (one deadline) and a resume of an order
// that outlived it (one more), plus a lease held by an instance that died.
func defaultRequestWait(cfg *config.Config, name string) time.Duration {
	timeout := cfg.Timeout
	for _, c := range cfg.Certificates {
		if c.Name == name {
			timeout = cfg.EffectiveTimeout(c)
		}
	}
	ttl := cfg.Storage.LockTTL
	if ttl <= 0 {
		ttl = config.DefaultLockTTL
	}
	return max(3*timeout+ttl, minRequestWait)
}

// announce says what is about to happen.
func (r *requester) announce() {
	req := r.req
	serial := "none issued yet"
	if leaf, err := acme.ParseLeaf(req.CertificatePEM); err == nil {
		serial = "serial " + acme.SerialHex(leaf)
	}
	switch req.Action {
	case store.RequestRevoke:
		r.progress("revoking %s (%s) with reason %s, then renewing it", req.Name, serial, req.Reason)
	default:
		r.progress("renewing %s now (in service: %s)", req.Name, serial)
	}
}

func (r *requester) progress(format string, args ...any) {
	fmt.Fprintf(r.stderr, "certfetch: "+format+"\n", args...)
}

// carry carries the request out in this process, under the certificate's lease.
func (r *requester) carry(ctx context.Context) int {
	d, err := fetcher.New(r.cfg, r.st, fetcher.Options{Logger: r.log, LockTTL: r.cfg.Storage.LockTTL})
	if err != nil {
		fmt.Fprintf(r.stderr, "certfetch: %v\n", err)
		return exitFailure
	}
	defer d.Close()
	rec, err := d.Carry(ctx, r.req, func(msg string) { r.progress("%s", msg) })
	return r.report(ctx, rec, err, "the order stays journaled and "+r.req.Name+" stays due: the next certfetch run or once finishes it")
}

// askHolder leaves the request for the process that holds the state directory, signals
// it, and waits for the outcome in the certificate's record. When that process goes
// away meanwhile, this one takes the directory and carries the request out itself.
func (r *requester) askHolder(ctx context.Context) int {
	req := r.req
	created, pending, err := r.st.CreateRequest(ctx, req)
	switch {
	case err != nil:
		fmt.Fprintf(r.stderr, "certfetch: %s %s: %v\n", req.Action, req.Name, err)
		return exitFailure
	case !created && (pending.Action != req.Action || pending.Reason != req.Reason):
		fmt.Fprintf(r.stderr, "certfetch: %s %s: a %s request for it is pending since %s (by %s); wait for it (certfetch status shows it)\n",
			req.Action, req.Name, pending.Action, pending.Requested.UTC().Format(time.RFC3339), pending.By)
		return exitFailure
	case !created:
		r.progress("the same request is pending since %s (by %s); waiting for it", pending.Requested.UTC().Format(time.RFC3339), pending.By)
		r.req = pending
	}
	where := filepath.Join(r.cfg.Storage.Directory, "requests", req.Name+".json")
	pid, err := r.st.DirectoryHolder()
	if err == nil {
		err = r.st.VerifyHolder(pid)
	}
	if err == nil {
		err = syscall.Kill(pid, syscall.SIGHUP)
	}
	if err != nil {
		fmt.Fprintf(r.stderr, "certfetch: another process holds the state directory and cannot be asked: %v\n"+
			"certfetch: the request stays in %s: the daemon carries it out at its next reload (systemctl reload certfetch) or start\n", err, where)
		return exitFailure
	}
	r.progress("certfetch (pid %d) holds the state directory: asked it to carry the request out (%s, SIGHUP sent); waiting up to %s",
		pid, where, r.wait)
	return r.await(ctx, pid)
}

// await watches the record for the outcome of the request left for process pid.
func (r *requester) await(ctx context.Context, pid int) int {
	req := r.req
	start := time.Now()
	poll := time.NewTicker(requestPoll)
	defer poll.Stop()
	lastNote := start
	for {
		select {
		case <-ctx.Done():
			return r.report(ctx, nil, ctx.Err(), fmt.Sprintf("certfetch (pid %d) goes on with the request; certfetch status shows it", pid))
		case <-poll.C:
		}
		// The request first, then the record: a request gone without its outcome in the
		// record read after it was dropped, not carried out.
		_, rerr := r.st.LoadRequest(ctx, req.Name)
		rec, err := r.st.LoadCertificate(ctx, req.Name)
		if errors.Is(err, store.ErrNotFound) {
			rec, err = &store.Certificate{}, nil
		}
		if err != nil {
			return r.report(ctx, nil, err, "")
		}
		// Done only once the replacement is published (RequestResult).
		if done, ferr := fetcher.RequestResult(rec, req); done {
			return r.report(ctx, rec, ferr, "")
		}
		if errors.Is(rerr, store.ErrNotFound) && (rec.LastRequest == nil || rec.LastRequest.ID != req.ID) {
			fmt.Fprintf(r.stderr, "certfetch: certfetch (pid %d) dropped the request: %s is not in the configuration it runs with (reload it after changing the configuration)\n", pid, req.Name)
			return exitUsage
		}
		if unlock, err := r.st.LockDirectory(); err == nil {
			defer unlock()
			r.progress("certfetch (pid %d) no longer holds the state directory; carrying the request out here", pid)
			return r.carry(ctx)
		}
		if time.Since(lastNote) >= requestProgress {
			lastNote = time.Now()
			r.progress("still waiting for certfetch (pid %d) after %s: %s", pid, time.Since(start).Round(time.Second), stage(rec, req))
		}
	}
}

// stage describes where a request left for the daemon stands.
func stage(rec *store.Certificate, req *store.Request) string {
	switch {
	case rec.LastRequest == nil || rec.LastRequest.ID != req.ID:
		return "not picked up yet (the daemon finishes the certificate's current visit first)"
	case rec.LastRequest.Done.IsZero():
		return "the replacement is being ordered"
	case rec.Reason == "deadline":
		return "the replacement's order is still processing at the CA; it is resumed"
	default:
		return "the replacement is being ordered"
	}
}

// report prints the outcome and returns the exit code. stillRunning says what goes on
// after a wait that ended early.
func (r *requester) report(ctx context.Context, rec *store.Certificate, err error, stillRunning string) int {
	req := r.req
	switch {
	case err == nil:
		r.printDone(rec)
		return exitOK
	case r.interrupted():
		fmt.Fprintf(r.stderr, "certfetch: %s %s: interrupted: %s\n", req.Action, req.Name, stillRunning)
		return exitFailure
	case ctx.Err() != nil && errors.Is(err, context.DeadlineExceeded):
		fmt.Fprintf(r.stderr, "certfetch: %s %s: no outcome within %s (--wait): %s\n", req.Action, req.Name, r.wait, stillRunning)
		return exitFailure
	default:
		fmt.Fprintf(r.stderr, "certfetch: %v\n", err)
		if rec == nil || req.Action != store.RequestRevoke {
			return exitFailure
		}
		for _, rev := range rec.Revoked {
			if rev.SHA256 == req.Target {
				fmt.Fprintf(r.stderr, "certfetch: serial %s of %s is revoked and never published again; its replacement is retried with back-off (certfetch status shows it)\n",
					rev.Serial, req.Name)
			}
		}
		return exitFailure
	}
}

// printDone prints the certificate now in service.
func (r *requester) printDone(rec *store.Certificate) {
	req := r.req
	if req.Action == store.RequestRevoke {
		for _, rev := range rec.Revoked {
			if rev.SHA256 == req.Target {
				fmt.Fprintf(r.stdout, "%s: revoked serial %s (%s)\n", req.Name, rev.Serial, rev.Reason)
			}
		}
	}
	leaf, err := acme.ParseLeaf(rec.CertPEM)
	if err != nil {
		fmt.Fprintf(r.stdout, "%s: renewed\n", req.Name)
		return
	}
	fmt.Fprintf(r.stdout, "%s: renewed: serial %s, valid until %s\n", req.Name, acme.SerialHex(leaf), leaf.NotAfter.UTC().Format(time.RFC3339))
}

// checkStateOwner refuses root on a state directory that belongs to another user (the
// packaged daemon's certfetch user): the request, the records and the output files root
// would write are root's, 0600, and the daemon could not read them.
func checkStateOwner(dir string) error {
	if dir == "" || os.Geteuid() != 0 {
		return nil
	}
	info, err := os.Stat(dir)
	if err != nil {
		return nil //nolint:nilerr // a missing directory is created by the store, as root's
	}
	st, ok := info.Sys().(*syscall.Stat_t)
	if !ok || st.Uid == 0 {
		return nil
	}
	return fmt.Errorf("the state directory %s belongs to uid %d: run the command as that user "+
		"(sudo -u certfetch certfetch ...); as root it would write files the daemon cannot read", dir, st.Uid)
}
