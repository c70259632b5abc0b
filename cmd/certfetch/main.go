// Command certfetch obtains and renews ACME certificates for Traefik: it runs
// orders with a configurable deadline, resumes orders a slow CA is still
// working on, and publishes certificates for Traefik's file provider or its
// Redis and etcd providers, keeping its state in a directory or sharing it
// with other instances on Redis or etcd.
//
// Usage: certfetch <command> [--config FILE] [args]; see usage below.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"

	"github.com/certfetch/certfetch/acme"
	"github.com/certfetch/certfetch/fetcher"
	"github.com/certfetch/certfetch/fetcher/config"
	"github.com/certfetch/certfetch/fetcher/metrics"
	"github.com/certfetch/certfetch/fetcher/store"
	"github.com/certfetch/certfetch/internal/wait"
)

// defaultConfigPath is used when neither --config nor $CERTFETCH_CONFIG is set.
const defaultConfigPath = "/etc/certfetch/certfetch.yml"

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1 // an operation failed (once: a certificate failed)
	exitUsage   = 2 // bad command line or configuration
)

const usage = `certfetch: ACME certificates for Traefik from slow and private CAs

Usage:
  certfetch run        [--config FILE]   run the daemon (systemd Type=notify)
  certfetch once       [--config FILE]   do what is due, then exit (non-zero if anything failed)
  certfetch check      [--config FILE]   validate the configuration
  certfetch status     [--config FILE] [--json]
                                         show every certificate's state (non-zero if any needs attention)
  certfetch renew      --force NAME [--config FILE] [--wait D]
                                         renew one certificate now, whatever its schedule
  certfetch revoke     NAME --reason R [--config FILE] [--wait D]
                                         revoke the certificate in service at the CA, then renew it
                                         (R: ` + reasonList + `)
  certfetch thumbprint [--config FILE] [--new-key] [RESOLVER]
                                         print the account key thumbprint for the plugin
  certfetch probe      [--config FILE] [--resolver NAME] [--count N] [--names a,b] [--timeout D] [--json]
                                         measure the CA with N REAL orders (real certificates are
                                         issued, not stored) and recommend timeouts
  certfetch probe-dns  [--config FILE] [--resolver NAME] [--timeout D] DOMAIN
                                         try a DNS-01 resolver's provider: create, see and remove a
                                         test TXT record at _acme-challenge.DOMAIN (no order)
  certfetch import-acme-json [--config FILE] [--dry-run] [--resolver TRAEFIK=CERTFETCH]... [--allow-ca-mismatch] [--json] ACME_JSON
                                         take over the accounts and certificates of Traefik's
                                         certificatesResolvers: nothing is ordered again
  certfetch demo       [--ca-delay 42s] [--timeout 30s] [--dir DIR]
                                         self-contained demo against a local slow test CA
  certfetch version                      print version, VCS revision and Go version (also --version)

The configuration file is --config FILE, else $CERTFETCH_CONFIG, else ` + defaultConfigPath + `.
Run 'certfetch <command> --help' for a command's flags.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	commands := map[string]func([]string, io.Writer, io.Writer) int{
		"run":        cmdRun,
		"once":       cmdOnce,
		"check":      cmdCheck,
		"status":     cmdStatus,
		"renew":      cmdRenew,
		"revoke":     cmdRevoke,
		"thumbprint": cmdThumbprint,
		"probe":      cmdProbe,
		"probe-dns":  cmdProbeDNS,
		"demo":       cmdDemo,
		"version":    cmdVersion,
		"--version":  cmdVersion,
	}
	commands["import-acme-json"] = cmdImportACMEJSON // apart: its long name would realign the table
	cmd, ok := commands[args[0]]
	if !ok {
		if args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
			fmt.Fprint(stdout, usage)
			return exitOK
		}
		fmt.Fprintf(stderr, "certfetch: unknown command %q\n\n%s", args[0], usage)
		return exitUsage
	}
	return cmd(args[1:], stdout, stderr)
}

// commandFlags returns the flag set of a command with the --config flag;
// summary is the usage line after "certfetch ".
func commandFlags(summary string, stderr io.Writer) (*flag.FlagSet, *string) {
	name, _, _ := strings.Cut(summary, " ")
	fs := flag.NewFlagSet("certfetch "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "configuration file (default $CERTFETCH_CONFIG, else "+defaultConfigPath+")")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: certfetch %s\n\n", summary)
		fs.PrintDefaults()
	}
	return fs, path
}

// parseFlags parses args; ok is false when the command must exit with code.
func parseFlags(fs *flag.FlagSet, args []string) (code int, ok bool) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK, false
		}
		return exitUsage, false
	}
	return exitOK, true
}

// configCommand parses the flags of a command that reads the configuration
// (defined by flags, besides --config, which may be nil) and loads it. ok is
// false when the command must exit with code.
func configCommand(summary string, args []string, stderr io.Writer, flags func(*flag.FlagSet)) (fs *flag.FlagSet, cfg *config.Config, path string, code int, ok bool) {
	fs, cfgFlag := commandFlags(summary, stderr)
	if flags != nil {
		flags(fs)
	}
	if code, ok := parseFlags(fs, args); !ok {
		return nil, nil, "", code, false
	}
	if cfg, path, ok = loadConfig(*cfgFlag, stderr); !ok {
		return nil, nil, "", exitUsage, false
	}
	return fs, cfg, path, exitOK, true
}

// storeOpenTimeout bounds connecting to a shared store at start-up.
const storeOpenTimeout = 30 * time.Second

// openStore opens the configured store without locking it: status and
// thumbprint run beside the daemon. The caller closes it.
func openStore(cfg *config.Config, stderr io.Writer) (*store.Store, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), storeOpenTimeout)
	defer cancel()
	st, err := fetcher.OpenStore(ctx, cfg.Storage)
	if err != nil {
		fmt.Fprintf(stderr, "certfetch: open the state store: %v\n", err)
		return nil, false
	}
	return st, true
}

func configPath(flagValue string) string {
	if flagValue != "" {
		return flagValue
	}
	if env := os.Getenv("CERTFETCH_CONFIG"); env != "" {
		return env
	}
	return defaultConfigPath
}

// loadConfig loads the configuration, printing its errors.
func loadConfig(flagValue string, stderr io.Writer) (*config.Config, string, bool) {
	path := configPath(flagValue)
	cfg, err := config.Load(path)
	if err != nil {
		fmt.Fprintf(stderr, "certfetch: configuration %s is invalid:\n%v\n", path, err)
		return nil, path, false
	}
	return cfg, path, true
}

// daemonSetup is what run and once share: configuration, logger, locked
// state and the daemon.
type daemonSetup struct {
	cfg     *config.Config
	path    string
	logging *logging
	log     *slog.Logger
	store   *store.Store
	unlock  func() error
	daemon  *fetcher.Daemon
	metrics *metrics.Metrics   // nil unless served
	stop    context.CancelFunc // stops the signal handling
}

// startDaemon parses the flags of run or once (summary is its usage line),
// then sets the daemon up under a context that SIGTERM and SIGINT cancel.
// It returns a nil setup, and the exit code, when the command ends there;
// otherwise close the setup at the end.
func startDaemon(summary string, args []string, serveMetrics bool, stderr io.Writer) (context.Context, *daemonSetup, int) {
	fs, cfgFlag := commandFlags(summary, stderr)
	if code, ok := parseFlags(fs, args); !ok {
		return nil, nil, code
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	s, code := setup(*cfgFlag, serveMetrics, stderr)
	if s == nil {
		stop()
		return nil, nil, code
	}
	s.stop = stop
	return ctx, s, exitOK
}

// setup loads the configuration, locks the state and builds the daemon;
// with serveMetrics and metrics.listen set, it also creates the metrics.
func setup(flagValue string, serveMetrics bool, stderr io.Writer) (*daemonSetup, int) {
	cfg, path, ok := loadConfig(flagValue, stderr)
	if !ok {
		return nil, exitUsage
	}
	var m *metrics.Metrics
	if serveMetrics && cfg.Metrics.Listen != "" {
		m = metrics.New()
	}
	lg := newLogging(cfg.Log, stderr)
	log := lg.Logger()
	// lego's own log lines (its badNonce retries) go through the same logger.
	acme.RouteLegoLog(log)
	st, ok := openStore(cfg, stderr)
	if !ok {
		return nil, exitFailure
	}
	// On a directory, one process at a time; a shared store's instances
	// coordinate per certificate instead (LockDirectory is a no-op there).
	unlock, err := st.LockDirectory()
	if err != nil {
		st.Close()
		log.Error("cannot lock the state directory", "err", err)
		return nil, exitFailure
	}
	d, err := fetcher.New(cfg, st, fetcher.Options{Logger: log, Metrics: m, LockTTL: cfg.Storage.LockTTL, Observe: observe})
	if err != nil {
		st.Close()
		unlock()
		log.Error("cannot start", "err", err)
		return nil, exitFailure
	}
	return &daemonSetup{cfg: cfg, path: path, logging: lg, log: log, store: st, unlock: unlock, daemon: d, metrics: m}, exitOK
}

// observe is the daemon's Options.Observe: nil in the binary; the test binary sets it to
// stop the process at a chosen step of a certificate's life.
var observe func(fetcher.Event)

func (s *daemonSetup) close() {
	s.daemon.Close()
	_ = s.unlock()
	if err := s.store.Close(); err != nil {
		s.log.Warn("close the state store", "err", err)
	}
	s.stop()
}

func cmdRun(args []string, _, stderr io.Writer) int {
	// Caught before the state directory is locked: from then on a renew command may
	// send SIGHUP (renew.go), which must reload, not kill.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	ctx, s, code := startDaemon("run [--config FILE]", args, true, stderr)
	if s == nil {
		return code
	}
	defer s.close()
	if s.metrics != nil {
		addr, err := metrics.Serve(ctx, s.cfg.Metrics.Listen, s.metrics.Handler(), s.log)
		if err != nil {
			s.log.Error("cannot serve metrics", "err", err)
			return exitFailure
		}
		s.log.Info("serving metrics", "addr", addr.String())
	}

	go reloadOnSignal(ctx, hup, s)
	go watchdog(ctx, s.log)

	notify(s.log, daemon.SdNotifyReady)
	s.log.Info("certfetch running", "config", s.path, "certificates", len(s.cfg.Certificates))
	err := s.daemon.Run(ctx, statusNotifier(ctx, s))
	notify(s.log, daemon.SdNotifyStopping)
	if err != nil {
		s.log.Error("stopped", "err", err)
		return exitFailure
	}
	s.log.Info("certfetch stopped")
	return exitOK
}

// reloadOnSignal reloads the configuration on SIGHUP. A configuration that
// does not load leaves the running one in force.
func reloadOnSignal(ctx context.Context, hup <-chan os.Signal, s *daemonSetup) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
		}
		notify(s.log, daemon.SdNotifyReloading)
		cfg, err := config.Load(s.path)
		if err == nil {
			err = s.daemon.Reload(ctx, cfg)
		}
		if err != nil {
			s.log.Error("reload failed; keeping the running configuration", "config", s.path, "err", err)
		} else {
			s.logging.apply(cfg.Log)
			s.log.Info("configuration reloaded", "config", s.path, "certificates", len(cfg.Certificates))
		}
		// `certfetch renew` and `revoke` send SIGHUP after leaving a request (renew.go).
		s.daemon.HandleRequests(ctx)
		notify(s.log, daemon.SdNotifyReady)
	}
}

// watchdog pings systemd's watchdog at half its interval when the unit sets
// WatchdogSec.
func watchdog(ctx context.Context, log *slog.Logger) {
	interval, err := daemon.SdWatchdogEnabled(false)
	if err != nil || interval == 0 {
		return
	}
	wait.Every(ctx, interval/2, func() { notify(log, daemon.SdNotifyWatchdog) })
}

// statusInterval bounds how often the daemon's STATUS line is sent to systemd: at start
// thousands of visits may end within a second.
const statusInterval = time.Second

// statusNotifier returns the daemon's onVisit: it sends sd_notify STATUS with the
// daemon's summary at most every statusInterval, and once more when visits stop coming.
func statusNotifier(ctx context.Context, s *daemonSetup) func() {
	visited := make(chan struct{}, 1)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-visited:
			}
			notify(s.log, "STATUS="+s.daemon.Summary().String())
			select {
			case <-ctx.Done():
				return
			case <-time.After(statusInterval):
			}
		}
	}()
	return func() {
		select {
		case visited <- struct{}{}:
		default:
		}
	}
}

// notify sends state to systemd; outside systemd it does nothing.
func notify(log *slog.Logger, state string) {
	if _, err := daemon.SdNotify(false, state); err != nil {
		log.Warn("sd_notify failed", "state", state, "err", err)
	}
}

func cmdOnce(args []string, _, stderr io.Writer) int {
	// once picks requests up at its start; a renew command that finds it holding the
	// state directory sends SIGHUP, which must not kill it (renew.go).
	signal.Ignore(syscall.SIGHUP)
	ctx, s, code := startDaemon("once [--config FILE]", args, false, stderr)
	if s == nil {
		return code
	}
	defer s.close()
	if err := s.daemon.Once(ctx); err != nil {
		s.log.Error("some certificates failed", "err", err)
		return exitFailure
	}
	return exitOK
}

func cmdCheck(args []string, stdout, stderr io.Writer) int {
	_, cfg, path, code, ok := configCommand("check [--config FILE]", args, stderr, nil)
	if !ok {
		return code
	}
	// DNS-01 providers are built offline: the name is known and the required variables are
	// present. Their credentials are tried by probe-dns, not here.
	if err := fetcher.CheckDNSProviders(cfg); err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", path, err)
		return exitUsage
	}
	var discovered string
	if cfg.Traefik != nil {
		discovered = ", and those of Traefik's routers at " + cfg.Traefik.API.URL
	}
	fmt.Fprintf(stdout, "%s: OK (%d resolvers, %d certificates%s)\n", path, len(cfg.Resolvers), len(cfg.Certificates), discovered)
	return exitOK
}

func cmdStatus(args []string, stdout, stderr io.Writer) int {
	var asJSON bool
	_, cfg, _, code, ok := configCommand("status [--config FILE] [--json]", args, stderr, func(fs *flag.FlagSet) {
		fs.BoolVar(&asJSON, "json", false, "print JSON (an array of certificates) instead of a table")
	})
	if !ok {
		return code
	}
	st, ok := openStore(cfg, stderr)
	if !ok {
		return exitFailure
	}
	defer st.Close()
	out, err := fetcher.OpenOutput(cfg.Output, slog.New(slog.DiscardHandler))
	if err != nil {
		fmt.Fprintf(stderr, "certfetch: %v\n", err)
		return exitFailure
	}
	defer out.Close()
	ctx, cancel := context.WithTimeout(context.Background(), storeOpenTimeout)
	defer cancel()
	statuses, err := fetcher.Status(ctx, cfg, st, out, time.Now())
	if err != nil {
		fmt.Fprintf(stderr, "certfetch: status: %v\n", err)
		return exitFailure
	}
	discovery, err := fetcher.DiscoveryStatus(ctx, cfg, st)
	if err != nil {
		fmt.Fprintf(stderr, "certfetch: status: %v\n", err)
		return exitFailure
	}
	if asJSON {
		err = printStatusJSON(stdout, statuses)
	} else {
		err = printStatusTable(stdout, statuses)
		if err == nil && discovery != nil {
			printDiscovery(stdout, cfg.Traefik.API.URL, discovery)
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "certfetch: status: %v\n", err)
		return exitFailure
	}
	if discovery != nil && discovery.LastError != "" {
		return exitFailure
	}
	for _, s := range statuses {
		if s.Trouble() {
			return exitFailure
		}
	}
	return exitOK
}

// printDiscovery says how the reads of Traefik's API go and which routers certfetch
// cannot serve.
func printDiscovery(w io.Writer, url string, d *store.Discovery) {
	switch {
	case d.LastError != "":
		fmt.Fprintf(w, "\nTraefik API %s: failing since %s (nothing is withdrawn meanwhile): %s\n", url, timeCell(d.FailingSince), oneLine(d.LastError))
	case d.LastSuccess.IsZero():
		fmt.Fprintf(w, "\nTraefik API %s: not read yet\n", url)
	default:
		fmt.Fprintf(w, "\nTraefik API %s: read; last change %s\n", url, timeCell(d.LastSuccess))
	}
	if len(d.Problems) == 0 {
		return
	}
	fmt.Fprintln(w, "Routers not served:")
	for _, p := range d.Problems {
		fmt.Fprintf(w, "  %s: %s\n", p.Router, oneLine(p.Problem))
	}
}

func printStatusJSON(w io.Writer, statuses []fetcher.CertificateStatus) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(statuses)
}

func printStatusTable(w io.Writer, statuses []fetcher.CertificateStatus) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tDOMAINS\tRESOLVER\tSOURCE\tSTATE\tNOT AFTER\tNEXT RENEWAL\tRETRY AT\tPROBLEM")
	for _, s := range statuses {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.Name, strings.Join(s.Domains, ","), s.Resolver, sourceCell(s), s.State,
			timeCell(s.NotAfter), timeCell(s.RenewAt), timeCell(s.RetryAt), problemCell(s))
	}
	return tw.Flush()
}

// sourceCell says where a certificate comes from: the file, or the routers that ask for
// it (and when it is withdrawn, once none does).
func sourceCell(s fetcher.CertificateStatus) string {
	switch {
	case len(s.Routers) == 0:
		return s.Source
	case !s.WithdrawAt.IsZero():
		return "routers gone, withdrawn at " + timeCell(s.WithdrawAt)
	default:
		return "routers " + strings.Join(s.Routers, ",")
	}
}

func timeCell(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// problemCell is what is wrong with a certificate: its problem, else its last failure
// with the reason, else "-".
func problemCell(s fetcher.CertificateStatus) string {
	var parts []string
	if s.Problem != "" {
		parts = append(parts, s.Problem)
	}
	if s.LastError != "" {
		parts = append(parts, fmt.Sprintf("%s (%d): %s", s.Reason, s.Failures, s.LastError))
	}
	if s.Request != nil {
		parts = append(parts, s.Request.String())
	}
	if len(parts) == 0 {
		return "-"
	}
	return oneLine(strings.Join(parts, "; "))
}

// oneLine keeps a table row on one line.
func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

func cmdThumbprint(args []string, stdout, stderr io.Writer) int {
	var newKey bool
	fs, cfg, _, code, ok := configCommand("thumbprint [--config FILE] [--new-key] [RESOLVER]", args, stderr, func(fs *flag.FlagSet) {
		fs.BoolVar(&newKey, "new-key", false, "create a new account key even though certificates were obtained with the old one (the plugin's thumbprint changes)")
	})
	if !ok {
		return code
	}
	rc, err := cfg.ResolverNamed(fs.Arg(0))
	if err != nil {
		fmt.Fprintf(stderr, "certfetch: %v\n", err)
		return exitUsage
	}
	st, ok := openStore(cfg, stderr)
	if !ok {
		return exitFailure
	}
	defer st.Close()
	tp, err := fetcher.Thumbprint(context.Background(), st, rc, newKey)
	if err != nil {
		fmt.Fprintf(stderr, "certfetch: %v\n", err)
		return exitFailure
	}
	fmt.Fprintln(stdout, tp)
	return exitOK
}
