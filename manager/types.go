package manager

import (
	"maps"
	"slices"
	"time"

	"github.com/quire-ha/quire/api/managerpb"
)

// Role is what an agent is, or what the leader wants it to be.
type Role string

// The roles.
const (
	// RoleNone: no primary exists yet (epoch 0), or the agent has no role.
	RoleNone Role = "none"
	// RolePrimary is the primary of the current epoch.
	RolePrimary Role = "primary"
	// RoleReplica is every other member once a primary exists.
	RoleReplica Role = "replica"
)

// Valid reports whether r is one of the roles.
func (r Role) Valid() bool { return r == RoleNone || r == RolePrimary || r == RoleReplica }

// MaxErrorLen is the longest Report.Error a manager accepts.
const MaxErrorLen = 4096

// Registration announces an agent to the managers.
type Registration struct {
	NodeID string
	// AgentAddr is the host:port the agent serves gRPC on.
	AgentAddr string
	// MySQLAddr is the host:port of the agent's mariadbd.
	MySQLAddr string
}

// Report is what an agent tells the leader in every heartbeat.
type Report struct {
	NodeID string
	// Role is what the agent currently is.
	Role Role
	// Epoch is the newest cluster epoch the agent knows.
	Epoch uint64
	// DatabaseHealthy: the agent reaches its mariadbd and it answers.
	DatabaseHealthy bool
	ReadOnly        bool
	// DurableSeqno: every log record up to it is fsynced on this node.
	DurableSeqno uint64
	// LastEpoch is the epoch of the node's last log record.
	LastEpoch uint64
	// CommitIndex is the highest seqno the agent knows K sync-set members
	// hold.
	CommitIndex uint64
	// AppliedSeqno: every seqno up to it is applied to the database. Zero
	// means the smallest value of Applied.
	AppliedSeqno uint64
	// Applied maps each applier channel to the seqno of its restart row.
	Applied map[string]uint64
	// Degraded: the primary's ack gate cannot get K acknowledgements and
	// waits for the degraded marker (see [Assignment.Degraded]) before
	// commits continue.
	Degraded bool
	// Error says what is wrong, if anything (at most [MaxErrorLen] bytes).
	Error string
	// LastCommitTime is the source commit time of the newest durable record;
	// AppliedCommitTime that of the newest applied one. Zero when unknown.
	LastCommitTime    time.Time
	AppliedCommitTime time.Time
	// PrimaryStream (replicas): the agent holds a live log stream from the
	// primary of its epoch. StreamLost is how long it has been without one
	// (a new replica role counts as a loss), 0 while it has one.
	PrimaryStream bool
	StreamLost    time.Duration
	// DatabaseGone: the last probe found nothing listening at the
	// database's address (connection refused, no socket): the server
	// process is gone. The managers fail a primary over at once on it.
	DatabaseGone bool
}

// Assignment is what the leader wants an agent to be.
type Assignment struct {
	// Role is RolePrimary for the primary of Epoch, RoleReplica for every
	// other member once a primary exists, RoleNone before the first primary.
	Role             Role
	Epoch            uint64
	Primary          string
	PrimaryAgentAddr string
	PrimaryMySQLAddr string
	K                int
	SyncSet          []string
	// InSyncSet reports whether this node is in the sync set.
	InSyncSet bool
	Policy    string
	// Degraded is non-nil while commits do not wait for K acknowledgements.
	Degraded *Degraded
	// CommitIndex is the commit index last recorded in Raft.
	CommitIndex     uint64
	FailoverTimeout time.Duration
	// Leader is the ID of the manager that answered as leader.
	Leader string
	// Warnings lists problems the leader noticed (e.g. addresses that
	// differ from the member record).
	Warnings []string
	// RetainFrom is the lowest seqno some member may still need from any
	// node's log; agents purge only records below it. 0 means purge nothing
	// (the leader does not know every member's position yet).
	RetainFrom uint64
}

// Degraded is the marker "async since seqno AsyncSince".
type Degraded struct {
	AsyncSince uint64    `json:"async_since"`
	Reason     string    `json:"reason"`
	At         time.Time `json:"at"`
}

// Member is one database host.
type Member struct {
	ID        string `json:"id"`
	MySQLAddr string `json:"mysql"`
	AgentAddr string `json:"agent"`
	// ManagerAddr is the Raft address of the host's manager, if any.
	ManagerAddr string `json:"manager,omitempty"`
	Priority    int    `json:"priority"`
	// MayBePrimary is false for members that must never be promoted. The
	// zero value is false: set it for members that may be.
	MayBePrimary bool `json:"may_be_primary"`
}

