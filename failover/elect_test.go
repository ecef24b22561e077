package failover_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/quire-ha/quire/failover"
)

func cand(id string, epoch, seqno uint64, prio int) failover.Candidate {
	return failover.Candidate{ID: id, Last: failover.LogPosition{Epoch: epoch, Seqno: seqno}, Priority: prio}
}

func TestElect(t *testing.T) {
	abc := []string{"a", "b", "c"}
	tests := []struct {
		name    string
		in      failover.ElectionInput
		safe    bool
		best    string
		have    int
		need    int
		missing []string
		ignored []string
		reason  []string
	}{
		{
			name: "K=1 of 3 needs all three",
			in:   failover.ElectionInput{SyncSet: abc, K: 1, Reports: []failover.Candidate{cand("a", 1, 10, 0), cand("b", 1, 12, 0)}},
			safe: false, best: "b", have: 2, need: 3, missing: []string{"c"},
			reason: []string{"positions from 2 of 3", "need 3", "missing c"},
		},
		{
			name: "K=1 of 3, all three",
			in:   failover.ElectionInput{SyncSet: abc, K: 1, Reports: []failover.Candidate{cand("a", 1, 10, 0), cand("b", 1, 12, 0), cand("c", 1, 11, 0)}},
			safe: true, best: "b", have: 3, need: 3,
			reason: []string{"most advanced b at 1/12"},
		},
		{
			name: "K=2 of 3 needs two",
			in:   failover.ElectionInput{SyncSet: abc, K: 2, Reports: []failover.Candidate{cand("c", 1, 7, 0), cand("a", 1, 9, 0)}},
			safe: true, best: "a", have: 2, need: 2, missing: []string{"b"},
		},
		{
			name: "K=2 of 3, one is not enough",
			in:   failover.ElectionInput{SyncSet: abc, K: 2, Reports: []failover.Candidate{cand("c", 1, 7, 0)}},
			safe: false, best: "c", have: 1, need: 2, missing: []string{"a", "b"},
		},
		{
			name: "K=|S| needs one",
			in:   failover.ElectionInput{SyncSet: abc, K: 3, Reports: []failover.Candidate{cand("b", 2, 1, 0)}},
			safe: true, best: "b", have: 1, need: 1, missing: []string{"a", "c"},
		},
		{
			name: "K=0 is never safe",
			in:   failover.ElectionInput{SyncSet: abc, K: 0, Reports: []failover.Candidate{cand("a", 1, 1, 0), cand("b", 1, 1, 0), cand("c", 1, 1, 0)}},
			safe: false, best: "a", have: 3, need: 4,
			reason: []string{"K=0"},
		},
		{
			name: "empty sync set",
			in:   failover.ElectionInput{K: 0, Reports: []failover.Candidate{cand("x", 1, 1, 0)}},
			safe: false, best: "", have: 0, need: 1, ignored: []string{"x"},
		},
		{
			name: "higher epoch beats higher seqno",
			in:   failover.ElectionInput{SyncSet: abc, K: 3, Reports: []failover.Candidate{cand("a", 1, 90, 9), cand("b", 2, 50, 0)}},
			safe: true, best: "b", have: 2, need: 1, missing: []string{"c"},
		},
		{
			name: "equal position: higher priority",
			in:   failover.ElectionInput{SyncSet: abc, K: 2, Reports: []failover.Candidate{cand("a", 2, 50, 1), cand("b", 2, 50, 5), cand("c", 2, 49, 9)}},
			safe: true, best: "b", have: 3, need: 2,
		},
		{
			name: "equal position: a healthy database before priority",
			in: failover.ElectionInput{SyncSet: abc, K: 2, Reports: []failover.Candidate{
				{ID: "a", Last: failover.LogPosition{Epoch: 2, Seqno: 50}, Priority: 9, Unhealthy: true}, cand("b", 2, 50, 1)}},
			safe: true, best: "b", have: 2, need: 2, missing: []string{"c"},
		},
		{
			name: "equal position and priority: lower id",
			in:   failover.ElectionInput{SyncSet: abc, K: 2, Reports: []failover.Candidate{cand("c", 2, 50, 1), cand("b", 2, 50, 1)}},
			safe: true, best: "b", have: 2, need: 2, missing: []string{"a"},
		},
		{
			name: "reports outside the sync set neither count nor win",
			in: failover.ElectionInput{SyncSet: abc, K: 2, Reports: []failover.Candidate{
				cand("z", 3, 99, 9), cand("a", 2, 10, 0), cand("y", 1, 1, 0)}},
			safe: false, best: "a", have: 1, need: 2, missing: []string{"b", "c"}, ignored: []string{"y", "z"},
		},
		{
			name: "empty logs",
			in:   failover.ElectionInput{SyncSet: []string{"a", "b"}, K: 1, Reports: []failover.Candidate{cand("b", 0, 0, 0), cand("a", 0, 0, 0)}},
			safe: true, best: "a", have: 2, need: 2,
		},
		{
			name: "degraded: safe, but loss possible",
			in:   failover.ElectionInput{SyncSet: abc, K: 2, DegradedSince: 40, Reports: []failover.Candidate{cand("a", 1, 39, 0), cand("b", 1, 45, 0)}},
			safe: true, best: "b", have: 2, need: 2, missing: []string{"c"},
			reason: []string{"degraded since seqno 40"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := failover.Elect(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if e.Safe != tt.safe || e.Best.ID != tt.best || e.Have != tt.have || e.Need != tt.need ||
				!slices.Equal(e.Missing, tt.missing) || !slices.Equal(e.Ignored, tt.ignored) {
				t.Errorf("Elect = %+v\nwant safe=%t best=%q have=%d need=%d missing=%v ignored=%v",
					e, tt.safe, tt.best, tt.have, tt.need, tt.missing, tt.ignored)
			}
			if e.LossPossibleSince != tt.in.DegradedSince {
				t.Errorf("LossPossibleSince = %d, want %d", e.LossPossibleSince, tt.in.DegradedSince)
			}
			for _, r := range tt.reason {
				if !strings.Contains(e.Reason, r) {
					t.Errorf("reason %q does not contain %q", e.Reason, r)
				}
			}
		})
	}
}

func TestElectInvalid(t *testing.T) {
	tests := []struct {
		in   failover.ElectionInput
		want string
	}{
		{failover.ElectionInput{SyncSet: []string{"a", ""}, K: 1}, "empty member id"},
		{failover.ElectionInput{SyncSet: []string{"a", "a"}, K: 1}, `"a" listed twice`},
		{failover.ElectionInput{SyncSet: []string{"a"}, K: 2}, "K=2 but the sync set {a} has 1 members"},
		{failover.ElectionInput{SyncSet: []string{"a"}, K: -1}, "K=-1"},
		{failover.ElectionInput{SyncSet: []string{"a"}, K: 1, Reports: []failover.Candidate{cand("a", 1, 1, 0), cand("a", 1, 2, 0)}}, `two reports from "a"`},
		{failover.ElectionInput{SyncSet: []string{"a"}, K: 1, Reports: []failover.Candidate{cand("", 1, 1, 0)}}, "empty replica id"},
	}
	for _, tt := range tests {
		_, err := failover.Elect(tt.in)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Elect(%+v) error = %v, want %q", tt.in, err, tt.want)
		}
	}
}

