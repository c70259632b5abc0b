package main

import (
	"bytes"
	"compress/gzip"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/goreleaser/nfpm/v2"
	_ "github.com/goreleaser/nfpm/v2/deb" // registers the deb packager
	"github.com/goreleaser/nfpm/v2/files"
	_ "github.com/goreleaser/nfpm/v2/rpm" // registers the rpm packager
)

// Install paths. Units, sysusers.d and tmpfiles.d entries go below /usr/lib,
// where the distribution's packages put theirs (Debian since bookworm,
// Fedora/RHEL always); an administrator overrides them with a file of the
// same name below /etc, which the package never touches.
const (
	binPath      = "/usr/bin/certfetch"
	unitDir      = "/usr/lib/systemd/system"
	sysusersPath = "/usr/lib/sysusers.d/certfetch.conf"
	tmpfilesPath = "/usr/lib/tmpfiles.d/certfetch.conf"
	configPath   = "/etc/certfetch/certfetch.yml"
	docDir       = "/usr/share/doc/certfetch"
	licenseDir   = "/usr/share/licenses/certfetch" // RPM's %license location
	manPath      = "/usr/share/man/man1/certfetch.1.gz"
)

// units are the systemd units of dist/systemd the packages install.
var units = []string{"certfetch.service", "certfetch-once.service", "certfetch-once.timer"}

// Options configure Build.
type Options struct {
	// Repo is the root of the certfetch checkout; required.
	Repo string
	// Out is the directory the packages are written to; created if missing.
	Out string
	// Version is the package version without a leading "v" (1.2.3,
	// 1.2.3~rc1, 0.0.0+git20261129051900.1ba5bbe4c3e2); empty: derived
	// from git (see gitVersion).
	Version string
	// Arch is the Go architecture to build for (GOARCH); nfpm maps it to
	// each format's name (amd64 → x86_64 for RPM). Empty: amd64.
	Arch string
	// Maintainer is the deb Maintainer and rpm Packager field.
	Maintainer string
	// Log receives progress lines; nil discards them.
	Log io.Writer
}

// Result names what Build wrote.
type Result struct {
	Deb, RPM string // paths of the packages
	Version  string // package version (before the -1 release suffix)
}

// Build compiles certfetch statically, stages the files the packages carry
// and writes a .deb and an .rpm into opts.Out.
func Build(opts Options) (Result, error) {
	if opts.Repo == "" || opts.Out == "" {
		return Result{}, errors.New("build packages: Repo and Out are required")
	}
	if opts.Arch == "" {
		opts.Arch = "amd64"
	}
	if opts.Log == nil {
		opts.Log = io.Discard
	}
	if opts.Maintainer == "" {
		opts.Maintainer = defaultMaintainer
	}
	version := strings.TrimPrefix(opts.Version, "v")
	if version == "" {
		var err error
		if version, err = gitVersion(opts.Repo); err != nil {
			return Result{}, fmt.Errorf("build packages: %w (or pass a version)", err)
		}
	}
	if !validVersion.MatchString(version) {
		return Result{}, fmt.Errorf("build packages: version %q: want digits first and only [0-9A-Za-z.+~] (no '-': it separates the package release)", version)
	}
	mtime := commitTime(opts.Repo)

	stage, err := os.MkdirTemp("", "certfetch-package-")
	if err != nil {
		return Result{}, err
	}
	defer os.RemoveAll(stage)
	fmt.Fprintf(opts.Log, "building %s (CGO_ENABLED=0, GOARCH=%s)\n", binPath, opts.Arch)
	bin := filepath.Join(stage, "certfetch")
	if err := buildBinary(opts.Repo, opts.Arch, bin); err != nil {
		return Result{}, err
	}
	if err := checkStatic(bin); err != nil {
		return Result{}, err
	}
	if err := writeManPage(opts.Repo, bin, opts.Arch, version, mtime, filepath.Join(stage, "certfetch.1.gz")); err != nil {
		return Result{}, err
	}
	if err := stageFiles(opts.Repo, stage, version, mtime, opts.Maintainer); err != nil {
		return Result{}, err
	}
	if err := os.MkdirAll(opts.Out, 0o755); err != nil {
		return Result{}, err
	}

	res := Result{Version: version}
	for _, format := range []string{"deb", "rpm"} {
		info := packageInfo(opts, stage, version, mtime, format)
		path, err := writePackage(info, format, opts.Out)
		if err != nil {
			return Result{}, err
		}
		fmt.Fprintf(opts.Log, "wrote %s\n", path)
		if format == "deb" {
			res.Deb = path
		} else {
			res.RPM = path
		}
	}
	return res, nil
}

