package statefile

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWriteReplacesAtomically(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "state.json")
	// A leftover temporary file from a crash, world-readable.
	if err := os.WriteFile(p+".tmp", []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	type st struct{ Epoch, Seqno uint64 }
	if err := WriteJSON(p, st{1, 2}); err != nil {
		t.Fatal(err)
	}
	if err := WriteJSON(p, st{3, 4}); err != nil {
		t.Fatal(err)
	}
	var got st
	ok, err := ReadJSON(p, &got)
	if err != nil || !ok || got != (st{3, 4}) {
		t.Fatalf("ReadJSON = %+v, %v, %v", got, ok, err)
	}
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, want 0600", fi.Mode().Perm())
	}
	if _, err := os.Stat(p + ".tmp"); !os.IsNotExist(err) {
		t.Fatalf("temporary file left behind: %v", err)
	}
}

func TestReadJSON(t *testing.T) {
	dir := t.TempDir()
	var v map[string]int
	if ok, err := ReadJSON(filepath.Join(dir, "missing.json"), &v); ok || err != nil {
		t.Fatalf("missing file: %v, %v", ok, err)
	}
	bad := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(bad, []byte("{half"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadJSON(bad, &v); err == nil || !strings.Contains(err.Error(), "bad.json is damaged") {
		t.Fatalf("damaged file: %v", err)
	}
}

func TestRemove(t *testing.T) {
	p := filepath.Join(t.TempDir(), "x")
	if err := Remove(p); err != nil {
		t.Fatalf("removing a missing file: %v", err)
	}
	if err := Write(p, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Remove(p); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); !os.IsNotExist(err) {
		t.Fatalf("file still there: %v", err)
	}
}