// EpochEntry records one primary term.
type EpochEntry struct {
	Epoch      uint64 `json:"epoch"`
	Primary    string `json:"primary"`
	FirstSeqno uint64 `json:"first_seqno"`
	// At is when the term was committed (zero if not recorded).
	At time.Time `json:"at,omitzero"`
	// Automatic: started by automatic failover; Reason says why.
	Automatic bool   `json:"automatic,omitempty"`
	Reason    string `json:"reason,omitempty"`
	// Certificate is the promotion's failover certificate, if any.
	Certificate *Certificate `json:"certificate,omitempty"`
}

// Certificate is the evidence a promotion was decided on: the highest
// commit index any node reported and the new primary's last seqno, never
// lower unless the cluster was degraded.
type Certificate struct {
	CommitIndex     uint64 `json:"commit_index"`
	CommitIndexFrom string `json:"commit_index_from,omitempty"`
	PrimarySeqno    uint64 `json:"primary_seqno"`
	PrimaryEpoch    uint64 `json:"primary_epoch"`
	// Positions maps each member the election heard to its last record,
	// "epoch/seqno".
	Positions         map[string]string `json:"positions,omitempty"`
	LossPossibleSince uint64            `json:"loss_possible_since,omitempty"`
}

// Decision is one entry of the failover decision log.
type Decision struct {
	At time.Time `json:"at"`
	// Kind is "detection", "refusal", "promotion" or "note".
	Kind   string `json:"kind"`
	Epoch  uint64 `json:"epoch"`
	Node   string `json:"node,omitempty"`
	By     string `json:"by,omitempty"`
	Reason string `json:"reason"`
}

// History is the failover decision log and the epoch history.
type History struct {
	Decisions    []Decision   `json:"decisions"`
	Epochs       []EpochEntry `json:"epochs"`
	LastFailover *Failover    `json:"last_failover"`
}

// FailoverStatus is the leader's failover driver's view of the primary.
type FailoverStatus struct {
	// Automatic: the leader fails over automatically.
	Automatic bool `json:"automatic"`
	// State is "healthy", "suspect", "failed", "refused", "promoting" or
	// "off".
	State  string    `json:"state"`
	Reason string    `json:"reason,omitempty"`
	Since  time.Time `json:"since,omitzero"`
}

// Failover is the record of the last automatic failover.
type Failover struct {
	At             time.Time `json:"at"`
	Epoch          uint64    `json:"epoch"`
	From           string    `json:"from,omitempty"`
	To             string    `json:"to"`
	Reason         string    `json:"reason"`
	Acknowledged   bool      `json:"acknowledged"`
	AcknowledgedBy string    `json:"acknowledged_by,omitempty"`
	AcknowledgedAt time.Time `json:"acknowledged_at,omitzero"`
}

// ClusterState is the replicated cluster state as the managers hold it.
type ClusterState struct {
	Members      []Member     `json:"members"`
	K            int          `json:"k"`
	SyncSet      []string     `json:"sync_set"`
	Policy       string       `json:"policy"`
	Epoch        uint64       `json:"epoch"`
	Primary      string       `json:"primary"`
	EpochHistory []EpochEntry `json:"epoch_history"`
	Degraded     *Degraded    `json:"degraded"`
	// CommitIndex is the commit index last recorded in Raft.
	CommitIndex     uint64        `json:"recorded_commit_index"`
	LastFailover    *Failover     `json:"last_failover"`
	FailoverTimeout time.Duration `json:"failover_timeout_ns"`
	AntiFlapWindow  time.Duration `json:"anti_flap_window_ns"`
}

// Settings are the operator's tunables; nil fields keep their value.
type Settings struct {
	FailoverTimeout *time.Duration
	AntiFlapWindow  *time.Duration
}

// Status is the cluster state with every member's last reported position.
type Status struct {
	ClusterState
	// Leader is the leader manager's ID, LeaderAddr its gRPC address.
	Leader     string `json:"leader"`
	LeaderAddr string `json:"leader_addr"`
	// CommitSeqno is the best known commit index: the primary's report when
	// it is newer than the one recorded in Raft.
	CommitSeqno uint64        `json:"commit_seqno"`
	Managers    []ManagerInfo `json:"managers"`
	Nodes       []NodeStatus  `json:"nodes"`
	// Failover is what the leader's failover driver sees, nil from a
	// manager that does not report it.
	Failover *FailoverStatus `json:"failover,omitempty"`
}

