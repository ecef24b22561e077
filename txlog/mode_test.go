package txlog

import (
	"os"
	"path/filepath"
	"testing"
)

// The log is readable by its owner only: directory 0700 (also an existing
// one an older version made 0750), segments and lock 0600.
func TestFileModes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "txlog")
	if err := os.Mkdir(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	l := openLog(t, dir, Options{})
	if err := l.AppendSync(makeRecord(1, 1, 10)); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("directory mode %v (%v), want 0700", fi.Mode().Perm(), err)
	}
	for _, e := range entries {
		fi, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s has mode %v, want no group or other access", e.Name(), fi.Mode().Perm())
		}
	}
}
