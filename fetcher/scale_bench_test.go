package fetcher_test

import (
	"context"
	"crypto"
	"fmt"
	"io"
	"log"
	"log/slog"
	"testing"
	"time"

	"github.com/go-acme/lego/v4/certcrypto"
	"github.com/go-acme/lego/v4/certificate"
	"github.com/go-acme/lego/v4/lego"
	legolog "github.com/go-acme/lego/v4/log"
	"github.com/go-acme/lego/v4/registration"
	"github.com/stretchr/testify/require"

	"github.com/certfetch/certfetch/acme"
	"github.com/certfetch/certfetch/acme/http01"
	"github.com/certfetch/certfetch/demo"
	"github.com/certfetch/certfetch/fetcher"
	"github.com/certfetch/certfetch/internal/testkit/testca"
)

// Scale benchmarks: issuing many certificates against the in-process CA,
// each validated over HTTP-01 through the plugin (thumbprint mode). They
// report per-certificate wall time and CA requests; -benchtime 1x runs each
// once (one op is a whole batch):
//
//	go test -run '^$' -bench IssueMany -benchtime 1x -timeout 60m ./fetcher/

func domains(n int) [][]string {
	out := make([][]string, n)
	for i := range out {
		out[i] = []string{fmt.Sprintf("host%05d.scale.test", i)}
	}
	return out
}

func reportBatch(b *testing.B, sb *demo.Sandbox, n int, start time.Time, before testca.Stats) {
	took := time.Since(start)
	after := sb.CA.Stats()
	b.ReportMetric(took.Seconds(), "s/batch")
	b.ReportMetric(took.Seconds()/float64(n), "s/cert")
	b.ReportMetric(float64(after.Requests-before.Requests)/float64(n), "requests/cert")
	b.ReportMetric(float64(after.NewOrders-before.NewOrders)/float64(n), "orders/cert")
}

// BenchmarkIssueMany/certfetch issues a batch with the daemon (Once, 50
// orders in flight, no request-rate limit: the CA is in-process);
// BenchmarkIssueMany/certfetch-limited the same with the default limit of
// 20 requests per second; BenchmarkIssueMany/lego issues a smaller batch with
// lego's library one certificate after another, with the same account and
// the same plugin answering, for the wall-time ratio.
func BenchmarkIssueMany(b *testing.B) {
	unlimited := 0.0
	for _, bench := range []struct {
		name string
		n    int
		rps  *float64
	}{
		{"certfetch", 100, &unlimited},
		{"certfetch", 1000, &unlimited},
		{"certfetch-limited", 100, nil},
	} {
		n := bench.n
		b.Run(fmt.Sprintf("%s/certs=%d", bench.name, n), func(b *testing.B) {
			for b.Loop() {
				sb, cfg, err := demo.Start(demo.Options{Dir: b.TempDir(), MaxConcurrentOrders: 50, RequestsPerSecond: bench.rps}, domains(n)...)
				require.NoError(b, err)
				d, err := fetcher.New(cfg, sb.Store, fetcher.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
				require.NoError(b, err)
				before, start := sb.CA.Stats(), time.Now()
				require.NoError(b, d.Once(context.Background()))
				reportBatch(b, sb, n, start, before)
				d.Close()
				sb.Close()
			}
		})
	}
	const legoBatch = 20
	// lego logs every step of every order at INFO; the numbers are the point.
	legolog.Logger = log.New(io.Discard, "", 0)
	b.Run(fmt.Sprintf("lego/certs=%d", legoBatch), func(b *testing.B) {
		for b.Loop() {
			sb, cfg, err := demo.Start(demo.Options{Dir: b.TempDir()}, domains(legoBatch)...)
			require.NoError(b, err)
			acct, err := fetcher.AccountKey(b.Context(), sb.Store, cfg.Resolvers[demo.ResolverName], false)
			require.NoError(b, err)
			key, err := acme.ParseKey(acct.KeyPEM)
			require.NoError(b, err)
			client := legoClient(b, sb, key)
			before, start := sb.CA.Stats(), time.Now()
			for _, names := range domains(legoBatch) {
				_, err := client.Certificate.Obtain(certificate.ObtainRequest{Domains: names, Bundle: true})
				require.NoError(b, err)
			}
			reportBatch(b, sb, legoBatch, start, before)
			sb.Close()
		}
	})
}

// legoUser is lego's account holder, with the key the sandbox's plugin knows
// the thumbprint of.
type legoUser struct {
	key crypto.PrivateKey
	reg *registration.Resource
}

func (u *legoUser) GetEmail() string                        { return "" }
func (u *legoUser) GetRegistration() *registration.Resource { return u.reg }
func (u *legoUser) GetPrivateKey() crypto.PrivateKey        { return u.key }

func legoClient(b *testing.B, sb *demo.Sandbox, key crypto.PrivateKey) *lego.Client {
	b.Helper()
	user := &legoUser{key: key}
	cfg := lego.NewConfig(user)
	cfg.CADirURL = sb.CA.DirectoryURL()
	cfg.HTTPClient = sb.CA.HTTPClient()
	cfg.Certificate.KeyType = certcrypto.EC256
	client, err := lego.NewClient(cfg)
	require.NoError(b, err)
	// The plugin answers in thumbprint mode: nothing to publish.
	require.NoError(b, client.Challenge.SetHTTP01Provider(http01.Stateless{}))
	user.reg, err = client.Registration.Register(registration.RegisterOptions{TermsOfServiceAgreed: true})
	require.NoError(b, err)
	return client
}
