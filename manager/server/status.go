package server

import (
	"fmt"
	"math"
	"net"
	"time"

	"github.com/quire-ha/quire/api/managerpb"
	"github.com/quire-ha/quire/consensus"
	"github.com/quire-ha/quire/manager"
)

// This file holds the server's decisions as pure functions over plain
// values: what an agent should be, how a report is checked, what a
// primary's report asks the leader to record, and the status table.

// Position is the last heartbeat of one agent as the leader received it.
type Position struct {
	manager.Report
	// Received is when the leader received it (its own clock).
	Received time.Time
}

// Reachable reports whether the heartbeat is at most timeout old at now.
func (p Position) Reachable(now time.Time, timeout time.Duration) bool {
	return !p.Received.IsZero() && now.Sub(p.Received) <= timeout
}

// assignedRole is what member id should be in st.
func assignedRole(st consensus.State, id string) manager.Role {
	switch {
	case st.Epoch == 0:
		return manager.RoleNone
	case id == st.Primary:
		return manager.RolePrimary
	default:
		return manager.RoleReplica
	}
}

// assignment answers a heartbeat or registration of member id; retain is
// the retain-from floor (retainFrom).
func assignment(st consensus.State, id, leader string, warnings []string, retain uint64) *managerpb.Assignment {
	a := &managerpb.Assignment{
		Role:              string(assignedRole(st, id)),
		Epoch:             st.Epoch,
		Primary:           st.Primary,
		K:                 int32(st.K),
		SyncSet:           st.SyncSet,
		InSyncSet:         st.InSyncSet(id),
		Policy:            string(st.Policy),
		Degraded:          degradedToPB(st.Degraded),
		CommitIndex:       st.CommitIndex,
		FailoverTimeoutMs: st.Settings.FailoverTimeout.Milliseconds(),
		LeaderId:          leader,
		Warnings:          warnings,
		RetainFromSeqno:   retain,
	}
	if p, ok := st.Member(st.Primary); ok {
		a.PrimaryAgentAddr = p.AgentAddr
		a.PrimaryMysqlAddr = p.MySQLAddr
	}
	return a
}

// retainFrom is the retain-from floor: the lowest seqno some member may
// still need from any node's log (DESIGN.md §2, "The transaction log"). Every
// agent keeps that record and all after it; it may purge whole segments
// below it (and below what it needs itself). 0 means purge nothing.
//
// Every member counts, not only the sync set: any of them may stream from
// any node that becomes primary. A member needs the record at its durable
// seqno and everything after: the primary's stream handshake compares the
// member's last record (at or above its durable seqno) with its own before
// it streams the ones after. A member whose last record is of an older
// epoch than the current one may hold a tail the current history lacks;
// the handshake then looks for the fork point, which lies at or above the
// record just before the first seqno of the epoch that followed the
// member's, so the member needs that record too.
//
// The floor is 0 before the first primary, while any member has not
// reported to this leader (positions live in memory and are forgotten at a
// leader change: the new leader purges nothing until it has heard from
// every member), and when the epoch history does not cover a member's last
// epoch. A member that stays down holds the floor where it was: remove it
// from the cluster to let the logs be purged past it.
func retainFrom(st consensus.State, pos map[string]Position) uint64 {
	if st.Epoch == 0 || len(st.Members) == 0 {
		return 0
	}
	floor := uint64(math.MaxUint64)
	for _, m := range st.Members {
		p, ok := pos[m.ID]
		if !ok || p.Received.IsZero() {
			return 0
		}
		need := p.DurableSeqno
		if p.LastEpoch < st.Epoch {
			// EpochHistory[i] is epoch i+1: the entry after LastEpoch.
			if p.LastEpoch >= uint64(len(st.EpochHistory)) {
				return 0
			}
			next := st.EpochHistory[p.LastEpoch]
			need = min(need, next.FirstSeqno-1)
		}
		floor = min(floor, need)
	}
	return floor
}

