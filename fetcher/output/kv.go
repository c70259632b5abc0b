package output

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/certfetch/certfetch/internal/kvclient"
)

// KV outputs (Redis, etcd) write the layout Traefik's KV providers read:
//
//	<rootKey>/tls/certificates/<i>/certFile   the certificate chain, inline PEM
//	<rootKey>/tls/certificates/<i>/keyFile    its private key, inline PEM
//
// Traefik takes a certFile/keyFile value that is not an existing path as PEM
// content, so no file has to reach the Traefik nodes. Traefik decodes
// tls.certificates as a list, so an entry has no name, only a position: the
// certificates are ordered by certfetch name, which keeps positions stable
// while the set of names does not change.
//
// certfetch owns <rootKey>/tls/certificates/: every publication rewrites that
// subtree as a whole, and keys there that it did not write are deleted. Other
// keys under <rootKey> (routers, services, tls options) are never touched.
//
// The whole list is replaced in one transaction (Redis MULTI/EXEC under
// WATCH, one etcd Txn guarded by revisions), because a Traefik node reloads
// its configuration from whatever it lists after a change notification: a
// list written key by key could pair one certificate with another's key or
// hold a name twice while entries shift after an insertion.
//
// # The index
//
// Positions alone do not say which name a certificate belongs to, and the
// publisher must know every published name to rewrite the list when one name
// changes: after a restart it must keep the certificates it has not
// republished yet. The names live in the store itself, in one JSON document
//
//	_certfetch/<rootKey>/index   {"version":1,"names":["a.example","b.example"]}
//
// where names[i] is the certificate at position i. It is written in the same
// transaction as the list, so names and positions always agree, and every
// transaction reads it afresh: the store is the only source of truth, nothing
// is cached in the process, and a new publisher (or a second certfetch
// instance) on the same store continues from what is published.
//
// One document rather than a key per name: a transaction must read and guard
// the exact set of names, and both stores can guard a single key cheaply
// (Redis WATCH takes keys, not prefixes; etcd compares one revision), while a
// key per name would need a prefix scan whose result Redis cannot watch.
//
// The index lives outside every key range Traefik reads. Traefik's Redis
// provider lists and watches every key that starts with rootKey (SCAN
// "<rootKey>*", keyspace events "__keyspace*:<rootKey>*") and its etcd
// provider the prefix "<rootKey>"; a key such as "<rootKey>-certfetch/index"
// would be read on every reload and would rely on Traefik's decoder dropping
// keys outside "<rootKey>/{http,tcp,udp,tls}" (Traefik v3.6.12 does, checked
// here). "_certfetch/" cannot start with a rootKey, which must begin with a
// letter or digit (the config package enforces it), so Traefik never sees
// it.

// DefaultRootKey is Traefik's default providers.redis/etcd rootKey, so that
// the two sides agree when neither is set.
const DefaultRootKey = "traefik"

// indexPrefix starts every certfetch bookkeeping key; see the comment above.
const indexPrefix = "_certfetch/"

// indexVersion is the index document's format version.
const indexVersion = 1

// maxAttempts bounds the optimistic transaction attempts of one publication.
// Within one process publications are serialised by a mutex, so a conflict
// means another writer (a second certfetch instance, an operator) changed the
// index or the list between our read and our write. A handful of attempts
// rides over such bursts; past them the publication fails with ErrConflict
// instead of spinning, the certificate stays stored and marked unpublished,
// and the daemon's next pass publishes it again.
const maxAttempts = 8

// Errors a KV publication wraps (test with errors.Is), besides
// kvclient.ErrUnavailable: the store could not be reached or did not answer
// within the timeout, nothing was changed, publish again later.
var (
	// ErrConflict means other writers changed the store during every
	// attempt (see maxAttempts). Nothing was changed; publish again later.
	ErrConflict = errors.New("store changed concurrently on every attempt")
	// ErrCorruptIndex means the index document is not one certfetch wrote.
	// Nothing was changed: an operator must look at it (deleting it makes
	// the next publication rewrite the list from scratch).
	ErrCorruptIndex = errors.New("index document is not certfetch's")
	// ErrClosed means Close was called.
	ErrClosed = errors.New("output closed")
)

