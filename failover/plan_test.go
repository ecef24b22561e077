package failover_test

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/quire-ha/quire/consensus"
	"github.com/quire-ha/quire/failover"
)

// cluster returns a state with members ids (the first is primary of epoch
// 1), the given sync set and K, and recorded commit index commit.
func cluster(t *testing.T, ids []string, syncSet []string, k int, commit uint64) consensus.State {
	t.Helper()
	s := consensus.NewState()
	apply := func(c consensus.Command) {
		t.Helper()
		var err error
		if s, err = s.Apply(c); err != nil {
			t.Fatal(err)
		}
	}
	for i, id := range ids {
		apply(consensus.AddMember{Member: consensus.Member{ID: id, MySQLAddr: fmt.Sprintf("h%d:3306", i), AgentAddr: fmt.Sprintf("h%d:7400", i), MayBePrimary: true}})
	}
	apply(consensus.SetPrimary{Epoch: 1, Primary: ids[0], FirstSeqno: 1, SyncSet: syncSet})
	apply(consensus.SetK{K: k})
	if commit > 0 {
		apply(consensus.RecordCommitIndex{Seqno: commit})
	}
	return s
}

func ans(id string, epoch, seqno uint64) failover.Answer {
	return failover.Answer{ID: id, Last: failover.LogPosition{Epoch: epoch, Seqno: seqno}, Durable: seqno, Role: "replica", Epoch: epoch, DatabaseHealthy: true}
}

func sick(a failover.Answer) failover.Answer { a.DatabaseHealthy = false; return a }

