// Package store keeps certfetch's private state: ACME accounts, the order
// journal (acme.Journal) and issued certificates. It sits on one of three
// backends with the same record layout:
//
//	accounts/<resolver>-<ca>   ACME account key and URL
//	orders/<request key>       the order journal (acme.Record)
//	certificates/<name>        issued certificate, key and schedule
//	requests/<name>            an operator's request (renew --force, revoke)
//	revoked/<sha256>           a certificate revoked at the CA, never published again
//
// The file backend (Open) keeps them in a directory on the local file
// system:
//
//	<dir>/                       0700
//	  lock                       LockDirectory: held by `certfetch run` and `once`; the holder's PID
//	  accounts/<name>.json       0600
//	  orders/<key>.json          0600
//	  certificates/<name>.json   0600
//	  requests/<name>.json       0600 an operator's request to the daemon (CreateRequest)
//	  revoked/<sha256>.json      0600 certificates revoked at the CA (RecordRevocation)
//
// Every write is atomic (temp file, fsync, rename, fsync dir): a crash leaves
// the old record or the new one. Records hold private keys; the files are
// readable by certfetch's user only.
//
// The Redis (OpenRedis) and etcd (OpenEtcd) backends keep the same records
// as JSON values under a key prefix ("certfetch/" by default), so that several
// certfetch instances share one state: they divide the certificates between
// them with per-certificate leases (AcquireLease) and any of them reads the
// status of all. Locks live beside the records: <prefix>locks/<name> (and, on
// Redis, the fencing counters <prefix>fence/<name> and the directory
// indexes <prefix>index/<dir>).
//
// Private keys at rest (account keys, certificate keys, the keys of orders
// in flight) are PEM inside the JSON records, not encrypted by certfetch:
//   - file: readable by certfetch's user only (files 0600, directories
//     0700), and by root; backups and disk images carry them in clear.
//   - Redis and etcd: protected only by the server. Anyone who can read the
//     prefix (a Redis ACL user with access to its keys, an etcd user with a
//     read role on the prefix, the server's operators, its dump/AOF/snapshot
//     files and backups) can read every key. Give certfetch its own user
//     restricted to the prefix (Redis: ACL "~certfetch/*" with the commands
//     it uses, including EVALSHA/EVAL; etcd: a role with readwrite on the
//     prefix), use TLS (the kvclient options' TLS) so keys do
//     not cross the network in clear, and protect the server's data
//     directory and backups like the keys themselves.
//
// Durability: a file write is on disk when it returns. A Redis write is as
// durable as the server's persistence (appendonly yes with appendfsync
// always or everysec is recommended; replication is asynchronous, so a
// failover can lose the latest writes, locks included). An etcd write is
// committed by a Raft majority when it returns.
//
// A Store is safe for concurrent use by goroutines that work on distinct
// names and keys. Two goroutines (or instances) writing the same record must
// hold its certificate's lease (AcquireLease) and write with its context
// (Lease.Context). Every method is bounded by its ctx; on Redis and etcd
// also by the connection's timeout (kvclient).
package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/certfetch/certfetch/acme"
)

// ErrNotFound is returned (wrapped) when a record does not exist.
var ErrNotFound = errors.New("not found")

// ErrDirectoryLocked is returned (wrapped) by LockDirectory when another
// certfetch process holds the state directory.
var ErrDirectoryLocked = errors.New("another certfetch process holds the state directory")

// ErrLeaseHeld is returned (wrapped) by AcquireLease when another holder
// has the lease; errors.As then finds a *LeaseHeldError saying who and until
// when.
var ErrLeaseHeld = errors.New("lease held by another holder")

// ErrLeaseLost is returned (wrapped) by a write made under a lease
// (Lease.Context) that no longer holds its lock: it expired, was released,
// or another instance took the lock. The write did not happen.
var ErrLeaseLost = errors.New("lease lost: the lock is no longer held, another instance may hold it")

const (
	dirMode    os.FileMode = 0o700
	recordMode os.FileMode = 0o600

	accountsDir     = "accounts"
	ordersDir       = "orders"
	certificatesDir = "certificates"
	requestsDir     = "requests"
	revokedDir      = "revoked"
	lockFile        = "lock"
)

