package output_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/certfetch/certfetch/fetcher/output"
	"github.com/certfetch/certfetch/internal/kvclient"
)

// backends runs each KV test against a real Redis and a real etcd.
var backends = []struct {
	desc  string
	start func(t *testing.T) kvServer
}{
	{desc: "redis", start: func(t *testing.T) kvServer { return startRedis(t, "") }},
	{desc: "etcd", start: func(t *testing.T) kvServer { return startEtcd(t) }},
}

// eachBackend runs test in parallel against a fresh Redis and a fresh etcd;
// store is "redis" or "etcd".
func eachBackend(t *testing.T, test func(t *testing.T, srv kvServer, store string)) {
	t.Helper()
	for _, b := range backends {
		t.Run(b.desc, func(t *testing.T) {
			t.Parallel()
			test(t, b.start(t), b.desc)
		})
	}
}

// pemPair is one certificate and key as published.
type pemPair struct{ cert, key string }

func newPEM(t testing.TB, cn string) pemPair {
	c, k := newPair(t, cn)
	return pemPair{cert: string(c), key: string(k)}
}

func publishPEM(t *testing.T, o output.Publisher, name string, p pemPair) {
	t.Helper()
	require.NoError(t, o.Publish(t.Context(), name, []byte(p.cert), []byte(p.key)))
}

// traefikKeys is the exact content the KV store must hold under rootKey for
// names (sorted) with pems, plus certfetch's index.
func traefikKeys(rootKey string, names []string, pems map[string]pemPair) map[string]string {
	out := map[string]string{}
	for i, n := range names {
		prefix := fmt.Sprintf("%s/tls/certificates/%d/", rootKey, i)
		out[prefix+"certFile"] = pems[n].cert
		out[prefix+"keyFile"] = pems[n].key
	}
	idx, _ := json.Marshal(struct {
		Version int      `json:"version"`
		Names   []string `json:"names"`
	}{1, names})
	out["_certfetch/"+rootKey+"/index"] = string(idx)
	return out
}

func TestKVPublishReplaceRemove(t *testing.T) {
	t.Parallel()
	for _, b := range backends {
		for _, rk := range []struct {
			desc, rootKey, want string
		}{
			{desc: "default rootKey", rootKey: "", want: "traefik"},
			{desc: "nested rootKey", rootKey: "edge/traefik", want: "edge/traefik"},
		} {
			t.Run(b.desc+"/"+rk.desc, func(t *testing.T) {
				t.Parallel()
				srv := b.start(t)
				// Configuration an operator keeps beside the certificates,
				// and a stray entry in the subtree certfetch owns.
				router := rk.want + "/http/routers/web/rule"
				srv.put(t, router, "Host(`example.com`)")
				srv.put(t, rk.want+"/tls/certificates/7/certFile", "stray")
				o := srv.newOutput(t, rk.rootKey)

				pems := map[string]pemPair{"a.example": newPEM(t, "a.example"), "b.example": newPEM(t, "b.example")}
				publishPEM(t, o, "b.example", pems["b.example"])
				publishPEM(t, o, "a.example", pems["a.example"])
				want := traefikKeys(rk.want, []string{"a.example", "b.example"}, pems)
				want[router] = "Host(`example.com`)"
				assert.Equal(t, want, srv.snapshot(t), "ordered by name; the stray entry is gone, the router kept")

				pems["b.example"] = newPEM(t, "b.example")
				publishPEM(t, o, "b.example", pems["b.example"])
				want = traefikKeys(rk.want, []string{"a.example", "b.example"}, pems)
				want[router] = "Host(`example.com`)"
				assert.Equal(t, want, srv.snapshot(t), "replaced in place")

				publishPEM(t, o, "b.example", pems["b.example"])
				assert.Equal(t, want, srv.snapshot(t), "republishing the same pair changes nothing")

				require.NoError(t, o.Remove(t.Context(), "a.example"))
				want = traefikKeys(rk.want, []string{"b.example"}, pems)
				want[router] = "Host(`example.com`)"
				assert.Equal(t, want, srv.snapshot(t), "b moves to 0, entry 1 is deleted")

				require.NoError(t, o.Remove(t.Context(), "never-published"))
				require.NoError(t, o.Remove(t.Context(), "b.example"))
				assert.Equal(t, map[string]string{router: "Host(`example.com`)", "_certfetch/" + rk.want + "/index": `{"version":1,"names":[]}`}, srv.snapshot(t))
				require.NoError(t, o.Prune(t.Context(), time.Now()))
			})
		}
	}
}

