package fetcher_test

import (
	"crypto"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/certfetch/certfetch/acme"
	"github.com/certfetch/certfetch/acme/http01"
	"github.com/certfetch/certfetch/fetcher"
	"github.com/certfetch/certfetch/fetcher/acmejson"
	"github.com/certfetch/certfetch/fetcher/acmejson/acmejsontest"
	"github.com/certfetch/certfetch/fetcher/config"
	"github.com/certfetch/certfetch/fetcher/store"
	"github.com/certfetch/certfetch/internal/testkit/testca"
	"github.com/certfetch/certfetch/internal/testkit/testsupport"
)

// importEnv is a certfetch installation with a state directory and a file output,
// configured from YAML, beside the in-process CA. Unlike the demo sandbox it creates no
// account: the import brings it.
type importEnv struct {
	ca       *testca.CA
	pebble   *testsupport.SyncBuffer // the CA's log
	dir      string
	rootFile string
	st       *store.Store
}

func newImportEnv(t *testing.T) *importEnv {
	t.Helper()
	e := &importEnv{pebble: &testsupport.SyncBuffer{}, dir: t.TempDir()}
	ca, err := testca.Start(testca.Options{AlwaysValid: true,
		Logger: slog.New(slog.NewTextHandler(e.pebble, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	require.NoError(t, err)
	t.Cleanup(func() { ca.Close() })
	e.ca = ca
	e.rootFile, err = ca.WriteTLSRoot(e.dir)
	require.NoError(t, err)
	e.st, err = store.Open(filepath.Join(e.dir, "state"))
	require.NoError(t, err)
	return e
}

// config writes and loads a configuration with resolver le at the CA (caServer
// overrides its URL) and certificates (YAML list items).
func (e *importEnv) config(t *testing.T, caServer string, certificates ...string) *config.Config {
	t.Helper()
	if caServer == "" {
		caServer = e.ca.DirectoryURL()
	}
	text := fmt.Sprintf("storage: %q\nresolvers:\n  le:\n    caServer: %s\n    caCertificates: [%q]\n    httpChallenge:\n      stateless: true\n"+
		"output:\n  file:\n    directory: %q\n", filepath.Join(e.dir, "state"), caServer, e.rootFile, filepath.Join(e.dir, "traefik"))
	if len(certificates) > 0 {
		text += "certificates:\n  - " + strings.Join(certificates, "\n  - ") + "\n"
	}
	path := filepath.Join(e.dir, "certfetch.yml")
	require.NoError(t, os.WriteFile(path, []byte(text), 0o600))
	cfg, err := config.Load(path)
	require.NoError(t, err)
	return cfg
}

// traefikIssues plays Traefik's own resolver: it registers an RSA-4096 account at the CA
// and obtains one certificate per entry of names, with a key of the given type.
func (e *importEnv) traefikIssues(t *testing.T, keyTypes []acme.KeyType, names ...[]string) *acmejsontest.Resolver {
	t.Helper()
	transport, err := acme.NewTransport(acme.TransportOptions{RootCAFiles: []string{e.rootFile}})
	require.NoError(t, err)
	key := acmejsontest.Key(t, "4096", "traefik")
	client, err := acme.NewClient(t.Context(), acme.Config{DirectoryURL: e.ca.DirectoryURL(), Transport: transport,
		Account: acme.Account{Key: key, Contact: []string{"mailto:ops@example.test"}}, Solver: http01.Stateless{}})
	require.NoError(t, err)
	r := &acmejsontest.Resolver{Account: &acmejsontest.Account{Email: "ops@example.test", URL: client.AccountURL(), Key: key}}
	for i, n := range names {
		got, err := client.Obtain(t.Context(), acme.Request{Names: n, KeyType: keyTypes[i]})
		require.NoError(t, err)
		certKey, err := acme.ParseKey(got.PrivateKeyPEM)
		require.NoError(t, err)
		r.Certificates = append(r.Certificates, acmejsontest.Entry{Main: n[0], SANs: n[1:], CertPEM: got.ChainPEM, Key: certKey})
	}
	return r
}

// importFile plans and applies data under cfg, checking that the plan has no refusal.
func (e *importEnv) importFile(t *testing.T, cfg *config.Config, data []byte, opts fetcher.ImportOptions) *fetcher.ImportPlan {
	t.Helper()
	f, err := acmejson.Parse(data, time.Now())
	require.NoError(t, err)
	plan, err := fetcher.PlanImport(t.Context(), cfg, e.st, f, opts)
	require.NoError(t, err)
	require.NoError(t, plan.Refused())
	out, err := fetcher.OpenOutput(cfg.Output, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	defer out.Close()
	require.NoError(t, fetcher.ApplyImport(t.Context(), e.st, out, plan, cfg.Storage.LockTTL))
	return plan
}

func (e *importEnv) servedSerial(t *testing.T, name string) string {
	t.Helper()
	_, leaf := servedPair(t, filepath.Join(e.dir, "traefik"), name)
	return acme.SerialHex(leaf)
}

// TestImportKeepsTheAccountAndTheCertificates imports what Traefik obtained (both
// acme.json eras): the daemon then orders nothing and registers nothing, and its renewal
// on the normal schedule goes through the imported account with `replaces` naming the
// imported certificate (Pebble refuses `replaces` from another account).
func TestImportKeepsTheAccountAndTheCertificates(t *testing.T) {
	t.Parallel()
	for _, format := range []acmejsontest.Format{acmejsontest.LegoV4, acmejsontest.LegoV5} {
		t.Run(format.String(), func(t *testing.T) {
			t.Parallel()
			e := newImportEnv(t)
			traefik := e.traefikIssues(t, []acme.KeyType{acme.EC256, acme.RSA2048},
				[]string{"app.example.test", "www.app.example.test"}, []string{"api.example.test"})
			data := acmejsontest.Marshal(t, map[string]*acmejsontest.Resolver{"le": traefik}, format)
			before := e.ca.Stats()
			require.Equal(t, 1, before.NewAccounts, "Traefik registered once")
			require.Equal(t, 2, before.NewOrders)
			cfg := e.config(t, "", "domains: [www.app.example.test, app.example.test]",
				"{domains: [api.example.test], keyType: RSA2048}")

			plan := e.importFile(t, cfg, data, fetcher.ImportOptions{})
			require.Len(t, plan.Resolvers, 1)
			r := plan.Resolvers[0]
			assert.Equal(t, fetcher.ImportNew, r.Action)
			assert.Equal(t, traefik.Account.URL, r.AccountURL)
			require.Len(t, r.Certificates, 2)
			assert.Equal(t, "www.app.example.test", r.Certificates[0].Name, "the configured certificate's name")
			assert.Equal(t, []string{"www.app.example.test", "app.example.test"}, r.Certificates[0].Domains, "in the configuration's order")
			assert.Equal(t, "api.example.test", r.Certificates[1].Name)
			for _, c := range r.Certificates {
				assert.Equal(t, fetcher.ImportNew, c.Action, c.Name)
				assert.Equal(t, "published", c.Published, c.Name)
			}

			acct, err := e.st.LoadAccount(t.Context(), "le", e.ca.DirectoryURL())
			require.NoError(t, err)
			assert.Equal(t, traefik.Account.URL, acct.URL, "the same account URL")
			key, err := acme.ParseKey(acct.KeyPEM)
			require.NoError(t, err)
			assert.True(t, traefik.Account.Key.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(key.Public()), "the same account key")
			served := map[string]string{}
			for i, name := range []string{"www.app.example.test", "api.example.test"} {
				served[name] = e.servedSerial(t, name)
				leaf, err := acme.ParseLeaf(traefik.Certificates[i].CertPEM)
				require.NoError(t, err)
				assert.Equal(t, acme.SerialHex(leaf), served[name], "the output serves Traefik's certificate")
			}

			again := e.importFile(t, cfg, data, fetcher.ImportOptions{})
			assert.Equal(t, fetcher.ImportUnchanged, again.Resolvers[0].Action, "idempotent")
			for _, c := range again.Resolvers[0].Certificates {
				assert.Equal(t, fetcher.ImportUnchanged, c.Action, c.Name)
			}

			clock := &testsupport.Clock{}
			d, err := fetcher.New(cfg, e.st, fetcher.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Now: clock.Now})
			require.NoError(t, err)
			defer d.Close()
			require.NoError(t, d.Once(t.Context()))
			assert.Equal(t, before.NewOrders, e.ca.Stats().NewOrders, "the switch orders nothing")
			assert.Equal(t, 1, e.ca.Stats().NewAccounts, "and registers nothing")

			rec, err := e.st.LoadCertificate(t.Context(), "api.example.test")
			require.NoError(t, err)
			clock.Advance(rec.NotAfter.Sub(time.Now()) - time.Minute) // past any renewal time
			require.NoError(t, d.Once(t.Context()))
			assert.Equal(t, before.NewOrders+2, e.ca.Stats().NewOrders, "renewed on schedule")
			assert.Equal(t, 1, e.ca.Stats().NewAccounts, "with the imported account, never registered again")
			assert.Equal(t, 2, strings.Count(e.pebble.String(), "is a replacement of"),
				"each renewal names the imported certificate it replaces, from the account that ordered it")
			for name, old := range served {
				assert.NotEqual(t, old, e.servedSerial(t, name), "the renewal is served")
			}
		})
	}
}
