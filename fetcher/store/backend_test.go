package store_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/certfetch/certfetch/acme"
	"github.com/certfetch/certfetch/fetcher/store"
	"github.com/certfetch/certfetch/internal/kvclient"
	"github.com/certfetch/certfetch/internal/secret"
	"github.com/certfetch/certfetch/internal/testkit/testservers"
)

// Lease TTLs in these tests: short, so that expiry tests run in seconds.
// etcd counts TTLs in whole seconds (1 s minimum with testservers' election
// timeout); Redis in milliseconds.
var testTTL = map[string]time.Duration{"file": time.Second, "redis": 400 * time.Millisecond, "etcd": time.Second}

var (
	allKinds    = []string{"file", "redis", "etcd"}
	sharedKinds = []string{"redis", "etcd"}
)

// env is one state of one backend kind, which open returns new Stores on:
// the same directory, or the same server and prefix.
type env struct {
	kind string
	dir  string              // file only
	srv  *testservers.Server // nil for file
	open func(t *testing.T, timeout time.Duration) *store.Store
}

var instances atomic.Int64

// newEnv starts what kind needs (a server per call, so that tests that kill
// it do not disturb others) and returns the env.
func newEnv(t *testing.T, kind string) *env {
	t.Helper()
	e := &env{kind: kind}
	switch kind {
	case "file":
		e.dir = t.TempDir()
		e.open = func(t *testing.T, _ time.Duration) *store.Store {
			st, err := store.Open(e.dir)
			require.NoError(t, err)
			return st
		}
	case "redis":
		srv, addr := testservers.StartRedis(t)
		e.srv = srv
		e.open = func(t *testing.T, timeout time.Duration) *store.Store {
			st, err := store.OpenRedis(t.Context(), kvclient.RedisOptions{Address: addr, Timeout: timeout},
				store.Options{Prefix: "test/", Instance: fmt.Sprintf("instance-%d", instances.Add(1))})
			require.NoError(t, err)
			t.Cleanup(func() { st.Close() })
			return st
		}
	case "etcd":
		srv, endpoint := testservers.StartEtcd(t)
		e.srv = srv
		e.open = func(t *testing.T, timeout time.Duration) *store.Store {
			st, err := store.OpenEtcd(t.Context(), kvclient.EtcdOptions{Endpoints: []string{endpoint}, Timeout: timeout},
				store.Options{Prefix: "test/", Instance: fmt.Sprintf("instance-%d", instances.Add(1))})
			require.NoError(t, err)
			t.Cleanup(func() { st.Close() })
			return st
		}
	default:
		t.Fatalf("unknown kind %s", kind)
	}
	return e
}

// forEachKind runs test in a parallel subtest per kind, each on its own env.
func forEachKind(t *testing.T, kinds []string, test func(t *testing.T, e *env)) {
	t.Helper()
	for _, kind := range kinds {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			test(t, newEnv(t, kind))
		})
	}
}

func (e *env) store(t *testing.T) *store.Store { return e.open(t, 0) }

// fenced returns the lease's context (Lease.Context) for the test.
func fenced(t *testing.T, l *store.Lease) context.Context {
	ctx, cancel := l.Context(t.Context())
	t.Cleanup(cancel)
	return ctx
}

// lost returns a channel closed once l is lost or released.
func lost(t *testing.T, l *store.Lease) <-chan struct{} {
	ctx, cancel := l.Context(context.Background())
	t.Cleanup(cancel)
	return ctx.Done()
}

func record(key, orderURL string) *acme.Record {
	return &acme.Record{Key: key, Request: acme.Request{Names: []string{"a.example"}}, OrderURL: orderURL,
		PrivateKeyPEM: "KEY", CSR: []byte{1, 2}, Created: time.Unix(1700000000, 0).UTC()}
}