func TestKVPublishRejects(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, srv kvServer, store string) {
		o := srv.newOutput(t, "")
		a, other := newPEM(t, "a.example"), newPEM(t, "b.example")
		tests := []struct {
			desc, name string
			cert, key  string
			want       string
		}{
			{desc: "key of another certificate", name: "a", cert: a.cert, key: other.key, want: "private key does not match public key"},
			{desc: "not PEM", name: "a", cert: "x", key: "y", want: "failed to find any PEM data"},
			{desc: "path in the name", name: "../a", cert: a.cert, key: a.key, want: "invalid name"},
			{desc: "empty name", name: "", cert: a.cert, key: a.key, want: "invalid name"},
		}
		for _, tt := range tests {
			err := o.Publish(t.Context(), tt.name, []byte(tt.cert), []byte(tt.key))
			require.Error(t, err, tt.desc)
			assert.Contains(t, err.Error(), tt.want, tt.desc)
		}
		assert.Empty(t, srv.snapshot(t), "nothing written")
	})
}

// TestKVReaderSeesWholeLists publishes about 200 times from two goroutines,
// inserting and removing a name that sorts first (so every entry shifts) and
// replacing the others, while a reader takes atomic snapshots of the list as
// Traefik does. Every snapshot must be a list some publication wrote: the
// entries contiguous from 0, each certificate with its own key, names in
// order and matching the index. Writing the keys one by one fails this at
// once (a shift leaves a name twice, a replacement pairs a new certificate
// with the old key).
func TestKVReaderSeesWholeLists(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, srv kvServer, store string) {
		o := srv.newOutput(t, "")
		const rounds = 100 // per writer: 200 publications and removals
		steady := []string{"m1.example", "m2.example", "m3.example"}
		for _, n := range steady {
			publishPEM(t, o, n, newPEM(t, n))
		}
		// Certificates are made up front so the writers only publish.
		shifts := make([]pemPair, rounds)
		replaces := make([]pemPair, rounds)
		for i := range rounds {
			shifts[i] = newPEM(t, "a0.example")
			replaces[i] = newPEM(t, steady[i%len(steady)])
		}

		var keys []string
		for i := range len(steady) + 2 {
			keys = append(keys, fmt.Sprintf("traefik/tls/certificates/%d/certFile", i), fmt.Sprintf("traefik/tls/certificates/%d/keyFile", i))
		}
		keys = append(keys, "_certfetch/traefik/index")

		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		errs := make(chan error, 3)
		wg.Add(2)
		go func() {
			defer wg.Done()
			for i := range rounds {
				var err error
				if i%2 == 0 {
					err = o.Publish(t.Context(), "a0.example", []byte(shifts[i].cert), []byte(shifts[i].key))
				} else {
					err = o.Remove(t.Context(), "a0.example")
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
		go func() {
			defer wg.Done()
			for i := range rounds {
				p := replaces[i]
				if err := o.Publish(t.Context(), steady[i%len(steady)], []byte(p.cert), []byte(p.key)); err != nil {
					errs <- err
					return
				}
			}
		}()
		reads := 0
		readerDone := make(chan struct{})
		go func() {
			defer close(readerDone)
			for ctx.Err() == nil {
				snap, err := srv.readAtomically(ctx, keys)
				if ctx.Err() != nil {
					return
				}
				if err == nil {
					err = checkList(snap)
				}
				if err != nil {
					errs <- err
					return
				}
				reads++
			}
		}()
		wg.Wait()
		cancel()
		<-readerDone
		close(errs)
		for err := range errs {
			require.NoError(t, err)
		}
		assert.Greater(t, reads, 20, "the reader must overlap the publications")
		t.Logf("%d atomic reads during %d publications", reads, 2*rounds)
	})
}

// checkList validates one snapshot of the default rootKey's list.
func checkList(snap map[string]string) error {
	var idx struct{ Names []string }
	if err := json.Unmarshal([]byte(snap["_certfetch/traefik/index"]), &idx); err != nil {
		return fmt.Errorf("index: %w", err)
	}
	n := 0
	for ; ; n++ {
		c, okc := snap[fmt.Sprintf("traefik/tls/certificates/%d/certFile", n)]
		k, okk := snap[fmt.Sprintf("traefik/tls/certificates/%d/keyFile", n)]
		if !okc && !okk {
			break
		}
		if okc != okk {
			return fmt.Errorf("entry %d has only one of certFile and keyFile", n)
		}
		pair, err := tls.X509KeyPair([]byte(c), []byte(k))
		if err != nil {
			return fmt.Errorf("entry %d: %w", n, err)
		}
		leaf, err := x509.ParseCertificate(pair.Certificate[0])
		if err != nil {
			return err
		}
		if n >= len(idx.Names) || leaf.Subject.CommonName != idx.Names[n] {
			return fmt.Errorf("entry %d holds %s, the index says %v", n, leaf.Subject.CommonName, idx.Names)
		}
	}
	for key := range snap {
		if strings.HasPrefix(key, "traefik/tls/certificates/") {
			i, _ := strconv.Atoi(strings.Split(key, "/")[3])
			if i >= n {
				return fmt.Errorf("hole in the list: %s after %d entries", key, n)
			}
		}
	}
	if n != len(idx.Names) {
		return fmt.Errorf("%d entries, index %v", n, idx.Names)
	}
	for i := 1; i < n; i++ {
		if idx.Names[i-1] >= idx.Names[i] {
			return fmt.Errorf("not ordered by name: %v", idx.Names)
		}
	}
	return nil
}

// TestKVNewPublisherKeepsPublished: a restarted certfetch (a new publisher
// on the same store) recovers the published list from the store, so
// publishing one new certificate keeps the others.
func TestKVNewPublisherKeepsPublished(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, srv kvServer, store string) {
		pems := map[string]pemPair{"a": newPEM(t, "a"), "b": newPEM(t, "b"), "c": newPEM(t, "c")}
		first := srv.newOutput(t, "")
		publishPEM(t, first, "c", pems["c"])
		publishPEM(t, first, "a", pems["a"])
		require.NoError(t, first.Close())

		second := srv.newOutput(t, "")
		publishPEM(t, second, "b", pems["b"])
		assert.Equal(t, traefikKeys("traefik", []string{"a", "b", "c"}, pems), srv.snapshot(t))
		require.NoError(t, second.Remove(t.Context(), "a"))
		assert.Equal(t, traefikKeys("traefik", []string{"b", "c"}, pems), srv.snapshot(t))
	})
}