// checkReport checks a heartbeat's shape and its node's membership. The
// error names the field and value.
func checkReport(st consensus.State, r manager.Report) error {
	if r.NodeID == "" {
		return fmt.Errorf(`heartbeat: node_id="": is empty`)
	}
	if _, ok := st.Member(r.NodeID); !ok {
		return fmt.Errorf("heartbeat: node_id=%q: is not a member (add it with `quire members add`)", r.NodeID)
	}
	if !r.Role.Valid() {
		return fmt.Errorf("heartbeat: role=%q: unknown role (want %q, %q or %q)", r.Role, manager.RolePrimary, manager.RoleReplica, manager.RoleNone)
	}
	if r.LastEpoch > r.Epoch {
		return fmt.Errorf("heartbeat: last_epoch=%d: is above the node's epoch %d", r.LastEpoch, r.Epoch)
	}
	for ch := range r.Applied {
		if ch == "" {
			return fmt.Errorf(`heartbeat: applied: channel name "" is empty`)
		}
	}
	if len(r.Error) > manager.MaxErrorLen {
		return fmt.Errorf("heartbeat: error: is %d bytes long, more than %d", len(r.Error), manager.MaxErrorLen)
	}
	return nil
}

// checkRegistration checks an agent's registration and returns warnings
// for addresses that differ from its member record.
func checkRegistration(st consensus.State, req *managerpb.RegisterAgentRequest) ([]string, error) {
	id := req.GetNodeId()
	if id == "" {
		return nil, fmt.Errorf(`register_agent: node_id="": is empty`)
	}
	m, ok := st.Member(id)
	if !ok {
		return nil, fmt.Errorf("register_agent: node_id=%q: is not a member (add it with `quire members add`)", id)
	}
	var warnings []string
	for _, a := range []struct{ field, got, want string }{
		{"agent_addr", req.GetAgentAddr(), m.AgentAddr},
		{"mysql_addr", req.GetMysqlAddr(), m.MySQLAddr},
	} {
		if a.got == "" {
			return nil, fmt.Errorf(`register_agent: %s="": is empty`, a.field)
		}
		if _, p, err := net.SplitHostPort(a.got); err != nil || p == "" {
			return nil, fmt.Errorf("register_agent: %s=%q: is not host:port", a.field, a.got)
		}
		if !sameAddr(a.got, a.want) {
			warnings = append(warnings, fmt.Sprintf("%s %q differs from the member record's %q (other members use the record; fix one of them, e.g. with `quire members update`)", a.field, a.got, a.want))
		}
	}
	return warnings, nil
}

// sameAddr reports whether the address an agent reports (possibly a
// wildcard listen address such as ":7400" or "0.0.0.0:7400") can be the
// recorded one.
func sameAddr(reported, recorded string) bool {
	if reported == recorded {
		return true
	}
	rh, rp, err1 := net.SplitHostPort(reported)
	mh, mp, err2 := net.SplitHostPort(recorded)
	if err1 != nil || err2 != nil || rp != mp {
		return false
	}
	if rh == mh || rh == "" {
		return true
	}
	ip := net.ParseIP(rh)
	return ip != nil && ip.IsUnspecified()
}

// followUp is what a heartbeat asks the leader to record in Raft.
type followUp struct {
	// mark, if set, must commit before the answer: the primary waits for
	// the degraded marker before its commits continue.
	mark *consensus.MarkDegraded
	// clear removes the degraded marker (in the background).
	clear bool
	// record is a commit index to record (in the background); 0 for none.
	record uint64
}