// defaultMaintainer is used when Options.Maintainer is empty.
const defaultMaintainer = "certfetch maintainers <certfetch@users.noreply.github.com>"

// validVersion accepts what both dpkg and rpm order sensibly: "~" sorts
// before the release (1.0.0~rc1 < 1.0.0), "+" after (snapshots).
var validVersion = regexp.MustCompile(`^[0-9][0-9A-Za-z.+~]*$`)

// semverTag matches the release tags of this module (strict semver).
var semverTag = regexp.MustCompile(`^v(\d+\.\d+\.\d+)(?:-([0-9A-Za-z.]+))?$`)

// gitVersion derives the package version from the checkout: a release tag
// on HEAD gives its version (v0.1.0 → 0.1.0, v0.2.0-rc.1 → 0.2.0~rc.1);
// otherwise the last release tag (0.0.0 without one) plus
// "+git<commit time>.<12 hex digits>", which sorts after that release and
// before the next, and between snapshots by commit time.
func gitVersion(repo string) (string, error) {
	if tag, err := git(repo, "describe", "--tags", "--exact-match", "--match", "v[0-9]*", "HEAD"); err == nil {
		if m := semverTag.FindStringSubmatch(tag); m != nil {
			return joinPrerelease(m[1], m[2]), nil
		}
	}
	base := "0.0.0"
	if tag, err := git(repo, "describe", "--tags", "--abbrev=0", "--match", "v[0-9]*", "HEAD"); err == nil {
		if m := semverTag.FindStringSubmatch(tag); m != nil {
			base = joinPrerelease(m[1], m[2])
		}
	}
	commit, err := git(repo, "log", "-1", "--format=%H %ct")
	if err != nil {
		return "", fmt.Errorf("derive the version from git: %w", err)
	}
	hash, epoch, _ := strings.Cut(commit, " ")
	secs, err := strconv.ParseInt(epoch, 10, 64)
	if err != nil || len(hash) < 12 {
		return "", fmt.Errorf("derive the version from git: unexpected %q", commit)
	}
	return fmt.Sprintf("%s+git%s.%s", base, time.Unix(secs, 0).UTC().Format("20060102150405"), hash[:12]), nil
}

func joinPrerelease(version, pre string) string {
	if pre == "" {
		return version
	}
	return version + "~" + pre
}

// commitTime is HEAD's commit time, the modification time of every file in
// the packages (so two builds of one commit are identical); the current
// time outside git.
func commitTime(repo string) time.Time {
	out, err := git(repo, "log", "-1", "--format=%ct")
	if err == nil {
		if secs, err := strconv.ParseInt(out, 10, 64); err == nil {
			return time.Unix(secs, 0).UTC()
		}
	}
	return time.Now().UTC().Truncate(time.Second)
}

