package consensus

import (
	"fmt"
	"net"
	"slices"
	"strings"
	"time"
)

// Policy says what the primary does when fewer than K members of the sync set
// can acknowledge a transaction.
type Policy string

const (
	// PolicyStrict blocks commits until K members of the sync set acknowledge
	// again. It is the default.
	PolicyStrict Policy = "strict"
	// PolicyDegrade lets commits continue after the degraded marker ("async
	// since seqno s") has been committed to Raft.
	PolicyDegrade Policy = "degrade"
)

// Default operator settings of a new cluster.
const (
	DefaultFailoverTimeout = 10 * time.Second
	DefaultAntiFlapWindow  = time.Hour
)

// Upper bounds of the settings and counts commands may set (the manager's
// configuration file has the same ranges).
const (
	MaxFailoverTimeout = 10 * time.Minute
	MaxAntiFlapWindow  = 7 * 24 * time.Hour
	// MaxMembers bounds the database hosts of one cluster.
	MaxMembers = 64
)

// Member is one database host of the cluster: its MariaDB server, its agent
// and, if the host runs one, its manager.
type Member struct {
	// ID names the member. It is also the Raft server ID of its manager.
	ID string `json:"id"`
	// MySQLAddr is the host:port of the member's mariadbd.
	MySQLAddr string `json:"mysql_addr"`
	// AgentAddr is the host:port of the member's agent (gRPC).
	AgentAddr string `json:"agent_addr"`
	// ManagerAddr is the host:port of the member's manager (Raft); empty if
	// the host runs no manager.
	ManagerAddr string `json:"manager_addr,omitempty"`
	// Priority breaks ties between equally advanced candidates; higher wins.
	Priority int `json:"priority"`
	// MayBePrimary is false for members that must never be promoted.
	MayBePrimary bool `json:"may_be_primary"`
}

// EpochEntry records one primary term.
type EpochEntry struct {
	Epoch      uint64 `json:"epoch"`
	Primary    string `json:"primary"`
	FirstSeqno uint64 `json:"first_seqno"`
	// At is when the term was committed (zero in states written before it
	// was recorded).
	At time.Time `json:"at,omitzero"`
	// Automatic marks a term started by automatic failover; Reason says
	// why it was started, if given.
	Automatic bool   `json:"automatic,omitempty"`
	Reason    string `json:"reason,omitempty"`
	// Certificate is the failover certificate of the promotion, if any.
	Certificate *Certificate `json:"certificate,omitempty"`
}

// Position is a member's last log record: its epoch and seqno.
type Position struct {
	Epoch uint64 `json:"epoch"`
	Seqno uint64 `json:"seqno"`
}

// Certificate is the evidence a promotion was decided on (DESIGN.md §6):
// the highest commit index any node reported, and the new primary's last
// seqno, which is never lower unless the cluster was degraded (then
// LossPossibleSince says from which seqno transactions may be lost).
type Certificate struct {
	// CommitIndex is the highest commit index any node reported (or Raft
	// recorded); CommitIndexFrom names who reported it ("raft" for the
	// recorded one).
	CommitIndex     uint64 `json:"commit_index"`
	CommitIndexFrom string `json:"commit_index_from,omitempty"`
	// PrimarySeqno and PrimaryEpoch are the new primary's last record when
	// it was elected: it holds everything up to PrimarySeqno durably before
	// it opens writes.
	PrimarySeqno uint64 `json:"primary_seqno"`
	PrimaryEpoch uint64 `json:"primary_epoch"`
	// Positions are the members' positions the election saw.
	Positions map[string]Position `json:"positions,omitempty"`
	// LossPossibleSince is the degraded marker's seqno when the cluster
	// was degraded (transactions from it on may be lost); 0 otherwise.
	LossPossibleSince uint64 `json:"loss_possible_since,omitempty"`
}

