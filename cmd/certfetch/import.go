package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/certfetch/certfetch/fetcher"
	"github.com/certfetch/certfetch/fetcher/acmejson"
	"github.com/certfetch/certfetch/fetcher/store"
)

// `certfetch import-acme-json`: takes over the accounts and certificates of Traefik's
// certificatesResolvers from its acme.json (fetcher/importer.go), so that the switch
// orders nothing and keeps the ACME account.

const importSummary = "import-acme-json [--config FILE] [--dry-run] [--resolver TRAEFIK=CERTFETCH]... [--allow-ca-mismatch] [--json] ACME_JSON"

// importTimeout bounds the whole import: reading and writing a few records per
// certificate, and publishing them.
const importTimeout = 5 * time.Minute

// resolverMap is the repeatable --resolver flag.
type resolverMap map[string]string

func (m resolverMap) String() string { return fmt.Sprint(map[string]string(m)) }

func (m resolverMap) Set(s string) error {
	traefik, certfetch, ok := strings.Cut(s, "=")
	if !ok || traefik == "" {
		return fmt.Errorf("want TRAEFIK=CERTFETCH (or TRAEFIK= to skip it), got %q", s)
	}
	m[traefik] = certfetch
	return nil
}

func cmdImportACMEJSON(args []string, stdout, stderr io.Writer) int {
	var (
		dryRun, asJSON bool
		opts           = fetcher.ImportOptions{Resolvers: resolverMap{}}
	)
	fs, cfgFlag := commandFlags(importSummary, stderr)
	fs.BoolVar(&dryRun, "dry-run", false, "print what would be imported, skipped or refused, and write nothing")
	fs.Var(resolverMap(opts.Resolvers), "resolver", "import Traefik's resolver TRAEFIK into certfetch's resolver CERTFETCH "+
		"(default: the same name); TRAEFIK= skips it; repeatable")
	fs.BoolVar(&opts.AllowCAMismatch, "allow-ca-mismatch", false, "import an account whose URL is not on the host of the resolver's caServer")
	fs.BoolVar(&asJSON, "json", false, "print the plan as JSON")
	files, err := parseInterspersed(fs, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if len(files) != 1 {
		fmt.Fprintf(stderr, "certfetch: import-acme-json: name exactly one acme.json, got %d\n", len(files))
		fs.Usage()
		return exitUsage
	}
	source := files[0]
	data, err := readSource(source)
	if err != nil {
		fmt.Fprintf(stderr, "certfetch: import-acme-json: %v\n", err)
		return exitFailure
	}
	file, err := acmejson.Parse(data, time.Now())
	if err != nil {
		fmt.Fprintf(stderr, "certfetch: import-acme-json: %s cannot be imported; nothing was imported:\n%v\n", source, err)
		return exitFailure
	}
	cfg, _, ok := loadConfig(*cfgFlag, stderr)
	if !ok {
		return exitUsage
	}
	if err := checkStateOwner(cfg.Storage.Directory); err != nil {
		fmt.Fprintf(stderr, "certfetch: import-acme-json: %v\n", err)
		return exitUsage
	}
	st, ok := openStore(cfg, stderr)
	if !ok {
		return exitFailure
	}
	defer st.Close()
	if !dryRun {
		// The daemon must not work on the certificates meanwhile; on a shared store
		// ApplyImport takes each certificate's lease instead (LockDirectory does nothing).
		unlock, err := st.LockDirectory()
		if err != nil {
			if errors.Is(err, store.ErrDirectoryLocked) {
				err = fmt.Errorf("%w: stop certfetch (systemctl stop certfetch), import, then start it", err)
			}
			fmt.Fprintf(stderr, "certfetch: import-acme-json: %v\n", err)
			return exitFailure
		}
		defer unlock()
	}
	ctx, cancel := context.WithTimeout(context.Background(), importTimeout)
	defer cancel()
	plan, err := fetcher.PlanImport(ctx, cfg, st, file, opts)
	if err != nil {
		fmt.Fprintf(stderr, "certfetch: import-acme-json: %v\n", err)
		return exitFailure
	}
	refused := plan.Refused()
	if dryRun || refused != nil {
		return finishImport(stdout, stderr, source, plan, asJSON, refused, dryRun)
	}
	out, err := fetcher.OpenOutput(cfg.Output, newLogging(cfg.Log, stderr).Logger())
	if err != nil {
		fmt.Fprintf(stderr, "certfetch: %v\n", err)
		return exitFailure
	}
	defer out.Close()
	applyErr := fetcher.ApplyImport(ctx, st, out, plan, cfg.Storage.LockTTL)
	return finishImport(stdout, stderr, source, plan, asJSON, applyErr, false)
}

// readSource reads acme.json, opened read-only: the import never writes it (Traefik
// may still be running on it).
func readSource(path string) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(f)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return data, nil
}

// finishImport prints the plan and the outcome (failure: a refusal or what applying
// it could not do) and returns the exit code.
func finishImport(stdout, stderr io.Writer, source string, plan *fetcher.ImportPlan, asJSON bool, failure error, dryRun bool) int {
	var err error
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		err = enc.Encode(plan)
	} else {
		err = printImportPlan(stdout, source, plan)
	}
	if err != nil {
		fmt.Fprintf(stderr, "certfetch: import-acme-json: %v\n", err)
		return exitFailure
	}
	switch {
	case failure != nil && plan.Refused() != nil:
		fmt.Fprintf(stderr, "certfetch: import-acme-json: nothing was imported:\n%v\n", failure)
		return exitFailure
	case failure != nil:
		fmt.Fprintf(stderr, "certfetch: import-acme-json: %v\n", failure)
		return exitFailure
	case dryRun:
		fmt.Fprintln(stderr, "certfetch: import-acme-json: dry run: nothing was written")
	}
	return exitOK
}

// printImportPlan prints one block per Traefik resolver: its account, then a table of
// its certificates. It prints no key material (the plan holds none in its fields).
func printImportPlan(w io.Writer, source string, plan *fetcher.ImportPlan) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "%s\n", source)
	for _, r := range plan.Resolvers {
		target := r.Resolver
		if target == "" {
			target = "-"
		}
		fmt.Fprintf(tw, "\nresolver %s -> %s (%s)\n", r.Traefik, target, cmp.Or(string(r.Format), "empty"))
		fmt.Fprintf(tw, "  account %s: %s%s\n", cmp.Or(r.AccountURL, "-"), r.Action, detail(r.Why))
		if r.Thumbprint != "" {
			fmt.Fprintf(tw, "  thumbprint (the plugin's, in stateless mode): %s\n", r.Thumbprint)
		}
		if len(r.Certificates) == 0 {
			continue
		}
		fmt.Fprintln(tw, "  ENTRY\tDOMAINS\tNAME\tSERIAL\tNOT AFTER\tACTION\tDETAILS")
		for _, c := range r.Certificates {
			var details []string
			for _, d := range []string{c.Why, c.Published, c.Note} {
				if d != "" {
					details = append(details, d)
				}
			}
			fmt.Fprintf(tw, "  [%d]\t%s\t%s\t%s\t%s\t%s\t%s\n", c.Index, strings.Join(c.Domains, ","), cmp.Or(c.Name, "-"),
				cmp.Or(c.Serial, "-"), timeCell(c.NotAfter), c.Action, cmp.Or(oneLine(strings.Join(details, "; ")), "-"))
		}
	}
	return tw.Flush()
}

func detail(why string) string {
	if why == "" {
		return ""
	}
	return ": " + why
}
