package certs

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func newNode(t *testing.T, dir, name string) Files {
	t.Helper()
	if err := Issue(dir, dir, name, RoleAgent, []string{"127.0.0.1", "localhost"}); err != nil {
		t.Fatal(err)
	}
	return Files{CA: filepath.Join(dir, CACert), Cert: CertFile(dir, name), Key: KeyFile(dir, name)}
}

// handshake serves one TLS connection with srv and dials it with cli; it
// returns the client's error (or the server's, if the client saw none).
func handshake(t *testing.T, srv, cli *tls.Config) error {
	t.Helper()
	l, err := tls.Listen("tcp", "127.0.0.1:0", srv)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	serr := make(chan error, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			serr <- err
			return
		}
		defer c.Close()
		err = c.(*tls.Conn).Handshake()
		if err == nil {
			_, err = c.Write([]byte("ok"))
		}
		serr <- err
	}()
	c, err := tls.Dial("tcp", l.Addr().String(), cli)
	if err == nil {
		defer c.Close()
		b := make([]byte, 2)
		_, err = io.ReadFull(c, b)
	}
	if e := <-serr; err == nil {
		err = e
	}
	return err
}

func TestMutualTLS(t *testing.T) {
	dir := t.TempDir()
	if err := InitCA(dir, "quire test CA"); err != nil {
		t.Fatal(err)
	}
	a, b := newNode(t, dir, "db1"), newNode(t, dir, "db2")
	srv, err := ServerConfig(a)
	if err != nil {
		t.Fatal(err)
	}
	cli, err := ClientConfig(b, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := handshake(t, srv, cli); err != nil {
		t.Fatalf("same CA: %v", err)
	}

	// A client whose certificate another CA signed is refused.
	other := t.TempDir()
	if err := InitCA(other, "rogue CA"); err != nil {
		t.Fatal(err)
	}
	rogue := newNode(t, other, "db9")
	rogueCli, err := ClientConfig(Files{CA: a.CA, Cert: rogue.Cert, Key: rogue.Key}, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := handshake(t, srv, rogueCli); err == nil {
		t.Fatal("client with a certificate from another CA was accepted")
	}
	// A client without a certificate is refused.
	noCert := &tls.Config{RootCAs: cli.RootCAs, MinVersion: tls.VersionTLS13}
	if err := handshake(t, srv, noCert); err == nil {
		t.Fatal("client without a certificate was accepted")
	}
	// A client that trusts another CA refuses our server.
	if err := handshake(t, srv, rogueCliTrusting(t, other, rogue)); err == nil {
		t.Fatal("client accepted a server certificate from a CA it does not trust")
	}
}

func rogueCliTrusting(t *testing.T, dir string, f Files) *tls.Config {
	c, err := ClientConfig(Files{CA: filepath.Join(dir, CACert), Cert: f.Cert, Key: f.Key}, "")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestFilesAndErrors(t *testing.T) {
	dir := t.TempDir()
	if err := Issue(dir, dir, "db1", RoleAgent, []string{"127.0.0.1"}); err == nil || !strings.Contains(err.Error(), "certs init") {
		t.Fatalf("issue without CA: %v", err)
	}
	if err := InitCA(dir, "ca"); err != nil {
		t.Fatal(err)
	}
	if err := InitCA(dir, "ca"); err == nil || !strings.Contains(err.Error(), "already holds a CA") {
		t.Fatalf("second InitCA: %v", err)
	}
	for _, tc := range []struct {
		name  string
		role  Role
		hosts []string
		want  string
	}{
		{"DB1", RoleAgent, []string{"h"}, "not allowed"},
		{"", RoleAgent, []string{"h"}, "not allowed"},
		{"db1", RoleAgent, nil, "at least one host"},
		{"m1", RoleManager, nil, "at least one host"},
		{"db1", "admin", []string{"h"}, `role "admin" is not allowed`},
		{"db1", "", []string{"h"}, `role "" is not allowed`},
	} {
		if err := Issue(dir, dir, tc.name, tc.role, tc.hosts); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Issue(%q, %q, %v) = %v, want %q", tc.name, tc.role, tc.hosts, err, tc.want)
		}
	}
	f := newNode(t, dir, "db1")
	for _, p := range []string{filepath.Join(dir, CAKey), f.Key} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", p, st.Mode().Perm())
		}
	}
	// A key that group or other may read is refused, naming the fix.
	if err := os.Chmod(f.Key, 0o640); err != nil {
		t.Fatal(err)
	}
	if _, err := ServerConfig(f); err == nil || !strings.Contains(err.Error(), "run chmod 600") {
		t.Errorf("key with mode 0640: %v", err)
	}
	os.Chmod(f.Key, 0o600)
	if _, err := ServerConfig(Files{CA: f.CA, Cert: f.Cert}); err == nil {
		t.Error("ServerConfig without a key file succeeded")
	}
	if _, err := ServerConfig(Files{CA: f.Key, Cert: f.Cert, Key: f.Key}); err == nil || !strings.Contains(err.Error(), "no PEM certificate") {
		t.Errorf("key as CA: %v", err)
	}
	_, err := ServerConfig(Files{CA: filepath.Join(dir, "missing"), Cert: f.Cert, Key: f.Key})
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing CA: %v", err)
	}
	// The certificate names the IP it was issued for.
	crt, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		t.Fatal(err)
	}
	if len(crt.Leaf.IPAddresses) != 1 || !crt.Leaf.IPAddresses[0].Equal(net.ParseIP("127.0.0.1")) {
		t.Errorf("IP SANs %v", crt.Leaf.IPAddresses)
	}
}
