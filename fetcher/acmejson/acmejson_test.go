package acmejson_test

import (
	"bytes"
	"crypto"
	"encoding/json"
	"encoding/pem"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/certfetch/certfetch/acme"
	"github.com/certfetch/certfetch/fetcher/acmejson"
	"github.com/certfetch/certfetch/fetcher/acmejson/acmejsontest"
)

var now = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

const accountURL = "https://ca.example.test:14000/my-account/1"

// entry is a valid certificate entry for names, with a key of kind, valid
// for 90 days around now.
func entry(t testing.TB, kind string, names ...string) acmejsontest.Entry {
	t.Helper()
	key := acmejsontest.Key(t, kind, names[0])
	return acmejsontest.Entry{Main: names[0], SANs: names[1:], Key: key,
		CertPEM: acmejsontest.Certificate(t, key, now.Add(-30*24*time.Hour), now.Add(60*24*time.Hour), names...)}
}

func account(t testing.TB) *acmejsontest.Account {
	t.Helper()
	return &acmejsontest.Account{Email: "ops@example.test", URL: accountURL, Key: acmejsontest.Key(t, "4096", "account")}
}

func TestParseFormats(t *testing.T) {
	t.Parallel()
	for _, f := range []acmejsontest.Format{acmejsontest.LegoV4, acmejsontest.LegoV5} {
		t.Run(f.String(), func(t *testing.T) {
			t.Parallel()
			data := acmejsontest.Marshal(t, map[string]*acmejsontest.Resolver{
				"le": {Account: account(t), Certificates: []acmejsontest.Entry{
					entry(t, "P256", "app.example.test", "WWW.App.example.test"),
					entry(t, "2048", "api.example.test"),
					entry(t, "P384", "ip.example.test", "192.0.2.7"),
					entry(t, "4096", "big.example.test"),
				}},
				"empty": {},
			}, f)
			wantFormat := acmejson.FormatLegoV4
			if f == acmejsontest.LegoV5 {
				wantFormat = acmejson.FormatLegoV5
			}

			file, err := acmejson.Parse(data, now)
			require.NoError(t, err)
			require.Len(t, file.Resolvers, 2)
			empty, le := file.Resolvers[0], file.Resolvers[1]
			assert.Equal(t, "empty", empty.Name)
			assert.Nil(t, empty.Account, "a resolver without account nor certificates is nothing to import")
			assert.Empty(t, empty.Certificates)

			assert.Equal(t, "le", le.Name)
			assert.Equal(t, wantFormat, le.Format)
			require.NotNil(t, le.Account)
			assert.Equal(t, accountURL, le.Account.URL)
			assert.Equal(t, "ops@example.test", le.Account.Email)
			assert.Equal(t, acme.RSA4096, le.Account.KeyType)
			assertSameKey(t, acmejsontest.Key(t, "4096", "account"), le.Account.KeyPEM)

			want := []struct {
				domains []string
				keyType acme.KeyType
			}{
				{[]string{"app.example.test", "www.app.example.test"}, acme.EC256},
				{[]string{"api.example.test"}, acme.RSA2048},
				{[]string{"ip.example.test", "192.0.2.7"}, acme.EC384},
				{[]string{"big.example.test"}, acme.RSA4096},
			}
			require.Len(t, le.Certificates, len(want))
			for i, w := range want {
				c := le.Certificates[i]
				assert.Equal(t, i, c.Index)
				assert.Equal(t, w.domains, c.Domains, "main first, lower case")
				assert.Equal(t, w.keyType, c.KeyType)
				assert.Empty(t, c.Skip)
				assert.Equal(t, "default", c.Store)
				assert.NotEmpty(t, c.Serial)
				assert.Equal(t, now.Add(60*24*time.Hour), c.NotAfter.UTC())
				assertSameKey(t, acmejsontest.Key(t, keyKind(w.keyType), w.domains[0]), c.KeyPEM)
				block, _ := pem.Decode(c.KeyPEM)
				require.NotNil(t, block)
				if f == acmejsontest.LegoV5 {
					assert.Equal(t, "PRIVATE KEY", block.Type, "lego v5: PKCS #8")
				} else {
					assert.Contains(t, []string{"RSA PRIVATE KEY", "EC PRIVATE KEY"}, block.Type, "lego v4: PKCS #1 or SEC 1")
				}
			}
		})
	}
}