// Store is certfetch's state on one backend.
type Store struct {
	dir string // file backend only
	b   backend
}

// Open creates dir and its subdirectories (mode 0700) when missing and
// returns the Store on the file backend. It does not lock the directory
// (LockDirectory).
func Open(dir string) (*Store, error) {
	b, err := openFile(dir)
	if err != nil {
		return nil, err
	}
	return &Store{dir: dir, b: b}, nil
}

// String names the backend and where it keeps the records, for logs and
// status output. It never contains credentials.
func (s *Store) String() string { return s.b.String() }

// Close releases the backend's connections. Leases still held stop being
// renewed and expire on the server after their TTL; their contexts end then.
// A closed Store must not be used.
func (s *Store) Close() error { return s.b.Close() }

// LockDirectory takes an exclusive, non-blocking lock on the state
// directory, so that `run` and `once` (say, a daemon and a timer left enabled
// by mistake) never work on the same orders at once. The lock is released by
// the returned function or when the process dies. It returns an error
// wrapping ErrDirectoryLocked when another process holds it.
//
// The holder writes its PID into the lock file, so that `certfetch renew`
// and `revoke` can ask a running daemon to do the work (DirectoryHolder).
//
// On the Redis and etcd backends LockDirectory does nothing and always
// succeeds: instances are meant to share those stores and coordinate per
// certificate with AcquireLease.
func (s *Store) LockDirectory() (unlock func() error, err error) {
	if s.dir == "" {
		return func() error { return nil }, nil
	}
	path := filepath.Join(s.dir, lockFile)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, recordMode)
	if err != nil {
		return nil, fmt.Errorf("lock state directory %s: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("lock state directory %s: %w", path, ErrDirectoryLocked)
		}
		return nil, fmt.Errorf("lock state directory %s: %w", path, err)
	}
	if err := writeHolder(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock state directory %s: %w", path, err)
	}
	return f.Close, nil
}

// CheckWritable reports whether the store takes writes now: the daemon checks it before
// it places an order (an order it could not journal would be lost), and `certfetch
// status` shows it (the daemon cannot record in the store that the store refuses its
// writes). On the file backend it creates, writes, syncs and removes a probe file in
// certificates/ and orders/, so that an immutable directory, a read-only mount or a full
// disk shows; permissions are those of the calling process. On Redis and etcd it
// returns nil: they refuse writes only when they cannot be reached, which their reads
// show too. Safe for concurrent use.
func (s *Store) CheckWritable(ctx context.Context) error {
	if s.dir == "" {
		return nil
	}
	for _, dir := range []string{certificatesDir, ordersDir} {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := probeWrite(filepath.Join(s.dir, dir)); err != nil {
			return err
		}
	}
	return nil
}

// probeWrite writes a file in dir and removes it. Its name starts with a dot, like the
// temporary files of atomic writes: List never reports it as a record.
func probeWrite(dir string) error {
	f, err := os.CreateTemp(dir, ".writable-probe-*")
	if err != nil {
		return fmt.Errorf("write in %s: %w", dir, err)
	}
	defer os.Remove(f.Name()) //nolint:errcheck // best effort; a leftover is a hidden file
	_, err = f.Write([]byte("certfetch checks that the store takes writes\n"))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", f.Name(), err)
	}
	return nil
}

// minLeaseTTL is the shortest TTL AcquireLease accepts: a lease is renewed
// every TTL/3, and a third of 100 ms is about the least that still leaves
// room for a round trip to a server on the same network.
const minLeaseTTL = 100 * time.Millisecond