// ManagerInfo is one manager of the Raft configuration.
type ManagerInfo struct {
	ID       string `json:"id"`
	RaftAddr string `json:"raft_addr"`
	GRPCAddr string `json:"grpc_addr"`
	Leader   bool   `json:"leader"`
}

// NodeStatus is one member and its last heartbeat as the leader saw it.
type NodeStatus struct {
	ID           string `json:"id"`
	MySQLAddr    string `json:"mysql"`
	AgentAddr    string `json:"agent"`
	Priority     int    `json:"priority"`
	MayBePrimary bool   `json:"may_be_primary"`
	// Role is the assigned role, ReportedRole what the agent last said.
	Role         Role `json:"role"`
	ReportedRole Role `json:"reported_role,omitempty"`
	// Epoch is the epoch the agent last reported.
	Epoch uint64 `json:"epoch"`
	// Reachable: a heartbeat arrived within the failover timeout.
	Reachable bool `json:"reachable"`
	// Healthy: reachable and its database is healthy.
	Healthy         bool              `json:"healthy"`
	DatabaseHealthy bool              `json:"database_healthy"`
	ReadOnly        bool              `json:"read_only"`
	DurableSeqno    uint64            `json:"durable_seqno"`
	AppliedSeqno    uint64            `json:"applied_seqno"`
	CommitIndex     uint64            `json:"commit_index"`
	LastEpoch       uint64            `json:"last_epoch"`
	Applied         map[string]uint64 `json:"applied,omitempty"`
	// LagTx is the primary's durable seqno minus this node's, nil while
	// unknown; ApplyLagTx the same against the applied seqno.
	LagTx      *uint64 `json:"lag_tx"`
	ApplyLagTx *uint64 `json:"apply_lag_tx"`
	// LagSeconds is how much older this node's newest applied transaction is
	// than the primary's newest durable one (0 when caught up), nil while
	// unknown.
	LagSeconds *float64 `json:"lag_seconds"`
	InSyncSet  bool     `json:"in_sync_set"`
	// LastHeartbeat is zero if the leader has heard nothing yet.
	LastHeartbeat time.Time `json:"last_heartbeat,omitzero"`
	Degraded      bool      `json:"degraded"`
	Error         string    `json:"error,omitempty"`
	// PrimaryStream, StreamLost and DatabaseGone are the node's last
	// report (see [Report]).
	PrimaryStream bool          `json:"primary_stream"`
	StreamLost    time.Duration `json:"stream_lost_ns,omitempty"`
	DatabaseGone  bool          `json:"database_gone,omitempty"`
}

// ReportToPB returns the wire form of r.
func ReportToPB(r Report) *managerpb.HeartbeatRequest {
	return &managerpb.HeartbeatRequest{
		NodeId:                 r.NodeID,
		Role:                   string(r.Role),
		Epoch:                  r.Epoch,
		DatabaseHealthy:        r.DatabaseHealthy,
		ReadOnly:               r.ReadOnly,
		DurableSeqno:           r.DurableSeqno,
		LastEpoch:              r.LastEpoch,
		CommitIndex:            r.CommitIndex,
		AppliedSeqno:           r.AppliedSeqno,
		Applied:                maps.Clone(r.Applied),
		Degraded:               r.Degraded,
		Error:                  r.Error,
		LastCommitUnixMicro:    unixMicro(r.LastCommitTime),
		AppliedCommitUnixMicro: unixMicro(r.AppliedCommitTime),
		PrimaryStream:          r.PrimaryStream,
		StreamLostMs:           r.StreamLost.Milliseconds(),
		DatabaseGone:           r.DatabaseGone,
	}
}