// keyKind is Traefik's spelling of a certfetch key type, for the fixture's key cache.
func keyKind(kt acme.KeyType) string {
	return map[acme.KeyType]string{acme.EC256: "P256", acme.EC384: "P384", acme.RSA2048: "2048", acme.RSA4096: "4096"}[kt]
}

func assertSameKey(t *testing.T, want crypto.Signer, keyPEM []byte) {
	t.Helper()
	got, err := acme.ParseKey(keyPEM)
	require.NoError(t, err)
	type equaler interface{ Equal(crypto.PublicKey) bool }
	assert.True(t, want.Public().(equaler).Equal(got.Public()), "the key is the fixture's")
}

func TestParseSkips(t *testing.T) {
	t.Parallel()
	expired := entry(t, "P256", "old.example.test")
	expired.CertPEM = acmejsontest.Certificate(t, expired.Key, now.Add(-100*24*time.Hour), now.Add(-time.Hour), "old.example.test")
	noKey := entry(t, "P256", "nokey.example.test")
	noKey.Key = nil
	noCert := entry(t, "P256", "nocert.example.test")
	noCert.CertPEM = nil
	tests := []struct {
		desc  string
		entry acmejsontest.Entry
		skip  string
	}{
		{desc: "expired: left to normal issuance", entry: expired, skip: acmejson.SkipExpired + " on "},
		{desc: "empty key", entry: noKey, skip: acmejson.SkipEmpty},
		{desc: "empty certificate", entry: noCert, skip: acmejson.SkipEmpty},
		{desc: "RSA 8192, which certfetch does not issue", entry: entry(t, "8192", "huge.example.test"), skip: acmejson.SkipKeyType},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			t.Parallel()
			for _, f := range []acmejsontest.Format{acmejsontest.LegoV4, acmejsontest.LegoV5} {
				data := acmejsontest.Marshal(t, map[string]*acmejsontest.Resolver{"le": {Account: account(t),
					Certificates: []acmejsontest.Entry{tt.entry, entry(t, "P256", "good.example.test")}}}, f)
				file, err := acmejson.Parse(data, now)
				require.NoError(t, err, "a skipped entry does not stop the import (%s)", f)
				certs := file.Resolvers[0].Certificates
				require.Len(t, certs, 2)
				assert.Contains(t, certs[0].Skip, tt.skip)
				assert.Equal(t, tt.entry.Main, certs[0].Domains[0])
				assert.Empty(t, certs[1].Skip, "the other entry is imported")
			}
		})
	}
}

