package main

import (
	"flag"
	"fmt"
	"io"

	"github.com/certfetch/certfetch/internal/buildinfo"
)

// cmdVersion prints the module version, the VCS revision with its dirty flag
// and the Go version, as the Go toolchain recorded them in the binary
// (internal/buildinfo explains what each way of building records).
// `certfetch --version` is the same command.
func cmdVersion(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("certfetch version", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, "Usage: certfetch version\n\nPrints the module version, the VCS revision (+dirty for uncommitted changes) and the Go version.\n")
	}
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "certfetch version: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	fmt.Fprint(stdout, buildinfo.Read().String())
	return exitOK
}