func git(repo string, args ...string) (string, error) {
	cmd := exec.Command("git", append([]string{"-C", repo}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("git %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(string(out)), nil
}

// buildBinary builds cmd/certfetch without cgo, so the binary is static:
// it depends on no C library and runs on any Linux of that architecture
// (and FROM scratch). Not -buildmode=pie: Go's linker gives a cgo-free PIE
// an ELF interpreter (ld.so), which a scratch image does not have.
// -trimpath drops the build machine's paths; -s -w drop the symbol table
// and DWARF (lintian warns about unstripped binaries; the module and VCS
// information `certfetch version` reads stays).
func buildBinary(repo, arch, out string) error {
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", out, "./cmd/certfetch")
	cmd.Dir = repo
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./cmd/certfetch: %w\n%s", err, out)
	}
	return nil
}

// checkStatic fails unless bin is a static ELF executable: one with a
// program interpreter (ld.so) would need a C library at run time.
func checkStatic(bin string) error {
	f, err := elf.Open(bin)
	if err != nil {
		return fmt.Errorf("%s: %w", bin, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("%s is dynamically linked (has a PT_INTERP segment); build with CGO_ENABLED=0", bin)
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		return fmt.Errorf("%s needs shared libraries %v", bin, libs)
	}
	return nil
}

// stageFiles writes the files that are not copied verbatim from the
// checkout into stage: the units with the package's binary path, the
// adapted configuration, the Debian copyright file and changelogs.
func stageFiles(repo, stage, version string, mtime time.Time, maintainer string) error {
	for _, unit := range units {
		data, err := os.ReadFile(filepath.Join(repo, "dist", "systemd", unit))
		if err != nil {
			return err
		}
		packaged := string(data)
		if strings.HasSuffix(unit, ".service") {
			packaged, err = packagedUnit(packaged)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", unit, err)
		}
		if err := os.WriteFile(filepath.Join(stage, unit), []byte(packaged), 0o644); err != nil {
			return err
		}
	}

	example, err := os.ReadFile(filepath.Join(repo, "testdata", "certfetch.example.yml"))
	if err != nil {
		return err
	}
	cfg, err := packagedConfig(string(example))
	if err != nil {
		return fmt.Errorf("testdata/certfetch.example.yml: %w", err)
	}
	if err := os.WriteFile(filepath.Join(stage, "certfetch.yml"), []byte(cfg), 0o644); err != nil {
		return err
	}

	license, err := licenseText(repo)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(stage, "LICENSE"), []byte(license), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(stage, "copyright"), []byte(debianCopyright(license)), 0o644); err != nil {
		return err
	}

	if changelog, err := os.ReadFile(filepath.Join(repo, "CHANGELOG.md")); err == nil {
		if err := writeGzip(filepath.Join(stage, "changelog.gz"), changelog, mtime); err != nil {
			return err
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return os.WriteFile(filepath.Join(stage, "chglog.yml"), []byte(packageChangelog(version, mtime, maintainer)), 0o644)
}

// packagedUnit points a service unit of dist/systemd (written for a manual
// install to /usr/local/bin) at the packaged binary.
func packagedUnit(unit string) (string, error) {
	const manual = "/usr/local/bin/certfetch"
	if !strings.Contains(unit, "ExecStart="+manual+" ") {
		return "", fmt.Errorf("no ExecStart=%s to point at %s", manual, binPath)
	}
	return strings.ReplaceAll(unit, manual, binPath), nil
}

// configEdits turn testdata/certfetch.example.yml into the configuration
// the package installs. The example reads an EAB key and a CA root from
// files beside it (certfetch/…), which do not exist on a fresh install, so
// `certfetch check` would fail; the package comments those settings out,
// with absolute paths for when the operator creates the files. Each line
// must occur exactly once in the example: a change there that this list
// does not follow fails the build instead of shipping a broken file.
var configEdits = []struct{ old, new string }{
	{
		"    eab:\n",
		"    # The package cannot ship your CA's root or your account's EAB key:\n" +
			"    # create the files, then uncomment eab, caCertificates and\n" +
			"    # caSystemCertPool below.\n" +
			"    # eab:\n",
	},
	{"      kid: certfetch-prod\n", "    #   kid: certfetch-prod\n"},
	{"      hmacFile: certfetch/internal-eab.key\n", "    #   hmacFile: /etc/certfetch/internal-eab.key\n"},
	{
		"    caCertificates:           # trust the private root for the ACME API ...\n",
		"    # caCertificates:           # trust the private root for the ACME API ...\n",
	},
	{
		"      - certfetch/internal-root.pem   # e.g. /etc/certfetch/internal-root.pem\n",
		"    #   - /etc/certfetch/internal-root.pem\n",
	},
	{
		"    caSystemCertPool: false   # ... and nothing else (the default when caCertificates is set)\n",
		"    # caSystemCertPool: false   # ... and nothing else (the default when caCertificates is set)\n",
	},
}

// packagedConfigHeader is prepended to the packaged configuration.
const packagedConfigHeader = `# Installed by the certfetch package from testdata/certfetch.example.yml
# (the settings that read files a fresh install does not have are commented
# out). certfetch does not run until you enable it: edit this file, check
# it with ` + "`certfetch check`" + `, then ` + "`systemctl enable --now certfetch.service`" + `.
#
`

func packagedConfig(example string) (string, error) {
	for _, e := range configEdits {
		if n := strings.Count(example, e.old); n != 1 {
			return "", fmt.Errorf("the package edits the line %q, found %d times (want once)", strings.TrimSpace(e.old), n)
		}
		example = strings.Replace(example, e.old, e.new, 1)
	}
	return packagedConfigHeader + example, nil
}

// mitLicense is the MIT license text (the project's license, as for
// Traefik and lego) after its copyright line. The repository's LICENSE is
// used when present; licenseText checks that it is this text.
const mitLicense = `Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
`

// defaultCopyright is the copyright line without a LICENSE file.
const defaultCopyright = "Copyright (c) 2026 The certfetch authors"

// licenseText is the repository's LICENSE, or the MIT license with
// defaultCopyright while the checkout has none. A LICENSE that is not the
// MIT license is an error: the copyright file below declares MIT.
func licenseText(repo string) (string, error) {
	data, err := os.ReadFile(filepath.Join(repo, "LICENSE"))
	if errors.Is(err, os.ErrNotExist) {
		return "MIT License\n\n" + defaultCopyright + "\n\n" + mitLicense, nil
	}
	if err != nil {
		return "", err
	}
	norm := func(s string) string { return strings.Join(strings.Fields(s), " ") }
	if !strings.HasPrefix(string(data), "MIT License") || !strings.Contains(norm(string(data)), norm(mitLicense)) {
		return "", errors.New("LICENSE is not the MIT license text; update the package's copyright file (dist/package/build.go)")
	}
	return string(data), nil
}

// debianCopyright renders the license as a machine-readable Debian
// copyright file (DEP-5), which Debian policy requires in every package.
func debianCopyright(license string) string {
	holder := strings.TrimPrefix(defaultCopyright, "Copyright (c) ")
	for _, line := range strings.Split(license, "\n") {
		if rest, ok := strings.CutPrefix(line, "Copyright (c) "); ok {
			holder = rest
			break
		}
	}
	var b strings.Builder
	b.WriteString("Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n")
	b.WriteString("Upstream-Name: certfetch\n")
	b.WriteString("Source: https://github.com/certfetch/certfetch\n\n")
	b.WriteString("Files: *\n")
	b.WriteString("Copyright: " + holder + "\n")
	b.WriteString("License: Expat\n")
	for _, line := range strings.Split(strings.TrimRight(mitLicense, "\n"), "\n") {
		if line == "" {
			line = "."
		}
		b.WriteString(" " + line + "\n")
	}
	return b.String()
}

// packageChangelog is the one-entry changelog (goreleaser/chglog format)
// nfpm turns into changelog.Debian.gz and the RPM %changelog: the project
// keeps its history in CHANGELOG.md (installed as the upstream changelog).
func packageChangelog(version string, mtime time.Time, maintainer string) string {
	return fmt.Sprintf(`- semver: %s
  date: %s
  packager: %s
  deb:
    urgency: medium
    distributions: [stable]
  changes:
    - note: Package of certfetch; the changes are in CHANGELOG.md (changelog.gz).
`, strconv.Quote(version), mtime.Format(time.RFC3339), strconv.Quote(maintainer))
}

func writeGzip(path string, data []byte, mtime time.Time) error {
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		return err
	}
	zw.ModTime = mtime // reproducible: no build time in the header
	if _, err := zw.Write(data); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	return os.WriteFile(path, buf.Bytes(), 0o644)
}

// packageInfo describes one package for nfpm.
func packageInfo(opts Options, stage, version string, mtime time.Time, format string) *nfpm.Info {
	file := func(src, dst string, mode os.FileMode) *files.Content {
		return &files.Content{Source: src, Destination: dst, FileInfo: &files.ContentFileInfo{Mode: mode}}
	}
	repo := opts.Repo
	contents := files.Contents{
		file(filepath.Join(stage, "certfetch"), binPath, 0o755),
		file(filepath.Join(repo, "dist", "systemd", "certfetch.sysusers"), sysusersPath, 0o644),
		file(filepath.Join(repo, "dist", "systemd", "certfetch.tmpfiles"), tmpfilesPath, 0o644),
		{Destination: "/etc/certfetch", Type: files.TypeDir, FileInfo: &files.ContentFileInfo{Mode: 0o755}},
		{
			// A conffile: dpkg and rpm keep the operator's edits on
			// upgrade (dpkg asks, rpm writes the new one as .rpmnew).
			Source: filepath.Join(stage, "certfetch.yml"), Destination: configPath,
			Type: files.TypeConfigNoReplace, FileInfo: &files.ContentFileInfo{Mode: 0o644},
		},
		file(filepath.Join(repo, "dist", "prometheus", "certfetch.rules.yml"), docDir+"/examples/prometheus/certfetch.rules.yml", 0o644),
		file(filepath.Join(repo, "dist", "grafana", "certfetch.json"), docDir+"/examples/grafana/certfetch.json", 0o644),
	}
	for _, unit := range units {
		contents = append(contents, file(filepath.Join(stage, unit), unitDir+"/"+unit, 0o644))
	}
	contents = append(contents, file(filepath.Join(stage, "certfetch.1.gz"), manPath, 0o644))
	overrides := file(filepath.Join(repo, "dist", "package", "lintian-overrides"), "/usr/share/lintian/overrides/certfetch", 0o644)
	overrides.Packager = "deb"
	readme := file(filepath.Join(repo, "README.md"), docDir+"/README.md", 0o644)
	changelog := filepath.Join(stage, "changelog.gz")
	_, err := os.Stat(changelog)
	hasChangelog := err == nil

	info := &nfpm.Info{
		Name:          "certfetch",
		Arch:          opts.Arch,
		Platform:      "linux",
		Version:       version,
		VersionSchema: "none", // taken as given: validVersion already fits both formats
		Release:       "1",
		Section:       "net",
		Priority:      "optional",
		Maintainer:    opts.Maintainer,
		Vendor:        "certfetch",
		Homepage:      "https://github.com/certfetch/certfetch",
		License:       "MIT",
		Description: "ACME certificates for Traefik from slow and private CAs\n" +
			"certfetch runs ACME orders with a configurable deadline, resumes orders\n" +
			"a slow CA is still working on instead of abandoning them, renews\n" +
			"certificates on time and publishes them for Traefik's file provider\n" +
			"(or its Redis and etcd providers). Its Traefik plugin answers the\n" +
			"HTTP-01 challenges.",
		Changelog: filepath.Join(stage, "chglog.yml"),
		MTime:     mtime,
		Overridables: nfpm.Overridables{
			Umask: 0o022,
		},
	}
	scripts := filepath.Join(repo, "dist", "package", "scripts")
	switch format {
	case "deb":
		readme.Type = files.TypeFile
		contents = append(contents, readme, overrides,
			file(filepath.Join(stage, "copyright"), docDir+"/copyright", 0o644))
		if hasChangelog {
			contents = append(contents, file(changelog, docDir+"/changelog.gz", 0o644))
		}
		info.Scripts = nfpm.Scripts{
			PostInstall: filepath.Join(scripts, "deb-postinst"),
			PreRemove:   filepath.Join(scripts, "deb-prerm"),
			PostRemove:  filepath.Join(scripts, "deb-postrm"),
		}
	case "rpm":
		readme.Type = files.TypeRPMDoc
		contents = append(contents, readme, &files.Content{
			Source: filepath.Join(stage, "LICENSE"), Destination: licenseDir + "/LICENSE",
			Type: files.TypeRPMLicense, FileInfo: &files.ContentFileInfo{Mode: 0o644},
		})
		if hasChangelog {
			contents = append(contents, &files.Content{
				Source: filepath.Join(repo, "CHANGELOG.md"), Destination: docDir + "/CHANGELOG.md",
				Type: files.TypeRPMDoc, FileInfo: &files.ContentFileInfo{Mode: 0o644},
			})
		}
		info.Scripts = nfpm.Scripts{
			PostInstall: filepath.Join(scripts, "rpm-post"),
			PreRemove:   filepath.Join(scripts, "rpm-preun"),
			PostRemove:  filepath.Join(scripts, "rpm-postun"),
		}
		// Directories only this package uses: RPM owns no directory it is
		// not told to (dpkg records every parent directory itself).
		for _, dir := range []string{docDir, docDir + "/examples", docDir + "/examples/prometheus", docDir + "/examples/grafana", licenseDir} {
			contents = append(contents, &files.Content{Destination: dir, Type: files.TypeDir, FileInfo: &files.ContentFileInfo{Mode: 0o755}})
		}
		// RPM has a separate Summary: the description starts after it.
		_, info.Description, _ = strings.Cut(info.Description, "\n")
		info.RPM.Summary = "ACME certificates for Traefik from slow and private CAs"
		info.RPM.Group = "System Environment/Daemons"
		info.RPM.Packager = opts.Maintainer
		info.RPM.BuildHost = "certfetch" // not the build machine's name: reproducible
	}
	info.Contents = contents
	return info
}

// writePackage runs nfpm's packager for format into dir.
func writePackage(info *nfpm.Info, format, dir string) (string, error) {
	packager, err := nfpm.Get(format)
	if err != nil {
		return "", err
	}
	info = nfpm.WithDefaults(info)
	if err := nfpm.Validate(info); err != nil {
		return "", fmt.Errorf("%s: %w", format, err)
	}
	path := filepath.Join(dir, packager.ConventionalFileName(info))
	info.Target = path
	f, err := os.Create(path)
	if err != nil {
		return "", err
	}
	if err := packager.Package(info, f); err != nil {
		f.Close()
		os.Remove(path)
		return "", fmt.Errorf("%s: %w", format, err)
	}
	return path, f.Close()
}