func TestPlanFailover(t *testing.T) {
	now := t0.Add(time.Hour)
	abcd := []string{"a", "b", "c", "d"}
	tests := []struct {
		name     string
		st       func(t *testing.T) consensus.State
		in       failover.PlanInput
		promote  bool
		cand     string
		syncSet  []string
		commit   uint64
		from     string
		reason   []string
		warnings int
	}{
		{
			name: "K=1 of {b,c}: both answer, most advanced wins",
			st:   func(t *testing.T) consensus.State { return cluster(t, abcd, []string{"b", "c"}, 1, 90) },
			in: failover.PlanInput{Now: now, Answers: []failover.Answer{ans("b", 1, 100), ans("c", 1, 98), ans("d", 1, 120)},
				Reported: map[string]uint64{"a": 99, "b": 97}},
			promote: true, cand: "b", syncSet: []string{"c", "d"}, commit: 99, from: "a",
			reason: []string{"promote b (1/100)", "highest commit index reported 99 (a)"},
		},
		{
			name: "K=1 of {b,c}: one answer is not enough",
			st:   func(t *testing.T) consensus.State { return cluster(t, abcd, []string{"b", "c"}, 1, 90) },
			in:   failover.PlanInput{Now: now, Answers: []failover.Answer{ans("b", 1, 100), ans("d", 1, 120)}},
			cand: "b", reason: []string{"election refused", "positions from 1 of 2", "missing c"},
		},
		{
			name: "K=0 never fails over automatically",
			st:   func(t *testing.T) consensus.State { return cluster(t, abcd, []string{"b", "c"}, 0, 0) },
			in:   failover.PlanInput{Now: now, Answers: []failover.Answer{ans("b", 1, 100), ans("c", 1, 100)}},
			cand: "b", reason: []string{"K=0"},
		},
		{
			name: "the failed primary's answer does not count",
			st:   func(t *testing.T) consensus.State { return cluster(t, abcd, []string{"b", "c"}, 1, 0) },
			in:   failover.PlanInput{Now: now, Answers: []failover.Answer{ans("a", 1, 200), ans("c", 1, 100)}},
			cand: "c", reason: []string{"positions from 1 of 2"},
		},
		{
			name: "the most advanced may not be primary",
			st: func(t *testing.T) consensus.State {
				s := cluster(t, abcd, []string{"b", "c"}, 1, 0)
				m, _ := s.Member("c")
				m.MayBePrimary = false
				s, err := s.Apply(consensus.UpdateMember{Member: m})
				if err != nil {
					t.Fatal(err)
				}
				return s
			},
			in:   failover.PlanInput{Now: now, Answers: []failover.Answer{ans("b", 1, 100), ans("c", 1, 101)}},
			cand: "c", reason: []string{"most advanced sync-set member c (at 1/101) may not be primary"},
		},
		{
			name:   "a log of an unknown epoch",
			st:     func(t *testing.T) consensus.State { return cluster(t, abcd, []string{"b", "c"}, 1, 0) },
			in:     failover.PlanInput{Now: now, Answers: []failover.Answer{ans("b", 1, 100), ans("c", 3, 101)}},
			reason: []string{"member c holds records of epoch 3, newer than the cluster's epoch 1"},
		},
		{
			name: "below the reported commit index",
			st:   func(t *testing.T) consensus.State { return cluster(t, abcd, []string{"b", "c"}, 1, 0) },
			in: failover.PlanInput{Now: now, Answers: []failover.Answer{ans("b", 1, 100), ans("c", 1, 99)},
				Reported: map[string]uint64{"a": 105}},
			cand: "b", reason: []string{"ends at seqno 100, below the commit index 105 that a reported"},
		},
		{
			name: "an answer's commit index counts too",
			st:   func(t *testing.T) consensus.State { return cluster(t, abcd, []string{"b", "c"}, 1, 0) },
			in: failover.PlanInput{Now: now, Answers: []failover.Answer{ans("b", 1, 100), {ID: "c", Last: failover.LogPosition{Epoch: 1, Seqno: 99}, CommitIndex: 100}},
				Reported: map[string]uint64{"a": 95}},
			promote: true, cand: "b", syncSet: []string{"c"}, commit: 100, from: "c",
		},
		{
			name: "degraded: promotes, says what may be lost",
			st: func(t *testing.T) consensus.State {
				s := cluster(t, abcd, []string{"b", "c"}, 1, 50)
				var err error
				if s, err = s.Apply(consensus.SetPolicy{Policy: consensus.PolicyDegrade}); err != nil {
					t.Fatal(err)
				}
				if s, err = s.Apply(consensus.MarkDegraded{AsyncSince: 61, Reason: "c down", At: t0}); err != nil {
					t.Fatal(err)
				}
				return s
			},
			in: failover.PlanInput{Now: now, Answers: []failover.Answer{ans("b", 1, 70), ans("c", 1, 60)},
				Reported: map[string]uint64{"a": 80}},
			promote: true, cand: "b", syncSet: []string{"c"}, commit: 80, from: "a", warnings: 1,
			reason: []string{"WARNING: the cluster is degraded since seqno 61"},
		},
		{
			name:    "equally advanced: a healthy database wins",
			st:      func(t *testing.T) consensus.State { return cluster(t, abcd, []string{"b", "c"}, 1, 0) },
			in:      failover.PlanInput{Now: now, Answers: []failover.Answer{sick(ans("b", 1, 70)), ans("c", 1, 70)}},
			promote: true, cand: "c", syncSet: []string{"b"},
		},
		{
			name:    "more advanced with its database down: promoted, and said",
			st:      func(t *testing.T) consensus.State { return cluster(t, abcd, []string{"b", "c"}, 1, 0) },
			in:      failover.PlanInput{Now: now, Answers: []failover.Answer{sick(ans("b", 1, 71)), ans("c", 1, 70)}},
			promote: true, cand: "b", syncSet: []string{"c"}, warnings: 1,
			reason: []string{"b's database does not answer its agent"},
		},
		{
			name: "a sync set smaller than K is said",
			st: func(t *testing.T) consensus.State {
				return cluster(t, []string{"a", "b", "c"}, []string{"b", "c"}, 2, 0)
			},
			in:      failover.PlanInput{Now: now, Answers: []failover.Answer{ans("b", 1, 70), ans("c", 1, 60)}},
			promote: true, cand: "b", syncSet: []string{"c"}, warnings: 1,
			reason: []string{"fewer members than k=2"},
		},
		{
			name: "anti-flapping",
			st: func(t *testing.T) consensus.State {
				s := cluster(t, abcd, []string{"b", "c"}, 1, 0)
				s, err := s.Apply(consensus.RecordFailover{At: now.Add(-time.Minute), Epoch: 1, From: "x", To: "a", Reason: "earlier"})
				if err != nil {
					t.Fatal(err)
				}
				return s
			},
			in:     failover.PlanInput{Now: now, Answers: []failover.Answer{ans("b", 1, 70), ans("c", 1, 60)}},
			reason: []string{"anti-flapping", "unacknowledged", "quire ack-failover"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := tt.st(t)
			p, err := failover.PlanFailover(st, tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if p.Promote != tt.promote || p.Candidate != tt.cand || len(p.Warnings) != tt.warnings {
				t.Fatalf("plan = promote %t candidate %q warnings %q (%s), want promote %t candidate %q, %d warnings",
					p.Promote, p.Candidate, p.Warnings, p.Reason, tt.promote, tt.cand, tt.warnings)
			}
			for _, r := range tt.reason {
				if !strings.Contains(p.Reason, r) {
					t.Errorf("reason %q does not contain %q", p.Reason, r)
				}
			}
			if !p.Promote {
				return
			}
			c := p.Command
			if c.Epoch != 2 || c.Primary != tt.cand || c.FirstSeqno != p.ExpectLast+1 || !c.Automatic || c.Reason != p.Reason ||
				!slices.Equal(c.SyncSet, tt.syncSet) || c.Certificate == nil {
				t.Fatalf("command %+v", c)
			}
			if cert := c.Certificate; cert.CommitIndex != tt.commit || tt.from != "" && cert.CommitIndexFrom != tt.from || cert.PrimarySeqno != p.ExpectLast {
				t.Errorf("certificate %+v, want commit index %d from %q", cert, tt.commit, tt.from)
			}
			if err := st.Validate(c); err != nil {
				t.Errorf("the planned command is refused: %v", err)
			}
		})
	}
}

func TestRebuildSyncSet(t *testing.T) {
	st := cluster(t, []string{"a", "b", "c", "d", "e"}, []string{"b", "c"}, 1, 0)
	tests := []struct {
		primary string
		answers []failover.Answer
		want    []string
	}{
		{"b", nil, []string{"c"}},
		{"b", []failover.Answer{ans("d", 1, 5), ans("e", 1, 9), ans("a", 1, 99)}, []string{"c", "e"}},
		{"b", []failover.Answer{ans("d", 1, 9), ans("e", 1, 9)}, []string{"c", "d"}},
		{"c", []failover.Answer{ans("b", 1, 9), ans("d", 2, 1)}, []string{"b", "d"}},
		{"d", []failover.Answer{ans("e", 1, 1)}, []string{"b", "c"}},
	}
	for _, tt := range tests {
		if got := failover.RebuildSyncSet(st, tt.primary, tt.answers); !slices.Equal(got, tt.want) {
			t.Errorf("RebuildSyncSet(primary %s, %v) = %v, want %v", tt.primary, tt.answers, got, tt.want)
		}
	}
}

// TestPlanNeverLosesAcknowledged is a property test: for random sync sets,
// K, holders of the last acknowledged seqno and sets of answering members,
// PlanFailover promotes exactly when |S|-K+1 sync-set members answered
// (and the best may be primary), the candidate then holds the acknowledged
// seqno, and the command it plans is accepted by the state.
func TestPlanNeverLosesAcknowledged(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	ids := []string{"a", "b", "c", "d", "e", "f"}
	promoted := 0
	for round := 0; round < 5000; round++ {
		n := 2 + rng.IntN(len(ids)-1) // members, a is the primary
		members := ids[:n]
		var syncSet []string
		for _, id := range members[1:] {
			if rng.IntN(4) != 0 {
				syncSet = append(syncSet, id)
			}
		}
		if len(syncSet) == 0 {
			syncSet = []string{members[1]}
		}
		k := 1 + rng.IntN(len(syncSet))
		const acked = 100
		st := cluster(t, members, syncSet, k, uint64(rng.IntN(acked+1)))
		noPrimary := ""
		if rng.IntN(5) == 0 {
			noPrimary = members[1+rng.IntN(n-1)]
			m, _ := st.Member(noPrimary)
			m.MayBePrimary = false
			var err error
			if st, err = st.Apply(consensus.UpdateMember{Member: m}); err != nil {
				t.Fatal(err)
			}
		}
		// K members of the sync set hold the acknowledged seqno (or more);
		// the others hold less. Members outside it hold anything.
		holders := map[string]bool{}
		for _, i := range rng.Perm(len(syncSet))[:k] {
			holders[syncSet[i]] = true
		}
		var answers []failover.Answer
		answered := 0
		for _, id := range members {
			if rng.IntN(3) == 0 {
				continue
			}
			s := uint64(rng.IntN(acked))
			switch {
			case holders[id]:
				s = acked + uint64(rng.IntN(3))
			case !slices.Contains(syncSet, id):
				s = uint64(rng.IntN(2 * acked))
			}
			answers = append(answers, ans(id, 1, s))
			if slices.Contains(syncSet, id) {
				answered++
			}
		}
		p, err := failover.PlanFailover(st, failover.PlanInput{Now: t0, Answers: answers, Reported: map[string]uint64{"a": acked}})
		if err != nil {
			t.Fatal(err)
		}
		safe := answered >= len(syncSet)-k+1
		want := safe && p.Candidate != noPrimary
		if p.Promote != want {
			t.Fatalf("round %d: S=%v K=%d answers=%v: promote=%t, want %t: %s", round, syncSet, k, answers, p.Promote, want, p.Reason)
		}
		if !p.Promote {
			continue
		}
		promoted++
		if !holders[p.Candidate] || p.ExpectLast < acked {
			t.Fatalf("round %d: S=%v K=%d holders=%v answers=%v: promoted %s at %d, which lacks seqno %d",
				round, syncSet, k, holders, answers, p.Candidate, p.ExpectLast, acked)
		}
		if err := st.Validate(p.Command); err != nil {
			t.Fatalf("round %d: planned command refused: %v", round, err)
		}
	}
	if promoted == 0 {
		t.Fatal("no round promoted")
	}
	t.Logf("%d promotions checked", promoted)
}