// TestKVTwoPublishersLoseNothing: two publishers on one store (two certfetch
// instances) publish at the same time; the optimistic transactions make
// every publication survive. A publication that still fails with
// ErrConflict is retried, as the daemon's next pass would.
func TestKVTwoPublishersLoseNothing(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, srv kvServer, store string) {
		const perWriter = 15
		pems := map[string]pemPair{}
		var names [2][]string
		for w := range 2 {
			for i := range perWriter {
				n := fmt.Sprintf("w%d-%02d", w, i)
				pems[n] = newPEM(t, n)
				names[w] = append(names[w], n)
			}
		}
		var wg sync.WaitGroup
		errs := make(chan error, 2)
		for w := range 2 {
			o := srv.newOutput(t, "")
			wg.Add(1)
			go func() {
				defer wg.Done()
				for _, n := range names[w] {
					var err error
					for range 20 {
						if err = o.Publish(t.Context(), n, []byte(pems[n].cert), []byte(pems[n].key)); !errors.Is(err, output.ErrConflict) {
							break
						}
					}
					if err != nil {
						errs <- err
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			require.NoError(t, err)
		}
		all := append(append([]string{}, names[0]...), names[1]...)
		assert.Equal(t, traefikKeys("traefik", all, pems), srv.snapshot(t))
	})
}

// TestKVServerDownThenBack: with the server stopped a publication fails
// with a *KVError wrapping ErrUnavailable; once the same server (same data)
// is back, publishing works and the earlier certificates are still there.
func TestKVServerDownThenBack(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, srv kvServer, store string) {
		o := srv.newOutput(t, "")
		pems := map[string]pemPair{"a": newPEM(t, "a"), "b": newPEM(t, "b")}
		publishPEM(t, o, "a", pems["a"])

		srv.stop(t)
		start := time.Now()
		err := o.Publish(t.Context(), "b", []byte(pems["b"].cert), []byte(pems["b"].key))
		require.ErrorIs(t, err, kvclient.ErrUnavailable)
		assert.Less(t, time.Since(start), 3*testTimeout, "bounded by the timeout")
		var kerr *output.KVError
		require.ErrorAs(t, err, &kerr)
		assert.Equal(t, store, kerr.Store)
		assert.Equal(t, "publish", kerr.Op)
		assert.Equal(t, "b", kerr.Name)
		assert.Contains(t, err.Error(), `publish certificate "b" to `+store+" ")
		require.ErrorIs(t, o.Remove(t.Context(), "a"), kvclient.ErrUnavailable)

		// go-redis stops dialling after repeated failures and probes
		// once a second; the daemon's retry covers that, the test
		// polls the same way.
		srv.start(t)
		require.NoError(t, eventually(func() error { return o.Publish(t.Context(), "b", []byte(pems["b"].cert), []byte(pems["b"].key)) }))
		assert.Equal(t, traefikKeys("traefik", []string{"a", "b"}, pems), srv.snapshot(t))
	})
}

