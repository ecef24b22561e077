package server

import (
	"fmt"
	"time"

	"github.com/quire-ha/quire/api/managerpb"
	"github.com/quire-ha/quire/consensus"
)

func stateToPB(s consensus.State) *managerpb.ClusterState {
	p := &managerpb.ClusterState{
		K:                 int32(s.K),
		SyncSet:           s.SyncSet,
		Policy:            string(s.Policy),
		Epoch:             s.Epoch,
		Primary:           s.Primary,
		Degraded:          degradedToPB(s.Degraded),
		CommitIndex:       s.CommitIndex,
		FailoverTimeoutMs: s.Settings.FailoverTimeout.Milliseconds(),
		AntiFlapWindowMs:  s.Settings.AntiFlapWindow.Milliseconds(),
	}
	for _, m := range s.Members {
		p.Members = append(p.Members, memberToPB(m))
	}
	for _, e := range s.EpochHistory {
		p.EpochHistory = append(p.EpochHistory, epochToPB(e))
	}
	p.LastFailover = failoverToPB(s.LastFailover)
	return p
}

func epochToPB(e consensus.EpochEntry) *managerpb.EpochEntry {
	p := &managerpb.EpochEntry{Epoch: e.Epoch, Primary: e.Primary, FirstSeqno: e.FirstSeqno,
		AtUnixMicro: unixMicro(e.At), Automatic: e.Automatic, Reason: e.Reason}
	if c := e.Certificate; c != nil {
		p.Certificate = &managerpb.Certificate{CommitIndex: c.CommitIndex, CommitIndexFrom: c.CommitIndexFrom,
			PrimarySeqno: c.PrimarySeqno, PrimaryEpoch: c.PrimaryEpoch, LossPossibleSince: c.LossPossibleSince}
		if len(c.Positions) > 0 {
			p.Certificate.Positions = map[string]string{}
			for id, pos := range c.Positions {
				p.Certificate.Positions[id] = fmt.Sprintf("%d/%d", pos.Epoch, pos.Seqno)
			}
		}
	}
	return p
}

func failoverToPB(f *consensus.Failover) *managerpb.Failover {
	if f == nil {
		return nil
	}
	return &managerpb.Failover{
		AtUnixMicro: unixMicro(f.At), Epoch: f.Epoch, From: f.From, To: f.To, Reason: f.Reason,
		Acknowledged: f.Acknowledged, AcknowledgedBy: f.AcknowledgedBy, AcknowledgedAtUnixMicro: unixMicro(f.AcknowledgedAt),
	}
}

func historyToPB(s consensus.State) *managerpb.HistoryResponse {
	p := &managerpb.HistoryResponse{LastFailover: failoverToPB(s.LastFailover)}
	for _, d := range s.Decisions {
		p.Decisions = append(p.Decisions, &managerpb.Decision{AtUnixMicro: unixMicro(d.At), Kind: string(d.Kind), Epoch: d.Epoch,
			Node: d.Node, By: d.By, Reason: d.Reason})
	}
	for _, e := range s.EpochHistory {
		p.Epochs = append(p.Epochs, epochToPB(e))
	}
	return p
}

func memberToPB(m consensus.Member) *managerpb.Member {
	return &managerpb.Member{
		Id: m.ID, MysqlAddr: m.MySQLAddr, AgentAddr: m.AgentAddr, ManagerAddr: m.ManagerAddr,
		Priority: int32(m.Priority), MayBePrimary: m.MayBePrimary,
	}
}

func memberFromPB(p *managerpb.Member) consensus.Member {
	return consensus.Member{
		ID: p.GetId(), MySQLAddr: p.GetMysqlAddr(), AgentAddr: p.GetAgentAddr(), ManagerAddr: p.GetManagerAddr(),
		Priority: int(p.GetPriority()), MayBePrimary: p.GetMayBePrimary(),
	}
}

func degradedToPB(d *consensus.Degraded) *managerpb.Degraded {
	if d == nil {
		return nil
	}
	return &managerpb.Degraded{AsyncSince: d.AsyncSince, Reason: d.Reason, AtUnixMicro: unixMicro(d.At)}
}

func unixMicro(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMicro()
}