// ReportFromPB returns the report a heartbeat carries. AppliedSeqno is
// filled in from Applied when the agent left it 0.
func ReportFromPB(p *managerpb.HeartbeatRequest) Report {
	r := Report{
		NodeID:            p.GetNodeId(),
		Role:              Role(p.GetRole()),
		Epoch:             p.GetEpoch(),
		DatabaseHealthy:   p.GetDatabaseHealthy(),
		ReadOnly:          p.GetReadOnly(),
		DurableSeqno:      p.GetDurableSeqno(),
		LastEpoch:         p.GetLastEpoch(),
		CommitIndex:       p.GetCommitIndex(),
		AppliedSeqno:      p.GetAppliedSeqno(),
		Applied:           maps.Clone(p.GetApplied()),
		Degraded:          p.GetDegraded(),
		Error:             p.GetError(),
		LastCommitTime:    fromMicro(p.GetLastCommitUnixMicro()),
		AppliedCommitTime: fromMicro(p.GetAppliedCommitUnixMicro()),
		PrimaryStream:     p.GetPrimaryStream(),
		StreamLost:        time.Duration(max(0, p.GetStreamLostMs())) * time.Millisecond,
		DatabaseGone:      p.GetDatabaseGone(),
	}
	if r.AppliedSeqno == 0 && len(r.Applied) > 0 {
		r.AppliedSeqno = slices.Min(slices.Collect(maps.Values(r.Applied)))
	}
	return r
}

// memberToPB returns the wire form of m.
func memberToPB(m Member) *managerpb.Member {
	return &managerpb.Member{
		Id: m.ID, MysqlAddr: m.MySQLAddr, AgentAddr: m.AgentAddr, ManagerAddr: m.ManagerAddr,
		Priority: int32(m.Priority), MayBePrimary: m.MayBePrimary,
	}
}

func memberFromPB(p *managerpb.Member) Member {
	return Member{
		ID: p.GetId(), MySQLAddr: p.GetMysqlAddr(), AgentAddr: p.GetAgentAddr(), ManagerAddr: p.GetManagerAddr(),
		Priority: int(p.GetPriority()), MayBePrimary: p.GetMayBePrimary(),
	}
}

func membersFromPB(ps []*managerpb.Member) []Member {
	ms := make([]Member, len(ps))
	for i, p := range ps {
		ms[i] = memberFromPB(p)
	}
	return ms
}

func degradedFromPB(p *managerpb.Degraded) *Degraded {
	if p == nil {
		return nil
	}
	return &Degraded{AsyncSince: p.GetAsyncSince(), Reason: p.GetReason(), At: fromMicro(p.GetAtUnixMicro())}
}

func assignmentFromPB(p *managerpb.Assignment) Assignment {
	return Assignment{
		Role:             Role(p.GetRole()),
		Epoch:            p.GetEpoch(),
		Primary:          p.GetPrimary(),
		PrimaryAgentAddr: p.GetPrimaryAgentAddr(),
		PrimaryMySQLAddr: p.GetPrimaryMysqlAddr(),
		K:                int(p.GetK()),
		SyncSet:          nonNil(p.GetSyncSet()),
		InSyncSet:        p.GetInSyncSet(),
		Policy:           p.GetPolicy(),
		Degraded:         degradedFromPB(p.GetDegraded()),
		CommitIndex:      p.GetCommitIndex(),
		FailoverTimeout:  time.Duration(p.GetFailoverTimeoutMs()) * time.Millisecond,
		Leader:           p.GetLeaderId(),
		Warnings:         p.GetWarnings(),
		RetainFrom:       p.GetRetainFromSeqno(),
	}
}

func stateFromPB(p *managerpb.ClusterState) ClusterState {
	s := ClusterState{
		Members:         membersFromPB(p.GetMembers()),
		K:               int(p.GetK()),
		SyncSet:         nonNil(p.GetSyncSet()),
		Policy:          p.GetPolicy(),
		Epoch:           p.GetEpoch(),
		Primary:         p.GetPrimary(),
		EpochHistory:    []EpochEntry{},
		Degraded:        degradedFromPB(p.GetDegraded()),
		CommitIndex:     p.GetCommitIndex(),
		FailoverTimeout: time.Duration(p.GetFailoverTimeoutMs()) * time.Millisecond,
		AntiFlapWindow:  time.Duration(p.GetAntiFlapWindowMs()) * time.Millisecond,
	}
	for _, e := range p.GetEpochHistory() {
		s.EpochHistory = append(s.EpochHistory, epochFromPB(e))
	}
	s.LastFailover = failoverFromPB(p.GetLastFailover())
	return s
}

