package fetcher_test

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/certfetch/certfetch/acme"
	"github.com/certfetch/certfetch/fetcher"
	"github.com/certfetch/certfetch/fetcher/store"
	"github.com/certfetch/certfetch/internal/testkit/testca"
)

// TestCarryRequest carries out operator requests the way `certfetch renew --force` and
// `certfetch revoke` do without a daemon (Daemon.Carry), against the in-process CA: what
// the CA recorded, what is served, and how many orders it took.
func TestCarryRequest(t *testing.T) {
	t.Parallel()
	tests := []struct {
		desc       string
		ca         testca.Options
		timeout    time.Duration
		action     store.RequestAction
		reason     acme.RevocationReason
		refuse     bool // the CA refuses revocations
		wantErr    string
		wantOrders int
	}{
		{desc: "renew --force", action: store.RequestRenew, wantOrders: 2},
		{desc: "renew --force, the CA needs longer than the deadline: the order is resumed",
			ca: testca.Options{Mode: testca.Async, Delay: 3 * time.Second, RetryAfter: time.Second}, timeout: 2 * time.Second,
			action: store.RequestRenew, wantOrders: 2},
		{desc: "revoke keyCompromise", action: store.RequestRevoke, reason: acme.ReasonKeyCompromise, wantOrders: 2},
		{desc: "revoke superseded", action: store.RequestRevoke, reason: acme.ReasonSuperseded, wantOrders: 2},
		{desc: "revoke refused by the CA: nothing else happens", action: store.RequestRevoke, reason: acme.ReasonKeyCompromise,
			refuse: true, wantErr: "urn:ietf:params:acme:error:unauthorized", wantOrders: 1},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			const name = "carry.example.test"
			e := newEnv(t, tc.ca, tc.timeout, []string{name})
			d := e.daemon(t, e.cfg)
			carry(t, d, e, name, store.RequestRenew, 0) // the first issuance
			first := e.served(t, name, name)
			before, err := e.sb.Store.LoadCertificate(t.Context(), name)
			require.NoError(t, err)

			e.sb.CA.RefuseRevocations(tc.refuse)
			req, err := fetcher.NewRequest(t.Context(), e.cfg, e.sb.Store, name, tc.action, tc.reason)
			require.NoError(t, err)
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			rec, err := d.Carry(ctx, req, func(msg string) { t.Log(msg) })

			assert.Equal(t, tc.wantOrders, e.sb.CA.Stats().NewOrders)
			require.NotNil(t, rec)
			require.NotNil(t, rec.LastRequest, "the outcome is in the record")
			assert.Equal(t, req.ID, rec.LastRequest.ID)
			_, err2 := e.sb.Store.LoadRequest(t.Context(), name)
			assert.ErrorIs(t, err2, store.ErrNotFound, "no request left pending")
			status, revoked := e.sb.CA.Revoked(first.SerialNumber)
			if tc.wantErr != "" {
				require.ErrorContains(t, err, tc.wantErr)
				assert.Contains(t, rec.LastRequest.Error, tc.wantErr)
				assert.False(t, revoked, "the CA did not revoke")
				assert.Equal(t, first.SerialNumber, e.served(t, name, name).SerialNumber, "the certificate stays in service")
				assert.Empty(t, rec.Revoked)
				assert.Equal(t, before.RenewAt, rec.RenewAt, "and keeps its schedule")
				assert.Empty(t, rec.LastError, "not a failure of the certificate: no back-off")
				return
			}
			require.NoError(t, err)
			second := e.served(t, name, name)
			assert.NotEqual(t, first.SerialNumber, second.SerialNumber, "a new certificate is served")
			assert.NotEqual(t, first.RawSubjectPublicKeyInfo, second.RawSubjectPublicKeyInfo, "with a new key")
			assert.True(t, second.NotBefore.After(first.NotBefore) || second.NotBefore.Equal(first.NotBefore))
			if tc.action != store.RequestRevoke {
				assert.False(t, revoked, "renew revokes nothing")
				assert.Empty(t, rec.Revoked)
				return
			}
			require.True(t, revoked, "the CA revoked serial %s", acme.SerialHex(first))
			assert.Equal(t, int(tc.reason), status.Reason, "with the reason asked")
			require.Len(t, rec.Revoked, 1)
			assert.Equal(t, fingerprint(t, before.CertPEM), rec.Revoked[0].SHA256)
			assert.Equal(t, tc.reason, rec.Revoked[0].Reason)
			assert.Equal(t, acme.SerialHex(first), rec.Revoked[0].Serial)
		})
	}
}

