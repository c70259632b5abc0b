package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/certfetch/certfetch/fetcher"
	"github.com/certfetch/certfetch/fetcher/config"
)

const probeSummary = "probe [--config FILE] [--resolver NAME] [--count N] [--names a.example,b.example] [--timeout D] [--json]"

// probeHelp heads `certfetch probe --help`: the command costs real certificates, so
// the help says so before the flags.
const probeHelp = `Measures a CA before you trust it: places N real orders, one after the other, against a
configured resolver with its challenge, and times each phase (directory, account, new
order, validation, finalize → valid, download). Records every Retry-After the CA sent,
whether it offers profiles, ARI and requires EAB, and whether it finalizes synchronously
(holding the finalize request open) or asynchronously; then recommends timeout and
http.responseHeaderTimeout, with the reasoning.

THE ORDERS ARE REAL: the CA issues a real certificate for each (they count against its
rate limits). probe uses the resolver's account key from the state store (creating it when
there is none, like thumbprint) and answers the challenge as the daemon would, but keeps
its orders in memory: it stores and publishes nothing, so it may run beside the daemon
(except with httpChallenge.listen, whose address the running daemon holds).

Progress goes to stderr; the report (a table, or JSON with --json) to stdout.
Exit code: 0 when every order completed, 1 when one failed (the report shows what was
measured), 2 for a bad command line or configuration.

`

func cmdProbe(args []string, stdout, stderr io.Writer) int {
	fs, cfgFlag := commandFlags(probeSummary, stderr)
	resolver := fs.String("resolver", "", "resolver to probe (default: the only one)")
	count := fs.Int("count", fetcher.DefaultProbeCount, "number of real orders, one after the other")
	names := fs.String("names", "", "comma-separated names to order (default: the domains of the resolver's first certificate)")
	timeout := fs.Duration("timeout", fetcher.DefaultProbeTimeout, "deadline of each order and of each request to the CA")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: certfetch %s\n\n%s", probeSummary, probeHelp)
		fs.PrintDefaults()
	}
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if fs.NArg() > 0 || *count < 1 || *timeout <= 0 {
		fmt.Fprintf(stderr, "certfetch probe: --count must be at least 1, --timeout positive, and no arguments follow the flags\n")
		return exitUsage
	}
	cfg, _, ok := loadConfig(*cfgFlag, stderr)
	if !ok {
		return exitUsage
	}
	var nameList []string
	if *names != "" {
		nameList = strings.Split(*names, ",")
	}
	target, err := fetcher.ResolveProbeTarget(cfg, *resolver, nameList)
	if err != nil {
		fmt.Fprintf(stderr, "certfetch %v\n", err)
		return exitUsage
	}
	st, ok := openStore(cfg, stderr)
	if !ok {
		return exitFailure
	}
	defer st.Close()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	start := time.Now()
	var mu sync.Mutex
	progress := func(line string) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(stderr, "[%6.1fs] %s\n", time.Since(start).Seconds(), line)
	}
	fmt.Fprintf(stderr, "certfetch probe: %d real order(s) for %s at %s; the CA issues a real certificate for each (not stored, not published)\n",
		*count, strings.Join(target.Names, ", "), target.Resolver.CAServer)
	// The progress lines tell the story; the engine's own info lines would repeat it.
	engineLog := newLogging(config.Log{Level: max(cfg.Log.Level, slog.LevelWarn), Format: cfg.Log.Format}, stderr).Logger()
	report, err := fetcher.Probe(ctx, st, target, fetcher.ProbeOptions{Count: *count, Timeout: *timeout, Progress: progress, Logger: engineLog})
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if werr := enc.Encode(report); werr != nil {
			fmt.Fprintf(stderr, "certfetch probe: write the report: %v\n", werr)
			return exitFailure
		}
	} else if werr := writeProbeTable(stdout, report); werr != nil {
		fmt.Fprintf(stderr, "certfetch probe: write the report: %v\n", werr)
		return exitFailure
	}
	if err != nil {
		fmt.Fprintf(stderr, "certfetch %v\n", err)
		return exitFailure
	}
	return exitOK
}

