package buildinfo_test

import (
	"runtime"
	"runtime/debug"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/certfetch/certfetch/internal/buildinfo"
)

// main is the main module as debug.ReadBuildInfo reports it.
func main(version string) debug.Module {
	return debug.Module{Path: "github.com/certfetch/certfetch", Version: version}
}

func TestFromBuildInfo(t *testing.T) {
	t.Parallel()
	linux := []debug.BuildSetting{{Key: "GOOS", Value: "linux"}, {Key: "GOARCH", Value: "arm64"}}
	vcs := func(revision, modified string) []debug.BuildSetting {
		return append([]debug.BuildSetting{
			{Key: "vcs", Value: "git"},
			{Key: "vcs.revision", Value: revision},
			{Key: "vcs.time", Value: "2026-11-29T05:19:00Z"},
			{Key: "vcs.modified", Value: modified},
		}, linux...)
	}
	const rev = "1ba5bbe4c3e2a9d5f0b8e7c6d5a4b3c2d1e0f9a8"
	commit := time.Date(2026, 11, 29, 5, 19, 0, 0, time.UTC)
	tests := []struct {
		desc   string
		bi     *debug.BuildInfo
		ok     bool
		want   buildinfo.Info
		label  string
		output string
	}{
		{
			desc:  "go install module@v0.1.0: the version, no VCS data",
			bi:    &debug.BuildInfo{GoVersion: "go1.26.8", Main: main("v0.1.0"), Settings: linux},
			ok:    true,
			want:  buildinfo.Info{Version: "v0.1.0", GoVersion: "go1.26.8", Platform: "linux/arm64"},
			label: "unknown",
			output: "certfetch v0.1.0\n" +
				"revision: unknown (no VCS data in this binary: go run, go install module@version, -buildvcs=false or a git worktree)\n" +
				"go: go1.26.8 linux/arm64\n",
		},
		{
			desc:  "go build on a clean tagged checkout",
			bi:    &debug.BuildInfo{GoVersion: "go1.26.8", Main: main("v0.1.0"), Settings: vcs(rev, "false")},
			ok:    true,
			want:  buildinfo.Info{Version: "v0.1.0", Revision: rev, Time: commit, GoVersion: "go1.26.8", Platform: "linux/arm64"},
			label: rev,
			output: "certfetch v0.1.0\n" +
				"revision: " + rev + "\n" +
				"commit time: 2026-11-29T05:19:00Z\n" +
				"go: go1.26.8 linux/arm64\n",
		},
		{
			desc: "go build on a checkout with uncommitted changes",
			bi: &debug.BuildInfo{GoVersion: "go1.26.8", Main: main("v0.1.1-0.20261129051900-1ba5bbe4c3e2+dirty"),
				Settings: vcs(rev, "true")},
			ok: true,
			want: buildinfo.Info{Version: "v0.1.1-0.20261129051900-1ba5bbe4c3e2+dirty", Revision: rev, Dirty: true, Time: commit,
				GoVersion: "go1.26.8", Platform: "linux/arm64"},
			label: rev + "+dirty",
			output: "certfetch v0.1.1-0.20261129051900-1ba5bbe4c3e2+dirty\n" +
				"revision: " + rev + "+dirty\n" +
				"modified: yes (built from a working tree with uncommitted changes)\n" +
				"commit time: 2026-11-29T05:19:00Z\n" +
				"go: go1.26.8 linux/arm64\n",
		},
		{
			desc:  "go run: (devel), no VCS data",
			bi:    &debug.BuildInfo{GoVersion: "go1.26.8", Main: main("(devel)"), Settings: linux},
			ok:    true,
			want:  buildinfo.Info{Version: buildinfo.Devel, GoVersion: "go1.26.8", Platform: "linux/arm64"},
			label: "unknown",
			output: "certfetch (devel)\n" +
				"revision: unknown (no VCS data in this binary: go run, go install module@version, -buildvcs=false or a git worktree)\n" +
				"go: go1.26.8 linux/arm64\n",
		},
		{
			desc:  "no build information at all: devel and the running toolchain",
			bi:    nil,
			ok:    false,
			want:  buildinfo.Info{Version: buildinfo.Devel, GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH},
			label: "unknown",
		},
		{
			desc:  "vcs.modified without a revision is not reported as dirty",
			bi:    &debug.BuildInfo{GoVersion: "go1.26.8", Main: main(""), Settings: append([]debug.BuildSetting{{Key: "vcs.modified", Value: "true"}}, linux...)},
			ok:    true,
			want:  buildinfo.Info{Version: buildinfo.Devel, GoVersion: "go1.26.8", Platform: "linux/arm64"},
			label: "unknown",
		},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			t.Parallel()
			got := buildinfo.FromBuildInfo(tt.bi, tt.ok)
			assert.Equal(t, tt.want, got)
			assert.Equal(t, tt.label, got.RevisionLabel())
			if tt.output != "" {
				assert.Equal(t, tt.output, got.String())
			}
		})
	}
}

// TestReadDescribesThisBinary: in a test binary Go records the toolchain
// and no VCS data, which Read must report as such.
func TestReadDescribesThisBinary(t *testing.T) {
	t.Parallel()
	info := buildinfo.Read()
	assert.Equal(t, runtime.Version(), info.GoVersion)
	assert.Equal(t, runtime.GOOS+"/"+runtime.GOARCH, info.Platform)
	assert.NotEmpty(t, info.Version)
}