// AcquireLease takes the lease called name without waiting (certfetch names
// certificate leases "certificates/<name>"). When another holder has it, it
// returns an error wrapping ErrLeaseHeld, with a *LeaseHeldError naming the
// holder and when its lease runs out; when the backend cannot be reached, an
// error wrapping kvclient.ErrUnavailable.
//
// The lease expires ttl after its last renewal unless renewed; it is renewed
// in the background until Release, and lost (see Lease) when a renewal finds
// the lock gone or taken, or cannot reach the server before the lease would
// expire. ttl must be at least 100 ms; certfetch's daemon wants tens of
// seconds (a dead instance's certificates wait that long for another
// instance). Every lease of a name gets a higher Token than the leases
// before it. On the file backend the lease is held in this process's memory
// (the directory is already reserved for one process by LockDirectory) and
// never expires; ttl is ignored there.
//
// An AcquireLease that fails with kvclient.ErrUnavailable may still have
// taken the lock on the server (the reply was lost); the lock then expires
// after ttl.
func (s *Store) AcquireLease(ctx context.Context, name string, ttl time.Duration) (*Lease, error) {
	if name == "" {
		return nil, errors.New("acquire lease: empty lock name")
	}
	if ttl < minLeaseTTL {
		return nil, fmt.Errorf("acquire lease %s: ttl %s is shorter than %s", name, ttl, minLeaseTTL)
	}
	return s.b.Acquire(ctx, name, ttl)
}

func (s *Store) read(ctx context.Context, dir, name string, v any) error {
	key := dir + "/" + name
	data, err := s.b.Get(ctx, key)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(data, v); err != nil {
		return &CorruptError{Key: key, Where: s.b.Locate(key), Raw: data, Err: err}
	}
	return nil
}

// CorruptError is the error of a record that exists but cannot be decoded: written by
// something else, edited by hand, or torn by a tool that does not write atomically
// (certfetch's own writes are atomic). Raw is its content, for Quarantine.
type CorruptError struct {
	// Key is the record's key, such as "certificates/www.example.com".
	Key string
	// Where names the record's place: its file, or the key on its server.
	Where string
	Raw   []byte
	Err   error
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("decode %s: %v", e.Where, e.Err)
}

// Locate names where key ("certificates/<name>") is kept, for messages: a file's path,
// or the key on its server.
func (s *Store) Locate(key string) string { return s.b.Locate(key) }

func (e *CorruptError) Unwrap() error { return e.Err }

// quarantineDir holds records moved aside by Quarantine.
const quarantineDir = "quarantine"

// Quarantine moves a corrupt record aside: its content is kept under
// quarantine/<dir>-<name>-<UTC time> (a file quarantine/….json in a state directory),
// for an operator to look at, and the record is deleted (fenced by a lease in ctx, like
// every delete), so that the next read finds none. It returns where the content went.
func (s *Store) Quarantine(ctx context.Context, e *CorruptError) (string, error) {
	dir, name, _ := strings.Cut(e.Key, "/")
	aside := dir + "-" + name + "-" + time.Now().UTC().Format("20060102T150405.000000000Z")
	if err := s.b.Put(context.WithoutCancel(ctx), quarantineDir+"/"+aside, e.Raw); err != nil {
		return "", fmt.Errorf("quarantine %s: %w", e.Key, err)
	}
	if err := s.remove(ctx, dir, name); err != nil {
		return "", fmt.Errorf("quarantine %s: %w", e.Key, err)
	}
	return quarantineDir + "/" + aside + " on " + s.b.String(), nil
}

func (s *Store) write(ctx context.Context, dir, name string, v any) error {
	key := dir + "/" + name
	if err := checkName(name); err != nil {
		return fmt.Errorf("write %s: %w", key, err)
	}
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode %s: %w", key, err)
	}
	return s.b.Put(ctx, key, data)
}

func (s *Store) remove(ctx context.Context, dir, name string) error {
	key := dir + "/" + name
	if err := checkName(name); err != nil {
		return fmt.Errorf("delete %s: %w", key, err)
	}
	return s.b.Delete(ctx, key)
}

// checkName refuses names that would escape their directory or collide with
// temporary files: record names come from configuration and hashes, never
// from the network, so this is a guard against bugs.
func checkName(name string) error {
	if name == "" || name[0] == '.' || slices.Contains([]byte(name), '/') || slices.Contains([]byte(name), 0) {
		return fmt.Errorf("invalid record name %q", name)
	}
	return nil
}