// Clone returns a deep copy of c (nil for nil).
func (c *Certificate) Clone() *Certificate {
	if c == nil {
		return nil
	}
	d := *c
	if c.Positions != nil {
		d.Positions = make(map[string]Position, len(c.Positions))
		for k, v := range c.Positions {
			d.Positions[k] = v
		}
	}
	return &d
}

// DecisionKind classifies an entry of the decision log.
type DecisionKind string

// The kinds of decisions.
const (
	// DecisionDetection: the leader found the primary failed (or suspect).
	DecisionDetection DecisionKind = "detection"
	// DecisionRefusal: a failover was not done; the reason says why.
	DecisionRefusal DecisionKind = "refusal"
	// DecisionPromotion: a new term started (recorded by SetPrimary).
	DecisionPromotion DecisionKind = "promotion"
	// DecisionNote: anything else worth keeping (fencing results, a
	// promotion that completed, a detection that was not confirmed).
	DecisionNote DecisionKind = "note"
)

// MaxDecisions bounds the decision log kept in the state: the oldest
// entries are dropped first.
const MaxDecisions = 256

// Decision is one entry of the decision log: what the managers decided
// about failover, and why. `quire history` prints them.
type Decision struct {
	At   time.Time    `json:"at"`
	Kind DecisionKind `json:"kind"`
	// Epoch is the cluster's epoch the decision was made in (for a
	// promotion: the new one).
	Epoch uint64 `json:"epoch"`
	// Node is the member the decision is about (the failed primary, the
	// candidate), if any.
	Node string `json:"node,omitempty"`
	// By names the manager that decided.
	By     string `json:"by,omitempty"`
	Reason string `json:"reason"`
}

// Degraded marks that commits no longer wait for K acknowledgements.
type Degraded struct {
	// AsyncSince is the first seqno that may have been acknowledged to a
	// client without K members of the sync set holding it.
	AsyncSince uint64    `json:"async_since"`
	Reason     string    `json:"reason"`
	At         time.Time `json:"at"`
}

// Failover records the last automatic failover, for anti-flapping: no second
// automatic failover happens inside Settings.AntiFlapWindow unless an operator
// acknowledged this one.
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

// Settings are the operator's tunables that all managers must agree on.
type Settings struct {
	// FailoverTimeout is how long the primary must be unreachable or
	// unhealthy before automatic failover.
	FailoverTimeout time.Duration `json:"failover_timeout"`
	// AntiFlapWindow is how long after an automatic failover another one
	// needs an operator's acknowledgement.
	AntiFlapWindow time.Duration `json:"anti_flap_window"`
}

// State is the replicated cluster state. The zero value is not valid; start
// from [NewState]. A State obtained from a [Node] or [FSM] is a private copy.
type State struct {
	// Members, sorted by ID.
	Members []Member `json:"members"`
	// K is how many members of the sync set must hold a transaction durably
	// before its commit is acknowledged.
	K int `json:"k"`
	// SyncSet lists, sorted, the members whose acknowledgements count. It
	// never contains the primary.
	SyncSet []string `json:"sync_set"`
	Policy  Policy   `json:"policy"`
	// Epoch is the current primary term; 0 before the first primary.
	Epoch uint64 `json:"epoch"`
	// Primary is the member ID of the primary of Epoch; empty while Epoch is 0.
	Primary string `json:"primary"`
	// EpochHistory has one entry per epoch 1..Epoch, in order.
	EpochHistory []EpochEntry `json:"epoch_history"`
	// Degraded is nil while commits wait for K acknowledgements.
	Degraded *Degraded `json:"degraded"`
	// CommitIndex is the last commit index (seqno) recorded in Raft; the real
	// one may be higher.
	CommitIndex uint64 `json:"commit_index"`
	// LastFailover is the last automatic failover, or nil.
	LastFailover *Failover `json:"last_failover"`
	Settings     Settings  `json:"settings"`
	// Revoked lists the certificates no process accepts any more, by
	// serial (RevokeCertificate).
	Revoked []RevokedCert `json:"revoked,omitempty"`
	// Decisions is the decision log, oldest first, at most MaxDecisions.
	Decisions []Decision `json:"decisions,omitempty"`
}

