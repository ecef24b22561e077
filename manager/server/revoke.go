package server

import (
	"context"
	"log/slog"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/quire-ha/quire/api/managerpb"
	"github.com/quire-ha/quire/authz"
	"github.com/quire-ha/quire/certs"
	"github.com/quire-ha/quire/consensus"
)

// RevokeCertificate implements managerpb.ManagerServiceServer: the serial
// goes into the revocation list in Raft; every manager's and agent's copy
// follows (FollowRevocations, the agents' poll of ListRevoked).
func (s *Server) RevokeCertificate(ctx context.Context, req *managerpb.RevokeCertificateRequest) (*managerpb.RevokedCertificates, error) {
	if _, ok := consensus.NormalizeSerial(req.GetSerial()); !ok {
		return nil, status.Errorf(codes.InvalidArgument, "revoke_certificate: serial=%q: is not a certificate serial number (hexadecimal)", req.GetSerial())
	}
	if resp, err, done := forward(s, ctx, "RevokeCertificate", req, managerpb.ManagerServiceClient.RevokeCertificate); done {
		return resp, err
	}
	by := peerName(ctx)
	if c, ok := authz.FromContext(ctx); ok && !c.Anonymous {
		by = c.Identity.String() // the original caller, also when forwarded
	}
	cmd := consensus.RevokeCertificate{Cert: consensus.RevokedCert{
		Serial: req.GetSerial(), Name: req.GetName(), Reason: req.GetReason(), By: by, At: time.Now(),
	}}
	ctx, cancel := s.requestContext(ctx)
	defer cancel()
	st, err := s.node.Propose(ctx, cmd)
	if err != nil {
		return nil, s.rpcError(err)
	}
	s.logger.Warn("manager: certificate revoked", "serial", req.GetSerial(), "name", req.GetName(), "reason", req.GetReason(), "by", by)
	return revokedToPB(st.Revoked), nil
}

// ListRevoked implements managerpb.ManagerServiceServer from this manager's
// committed state: no forwarding, so agents learn the list from any
// manager.
func (s *Server) ListRevoked(context.Context, *managerpb.ListRevokedRequest) (*managerpb.RevokedCertificates, error) {
	return revokedToPB(s.node.State().Revoked), nil
}

func revokedToPB(rs []consensus.RevokedCert) *managerpb.RevokedCertificates {
	out := &managerpb.RevokedCertificates{}
	for _, r := range rs {
		out.Certificates = append(out.Certificates, &managerpb.RevokedCertificate{
			Serial: r.Serial, Name: r.Name, Reason: r.Reason, By: r.By, RevokedAtUnixMs: r.At.UnixMilli(),
		})
	}
	return out
}

// FollowRevocations keeps list equal to node's revocation list until ctx
// ends: the manager's TLS configurations (certs.CheckRevoked) and its
// authorizer refuse a certificate from the moment its revocation is
// applied here.
func FollowRevocations(ctx context.Context, node *consensus.Node, list *certs.RevocationList, logger *slog.Logger) {
	for {
		ch := node.StateChanged()
		if list.Set(node.State().RevokedSerials()) && logger != nil {
			logger.Warn("manager: revocation list changed", "revoked", len(list.Serials()))
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return
		}
	}
}