// primaryFollowUp decides what a heartbeat asks of Raft. Only the current
// primary's report, in the current epoch, counts:
//   - degraded set, policy degrade and no marker yet: mark "async since
//     commit index + 1";
//   - degraded clear while marked, and the primary's commit index has
//     reached its durable seqno (K members hold everything): clear;
//   - a commit index above the recorded one: record it.
func primaryFollowUp(st consensus.State, r manager.Report, now time.Time) followUp {
	var f followUp
	if st.Epoch == 0 || r.NodeID != st.Primary || r.Epoch != st.Epoch || r.Role != manager.RolePrimary {
		return f
	}
	switch {
	case r.Degraded && st.Degraded == nil && st.Policy == consensus.PolicyDegrade:
		reason := fmt.Sprintf("primary %s cannot get k=%d acknowledgements from the sync set %v", r.NodeID, st.K, st.SyncSet)
		if r.Error != "" {
			reason += ": " + r.Error
		}
		f.mark = &consensus.MarkDegraded{AsyncSince: max(r.CommitIndex, st.CommitIndex) + 1, Reason: reason, At: now}
	case !r.Degraded && st.Degraded != nil && r.CommitIndex >= r.DurableSeqno:
		f.clear = true
	}
	if r.CommitIndex > st.CommitIndex {
		f.record = r.CommitIndex
	}
	return f
}

// nodeStatuses builds the status of every member from the leader's
// positions at now, and the best known commit seqno.
func nodeStatuses(st consensus.State, pos map[string]Position, now time.Time) ([]*managerpb.NodeStatus, uint64) {
	commit := st.CommitIndex
	prim, hasPrim := pos[st.Primary]
	hasPrim = hasPrim && st.Primary != ""
	if hasPrim && prim.Epoch == st.Epoch && prim.CommitIndex > commit {
		commit = prim.CommitIndex
	}
	nodes := make([]*managerpb.NodeStatus, 0, len(st.Members))
	for _, m := range st.Members {
		n := &managerpb.NodeStatus{
			Member:    memberToPB(m),
			Role:      string(assignedRole(st, m.ID)),
			InSyncSet: st.InSyncSet(m.ID),
		}
		nodes = append(nodes, n)
		p, ok := pos[m.ID]
		if !ok {
			continue
		}
		n.ReportedRole = string(p.Role)
		n.Epoch = p.Epoch
		n.Reachable = p.Reachable(now, st.Settings.FailoverTimeout)
		n.DatabaseHealthy = p.DatabaseHealthy
		n.Healthy = nodeHealthy(st, m.ID, p.Report, n.Reachable)
		n.ReadOnly = p.ReadOnly
		n.DurableSeqno = p.DurableSeqno
		n.AppliedSeqno = p.AppliedSeqno
		n.CommitIndex = p.CommitIndex
		n.Applied = p.Applied
		n.LastEpoch = p.LastEpoch
		n.LastHeartbeatUnixMicro = unixMicro(p.Received)
		n.Degraded = p.Degraded
		n.Error = p.Error
		n.PrimaryStream = p.PrimaryStream
		n.StreamLostMs = p.StreamLost.Milliseconds()
		n.DatabaseGone = p.DatabaseGone
		if !hasPrim {
			continue
		}
		if m.ID == st.Primary {
			zero, zeroS := uint64(0), 0.0
			n.LagTx, n.LagSeconds = &zero, &zeroS
			continue
		}
		lag, applyLag := sub(prim.DurableSeqno, p.DurableSeqno), sub(prim.DurableSeqno, p.AppliedSeqno)
		n.LagTx, n.ApplyLagTx = &lag, &applyLag
		switch {
		case applyLag == 0:
			s := 0.0
			n.LagSeconds = &s
		case !prim.LastCommitTime.IsZero() && !p.AppliedCommitTime.IsZero():
			s := max(0, prim.LastCommitTime.Sub(p.AppliedCommitTime).Seconds())
			n.LagSeconds = &s
		}
	}
	return nodes, commit
}

// nodeHealthy decides whether member id is healthy: its heartbeat is
// recent, its database answers, it has taken the role the state assigns
// it in the current epoch, it reports no error, and, for the primary, its
// database takes writes.
func nodeHealthy(st consensus.State, id string, r manager.Report, reachable bool) bool {
	want := assignedRole(st, id)
	return reachable && r.DatabaseHealthy && r.Error == "" &&
		(want == manager.RoleNone || r.Role == want && r.Epoch == st.Epoch) &&
		(want != manager.RolePrimary || !r.ReadOnly)
}

// sub is a-b, or 0 when b is larger.
func sub(a, b uint64) uint64 {
	if b >= a {
		return 0
	}
	return a - b
}