func TestRecordsOnEveryBackend(t *testing.T) {
	t.Parallel()
	tests := []struct {
		desc string
		run  func(t *testing.T, st *store.Store)
	}{
		{desc: "certificate round-trip, missing is ErrNotFound", run: func(t *testing.T, st *store.Store) {
			_, err := st.LoadCertificate(t.Context(), "www")
			require.ErrorIs(t, err, store.ErrNotFound)
			want := &store.Certificate{Name: "www", Domains: []string{"www.example"}, CertPEM: []byte("CERT"), KeyPEM: []byte("KEY"),
				Failures: 2, LastError: "boom", RetryAt: time.Unix(1700000000, 0).UTC()}
			require.NoError(t, st.SaveCertificate(t.Context(), want))
			got, err := st.LoadCertificate(t.Context(), "www")
			require.NoError(t, err)
			assert.Equal(t, want, got)
			want.Failures = 0
			require.NoError(t, st.SaveCertificate(t.Context(), want), "a write replaces the record")
			got, err = st.LoadCertificate(t.Context(), "www")
			require.NoError(t, err)
			assert.Equal(t, want, got)
		}},
		{desc: "accounts are keyed by resolver and CA", run: func(t *testing.T, st *store.Store) {
			require.NoError(t, st.SaveAccount(t.Context(), "r", &store.Account{Directory: "https://one/dir", KeyPEM: []byte("K1"), URL: "https://one/acct/1"}))
			got, err := st.LoadAccount(t.Context(), "r", "https://one/dir")
			require.NoError(t, err)
			assert.Equal(t, &store.Account{Directory: "https://one/dir", KeyPEM: []byte("K1"), URL: "https://one/acct/1"}, got)
			_, err = st.LoadAccount(t.Context(), "r", "https://two/dir")
			require.ErrorIs(t, err, store.ErrNotFound)
			_, err = st.LoadAccount(t.Context(), "other", "https://one/dir")
			require.ErrorIs(t, err, store.ErrNotFound)
		}},
		{desc: "journal round-trip, Orders, delete", run: func(t *testing.T, st *store.Store) {
			j, ctx := st.Journal(), t.Context()
			_, err := j.Load(ctx, "0123")
			require.ErrorIs(t, err, acme.ErrNoRecord)
			require.ErrorIs(t, err, store.ErrNotFound)
			r1, r2 := record("0123", "https://ca/order/1"), record("4567", "https://ca/order/2")
			require.NoError(t, j.Save(ctx, r2))
			require.NoError(t, j.Save(ctx, r1))
			got, err := j.Load(ctx, "0123")
			require.NoError(t, err)
			assert.Equal(t, r1, got)
			orders, err := st.Orders(t.Context())
			require.NoError(t, err)
			assert.Equal(t, []*acme.Record{r1, r2}, orders, "sorted by key")
			require.NoError(t, j.Delete(ctx, "0123"))
			require.NoError(t, j.Delete(ctx, "0123"), "deleting a missing record is not an error")
			_, err = j.Load(ctx, "0123")
			require.ErrorIs(t, err, acme.ErrNoRecord)
			orders, err = st.Orders(ctx)
			require.NoError(t, err)
			assert.Equal(t, []*acme.Record{r2}, orders)
		}},
		{desc: "Certificates lists only certificate records", run: func(t *testing.T, st *store.Store) {
			certs, err := st.Certificates(t.Context())
			require.NoError(t, err)
			assert.Empty(t, certs)
			require.NoError(t, st.SaveCertificate(t.Context(), &store.Certificate{Name: "b"}))
			require.NoError(t, st.SaveCertificate(t.Context(), &store.Certificate{Name: "a"}))
			require.NoError(t, st.Journal().Save(t.Context(), record("c", "u")))
			require.NoError(t, st.SaveAccount(t.Context(), "d", &store.Account{Directory: "x"}))
			certs, err = st.Certificates(t.Context())
			require.NoError(t, err)
			assert.Equal(t, []*store.Certificate{{Name: "a"}, {Name: "b"}}, certs)
		}},
		{desc: "names that would escape their directory are refused", run: func(t *testing.T, st *store.Store) {
			for _, name := range []string{"", ".hidden", "a/b", "../x"} {
				require.Error(t, st.SaveCertificate(t.Context(), &store.Certificate{Name: name}), name)
			}
		}},
	}
	for _, kind := range allKinds {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			srvEnv := newEnv(t, kind)
			for i, tc := range tests {
				t.Run(tc.desc, func(t *testing.T) {
					t.Parallel()
					st := isolated(t, srvEnv, i)
					tc.run(t, st)
				})
			}
		})
	}
}

// isolated returns a Store with its own state on e's server: another
// directory for file, another prefix for Redis and etcd.
func isolated(t *testing.T, e *env, i int) *store.Store {
	t.Helper()
	if e.kind == "file" {
		st, err := store.Open(t.TempDir())
		require.NoError(t, err)
		return st
	}
	return openPrefixed(t, e, fmt.Sprintf("case%d/", i))
}

// openPrefixed opens a Store on e's server under prefix.
func openPrefixed(t *testing.T, e *env, prefix string) *store.Store {
	t.Helper()
	var (
		st  *store.Store
		err error
	)
	switch e.kind {
	case "redis":
		st, err = store.OpenRedis(t.Context(), kvclient.RedisOptions{Address: e.srv.Addr()}, store.Options{Prefix: prefix})
	case "etcd":
		st, err = store.OpenEtcd(t.Context(), kvclient.EtcdOptions{Endpoints: []string{e.srv.Addr()}}, store.Options{Prefix: prefix})
	}
	require.NoError(t, err)
	t.Cleanup(func() { st.Close() })
	return st
}

func TestPrefixesIsolateStores(t *testing.T) {
	t.Parallel()
	forEachKind(t, sharedKinds, func(t *testing.T, e *env) {
		one, two := openPrefixed(t, e, "one/"), openPrefixed(t, e, "two/")
		require.NoError(t, one.SaveCertificate(t.Context(), &store.Certificate{Name: "www"}))
		_, err := two.LoadCertificate(t.Context(), "www")
		require.ErrorIs(t, err, store.ErrNotFound)
		certs, err := two.Certificates(t.Context())
		require.NoError(t, err)
		assert.Empty(t, certs)
		l, err := one.AcquireLease(t.Context(), "certificates/www", testTTL[e.kind])
		require.NoError(t, err)
		defer l.Release(t.Context())
		l2, err := two.AcquireLease(t.Context(), "certificates/www", testTTL[e.kind])
		require.NoError(t, err, "locks under another prefix are independent")
		require.NoError(t, l2.Release(t.Context()))
	})
}