// TestElectFindsAcknowledged checks the reason Elect exists, for every
// sync set of up to four members, every K, every way the acknowledged seqno
// could be held by K members and every set of reachable members: Elect is
// safe exactly with |S|-K+1 or more, and then the winner holds the
// acknowledged seqno.
func TestElectFindsAcknowledged(t *testing.T) {
	ids := []string{"a", "b", "c", "d"}
	checked := 0
	for n := 1; n <= len(ids); n++ {
		set := ids[:n]
		for k := 1; k <= n; k++ {
			// holders: bitmask of members holding seqno 10 (the acknowledged
			// one); the others hold 9 at most.
			for holders := 0; holders < 1<<n; holders++ {
				if popcount(holders) < k {
					continue
				}
				for reach := 0; reach < 1<<n; reach++ {
					enough := popcount(reach) >= n-k+1
					var reports []failover.Candidate
					for i, id := range set {
						if reach&(1<<i) == 0 {
							continue
						}
						s := uint64(9 - i%2) // members lacking 10 differ
						if holders&(1<<i) != 0 {
							s = 10 + uint64(i%2)
						}
						reports = append(reports, cand(id, 1, s, i))
					}
					e, err := failover.Elect(failover.ElectionInput{SyncSet: set, K: k, Reports: reports})
					if err != nil {
						t.Fatal(err)
					}
					if e.Safe != enough {
						t.Fatalf("n=%d K=%d reach=%b: safe=%t, want %t: %s", n, k, reach, e.Safe, enough, e.Reason)
					}
					if e.Safe && e.Best.Last.Seqno < 10 {
						t.Fatalf("n=%d K=%d holders=%b reach=%b: elected %s at %s, which lacks seqno 10",
							n, k, holders, reach, e.Best.ID, e.Best.Last)
					}
					checked++
				}
			}
		}
	}
	t.Logf("%d elections checked", checked)
}

func popcount(x int) int {
	n := 0
	for ; x != 0; x &= x - 1 {
		n++
	}
	return n
}

func TestLogPositionCompare(t *testing.T) {
	p := func(e, s uint64) failover.LogPosition { return failover.LogPosition{Epoch: e, Seqno: s} }
	tests := []struct {
		a, b failover.LogPosition
		want int
	}{
		{p(1, 5), p(1, 5), 0},
		{p(1, 5), p(1, 6), -1},
		{p(2, 1), p(1, 100), 1},
		{p(0, 0), p(1, 0), -1},
	}
	for _, tt := range tests {
		if got := tt.a.Compare(tt.b); got != tt.want {
			t.Errorf("%s.Compare(%s) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
		if got := tt.b.Compare(tt.a); got != -tt.want {
			t.Errorf("%s.Compare(%s) = %d, want %d", tt.b, tt.a, got, -tt.want)
		}
	}
}
