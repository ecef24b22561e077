package failover

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/quire-ha/quire/consensus"
)

// Answer is one member agent's answer to the leader's status request,
// asked after the primary was found failed (never an older heartbeat: a
// member's log only grows, but a position from before the primary stopped
// may miss acknowledged transactions).
type Answer struct {
	ID string
	// Last is the last record of the agent's transaction log.
	Last LogPosition
	// Durable is its durable seqno.
	Durable uint64
	// CommitIndex is the highest commit index the agent knows.
	CommitIndex uint64
	// Role and Epoch are the agent's current role and epoch.
	Role  string
	Epoch uint64
	// DatabaseHealthy: the agent's database answered it.
	DatabaseHealthy bool
}

// PlanInput is what a failover decision needs besides the cluster state.
type PlanInput struct {
	Now time.Time
	// Answers are the fresh answers of the members' agents (any member;
	// only the sync set's count for the election).
	Answers []Answer
	// Reported maps each node to the highest commit index it reported in
	// a heartbeat to this leader (the failed primary's included).
	Reported map[string]uint64
}

// Plan is the outcome of [PlanFailover].
type Plan struct {
	// Promote is true when the failover may proceed: Command is then the
	// SetPrimary to commit.
	Promote bool
	Command consensus.SetPrimary
	// Candidate is the member to promote (also set when refused, if the
	// election found one), ExpectLast its last seqno.
	Candidate  string
	ExpectLast uint64
	Election   Election
	// LossPossible: the cluster is degraded, so transactions acknowledged
	// from Election.LossPossibleSince on may be missing on the candidate.
	LossPossible bool
	// Reason says why, in words for the decision log and the CLI.
	Reason string
	// Warnings are things the operator should know about a promotion
	// (possible loss, a sync set smaller than K).
	Warnings []string
}

// PlanFailover decides whether the failed primary of st may be replaced
// automatically now, by whom, with which sync set and certificate. It is
// pure. It refuses (Promote false, Reason saying why) when
//
//   - the anti-flapping window of an unacknowledged automatic failover is
//     open;
//   - the election is not safe (fewer than |S|-K+1 sync-set members
//     answered, or K=0);
//   - the most advanced member may not be primary (promoting a less
//     advanced one could lose acknowledged transactions);
//   - a member holds records of an epoch newer than the cluster's;
//   - the candidate's last seqno is below the highest commit index any
//     node reported, on a cluster that is not degraded (the certificate
//     would not hold; this means a bug or a lost log, and a person must
//     look).
func PlanFailover(st consensus.State, in PlanInput) (Plan, error) {
	var p Plan
	if st.Epoch == 0 || st.Primary == "" {
		return p, fmt.Errorf("failover: plan: the cluster has no primary yet")
	}
	if err := st.AutomaticFailoverAllowed(in.Now); err != nil {
		p.Reason = "anti-flapping: " + strings.TrimPrefix(err.Error(), "consensus: ") + " (acknowledge it with `quire ack-failover`)"
		return p, nil
	}
	prio := map[string]consensus.Member{}
	for _, m := range st.Members {
		prio[m.ID] = m
	}
	answers := slices.Clone(in.Answers)
	slices.SortFunc(answers, func(a, b Answer) int { return strings.Compare(a.ID, b.ID) })
	var reports []Candidate
	for _, a := range answers {
		if _, ok := prio[a.ID]; !ok {
			continue
		}
		if a.Last.Epoch > st.Epoch {
			p.Reason = fmt.Sprintf("member %s holds records of epoch %d, newer than the cluster's epoch %d: its log does not come from this cluster's history; not failing over (investigate %s's transaction log)",
				a.ID, a.Last.Epoch, st.Epoch, a.ID)
			return p, nil
		}
		if a.ID == st.Primary {
			continue
		}
		reports = append(reports, Candidate{ID: a.ID, Last: a.Last, Priority: prio[a.ID].Priority, Unhealthy: !a.DatabaseHealthy})
	}
	var since uint64
	if st.Degraded != nil {
		since = st.Degraded.AsyncSince
	}
	e, err := Elect(ElectionInput{SyncSet: st.SyncSet, K: st.K, DegradedSince: since, Reports: reports})
	if err != nil {
		return p, err
	}
	p.Election = e
	p.Candidate, p.ExpectLast = e.Best.ID, e.Best.Last.Seqno
	if !e.Safe {
		p.Reason = "election refused: " + e.Reason
		return p, nil
	}
	best := prio[e.Best.ID]
	if !best.MayBePrimary {
		p.Reason = fmt.Sprintf("election refused: the most advanced sync-set member %s (at %s) may not be primary, and promoting a less advanced one could lose acknowledged transactions; promote by hand or allow it (`quire members update --id %s --may-be-primary`)",
			best.ID, e.Best.Last, best.ID)
		return p, nil
	}
	cert := certificate(st, in, e.Best)
	if since == 0 && cert.PrimarySeqno < cert.CommitIndex {
		p.Reason = fmt.Sprintf("election refused: the most advanced sync-set member %s ends at seqno %d, below the commit index %d that %s reported: it lacks acknowledged transactions; look for the member holding them before promoting anyone",
			best.ID, cert.PrimarySeqno, cert.CommitIndex, cert.CommitIndexFrom)
		return p, nil
	}
	if since > 0 && cert.PrimarySeqno+1 < since {
		p.Reason = fmt.Sprintf("election refused: the most advanced sync-set member %s ends at seqno %d, below seqno %d from which the cluster is degraded: it lacks transactions acknowledged by K members; look for the member holding them",
			best.ID, cert.PrimarySeqno, since-1)
		return p, nil
	}
	syncSet := RebuildSyncSet(st, best.ID, answers)
	p.Promote = true
	p.Reason = fmt.Sprintf("promote %s (%s): %s; certificate: highest commit index reported %d (%s), new primary's last seqno %d",
		best.ID, e.Best.Last, e.Reason, cert.CommitIndex, cert.CommitIndexFrom, cert.PrimarySeqno)
	if since > 0 {
		p.LossPossible = true
		cert.LossPossibleSince = since
		w := fmt.Sprintf("the cluster is degraded since seqno %d: transactions acknowledged from it on without K replicas may be lost (the new primary holds up to %d; the highest commit index reported is %d)",
			since, cert.PrimarySeqno, cert.CommitIndex)
		p.Warnings = append(p.Warnings, w)
	}
	if st.K > len(syncSet) {
		p.Warnings = append(p.Warnings, fmt.Sprintf("the new sync set %s has fewer members than k=%d: commits wait until another member joins it (policy %s)",
			formatSet(syncSet), st.K, st.Policy))
	}
	if e.Best.Unhealthy {
		p.Warnings = append(p.Warnings, fmt.Sprintf("the new primary %s's database does not answer its agent: it opens writes once the database is back (no other member holds everything it holds)", best.ID))
	}
	for _, w := range p.Warnings {
		p.Reason += "; WARNING: " + w
	}
	p.Command = consensus.SetPrimary{
		Epoch:       st.Epoch + 1,
		Primary:     best.ID,
		FirstSeqno:  e.Best.Last.Seqno + 1,
		SyncSet:     syncSet,
		Automatic:   true,
		Reason:      p.Reason,
		At:          in.Now,
		Certificate: &cert,
	}
	return p, nil
}

