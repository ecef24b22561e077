package apply

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

func TestSchedulerSteps(t *testing.T) {
	type op struct {
		offer  *Item  // offer this item...
		want   Step   // ...and expect this step
		commit [2]int // or commit: channel, seqno (when offer is nil)
	}
	it := func(seq uint64, ch int, ser bool) *Item { return &Item{Seqno: seq, Channel: ch, Serialize: ser} }
	for _, tc := range []struct {
		name   string
		n      int
		window uint64
		ops    []op
	}{
		{"parallel dispatch", 2, 10, []op{
			{offer: it(1, 0, false), want: Dispatch},
			{offer: it(2, 1, false), want: Dispatch},
			{offer: it(3, 0, false), want: Dispatch},
		}},
		{"serialized waits for drain, runs alone, blocks the rest", 2, 10, []op{
			{offer: it(1, 0, false), want: Dispatch},
			{offer: it(2, 1, false), want: Dispatch},
			{offer: it(3, 0, true), want: WaitDrain},
			{commit: [2]int{0, 1}},
			{offer: it(3, 0, true), want: WaitDrain},
			{commit: [2]int{1, 2}},
			{offer: it(3, 0, true), want: RunAlone},
			{offer: it(4, 1, false), want: WaitSerial},
			{offer: it(4, 1, true), want: WaitSerial},
			{commit: [2]int{SerialChannel, 3}},
			{offer: it(4, 1, false), want: Dispatch},
		}},
		{"serialized with nothing in flight runs at once", 1, 10, []op{
			{offer: it(1, 0, true), want: RunAlone},
		}},
		{"bounded divergence", 2, 2, []op{
			{offer: it(1, 0, false), want: Dispatch},
			{offer: it(2, 1, false), want: Dispatch},
			{offer: it(3, 1, false), want: Dispatch},
			{offer: it(4, 1, false), want: WaitAhead}, // 4 > 1+2
			{commit: [2]int{1, 3}},                    // channel 1 done, channel 0 still slow
			{offer: it(4, 1, false), want: WaitAhead},
			{commit: [2]int{0, 1}},
			{offer: it(4, 1, false), want: Dispatch},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := NewScheduler(tc.n, tc.window, 0, 0)
			for i, o := range tc.ops {
				if o.offer == nil {
					if err := s.Committed(o.commit[0], uint64(o.commit[1])); err != nil {
						t.Fatalf("op %d: %v", i, err)
					}
					continue
				}
				if d := s.Offer(*o.offer); d.Step != o.want {
					t.Fatalf("op %d: Offer(%+v) = %v, want %v", i, *o.offer, d.Step, o.want)
				}
			}
		})
	}
}

func TestSchedulerTimeWindow(t *testing.T) {
	s := NewScheduler(2, 1000, 10*time.Second, 0)
	if d := s.Offer(Item{Seqno: 1, Channel: 0, Timestamp: 100}); d.Step != Dispatch {
		t.Fatal(d)
	}
	if d := s.Offer(Item{Seqno: 2, Channel: 1, Timestamp: 111}); d.Step != WaitAhead {
		t.Fatalf("11s ahead: %v", d.Step)
	}
	if d := s.Offer(Item{Seqno: 2, Channel: 1, Timestamp: 110}); d.Step != Dispatch {
		t.Fatalf("10s ahead: %v", d.Step)
	}
}

func TestSchedulerCommitChecks(t *testing.T) {
	s := NewScheduler(2, 10, 0, 5)
	if s.Applied() != 5 {
		t.Fatalf("Applied %d, want 5", s.Applied())
	}
	s.Offer(Item{Seqno: 6, Channel: 0})
	s.Offer(Item{Seqno: 7, Channel: 0})
	if err := s.Committed(1, 6); err == nil {
		t.Error("commit on a channel that was not given 6")
	}
	if err := s.Committed(0, 8); err == nil {
		t.Error("commit beyond what was dispatched")
	}
	if err := s.Committed(SerialChannel, 6); err == nil {
		t.Error("serial commit with nothing running")
	}
	if err := s.Committed(5, 6); err == nil {
		t.Error("commit on channel 5 of 2")
	}
	if err := s.Committed(0, 7); err != nil {
		t.Fatal(err)
	}
	if s.Applied() != 7 || s.Inflight() != 0 {
		t.Fatalf("Applied %d Inflight %d", s.Applied(), s.Inflight())
	}
}

