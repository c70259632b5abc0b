// Package atomicfile replaces files so that readers see the old or the new
// content, never a torn file, and so that the new content survives a crash
// once Write returns.
package atomicfile

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/google/renameio/v2"
)

// Write replaces path with data: a temporary file in the same directory,
// fsync, rename over path, fsync of the directory. perm is applied exactly,
// ignoring the umask (systemd's UMask=0077 would otherwise hide certificates
// from Traefik). The directory must exist.
//
// The temporary file is named "."+base(path)+digits (renameio's scheme): a
// leading dot, which no ACME token, certificate name or Traefik provider file
// matches. A writer killed mid-write leaves such a file behind; callers that
// care prune them.
func Write(path string, data []byte, perm os.FileMode) error {
	return WriteVia(path, filepath.Dir(path), data, perm)
}

// WriteVia is Write with the temporary file in tmpDir, which must be on the
// same file system as path. It is for a directory something watches (such
// as Traefik's file provider): creating the temporary file there would be an
// event of its own, before the content is in place; with the temporary file
// elsewhere the rename is the only event.
func WriteVia(path, tmpDir string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	f, err := renameio.NewPendingFile(path, renameio.WithTempDir(tmpDir), renameio.WithStaticPermissions(perm))
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	// After CloseAtomicallyReplace, Cleanup is a no-op; on failure it removes
	// the temporary file and the write error is the one worth returning.
	defer f.Cleanup() //nolint:errcheck // see above
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.CloseAtomicallyReplace(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return SyncDir(dir)
}

// SyncDir makes renames and removals in dir durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}

// MkdirAll creates dir and any missing parents with exactly perm, whatever the process
// umask (os.MkdirAll applies it: under systemd's UMask=0077 a web root's
// .well-known/acme-challenge would come out 0700, unreadable for the web server).
// Directories that exist are left as they are. The parents' entries are synced, so the
// new directories survive a crash.
func MkdirAll(dir string, perm os.FileMode) error {
	dir = filepath.Clean(dir)
	if fi, err := os.Stat(dir); err == nil {
		if !fi.IsDir() {
			return fmt.Errorf("create directory %s: exists and is not a directory", dir)
		}
		return nil
	}
	if parent := filepath.Dir(dir); parent != dir {
		if err := MkdirAll(parent, perm); err != nil {
			return err
		}
	}
	if err := os.Mkdir(dir, perm); err != nil && !os.IsExist(err) {
		return fmt.Errorf("create directory %s: %w", dir, err)
	}
	if err := os.Chmod(dir, perm); err != nil {
		return fmt.Errorf("create directory %s: %w", dir, err)
	}
	return SyncDir(filepath.Dir(dir))
}