// KVError is the error of a KV publication or removal. Err wraps one of the
// sentinel errors above (or kvclient.ErrUnavailable) where one applies, and
// the cause. No field ever holds
// a password or key material.
type KVError struct {
	Store    string // "redis" or "etcd"
	Endpoint string // address or comma-separated endpoints
	Op       string // "publish" or "remove"
	Name     string // certificate name
	Err      error
}

// Error renders `publish certificate "name" to redis 127.0.0.1:6379: cause`.
func (e *KVError) Error() string {
	prep := "to"
	if e.Op == "remove" || e.Op == "read" {
		prep = "from"
	}
	return fmt.Sprintf("%s certificate %q %s %s %s: %v", e.Op, e.Name, prep, e.Store, e.Endpoint, e.Err)
}

// Unwrap returns the cause.
func (e *KVError) Unwrap() error { return e.Err }

// kvPair is one published certificate.
type kvPair struct {
	Cert, Key string
}

// kvIndex is the index document.
type kvIndex struct {
	Version int      `json:"version"`
	Names   []string `json:"names"`
}

// kvLayout names the keys for one rootKey.
type kvLayout struct {
	root string
}

// certsPrefix is the subtree certfetch owns.
func (l kvLayout) certsPrefix() string { return l.root + "/tls/certificates/" }
func (l kvLayout) certKey(i int) string {
	return l.certsPrefix() + strconv.Itoa(i) + "/certFile"
}
func (l kvLayout) keyKey(i int) string { return l.certsPrefix() + strconv.Itoa(i) + "/keyFile" }
func (l kvLayout) indexKey() string    { return indexPrefix + l.root + "/index" }
func (l kvLayout) indexKeys(n int) []string {
	keys := make([]string, 0, 2*n)
	for i := range n {
		keys = append(keys, l.certKey(i), l.keyKey(i))
	}
	return keys
}

// decodeIndex parses the index document; nil or empty data is an empty index.
func decodeIndex(data []byte) ([]string, error) {
	if len(data) == 0 {
		return nil, nil
	}
	var idx kvIndex
	if err := json.Unmarshal(data, &idx); err != nil || idx.Version != indexVersion {
		return nil, ErrCorruptIndex
	}
	return idx.Names, nil
}

// recoverPublished rebuilds name → pair from the index names and the values
// read from the list (values holds every key read, missing keys absent). A
// name whose two keys are not both present is not published (an operator
// deleted it) and is dropped; the next write repairs the list.
func (l kvLayout) recoverPublished(names []string, values map[string]string) map[string]kvPair {
	out := make(map[string]kvPair, len(names))
	for i, name := range names {
		c, okc := values[l.certKey(i)]
		k, okk := values[l.keyKey(i)]
		if okc && okk {
			out[name] = kvPair{Cert: c, Key: k}
		}
	}
	return out
}

// kvPlan is the writes of one transaction.
type kvPlan struct {
	puts  map[string]string // key → value; only values that differ
	dels  []string          // keys of the old list beyond the new one, and strays
	index []byte            // the new index document
}

// plan computes the writes that turn the list whose keys and values are
// current into the list of published, ordered by name. current holds every
// key under certsPrefix that the transaction read.
func (l kvLayout) plan(current map[string]string, published map[string]kvPair) kvPlan {
	names := make([]string, 0, len(published))
	for name := range published {
		names = append(names, name)
	}
	sort.Strings(names)
	p := kvPlan{puts: map[string]string{}}
	want := make(map[string]bool, 2*len(names))
	for i, name := range names {
		pair := published[name]
		for key, value := range map[string]string{l.certKey(i): pair.Cert, l.keyKey(i): pair.Key} {
			want[key] = true
			if old, ok := current[key]; !ok || old != value {
				p.puts[key] = value
			}
		}
	}
	for key := range current {
		if !want[key] {
			p.dels = append(p.dels, key)
		}
	}
	sort.Strings(p.dels)
	p.index, _ = json.Marshal(kvIndex{Version: indexVersion, Names: names}) // cannot fail for strings
	return p
}

// kvChange edits the published set in place and reports whether it changed.
type kvChange func(published map[string]kvPair) bool