func epochFromPB(e *managerpb.EpochEntry) EpochEntry {
	out := EpochEntry{Epoch: e.GetEpoch(), Primary: e.GetPrimary(), FirstSeqno: e.GetFirstSeqno(),
		At: fromMicro(e.GetAtUnixMicro()), Automatic: e.GetAutomatic(), Reason: e.GetReason()}
	if c := e.GetCertificate(); c != nil {
		out.Certificate = &Certificate{CommitIndex: c.GetCommitIndex(), CommitIndexFrom: c.GetCommitIndexFrom(),
			PrimarySeqno: c.GetPrimarySeqno(), PrimaryEpoch: c.GetPrimaryEpoch(), Positions: maps.Clone(c.GetPositions()),
			LossPossibleSince: c.GetLossPossibleSince()}
	}
	return out
}

func failoverFromPB(f *managerpb.Failover) *Failover {
	if f == nil {
		return nil
	}
	return &Failover{
		At: fromMicro(f.GetAtUnixMicro()), Epoch: f.GetEpoch(), From: f.GetFrom(), To: f.GetTo(), Reason: f.GetReason(),
		Acknowledged: f.GetAcknowledged(), AcknowledgedBy: f.GetAcknowledgedBy(), AcknowledgedAt: fromMicro(f.GetAcknowledgedAtUnixMicro()),
	}
}

func historyFromPB(p *managerpb.HistoryResponse) History {
	h := History{Decisions: []Decision{}, Epochs: []EpochEntry{}, LastFailover: failoverFromPB(p.GetLastFailover())}
	for _, d := range p.GetDecisions() {
		h.Decisions = append(h.Decisions, Decision{At: fromMicro(d.GetAtUnixMicro()), Kind: d.GetKind(), Epoch: d.GetEpoch(),
			Node: d.GetNode(), By: d.GetBy(), Reason: d.GetReason()})
	}
	for _, e := range p.GetEpochs() {
		h.Epochs = append(h.Epochs, epochFromPB(e))
	}
	return h
}

func statusFromPB(p *managerpb.StatusResponse) Status {
	st := Status{
		ClusterState: stateFromPB(p.GetState()),
		Leader:       p.GetLeaderId(),
		LeaderAddr:   p.GetLeaderGrpcAddr(),
		CommitSeqno:  p.GetCommitSeqno(),
		Managers:     []ManagerInfo{},
		Nodes:        []NodeStatus{},
	}
	for _, m := range p.GetManagers() {
		st.Managers = append(st.Managers, ManagerInfo{ID: m.GetId(), RaftAddr: m.GetRaftAddr(), GRPCAddr: m.GetGrpcAddr(), Leader: m.GetLeader()})
	}
	for _, n := range p.GetNodes() {
		m := memberFromPB(n.GetMember())
		st.Nodes = append(st.Nodes, NodeStatus{
			ID: m.ID, MySQLAddr: m.MySQLAddr, AgentAddr: m.AgentAddr, Priority: m.Priority, MayBePrimary: m.MayBePrimary,
			Role: Role(n.GetRole()), ReportedRole: Role(n.GetReportedRole()), Epoch: n.GetEpoch(),
			Reachable: n.GetReachable(), Healthy: n.GetHealthy(), DatabaseHealthy: n.GetDatabaseHealthy(), ReadOnly: n.GetReadOnly(),
			DurableSeqno: n.GetDurableSeqno(), AppliedSeqno: n.GetAppliedSeqno(), CommitIndex: n.GetCommitIndex(),
			LastEpoch: n.GetLastEpoch(), Applied: maps.Clone(n.GetApplied()),
			LagTx: n.LagTx, ApplyLagTx: n.ApplyLagTx, LagSeconds: n.LagSeconds,
			InSyncSet: n.GetInSyncSet(), LastHeartbeat: fromMicro(n.GetLastHeartbeatUnixMicro()),
			Degraded: n.GetDegraded(), Error: n.GetError(),
			PrimaryStream: n.GetPrimaryStream(), StreamLost: time.Duration(n.GetStreamLostMs()) * time.Millisecond,
			DatabaseGone: n.GetDatabaseGone(),
		})
	}
	if f := p.GetFailover(); f != nil {
		st.Failover = &FailoverStatus{Automatic: f.GetAutomatic(), State: f.GetState(), Reason: f.GetReason(), Since: fromMicro(f.GetSinceUnixMicro())}
	}
	return st
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return slices.Clone(s)
}

func unixMicro(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMicro()
}

func fromMicro(us int64) time.Time {
	if us == 0 {
		return time.Time{}
	}
	return time.UnixMicro(us).UTC()
}
