package main

import (
	"context"
	"fmt"
	"io"
	"os/signal"
	"syscall"
	"time"

	"github.com/certfetch/certfetch/fetcher"
)

const probeDNSSummary = "probe-dns [--config FILE] [--resolver NAME] [--timeout D] DOMAIN"

// defaultProbeDNSTimeout bounds the wait for the test record to become visible: twice
// lego's default propagation timeout (60 s), for a provider that says nothing.
const defaultProbeDNSTimeout = 2 * time.Minute

// cmdProbeDNS tries a DNS-01 resolver's provider credentials for DOMAIN (fetcher.ProbeDNS).
func cmdProbeDNS(args []string, stdout, stderr io.Writer) int {
	fs, cfgFlag := commandFlags(probeDNSSummary, stderr)
	resolver := fs.String("resolver", "", "DNS-01 resolver to try (default: the only one)")
	timeout := fs.Duration("timeout", defaultProbeDNSTimeout, "how long to wait for the record to become visible")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if fs.NArg() != 1 || *timeout <= 0 {
		fmt.Fprintf(stderr, "Usage: certfetch %s\n", probeDNSSummary)
		return exitUsage
	}
	cfg, _, ok := loadConfig(*cfgFlag, stderr)
	if !ok {
		return exitUsage
	}
	rc, err := cfg.ResolverNamed(*resolver)
	if err != nil {
		fmt.Fprintf(stderr, "certfetch probe-dns: %v\n", err)
		return exitUsage
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	p, err := fetcher.ProbeDNS(ctx, rc, fs.Arg(0))
	if err != nil {
		fmt.Fprintf(stderr, "certfetch probe-dns: %v\n", err)
		return exitFailure
	}
	fmt.Fprintf(stdout, "resolver %s: provider %s: %s created in %s, visible after %s, removed in %s\n", rc.Name,
		rc.DNSChallenge.Provider, p.Record, p.Present.Round(time.Millisecond), p.Visible.Round(time.Millisecond), p.CleanUp.Round(time.Millisecond))
	return exitOK
}
