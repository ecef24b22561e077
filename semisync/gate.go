package semisync

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Policy says what the gate does when fewer than K healthy counted members
// of the sync set remain.
type Policy int

const (
	// Strict blocks: no ACK advances beyond what K counted members hold.
	// Client commits wait until enough members are back. The default.
	Strict Policy = iota
	// Degrade lets ACKs continue without K holders (K effectively 0), but only
	// after the caller has recorded the degraded marker "asynchronous since
	// seqno s" in Raft, so that failover reports the possible loss.
	Degrade
)

// String returns "strict" or "degrade".
func (p Policy) String() string {
	switch p {
	case Strict:
		return "strict"
	case Degrade:
		return "degrade"
	}
	return fmt.Sprintf("Policy(%d)", int(p))
}

// ParsePolicy parses "strict" or "degrade".
func ParsePolicy(s string) (Policy, error) {
	switch s {
	case "strict":
		return Strict, nil
	case "degrade":
		return Degrade, nil
	}
	return 0, fmt.Errorf("semisync: unknown policy %q (want strict or degrade)", s)
}

func (p Policy) valid() bool { return p == Strict || p == Degrade }

// Ack is an acknowledgement to send to the primary's mariadbd: it covers
// every transaction up to and including Seqno, whose last event ends at
// Position.
type Ack struct {
	Seqno    uint64
	Position BinlogPosition
}

// Config is the state a Gate starts from: what Raft holds, plus the commit
// index the caller knows to be acknowledged already.
type Config struct {
	// Members is the recorded sync set. Members are counted once they report
	// a durable seqno at or above the commit index.
	Members []string
	// K is the recorded K: how many members of the sync set must hold a
	// transaction before it is acknowledged. 0 means asynchronous.
	K int
	// Policy applies when fewer than K healthy counted members remain.
	Policy Policy
	// CommitIndex is a seqno known to be acknowledged already (held by K
	// members, or covered by the degraded marker), 0 for a new cluster. A
	// lower bound is enough: acknowledging again what was acknowledged is
	// harmless. The first Extracted call must carry CommitIndex+1.
	CommitIndex uint64
	// AckedCeiling is an upper bound of every seqno an earlier gate of this
	// primary may have acknowledged, when CommitIndex is only a lower bound;
	// 0 means CommitIndex is exact. The gate allows no removal, higher K or
	// clearing of the marker that would leave a seqno up to the ceiling with
	// fewer than K holders. An agent that acknowledges only transactions its
	// own log holds durably can pass the last seqno of its log.
	AckedCeiling uint64
	// CommitPosition is the binlog end position of seqno CommitIndex, if
	// known. Extracted positions must lie after it.
	CommitPosition BinlogPosition
	// DegradedSince is the recorded degraded marker, 0 if none. It may lie
	// above CommitIndex+1 when CommitIndex is only a lower bound.
	DegradedSince uint64
	// RecoverLag is how far behind the commit index (in seqnos) a healthy
	// counted member may be for a degraded gate to stop acknowledging early
	// and wait for it to catch up; client commits pause meanwhile. 0 means
	// only a member holding the commit index ends early acknowledgement,
	// which under sustained load may never happen (while degraded, the commit
	// index follows extraction). A small positive value ends degradation
	// under load at the cost of a pause of about that many transactions.
	RecoverLag uint64
}

// replica is what the gate knows about one replica.
type replica struct {
	durable  uint64
	healthy  bool
	member   bool // in the recorded sync set, as far as the gate was told
	removing bool // removal begun, not yet recorded: not counted
	counted  bool // member, not removing, and caught up at some point
	stale    uint64
}

// Gate is the ack gate of one primary term. See the package documentation
// for the invariant it keeps and the order of sync-set changes. The zero
// value is not usable; call New.
type Gate struct {
	k           int // recorded K
	proposedK   int
	hasProposal bool
	policy      Policy
	recoverLag  uint64

	extracted uint64
	lastPos   BinlogPosition
	commit    uint64
	commitPos BinlogPosition
	// pending[i] is the end position of seqno commit+1+i.
	pending []BinlogPosition
	sent    uint64
	resend  bool

	// ceiling bounds what earlier gates may have acknowledged; safety
	// checks cover everything up to it until the commit index passes it.
	ceiling uint64

	marker uint64 // recorded degraded marker, 0 if none
	// spent: since the marker was recorded, K healthy counted members held
	// everything acknowledged (up to the ceiling) at some moment. From then on the gate no longer
	// acknowledges early on this marker and everything acknowledged is held
	// by K members again, so the marker may be cleared.
	spent bool

	replicas map[string]*replica
	stale    uint64
}