// NewState returns the state of a new cluster: no members, K 0, policy
// strict and default settings.
func NewState() State {
	return State{
		Policy: PolicyStrict,
		Settings: Settings{
			FailoverTimeout: DefaultFailoverTimeout,
			AntiFlapWindow:  DefaultAntiFlapWindow,
		},
	}
}

// Clone returns a deep copy of s.
func (s State) Clone() State {
	c := s
	c.Members = slices.Clone(s.Members)
	c.SyncSet = slices.Clone(s.SyncSet)
	c.EpochHistory = slices.Clone(s.EpochHistory)
	c.Revoked = slices.Clone(s.Revoked)
	for i := range c.EpochHistory {
		c.EpochHistory[i].Certificate = c.EpochHistory[i].Certificate.Clone()
	}
	c.Decisions = slices.Clone(s.Decisions)
	if s.Degraded != nil {
		d := *s.Degraded
		c.Degraded = &d
	}
	if s.LastFailover != nil {
		f := *s.LastFailover
		c.LastFailover = &f
	}
	return c
}

// Member returns the member with the given ID.
func (s State) Member(id string) (Member, bool) {
	i, ok := s.memberIndex(id)
	if !ok {
		return Member{}, false
	}
	return s.Members[i], true
}

// InSyncSet reports whether id is in the sync set.
func (s State) InSyncSet(id string) bool {
	_, ok := slices.BinarySearch(s.SyncSet, id)
	return ok
}

// SyncCandidates returns how many members may be in the sync set: every
// member but the primary. K can never exceed it.
func (s State) SyncCandidates() int {
	n := len(s.Members)
	if _, ok := s.memberIndex(s.Primary); ok {
		n--
	}
	return n
}

func (s State) memberIndex(id string) (int, bool) {
	return slices.BinarySearchFunc(s.Members, id, func(m Member, id string) int {
		return strings.Compare(m.ID, id)
	})
}