// Account is an ACME account at one CA.
type Account struct {
	// Directory is the CA's directory URL the account belongs to.
	Directory string `json:"directory"`
	// KeyPEM is the account's private key (acme.MarshalKey).
	KeyPEM []byte `json:"keyPEM"`
	// URL is the account's URL at the CA; empty until registered.
	URL string `json:"url,omitempty"`
}

// accountName keys accounts by resolver and CA: pointing a resolver at
// another CA must not reuse (and leak) the old CA's account.
func accountName(resolver, directory string) string {
	sum := sha256.Sum256([]byte(directory))
	return resolver + "-" + hex.EncodeToString(sum[:6])
}

// LoadAccount returns the account of resolver at directory, or an error
// wrapping ErrNotFound.
func (s *Store) LoadAccount(ctx context.Context, resolver, directory string) (*Account, error) {
	var a Account
	if err := s.read(ctx, accountsDir, accountName(resolver, directory), &a); err != nil {
		return nil, err
	}
	return &a, nil
}

// SaveAccount stores a (a.Directory names the CA). It is never fenced, even
// with a lease in ctx: an account belongs to a resolver, not to the
// certificate a lease guards, and every instance that registers the same
// key at the CA stores the same URL.
func (s *Store) SaveAccount(ctx context.Context, resolver string, a *Account) error {
	return s.write(context.WithValue(ctx, leaseKey{}, (*Lease)(nil)), accountsDir, accountName(resolver, a.Directory), a)
}

// CreateAccount stores a unless resolver already has an account at
// a.Directory, and returns the account in the store: a, or the one another
// instance or process stored first (then a's key must be discarded). Two
// instances sharing a store that generate a key at the same time thus agree
// on one account key, hence on one thumbprint for the plugin. The check and
// the write are one atomic step on every backend.
func (s *Store) CreateAccount(ctx context.Context, resolver string, a *Account) (*Account, error) {
	name := accountName(resolver, a.Directory)
	data, err := json.MarshalIndent(a, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode %s/%s: %w", accountsDir, name, err)
	}
	created, err := s.b.Create(ctx, accountsDir+"/"+name, data)
	if err != nil {
		return nil, err
	}
	if created {
		return a, nil
	}
	return s.LoadAccount(ctx, resolver, a.Directory)
}

// Certificate is what certfetch knows about one configured certificate.
type Certificate struct {
	Name     string   `json:"name"`
	Resolver string   `json:"resolver"`
	Domains  []string `json:"domains"`
	// CertPEM (leaf first) and KeyPEM are the certificate in service; empty
	// until the first issuance.
	CertPEM   []byte    `json:"certPEM,omitempty"`
	KeyPEM    []byte    `json:"keyPEM,omitempty"`
	NotBefore time.Time `json:"notBefore,omitzero"`
	NotAfter  time.Time `json:"notAfter,omitzero"`
	// RenewAt is when the certificate is due for renewal.
	RenewAt time.Time `json:"renewAt,omitzero"`
	// ARINextCheck is when to ask the CA's renewal information again.
	ARINextCheck time.Time `json:"ariNextCheck,omitzero"`
	LastSuccess  time.Time `json:"lastSuccess,omitzero"`
	// KeyType is the certificate key's type; empty in records written before it was
	// stored (the key itself tells).
	KeyType acme.KeyType `json:"keyType,omitempty"`
	// LastError is the last attempt's error, empty after a success, and Reason its
	// short reason word (the daemon's failure reasons: deadline, unreachable, ...).
	LastError   string    `json:"lastError,omitempty"`
	Reason      string    `json:"reason,omitempty"`
	LastAttempt time.Time `json:"lastAttempt,omitzero"`
	// Failures counts attempts that failed since the last success; it drives
	// the back-off.
	Failures int `json:"failures,omitempty"`
	// Deadlines counts attempts in a row whose deadline passed while the order lived on
	// at the CA; it stretches the wait before the next resume.
	Deadlines int `json:"deadlines,omitempty"`
	// RetryAt, when set, is the earliest next attempt (back-off, Retry-After
	// or an order still processing at the CA).
	RetryAt time.Time `json:"retryAt,omitzero"`
	// Revoked lists the certificates of this name that were revoked at the CA
	// (`certfetch revoke`), oldest first: none of them is ever published
	// again, and a key revoked for keyCompromise is never published again in
	// any certificate. Every record written after a revocation carries it on.
	Revoked []Revocation `json:"revoked,omitempty"`
	// LastRequest is the outcome of the last operator request (`certfetch
	// renew --force`, `certfetch revoke`) carried out for this certificate;
	// the command that asked reads it here.
	LastRequest *RequestOutcome `json:"lastRequest,omitempty"`
}

