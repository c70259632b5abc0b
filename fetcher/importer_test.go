package fetcher_test

import (
	"crypto"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
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
	"github.com/certfetch/certfetch/internal/testkit/testservers"
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
	storage  string // the configuration's storage value (YAML)
	st       *store.Store
}

// newImportEnv starts the CA and opens the store that storage (a YAML value for the
// configuration's storage key) names; "" is a state directory.
func newImportEnv(t *testing.T, storage string) *importEnv {
	t.Helper()
	e := &importEnv{pebble: &testsupport.SyncBuffer{}, dir: t.TempDir(), storage: storage}
	if e.storage == "" {
		e.storage = strconv.Quote(filepath.Join(e.dir, "state"))
	}
	ca, err := testca.Start(testca.Options{AlwaysValid: true,
		Logger: slog.New(slog.NewTextHandler(e.pebble, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	require.NoError(t, err)
	t.Cleanup(func() { ca.Close() })
	e.ca = ca
	e.rootFile, err = ca.WriteTLSRoot(e.dir)
	require.NoError(t, err)
	e.st, err = fetcher.OpenStore(t.Context(), e.config(t, "").Storage)
	require.NoError(t, err)
	t.Cleanup(func() { e.st.Close() })
	return e
}

// config writes and loads a configuration with resolver le at the CA (caServer
// overrides its URL) and certificates (YAML list items).
func (e *importEnv) config(t *testing.T, caServer string, certificates ...string) *config.Config {
	t.Helper()
	if caServer == "" {
		caServer = e.ca.DirectoryURL()
	}
	text := fmt.Sprintf("storage: %s\nresolvers:\n  le:\n    caServer: %s\n    caCertificates: [%q]\n    httpChallenge:\n      stateless: true\n"+
		"output:\n  file:\n    directory: %q\n", e.storage, caServer, e.rootFile, filepath.Join(e.dir, "traefik"))
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
			e := newImportEnv(t, "")
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

// TestImportIntoSharedStorage imports into Redis and etcd storage: the account and the
// certificate go under the rootKey (the certificate under its lease), a second import
// changes nothing, and a daemon on that store orders and registers nothing.
func TestImportIntoSharedStorage(t *testing.T) {
	t.Parallel()
	_, redisAddr := testservers.StartRedis(t)
	_, etcdURL := testservers.StartEtcd(t)
	for _, tc := range []struct{ desc, storage string }{
		{desc: "redis", storage: fmt.Sprintf("{redis: {address: %q, rootKey: imported}}", redisAddr)},
		{desc: "etcd", storage: fmt.Sprintf("{etcd: {endpoints: [%q], rootKey: imported}}", etcdURL)},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			e := newImportEnv(t, tc.storage)
			traefik := e.traefikIssues(t, []acme.KeyType{acme.EC256}, []string{"app.example.test"})
			data := acmejsontest.Marshal(t, map[string]*acmejsontest.Resolver{"le": traefik}, acmejsontest.LegoV4)
			before := e.ca.Stats()
			cfg := e.config(t, "", "domains: [app.example.test]")

			plan := e.importFile(t, cfg, data, fetcher.ImportOptions{})
			require.Len(t, plan.Resolvers, 1)
			assert.Equal(t, fetcher.ImportNew, plan.Resolvers[0].Action)
			require.Len(t, plan.Resolvers[0].Certificates, 1)
			assert.Equal(t, fetcher.ImportNew, plan.Resolvers[0].Certificates[0].Action)
			acct, err := e.st.LoadAccount(t.Context(), "le", e.ca.DirectoryURL())
			require.NoError(t, err)
			assert.Equal(t, traefik.Account.URL, acct.URL)
			leaf, err := acme.ParseLeaf(traefik.Certificates[0].CertPEM)
			require.NoError(t, err)
			rec, err := e.st.LoadCertificate(t.Context(), "app.example.test")
			require.NoError(t, err)
			stored, err := acme.ParseLeaf(rec.CertPEM)
			require.NoError(t, err)
			assert.Equal(t, acme.SerialHex(leaf), acme.SerialHex(stored), "stored in the shared store")
			assert.Equal(t, acme.SerialHex(leaf), e.servedSerial(t, "app.example.test"))

			again := e.importFile(t, cfg, data, fetcher.ImportOptions{})
			assert.Equal(t, fetcher.ImportUnchanged, again.Resolvers[0].Action)
			assert.Equal(t, fetcher.ImportUnchanged, again.Resolvers[0].Certificates[0].Action)

			d, err := fetcher.New(cfg, e.st, fetcher.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
			require.NoError(t, err)
			defer d.Close()
			require.NoError(t, d.Once(t.Context()))
			assert.Equal(t, before.NewOrders, e.ca.Stats().NewOrders, "the switch orders nothing")
			assert.Equal(t, before.NewAccounts, e.ca.Stats().NewAccounts, "and registers nothing")
		})
	}
}

// TestImportPlan covers what PlanImport decides without a CA: synthetic acme.json
// files (acmejsontest) against a state directory.
func TestImportPlan(t *testing.T) {
	t.Parallel()
	const caURL = "https://ca.example.test:14000/dir"
	now := time.Now()
	key := func(name string) crypto.Signer { return acmejsontest.Key(t, "P256", name) }
	certFor := func(name string, notBefore time.Time) acmejsontest.Entry {
		return acmejsontest.Entry{Main: name, Key: key(name), CertPEM: acmejsontest.Certificate(t, key(name), notBefore, notBefore.Add(90*24*time.Hour), name)}
	}
	account := func(url, keyName string) *acmejsontest.Account {
		return &acmejsontest.Account{Email: "ops@example.test", URL: url, Key: acmejsontest.Key(t, "2048", keyName)}
	}
	current := certFor("a.example.test", now.Add(-time.Hour))
	older := certFor("a.example.test", now.Add(-48*time.Hour))
	older.Key, older.CertPEM = current.Key, acmejsontest.Certificate(t, current.Key, now.Add(-48*time.Hour), now.Add(40*24*time.Hour), "a.example.test")

	tests := []struct {
		desc string
		file map[string]*acmejsontest.Resolver
		opts fetcher.ImportOptions
		// stored is imported first (its own file), so that the store holds it.
		stored map[string]*acmejsontest.Resolver
		// want is the account action per Traefik resolver, then the certificate actions.
		want map[string][]fetcher.ImportAction
		why  string // in some Why
	}{
		{desc: "an unknown certfetch resolver is refused",
			file: map[string]*acmejsontest.Resolver{"other": {Account: account(caURL+"/acct/1", "x"), Certificates: []acmejsontest.Entry{current}}},
			want: map[string][]fetcher.ImportAction{"other": {fetcher.ImportRefuse, fetcher.ImportRefuse}},
			why:  `-resolver other=NAME`},
		{desc: "mapped to a certfetch resolver with -resolver",
			file: map[string]*acmejsontest.Resolver{"other": {Account: account(caURL+"/acct/1", "x"), Certificates: []acmejsontest.Entry{current}}},
			opts: fetcher.ImportOptions{Resolvers: map[string]string{"other": "le"}},
			want: map[string][]fetcher.ImportAction{"other": {fetcher.ImportNew, fetcher.ImportNew}}},
		{desc: "skipped on purpose with -resolver NAME=",
			file: map[string]*acmejsontest.Resolver{
				"dns": {Account: account("https://elsewhere.example.test/acct/9", "y"), Certificates: []acmejsontest.Entry{certFor("b.example.test", now)}},
				"le":  {Account: account(caURL+"/acct/1", "x"), Certificates: []acmejsontest.Entry{current}},
			},
			opts: fetcher.ImportOptions{Resolvers: map[string]string{"dns": ""}},
			want: map[string][]fetcher.ImportAction{"dns": {fetcher.ImportSkip, fetcher.ImportSkip}, "le": {fetcher.ImportNew, fetcher.ImportNew}}},
		{desc: "an account at another CA is refused",
			file: map[string]*acmejsontest.Resolver{"le": {Account: account("https://acme-v02.api.letsencrypt.org/acme/acct/1", "x"), Certificates: []acmejsontest.Entry{current}}},
			want: map[string][]fetcher.ImportAction{"le": {fetcher.ImportRefuse, fetcher.ImportRefuse}},
			why:  "the account is at https://acme-v02.api.letsencrypt.org:443, resolver le's caServer at https://ca.example.test:14000"},
		{desc: "unless -allow-ca-mismatch",
			file: map[string]*acmejsontest.Resolver{"le": {Account: account("https://accounts.example.test/acct/1", "x"), Certificates: []acmejsontest.Entry{current}}},
			opts: fetcher.ImportOptions{AllowCAMismatch: true},
			want: map[string][]fetcher.ImportAction{"le": {fetcher.ImportNew, fetcher.ImportNew}},
			why:  "allowed by -allow-ca-mismatch"},
		{desc: "another account in the store is never replaced",
			stored: map[string]*acmejsontest.Resolver{"le": {Account: account(caURL+"/acct/1", "x")}},
			file:   map[string]*acmejsontest.Resolver{"le": {Account: account(caURL+"/acct/2", "z"), Certificates: []acmejsontest.Entry{current}}},
			want:   map[string][]fetcher.ImportAction{"le": {fetcher.ImportRefuse, fetcher.ImportRefuse}},
			why:    "certfetch never replaces an account"},
		{desc: "two Traefik resolvers with two accounts for one certfetch resolver",
			file: map[string]*acmejsontest.Resolver{
				"a": {Account: account(caURL+"/acct/1", "x")},
				"b": {Account: account(caURL+"/acct/2", "z")},
			},
			opts: fetcher.ImportOptions{Resolvers: map[string]string{"a": "le", "b": "le"}},
			want: map[string][]fetcher.ImportAction{"a": {fetcher.ImportNew}, "b": {fetcher.ImportRefuse}},
			why:  "a resolver has one account per CA"},
		{desc: "the store holds a newer certificate: kept",
			stored: map[string]*acmejsontest.Resolver{"le": {Account: account(caURL+"/acct/1", "x"), Certificates: []acmejsontest.Entry{current}}},
			file:   map[string]*acmejsontest.Resolver{"le": {Account: account(caURL+"/acct/1", "x"), Certificates: []acmejsontest.Entry{older}}},
			want:   map[string][]fetcher.ImportAction{"le": {fetcher.ImportUnchanged, fetcher.ImportSkip}},
			why:    "never replaced by an older one"},
		{desc: "the store holds an older certificate: replaced",
			stored: map[string]*acmejsontest.Resolver{"le": {Account: account(caURL+"/acct/1", "x"), Certificates: []acmejsontest.Entry{older}}},
			file:   map[string]*acmejsontest.Resolver{"le": {Account: account(caURL+"/acct/1", "x"), Certificates: []acmejsontest.Entry{current}}},
			want:   map[string][]fetcher.ImportAction{"le": {fetcher.ImportUnchanged, fetcher.ImportReplace}}},
		{desc: "two entries for the same domains: the newer one",
			file: map[string]*acmejsontest.Resolver{"le": {Account: account(caURL+"/acct/1", "x"), Certificates: []acmejsontest.Entry{current, older}}},
			want: map[string][]fetcher.ImportAction{"le": {fetcher.ImportNew, fetcher.ImportNew, fetcher.ImportSkip}},
			why:  "Certificates[0] of this file holds a newer certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			t.Parallel()
			e := &importEnv{dir: t.TempDir()}
			e.storage = strconv.Quote(filepath.Join(e.dir, "state"))
			e.rootFile = filepath.Join(e.dir, "root.pem") // any certificate: nothing dials the CA
			require.NoError(t, os.WriteFile(e.rootFile, current.CertPEM, 0o600))
			var err error
			e.st, err = store.Open(filepath.Join(e.dir, "state"))
			require.NoError(t, err)
			cfg := e.config(t, caURL)
			if tt.stored != nil {
				e.importFile(t, cfg, acmejsontest.Marshal(t, tt.stored, acmejsontest.LegoV4), fetcher.ImportOptions{})
			}
			f, err := acmejson.Parse(acmejsontest.Marshal(t, tt.file, acmejsontest.LegoV5), now)
			require.NoError(t, err)
			plan, err := fetcher.PlanImport(t.Context(), cfg, e.st, f, tt.opts)
			require.NoError(t, err)
			var whys []string
			for _, r := range plan.Resolvers {
				got := []fetcher.ImportAction{r.Action}
				whys = append(whys, r.Why)
				for _, c := range r.Certificates {
					got = append(got, c.Action)
					whys = append(whys, c.Why)
				}
				assert.Equal(t, tt.want[r.Traefik], got, "resolver %s", r.Traefik)
			}
			assert.Len(t, plan.Resolvers, len(tt.want))
			if tt.why != "" {
				assert.Contains(t, strings.Join(whys, "\n"), tt.why)
			}
			if plan.Refused() == nil {
				return
			}
			// A refused plan writes nothing.
			before, err := e.st.Certificates(t.Context())
			require.NoError(t, err)
			out, err := fetcher.OpenOutput(cfg.Output, slog.New(slog.DiscardHandler))
			require.NoError(t, err)
			defer out.Close()
			require.Error(t, fetcher.ApplyImport(t.Context(), e.st, out, plan, time.Second))
			after, err := e.st.Certificates(t.Context())
			require.NoError(t, err)
			assert.Equal(t, before, after)
			names, err := out.Names(t.Context())
			require.NoError(t, err)
			assert.Len(t, names, len(before), "nothing new published")
		})
	}
}