func TestAcquireLeaseIsExclusiveAcrossStores(t *testing.T) {
	t.Parallel()
	forEachKind(t, allKinds, func(t *testing.T, e *env) {
		a, b := e.store(t), e.store(t)
		ctx, ttl := t.Context(), testTTL[e.kind]

		la, err := a.AcquireLease(ctx, "certificates/www", ttl)
		require.NoError(t, err)
		assert.Equal(t, "certificates/www", la.Name())
		_, err = b.AcquireLease(ctx, "certificates/www", ttl)
		require.ErrorIs(t, err, store.ErrLeaseHeld)
		var held *store.LeaseHeldError
		require.ErrorAs(t, err, &held)
		assert.Equal(t, la.Holder(), held.Holder, "the error names the holder")
		assert.Contains(t, err.Error(), la.Holder())
		_, err = a.AcquireLease(ctx, "certificates/www", ttl)
		require.ErrorIs(t, err, store.ErrLeaseHeld, "not re-entrant: a second job in the same instance is refused too")

		other, err := b.AcquireLease(ctx, "certificates/other", ttl)
		require.NoError(t, err, "locks are per name")
		require.NoError(t, other.Release(ctx))

		laCtx := fenced(t, la)
		require.NoError(t, la.Release(ctx))
		select {
		case <-laCtx.Done():
		default:
			t.Fatal("the lease's context ends with Release")
		}
		require.ErrorIs(t, context.Cause(laCtx), store.ErrLeaseLost, "its cause says why")
		require.ErrorIs(t, la.Err(), store.ErrLeaseLost)
		require.NoError(t, la.Release(ctx), "a second Release is harmless")

		lb, err := b.AcquireLease(ctx, "certificates/www", ttl)
		require.NoError(t, err, "released")
		assert.Greater(t, lb.Token(), la.Token(), "fencing tokens increase")
		require.NoError(t, lb.Release(ctx))
	})
}

// TestLeaseHeldSaysWhenTheLeaseRunsOut: a refused acquisition reports when
// the holder's lease runs out as the server counts it, so that a holder that
// died (stopped renewing) leaves the lock free at Expires.
func TestLeaseHeldSaysWhenTheLeaseRunsOut(t *testing.T) {
	t.Parallel()
	// etcd counts whole seconds: a TTL of a few seconds keeps its rounding
	// small against the TTL.
	ttls := map[string]time.Duration{"file": time.Second, "redis": time.Second, "etcd": 3 * time.Second}
	forEachKind(t, allKinds, func(t *testing.T, e *env) {
		a, b := e.store(t), e.store(t)
		ttl := ttls[e.kind]
		la, err := a.AcquireLease(t.Context(), "certificates/www", ttl)
		require.NoError(t, err)
		defer la.Release(t.Context())
		_, err = b.AcquireLease(t.Context(), "certificates/www", ttl)
		now := time.Now()
		var held *store.LeaseHeldError
		require.ErrorAs(t, err, &held)
		assert.NotErrorIs(t, err, store.ErrDirectoryLocked, "a lease conflict is not the directory's")
		if e.kind == "file" {
			assert.True(t, held.Expires.IsZero(), "unknown: a file lease lives as long as its process")
			return
		}
		// Within the TTL, and a millisecond: Redis counts in whole
		// milliseconds and frees a key once its clock is past the expiry;
		// etcd's whole seconds make Expires the lower bound, up to a second
		// before the lease runs out (never before the request was sent).
		if e.kind == "etcd" {
			assert.False(t, held.Expires.Before(now.Add(ttl-2*time.Second)), "Expires %s at most a second early", held.Expires)
		} else {
			assert.True(t, held.Expires.After(now), "Expires %s is after %s", held.Expires, now)
		}
		assert.False(t, held.Expires.After(now.Add(ttl+time.Millisecond)), "Expires %s is within the %s TTL of %s", held.Expires, ttl, now)

		store.StopRenewing(la) // the holder dies
		_, err = b.AcquireLease(t.Context(), "certificates/www", ttl)
		require.ErrorAs(t, err, &held)
		time.Sleep(time.Until(held.Expires))
		if e.kind == "redis" {
			// Redis expires a key the moment its PTTL has run out.
			lb, err := b.AcquireLease(t.Context(), "certificates/www", ttl)
			require.NoError(t, err, "free at Expires")
			require.NoError(t, lb.Release(t.Context()))
			return
		}
		// etcd's Expires is up to a second early, and etcd revokes expired
		// leases on its next check, every 500 ms.
		lb := tryUntil(t, b, "certificates/www", ttl, 2*time.Second)
		require.NoError(t, lb.Release(t.Context()))
	})
}

