package yaegi_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/mod/modfile"
	"golang.org/x/mod/semver"
)

// The checks the Traefik Plugin Catalog's analyzer makes before it lists a
// plugin, plus the build guards that keep the root package loadable by Yaegi
// inside Traefik.

// forbiddenRequires are modules the catalog refuses in a plugin's go.mod, on
// any require line, indirect ones too.
var forbiddenRequires = []string{"github.com/traefik/yaegi", "github.com/traefik/traefik", "github.com/traefik/mesh"}

func rootModule(t *testing.T) *modfile.File {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot, "go.mod"))
	require.NoError(t, err)
	f, err := modfile.Parse("go.mod", data, nil)
	require.NoError(t, err)
	return f
}

func TestCatalogManifest(t *testing.T) {
	t.Parallel()
	m := readManifest(t)
	mod := rootModule(t)
	assert.NotEmpty(t, m.DisplayName, "displayName")
	assert.Equal(t, "middleware", m.Type, "type")
	assert.NotEmpty(t, m.Summary, "summary")
	assert.NotEmpty(t, m.TestData, "testData")
	assert.True(t, m.Import == mod.Module.Mod.Path || strings.HasPrefix(m.Import, mod.Module.Mod.Path+"/"),
		"import %q must start with the module path %q", m.Import, mod.Module.Mod.Path)
	require.NotEmpty(t, m.IconPath, "iconPath")
	icon, err := os.ReadFile(filepath.Join(repoRoot, m.IconPath))
	require.NoError(t, err, "iconPath must name a file in the repository")
	assert.Equal(t, "\x89PNG\r\n\x1a\n", string(icon[:8]), "icon must be a PNG")
}

func TestCatalogRequireRule(t *testing.T) {
	t.Parallel()
	for _, r := range rootModule(t).Require {
		for _, forbidden := range forbiddenRequires {
			assert.False(t, strings.HasPrefix(r.Mod.Path, forbidden),
				"go.mod requires %s: the catalog refuses it; move that code to a nested module", r.Mod.Path)
		}
	}
}

// TestCatalogTestData decodes testData into CreateConfig() and calls New, in a
// working directory where none of certfetch's paths exist, within the 10 s
// the analyzer allows. Not parallel: t.Chdir changes the whole process.
func TestCatalogTestData(t *testing.T) {
	testData := readManifest(t).TestData
	start := time.Now()
	p := loadPlugin(t)
	t.Chdir(t.TempDir())
	_, err := p.newHandler(testData, backend)
	require.NoError(t, err, "New must succeed with testData")
	assert.Less(t, time.Since(start), 10*time.Second, "the catalog gives import and New 10 s")
}

// TestRootImportsStdlibOnly: Traefik's Yaegi has the standard library only,
// so the plugin package must import nothing else.
func TestRootImportsStdlibOnly(t *testing.T) {
	t.Parallel()
	cmd := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", ".")
	cmd.Dir = repoRoot
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "go list: %s", out)
	deps := strings.Fields(string(out))
	assert.Equal(t, []string{rootModule(t).Module.Mod.Path}, deps, "the plugin package imports non-stdlib packages")
}

// TestTagsAreSemver: the catalog ignores a repository with a tag that is not
// strict semver.
func TestTagsAreSemver(t *testing.T) {
	t.Parallel()
	cmd := exec.Command("git", "tag", "--list")
	cmd.Dir = repoRoot
	out, err := cmd.Output()
	require.NoError(t, err)
	for _, tag := range strings.Fields(string(out)) {
		assert.True(t, semver.IsValid(tag) && semver.Canonical(tag) == tag, "tag %q is not strict semver (vMAJOR.MINOR.PATCH)", tag)
	}
}
