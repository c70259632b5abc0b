package store

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/certfetch/certfetch/internal/atomicfile"
)

// fileBackend keeps records as <dir>/<key>.json, written atomically.
type fileBackend struct {
	dir string // absolute, so that locks of one directory meet in fileLocks
}

// fileLocks are the file backend's leases: per process, since
// Store.LockDirectory already reserves a state directory for one process.
// Keyed by directory and lock name.
var fileLocks = struct {
	sync.Mutex
	held   map[string]*Lease
	tokens map[string]int64
}{held: map[string]*Lease{}, tokens: map[string]int64{}}

func openFile(dir string) (*fileBackend, error) {
	for _, sub := range []string{"", accountsDir, ordersDir, certificatesDir, quarantineDir, requestsDir, revokedDir, discoveryDir} {
		if err := os.MkdirAll(filepath.Join(dir, sub), dirMode); err != nil {
			return nil, fmt.Errorf("open state directory %s: %w", dir, err)
		}
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("open state directory %s: %w", dir, err)
	}
	return &fileBackend{dir: abs}, nil
}

func (f *fileBackend) String() string { return "file:" + f.dir }

// Locate implements backend: the record's file.
func (f *fileBackend) Locate(key string) string { return f.path(key) }

func (f *fileBackend) Close() error { return nil }

func (f *fileBackend) path(key string) string {
	return filepath.Join(f.dir, filepath.FromSlash(key)+".json")
}

func (f *fileBackend) Get(_ context.Context, key string) ([]byte, error) {
	path := f.path(key)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("read %s: %w", path, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return data, nil
}

func (f *fileBackend) Put(ctx context.Context, key string, value []byte) error {
	return f.fenced(ctx, "write", key, func() error {
		return atomicfile.Write(f.path(key), value, recordMode)
	})
}

// Create writes value to a temporary file and hard-links it to the record's
// path: link(2) fails when the path exists, so of two processes creating the
// same record exactly one wins and the other sees the winner's whole record.
func (f *fileBackend) Create(_ context.Context, key string, value []byte) (bool, error) {
	path := f.path(key)
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".create-*")
	if err != nil {
		return false, fmt.Errorf("create %s: %w", path, err)
	}
	defer os.Remove(tmp.Name()) //nolint:errcheck // best effort: the link, if any, keeps the data
	_, err = tmp.Write(value)
	if err == nil {
		err = tmp.Chmod(recordMode)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return false, fmt.Errorf("create %s: %w", path, err)
	}
	if err := os.Link(tmp.Name(), path); errors.Is(err, fs.ErrExist) {
		return false, nil
	} else if err != nil {
		return false, fmt.Errorf("create %s: %w", path, err)
	}
	return true, atomicfile.SyncDir(dir)
}

func (f *fileBackend) Delete(ctx context.Context, key string) error {
	return f.fenced(ctx, "delete", key, func() error {
		path := f.path(key)
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("remove %s: %w", path, err)
		}
		return atomicfile.SyncDir(filepath.Dir(path))
	})
}

// fenced runs write, under the lock registry's mutex when ctx carries a
// lease, so that a lease released meanwhile cannot slip a write in. Fenced
// writes are a few per order, so serializing them costs nothing measurable.
func (f *fileBackend) fenced(ctx context.Context, op, key string, write func() error) error {
	l, err := fence(ctx, f, op, key)
	if err != nil {
		return err
	}
	if l == nil {
		return write()
	}
	fileLocks.Lock()
	defer fileLocks.Unlock()
	if fileLocks.held[f.lockKey(l.name)] != l {
		return lostError(op, key, l)
	}
	return write()
}

func (f *fileBackend) List(_ context.Context, dir string) ([]string, error) {
	path := filepath.Join(f.dir, dir)
	entries, err := os.ReadDir(path)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", path, err)
	}
	var keys []string
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || strings.HasPrefix(name, ".") || e.IsDir() {
			continue // temporary files of atomicfile start with a dot
		}
		keys = append(keys, dir+"/"+name)
	}
	slices.Sort(keys)
	return keys, nil
}

func (f *fileBackend) lockKey(name string) string { return f.dir + "\x00" + name }

// Acquire takes a lease in this process's memory; ttl is ignored because
// the holder cannot die without the process, which frees the directory's
// flock and all these leases together.
func (f *fileBackend) Acquire(_ context.Context, name string, ttl time.Duration) (*Lease, error) {
	k := f.lockKey(name)
	fileLocks.Lock()
	defer fileLocks.Unlock()
	if old := fileLocks.held[k]; old != nil {
		return nil, fmt.Errorf("%s: %w", f, &LeaseHeldError{Lock: name, Holder: old.holder})
	}
	fileLocks.tokens[k]++
	l := newLease(f, name, fileLocks.tokens[k], defaultInstance(), ttl, nil, time.Now(), false)
	l.ops = fileRelease{k: k, l: l}
	fileLocks.held[k] = l
	return l, nil
}

// fileRelease is a file lease's leaseOps.
type fileRelease struct {
	k string
	l *Lease
}

func (r fileRelease) renew(context.Context) error { return nil }

func (r fileRelease) release(context.Context) error {
	fileLocks.Lock()
	defer fileLocks.Unlock()
	if fileLocks.held[r.k] == r.l {
		delete(fileLocks.held, r.k)
	}
	return nil
}
