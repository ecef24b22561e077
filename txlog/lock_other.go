//go:build !unix

package txlog

import "os"

// lockDir does nothing where flock is not available.
func lockDir(dir string) (*os.File, error) { return nil, nil }

// unlockDir does nothing where flock is not available.
func unlockDir(f *os.File) error { return nil }