func TestKVClosed(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, srv kvServer, store string) {
		o := srv.newOutput(t, "")
		require.NoError(t, o.Close())
		require.NoError(t, o.Close(), "closing twice is harmless")
		a := newPEM(t, "a")
		require.ErrorIs(t, o.Publish(t.Context(), "a", []byte(a.cert), []byte(a.key)), output.ErrClosed)
	})
}

// TestKVCorruptIndex: an index certfetch did not write stops publication
// without touching the list.
func TestKVCorruptIndex(t *testing.T) {
	t.Parallel()
	eachBackend(t, func(t *testing.T, srv kvServer, store string) {
		srv.put(t, "_certfetch/traefik/index", "not json")
		o := srv.newOutput(t, "")
		a := newPEM(t, "a")
		err := o.Publish(t.Context(), "a", []byte(a.cert), []byte(a.key))
		require.ErrorIs(t, err, output.ErrCorruptIndex)
		assert.Contains(t, err.Error(), "_certfetch/traefik/index")
		assert.Equal(t, map[string]string{"_certfetch/traefik/index": "not json"}, srv.snapshot(t))
	})
}

// TestKVPassword: the password reaches the store, a wrong one fails with
// an error that is not "unreachable" and does not contain it, and a
// publisher made while the store is down (etcd authenticates when it
// connects) fails as unreachable, then works once the store is back, as
// does a publisher that authenticated before the restart.
func TestKVPassword(t *testing.T) {
	t.Parallel()
	const password = "s3cret-pw"
	tests := []struct {
		desc    string
		start   func(t *testing.T) kvServer
		refusal string // in the error for a wrong password
	}{
		{desc: "redis", start: func(t *testing.T) kvServer { return startRedis(t, password) }, refusal: "WRONGPASS"},
		{desc: "etcd", start: func(t *testing.T) kvServer {
			srv := startEtcd(t)
			srv.enableAuth(t, password)
			return srv
		}, refusal: "authentication failed"},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			t.Parallel()
			srv := tt.start(t)
			a, b, c := newPEM(t, "a"), newPEM(t, "b"), newPEM(t, "c")
			o := srv.newOutput(t, "")
			publishPEM(t, o, "a", a)

			srv.setPassword("wrong-" + password)
			err := srv.newOutput(t, "").Publish(t.Context(), "a", []byte(a.cert), []byte(a.key))
			require.Error(t, err)
			assert.NotErrorIs(t, err, kvclient.ErrUnavailable)
			assert.NotContains(t, err.Error(), password)
			assert.Contains(t, err.Error(), tt.refusal)
			srv.setPassword(password)

			srv.stop(t)
			late := srv.newOutput(t, "")
			require.ErrorIs(t, late.Publish(t.Context(), "b", []byte(b.cert), []byte(b.key)), kvclient.ErrUnavailable)
			srv.start(t)
			// go-redis probes a failed server once a second, and an etcd
			// client that authenticated before the restart times out once
			// on its stale token (see kvclient.Etcd): one unreachable failure
			// is allowed, as the daemon retries.
			for _, pub := range []struct {
				o    *output.KVOutput
				name string
				p    pemPair
			}{{late, "b", b}, {o, "c", c}} {
				err := eventually(func() error { return pub.o.Publish(t.Context(), pub.name, []byte(pub.p.cert), []byte(pub.p.key)) })
				require.NoError(t, err)
			}
			assert.Equal(t, traefikKeys("traefik", []string{"a", "b", "c"}, map[string]pemPair{"a": a, "b": b, "c": c}), srv.snapshot(t))
		})
	}
}

// eventually retries fn while it fails with ErrUnavailable, for at most
// ten seconds, and returns its last error.
func eventually(fn func() error) error {
	deadline := time.Now().Add(10 * time.Second)
	err := fn()
	for errors.Is(err, kvclient.ErrUnavailable) && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		err = fn()
	}
	return err
}
