// Package buildinfo describes the running certfetch binary: its module
// version, the VCS revision it was built from and the Go toolchain, as the Go
// toolchain recorded them (runtime/debug.ReadBuildInfo).
//
// Nothing is injected with -ldflags, so every way of building reports what
// the toolchain knew, and nothing can be forgotten in a release script:
//
//   - `go install github.com/certfetch/certfetch/cmd/certfetch@v0.1.0`: the
//     version is v0.1.0; the module zip carries no VCS data, so the revision
//     is unknown (the tag names it).
//   - `go build` in a git checkout (Go 1.24 and later): the version is
//     derived from the checkout (v0.1.0 on a tag, a pseudo-version such as
//     v0.1.1-0.20261129051900-1ba5bbe4c3e2 otherwise, with "+dirty" when
//     the working tree has uncommitted changes), the revision and the dirty
//     flag come from git.
//   - `go run`, `go test`, -buildvcs=false, or `go build` in a linked git
//     worktree (`git worktree add`; Go looks for a .git directory and a
//     worktree has a .git file): the version is "(devel)" and the revision
//     is unknown; the toolchain stamps no VCS data there.
package buildinfo

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"
	"time"
)

// Devel is the module version Go records when it does not know one (go run,
// go test, -buildvcs=false, a build outside version control).
const Devel = "(devel)"

// Info describes one binary.
type Info struct {
	// Version is the main module's version: a semver tag, a pseudo-version,
	// either possibly with "+dirty", or Devel.
	Version string
	// Revision is the full VCS revision (a git commit hash); empty when the
	// binary carries no VCS data.
	Revision string
	// Dirty reports that the working tree had uncommitted changes at build
	// time. Meaningful only when Revision is set.
	Dirty bool
	// Time is the commit time of Revision; zero when unknown.
	Time time.Time
	// GoVersion is the Go toolchain that built the binary, e.g. "go1.26.8".
	GoVersion string
	// Platform is GOOS/GOARCH of the binary, e.g. "linux/amd64".
	Platform string
}

// Read describes the running binary.
func Read() Info {
	return FromBuildInfo(debug.ReadBuildInfo())
}

// FromBuildInfo turns what debug.ReadBuildInfo returned into an Info; ok is
// its second result. It never fails: a binary without build information
// (ok false) is reported as Devel with the running Go version.
func FromBuildInfo(bi *debug.BuildInfo, ok bool) Info {
	info := Info{Version: Devel, GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if !ok || bi == nil {
		return info
	}
	if v := bi.Main.Version; v != "" {
		info.Version = v
	}
	if bi.GoVersion != "" {
		info.GoVersion = bi.GoVersion
	}
	var goos, goarch string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			info.Revision = s.Value
		case "vcs.modified":
			info.Dirty = s.Value == "true"
		case "vcs.time":
			if t, err := time.Parse(time.RFC3339Nano, s.Value); err == nil {
				info.Time = t
			}
		case "GOOS":
			goos = s.Value
		case "GOARCH":
			goarch = s.Value
		}
	}
	if goos != "" && goarch != "" {
		info.Platform = goos + "/" + goarch
	}
	if info.Revision == "" {
		info.Dirty = false
	}
	return info
}

// RevisionLabel is the revision as one value, for metric labels and the
// version command: the commit hash, with "+dirty" (Go's suffix for the same
// state in versions) when the working tree had uncommitted changes, or
// "unknown" when the binary carries no VCS data.
func (i Info) RevisionLabel() string {
	switch {
	case i.Revision == "":
		return "unknown"
	case i.Dirty:
		return i.Revision + "+dirty"
	default:
		return i.Revision
	}
}

// String is the text `certfetch version` prints: the version on the first
// line, then revision, commit time and Go version, one per line. A binary
// without VCS data says why the revision is unknown.
func (i Info) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "certfetch %s\n", i.Version)
	if i.Revision == "" {
		b.WriteString("revision: unknown (no VCS data in this binary: go run, go install module@version, -buildvcs=false or a git worktree)\n")
	} else {
		fmt.Fprintf(&b, "revision: %s\n", i.RevisionLabel())
		if i.Dirty {
			b.WriteString("modified: yes (built from a working tree with uncommitted changes)\n")
		}
		if !i.Time.IsZero() {
			fmt.Fprintf(&b, "commit time: %s\n", i.Time.UTC().Format(time.RFC3339))
		}
	}
	fmt.Fprintf(&b, "go: %s %s\n", i.GoVersion, i.Platform)
	return b.String()
}
