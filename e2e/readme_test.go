//go:build e2e

package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestREADMEQuotesTheTestedConfiguration: the Traefik configuration users
// copy from README.md is the one this suite runs, word for word.
func TestREADMEQuotesTheTestedConfiguration(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile(filepath.Join("..", "README.md"))
	require.NoError(t, err)
	for _, file := range []string{"traefik.yml", filepath.Join("certfetch", "acme-challenge.yml")} {
		data, err := os.ReadFile(filepath.Join("..", "testdata", "traefik", file))
		require.NoError(t, err)
		assert.True(t, strings.Contains(string(readme), "```yaml\n"+string(data)+"```\n"),
			"README.md must quote testdata/traefik/%s verbatim in a yaml block", file)
	}
}