func TestWritesUnderAReleasedLeaseAreRejected(t *testing.T) {
	t.Parallel()
	forEachKind(t, allKinds, func(t *testing.T, e *env) {
		st := e.store(t)
		l, err := st.AcquireLease(t.Context(), "certificates/www", testTTL[e.kind])
		require.NoError(t, err)
		ctx := fenced(t, l)
		kept := &store.Certificate{Name: "www", LastError: "kept"}
		require.NoError(t, st.SaveCertificate(ctx, kept), "held: the write goes through")
		// The engine hands the journal context.WithoutCancel(ctx): the lease must survive it.
		jctx := context.WithoutCancel(ctx)
		require.NoError(t, st.Journal().Save(jctx, record("k1", "https://ca/order/1")))
		require.NoError(t, l.Release(t.Context()))

		err = st.SaveCertificate(ctx, &store.Certificate{Name: "www", LastError: "late"})
		require.ErrorIs(t, err, store.ErrLeaseLost)
		assert.Contains(t, err.Error(), "certificates/www")
		require.ErrorIs(t, st.Journal().Save(jctx, record("k1", "https://ca/order/2")), store.ErrLeaseLost)
		require.ErrorIs(t, st.Journal().Delete(jctx, "k1"), store.ErrLeaseLost)
		require.NoError(t, st.SaveAccount(jctx, "r", &store.Account{Directory: "d"}), "accounts are not fenced")

		got, err := st.LoadCertificate(t.Context(), "www")
		require.NoError(t, err)
		assert.Equal(t, kept, got, "the rejected write did not happen")
		rec, err := st.Journal().Load(t.Context(), "k1")
		require.NoError(t, err)
		assert.Equal(t, "https://ca/order/1", rec.OrderURL, "the rejected journal writes did not happen")
	})
}

func TestLeaseOfAnotherStoreIsRefused(t *testing.T) {
	t.Parallel()
	forEachKind(t, allKinds, func(t *testing.T, e *env) {
		a, b := e.store(t), e.store(t)
		l, err := a.AcquireLease(t.Context(), "certificates/www", testTTL[e.kind])
		require.NoError(t, err)
		defer l.Release(t.Context())
		err = b.SaveCertificate(fenced(t, l), &store.Certificate{Name: "www"})
		require.Error(t, err)
		assert.Contains(t, err.Error(), "lease on lock certificates/www comes from")
		_, err = b.LoadCertificate(t.Context(), "www")
		require.ErrorIs(t, err, store.ErrNotFound)
	})
}

// tryUntil calls AcquireLease every poll until it succeeds or within fails.
func tryUntil(t *testing.T, st *store.Store, name string, ttl, within time.Duration) *store.Lease {
	t.Helper()
	deadline := time.Now().Add(within)
	tick := time.NewTicker(ttl / 20)
	defer tick.Stop()
	for {
		l, err := st.AcquireLease(t.Context(), name, ttl)
		if err == nil {
			return l
		}
		require.ErrorIs(t, err, store.ErrLeaseHeld)
		require.True(t, time.Now().Before(deadline), "lock %s not free within %s: %v", name, within, err)
		<-tick.C
	}
}

// waitClosed fails unless ch closes within d.
func waitClosed(t *testing.T, ch <-chan struct{}, d time.Duration, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(d):
		t.Fatalf("%s within %s", what, d)
	}
}

func TestRenewalKeepsTheLockPastItsTTL(t *testing.T) {
	t.Parallel()
	forEachKind(t, sharedKinds, func(t *testing.T, e *env) {
		a, b := e.store(t), e.store(t)
		ttl := testTTL[e.kind]
		la, err := a.AcquireLease(t.Context(), "certificates/www", ttl)
		require.NoError(t, err)
		acquired := time.Now()
		laLost := lost(t, la)
		// B keeps trying for three TTLs: every attempt must find the lock held.
		tick := time.NewTicker(ttl / 10)
		defer tick.Stop()
		for time.Since(acquired) < 3*ttl {
			_, err := b.AcquireLease(t.Context(), "certificates/www", ttl)
			require.ErrorIs(t, err, store.ErrLeaseHeld, "after %s", time.Since(acquired))
			select {
			case <-laLost:
				t.Fatalf("lease lost after %s: %v", time.Since(acquired), la.Err())
			case <-tick.C:
			}
		}
		require.NoError(t, a.SaveCertificate(fenced(t, la), &store.Certificate{Name: "www"}),
			"fenced writes still pass")
		require.NoError(t, la.Release(t.Context()))
		lb, err := b.AcquireLease(t.Context(), "certificates/www", ttl)
		require.NoError(t, err, "released")
		require.NoError(t, lb.Release(t.Context()))
	})
}

