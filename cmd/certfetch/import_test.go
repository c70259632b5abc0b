package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/certfetch/certfetch/fetcher"
	"github.com/certfetch/certfetch/fetcher/acmejson/acmejsontest"
	"github.com/certfetch/certfetch/fetcher/store"
)

// importFixture is a configuration (resolver le at a CA nothing dials) and an acme.json
// with resolver le's account, two certificates and an expired one.
type importFixture struct {
	dir, config, acmeJSON string
	state, output         string
}

func newImportFixture(t *testing.T, resolver string) importFixture {
	t.Helper()
	dir := t.TempDir()
	f := importFixture{dir: dir, config: filepath.Join(dir, "certfetch.yml"), acmeJSON: filepath.Join(dir, "acme.json"),
		state: filepath.Join(dir, "state"), output: filepath.Join(dir, "traefik")}
	require.NoError(t, os.WriteFile(f.config, []byte(`storage: `+f.state+`
resolvers:
  le:
    caServer: https://ca.example.test:14000/dir
    httpChallenge: {stateless: true}
output:
  file: {directory: `+f.output+`}
`), 0o600))
	now := time.Now()
	entry := func(name string, notBefore, notAfter time.Time) acmejsontest.Entry {
		key := acmejsontest.Key(t, "P256", name)
		return acmejsontest.Entry{Main: name, Key: key, CertPEM: acmejsontest.Certificate(t, key, notBefore, notAfter, name)}
	}
	data := acmejsontest.Marshal(t, map[string]*acmejsontest.Resolver{resolver: {
		Account: &acmejsontest.Account{Email: "ops@example.test", URL: "https://ca.example.test:14000/my-account/7", Key: acmejsontest.Key(t, "2048", "account")},
		Certificates: []acmejsontest.Entry{
			entry("a.example.test", now.Add(-time.Hour), now.Add(89*24*time.Hour)),
			entry("b.example.test", now.Add(-time.Hour), now.Add(89*24*time.Hour)),
			entry("old.example.test", now.Add(-100*24*time.Hour), now.Add(-10*24*time.Hour)),
		},
	}}, acmejsontest.LegoV4)
	require.NoError(t, os.WriteFile(f.acmeJSON, data, 0o600))
	return f
}

// records lists the certificate records in the state directory (none when it does not
// exist yet).
func (f importFixture) records(t *testing.T) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(f.state, "certificates"))
	if os.IsNotExist(err) {
		return nil
	}
	require.NoError(t, err)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func TestImportACMEJSON(t *testing.T) {
	t.Parallel()
	f := newImportFixture(t, "le")
	before, err := os.Stat(f.acmeJSON)
	require.NoError(t, err)
	source, err := os.ReadFile(f.acmeJSON)
	require.NoError(t, err)

	code, stdout, stderr := certfetch("import-acme-json", "--config", f.config, "--dry-run", f.acmeJSON)
	require.Equal(t, exitOK, code, stderr)
	assert.Regexp(t, `(?m)^resolver le -> le \(lego v4\)$`, stdout)
	assert.Regexp(t, `(?m)^\s+account https://ca.example.test:14000/my-account/7: import$`, stdout)
	assert.Regexp(t, `(?m)^\s+\[0\]\s+a\.example\.test\s+a\.example\.test\s+[0-9a-f]+\s+\S+\s+import\s+not in certificates`, stdout)
	assert.Regexp(t, `(?m)^\s+\[2\]\s+old\.example\.test\s+-\s+[0-9a-f]+\s+\S+\s+skip\s+expired on `, stdout)
	assert.Contains(t, stderr, "dry run: nothing was written")
	assert.Empty(t, f.records(t), "a dry run writes nothing")
	assert.NoDirExists(t, f.output)

	code, stdout, stderr = certfetch("import-acme-json", f.acmeJSON, "--config", f.config)
	require.Equal(t, exitOK, code, stderr)
	assert.Regexp(t, `(?m)^\s+\[1\]\s+b\.example\.test\s+b\.example\.test\s+[0-9a-f]+\s+\S+\s+import\s+published;`, stdout)
	assert.Equal(t, []string{"a.example.test.json", "b.example.test.json"}, f.records(t))
	assert.FileExists(t, filepath.Join(f.output, "a.example.test.yml"))
	assert.FileExists(t, filepath.Join(f.output, "b.example.test.yml"))

	code, stdout, stderr = certfetch("import-acme-json", "--config", f.config, "--json", f.acmeJSON)
	require.Equal(t, exitOK, code, stderr)
	var plan fetcher.ImportPlan
	require.NoError(t, json.Unmarshal([]byte(stdout), &plan))
	require.Len(t, plan.Resolvers, 1)
	assert.Equal(t, fetcher.ImportUnchanged, plan.Resolvers[0].Action, "a second run changes nothing")
	assert.Equal(t, []fetcher.ImportAction{fetcher.ImportUnchanged, fetcher.ImportUnchanged, fetcher.ImportSkip},
		[]fetcher.ImportAction{plan.Resolvers[0].Certificates[0].Action, plan.Resolvers[0].Certificates[1].Action, plan.Resolvers[0].Certificates[2].Action})
	assert.NotContains(t, stdout, "PRIVATE KEY")
	assert.NotContains(t, stdout, "LS0tLS1CRUdJTi", "no base64 PEM either")

	after, err := os.Stat(f.acmeJSON)
	require.NoError(t, err)
	data, err := os.ReadFile(f.acmeJSON)
	require.NoError(t, err)
	assert.Equal(t, source, data, "acme.json is never written")
	assert.Equal(t, before.ModTime(), after.ModTime())
}

