package store

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// writeHolder writes this process's PID into the lock file f that it just locked.
func writeHolder(f *os.File) error {
	if err := f.Truncate(0); err != nil {
		return fmt.Errorf("write the holder's PID: %w", err)
	}
	if _, err := f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0); err != nil {
		return fmt.Errorf("write the holder's PID: %w", err)
	}
	return nil
}

// ErrNoHolder is returned (wrapped) by DirectoryHolder when the lock file names no
// process: the store is not a directory, nobody ever locked it, or the holder is between
// taking the lock and writing its PID.
var ErrNoHolder = errors.New("the state directory's lock names no process")

// DirectoryHolder returns the PID the holder of the state directory's lock wrote into
// the lock file (LockDirectory). The file is not cleared when the holder exits: ask
// LockDirectory whether the directory is held, then VerifyHolder before signalling the
// PID.
func (s *Store) DirectoryHolder() (int, error) {
	if s.dir == "" {
		return 0, fmt.Errorf("%s: %w", s, ErrNoHolder)
	}
	path := filepath.Join(s.dir, lockFile)
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", path, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("%s: %w", path, ErrNoHolder)
	}
	return pid, nil
}

// VerifyHolder checks, through /proc, that process pid has the state directory's lock
// file open, so that a PID that is not the holder's is never signalled: one left in the
// file by a holder that exited (and reused since), or one written by a holder in another
// PID namespace (a container sharing the directory), which would name an unrelated
// process here. Where /proc does not exist (not Linux) it cannot check and returns nil.
func (s *Store) VerifyHolder(pid int) error {
	if _, err := os.Stat("/proc/self/fd"); err != nil {
		return nil
	}
	path := filepath.Join(s.dir, lockFile)
	lock, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("verify the holder of %s: %w", path, err)
	}
	fdDir := fmt.Sprintf("/proc/%d/fd", pid)
	fds, err := os.ReadDir(fdDir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("verify the holder of %s: no process %d here (the holder runs in another PID namespace, such as a container?)", path, pid)
	case err != nil:
		return fmt.Errorf("verify the holder of %s: cannot look at process %d (run as the daemon's user or root): %w", path, pid, err)
	}
	for _, fd := range fds {
		if info, err := os.Stat(filepath.Join(fdDir, fd.Name())); err == nil && os.SameFile(info, lock) {
			return nil
		}
	}
	return fmt.Errorf("verify the holder of %s: process %d does not have it open (the holder runs in another PID namespace, such as a container?)", path, pid)
}
