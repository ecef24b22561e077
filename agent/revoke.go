package agent

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/quire-ha/quire/certs"
	"github.com/quire-ha/quire/manager"
)

// revocationPoll is how often a managed agent asks the managers for the
// revocation list.
const revocationPoll = 10 * time.Second

func (a *Agent) revocationFile() string { return filepath.Join(a.cfg.DataDir, "revoked.json") }

// loadRevocations reads the revocation list the agent saved last, so that
// a restarted agent refuses revoked certificates before it reaches the
// managers.
func (a *Agent) loadRevocations() error {
	a.revoked = certs.NewRevocationList()
	if err := a.revoked.Load(a.revocationFile()); err != nil {
		return fmt.Errorf("agent: %w (remove the file to start with an empty list; the managers send theirs)", err)
	}
	return nil
}

// followRevocations keeps the agent's revocation list equal to the
// managers' until ctx ends, saving each change.
func (a *Agent) followRevocations(ctx context.Context) {
	ccfg := manager.ClientConfig{Addrs: a.cfg.Managers, Logger: a.log, Insecure: a.cfg.TLS.InsecurePlaintext}
	if !a.cfg.TLS.InsecurePlaintext {
		tc, err := certs.ClientConfig(certs.Files{CA: a.cfg.TLS.CAFile, Cert: a.cfg.TLS.CertFile, Key: a.cfg.TLS.KeyFile}, "")
		if err != nil {
			a.log.Error("revocation list: TLS", "err", err)
			return
		}
		certs.RequirePeer(tc, certs.WantRole(certs.RoleManager))
		certs.CheckRevoked(tc, a.revoked)
		ccfg.TLS = tc
	}
	cli, err := manager.NewClient(ccfg)
	if err != nil {
		a.log.Error("revocation list: managers' client", "err", err)
		return
	}
	defer cli.Close()
	t := time.NewTicker(revocationPoll)
	defer t.Stop()
	for {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		list, err := cli.ListRevoked(rctx)
		cancel()
		if err == nil {
			serials := make([]string, len(list))
			for i, r := range list {
				serials[i] = r.Serial
			}
			if a.revoked.Set(serials) {
				a.log.Warn("revocation list changed: these certificates are refused from now on", "serials", serials)
				if err := a.revoked.Save(a.revocationFile()); err != nil {
					a.log.Error("revocation list: save", "err", err)
				}
			}
		} else if ctx.Err() == nil {
			a.log.Debug("revocation list: managers did not answer", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