// New returns a gate starting from cfg. It fails if cfg is inconsistent: an
// empty or repeated member, K outside 0..len(Members) or an unknown policy.
func New(cfg Config) (*Gate, error) {
	if !cfg.Policy.valid() {
		return nil, fmt.Errorf("semisync: config: unknown policy %d", int(cfg.Policy))
	}
	g := &Gate{
		k:          cfg.K,
		policy:     cfg.Policy,
		recoverLag: cfg.RecoverLag,
		extracted:  cfg.CommitIndex,
		lastPos:    cfg.CommitPosition,
		commit:     cfg.CommitIndex,
		commitPos:  cfg.CommitPosition,
		sent:       cfg.CommitIndex,
		ceiling:    cfg.AckedCeiling,
		marker:     cfg.DegradedSince,
		replicas:   make(map[string]*replica, len(cfg.Members)),
	}
	for _, id := range cfg.Members {
		if id == "" {
			return nil, errors.New("semisync: config: empty member id in sync set")
		}
		if _, dup := g.replicas[id]; dup {
			return nil, fmt.Errorf("semisync: config: member %q listed twice in sync set", id)
		}
		g.replicas[id] = &replica{member: true}
	}
	if cfg.K < 0 || cfg.K > len(cfg.Members) {
		return nil, fmt.Errorf("semisync: config: K=%d but the sync set %s has %d members", cfg.K, formatSet(cfg.Members), len(cfg.Members))
	}
	g.update()
	return g, nil
}

// Extracted records that the transaction with the given seqno was extracted
// from the binlog and ends at end. Seqnos must be consecutive and positions
// increasing; otherwise Extracted returns an error and changes nothing.
func (g *Gate) Extracted(seqno uint64, end BinlogPosition) error {
	if seqno != g.extracted+1 {
		return fmt.Errorf("semisync: extracted seqno %d, want %d (last extracted %d)", seqno, g.extracted+1, g.extracted)
	}
	if end.File == "" {
		return fmt.Errorf("semisync: extracted seqno %d with an empty binlog file name", seqno)
	}
	if !g.lastPos.IsZero() && end.Compare(g.lastPos) <= 0 {
		return fmt.Errorf("semisync: extracted seqno %d ends at %s, not after seqno %d at %s", seqno, end, g.extracted, g.lastPos)
	}
	g.extracted = seqno
	g.lastPos = end
	g.pending = append(g.pending, end)
	g.update()
	return nil
}

// Durable records that replica id holds every seqno up to and including
// seqno durably. Reports are cumulative: one lower than an earlier report is
// ignored and counted in Status().StaleReports. A replica not yet known is
// tracked from its first report (for metrics and for catching up before it
// joins the sync set). The only error is an empty id.
func (g *Gate) Durable(id string, seqno uint64) error {
	r, err := g.replica(id, "durable report")
	if err != nil {
		return err
	}
	switch {
	case seqno < r.durable:
		r.stale++
		g.stale++
		return nil
	case seqno == r.durable:
		return nil
	}
	r.durable = seqno
	g.update()
	return nil
}

// SetHealthy records whether replica id's stream is up. A replica is
// unhealthy until it is first marked healthy. Its durable seqno is kept while
// it is down: it was fsynced. The only error is an empty id.
func (g *Gate) SetHealthy(id string, healthy bool) error {
	r, err := g.replica(id, "health change")
	if err != nil {
		return err
	}
	r.healthy = healthy
	g.update()
	return nil
}

// SetPolicy changes the policy. Switching to Strict stops early
// acknowledgements at once; the marker, if recorded, stays until it may be
// cleared.
func (g *Gate) SetPolicy(p Policy) error {
	if !p.valid() {
		return fmt.Errorf("semisync: unknown policy %d", int(p))
	}
	g.policy = p
	g.update()
	return nil
}

