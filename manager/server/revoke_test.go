package server_test

import (
	"crypto/tls"
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/quire-ha/quire/certs"
	"github.com/quire-ha/quire/manager"
	"github.com/quire-ha/quire/manager/managertest"
)

// TestRevokedCertificateRefused: an operator revokes another operator's
// certificate; the managers refuse it from then on, on a new connection
// (handshake) and on the one it already had (every call), and agents can
// read the list.
func TestRevokedCertificateRefused(t *testing.T) {
	c := managertest.Start(t, 3, managertest.Options{})
	admin := c.Client("operator")
	leaked := c.Client("operator-leaked")
	ctx := managertest.Context(t)
	if _, err := leaked.Status(ctx); err != nil {
		t.Fatalf("before revocation: %v", err)
	}
	crt, err := tls.LoadX509KeyPair(c.Files("operator-leaked").Cert, c.Files("operator-leaked").Key)
	if err != nil {
		t.Fatal(err)
	}
	serial := certs.SerialString(crt.Leaf.SerialNumber)
	list, err := admin.RevokeCertificate(ctx, strings.ToUpper("0"+serial), "operator-leaked", "laptop stolen")
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].Serial != serial || list[0].By != "operator/operator" || list[0].Reason != "laptop stolen" {
		t.Fatalf("revocation list %+v", list)
	}
	managertest.WaitFor(t, "every manager to apply the revocation", func() bool {
		for _, m := range c.Managers {
			if len(m.Node.State().Revoked) != 1 {
				return false
			}
		}
		return c.Revoked.Revoked(serial)
	})
	// The connection it already has: refused call by call.
	_, err = leaked.Status(ctx)
	var me *manager.Error
	if !errors.As(err, &me) || me.Code != codes.PermissionDenied || !strings.Contains(me.Message, "revoked") {
		t.Errorf("revoked certificate, old connection: %v", err)
	}
	// A new connection: refused in the handshake.
	fresh, err := manager.NewClient(manager.ClientConfig{Addrs: c.Addrs(), TLS: c.ClientTLS("operator-leaked"), RetryTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	if _, err := fresh.Status(ctx); err == nil {
		t.Error("revoked certificate, new connection: accepted")
	}
	// Others go on; an agent reads the list; an agent may not revoke.
	if _, err := admin.Status(ctx); err != nil {
		t.Errorf("the other operator: %v", err)
	}
	agent := c.Client("db1")
	if got, err := agent.ListRevoked(ctx); err != nil || len(got) != 1 || got[0].Serial != serial {
		t.Errorf("agent's ListRevoked: %+v %v", got, err)
	}
	_, err = agent.RevokeCertificate(ctx, "ab", "", "")
	if !errors.As(err, &me) || me.Code != codes.PermissionDenied {
		t.Errorf("agent revoking: %v", err)
	}
	_, err = admin.RevokeCertificate(ctx, "not-hex", "", "")
	if !errors.As(err, &me) || me.Code != codes.InvalidArgument {
		t.Errorf("bad serial: %v", err)
	}
}