// TestInterruptedRequestLeavesTheCertificateDue stops Carry in the middle of the
// replacement's order (Ctrl-C on `certfetch renew --force` without a daemon): the next
// `once` finishes that same order, whatever the renewal schedule says.
func TestInterruptedRequestLeavesTheCertificateDue(t *testing.T) {
	t.Parallel()
	const name = "interrupted.example.test"
	e := newEnv(t, testca.Options{}, 0, []string{name})
	d := e.daemon(t, e.cfg)
	require.NoError(t, d.Once(t.Context()))
	first := e.served(t, name, name)
	require.NoError(t, d.Once(t.Context()), "asks the CA's renewal information: not due for weeks")

	hold := e.sb.CA.HoldNext(testca.Finalize)
	req, err := fetcher.NewRequest(t.Context(), e.cfg, e.sb.Store, name, store.RequestRenew, 0)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(t.Context())
	go func() {
		<-hold.Reached()
		cancel()
	}()
	_, err = d.Carry(ctx, req, func(string) {})
	require.ErrorIs(t, err, context.Canceled)
	hold.Release()
	assert.Equal(t, first.SerialNumber, e.served(t, name, name).SerialNumber, "nothing replaced yet")

	// The CA's renewal information is due again (every 6 hours); its window, weeks away,
	// must not put the requested replacement off. The replacement is stored before it is
	// published: a command waiting for the request must not call it done in between.
	e.clock.Advance(7 * time.Hour)
	var doneWhenStored []bool
	resumer, err := fetcher.New(e.cfg, e.sb.Store, fetcher.Options{
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Now: e.clock.Now,
		Observe: func(ev fetcher.Event) {
			if ev.Step != fetcher.StepStored {
				return
			}
			rec, err := e.sb.Store.LoadCertificate(t.Context(), name)
			if assert.NoError(t, err) {
				done, _ := fetcher.RequestResult(rec, req)
				doneWhenStored = append(doneWhenStored, done)
			}
		},
	})
	require.NoError(t, err)
	t.Cleanup(resumer.Close)
	require.NoError(t, resumer.Once(t.Context()))
	assert.NotEqual(t, first.SerialNumber, e.served(t, name, name).SerialNumber, "replaced by the next once")
	assert.Equal(t, 2, e.sb.CA.Stats().NewOrders, "the interrupted order, resumed")
	assert.Equal(t, []bool{false}, doneWhenStored, "stored, not published yet: not done")
	rec, err := e.sb.Store.LoadCertificate(t.Context(), name)
	require.NoError(t, err)
	done, err := fetcher.RequestResult(rec, req)
	assert.True(t, done, "published: done")
	assert.NoError(t, err)
}

// TestRevokedCertificateIsNeverPublishedAgain restores the record of a revoked
// certificate (a backup taken before the revocation: no trace of it in the record) and
// lets daemons visit it, one whose output serves the replacement and one with an empty
// output (a new Traefik host): neither ever publishes the revoked certificate, both serve
// a new certificate with a new key.
func TestRevokedCertificateIsNeverPublishedAgain(t *testing.T) {
	t.Parallel()
	const name = "restored.example.test"
	e := newEnv(t, testca.Options{}, 0, []string{name})
	d := e.daemon(t, e.cfg)
	require.NoError(t, d.Once(t.Context()))
	revoked := e.served(t, name, name)
	backup, err := e.sb.Store.LoadCertificate(t.Context(), name)
	require.NoError(t, err)

	carry(t, d, e, name, store.RequestRevoke, acme.ReasonKeyCompromise)
	replacement := e.served(t, name, name)
	require.NotEqual(t, revoked.SerialNumber, replacement.SerialNumber)

	tests := []struct {
		desc      string
		outputDir string // "" : the sandbox's, which serves the replacement
	}{
		{desc: "the output serving the replacement"},
		{desc: "an empty output", outputDir: t.TempDir()},
	}
	orders := e.sb.CA.Stats().NewOrders
	for _, tc := range tests { // in turn: they share the store
		require.NoError(t, e.sb.Store.SaveCertificate(t.Context(), backup), "%s: restore the backup", tc.desc)
		statuses, err := fetcher.Status(t.Context(), e.cfg, e.sb.Store, nil, time.Now())
		require.NoError(t, err)
		assert.Contains(t, statuses[0].Problem, "revoked at the CA (keyCompromise, serial "+acme.SerialHex(revoked), tc.desc)
		assert.True(t, statuses[0].Trouble())

		cfg := *e.cfg
		if tc.outputDir != "" {
			cfg.Output.File.Directory = tc.outputDir
		}
		var mu sync.Mutex
		var published []string
		daemon, err := fetcher.New(&cfg, e.sb.Store, fetcher.Options{
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
			Observe: func(ev fetcher.Event) {
				if ev.Step != fetcher.StepPublished {
					return
				}
				mu.Lock()
				defer mu.Unlock()
				published = append(published, servedSerial(t, cfg.Output.File.Directory, name))
			},
		})
		require.NoError(t, err)
		t.Cleanup(daemon.Close)
		require.NoError(t, daemon.Once(t.Context()), tc.desc)

		mu.Lock()
		assert.NotContains(t, published, acme.SerialHex(revoked), "%s: the revoked certificate was published", tc.desc)
		mu.Unlock()
		now := servedLeaf(t, cfg.Output.File.Directory, name)
		assert.NotEqual(t, acme.SerialHex(revoked), acme.SerialHex(now), tc.desc)
		assert.NotEqual(t, revoked.RawSubjectPublicKeyInfo, now.RawSubjectPublicKeyInfo, "%s: never the compromised key", tc.desc)
		// One new order, in two newOrder requests: the restored certificate was replaced
		// already, so the CA refuses its "replaces" (409 alreadyReplaced) and the order
		// is sent again without it.
		orders += 2
		assert.Equal(t, orders, e.sb.CA.Stats().NewOrders, "%s: the restored record is replaced by one new order", tc.desc)
		rec, err := e.sb.Store.LoadCertificate(t.Context(), name)
		require.NoError(t, err)
		assert.NotEmpty(t, rec.Revoked, "%s: the new record carries the revocation on", tc.desc)
	}
}