// AddRecorded tells the gate that the sync set with id added has been
// recorded in Raft. The gate counts id once its durable seqno reaches the
// commit index. It is an error if id is already a member.
func (g *Gate) AddRecorded(id string) error {
	r, err := g.replica(id, "member addition")
	if err != nil {
		return err
	}
	if r.member {
		return fmt.Errorf("semisync: add %q: already in the sync set %s", id, formatSet(g.members()))
	}
	r.member, r.removing, r.counted = true, false, false
	g.update()
	return nil
}

// BeginRemove starts removing member id: the gate stops counting it at once.
// Record the smaller set in Raft only when CanRecordRemoval(id) reports true,
// then call RemovalRecorded. It is an error if id is not a member, is already
// being removed, or if fewer than K members would remain.
func (g *Gate) BeginRemove(id string) error {
	r, ok := g.replicas[id]
	if !ok || !r.member {
		return fmt.Errorf("semisync: remove %q: not in the sync set %s", id, formatSet(g.members()))
	}
	if r.removing {
		return fmt.Errorf("semisync: remove %q: removal already begun", id)
	}
	rest := g.staying()
	rest = slices.DeleteFunc(rest, func(m string) bool { return m == id })
	if k := g.effectiveK(); k > len(rest) {
		return fmt.Errorf("semisync: remove %q: K=%d but only %d members would remain in %s", id, k, len(rest), formatSet(rest))
	}
	r.removing, r.counted = true, false
	g.update()
	return nil
}

// CancelRemove abandons a removal begun with BeginRemove and not yet
// recorded. The member is counted again once it has caught up.
func (g *Gate) CancelRemove(id string) error {
	r, ok := g.replicas[id]
	if !ok || !r.removing {
		return fmt.Errorf("semisync: cancel removal of %q: no removal begun", id)
	}
	r.removing = false
	g.update()
	return nil
}

// CanRecordRemoval reports whether the removal of id, begun with BeginRemove,
// may now be recorded in Raft: K members of the sync set without id (and
// without any other member being removed) hold everything acknowledged that
// the degraded marker does not cover. It may turn false again when another
// removal begins or K is raised; recording on an earlier true answer is
// still safe, since every member it relied on stays in Raft until its own
// removal passes the same check.
func (g *Gate) CanRecordRemoval(id string) bool {
	r, ok := g.replicas[id]
	if !ok || !r.removing {
		return false
	}
	return g.holders(g.required()) >= g.effectiveK()
}

// RemovalRecorded tells the gate that the sync set without id has been
// recorded in Raft. The gate adopts what Raft holds: id is no longer a
// member, whatever else is wrong, since that only makes the gate stricter.
// It returns an error if id was not a member (nothing changes), and also,
// after adopting the change, if the removal was recorded without being
// begun or before the remaining members held everything acknowledged: then
// the invariant may have been broken and the caller should say so loudly.
func (g *Gate) RemovalRecorded(id string) error {
	r, ok := g.replicas[id]
	if !ok || !r.member {
		return fmt.Errorf("semisync: removal of %q recorded but it is not in the sync set %s", id, formatSet(g.members()))
	}
	begun := r.removing
	r.member, r.removing, r.counted = false, false, false
	req := g.required()
	held := g.memberHolders(req)
	g.update()
	if !begun {
		return fmt.Errorf("semisync: removal of %q recorded but not begun", id)
	}
	if held < g.k {
		return fmt.Errorf("semisync: removal of %q recorded too early: %d of %s hold seqno %d, K=%d",
			id, held, formatSet(g.members()), req, g.k)
	}
	return nil
}

// ProposeK starts a change of K. A higher K governs new ACKs at once; record
// it when CanRecordK allows. A lower K takes effect only once recorded
// (record it, then call KRecorded). It is an error if k is negative or larger
// than the number of members not being removed.
func (g *Gate) ProposeK(k int) error {
	staying := g.staying()
	if k < 0 || k > len(staying) {
		return fmt.Errorf("semisync: K=%d invalid for the sync set %s of %d members", k, formatSet(staying), len(staying))
	}
	if k == g.k {
		g.hasProposal, g.proposedK = false, 0
	} else {
		g.hasProposal, g.proposedK = true, k
	}
	g.update()
	return nil
}

