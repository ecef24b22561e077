package agent

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/quire-ha/quire/localdb"
)

// Errors of the agent's role changes. They are wrapped with what happened;
// only control.go maps them to gRPC codes.
var (
	// ErrInvalid: the request itself is wrong (a zero epoch, no address).
	ErrInvalid = errors.New("invalid request")
	// ErrConflict: the request contradicts what this agent holds (its log
	// is of a newer epoch, it ends elsewhere than the election expected).
	// Retrying the same request cannot help.
	ErrConflict = errors.New("conflicts with this node's state")
)

// promoteWait bounds how long Promote waits for the new term's extraction
// to start and the database to open for writes.
const promoteWait = 30 * time.Second

// Promote makes the agent the primary of epoch. The database must hold the
// whole local log first (the old term's tail included), so it is applied;
// then the primary role starts extracting, records where the term starts,
// and only then opens writes. expectLast, if not 0, must equal the log's
// last seqno. Promote returns once the database is writable.
func (a *Agent) Promote(ctx context.Context, epoch, expectLast uint64) error {
	if epoch == 0 {
		return fmt.Errorf("%w: epoch must be at least 1", ErrInvalid)
	}
	// The managers' leader and the agent's own follower may both promote
	// it: one at a time, and a second call finds the work done.
	a.promoteMu.Lock()
	defer a.promoteMu.Unlock()
	if st := a.Status(); st.Role.Kind == RolePrimary && st.Role.Epoch == epoch && st.Writable {
		return nil
	}
	last, lastEpoch := a.txl.Last()
	if lastEpoch > epoch {
		return fmt.Errorf("%w: this log already holds epoch %d, newer than %d", ErrConflict, lastEpoch, epoch)
	}
	if expectLast != 0 && expectLast != last {
		return fmt.Errorf("%w: the election expected last seqno %d, this log ends at %d", ErrConflict, expectLast, last)
	}
	// A primary of this very term that restarts produced its log from its
	// own binlog: its database holds every record already.
	st, err := a.loadExtractStart()
	if err != nil {
		return err
	}
	if st == nil || st.Epoch != epoch {
		actx, cancel := context.WithTimeout(ctx, followTimeout)
		err := a.applyWholeLog(actx, last)
		cancel()
		if err != nil {
			return fmt.Errorf("could not apply the whole log up to seqno %d before opening writes: %w", last, err)
		}
	}
	if err := a.SetRole(Role{Kind: RolePrimary, Epoch: epoch}); err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, promoteWait)
	defer cancel()
	t := time.NewTicker(10 * time.Millisecond) // poll interval
	defer t.Stop()
	for !a.Status().Writable {
		select {
		case <-wctx.Done():
			why := "no error reported"
			if err := a.roleError(); err != nil {
				why = err.Error()
			}
			return fmt.Errorf("the primary role did not open writes within %s (%s): %w", promoteWait, why, wctx.Err())
		case <-t.C:
		}
	}
	a.log.Warn("promoted: writes open", "epoch", epoch, "first_seqno", last+1)
	return nil
}

// Repoint makes the agent a replica of the primary agent at addr in epoch:
// its database refuses client writes (fenced if it was writable), records
// after *truncate are dropped if asked, and the log streams from addr.
//
// A database that does not answer does not stop Repoint: the replica role
// streams and acknowledges the log without it, and its applier makes the
// database read-only before it applies anything (a restarted server starts
// read-only anyway).
func (a *Agent) Repoint(ctx context.Context, epoch uint64, addr string, truncate *uint64) error {
	if epoch == 0 || addr == "" {
		return fmt.Errorf("%w: epoch (≥ 1) and the primary agent's address are required", ErrInvalid)
	}
	if err := a.SetRole(Role{Kind: RoleNone, Epoch: epoch}); err != nil {
		return err
	}
	if _, err := a.fenceLocal(ctx); err != nil {
		return fmt.Errorf("fence the local database: %w", err)
	}
	if truncate != nil {
		if err := a.txl.TruncateAfter(*truncate); err != nil {
			return fmt.Errorf("%w: truncate after %d: %v", ErrConflict, *truncate, err)
		}
	}
	return a.SetRole(Role{Kind: RoleReplica, Epoch: epoch, PrimaryAgent: addr})
}

// Fence stops the primary role (no replica counts this node's records any
// more) and makes the local database refuse client writes. epoch is the
// term that deposes this node. It returns how many sessions it killed.
func (a *Agent) Fence(ctx context.Context, epoch uint64) (int, error) {
	a.log.Warn("fencing: stopping the primary role, read_only=ON, killing client sessions", "fencing_epoch", epoch)
	if err := a.SetRole(Role{Kind: RoleNone, Epoch: max(epoch, a.Status().Role.Epoch)}); err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, 3*localdb.StatementTimeout)
	defer cancel()
	killed, err := localdb.Fence(ctx, a.db)
	if err != nil {
		return killed, err
	}
	a.log.Warn("fenced", "sessions_killed", killed)
	return killed, nil
}

// fenceLocal makes the local database refuse client writes if it is
// writable. A database that does not answer cannot take writes; when it
// comes back it starts read-only (fail closed), so that is not an error.
func (a *Agent) fenceLocal(ctx context.Context) (int, error) {
	ro, err := localdb.Probe(ctx, a.db, probeTimeout)
	switch {
	case err != nil:
		a.log.Warn("local database does not answer; it starts read-only when it comes back", "err", err)
		return 0, nil
	case ro:
		return 0, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 3*localdb.StatementTimeout)
	defer cancel()
	return localdb.Fence(ctx, a.db)
}

func (a *Agent) roleError() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.roleErr
}
