//go:build unix

package txlog

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// lockFileName is the file in a log directory that Open locks.
const lockFileName = "LOCK"

// lockDir takes an exclusive, non-blocking flock on dir/LOCK so that two
// processes never append to the same log.
func lockDir(dir string) (*os.File, error) {
	path := filepath.Join(dir, lockFileName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("txlog: open lock file %s: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("txlog: lock %s: is another process using the log? %w", path, err)
	}
	return f, nil
}

// unlockDir releases the lock taken by lockDir.
func unlockDir(f *os.File) error {
	if f == nil {
		return nil
	}
	return f.Close() // closing the descriptor releases the flock
}
