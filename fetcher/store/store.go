// Package store keeps certfetch's private state in a directory on the local
// file system:
//
//	<dir>/                       0700
//	  lock                       held by `certfetch run` and `certfetch once`
//	  accounts/<resolver>-<ca>.json   ACME account key and URL        0600
//	  orders/<request key>.json  the order journal (acme.Record)       0600
//	  certificates/<name>.json   issued certificate, key and schedule  0600
//
// Every write is atomic (temp file, fsync, rename, fsync dir): a crash leaves
// the old record or the new one. Records hold private keys; the files are
// readable by certfetch's user only. A Store is safe for concurrent use by
// goroutines that work on distinct names and keys.
package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/certfetch/certfetch/acme"
	"github.com/certfetch/certfetch/internal/atomicfile"
)

// ErrNotFound is returned (wrapped) when a record does not exist.
var ErrNotFound = errors.New("not found")

// ErrLocked is returned by Lock when another certfetch process holds the store.
var ErrLocked = errors.New("another certfetch process holds the state directory")

const (
	dirMode    os.FileMode = 0o700
	recordMode os.FileMode = 0o600

	accountsDir     = "accounts"
	ordersDir       = "orders"
	certificatesDir = "certificates"
	lockFile        = "lock"
)

// Store is a state directory.
type Store struct {
	dir string
}

// Open creates dir and its subdirectories (mode 0700) when missing and
// returns the Store. It does not take the lock.
func Open(dir string) (*Store, error) {
	for _, sub := range []string{"", accountsDir, ordersDir, certificatesDir} {
		path := filepath.Join(dir, sub)
		if err := os.MkdirAll(path, dirMode); err != nil {
			return nil, fmt.Errorf("open state directory %s: %w", dir, err)
		}
	}
	return &Store{dir: dir}, nil
}

// Dir returns the state directory.
func (s *Store) Dir() string { return s.dir }

// Lock takes an exclusive, non-blocking lock on the state directory, so that
// `run` and `once` (say, a daemon and a timer left enabled by mistake) never
// work on the same orders at once. The lock is released by the returned
// function or when the process dies. It returns an error wrapping ErrLocked
// when another process holds it.
func (s *Store) Lock() (unlock func() error, err error) {
	path := filepath.Join(s.dir, lockFile)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, recordMode)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("lock %s: %w", path, ErrLocked)
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return f.Close, nil
}

func (s *Store) read(sub, name string, v any) error {
	path := filepath.Join(s.dir, sub, name+".json")
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("read %s: %w", path, ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	return nil
}

func (s *Store) write(sub, name string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode %s/%s: %w", sub, name, err)
	}
	return atomicfile.Write(filepath.Join(s.dir, sub, name+".json"), data, recordMode)
}

func (s *Store) remove(sub, name string) error {
	path := filepath.Join(s.dir, sub, name+".json")
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	return atomicfile.SyncDir(filepath.Join(s.dir, sub))
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
func (s *Store) LoadAccount(resolver, directory string) (*Account, error) {
	var a Account
	if err := s.read(accountsDir, accountName(resolver, directory), &a); err != nil {
		return nil, err
	}
	return &a, nil
}

// SaveAccount stores a (a.Directory names the CA).
func (s *Store) SaveAccount(resolver string, a *Account) error {
	return s.write(accountsDir, accountName(resolver, a.Directory), a)
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
	// Unpublished is set between storing a new certificate and handing it
	// to the output, so that a crash in between re-publishes it.
	Unpublished bool      `json:"unpublished,omitempty"`
	LastSuccess time.Time `json:"lastSuccess,omitzero"`
	// LastError is the last attempt's error, empty after a success.
	LastError   string    `json:"lastError,omitempty"`
	LastAttempt time.Time `json:"lastAttempt,omitzero"`
	// Failures counts attempts that failed since the last success; it drives
	// the back-off.
	Failures int `json:"failures,omitempty"`
	// RetryAt, when set, is the earliest next attempt (back-off, Retry-After
	// or an order still processing at the CA).
	RetryAt time.Time `json:"retryAt,omitzero"`
}

// LoadCertificate returns the record of name, or an error wrapping ErrNotFound.
func (s *Store) LoadCertificate(name string) (*Certificate, error) {
	var c Certificate
	if err := s.read(certificatesDir, name, &c); err != nil {
		return nil, err
	}
	return &c, nil
}

// SaveCertificate stores c under c.Name.
func (s *Store) SaveCertificate(c *Certificate) error {
	return s.write(certificatesDir, c.Name, c)
}

// Journal returns the order journal, backed by orders/<key>.json.
func (s *Store) Journal() acme.Journal { return journal{s} }

type journal struct{ s *Store }

// Load implements acme.Journal.
func (j journal) Load(_ context.Context, key string) (*acme.Record, error) {
	var rec acme.Record
	if err := j.s.read(ordersDir, key, &rec); err != nil {
		if errors.Is(err, ErrNotFound) {
			return nil, fmt.Errorf("%w: %w", acme.ErrNoRecord, err)
		}
		return nil, err
	}
	return &rec, nil
}

// Save implements acme.Journal: durable before it returns.
func (j journal) Save(_ context.Context, rec *acme.Record) error {
	return j.s.write(ordersDir, rec.Key, rec)
}

// Delete implements acme.Journal.
func (j journal) Delete(_ context.Context, key string) error {
	return j.s.remove(ordersDir, key)
}

// Orders returns the journaled orders: the orders alive at CAs.
func (s *Store) Orders() ([]*acme.Record, error) {
	entries, err := os.ReadDir(filepath.Join(s.dir, ordersDir))
	if err != nil {
		return nil, fmt.Errorf("list orders: %w", err)
	}
	var recs []*acme.Record
	for _, e := range entries {
		key, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || strings.HasPrefix(key, ".") {
			continue
		}
		rec, err := s.Journal().Load(context.Background(), key)
		if err != nil {
			return nil, err
		}
		recs = append(recs, rec)
	}
	return recs, nil
}