// TestJournaledRevokedCertificateIsNotCollected leaves in the journal an order whose
// certificate was revoked since (a crash between storing it and forgetting the order,
// long ago): renewing collects a new certificate, and the revoked one is never stored
// into service, not even for a moment.
func TestJournaledRevokedCertificateIsNotCollected(t *testing.T) {
	t.Parallel()
	const name = "journal.example.test"
	e := newEnv(t, testca.Options{}, 0, []string{name})
	var mu sync.Mutex
	var stored []string // fingerprints of the certificates stored, in order
	d, err := fetcher.New(e.cfg, e.sb.Store, fetcher.Options{
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Observe: func(ev fetcher.Event) {
			if ev.Step != fetcher.StepStored {
				return
			}
			rec, err := e.sb.Store.LoadCertificate(t.Context(), name)
			if assert.NoError(t, err) {
				mu.Lock()
				stored = append(stored, fingerprint(t, rec.CertPEM))
				mu.Unlock()
			}
		},
	})
	require.NoError(t, err)
	t.Cleanup(d.Close)
	require.NoError(t, d.Once(t.Context()))
	old, err := e.sb.Store.LoadCertificate(t.Context(), name)
	require.NoError(t, err)

	carry(t, d, e, name, store.RequestRevoke, acme.ReasonSuperseded)
	// The journal holds the revoked certificate's order, certificate downloaded.
	areq := acme.Request{Names: []string{name}, KeyType: acme.EC256}
	require.NoError(t, e.sb.Store.Journal().Save(t.Context(), &acme.Record{
		Key: areq.Key(), Request: areq, OrderURL: "https://ca.invalid/order/leftover",
		PrivateKeyPEM: string(old.KeyPEM), CertificatePEM: string(old.CertPEM), Created: time.Now(),
	}))
	mu.Lock()
	stored = nil
	mu.Unlock()
	rec := carry(t, d, e, name, store.RequestRenew, 0)

	mu.Lock()
	assert.NotContains(t, stored, fingerprint(t, old.CertPEM), "the revoked certificate was stored into service")
	assert.Len(t, stored, 1, "the renewal stored one certificate")
	mu.Unlock()
	assert.NotEqual(t, fingerprint(t, old.CertPEM), fingerprint(t, rec.CertPEM))
	assert.Equal(t, 3, e.sb.CA.Stats().NewOrders, "a new order instead")
	_, err = e.sb.Store.Journal().Load(t.Context(), areq.Key())
	assert.ErrorIs(t, err, acme.ErrNoRecord, "the leftover order is forgotten")
}

// carry makes a request for name and carries it out with d, within a minute.
func carry(t *testing.T, d *fetcher.Daemon, e *env, name string, action store.RequestAction, reason acme.RevocationReason) *store.Certificate {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	req, err := fetcher.NewRequest(ctx, e.cfg, e.sb.Store, name, action, reason)
	require.NoError(t, err)
	rec, err := d.Carry(ctx, req, func(msg string) { t.Log(msg) })
	require.NoError(t, err)
	return rec
}