// TestSchedulerProperties runs random streams through the scheduler with
// random commit interleavings and block sizes and checks its guarantees
// after every step. QUIRE_APPLY_PROPERTY_RUNS (or -short) scales the runs.
func TestSchedulerProperties(t *testing.T) {
	runs := 3000
	if testing.Short() {
		runs = 300
	}
	for seed := range runs {
		for _, global := range []bool{false, true} {
			if err := simulate(uint64(seed), global); err != nil {
				t.Fatalf("seed %d global=%v: %v", seed, global, err)
			}
		}
	}
}

type simRec struct {
	seqno  uint64
	shard  int
	ch     int
	ser    bool
	ts     uint32
	skip   bool // applied before the (simulated) restart
	done   bool
	placed bool
}

func simulate(seed uint64, global bool) error {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	n := 1 + r.IntN(5)
	window := uint64(1 + r.IntN(20))
	var windowTime time.Duration
	if r.IntN(3) == 0 {
		windowTime = time.Duration(1+r.IntN(5)) * time.Second
	}
	shards := 1 + r.IntN(8)
	serP := r.Float64() * 0.3
	L := 1 + r.IntN(200)
	base := uint64(r.IntN(50)) // seqnos up to base were applied by every channel

	// A restart: channel c has applied up to rows[c] >= base.
	rows := make([]uint64, n)
	for c := range rows {
		if r.IntN(2) == 0 {
			rows[c] = base + uint64(r.IntN(20))
		} else {
			rows[c] = base
		}
	}
	maxRow := base
	for _, v := range rows {
		maxRow = max(maxRow, v)
	}
	recs := make([]*simRec, L)
	var ts uint32 = 1000
	for i := range recs {
		seq := base + 1 + uint64(i)
		ts += uint32(r.IntN(3))
		sh := r.IntN(shards)
		rec := &simRec{seqno: seq, shard: sh, ch: HashChannel(fmt.Sprint("shard", sh), n), ts: ts}
		// A serialized record sets every row, so none lies between the
		// lowest and the highest row.
		rec.ser = seq > maxRow && r.Float64() < serP
		rec.skip = !rec.ser && seq <= rows[rec.ch]
		recs[i] = rec
	}
	byseq := func(s uint64) *simRec { return recs[s-base-1] }

	s := NewScheduler(n, window, windowTime, base)
	next := 0                      // index of the record to offer
	queues := make([][]*simRec, n) // dispatched, uncommitted, per channel
	var serial *simRec
	var commitOrder []uint64

	allBeforeDone := func(seq uint64) bool {
		for q := base + 1; q < seq; q++ {
			if !byseq(q).done {
				return false
			}
		}
		return true
	}
	appliedRef := func() uint64 {
		a := base
		for _, rc := range recs {
			if !rc.done {
				break
			}
			a = rc.seqno
		}
		return a
	}
	oldest := func() *simRec {
		for _, rc := range recs {
			if rc.placed && !rc.done {
				return rc
			}
		}
		return nil
	}

	for steps := 0; ; steps++ {
		if steps > 100000 {
			return fmt.Errorf("no end after %d steps", steps)
		}
		if got, want := s.Applied(), appliedRef(); got != want {
			return fmt.Errorf("Applied %d, want %d", got, want)
		}
		// What can happen now?
		type action func() error
		var acts []action
		if next < len(recs) {
			acts = append(acts, func() error {
				rc := recs[next]
				if rc.skip {
					s.Skipped(rc.seqno)
					rc.done, rc.placed = true, true
					next++
					return nil
				}
				d := s.Offer(Item{Seqno: rc.seqno, Channel: rc.ch, Serialize: rc.ser, Timestamp: rc.ts})
				if serial != nil && d.Step != WaitSerial {
					return fmt.Errorf("seqno %d: %v while serialized %d runs", rc.seqno, d.Step, serial.seqno)
				}
				o := oldest()
				switch d.Step {
				case Dispatch:
					if rc.ser {
						return fmt.Errorf("serialized seqno %d dispatched to a channel", rc.seqno)
					}
					if o != nil && (rc.seqno > o.seqno+window || (windowTime > 0 && rc.ts > o.ts+uint32(windowTime/time.Second))) {
						return fmt.Errorf("seqno %d dispatched more than the window after %d", rc.seqno, o.seqno)
					}
					if q := queues[rc.ch]; len(q) > 0 && q[len(q)-1].seqno > rc.seqno {
						return fmt.Errorf("channel %d: seqno %d after %d", rc.ch, rc.seqno, q[len(q)-1].seqno)
					}
					queues[rc.ch] = append(queues[rc.ch], rc)
					rc.placed = true
					next++
				case RunAlone:
					if !rc.ser {
						return fmt.Errorf("seqno %d not serialized but told to run alone", rc.seqno)
					}
					if !allBeforeDone(rc.seqno) {
						return fmt.Errorf("serialized seqno %d runs before all earlier records committed", rc.seqno)
					}
					serial, rc.placed = rc, true
					next++
				case WaitDrain:
					if !rc.ser || allBeforeDone(rc.seqno) {
						return fmt.Errorf("seqno %d: needless %v", rc.seqno, d.Step)
					}
				case WaitAhead:
					if o == nil || (rc.seqno <= o.seqno+window && (windowTime == 0 || rc.ts <= o.ts+uint32(windowTime/time.Second))) {
						return fmt.Errorf("seqno %d: needless %v (oldest %v)", rc.seqno, d.Step, o)
					}
				case WaitSerial:
					if serial == nil {
						return fmt.Errorf("seqno %d: %v with nothing serialized running", rc.seqno, d.Step)
					}
				}
				return nil
			})
		}
		for ch := range queues {
			if len(queues[ch]) == 0 {
				continue
			}
			acts = append(acts, func() error {
				q := queues[ch]
				k := 1 + r.IntN(len(q))
				if global {
					// A block commits whole; in global order it needs
					// consecutive seqnos and its turn.
					k = 1
					for k < len(q) && q[k].seqno == q[k-1].seqno+1 && r.IntN(2) == 0 {
						k++
					}
					if !s.MayCommit(q[0].seqno) {
						if allBeforeDone(q[0].seqno) {
							return fmt.Errorf("MayCommit(%d) false with all earlier committed", q[0].seqno)
						}
						return nil // not its turn
					}
					if !allBeforeDone(q[0].seqno) {
						return fmt.Errorf("MayCommit(%d) true with earlier records uncommitted", q[0].seqno)
					}
				}
				inBlock := map[uint64]bool{}
				for _, rc := range q[:k] {
					inBlock[rc.seqno] = true
				}
				for _, rc := range q[:k] {
					for _, other := range recs {
						if other.seqno < rc.seqno && other.shard == rc.shard && !other.done && !inBlock[other.seqno] {
							return fmt.Errorf("shard %d: seqno %d commits before %d", rc.shard, rc.seqno, other.seqno)
						}
					}
				}
				if err := s.Committed(ch, q[k-1].seqno); err != nil {
					return err
				}
				for _, rc := range q[:k] {
					rc.done = true
					commitOrder = append(commitOrder, rc.seqno)
				}
				queues[ch] = q[k:]
				return nil
			})
		}
		if serial != nil {
			acts = append(acts, func() error {
				if err := s.Committed(SerialChannel, serial.seqno); err != nil {
					return err
				}
				serial.done = true
				commitOrder = append(commitOrder, serial.seqno)
				serial = nil
				return nil
			})
		}
		if len(acts) == 0 {
			break
		}
		if err := acts[r.IntN(len(acts))](); err != nil {
			return err
		}
	}
	for _, rc := range recs {
		if !rc.done {
			return fmt.Errorf("seqno %d never committed (deadlock)", rc.seqno)
		}
	}
	if global {
		for i := 1; i < len(commitOrder); i++ {
			if commitOrder[i] < commitOrder[i-1] {
				return fmt.Errorf("global order: %d committed after %d", commitOrder[i], commitOrder[i-1])
			}
		}
	}
	if s.Inflight() != 0 || s.Applied() != base+uint64(L) {
		return fmt.Errorf("end: inflight %d applied %d", s.Inflight(), s.Applied())
	}
	return nil
}