func TestParseRefusesBadFiles(t *testing.T) {
	t.Parallel()
	good := func(t *testing.T) map[string]*acmejsontest.Resolver {
		return map[string]*acmejsontest.Resolver{"le": {Account: account(t), Certificates: []acmejsontest.Entry{
			entry(t, "P256", "a.example.test"), entry(t, "P256", "b.example.test", "c.example.test"),
		}}}
	}
	// edit decodes the fixture, lets fn change it, and encodes it again.
	edit := func(t *testing.T, fn func(doc map[string]any)) []byte {
		var doc map[string]any
		require.NoError(t, json.Unmarshal(acmejsontest.Marshal(t, good(t), acmejsontest.LegoV4), &doc))
		fn(doc)
		data, err := json.Marshal(doc)
		require.NoError(t, err)
		return data
	}
	cert := func(doc map[string]any, i int) map[string]any {
		return doc["le"].(map[string]any)["Certificates"].([]any)[i].(map[string]any)
	}
	acct := func(doc map[string]any) map[string]any { return doc["le"].(map[string]any)["Account"].(map[string]any) }

	tests := []struct {
		desc string
		data func(t *testing.T) []byte
		// want is every expected error: resolver, entry, domain, and a piece of the problem.
		want []acmejson.Error
	}{
		{
			desc: "truncated inside the second entry",
			data: func(t *testing.T) []byte {
				data := acmejsontest.Marshal(t, good(t), acmejsontest.LegoV4)
				return data[:bytes.Index(data, []byte(`"b.example.test"`))+40]
			},
			want: []acmejson.Error{{Resolver: "le", Index: 1, Domain: "b.example.test", Problem: "truncated"}},
		},
		{
			desc: "truncated inside the account",
			data: func(t *testing.T) []byte {
				data := acmejsontest.Marshal(t, good(t), acmejsontest.LegoV4)
				return data[:bytes.Index(data, []byte(`"PrivateKey"`))+30]
			},
			want: []acmejson.Error{{Resolver: "le", Index: acmejson.AccountIndex, Problem: "truncated"}},
		},
		{
			desc: "garbled bytes in the first entry",
			data: func(t *testing.T) []byte {
				data := acmejsontest.Marshal(t, good(t), acmejsontest.LegoV4)
				i := bytes.Index(data, []byte(`"certificate"`))
				return append(append(data[:i:i], "\x00\xff}]garbage"...), data[i+20:]...)
			},
			want: []acmejson.Error{{Resolver: "le", Index: 0, Domain: "a.example.test", Problem: "not valid JSON"}},
		},
		{
			desc: "not the layout: a resolver that is a list",
			data: func(*testing.T) []byte { return []byte(`{"le": []}`) },
			want: []acmejson.Error{{Resolver: "le", Index: acmejson.AccountIndex, Problem: "not the acme.json layout"}},
		},
		{
			desc: "empty file",
			data: func(*testing.T) []byte { return []byte("\n") },
			want: []acmejson.Error{{Problem: "empty"}},
		},
		{
			desc: "key and certificate do not match",
			data: func(t *testing.T) []byte {
				return edit(t, func(doc map[string]any) { cert(doc, 1)["key"] = cert(doc, 0)["key"] })
			},
			want: []acmejson.Error{{Resolver: "le", Index: 1, Domain: "b.example.test", Problem: "does not match"}},
		},
		{
			desc: "certificate for other domains than the entry names",
			data: func(t *testing.T) []byte {
				return edit(t, func(doc map[string]any) {
					cert(doc, 1)["domain"] = map[string]any{"main": "b.example.test", "sans": []string{"d.example.test"}}
				})
			},
			want: []acmejson.Error{{Resolver: "le", Index: 1, Domain: "b.example.test", Problem: "covers b.example.test, c.example.test, the entry names b.example.test, d.example.test"}},
		},
		{
			desc: "base64 garbage in a certificate and in a key",
			data: func(t *testing.T) []byte {
				return edit(t, func(doc map[string]any) {
					cert(doc, 0)["certificate"] = "not*base64!"
					cert(doc, 1)["key"] = "%%%"
				})
			},
			want: []acmejson.Error{
				{Resolver: "le", Index: 0, Domain: "a.example.test", Problem: "certificate: not base64"},
				{Resolver: "le", Index: 1, Domain: "b.example.test", Problem: "key: not base64"},
			},
		},
		{
			desc: "unknown certificate key type (P-521)",
			data: func(t *testing.T) []byte {
				e := entry(t, "P521", "p521.example.test")
				return acmejsontest.Marshal(t, map[string]*acmejsontest.Resolver{"le": {Account: account(t),
					Certificates: []acmejsontest.Entry{e}}}, acmejsontest.LegoV5)
			},
			want: []acmejson.Error{{Resolver: "le", Index: 0, Domain: "p521.example.test", Problem: "unknown key type"}},
		},
		{
			desc: "unknown KeyType in the account",
			data: func(t *testing.T) []byte {
				return acmejsontest.Marshal(t, map[string]*acmejsontest.Resolver{"le": {Account: account(t), KeyType: "EC521"}}, acmejsontest.LegoV4)
			},
			want: []acmejson.Error{{Resolver: "le", Index: acmejson.AccountIndex, Problem: `KeyType "EC521": unknown key type`}},
		},
		{
			desc: "a resolver with certificates and no account",
			data: func(t *testing.T) []byte {
				return acmejsontest.Marshal(t, map[string]*acmejsontest.Resolver{"le": {Certificates: []acmejsontest.Entry{entry(t, "P256", "a.example.test")}}}, acmejsontest.LegoV4)
			},
			want: []acmejson.Error{{Resolver: "le", Index: acmejson.AccountIndex, Problem: "no account, but 1 certificates"}},
		},
		{
			desc: "account key that is not DER",
			data: func(t *testing.T) []byte {
				return edit(t, func(doc map[string]any) { acct(doc)["PrivateKey"] = "AAAA" })
			},
			want: []acmejson.Error{{Resolver: "le", Index: acmejson.AccountIndex, Problem: "PrivateKey: not a PKCS #1, SEC 1 or PKCS #8 DER private key"}},
		},
		{
			desc: "account never registered",
			data: func(t *testing.T) []byte {
				return edit(t, func(doc map[string]any) { delete(acct(doc), "Registration") })
			},
			want: []acmejson.Error{{Resolver: "le", Index: acmejson.AccountIndex, Problem: "no Registration.uri"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			t.Parallel()
			file, err := acmejson.Parse(tt.data(t), now)
			require.Error(t, err)
			assert.Nil(t, file, "a bad file yields nothing to import")
			errs := problems(t, err)
			require.Len(t, errs, len(tt.want), "%v", err)
			for i, w := range tt.want {
				assert.Equal(t, w.Resolver, errs[i].Resolver, "%v", errs[i])
				if w.Resolver != "" {
					assert.Equal(t, w.Index, errs[i].Index, "%v", errs[i])
				}
				assert.Equal(t, w.Domain, errs[i].Domain, "%v", errs[i])
				assert.Contains(t, errs[i].Error(), w.Problem)
				assert.NotContains(t, errs[i].Error(), "PRIVATE KEY", "no key material in errors")
			}
		})
	}
}

// problems returns the *acmejson.Error values of a Parse error.
func problems(t *testing.T, err error) []*acmejson.Error {
	t.Helper()
	var single *acmejson.Error
	if errors.As(err, &single) && single == err {
		return []*acmejson.Error{single}
	}
	joined, ok := err.(interface{ Unwrap() []error })
	require.True(t, ok, "%T", err)
	var out []*acmejson.Error
	for _, e := range joined.Unwrap() {
		var pe *acmejson.Error
		require.True(t, errors.As(e, &pe), "%T", e)
		out = append(out, pe)
	}
	return out
}

func TestErrorText(t *testing.T) {
	t.Parallel()
	tests := []struct {
		desc string
		err  acmejson.Error
		want string
	}{
		{desc: "entry", err: acmejson.Error{Resolver: "le", Index: 2, Domain: "a.example.test", Problem: "bad"},
			want: `resolver "le": Certificates[2] (a.example.test): bad`},
		{desc: "entry without domain", err: acmejson.Error{Resolver: "le", Index: 0, Problem: "bad"},
			want: `resolver "le": Certificates[0]: bad`},
		{desc: "account", err: acmejson.Error{Resolver: "le", Index: acmejson.AccountIndex, Problem: "bad"},
			want: `resolver "le": Account: bad`},
		{desc: "syntax", err: acmejson.Error{Offset: 12, Resolver: "le", Index: acmejson.AccountIndex, Problem: "bad"},
			want: `at byte 12: resolver "le": Account: bad`},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			t.Parallel()
			assert.Equal(t, tt.want, tt.err.Error())
		})
	}
}