// kvBackend runs one optimistic transaction attempt against a store.
type kvBackend interface {
	// attempt reads the index and the list in one consistent view, calls
	// change on the recovered set and, when it reports a change, writes
	// the plan in one transaction guarded by what was read. It returns
	// errConflict when the guard failed, and whether it wrote.
	attempt(ctx context.Context, l kvLayout, change kvChange) (wrote bool, err error)
	close() error
}

// errConflict is an attempt's guard failure; retried, then ErrConflict.
var errConflict = errors.New("guard failed")

// KVOutput publishes certificates to Redis or etcd for Traefik's KV
// providers (see the layout above). It is safe for concurrent use:
// publications are serialised within the process and guarded by optimistic
// transactions against other writers.
type KVOutput struct {
	store    string
	endpoint string
	layout   kvLayout
	logger   *slog.Logger
	backend  kvBackend

	mu     sync.Mutex
	closed bool
}

var _ PublishCloser = (*KVOutput)(nil)

// KVOptions are what a KV output adds to the connection.
type KVOptions struct {
	// RootKey is Traefik's providers.redis/etcd rootKey; "" means
	// DefaultRootKey.
	RootKey string
	// Logger receives one line per change; nil means slog.Default().
	Logger *slog.Logger
}

// newKVOutput applies the defaults of o; err is the client's construction
// error.
func newKVOutput(store, endpoint string, o KVOptions, b kvBackend, err error) (*KVOutput, error) {
	if err != nil {
		return nil, fmt.Errorf("%s output: %w", store, err)
	}
	if o.RootKey == "" {
		o.RootKey = DefaultRootKey
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return &KVOutput{store: store, endpoint: endpoint, layout: kvLayout{root: o.RootKey}, logger: o.Logger, backend: b}, nil
}

// NewRedisOutput returns a KVOutput writing to the Redis server conn names
// (the one Traefik's providers.redis.endpoints names). It does not connect:
// the first publication does, so that certfetch starts (and keeps its
// certificates stored) while Redis is down.
//
// Each publication is one MULTI/EXEC under WATCH: the index key, then every
// key of the list, are watched before they are read, so EXEC applies the
// whole new list only if no other client changed what it was computed from
// (Redis has no multi-key compare-and-set otherwise, and MULTI/EXEC alone
// would not notice a concurrent writer). Traefik's Redis provider re-reads
// the list with SCAN then one MGET after each keyspace notification; MGET
// is atomic against EXEC, so a node never loads a certificate with another
// one's key.
func NewRedisOutput(conn kvclient.RedisOptions, o KVOptions) (*KVOutput, error) {
	c, err := kvclient.NewRedis(conn)
	return newKVOutput("redis", conn.Address, o, redisBackend{c}, err)
}

// NewEtcdOutput returns a KVOutput writing to the etcd cluster conn names.
// Like NewRedisOutput it does not contact the cluster: the first publication
// connects (and authenticates), so certfetch starts while etcd is down.
//
// Each publication reads the index and the list at one revision R, then
// commits one Txn whose guard is "the index's ModRevision is what was read
// (or it does not exist) and no key of the list changed after R": etcd
// applies the puts and deletes all together or not at all, and Traefik's
// etcd provider lists the prefix in one range read at one revision, so a
// node sees the old list or the new one.
//
// etcd bounds the operations of one Txn (--max-txn-ops, 128 by default).
// Only changed values are written, but inserting a name shifts every entry
// after it: one Txn of up to 2n+1 operations for n certificates, so raise
// --max-txn-ops above twice the certificate count beyond about 60
// certificates (and --max-request-bytes, 1.5 MiB by default, beyond a few
// hundred).
func NewEtcdOutput(conn kvclient.EtcdOptions, o KVOptions) (*KVOutput, error) {
	c, err := kvclient.NewEtcd(conn)
	return newKVOutput("etcd", strings.Join(conn.Endpoints, ","), o, etcdBackend{c}, err)
}

// Publish implements Publisher: the certificate list under rootKey gains or
// replaces name's entry, in one transaction. Publishing the pair already
// published writes nothing. On failure the error is a *KVError wrapping
// kvclient.ErrUnavailable, ErrConflict, ctx's error or the store's error;
// the list is the old one, or (when the reply to the commit was lost) the
// new one, never a mix.
func (o *KVOutput) Publish(ctx context.Context, name string, certPEM, keyPEM []byte) error {
	if err := checkPublication(name, certPEM, keyPEM); err != nil {
		return err
	}
	next := kvPair{Cert: string(certPEM), Key: string(keyPEM)}
	var older error
	err := o.update(ctx, "publish", name, func(published map[string]kvPair) bool {
		older = checkNotOlder(name, []byte(published[name].Cert), certPEM)
		if older != nil || published[name] == next {
			return false
		}
		published[name] = next
		return true
	})
	if err != nil {
		return err
	}
	return older
}

// Published implements Publisher: name's entry of the list.
func (o *KVOutput) Published(ctx context.Context, name string) ([]byte, error) {
	published, err := o.read(ctx, name)
	if err != nil || published[name].Cert == "" {
		return nil, err
	}
	return []byte(published[name].Cert), nil
}

// Names implements Publisher: the names in the index.
func (o *KVOutput) Names(ctx context.Context) ([]string, error) {
	published, err := o.read(ctx, "(all)")
	if err != nil {
		return nil, err
	}
	return slices.Sorted(maps.Keys(published)), nil
}

// read returns what is published, in one consistent view of the index and the list
// (a transaction attempt that writes nothing).
func (o *KVOutput) read(ctx context.Context, name string) (map[string]kvPair, error) {
	var snapshot map[string]kvPair
	err := o.update(ctx, "read", name, func(published map[string]kvPair) bool {
		snapshot = maps.Clone(published)
		return false
	})
	return snapshot, err
}

// Remove implements Publisher: name's entry leaves the list, the entries
// after it move up one position, in one transaction.
func (o *KVOutput) Remove(ctx context.Context, name string) error {
	return o.update(ctx, "remove", name, func(published map[string]kvPair) bool {
		if _, ok := published[name]; !ok {
			return false
		}
		delete(published, name)
		return true
	})
}

// Prune implements Publisher. It does nothing: a KV publication supersedes
// the old values in the same transaction, nothing is left behind.
func (o *KVOutput) Prune(context.Context, time.Time) error { return nil }

// Close releases the connections. Publish and Remove fail with ErrClosed
// afterwards.
func (o *KVOutput) Close() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return nil
	}
	o.closed = true
	if err := o.backend.close(); err != nil {
		return fmt.Errorf("close %s output %s: %w", o.store, o.endpoint, err)
	}
	return nil
}

