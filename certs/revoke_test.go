package certs

import (
	"crypto/tls"
	"path/filepath"
	"strings"
	"testing"
)

func TestRevocation(t *testing.T) {
	dir := t.TempDir()
	if err := InitCA(dir, "ca"); err != nil {
		t.Fatal(err)
	}
	srvFiles, cliFiles := newNode(t, dir, "db1"), newNode(t, dir, "db2")
	cli, _ := tls.LoadX509KeyPair(cliFiles.Cert, cliFiles.Key)
	serial := SerialString(cli.Leaf.SerialNumber)
	list := NewRevocationList()
	srv, err := ServerConfig(srvFiles)
	if err != nil {
		t.Fatal(err)
	}
	CheckRevoked(srv, list)
	cc, err := ClientConfig(cliFiles, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := handshake(t, srv, cc); err != nil {
		t.Fatalf("before revocation: %v", err)
	}
	if !list.Set([]string{serial, "ff"}) || list.Set([]string{"ff", serial}) {
		t.Error("Set reports changes wrongly")
	}
	if err := handshake(t, srv, cc); err == nil {
		t.Fatal("a revoked client certificate was accepted")
	}
	// The client side refuses a revoked server just as well.
	srv2, _ := ServerConfig(cliFiles)
	cc2, _ := ClientConfig(srvFiles, "")
	CheckRevoked(cc2, list)
	if err := handshake(t, srv2, cc2); err == nil {
		t.Fatal("a revoked server certificate was accepted")
	}
	var cs tls.ConnectionState
	cs.PeerCertificates = append(cs.PeerCertificates, cli.Leaf)
	if err := list.Check(cs); err == nil || !strings.Contains(err.Error(), "is revoked") {
		t.Errorf("Check: %v", err)
	}
	// Saved and loaded.
	path := filepath.Join(dir, "revoked.json")
	if err := list.Save(path); err != nil {
		t.Fatal(err)
	}
	l2 := NewRevocationList()
	if err := l2.Load(path); err != nil || !l2.Revoked(serial) {
		t.Fatalf("loaded list: %v %v", l2.Serials(), err)
	}
	if err := NewRevocationList().Load(filepath.Join(dir, "none")); err != nil {
		t.Errorf("missing file: %v", err)
	}
}