// writeProbeTable prints the report for people.
func writeProbeTable(w io.Writer, r *fetcher.ProbeReport) error {
	var b strings.Builder
	fmt.Fprintf(&b, "Probe of resolver %s (%s), challenge %s, %d order(s) for %s\n\n",
		r.Resolver, r.DirectoryURL, r.Challenge, r.Count, strings.Join(r.Names, ", "))

	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "directory\tread in %s\n", secs(r.DirectorySeconds))
	if r.Account.URL != "" {
		fmt.Fprintf(tw, "account\t%s: %s (newAccount answered in %s)\n", r.Account.Status, r.Account.URL, secs(r.Account.Seconds))
	}
	fmt.Fprintf(tw, "profiles\t%s\n", profiles(r))
	ari := "no (no renewalInfo in the directory)"
	if r.CA.ARI {
		ari = "yes: " + r.CA.RenewalInfoURL
	}
	fmt.Fprintf(tw, "ARI\t%s\n", ari)
	fmt.Fprintf(tw, "EAB\t%s\n", eab(r))
	fmt.Fprintf(tw, "finalize\t%s\n", finalizeMode(r))
	if err := tw.Flush(); err != nil {
		return err
	}

	b.WriteString("\n")
	tw = tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ORDER\tNEW ORDER\tVALIDATION\tFINALIZE → VALID\tDOWNLOAD\tTOTAL\tFINALIZE REQUEST\tPOLLS (ORDER/AUTHZ)\tREQUESTS\tRESULT")
	for _, o := range r.Orders {
		result := "issued, serial " + o.Serial
		if o.Error != "" {
			result = "failed"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%d/%d\t%d\t%s\n", o.Order, secs(o.NewOrderSeconds), secs(o.AuthorizationSeconds),
			secs(o.FinalizeSeconds), secs(o.DownloadSeconds), secs(o.TotalSeconds), secs(o.FinalizeRequestSeconds),
			o.OrderPolls, o.AuthorizationPolls, o.Requests, result)
	}
	if err := tw.Flush(); err != nil {
		return err
	}

	b.WriteString("\nRetry-After sent by the CA: ")
	if len(r.RetryAfter) == 0 {
		b.WriteString("none\n")
	} else {
		var parts []string
		for _, ra := range r.RetryAfter {
			parts = append(parts, fmt.Sprintf("%s %gs ×%d", ra.Where, ra.Seconds, ra.Count))
		}
		b.WriteString(strings.Join(parts, ", ") + "\n")
	}
	for _, n := range r.Notes {
		fmt.Fprintf(&b, "Note: %s\n", n)
	}

	if rec := r.Recommendation; rec != nil {
		b.WriteString("\nRecommendation\n")
		fmt.Fprintf(&b, "  timeout: %s (configured: %s)\n", rec.Timeout, rec.ConfiguredTimeout)
		for _, reason := range rec.TimeoutReasons {
			fmt.Fprintf(&b, "    - %s\n", reason)
		}
		fmt.Fprintf(&b, "  http.responseHeaderTimeout: %s (configured: %s)\n", rec.ResponseHeaderTimeout, rec.ConfiguredResponseHeaderTimeout)
		for _, reason := range rec.ResponseHeaderTimeoutReasons {
			fmt.Fprintf(&b, "    - %s\n", reason)
		}
	} else {
		b.WriteString("\nNo recommendation: no order completed.\n")
	}
	if r.Error != "" {
		fmt.Fprintf(&b, "\nStopped: %s\n", r.Error)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// secs formats seconds from the report for the table.
func secs(s float64) string {
	if s < 10 {
		return fmt.Sprintf("%.3fs", s)
	}
	return fmt.Sprintf("%.1fs", s)
}

func profiles(r *fetcher.ProbeReport) string {
	if len(r.CA.Profiles) == 0 {
		return "none offered (no meta.profiles)"
	}
	names := slices.Sorted(maps.Keys(r.CA.Profiles))
	asked := "the CA's default"
	if r.Profile != "" {
		asked = r.Profile
	}
	return fmt.Sprintf("%s (the orders asked for: %s)", strings.Join(names, ", "), asked)
}

func eab(r *fetcher.ProbeReport) string {
	required := "not required"
	if r.CA.EABRequired {
		required = "required (meta.externalAccountRequired)"
	}
	configured := "no eab configured"
	if r.CA.EABConfigured {
		configured = "eab configured"
	}
	return required + "; " + configured
}

func finalizeMode(r *fetcher.ProbeReport) string {
	hold := secs(r.CA.FinalizeHoldSeconds)
	switch r.CA.Finalize {
	case fetcher.FinalizeSynchronous:
		return "synchronous: the CA held the finalize request open up to " + hold + " and answered with the order valid"
	case fetcher.FinalizeAsynchronous:
		return "asynchronous: the CA answered the finalize request within " + hold + " with the order processing; polled until valid"
	default:
		return "unknown (no order reached finalize)"
	}
}
