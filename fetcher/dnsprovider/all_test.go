//go:build !certfetch_dns_rfc2136

package dnsprovider_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/certfetch/certfetch/fetcher/dnsprovider"
)

// TestNamesAreLegos compares Names with the case labels of lego's factory
// (providers/dns/zz_gen_dns_providers.go in the module the build uses): Known must accept
// exactly what the factory does, and a lego upgrade that adds a provider must update
// all.go.
func TestNamesAreLegos(t *testing.T) {
	t.Parallel()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/go-acme/lego/v4").Output()
	require.NoError(t, err)
	src := filepath.Join(strings.TrimSpace(string(out)), "providers", "dns", "zz_gen_dns_providers.go")
	file, err := parser.ParseFile(token.NewFileSet(), src, nil, 0)
	require.NoError(t, err)
	var lego []string
	ast.Inspect(file, func(n ast.Node) bool {
		if c, ok := n.(*ast.CaseClause); ok {
			for _, e := range c.List {
				s, err := strconv.Unquote(e.(*ast.BasicLit).Value)
				require.NoError(t, err)
				lego = append(lego, s)
			}
		}
		return true
	})
	slices.Sort(lego)
	require.Greater(t, len(lego), 150, "parsed %s", src)
	assert.Equal(t, lego, dnsprovider.Names())
}
