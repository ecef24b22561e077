package ship

import (
	"errors"
	"math/rand/v2"
	"strings"
	"testing"
)

// epochs[i] is the epoch of seqno i+1.
func view(epochs []uint64, first, current uint64) LogView {
	return LogView{
		First: first, Last: uint64(len(epochs)), CurrentEpoch: current,
		EpochAt: func(s uint64) (uint64, error) {
			if s < first || s > uint64(len(epochs)) {
				return 0, errors.New("out of range")
			}
			return epochs[s-1], nil
		},
	}
}

func hello(epochs []uint64, known uint64) Hello {
	h := Hello{Node: "db2", Epoch: known, NextSeqno: uint64(len(epochs)) + 1}
	if len(epochs) > 0 {
		h.LastEpoch = epochs[len(epochs)-1]
	}
	return h
}

func TestDecideTable(t *testing.T) {
	primary := []uint64{1, 1, 1, 2, 2, 4, 4}
	for _, tc := range []struct {
		name    string
		h       Hello
		first   uint64
		verdict Verdict
		fork    uint64
		code    HelloCode
		msg     string
	}{
		{"empty replica", Hello{Node: "r", Epoch: 4, NextSeqno: 1}, 1, Accept, 0, 0, ""},
		{"matching middle", Hello{Node: "r", Epoch: 4, NextSeqno: 4, LastEpoch: 1}, 1, Accept, 0, 0, ""},
		{"matching end", Hello{Node: "r", Epoch: 4, NextSeqno: 8, LastEpoch: 4}, 1, Accept, 0, 0, ""},
		{"older epoch known is fine", Hello{Node: "r", Epoch: 2, NextSeqno: 5, LastEpoch: 2}, 1, Accept, 0, 0, ""},
		{"replica tail of epoch 3 never seen", Hello{Node: "r", Epoch: 4, NextSeqno: 7, LastEpoch: 3}, 1, Fork, 5, 0, ""},
		{"replica epoch-1 tail past our epoch-1 run", Hello{Node: "r", Epoch: 4, NextSeqno: 6, LastEpoch: 1}, 1, Fork, 3, 0, ""},
		{"replica epoch 2 beyond our end", Hello{Node: "r", Epoch: 4, NextSeqno: 12, LastEpoch: 2}, 1, Fork, 5, 0, ""},
		{"beyond end same epoch", Hello{Node: "r", Epoch: 4, NextSeqno: 9, LastEpoch: 4}, 1, 0, 0, OutOfRange, "beyond this log's end 7"},
		{"stale primary", Hello{Node: "r", Epoch: 5, NextSeqno: 1}, 1, 0, 0, StalePrimary, "no longer the primary"},
		{"unknown epoch", Hello{Node: "r", Epoch: 4, NextSeqno: 3, LastEpoch: 9}, 1, 0, 0, BadHello, "epoch 9, unknown"},
		{"empty node", Hello{Epoch: 4, NextSeqno: 1}, 1, 0, 0, BadHello, "node id is empty"},
		{"seqno zero", Hello{Node: "r", Epoch: 4}, 1, 0, 0, BadHello, "seqno 0"},
		{"records without epoch", Hello{Node: "r", Epoch: 4, NextSeqno: 3}, 1, 0, 0, BadHello, "last epoch 0"},
		{"purged", Hello{Node: "r", Epoch: 4, NextSeqno: 2, LastEpoch: 1}, 3, 0, 0, OutOfRange, "purged"},
		{"empty replica, purged log", Hello{Node: "r", Epoch: 4, NextSeqno: 1}, 3, 0, 0, OutOfRange, "re-provision"},
		{"match right at first", Hello{Node: "r", Epoch: 4, NextSeqno: 4, LastEpoch: 1}, 3, Accept, 0, 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := view(primary, tc.first, 4)
			verdict, fork, err := Decide(tc.h, v)
			if tc.code != 0 {
				var he *HelloError
				if !errors.As(err, &he) || he.Code != tc.code || !strings.Contains(he.Msg, tc.msg) {
					t.Fatalf("got %v %d %v, want error code %d containing %q", verdict, fork, err, tc.code, tc.msg)
				}
				return
			}
			if err != nil || verdict != tc.verdict || fork != tc.fork {
				t.Fatalf("got %v %d %v, want %v %d", verdict, fork, err, tc.verdict, tc.fork)
			}
		})
	}
}

// TestDecideConverges builds random histories in which a replica followed
// some primaries and then a new primary took over, and checks that hello,
// truncate, hello … ends at exactly the longest common prefix and never cuts
// below it.
func TestDecideConverges(t *testing.T) {
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	r := rand.New(rand.NewPCG(seed, 1))
	for iter := range 5000 {
		// A common prefix, then diverging tails; the primary's tail has a
		// strictly newer epoch than anything the replica has past the fork.
		var common []uint64
		e := uint64(1)
		for range r.IntN(20) {
			if r.IntN(5) == 0 {
				e++
			}
			common = append(common, e)
		}
		replica := append([]uint64(nil), common...)
		re := e
		for range r.IntN(10) {
			if r.IntN(3) == 0 {
				re++
			}
			replica = append(replica, re)
		}
		primary := append([]uint64(nil), common...)
		pe := re + 1 + uint64(r.IntN(2))
		for range r.IntN(10) {
			primary = append(primary, pe)
		}
		v := view(primary, 1, pe)
		truth := len(common)
		for steps := 0; ; steps++ {
			if steps > 100 {
				t.Fatalf("iter %d: no convergence: primary %v replica %v", iter, primary, replica)
			}
			verdict, fork, err := Decide(hello(replica, pe), v)
			if err != nil {
				// Only a replica strictly longer in the primary's own epoch
				// would be refused, which this generator never makes.
				t.Fatalf("iter %d: %v (primary %v replica %v)", iter, err, primary, replica)
			}
			if verdict == Accept {
				if len(replica) != truth && !prefix(replica, primary) {
					t.Fatalf("iter %d: accepted replica %v against primary %v", iter, replica, primary)
				}
				break
			}
			if fork < uint64(truth) {
				t.Fatalf("iter %d: fork %d below the common prefix %d (primary %v replica %v)", iter, fork, truth, primary, replica)
			}
			if fork >= uint64(len(replica)) {
				t.Fatalf("iter %d: fork %d does not shorten replica of %d", iter, fork, len(replica))
			}
			replica = replica[:fork]
		}
	}
}

func prefix(a, b []uint64) bool {
	if len(a) > len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