// TestDaemonPicksUpRequests leaves requests in the store as the commands do while a
// daemon holds the state directory: the daemon carries out the one for a configured
// certificate and drops the one for a name it does not know; both are deleted.
func TestDaemonPicksUpRequests(t *testing.T) {
	t.Parallel()
	const name = "pickup.example.test"
	e := newEnv(t, testca.Options{}, 0, []string{name})
	d := e.daemon(t, e.cfg)
	require.NoError(t, d.Once(t.Context()))
	first := e.served(t, name, name)

	req, err := fetcher.NewRequest(t.Context(), e.cfg, e.sb.Store, name, store.RequestRenew, 0)
	require.NoError(t, err)
	created, _, err := e.sb.Store.CreateRequest(t.Context(), req)
	require.NoError(t, err)
	require.True(t, created)
	other := *req
	other.ID = "another"
	created, pending, err := e.sb.Store.CreateRequest(t.Context(), &other)
	require.NoError(t, err)
	assert.False(t, created, "one request per certificate at a time")
	assert.Equal(t, req.ID, pending.ID, "the pending one is returned")
	ghost := &store.Request{ID: "ghost", Name: "ghost.example.test", Action: store.RequestRenew, Requested: time.Now()}
	created, _, err = e.sb.Store.CreateRequest(t.Context(), ghost)
	require.NoError(t, err)
	require.True(t, created)

	statuses, err := fetcher.Status(t.Context(), e.cfg, e.sb.Store, nil, time.Now())
	require.NoError(t, err)
	require.NotNil(t, statuses[0].Request, "status shows the pending request")
	assert.Equal(t, store.RequestRenew, statuses[0].Request.Action)
	assert.False(t, statuses[0].Trouble(), "a pending request is not trouble")

	require.NoError(t, d.Once(t.Context()))
	assert.NotEqual(t, first.SerialNumber, e.served(t, name, name).SerialNumber, "renewed")
	assert.Equal(t, 2, e.sb.CA.Stats().NewOrders)
	rec, err := e.sb.Store.LoadCertificate(t.Context(), name)
	require.NoError(t, err)
	done, err := fetcher.RequestResult(rec, req)
	assert.True(t, done)
	require.NoError(t, err)
	reqs, err := e.sb.Store.Requests(t.Context())
	require.NoError(t, err)
	assert.Empty(t, reqs, "carried out and dropped requests are deleted")
}

// TestNewRequestRefuses covers the requests NewRequest refuses.
func TestNewRequestRefuses(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testca.Options{AlwaysValid: true}, 0, []string{"never.example.test"})
	tests := []struct {
		desc, name string
		action     store.RequestAction
		wantErr    string
		unknown    bool
	}{
		{desc: "unknown name", name: "nope.example.test", action: store.RequestRenew, unknown: true,
			wantErr: `renew nope.example.test: no such certificate in the configuration (configured: [never.example.test])`},
		{desc: "revoke before any issuance", name: "never.example.test", action: store.RequestRevoke,
			wantErr: "revoke never.example.test: no certificate was issued for it; nothing to revoke"},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			_, err := fetcher.NewRequest(t.Context(), e.cfg, e.sb.Store, tc.name, tc.action, acme.ReasonUnspecified)
			require.EqualError(t, err, tc.wantErr)
			assert.Equal(t, tc.unknown, errors.Is(err, fetcher.ErrUnknownCertificate))
		})
	}
}

func fingerprint(t *testing.T, certPEM []byte) string {
	t.Helper()
	fp, err := acme.Fingerprint(certPEM)
	require.NoError(t, err)
	return fp
}

// servedLeaf is the certificate the output directory dir serves as name.
func servedLeaf(t *testing.T, dir, name string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, name+".yml"))
	require.NoError(t, err)
	var doc struct {
		TLS struct {
			Certificates []struct {
				CertFile string `yaml:"certFile"`
			} `yaml:"certificates"`
		} `yaml:"tls"`
	}
	require.NoError(t, yaml.Unmarshal(data, &doc))
	require.Len(t, doc.TLS.Certificates, 1)
	certPEM, err := os.ReadFile(doc.TLS.Certificates[0].CertFile)
	require.NoError(t, err)
	block, _ := pem.Decode(certPEM)
	require.NotNil(t, block)
	leaf, err := x509.ParseCertificate(block.Bytes)
	require.NoError(t, err)
	return leaf
}

// servedSerial is the serial (hex) of what dir serves as name, "" when nothing.
func servedSerial(t *testing.T, dir, name string) string {
	t.Helper()
	if _, err := os.Stat(filepath.Join(dir, name+".yml")); err != nil {
		return ""
	}
	return acme.SerialHex(servedLeaf(t, dir, name))
}