// LoadCertificate returns the record of name, or an error wrapping
// ErrNotFound.
func (s *Store) LoadCertificate(ctx context.Context, name string) (*Certificate, error) {
	var c Certificate
	if err := s.read(ctx, certificatesDir, name, &c); err != nil {
		return nil, err
	}
	return &c, nil
}

// SaveCertificate stores c under c.Name. When ctx carries a lease
// (Lease.Context), the write happens only if the lease still holds its lock,
// checked atomically with the write on Redis and etcd; otherwise it returns
// an error wrapping ErrLeaseLost and the stored record is untouched.
func (s *Store) SaveCertificate(ctx context.Context, c *Certificate) error {
	return s.write(ctx, certificatesDir, c.Name, c)
}

// Certificates returns every certificate record in the store, sorted by
// name: with a shared store, those of every instance.
func (s *Store) Certificates(ctx context.Context) ([]*Certificate, error) {
	return loadAll(ctx, s, certificatesDir, s.LoadCertificate)
}

// loadAll loads every record in dir with load, skipping the ones deleted
// since the listing (another instance finished an order, say).
func loadAll[T any](ctx context.Context, s *Store, dir string, load func(context.Context, string) (T, error)) ([]T, error) {
	keys, err := s.b.List(ctx, dir)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", dir, err)
	}
	var recs []T
	for _, key := range keys {
		rec, err := load(ctx, key[len(dir)+1:])
		if errors.Is(err, ErrNotFound) || errors.Is(err, acme.ErrNoRecord) {
			continue
		}
		if err != nil {
			return nil, err
		}
		recs = append(recs, rec)
	}
	return recs, nil
}

// Journal returns the order journal, backed by orders/<key>. Save and Delete
// are fenced by a lease in their context (Lease.Context): the engine passes
// context.WithoutCancel of the Obtain context, which keeps the lease.
func (s *Store) Journal() acme.Journal { return journal{s} }

type journal struct{ s *Store }

// Load implements acme.Journal.
// A journaled order that cannot be decoded cannot be resumed: it is quarantined
// (Store.Quarantine) and reported as no record, so that the engine starts a new order
// instead of failing on it forever.
func (j journal) Load(ctx context.Context, key string) (*acme.Record, error) {
	var rec acme.Record
	err := j.s.read(ctx, ordersDir, key, &rec)
	var corrupt *CorruptError
	switch {
	case errors.Is(err, ErrNotFound):
		return nil, fmt.Errorf("%w: %w", acme.ErrNoRecord, err)
	case errors.As(err, &corrupt):
		where, qerr := j.s.Quarantine(ctx, corrupt)
		if qerr != nil {
			return nil, errors.Join(err, qerr)
		}
		return nil, fmt.Errorf("%w: %w (moved to %s)", acme.ErrNoRecord, err, where)
	case err != nil:
		return nil, err
	}
	return &rec, nil
}

// Save implements acme.Journal: durable before it returns (on Redis, as
// durable as its persistence settings make it).
func (j journal) Save(ctx context.Context, rec *acme.Record) error {
	return j.s.write(ctx, ordersDir, rec.Key, rec)
}

// Delete implements acme.Journal.
func (j journal) Delete(ctx context.Context, key string) error {
	return j.s.remove(ctx, ordersDir, key)
}

// Orders returns the journaled orders, sorted by key: the orders alive at
// CAs (with a shared store, those of every instance).
func (s *Store) Orders(ctx context.Context) ([]*acme.Record, error) {
	return loadAll(ctx, s, ordersDir, s.Journal().Load)
}