// update runs change in up to maxAttempts transactions, with a short
// jittered pause between attempts so that two conflicting writers do not
// retry in lockstep. ctx bounds the whole of it, pauses included; each
// request is also bounded by the connection's timeout.
func (o *KVOutput) update(ctx context.Context, op, name string, change kvChange) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	fail := func(err error) error {
		return &KVError{Store: o.store, Endpoint: o.endpoint, Op: op, Name: name, Err: err}
	}
	if o.closed {
		return fail(ErrClosed)
	}
	for attempt := 1; ; attempt++ {
		wrote, err := o.backend.attempt(ctx, o.layout, change)
		switch {
		case err == nil:
			if wrote {
				o.logger.Info(map[string]string{"publish": "certificate published", "remove": "certificate removed"}[op], "name", name, "output", o.store, "endpoint", o.endpoint, "rootKey", o.layout.root)
			}
			return nil
		case errors.Is(err, errConflict):
			if attempt == maxAttempts {
				return fail(fmt.Errorf("%w (%d attempts)", ErrConflict, attempt))
			}
			o.logger.Debug("KV transaction conflict, retrying", "name", name, "output", o.store, "attempt", attempt)
			select {
			case <-ctx.Done():
				return fail(fmt.Errorf("retry after a conflict: %w", ctx.Err()))
			case <-time.After(time.Duration(attempt)*10*time.Millisecond + rand.N(10*time.Millisecond)):
			}
		case errors.Is(err, ErrCorruptIndex):
			return fail(fmt.Errorf("%w (%s)", err, o.layout.indexKey()))
		default:
			return fail(err)
		}
	}
}