// CanRecordK returns the proposed K and whether it may be recorded in Raft
// now: always for a lower K, and for a higher K once that many members hold
// everything acknowledged that the degraded marker does not cover. ok is
// false when no change is proposed.
func (g *Gate) CanRecordK() (k int, ok bool) {
	if !g.hasProposal {
		return g.k, false
	}
	if g.proposedK <= g.k {
		return g.proposedK, true
	}
	return g.proposedK, g.holders(g.required()) >= g.proposedK
}

// KRecorded tells the gate that K=k has been recorded in Raft. The gate
// adopts it: a lower K than the recorded one is always fine (it was recorded
// first), a higher one only makes the gate stricter. It returns an error,
// changing nothing, if k is negative or larger than the sync set; and, after
// adopting k, if k is higher than the recorded K and was recorded before k
// members held everything acknowledged.
func (g *Gate) KRecorded(k int) error {
	if members := g.members(); k < 0 || k > len(members) {
		return fmt.Errorf("semisync: K=%d recorded: invalid for the sync set %s of %d members", k, formatSet(members), len(members))
	}
	raise := k > g.k
	req := g.required()
	held := g.memberHolders(req)
	g.k = k
	if g.hasProposal && g.proposedK == k {
		g.hasProposal, g.proposedK = false, 0
	}
	g.update()
	if raise && held < k {
		return fmt.Errorf("semisync: K=%d recorded too early: %d of %s hold seqno %d", k, held, formatSet(g.members()), req)
	}
	return nil
}

// NeedsDegradeMarker reports whether the gate waits for the degraded marker:
// the policy is Degrade, K > 0 and fewer than K healthy counted members
// remain, and no marker is in force. since is the seqno to record ("async
// since"); any value from 1 to since is also acceptable.
func (g *Gate) NeedsDegradeMarker() (since uint64, ok bool) {
	k := g.effectiveK()
	if g.policy != Degrade || k == 0 || (g.marker != 0 && !g.spent) {
		return 0, false
	}
	if g.healthyCounted() >= k {
		return 0, false
	}
	return g.commit + 1, true
}

// DegradeRecorded tells the gate that "asynchronous since seqno since" has
// been recorded in Raft. With policy Degrade the gate then acknowledges
// without waiting for K members until K healthy counted members hold the
// commit index again. It is an error, and changes nothing, if since is 0 or
// above the commit index + 1, or if another marker is still in force.
func (g *Gate) DegradeRecorded(since uint64) error {
	if since == 0 || since > g.commit+1 {
		return fmt.Errorf("semisync: degraded marker %d recorded: must be between 1 and commit index %d + 1", since, g.commit)
	}
	if g.marker != 0 && !g.spent {
		if g.marker == since {
			return nil
		}
		return fmt.Errorf("semisync: degraded marker %d recorded while marker %d is in force", since, g.marker)
	}
	g.marker, g.spent = since, false
	g.update()
	return nil
}

// MarkerClearable reports whether the recorded degraded marker may be
// cleared in Raft: the gate has stopped acknowledging early on it and K
// members hold everything acknowledged. Like CanRecordRemoval, recording on
// an earlier true answer is safe.
func (g *Gate) MarkerClearable() bool {
	return g.marker != 0 && g.spent && g.holders(g.acked()) >= g.effectiveK()
}

// DegradeCleared tells the gate that the degraded marker has been cleared in
// Raft. The gate adopts it (it no longer acknowledges early; a new marker is
// needed for that). It returns an error if no marker was recorded, and,
// after adopting the change, if the marker was cleared before the gate had
// stopped acknowledging early or before K members held everything
// acknowledged.
func (g *Gate) DegradeCleared() error {
	if g.marker == 0 {
		return errors.New("semisync: degraded marker cleared but none recorded")
	}
	marker, spent, held := g.marker, g.spent, g.memberHolders(g.acked())
	g.marker, g.spent = 0, false
	g.update()
	if !spent || held < g.k {
		return fmt.Errorf("semisync: degraded marker %d cleared too early: early acknowledgement had not ended or only %d of %s hold seqno %d, K=%d",
			marker, held, formatSet(g.members()), g.acked(), g.k)
	}
	return nil
}