// Check reports the first broken invariant of s, or nil. Every state an
// [FSM] holds passes Check; commands that would break it are refused.
func (s State) Check() error {
	for i, m := range s.Members {
		if err := checkMember(m); err != nil {
			return fmt.Errorf("consensus: state: member %q: %s", m.ID, err.detail())
		}
		if i > 0 && s.Members[i-1].ID >= m.ID {
			return fmt.Errorf("consensus: state: members not sorted and unique at %q", m.ID)
		}
	}
	if err := checkAddressesUnique(s.Members); err != nil {
		return fmt.Errorf("consensus: state: %s", err.detail())
	}
	if s.K < 0 {
		return fmt.Errorf("consensus: state: k=%d is negative", s.K)
	}
	if n := s.SyncCandidates(); s.K > n {
		return fmt.Errorf("consensus: state: k=%d exceeds the %d members that may be in the sync set", s.K, n)
	}
	for i, id := range s.SyncSet {
		if i > 0 && s.SyncSet[i-1] >= id {
			return fmt.Errorf("consensus: state: sync_set not sorted and unique at %q", id)
		}
		if _, ok := s.memberIndex(id); !ok {
			return fmt.Errorf("consensus: state: sync_set member %q is not a member", id)
		}
		if id == s.Primary {
			return fmt.Errorf("consensus: state: sync_set contains the primary %q", id)
		}
	}
	if s.Policy != PolicyStrict && s.Policy != PolicyDegrade {
		return fmt.Errorf("consensus: state: unknown policy %q", s.Policy)
	}
	if uint64(len(s.EpochHistory)) != s.Epoch {
		return fmt.Errorf("consensus: state: epoch %d but %d epoch_history entries", s.Epoch, len(s.EpochHistory))
	}
	for i, e := range s.EpochHistory {
		if e.Epoch != uint64(i+1) {
			return fmt.Errorf("consensus: state: epoch_history[%d] has epoch %d, want %d", i, e.Epoch, i+1)
		}
		if i > 0 && e.FirstSeqno < s.EpochHistory[i-1].FirstSeqno {
			return fmt.Errorf("consensus: state: epoch_history: epoch %d first_seqno %d below epoch %d's %d",
				e.Epoch, e.FirstSeqno, e.Epoch-1, s.EpochHistory[i-1].FirstSeqno)
		}
	}
	if s.Epoch == 0 {
		if s.Primary != "" {
			return fmt.Errorf("consensus: state: primary %q at epoch 0", s.Primary)
		}
	} else {
		if _, ok := s.memberIndex(s.Primary); !ok {
			return fmt.Errorf("consensus: state: primary %q is not a member", s.Primary)
		}
		if last := s.EpochHistory[len(s.EpochHistory)-1]; last.Primary != s.Primary {
			return fmt.Errorf("consensus: state: primary %q but epoch_history names %q for epoch %d", s.Primary, last.Primary, last.Epoch)
		}
	}
	if len(s.Decisions) > MaxDecisions {
		return fmt.Errorf("consensus: state: %d decisions, more than %d", len(s.Decisions), MaxDecisions)
	}
	if s.Degraded != nil && s.Degraded.Reason == "" {
		return fmt.Errorf("consensus: state: degraded marker without a reason")
	}
	if s.Settings.FailoverTimeout <= 0 {
		return fmt.Errorf("consensus: state: failover_timeout=%s is not positive", s.Settings.FailoverTimeout)
	}
	if s.Settings.AntiFlapWindow < 0 {
		return fmt.Errorf("consensus: state: anti_flap_window=%s is negative", s.Settings.AntiFlapWindow)
	}
	return nil
}

// checkMember checks one member record on its own. Field names are prefixed
// with "member.".
func checkMember(m Member) *ValidationError {
	if err := checkID("member.id", m.ID); err != nil {
		return err
	}
	if err := checkAddr("member.mysql_addr", m.MySQLAddr, true); err != nil {
		return err
	}
	if err := checkAddr("member.agent_addr", m.AgentAddr, true); err != nil {
		return err
	}
	return checkAddr("member.manager_addr", m.ManagerAddr, false)
}

// checkID accepts IDs made of letters, digits, '.', '-' and '_'; they appear
// in logs, tables and file names.
func checkID(field, id string) *ValidationError {
	if id == "" {
		return invalid(field, id, "is empty")
	}
	if len(id) > 64 {
		return invalid(field, id, "is longer than 64 bytes")
	}
	for _, r := range id {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-' || r == '_'
		if !ok {
			return invalid(field, id, "has character %q (allowed: letters, digits, '.', '-', '_')", r)
		}
	}
	return nil
}

func checkAddr(field, addr string, required bool) *ValidationError {
	if addr == "" {
		if required {
			return invalid(field, addr, "is empty")
		}
		return nil
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host == "" || port == "" {
		return invalid(field, addr, "is not host:port")
	}
	return nil
}

// checkAddressesUnique refuses two members sharing an address.
func checkAddressesUnique(ms []Member) *ValidationError {
	seen := make(map[string]string)
	for _, m := range ms {
		for _, a := range []struct{ field, addr string }{
			{"member.mysql_addr", m.MySQLAddr}, {"member.agent_addr", m.AgentAddr}, {"member.manager_addr", m.ManagerAddr},
		} {
			if a.addr == "" {
				continue
			}
			key := a.field + " " + a.addr
			if other, ok := seen[key]; ok {
				return invalid(a.field, a.addr, "is already used by member %q", other)
			}
			seen[key] = m.ID
		}
	}
	return nil
}