func TestImportACMEJSONRefusals(t *testing.T) {
	t.Parallel()
	tests := []struct {
		desc     string
		resolver string // in acme.json
		args     []string
		prepare  func(t *testing.T, f importFixture) // before the command
		code     int
		stderr   string
		records  []string
	}{
		{desc: "a resolver certfetch does not define is refused", resolver: "myresolver", code: exitFailure,
			stderr: `resolver "myresolver": no certfetch resolver "myresolver" (defined: le): map it with -resolver myresolver=NAME`},
		{desc: "mapped with --resolver", resolver: "myresolver", args: []string{"--resolver", "myresolver=le"}, code: exitOK,
			records: []string{"a.example.test.json", "b.example.test.json"}},
		{desc: "skipped with --resolver NAME=", resolver: "myresolver", args: []string{"--resolver", "myresolver="}, code: exitOK},
		{desc: "a truncated file imports nothing and names the entry", resolver: "le", code: exitFailure,
			prepare: func(t *testing.T, f importFixture) {
				data, err := os.ReadFile(f.acmeJSON)
				require.NoError(t, err)
				cut := bytes.Index(data, []byte(`"b.example.test"`)) + 40
				require.NoError(t, os.WriteFile(f.acmeJSON, data[:cut], 0o600))
			},
			stderr: `resolver "le": Certificates[1] (b.example.test): not valid JSON: unexpected end of JSON input (the file ends early: truncated)`},
		{desc: "the daemon holds the state directory", resolver: "le", code: exitFailure,
			prepare: func(t *testing.T, f importFixture) {
				st, err := store.Open(f.state)
				require.NoError(t, err)
				unlock, err := st.LockDirectory()
				require.NoError(t, err)
				t.Cleanup(func() { _ = unlock() })
			},
			stderr: "stop certfetch (systemctl stop certfetch), import, then start it"},
		{desc: "no file", resolver: "le", args: []string{"--dry-run"}, code: exitUsage, stderr: "name exactly one acme.json, got 0"},
		{desc: "a bad --resolver", resolver: "le", args: []string{"--resolver", "le"}, code: exitUsage, stderr: "want TRAEFIK=CERTFETCH"},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			t.Parallel()
			f := newImportFixture(t, tt.resolver)
			if tt.prepare != nil {
				tt.prepare(t, f)
			}
			args := append([]string{"import-acme-json", "--config", f.config}, tt.args...)
			if tt.code != exitUsage {
				args = append(args, f.acmeJSON)
			}
			code, _, stderr := certfetch(args...)
			assert.Equal(t, tt.code, code, stderr)
			assert.Contains(t, stderr, tt.stderr)
			assert.Equal(t, tt.records, f.records(t))
		})
	}
}