// Forget drops a replica that is not a member from the gate's tracking, e.g.
// when its host is decommissioned.
func (g *Gate) Forget(id string) error {
	r, ok := g.replicas[id]
	if !ok {
		return nil
	}
	if r.member {
		return fmt.Errorf("semisync: forget %q: still in the sync set %s", id, formatSet(g.members()))
	}
	delete(g.replicas, id)
	return nil
}

// Ready returns the ACK to send now, if the commit index has moved beyond
// the last ACK reported sent (or Resend was called). ACKs are cumulative:
// only the newest matters.
func (g *Gate) Ready() (Ack, bool) {
	if g.commit > g.sent || (g.resend && !g.commitPos.IsZero()) {
		return Ack{Seqno: g.commit, Position: g.commitPos}, true
	}
	return Ack{}, false
}

// Sent records that a (from Ready) was sent to mariadbd.
func (g *Gate) Sent(a Ack) {
	if a.Seqno > g.commit {
		return
	}
	g.sent = max(g.sent, a.Seqno)
	if a.Seqno == g.commit {
		g.resend = false
	}
}

// Resend makes Ready report the current commit index again even if it was
// sent, e.g. after the binlog dump connection was re-established.
func (g *Gate) Resend() { g.resend = true }

// CommitIndex returns the highest seqno that may be acknowledged. It never
// decreases. Replicas apply transactions up to it.
func (g *Gate) CommitIndex() uint64 { return g.commit }

// LastExtracted returns the highest extracted seqno.
func (g *Gate) LastExtracted() uint64 { return g.extracted }

// Status is a snapshot of the gate for metrics, logs and the CLI.
type Status struct {
	CommitIndex    uint64
	CommitPosition BinlogPosition
	LastExtracted  uint64
	// K is the K the gate applies now: the recorded K, or a higher proposed K.
	K int
	// RecordedK is the K the gate was told is recorded.
	RecordedK int
	// ProposedK is the proposed K, valid if KProposed.
	ProposedK int
	KProposed bool
	Policy    Policy
	// DegradedSince is the recorded degraded marker, 0 if none.
	DegradedSince uint64
	// DegradedAcking is true while ACKs do not wait for K members.
	DegradedAcking bool
	// StaleReports counts durable reports lower than an earlier one.
	StaleReports uint64
	// Replicas lists every known replica, sorted by id.
	Replicas []ReplicaStatus
}

// ReplicaStatus is what the gate knows about one replica.
type ReplicaStatus struct {
	ID      string
	Durable uint64
	// Lag is LastExtracted - Durable, or 0 if the replica is ahead.
	Lag     uint64
	Healthy bool
	// Member: in the recorded sync set as far as the gate knows (including
	// while being removed).
	Member bool
	// Counted: the replica's reports count towards K.
	Counted bool
	// Removing: removal begun, not yet recorded.
	Removing     bool
	StaleReports uint64
}

// Status returns a snapshot of the gate.
func (g *Gate) Status() Status {
	st := Status{
		CommitIndex:    g.commit,
		CommitPosition: g.commitPos,
		LastExtracted:  g.extracted,
		K:              g.effectiveK(),
		RecordedK:      g.k,
		ProposedK:      g.proposedK,
		KProposed:      g.hasProposal,
		Policy:         g.policy,
		DegradedSince:  g.marker,
		DegradedAcking: g.degradedAcking(g.effectiveK()),
		StaleReports:   g.stale,
	}
	for _, id := range g.ids() {
		r := g.replicas[id]
		var lag uint64
		if g.extracted > r.durable {
			lag = g.extracted - r.durable
		}
		st.Replicas = append(st.Replicas, ReplicaStatus{
			ID: id, Durable: r.durable, Lag: lag, Healthy: r.healthy,
			Member: r.member, Counted: r.counted, Removing: r.removing, StaleReports: r.stale,
		})
	}
	return st
}

