package failover

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// LogPosition identifies the last entry of a member's durable transaction
// log: the epoch (primary term) that wrote it and its seqno.
type LogPosition struct {
	Epoch uint64
	Seqno uint64
}

// Compare returns -1, 0 or +1 as p is less, equally or more advanced than q:
// higher epoch of the last entry first, then higher seqno (Raft's rule).
func (p LogPosition) Compare(q LogPosition) int {
	if c := cmp.Compare(p.Epoch, q.Epoch); c != 0 {
		return c
	}
	return cmp.Compare(p.Seqno, q.Seqno)
}

// String returns "epoch/seqno".
func (p LogPosition) String() string { return fmt.Sprintf("%d/%d", p.Epoch, p.Seqno) }

// Candidate is one reachable member's report for an election.
type Candidate struct {
	ID string
	// Last is the last entry of the member's durable log.
	Last LogPosition
	// Priority breaks ties between equally advanced members: higher wins.
	Priority int
	// Unhealthy marks a member whose database did not answer its agent:
	// between equally advanced members, a healthy one wins before
	// priority (it can open writes now).
	Unhealthy bool
}

// MoreAdvanced reports whether a should be promoted rather than b: a's log
// is more advanced, or equally advanced and only a's database is healthy,
// or a has the higher priority, or all that equal and a has the lower id.
func MoreAdvanced(a, b Candidate) bool {
	if c := a.Last.Compare(b.Last); c != 0 {
		return c > 0
	}
	if a.Unhealthy != b.Unhealthy {
		return b.Unhealthy
	}
	if a.Priority != b.Priority {
		return a.Priority > b.Priority
	}
	return a.ID < b.ID
}

// ElectionInput is what an election decides on: the recorded sync set, K and
// degraded marker, and the positions collected from reachable members.
type ElectionInput struct {
	SyncSet []string
	K       int
	// DegradedSince is the recorded degraded marker, 0 if none.
	DegradedSince uint64
	// Reports are the positions collected from reachable replicas. Reports
	// from replicas outside the sync set are ignored.
	Reports []Candidate
}

// Election is the outcome of Elect.
type Election struct {
	// Safe is true when positions came from at least Need members of the
	// sync set, so that Best holds every acknowledged transaction (below
	// LossPossibleSince, if set): automatic promotion may proceed.
	Safe bool
	// Best is the most advanced reporting member of the sync set; its ID is
	// empty if no member reported. Meaningful for operators even when not
	// Safe, but then it may lack acknowledged transactions.
	Best Candidate
	// Have is the number of sync-set members that reported; Need is
	// |S|-K+1.
	Have, Need int
	// Missing lists the sync-set members without a report, sorted.
	Missing []string
	// Ignored lists reporters outside the sync set, sorted.
	Ignored []string
	// LossPossibleSince is the degraded marker: transactions from this seqno
	// on may have been acknowledged without K holders and may be lost.
	// 0 if none.
	LossPossibleSince uint64
	// Reason says why, in words for logs and the CLI.
	Reason string
}

// Elect decides whether automatic promotion is safe and who is the most
// advanced candidate. Any K members of the sync set S hold every
// acknowledged transaction, so positions from |S|-K+1 members include one of
// them, and the most advanced of those holds everything acknowledged. With
// K=0 no set of positions proves that, so Elect never finds it safe.
//
// It returns an error for malformed input: an empty or repeated id in the
// sync set, K outside 0..|S|, or two reports from one replica.
func Elect(in ElectionInput) (Election, error) {
	set := make(map[string]bool, len(in.SyncSet))
	for _, id := range in.SyncSet {
		if id == "" {
			return Election{}, errors.New("failover: elect: empty member id in sync set")
		}
		if set[id] {
			return Election{}, fmt.Errorf("failover: elect: member %q listed twice in sync set", id)
		}
		set[id] = true
	}
	if in.K < 0 || in.K > len(in.SyncSet) {
		return Election{}, fmt.Errorf("failover: elect: K=%d but the sync set %s has %d members", in.K, formatSet(in.SyncSet), len(in.SyncSet))
	}
	e := Election{Need: len(in.SyncSet) - in.K + 1, LossPossibleSince: in.DegradedSince}
	seen := make(map[string]bool, len(in.Reports))
	for _, c := range in.Reports {
		if c.ID == "" {
			return Election{}, errors.New("failover: elect: report with an empty replica id")
		}
		if seen[c.ID] {
			return Election{}, fmt.Errorf("failover: elect: two reports from %q", c.ID)
		}
		seen[c.ID] = true
		if !set[c.ID] {
			e.Ignored = append(e.Ignored, c.ID)
			continue
		}
		e.Have++
		if e.Best.ID == "" || MoreAdvanced(c, e.Best) {
			e.Best = c
		}
	}
	for _, id := range in.SyncSet {
		if !seen[id] {
			e.Missing = append(e.Missing, id)
		}
	}
	slices.Sort(e.Missing)
	slices.Sort(e.Ignored)
	e.Safe = in.K > 0 && e.Have >= e.Need
	switch {
	case in.K == 0:
		e.Reason = "K=0: acknowledgements are asynchronous, no positions prove that nothing acknowledged is lost"
	case !e.Safe:
		e.Reason = fmt.Sprintf("positions from %d of %d sync-set members, need %d (|S|-K+1 with K=%d); missing %s",
			e.Have, len(in.SyncSet), e.Need, in.K, strings.Join(e.Missing, ", "))
	default:
		e.Reason = fmt.Sprintf("positions from %d of %d sync-set members (need %d); most advanced %s at %s",
			e.Have, len(in.SyncSet), e.Need, e.Best.ID, e.Best.Last)
	}
	if in.DegradedSince != 0 {
		e.Reason += fmt.Sprintf("; degraded since seqno %d: transactions from it on may be lost", in.DegradedSince)
	}
	return e, nil
}

// formatSet renders a set of ids sorted, for messages.
func formatSet(ids []string) string {
	s := slices.Clone(ids)
	slices.Sort(s)
	return "{" + strings.Join(s, ", ") + "}"
}
