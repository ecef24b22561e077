package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
)

func TestIssueCarriesRoleAndName(t *testing.T) {
	dir := t.TempDir()
	if err := InitCA(dir, "ca"); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		role  Role
		hosts []string
	}{
		{"db1", RoleAgent, []string{"10.0.0.1"}},
		{"m1", RoleManager, []string{"m1.example"}},
		{"alice", RoleOperator, nil},
	} {
		if err := Issue(dir, dir, tc.name, tc.role, tc.hosts); err != nil {
			t.Fatalf("issue %s: %v", tc.name, err)
		}
		crt, err := tls.LoadX509KeyPair(CertFile(dir, tc.name), KeyFile(dir, tc.name))
		if err != nil {
			t.Fatal(err)
		}
		id, err := IdentityOf(crt.Leaf)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if id.Role != tc.role || id.Name != tc.name || id.Serial == nil {
			t.Errorf("%s: identity %+v, want %s/%s", tc.name, id, tc.role, tc.name)
		}
		if got := crt.Leaf.Subject.OrganizationalUnit; len(got) != 1 || got[0] != string(tc.role) {
			t.Errorf("%s: OU %v, want [%s]", tc.name, got, tc.role)
		}
		server := false
		for _, u := range crt.Leaf.ExtKeyUsage {
			server = server || u == x509.ExtKeyUsageServerAuth
		}
		if server != (tc.role != RoleOperator) {
			t.Errorf("%s: server auth %v; only managers and agents serve", tc.name, server)
		}
	}
}

// selfSigned makes a certificate with the given URIs (no CA needed: only
// IdentityOf's parsing is under test).
func selfSigned(t *testing.T, uris ...string) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(0xabc), Subject: pkix.Name{CommonName: "old"}}
	for _, s := range uris {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, u)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestIdentityOf(t *testing.T) {
	for _, tc := range []struct {
		uris []string
		want string // identity, or a part of the error
	}{
		{[]string{"quire://agent/db1"}, "agent/db1"},
		{[]string{"https://example.com/x", "quire://manager/m2"}, "manager/m2"},
		{nil, "reissue it with `quire certs issue --role"},
		{[]string{"https://example.com/x"}, "issued before roles existed"},
		{[]string{"quire://agent/db1", "quire://manager/db1"}, "exactly one role"},
		{[]string{"quire://admin/db1"}, `role "admin" is not allowed`},
		{[]string{"quire://agent/"}, "does not name a node"},
		{[]string{"quire://agent/DB1"}, "does not name a node"},
		{[]string{"quire://agent/db1/x"}, "does not name a node"},
		{[]string{"quire://agent/db1?x=1"}, "does not name a node"},
	} {
		id, err := IdentityOf(selfSigned(t, tc.uris...))
		got := id.String()
		if err != nil {
			got = err.Error()
		}
		if !strings.Contains(got, tc.want) {
			t.Errorf("%v: got %q, want %q", tc.uris, got, tc.want)
		}
	}
	_, err := IdentityOf(selfSigned(t))
	if !errors.Is(err, ErrNoRole) {
		t.Errorf("no URI: %v, want ErrNoRole", err)
	}
}

func TestRequirePeer(t *testing.T) {
	dir := t.TempDir()
	if err := InitCA(dir, "ca"); err != nil {
		t.Fatal(err)
	}
	files := func(name string, role Role) Files {
		if err := Issue(dir, dir, name, role, []string{"127.0.0.1"}); err != nil {
			t.Fatal(err)
		}
		return Files{CA: filepath.Join(dir, CACert), Cert: CertFile(dir, name), Key: KeyFile(dir, name)}
	}
	m1, db1, op := files("m1", RoleManager), files("db1", RoleAgent), files("op", RoleOperator)
	for _, tc := range []struct {
		server Files
		want   []Role
		ok     bool
	}{
		{m1, []Role{RoleManager}, true},
		{db1, []Role{RoleManager}, false},
		{db1, []Role{RoleAgent, RoleManager}, true},
	} {
		srv, err := ServerConfig(tc.server)
		if err != nil {
			t.Fatal(err)
		}
		cli, err := ClientConfig(op, "")
		if err != nil {
			t.Fatal(err)
		}
		RequirePeer(cli, WantRole(tc.want...))
		err = handshake(t, srv, cli)
		if (err == nil) != tc.ok {
			t.Errorf("server %s, want %v: %v", tc.server.Cert, tc.want, err)
		}
	}
}
