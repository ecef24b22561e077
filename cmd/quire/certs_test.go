package main

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/quire-ha/quire/certs"
)

func quireRun(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	err := run(args, &out, io.Discard)
	return out.String(), err
}

func TestCertsIssueRoles(t *testing.T) {
	dir := t.TempDir()
	if _, err := quireRun(t, "certs", "init", "--dir", dir); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"--role", "agent", "--name", "db1", "--hosts", "10.0.0.1"},
		{"--role", "manager", "--name", "m1", "--hosts", "10.0.0.1"},
		{"--role", "operator", "--name", "alice"},
	} {
		out, err := quireRun(t, append([]string{"certs", "issue", "--dir", dir}, args...)...)
		if err != nil || !strings.Contains(out, args[1]+" certificate for "+args[3]) {
			t.Fatalf("issue %v: %q %v", args, out, err)
		}
		if !certs.Holds(dir, args[3], certs.Role(args[1])) {
			t.Errorf("%s does not carry %s/%s", args[3], args[1], args[3])
		}
	}
	// The role is required and must be known.
	for _, args := range [][]string{{"--name", "db2", "--hosts", "h"}, {"--role", "root", "--name", "db2", "--hosts", "h"}} {
		if _, err := quireRun(t, append([]string{"certs", "issue", "--dir", dir}, args...)...); !errors.Is(err, errUsage) {
			t.Errorf("issue %v: %v, want a usage error", args, err)
		}
	}
	// --if-missing keeps a certificate with the right role ...
	before, _ := tls.LoadX509KeyPair(certs.CertFile(dir, "db1"), certs.KeyFile(dir, "db1"))
	out, err := quireRun(t, "certs", "issue", "--dir", dir, "--role", "agent", "--name", "db1", "--hosts", "10.0.0.1", "--if-missing")
	after, _ := tls.LoadX509KeyPair(certs.CertFile(dir, "db1"), certs.KeyFile(dir, "db1"))
	if err != nil || !strings.HasPrefix(out, "kept") || before.Leaf.SerialNumber.Cmp(after.Leaf.SerialNumber) != 0 {
		t.Errorf("--if-missing with the right role: %q %v", out, err)
	}
	// ... and issues again one for another role (or one without a role).
	out, err = quireRun(t, "certs", "issue", "--dir", dir, "--role", "manager", "--name", "db1", "--hosts", "10.0.0.1", "--if-missing")
	if err != nil || strings.HasPrefix(out, "kept") || !certs.Holds(dir, "db1", certs.RoleManager) {
		t.Errorf("--if-missing with another role: %q %v", out, err)
	}
}
