package main

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/certfetch/certfetch/internal/buildinfo"
)

func TestVersionCommand(t *testing.T) {
	t.Parallel()
	code, stdout, stderr := certfetch("version")
	require.Equal(t, exitOK, code, stderr)
	assert.Equal(t, buildinfo.Read().String(), stdout)
	assert.Contains(t, stdout, "\ngo: "+runtime.Version()+" "+runtime.GOOS+"/"+runtime.GOARCH+"\n")

	code, dashed, stderr := certfetch("--version")
	require.Equal(t, exitOK, code, stderr)
	assert.Equal(t, stdout, dashed, "--version prints what version prints")

	code, _, stderr = certfetch("version", "extra")
	assert.Equal(t, exitUsage, code)
	assert.Contains(t, stderr, `unexpected argument "extra"`)
}

// TestVersionOfABuiltBinary builds certfetch the way a user does from a
// checkout (go build, VCS stamping on) and checks that `certfetch version`
// and `--version` report what the toolchain recorded (`go version -m`):
// module version, revision, dirty flag, Go version. In an ordinary checkout
// it also checks the revision and the dirty flag against git itself. In a
// linked git worktree Go stamps no VCS data (it looks for a .git directory);
// the binary must then say the revision is unknown.
func TestVersionOfABuiltBinary(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	bin := filepath.Join(t.TempDir(), "certfetch")
	build := exec.CommandContext(ctx, "go", "build", "-buildvcs=true", "-o", bin, ".")
	out, err := build.CombinedOutput()
	require.NoError(t, err, "go build: %s", out)

	recorded := goVersionM(ctx, t, bin)
	want := buildinfo.Info{
		Version:   recorded["mod"],
		Revision:  recorded["vcs.revision"],
		Dirty:     recorded["vcs.modified"] == "true",
		GoVersion: recorded["go"],
		Platform:  recorded["GOOS"] + "/" + recorded["GOARCH"],
	}
	if ts := recorded["vcs.time"]; ts != "" {
		want.Time, err = time.Parse(time.RFC3339Nano, ts)
		require.NoError(t, err)
	}
	for _, arg := range []string{"version", "--version"} {
		got, err := exec.CommandContext(ctx, bin, arg).Output()
		require.NoError(t, err, "certfetch %s", arg)
		assert.Equal(t, want.String(), string(got), "certfetch %s", arg)
	}

	root := gitOutput(ctx, t, "rev-parse", "--show-toplevel")
	if info, err := os.Stat(filepath.Join(root, ".git")); err == nil && info.IsDir() {
		assert.Equal(t, gitOutput(ctx, t, "rev-parse", "HEAD"), want.Revision, "the revision is the checkout's HEAD")
		assert.Equal(t, gitOutput(ctx, t, "status", "--porcelain") != "", want.Dirty, "dirty means git status shows changes")
		assert.NotEqual(t, buildinfo.Devel, want.Version, "Go 1.24+ derives a version from the checkout")
	} else {
		assert.Empty(t, want.Revision, "Go stamps no VCS data in a linked worktree")
		assert.Equal(t, buildinfo.Devel, want.Version)
	}
}

// goVersionM returns what `go version -m` reads from bin: "go" (toolchain),
// "mod" (main module version) and every build setting by key.
func goVersionM(ctx context.Context, t *testing.T, bin string) map[string]string {
	t.Helper()
	out, err := exec.CommandContext(ctx, "go", "version", "-m", bin).Output()
	require.NoError(t, err)
	m := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	first := true
	for sc.Scan() {
		fields := strings.Split(strings.TrimSpace(sc.Text()), "\t")
		switch {
		case first: // "<bin>: go1.26.8"
			_, goVersion, ok := strings.Cut(sc.Text(), ": ")
			require.True(t, ok, "first line %q", sc.Text())
			m["go"] = goVersion
			first = false
		case fields[0] == "mod" && len(fields) >= 3:
			m["mod"] = fields[2]
		case fields[0] == "build" && len(fields) == 2:
			k, v, _ := strings.Cut(fields[1], "=")
			m[k] = v
		}
	}
	require.NotEmpty(t, m["mod"], "go version -m: %s", out)
	return m
}

// gitOutput runs git in the package directory and returns its trimmed output.
func gitOutput(ctx context.Context, t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.CommandContext(ctx, "git", args...).Output()
	require.NoError(t, err, "git %v", args)
	return strings.TrimSpace(string(out))
}