func TestDeadHolderLosesTheLockAfterTheTTL(t *testing.T) {
	t.Parallel()
	forEachKind(t, sharedKinds, func(t *testing.T, e *env) {
		a, b := e.store(t), e.store(t)
		ttl := testTTL[e.kind]
		start := time.Now()
		la, err := a.AcquireLease(t.Context(), "certificates/www", ttl)
		require.NoError(t, err)
		rec := record("k1", "https://ca/order/1")
		require.NoError(t, a.Journal().Save(context.WithoutCancel(fenced(t, la)), rec), "the order is journaled")

		laLost := lost(t, la)
		require.NoError(t, a.Close(), "the holder dies without Release")
		_, err = b.AcquireLease(t.Context(), "certificates/www", ttl)
		require.ErrorIs(t, err, store.ErrLeaseHeld, "a dead holder keeps the lock until the TTL")

		lb := tryUntil(t, b, "certificates/www", ttl, 10*ttl+5*time.Second)
		defer lb.Release(t.Context())
		assert.GreaterOrEqual(t, time.Since(start), ttl, "not before the TTL")
		assert.Greater(t, lb.Token(), la.Token(), "the new holder has a higher fencing token")
		got, err := b.Journal().Load(fenced(t, lb), "k1")
		require.NoError(t, err)
		assert.Equal(t, rec, got, "the new holder finds the journaled order to resume")

		waitClosed(t, laLost, 2*ttl, "the dead holder's lease is marked lost")
		require.ErrorIs(t, la.Err(), store.ErrLeaseLost)
	})
}

func TestPausedHolderIsFenced(t *testing.T) {
	t.Parallel()
	forEachKind(t, sharedKinds, func(t *testing.T, e *env) {
		a, b, c := e.store(t), e.store(t), e.store(t)
		ttl := testTTL[e.kind]
		la, err := a.AcquireLease(t.Context(), "certificates/www", ttl)
		require.NoError(t, err)
		actx := context.WithoutCancel(fenced(t, la))
		require.NoError(t, a.Journal().Save(actx, record("k1", "https://ca/order/1")))
		store.StopRenewing(la) // A pauses: it still believes it holds the lock

		lb := tryUntil(t, b, "certificates/www", ttl, 10*ttl+5*time.Second)
		bctx := fenced(t, lb)
		newRec := &store.Certificate{Name: "www", LastError: "written by the new holder"}
		require.NoError(t, b.SaveCertificate(bctx, newRec))

		require.NoError(t, la.Err(), "A has not noticed: only the server-side check can stop it")
		err = a.SaveCertificate(actx, &store.Certificate{Name: "www", LastError: "stale"})
		require.ErrorIs(t, err, store.ErrLeaseLost)
		require.ErrorIs(t, a.Journal().Save(actx, record("k1", "https://ca/order/2")), store.ErrLeaseLost)
		require.ErrorIs(t, a.Journal().Delete(actx, "k1"), store.ErrLeaseLost)
		got, err := b.LoadCertificate(t.Context(), "www")
		require.NoError(t, err)
		assert.Equal(t, newRec, got, "the old holder did not overwrite the new holder's record")
		rec, err := b.Journal().Load(bctx, "k1")
		require.NoError(t, err)
		assert.Equal(t, "https://ca/order/1", rec.OrderURL, "nor the journal")

		require.NoError(t, la.Release(t.Context()), "releasing a lease taken over is not an error")
		_, err = c.AcquireLease(t.Context(), "certificates/www", ttl)
		require.ErrorIs(t, err, store.ErrLeaseHeld, "the old holder's Release left the new holder's lock alone")
		var held *store.LeaseHeldError
		require.ErrorAs(t, err, &held)
		assert.Equal(t, lb.Holder(), held.Holder)
		require.NoError(t, b.SaveCertificate(bctx, newRec), "the new holder still writes")
		require.NoError(t, lb.Release(t.Context()))
	})
}

func TestServerRestart(t *testing.T) {
	t.Parallel()
	forEachKind(t, sharedKinds, func(t *testing.T, e *env) {
		// A short operation timeout: etcd requests wait for the server
		// until it, and this test makes several while it is down.
		st := e.open(t, time.Second)
		want := &store.Certificate{Name: "www", KeyPEM: []byte("KEY")}
		require.NoError(t, st.SaveCertificate(t.Context(), want))
		l, err := st.AcquireLease(t.Context(), "certificates/held", 30*time.Second)
		require.NoError(t, err)

		e.srv.Kill()
		_, err = st.LoadCertificate(t.Context(), "www")
		require.ErrorIs(t, err, kvclient.ErrUnavailable)
		assert.Contains(t, err.Error(), "get test/certificates/www")
		err = st.SaveCertificate(t.Context(), want)
		require.ErrorIs(t, err, kvclient.ErrUnavailable)
		assert.Contains(t, err.Error(), "put test/certificates/www")
		_, err = st.AcquireLease(t.Context(), "certificates/other", time.Second)
		require.ErrorIs(t, err, kvclient.ErrUnavailable)
		assert.NotErrorIs(t, err, store.ErrLeaseHeld)
		_, err = st.Orders(t.Context())
		require.ErrorIs(t, err, kvclient.ErrUnavailable)

		e.srv.Start()
		// The client reconnects in the background: poll until it has.
		deadline := time.Now().Add(20 * time.Second)
		var got *store.Certificate
		for got, err = st.LoadCertificate(t.Context(), "www"); err != nil; got, err = st.LoadCertificate(t.Context(), "www") {
			require.ErrorIs(t, err, kvclient.ErrUnavailable)
			require.True(t, time.Now().Before(deadline), "not back within 20 s: %v", err)
		}
		assert.Equal(t, want, got, "the data survived the restart")
		require.NoError(t, st.SaveCertificate(t.Context(), &store.Certificate{Name: "after"}))
		l2, err := st.AcquireLease(t.Context(), "certificates/other", time.Second)
		require.NoError(t, err)
		require.NoError(t, l2.Release(t.Context()))
		require.NoError(t, st.SaveCertificate(fenced(t, l), want), "a lease longer than the outage survives it")
		require.NoError(t, l.Release(t.Context()))
	})
}

