// Command package builds certfetch's Debian (.deb) and RPM (.rpm) packages
// with nfpm, as a library: no nfpm binary, no Makefile. It builds
// cmd/certfetch statically (CGO_ENABLED=0) from the checkout it sits in
// and writes both packages into a directory:
//
//	dist/package/build.sh OUTDIR [VERSION]
//	(cd dist/package && go run . --out OUTDIR [--version 0.1.0])
//
// Contents (see build.go): /usr/bin/certfetch; the systemd units of
// dist/systemd in /usr/lib/systemd/system (ExecStart pointing at
// /usr/bin/certfetch); their sysusers.d and tmpfiles.d entries in /usr/lib;
// /etc/certfetch/certfetch.yml as a conffile, made from
// testdata/certfetch.example.yml so that it passes `certfetch check`;
// README, license, changelogs and a man page made from `certfetch --help`;
// the Prometheus alert rules and the Grafana dashboard as examples. The
// maintainer scripts (scripts/) create the user and the output directory
// and never enable or start the service.
//
// It lives in a module of its own (dist/package/go.mod) so that nfpm and
// its dependencies stay out of the root module, which the Traefik plugin
// catalog and every `go get` of certfetch read.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

func main() {
	out := flag.String("out", "", "directory to write the .deb and .rpm to (required)")
	version := flag.String("version", "", "package version such as 0.1.0 (default: from git: the release tag on HEAD, else the last one plus +git<time>.<commit>)")
	arch := flag.String("arch", "amd64", "GOARCH to build for")
	repo := flag.String("repo", "", "certfetch checkout (default: the one containing the working directory)")
	maintainer := flag.String("maintainer", defaultMaintainer, "Maintainer (deb) and Packager (rpm) field")
	flag.Parse()
	if *out == "" || flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "usage: go run . --out DIR [--version VERSION] [--arch GOARCH]")
		os.Exit(2)
	}
	if *repo == "" {
		var err error
		if *repo, err = findRepo(); err != nil {
			fmt.Fprintln(os.Stderr, "certfetch package:", err)
			os.Exit(1)
		}
	}
	res, err := Build(Options{Repo: *repo, Out: *out, Version: *version, Arch: *arch, Maintainer: *maintainer, Log: os.Stderr})
	if err != nil {
		fmt.Fprintln(os.Stderr, "certfetch package:", err)
		os.Exit(1)
	}
	fmt.Println(res.Deb)
	fmt.Println(res.RPM)
}

// rootModule is the first line of the root go.mod.
const rootModule = "module github.com/certfetch/certfetch\n"

// findRepo walks up from the working directory to the root module.
func findRepo() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.HasPrefix(string(data), rootModule) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no certfetch checkout (go.mod of github.com/certfetch/certfetch) above the working directory; pass --repo")
		}
		dir = parent
	}
}