// certificate builds the failover certificate: the highest commit index
// any node reported (or Raft recorded) and the new primary's position.
func certificate(st consensus.State, in PlanInput, best Candidate) consensus.Certificate {
	c := consensus.Certificate{
		CommitIndex: st.CommitIndex, CommitIndexFrom: "raft",
		PrimarySeqno: best.Last.Seqno, PrimaryEpoch: best.Last.Epoch,
		Positions: map[string]consensus.Position{},
	}
	nodes := make([]string, 0, len(in.Reported))
	for id := range in.Reported {
		nodes = append(nodes, id)
	}
	slices.Sort(nodes)
	for _, id := range nodes {
		if ci := in.Reported[id]; ci > c.CommitIndex {
			c.CommitIndex, c.CommitIndexFrom = ci, id
		}
	}
	for _, a := range in.Answers {
		if a.CommitIndex > c.CommitIndex {
			c.CommitIndex, c.CommitIndexFrom = a.CommitIndex, a.ID
		}
		c.Positions[a.ID] = consensus.Position{Epoch: a.Last.Epoch, Seqno: a.Last.Seqno}
	}
	return c
}

// RebuildSyncSet returns the sync set of the new term: the old one without
// the new primary, filled back to its old size with other members that
// answered (most advanced first, never the failed primary, which rejoins
// later). Any set is safe at this point: the new primary's gate starts
// empty, and it counts a member only for what that member holds.
func RebuildSyncSet(st consensus.State, primary string, answers []Answer) []string {
	set := []string{}
	for _, id := range st.SyncSet {
		if id != primary {
			set = append(set, id)
		}
	}
	var extra []Answer
	for _, a := range answers {
		if a.ID == primary || a.ID == st.Primary || slices.Contains(set, a.ID) {
			continue
		}
		if _, ok := st.Member(a.ID); !ok {
			continue
		}
		extra = append(extra, a)
	}
	slices.SortFunc(extra, func(a, b Answer) int {
		if c := b.Last.Compare(a.Last); c != 0 {
			return c
		}
		return cmp.Compare(a.ID, b.ID)
	})
	for _, a := range extra {
		if len(set) >= len(st.SyncSet) {
			break
		}
		set = append(set, a.ID)
	}
	slices.Sort(set)
	return set
}