func TestConcurrentWritesOfDistinctRecords(t *testing.T) {
	t.Parallel()
	const writers, perWriter = 8, 8
	forEachKind(t, allKinds, func(t *testing.T, e *env) {
		stores := []*store.Store{e.store(t), e.store(t)}
		var wg sync.WaitGroup
		errs := make(chan error, writers*perWriter)
		for w := range writers {
			wg.Go(func() {
				st := stores[w%len(stores)]
				for i := range perWriter {
					name := fmt.Sprintf("c%02d-%02d", w, i)
					if err := st.SaveCertificate(t.Context(), &store.Certificate{Name: name, Failures: w*100 + i}); err != nil {
						errs <- err
					}
					if err := st.Journal().Save(t.Context(), record(name, name)); err != nil {
						errs <- err
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			require.NoError(t, err)
		}
		certs, err := stores[0].Certificates(t.Context())
		require.NoError(t, err)
		require.Len(t, certs, writers*perWriter)
		for _, c := range certs {
			var w, i int
			_, err := fmt.Sscanf(c.Name, "c%02d-%02d", &w, &i)
			require.NoError(t, err)
			assert.Equal(t, w*100+i, c.Failures, c.Name)
		}
		orders, err := stores[1].Orders(t.Context())
		require.NoError(t, err)
		assert.Len(t, orders, writers*perWriter)
	})
}

func TestOpenErrors(t *testing.T) {
	t.Parallel()
	const password = "s3cret-password"
	_, redisAddr := testservers.StartRedis(t, "--requirepass", password)
	deadAddr := "127.0.0.1:1" // nothing listens on port 1 here
	tests := []struct {
		desc        string
		open        func(ctx context.Context) (*store.Store, error)
		unavailable bool
	}{
		{desc: "redis wrong password", open: func(ctx context.Context) (*store.Store, error) {
			return store.OpenRedis(ctx, kvclient.RedisOptions{Address: redisAddr, Password: secret.New("wrong-" + password)}, store.Options{})
		}},
		{desc: "redis unreachable", unavailable: true, open: func(ctx context.Context) (*store.Store, error) {
			return store.OpenRedis(ctx, kvclient.RedisOptions{Address: deadAddr, Password: secret.New(password), Timeout: time.Second}, store.Options{})
		}},
		{desc: "etcd unreachable", unavailable: true, open: func(ctx context.Context) (*store.Store, error) {
			return store.OpenEtcd(ctx, kvclient.EtcdOptions{Endpoints: []string{"http://" + deadAddr}, Password: secret.New(password),
				Username: "u", Timeout: 500 * time.Millisecond}, store.Options{})
		}},
		{desc: "redis without address", open: func(ctx context.Context) (*store.Store, error) {
			return store.OpenRedis(ctx, kvclient.RedisOptions{}, store.Options{})
		}},
		{desc: "etcd without endpoints", open: func(ctx context.Context) (*store.Store, error) {
			return store.OpenEtcd(ctx, kvclient.EtcdOptions{}, store.Options{})
		}},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			st, err := tc.open(t.Context())
			require.Error(t, err)
			assert.Nil(t, st)
			assert.NotContains(t, err.Error(), password, "the password never appears in errors")
			assert.Equal(t, tc.unavailable, errors.Is(err, kvclient.ErrUnavailable), err.Error())
		})
	}
	st, err := store.OpenRedis(t.Context(), kvclient.RedisOptions{Address: redisAddr, Password: secret.New(password)}, store.Options{})
	require.NoError(t, err, "the right password works")
	assert.NotContains(t, st.String(), password)
	require.NoError(t, st.Close())
}

func TestLockDirectoryOnSharedStores(t *testing.T) {
	t.Parallel()
	forEachKind(t, allKinds, func(t *testing.T, e *env) {
		a, b := e.store(t), e.store(t)
		unlock, err := a.LockDirectory()
		require.NoError(t, err)
		defer unlock()
		_, err = b.LockDirectory()
		assert.Contains(t, a.String(), e.kind)
		if e.kind == "file" {
			require.ErrorIs(t, err, store.ErrDirectoryLocked)
			return
		}
		require.NoError(t, err, "instances share Redis and etcd stores: LockDirectory does not exclude them")
	})
}

func TestCreateAccountHasOneWinner(t *testing.T) {
	t.Parallel()
	const racers = 8
	forEachKind(t, allKinds, func(t *testing.T, e *env) {
		stores := []*store.Store{e.store(t), e.store(t)}
		got := make([]*store.Account, racers)
		errs := make([]error, racers)
		var wg sync.WaitGroup
		for i := range racers {
			wg.Go(func() {
				a := &store.Account{Directory: "https://ca/dir", KeyPEM: fmt.Appendf(nil, "KEY-%d", i)}
				got[i], errs[i] = stores[i%2].CreateAccount(t.Context(), "r", a)
			})
		}
		wg.Wait()
		for i := range racers {
			require.NoError(t, errs[i])
			assert.Equal(t, got[0], got[i], "every racer gets the winner's account")
		}
		stored, err := stores[1].LoadAccount(t.Context(), "r", "https://ca/dir")
		require.NoError(t, err)
		assert.Equal(t, got[0], stored)
		if e.kind == "file" {
			entries, err := os.ReadDir(filepath.Join(e.dir, "accounts"))
			require.NoError(t, err)
			require.Len(t, entries, 1, "no temporary file is left behind")
			info, err := entries[0].Info()
			require.NoError(t, err)
			assert.Equal(t, os.FileMode(0o600), info.Mode().Perm())
		}
	})
}

// deleteLockKey deletes a lock behind its holder's back, as an operator's
// redis-cli DEL or etcdctl del would.
func deleteLockKey(t *testing.T, e *env, name string) {
	t.Helper()
	key := "test/locks/" + name
	switch e.kind {
	case "redis":
		c := redis.NewClient(&redis.Options{Addr: e.srv.Addr()})
		defer c.Close()
		require.NoError(t, c.Del(t.Context(), key).Err())
	case "etcd":
		c, err := clientv3.New(clientv3.Config{Endpoints: []string{e.srv.Addr()}, Logger: zap.NewNop()})
		require.NoError(t, err)
		defer c.Close()
		resp, err := c.Delete(t.Context(), key)
		require.NoError(t, err)
		require.EqualValues(t, 1, resp.Deleted)
	}
}

func TestRenewalThatFindsTheLockTakenLosesTheLease(t *testing.T) {
	t.Parallel()
	forEachKind(t, sharedKinds, func(t *testing.T, e *env) {
		a, b := e.store(t), e.store(t)
		// A TTL far longer than the test: only the renewal's check can
		// end this lease.
		ttl := 30 * time.Second
		la, err := a.AcquireLease(t.Context(), "certificates/www", 3*time.Second)
		require.NoError(t, err)
		laLost := lost(t, la)
		deleteLockKey(t, e, "certificates/www")
		lb, err := b.AcquireLease(t.Context(), "certificates/www", ttl)
		require.NoError(t, err)
		defer lb.Release(t.Context())
		// The first renewal runs at a third of A's 3 s TTL.
		waitClosed(t, laLost, 2*time.Second, "a renewal that finds the lock taken marks the lease lost")
		require.ErrorIs(t, la.Err(), store.ErrLeaseLost)
		assert.Contains(t, la.Err().Error(), "taken")
	})
}

// redisACL is the least privilege the Redis backend needs, as the README
// gives it: its key prefix and the commands it sends (scripts run their
// commands under the same ACL).
var redisACL = []string{"~certfetch/*", "resetchannels", "-@all", "+@connection",
	"+get", "+set", "+del", "+sadd", "+srem", "+smembers", "+incr", "+pexpire", "+pttl", "+eval", "+evalsha"}

// useEverything runs every kind of operation the Store sends, holding a
// lease of ttl for one and a half TTLs so that renewals run too; st holds
// certificates/www.
func useEverything(t *testing.T, st *store.Store, ttl time.Duration) {
	t.Helper()
	ctx := t.Context()
	_, err := st.Certificates(ctx)
	require.NoError(t, err)
	_, err = st.CreateAccount(ctx, "r", &store.Account{Directory: "d"})
	require.NoError(t, err)
	l, err := st.AcquireLease(ctx, "certificates/www", ttl)
	require.NoError(t, err)
	var held *store.LeaseHeldError
	_, err = st.AcquireLease(ctx, "certificates/www", ttl)
	require.ErrorAs(t, err, &held, "a refused acquisition reads the holder's expiry too")
	assert.False(t, held.Expires.IsZero())
	select {
	case <-lost(t, l):
		t.Fatalf("renewals are refused: %v", l.Err())
	case <-time.After(ttl * 3 / 2): // renewals ran
	}
	lctx := fenced(t, l)
	require.NoError(t, st.Journal().Save(lctx, record("k", "u")))
	require.NoError(t, st.Journal().Delete(lctx, "k"))
	require.NoError(t, st.SaveCertificate(lctx, &store.Certificate{Name: "www"}))
	require.NoError(t, l.Release(ctx), "releasing (compare-and-delete, etcd lease revoke) is allowed too")
}

func TestRedisACLUserLimitedToThePrefix(t *testing.T) {
	t.Parallel()
	args := append([]string{"--user", "certfetch", "on", ">pw"}, redisACL...)
	_, addr := testservers.StartRedis(t, args...)
	tests := []struct {
		desc   string
		prefix string
		ok     bool
	}{
		{desc: "inside its prefix every operation works", prefix: "", ok: true},
		{desc: "outside its prefix the server refuses", prefix: "other/", ok: false},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			st, err := store.OpenRedis(t.Context(), kvclient.RedisOptions{Address: addr, Username: "certfetch", Password: secret.New("pw")},
				store.Options{Prefix: tc.prefix})
			require.NoError(t, err, "PING needs no key")
			defer st.Close()
			err = st.SaveCertificate(t.Context(), &store.Certificate{Name: "www"})
			if !tc.ok {
				require.Error(t, err)
				assert.Contains(t, err.Error(), "NOPERM")
				assert.NotErrorIs(t, err, kvclient.ErrUnavailable, "a refusal is not an outage")
				return
			}
			require.NoError(t, err)
			useEverything(t, st, 300*time.Millisecond)
		})
	}
}

