package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// writeManPage writes certfetch(1), gzipped, from the binary's own usage
// text (`certfetch --help`), so the page lists exactly the commands the
// packaged binary has; the rest points at the README. Debian policy wants a
// manual page for every program in /usr/bin. A binary for another
// architecture cannot run here: the help then comes from a host build.
func writeManPage(repo, bin, arch, version string, mtime time.Time, out string) error {
	helpBin := bin
	if arch != runtime.GOARCH {
		helpBin = filepath.Join(filepath.Dir(out), "certfetch-host")
		cmd := exec.Command("go", "build", "-o", helpBin, "./cmd/certfetch")
		cmd.Dir = repo
		if msg, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("build a host binary for the man page: %w\n%s", err, msg)
		}
		defer os.Remove(helpBin)
	}
	help, err := exec.Command(helpBin, "--help").Output()
	if err != nil {
		return fmt.Errorf("certfetch --help: %w", err)
	}
	return writeGzip(out, []byte(manPage(string(help), version, mtime)), mtime)
}

// manPage renders the usage text as roff: a NAME line from its first line,
// the rest verbatim in a no-fill block.
func manPage(help, version string, mtime time.Time) string {
	lines := strings.Split(strings.TrimRight(help, "\n"), "\n")
	summary := lines[0]
	if _, rest, ok := strings.Cut(summary, ": "); ok {
		summary = rest
	}
	var b strings.Builder
	fmt.Fprintf(&b, ".TH CERTFETCH 1 %q %q \"User Commands\"\n", mtime.Format("2006-01-02"), "certfetch "+version)
	fmt.Fprintf(&b, ".SH NAME\ncertfetch \\- %s\n", roff(summary))
	b.WriteString(".SH SYNOPSIS\n.B certfetch\n.I command\n[\\fB\\-\\-config\\fR \\fIFILE\\fR] [\\fIargs\\fR]\n")
	b.WriteString(".SH DESCRIPTION\n" +
		"certfetch obtains and renews certificates from ACME CAs, including slow\n" +
		"and private ones, for Traefik: it runs each order with a configurable\n" +
		"deadline, resumes an order the CA is still working on instead of\n" +
		"abandoning it, and publishes the certificates for Traefik's file,\n" +
		"Redis or etcd provider. Its Traefik plugin answers the HTTP\\-01\n" +
		"challenges.\n")
	b.WriteString(".SH COMMANDS\n.nf\n")
	for _, line := range lines[1:] {
		b.WriteString(roff(line) + "\n")
	}
	b.WriteString(".fi\n")
	b.WriteString(".SH FILES\n" +
		".TP\n.I /etc/certfetch/certfetch.yml\nThe configuration (see the README for every key).\n" +
		".TP\n.I /var/lib/certfetch\nPrivate state: ACME accounts, journaled orders, issued certificates.\n" +
		".TP\n.I /etc/traefik/certfetch\nThe output directory Traefik's file provider watches.\n")
	b.WriteString(".SH SEE ALSO\n" +
		".BR systemd-sysusers (8),\n.BR systemd-tmpfiles (8),\n" +
		"/usr/share/doc/certfetch/README.md,\nhttps://github.com/certfetch/certfetch\n")
	return b.String()
}

// roff escapes a line of text for roff: backslashes, minus signs (a bare
// "-" is a hyphen), and a leading "." or "'" that would make it a request.
func roff(line string) string {
	line = strings.ReplaceAll(line, `\`, `\e`)
	line = strings.ReplaceAll(line, "-", `\-`)
	if strings.HasPrefix(line, ".") || strings.HasPrefix(line, "'") {
		line = `\&` + line
	}
	return line
}
