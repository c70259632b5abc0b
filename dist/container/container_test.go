// Package container_test checks the container files that need no container
// engine: the compose example wires Traefik and certfetch the way the
// README and the image expect, its certfetch configuration is valid, and
// the Containerfile, build.sh and the passwd/group files agree on the user.
// e2e/container_test.go builds and runs the image itself with podman.
package container_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/certfetch/certfetch/fetcher/config"
)

// outputDir is where both services see the shared output volume.
const outputDir = "/etc/traefik/certfetch"

type compose struct {
	Services map[string]struct {
		Image   string   `yaml:"image"`
		User    string   `yaml:"user"`
		Command []string `yaml:"command"`
		Volumes []string `yaml:"volumes"`
	} `yaml:"services"`
	Volumes map[string]any `yaml:"volumes"`
}

// mount is one short-syntax volume entry: source:target[:options].
type mount struct{ source, target, options string }

func mounts(t *testing.T, entries []string) map[string]mount {
	t.Helper()
	m := map[string]mount{}
	for _, e := range entries {
		parts := strings.Split(e, ":")
		require.True(t, len(parts) == 2 || len(parts) == 3, "volume %q", e)
		mt := mount{source: parts[0], target: parts[1]}
		if len(parts) == 3 {
			mt.options = parts[2]
		}
		require.NotContains(t, m, mt.target, "two mounts on %s", mt.target)
		m[mt.target] = mt
	}
	return m
}

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	require.NoError(t, yaml.Unmarshal(data, v), path)
}

func TestCompose(t *testing.T) {
	t.Parallel()
	var c compose
	readYAML(t, "compose.yml", &c)
	require.Contains(t, c.Services, "traefik")
	require.Contains(t, c.Services, "certfetch")
	traefik, certfetch := c.Services["traefik"], c.Services["certfetch"]
	tm, cm := mounts(t, traefik.Volumes), mounts(t, certfetch.Volumes)

	// The output directory: one named volume, the same path in both.
	require.Contains(t, tm, outputDir)
	require.Contains(t, cm, outputDir)
	assert.Equal(t, tm[outputDir].source, cm[outputDir].source, "both services mount the same volume")
	assert.Contains(t, c.Volumes, cm[outputDir].source, "a named volume")
	assert.Empty(t, cm[outputDir].options, "certfetch writes the output")

	// certfetch: the image's user and command, its configuration read-only,
	// the state in a volume of its own.
	assert.Equal(t, "localhost/certfetch:latest", certfetch.Image, "the tag dist/container/build.sh builds")
	assert.Empty(t, certfetch.User, "runs as the image's non-root user")
	assert.Empty(t, certfetch.Command, "runs the image's command (run)")
	assert.Equal(t, "ro", cm["/etc/certfetch/certfetch.yml"].options)
	require.Contains(t, cm, "/var/lib/certfetch")
	assert.Contains(t, c.Volumes, cm["/var/lib/certfetch"].source)

	// Traefik: the README's configuration from testdata/traefik/, the same
	// version the end-to-end suite runs.
	assert.Equal(t, "docker.io/library/traefik:v3.6.12", traefik.Image)
	assert.Equal(t, []string{"--configFile=/etc/traefik/traefik.yml"}, traefik.Command)
	assert.Equal(t, mount{"../../testdata/traefik/traefik.yml", "/etc/traefik/traefik.yml", "ro"}, tm["/etc/traefik/traefik.yml"])
	challenge := outputDir + "/acme-challenge.yml"
	assert.Equal(t, mount{"../../testdata/traefik/certfetch/acme-challenge.yml", challenge, "ro"}, tm[challenge])

	// Every bind-mounted file exists.
	for _, m := range []map[string]mount{tm, cm} {
		for _, mt := range m {
			if strings.HasPrefix(mt.source, ".") {
				_, err := os.Stat(mt.source)
				assert.NoError(t, err, "bind mount source")
			}
		}
	}

	// Traefik watches what certfetch writes.
	var static struct {
		Providers struct {
			File struct {
				Directory string `yaml:"directory"`
				Watch     bool   `yaml:"watch"`
			} `yaml:"file"`
		} `yaml:"providers"`
		Experimental struct {
			Plugins map[string]struct {
				ModuleName string `yaml:"moduleName"`
			} `yaml:"plugins"`
		} `yaml:"experimental"`
	}
	readYAML(t, tm["/etc/traefik/traefik.yml"].source, &static)
	assert.Equal(t, outputDir, static.Providers.File.Directory)
	assert.True(t, static.Providers.File.Watch)
	assert.Equal(t, "github.com/certfetch/certfetch", static.Experimental.Plugins["certfetch"].ModuleName)

	cfg, err := config.Load(cm["/etc/certfetch/certfetch.yml"].source)
	require.NoError(t, err, "the compose example's certfetch.yml is valid")
	require.NotNil(t, cfg.Output.File)
	assert.Equal(t, outputDir, cfg.Output.File.Directory)
	assert.Equal(t, "/var/lib/certfetch", cfg.Storage.Directory)
}

// TestImageUser: the Containerfile runs as the UID that passwd and group
// name certfetch, owns the two volumes by it, and build.sh prepares the
// context the Containerfile copies.
func TestImageUser(t *testing.T) {
	t.Parallel()
	containerfile, err := os.ReadFile("Containerfile")
	require.NoError(t, err)
	cf := string(containerfile)
	passwd, err := os.ReadFile("passwd")
	require.NoError(t, err)
	group, err := os.ReadFile("group")
	require.NoError(t, err)

	user := regexp.MustCompile(`(?m)^USER (\d+):(\d+)$`).FindStringSubmatch(cf)
	require.NotNil(t, user, "USER uid:gid, numeric")
	assert.NotEqual(t, "0", user[1], "not root")
	assert.Contains(t, string(passwd), "\ncertfetch:x:"+user[1]+":"+user[2]+":", "passwd names the image's user")
	assert.Contains(t, string(group), "\ncertfetch:x:"+user[2]+":", "group names the image's group")
	for _, line := range strings.Split(strings.TrimSpace(string(passwd)), "\n") {
		assert.True(t, strings.HasSuffix(line, ":/sbin/nologin"), "no login shell (there is no shell): %s", line)
	}
	assert.Equal(t, 2, strings.Count(cf, "COPY --chown="+user[1]+":"+user[2]+" "), "state and output owned by the user")
	assert.Contains(t, cf, "\nFROM scratch\n")
	assert.Contains(t, cf, `VOLUME ["/var/lib/certfetch", "`+outputDir+`"]`)
	assert.Contains(t, cf, `ENTRYPOINT ["/usr/bin/certfetch"]`)
	assert.Contains(t, cf, `CMD ["run"]`)

	script, err := os.ReadFile("build.sh")
	require.NoError(t, err)
	for _, want := range []string{"CGO_ENABLED=0", `"$root/usr/bin/certfetch"`, `chmod 0700 "$ctx/state/certfetch"`, `chmod 1777 "$root/tmp"`, "-f \"$repo/dist/container/Containerfile\""} {
		assert.Contains(t, string(script), want)
	}
	info, err := os.Stat("build.sh")
	require.NoError(t, err)
	assert.NotZero(t, info.Mode()&0o111, "build.sh is executable")
	_, err = os.Stat(filepath.Join("..", "..", "cmd", "certfetch"))
	require.NoError(t, err)
}