// TestRedisACLWithoutPTTL: an ACL written for an older certfetch, without
// PTTL, still refuses a held lease as held; only its expiry is unknown.
func TestRedisACLWithoutPTTL(t *testing.T) {
	t.Parallel()
	acl := slices.DeleteFunc(slices.Clone(redisACL), func(c string) bool { return c == "+pttl" })
	_, addr := testservers.StartRedis(t, append([]string{"--user", "certfetch", "on", ">pw"}, acl...)...)
	st, err := store.OpenRedis(t.Context(), kvclient.RedisOptions{Address: addr, Username: "certfetch", Password: secret.New("pw")}, store.Options{})
	require.NoError(t, err)
	defer st.Close()
	l, err := st.AcquireLease(t.Context(), "certificates/www", time.Second)
	require.NoError(t, err)
	defer l.Release(t.Context())
	_, err = st.AcquireLease(t.Context(), "certificates/www", time.Second)
	var held *store.LeaseHeldError
	require.ErrorAs(t, err, &held)
	assert.True(t, held.Expires.IsZero())
}

func TestEtcdUserLimitedToThePrefix(t *testing.T) {
	t.Parallel()
	_, endpoint := testservers.StartEtcd(t)
	admin, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, Logger: zap.NewNop()})
	require.NoError(t, err)
	defer admin.Close()
	ctx := t.Context()
	// The README's recipe: a role with readwrite on the prefix, a user with
	// that role, auth enabled (which needs a root user first).
	_, err = admin.RoleAdd(ctx, "root")
	require.NoError(t, err)
	_, err = admin.UserAdd(ctx, "root", "rootpw")
	require.NoError(t, err)
	_, err = admin.UserGrantRole(ctx, "root", "root")
	require.NoError(t, err)
	_, err = admin.RoleAdd(ctx, "certfetch")
	require.NoError(t, err)
	_, err = admin.RoleGrantPermission(ctx, "certfetch", "certfetch/", clientv3.GetPrefixRangeEnd("certfetch/"),
		clientv3.PermissionType(clientv3.PermReadWrite))
	require.NoError(t, err)
	_, err = admin.UserAdd(ctx, "certfetch", "pw")
	require.NoError(t, err)
	_, err = admin.UserGrantRole(ctx, "certfetch", "certfetch")
	require.NoError(t, err)
	_, err = admin.AuthEnable(ctx)
	require.NoError(t, err)

	tests := []struct {
		desc     string
		prefix   string
		password string
		ok       bool
	}{
		{desc: "inside its prefix every operation works", ok: true, password: "pw"},
		{desc: "outside its prefix the server refuses", prefix: "other/", password: "pw"},
		{desc: "a wrong password is refused", password: "wrong-pw"},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			st, err := store.OpenEtcd(ctx, kvclient.EtcdOptions{Endpoints: []string{endpoint}, Username: "certfetch",
				Password: secret.New(tc.password), Timeout: 2 * time.Second}, store.Options{Prefix: tc.prefix})
			if !tc.ok {
				require.Error(t, err, "OpenEtcd reads the prefix")
				assert.NotErrorIs(t, err, kvclient.ErrUnavailable, "a refusal is not an outage")
				assert.NotContains(t, err.Error(), tc.password)
				return
			}
			require.NoError(t, err)
			defer st.Close()
			require.NoError(t, st.SaveCertificate(t.Context(), &store.Certificate{Name: "www"}))
			useEverything(t, st, time.Second)
		})
	}
}

func TestAcquireLeaseRejectsBadArguments(t *testing.T) {
	t.Parallel()
	st, err := store.Open(t.TempDir())
	require.NoError(t, err)
	tests := []struct {
		desc, name string
		ttl        time.Duration
		want       string
	}{
		{desc: "empty name", name: "", ttl: time.Second, want: "empty lock name"},
		{desc: "TTL too short to renew", name: "certificates/www", ttl: 99 * time.Millisecond, want: "shorter than 100ms"},
		{desc: "zero TTL", name: "certificates/www", ttl: 0, want: "shorter than"},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			l, err := st.AcquireLease(t.Context(), tc.name, tc.ttl)
			require.Error(t, err)
			assert.Nil(t, l)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}
