package manager

import (
	"context"
	"time"

	"github.com/quire-ha/quire/api/managerpb"
)

// RevokedCert is one entry of the managers' revocation list.
type RevokedCert struct {
	Serial string    `json:"serial"`
	Name   string    `json:"name,omitempty"`
	Reason string    `json:"reason,omitempty"`
	By     string    `json:"by"`
	At     time.Time `json:"at"`
}

func revokedFromPB(r *managerpb.RevokedCertificates) []RevokedCert {
	out := []RevokedCert{}
	for _, c := range r.GetCertificates() {
		out = append(out, RevokedCert{Serial: c.GetSerial(), Name: c.GetName(), Reason: c.GetReason(), By: c.GetBy(),
			At: time.UnixMilli(c.GetRevokedAtUnixMs()).UTC()})
	}
	return out
}

// RevokeCertificate adds the certificate with serial (hexadecimal) to the
// revocation list and returns the list.
func (c *Client) RevokeCertificate(ctx context.Context, serial, name, reason string) ([]RevokedCert, error) {
	var resp *managerpb.RevokedCertificates
	err := c.call(ctx, "RevokeCertificate", true, func(ctx context.Context, mc managerpb.ManagerServiceClient) (err error) {
		resp, err = mc.RevokeCertificate(ctx, &managerpb.RevokeCertificateRequest{Serial: serial, Name: name, Reason: reason})
		return err
	})
	if err != nil {
		return nil, err
	}
	return revokedFromPB(resp), nil
}

// ListRevoked returns the revocation list as the answering manager has
// applied it.
func (c *Client) ListRevoked(ctx context.Context) ([]RevokedCert, error) {
	var resp *managerpb.RevokedCertificates
	err := c.call(ctx, "ListRevoked", false, func(ctx context.Context, mc managerpb.ManagerServiceClient) (err error) {
		resp, err = mc.ListRevoked(ctx, &managerpb.ListRevokedRequest{})
		return err
	})
	if err != nil {
		return nil, err
	}
	return revokedFromPB(resp), nil
}