// update brings the derived state up to date after any event: who is
// counted, whether the marker is spent, and the commit index.
func (g *Gate) update() {
	for _, r := range g.replicas {
		if r.member && !r.removing && !r.counted && r.durable >= g.commit {
			r.counted = true
		}
	}
	k := g.effectiveK()
	if g.marker != 0 && !g.spent && g.healthyHolding(g.acked()) >= k {
		g.spent = true
	}
	target := g.commit
	if k == 0 || g.degradedAcking(k) {
		target = g.extracted
	} else if s := g.kthCounted(k); s > target {
		target = s
	}
	target = min(target, g.extracted)
	if target <= g.commit {
		return
	}
	n := target - g.commit
	g.commitPos = g.pending[n-1]
	g.pending = g.pending[n:]
	g.commit = target
	// No member catches up here: one at or above the new commit index was at
	// or above the old one and is counted already.
}

// degradedAcking reports whether ACKs currently skip the K rule: policy
// Degrade, a marker in force, and fewer than k healthy counted members
// within RecoverLag of the commit index. Measuring against the commit index,
// which stops moving once early acknowledgement stops, means a member that
// came within reach stays within reach while it catches up.
func (g *Gate) degradedAcking(k int) bool {
	if g.policy != Degrade || g.marker == 0 || g.spent || k == 0 {
		return false
	}
	n := 0
	for _, r := range g.replicas {
		if r.counted && r.healthy && r.durable+g.recoverLag >= g.commit {
			n++
		}
	}
	return n < k
}

// effectiveK is the K new ACKs need: the recorded K, or a higher proposal.
func (g *Gate) effectiveK() int {
	if g.hasProposal && g.proposedK > g.k {
		return g.proposedK
	}
	return g.k
}

// acked is the highest seqno that may have been acknowledged, by this gate
// or (up to the ceiling it was given) by an earlier one.
func (g *Gate) acked() uint64 { return max(g.commit, g.ceiling) }

// required is the highest acknowledged seqno that must be held by K members
// for the invariant: everything acknowledged, except what an unspent marker
// covers.
func (g *Gate) required() uint64 {
	if g.marker != 0 && !g.spent {
		return min(g.acked(), g.marker-1)
	}
	return g.acked()
}

// kthCounted returns the k-th highest durable seqno among counted members,
// or 0 if fewer than k are counted.
func (g *Gate) kthCounted(k int) uint64 {
	var ds []uint64
	for _, r := range g.replicas {
		if r.counted {
			ds = append(ds, r.durable)
		}
	}
	if len(ds) < k {
		return 0
	}
	slices.Sort(ds)
	return ds[len(ds)-k]
}

// memberHolders counts members, including those being removed, that hold
// seqno s.
func (g *Gate) memberHolders(s uint64) int {
	n := 0
	for _, r := range g.replicas {
		if r.member && r.durable >= s {
			n++
		}
	}
	return n
}

// holders counts members not being removed that hold seqno s.
func (g *Gate) holders(s uint64) int {
	n := 0
	for _, r := range g.replicas {
		if r.member && !r.removing && r.durable >= s {
			n++
		}
	}
	return n
}

func (g *Gate) healthyCounted() int {
	n := 0
	for _, r := range g.replicas {
		if r.counted && r.healthy {
			n++
		}
	}
	return n
}

func (g *Gate) healthyHolding(s uint64) int {
	n := 0
	for _, r := range g.replicas {
		if r.counted && r.healthy && r.durable >= s {
			n++
		}
	}
	return n
}

func (g *Gate) replica(id, what string) (*replica, error) {
	if id == "" {
		return nil, fmt.Errorf("semisync: %s with an empty replica id", what)
	}
	r, ok := g.replicas[id]
	if !ok {
		r = &replica{}
		g.replicas[id] = r
	}
	return r, nil
}

func (g *Gate) ids() []string {
	ids := make([]string, 0, len(g.replicas))
	for id := range g.replicas {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// members lists the members, sorted.
func (g *Gate) members() []string {
	var m []string
	for _, id := range g.ids() {
		if g.replicas[id].member {
			m = append(m, id)
		}
	}
	return m
}

// staying lists the members not being removed, sorted.
func (g *Gate) staying() []string {
	var m []string
	for _, id := range g.ids() {
		if r := g.replicas[id]; r.member && !r.removing {
			m = append(m, id)
		}
	}
	return m
}

func formatSet(ids []string) string {
	s := slices.Clone(ids)
	slices.Sort(s)
	return "{" + strings.Join(s, ", ") + "}"
}
