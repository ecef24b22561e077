package semisync

import (
	"flag"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The model test drives a Gate together with a model of everything around
// it: replicas that fsync and report, crash and restart; Raft, which holds
// the recorded sync set, K and degraded marker; and a caller that records
// changes in Raft only when the gate allows and tells the gate afterwards,
// each step at its own time. After every step it checks the invariant
// against what Raft holds.

var (
	flagDepth = flag.Int("semisync.depth", 0, "exhaustive model test: search depth (0: default, 10; 7 with -short)")
	flagSeed  = flag.Int64("semisync.seed", 0, "random model test: seed (0: time-based)")
	flagRuns  = flag.Int("semisync.runs", 0, "random model test: number of runs (0: default, 300; 40 with -short)")
)

// world is the gate plus its surroundings.
type world struct {
	g   *Gate
	ids []string
	cfg modelConfig

	// Replicas: what each has fsynced and reported, and whether it runs.
	durable []uint64
	alive   []bool
	// unreported[i] is fsynced but not yet reported (random test only).
	unreported []uint64

	// Raft: the recorded state.
	raftSet    []bool
	raftK      int
	raftMarker uint64

	// Allowed by the gate, not yet recorded in Raft (the caller's latency).
	okRem    []bool
	okK      int // -1: none
	okMarker uint64
	okClear  bool

	// Recorded in Raft, the gate not yet told.
	pendAdd    []bool
	pendRem    []bool
	pendK      int // -1: none
	pendMarker uint64
	pendClear  bool

	extracted uint64
	sent      uint64 // highest ACK sent to mariadbd by this gate
	acked     uint64 // highest commit index of any gate, ever
}

type modelConfig struct {
	n          int
	members    []int
	k          int
	policy     Policy
	maxSeq     uint64
	maxK       int
	recoverLag uint64
}

func (c modelConfig) String() string {
	return fmt.Sprintf("n=%d members=%v K=%d policy=%s maxSeq=%d recoverLag=%d", c.n, c.members, c.k, c.policy, c.maxSeq, c.recoverLag)
}

// posOf is the binlog end position the model gives seqno s: four
// transactions per file, so files rotate.
func posOf(s uint64) BinlogPosition {
	return BinlogPosition{File: fmt.Sprintf("bin.%06d", 1+s/4), Pos: 4 + 100*(s%4)}
}

func newWorld(cfg modelConfig) (*world, error) {
	w := &world{
		cfg:        cfg,
		durable:    make([]uint64, cfg.n),
		alive:      make([]bool, cfg.n),
		unreported: make([]uint64, cfg.n),
		raftSet:    make([]bool, cfg.n),
		pendAdd:    make([]bool, cfg.n),
		pendRem:    make([]bool, cfg.n),
		okRem:      make([]bool, cfg.n),
		okK:        -1,
		pendK:      -1,
		raftK:      cfg.k,
	}
	var members []string
	for i := range cfg.n {
		w.ids = append(w.ids, string(rune('a'+i)))
	}
	for _, i := range cfg.members {
		w.raftSet[i] = true
		members = append(members, w.ids[i])
	}
	g, err := New(Config{Members: members, K: cfg.k, Policy: cfg.policy, RecoverLag: cfg.recoverLag})
	if err != nil {
		return nil, err
	}
	w.g = g
	for i, id := range w.ids {
		w.alive[i] = true
		if err := g.SetHealthy(id, true); err != nil {
			return nil, err
		}
	}
	return w, nil
}

func (g *Gate) clone() *Gate {
	c := *g
	c.pending = slices.Clone(g.pending)
	c.replicas = make(map[string]*replica, len(g.replicas))
	for id, r := range g.replicas {
		rr := *r
		c.replicas[id] = &rr
	}
	return &c
}

func (w *world) clone() *world {
	c := *w
	c.g = w.g.clone()
	c.durable = slices.Clone(w.durable)
	c.alive = slices.Clone(w.alive)
	c.unreported = slices.Clone(w.unreported)
	c.raftSet = slices.Clone(w.raftSet)
	c.pendAdd = slices.Clone(w.pendAdd)
	c.pendRem = slices.Clone(w.pendRem)
	c.okRem = slices.Clone(w.okRem)
	return &c
}

// key encodes the gate's state, without counters that do not influence
// decisions (stale reports) and positions (a function of the seqno here).
func (g *Gate) key(b []byte, ids []string) []byte {
	b = fmt.Appendf(b, "k%d/%d/%t p%d x%d c%d s%d r%t m%d/%t c%d|", g.k, g.proposedK, g.hasProposal, g.policy,
		g.extracted, g.commit, g.sent, g.resend, g.marker, g.spent, g.ceiling)
	for _, id := range ids {
		r := g.replicas[id]
		if r == nil {
			b = append(b, '-')
			continue
		}
		b = strconv.AppendUint(b, r.durable, 10)
		b = appendBits(b, r.healthy, r.member, r.removing, r.counted)
	}
	return b
}

func appendBits(b []byte, bs ...bool) []byte {
	for _, x := range bs {
		if x {
			b = append(b, '1')
		} else {
			b = append(b, '0')
		}
	}
	return append(b, '|')
}

func bits(bs ...bool) string { return string(appendBits(nil, bs...)) }

func (w *world) key() string {
	b := w.g.key(make([]byte, 0, 128), w.ids)
	b = appendBits(b, w.raftSet...)
	b = appendBits(b, w.okRem...)
	b = appendBits(b, w.pendAdd...)
	b = appendBits(b, w.pendRem...)
	b = appendBits(b, w.alive...)
	b = appendBits(b, w.okClear, w.pendClear)
	for _, v := range []uint64{uint64(w.raftK), w.raftMarker, uint64(w.okK + 1), w.okMarker, uint64(w.pendK + 1), w.pendMarker, w.acked} {
		b = strconv.AppendUint(b, v, 10)
		b = append(b, ',')
	}
	for _, v := range w.unreported {
		b = strconv.AppendUint(b, v, 10)
		b = append(b, ',')
	}
	return string(b)
}

// event is one step the surroundings may take.
type event struct {
	name string
	// ok reports whether the step is possible in w, without changing w. An
	// error is a test failure.
	ok func(w *world) (bool, error)
	// do applies the step to w (a fresh clone). An error is a test failure.
	do func(w *world) error
}

func always(*world) (bool, error) { return true, nil }

// events lists the steps of the exhaustive model.
func (w *world) events() []event {
	var evs []event
	add := func(name string, ok func(w *world) (bool, error), do func(w *world) error) {
		evs = append(evs, event{name, ok, do})
	}
	cond := func(f func(w *world) bool) func(w *world) (bool, error) {
		return func(w *world) (bool, error) { return f(w), nil }
	}

	add("extract", cond(func(w *world) bool { return w.extracted < w.cfg.maxSeq }), func(w *world) error {
		w.extracted++
		return w.g.Extracted(w.extracted, posOf(w.extracted))
	})
	for i, id := range w.ids {
		add("ack("+id+")", cond(func(w *world) bool {
			return w.alive[i] && w.durable[i]+w.unreported[i] < w.extracted
		}), func(w *world) error {
			w.durable[i] += w.unreported[i] + 1
			w.unreported[i] = 0
			return w.g.Durable(id, w.durable[i])
		})
		add("crash("+id+")", cond(func(w *world) bool { return w.alive[i] }), func(w *world) error {
			w.alive[i] = false
			return w.g.SetHealthy(id, false)
		})
		add("restart("+id+")", cond(func(w *world) bool { return !w.alive[i] }), func(w *world) error {
			w.alive[i] = true
			return w.g.SetHealthy(id, true)
		})
		add("raftAdd("+id+")", cond(func(w *world) bool { return !w.raftSet[i] && !w.pendRem[i] }), func(w *world) error {
			w.raftSet[i], w.pendAdd[i] = true, true
			return nil
		})
		add("gateAdd("+id+")", cond(func(w *world) bool { return w.pendAdd[i] }), func(w *world) error {
			w.pendAdd[i] = false
			return w.g.AddRecorded(id)
		})
		add("beginRemove("+id+")", func(w *world) (bool, error) {
			if !w.raftSet[i] || w.pendAdd[i] || w.g.replicas[id].removing {
				return false, nil
			}
			if w.g.effectiveK() <= len(w.g.staying())-1 {
				return true, nil
			}
			// Too few would remain: BeginRemove must refuse and change nothing.
			c := w.clone()
			before := c.key()
			if err := c.g.BeginRemove(id); err == nil {
				return false, fmt.Errorf("BeginRemove(%s) with K=%d and staying %v: no error", id, w.g.effectiveK(), w.g.staying())
			}
			if c.key() != before {
				return false, fmt.Errorf("failed BeginRemove(%s) changed the state", id)
			}
			return false, nil
		}, func(w *world) error { return w.g.BeginRemove(id) })
		add("okRemove("+id+")", cond(func(w *world) bool {
			return !w.okRem[i] && !w.pendRem[i] && w.g.CanRecordRemoval(id)
		}), func(w *world) error {
			w.okRem[i] = true
			return nil
		})
		add("raftRemove("+id+")", cond(func(w *world) bool { return w.okRem[i] }), func(w *world) error {
			w.okRem[i], w.raftSet[i], w.pendRem[i] = false, false, true
			return nil
		})
		add("gateRemove("+id+")", cond(func(w *world) bool { return w.pendRem[i] }), func(w *world) error {
			w.pendRem[i] = false
			return w.g.RemovalRecorded(id)
		})
	}
	for k := 0; k <= w.cfg.maxK; k++ {
		add("proposeK("+strconv.Itoa(k)+")", func(w *world) (bool, error) {
			if w.okK >= 0 || w.pendK >= 0 || (w.g.hasProposal && w.g.proposedK == k) || (!w.g.hasProposal && w.g.k == k) {
				return false, nil
			}
			if k <= len(w.g.staying()) {
				return true, nil
			}
			c := w.clone()
			before := c.key()
			if err := c.g.ProposeK(k); err == nil {
				return false, fmt.Errorf("ProposeK(%d) with staying %v: no error", k, w.g.staying())
			}
			if c.key() != before {
				return false, fmt.Errorf("failed ProposeK(%d) changed the state", k)
			}
			return false, nil
		}, func(w *world) error { return w.g.ProposeK(k) })
	}
	add("okK", cond(func(w *world) bool {
		_, ok := w.g.CanRecordK()
		return ok && w.okK < 0 && w.pendK < 0
	}), func(w *world) error {
		w.okK, _ = w.g.CanRecordK()
		return nil
	})
	add("raftK", cond(func(w *world) bool { return w.okK >= 0 }), func(w *world) error {
		w.raftK, w.pendK, w.okK = w.okK, w.okK, -1
		return nil
	})
	add("gateK", cond(func(w *world) bool { return w.pendK >= 0 }), func(w *world) error {
		k := w.pendK
		w.pendK = -1
		return w.g.KRecorded(k)
	})
	markerBusy := func(w *world) bool {
		return w.okMarker != 0 || w.pendMarker != 0 || w.okClear || w.pendClear
	}
	add("okMarker", cond(func(w *world) bool {
		_, ok := w.g.NeedsDegradeMarker()
		return ok && !markerBusy(w)
	}), func(w *world) error {
		w.okMarker, _ = w.g.NeedsDegradeMarker()
		return nil
	})
	add("raftMarker", cond(func(w *world) bool { return w.okMarker != 0 }), func(w *world) error {
		w.raftMarker, w.pendMarker, w.okMarker = w.okMarker, w.okMarker, 0
		return nil
	})
	add("gateMarker", cond(func(w *world) bool { return w.pendMarker != 0 }), func(w *world) error {
		s := w.pendMarker
		w.pendMarker = 0
		return w.g.DegradeRecorded(s)
	})
	add("okClear", cond(func(w *world) bool {
		return w.g.MarkerClearable() && !markerBusy(w) && w.raftMarker != 0
	}), func(w *world) error {
		w.okClear = true
		return nil
	})
	add("raftClear", cond(func(w *world) bool { return w.okClear }), func(w *world) error {
		w.raftMarker, w.pendClear, w.okClear = 0, true, false
		return nil
	})
	add("gateClear", cond(func(w *world) bool { return w.pendClear }), func(w *world) error {
		w.pendClear = false
		return w.g.DegradeCleared()
	})
	add("restartGate", always, func(w *world) error { return w.restartGate(w.g.commit) })
	return evs
}

// restartGate replaces the gate by a fresh one built from what Raft holds,
// a commit index c known to be acknowledged and the ceiling of what may have
// been acknowledged (the last extracted seqno), as the agent does after a
// restart. The replicas reconnect and report first, then the local log is
// replayed. Changes begun in the old gate and not recorded are lost.
func (w *world) restartGate(c uint64) error {
	ceiling := w.extracted
	if c >= w.acked {
		ceiling = 0 // c is exact
	}
	var members []string
	for i, in := range w.raftSet {
		if in {
			members = append(members, w.ids[i])
		}
	}
	var pos BinlogPosition
	if c > 0 {
		pos = posOf(c)
	}
	g, err := New(Config{Members: members, K: w.raftK, Policy: w.g.policy, CommitIndex: c, CommitPosition: pos,
		AckedCeiling: ceiling, DegradedSince: w.raftMarker, RecoverLag: w.cfg.recoverLag})
	if err != nil {
		return fmt.Errorf("restart gate: %w", err)
	}
	for i, id := range w.ids {
		if err := g.Durable(id, w.durable[i]); err != nil {
			return err
		}
		if err := g.SetHealthy(id, w.alive[i]); err != nil {
			return err
		}
	}
	for s := c + 1; s <= w.extracted; s++ {
		if err := g.Extracted(s, posOf(s)); err != nil {
			return fmt.Errorf("restart gate: %w", err)
		}
	}
	w.g = g
	clear(w.pendAdd)
	clear(w.pendRem)
	clear(w.okRem)
	w.pendK, w.pendMarker, w.pendClear = -1, 0, false
	w.okK, w.okMarker, w.okClear = -1, 0, false
	w.sent = c
	return nil
}

// check verifies the invariants in w; prev is the commit index before the
// step, in the same gate.
func (w *world) check(prev uint64) error {
	g := w.g
	c := g.commit
	if c < prev {
		return fmt.Errorf("commit index went back from %d to %d", prev, c)
	}
	if c > w.extracted {
		return fmt.Errorf("commit index %d beyond last extracted %d", c, w.extracted)
	}
	w.acked = max(w.acked, c)
	// The invariant, against Raft, for everything any gate acknowledged.
	x := w.acked
	if w.raftMarker != 0 {
		x = min(x, w.raftMarker-1)
	}
	if x > 0 {
		n := 0
		for i, in := range w.raftSet {
			if in && w.durable[i] >= x {
				n++
			}
		}
		if n < w.raftK {
			return fmt.Errorf("seqno %d acknowledged but held by %d members of recorded set %s, recorded K=%d (marker %d)",
				x, n, bits(w.raftSet...), w.raftK, w.raftMarker)
		}
	}
	// The gate is as strict as Raft.
	for i, id := range w.ids {
		r := g.replicas[id]
		if r.counted && !w.raftSet[i] {
			return fmt.Errorf("%s counted but not in recorded set %s", id, bits(w.raftSet...))
		}
	}
	if g.effectiveK() < w.raftK {
		return fmt.Errorf("gate applies K=%d below recorded K=%d", g.effectiveK(), w.raftK)
	}
	// Progress: the gate acknowledges whatever K staying members hold.
	k := g.effectiveK()
	if k == 0 && c != w.extracted {
		return fmt.Errorf("K=0 but commit index %d below last extracted %d", c, w.extracted)
	}
	if k > 0 {
		var ds []uint64
		for _, id := range g.staying() {
			ds = append(ds, g.replicas[id].durable)
		}
		slices.Sort(ds)
		if len(ds) >= k {
			if want := min(ds[len(ds)-k], w.extracted); c < want {
				return fmt.Errorf("commit index %d but %d staying members hold %d", c, k, want)
			}
		}
	}
	// Degrade never deadlocks silently: with too few healthy counted
	// members the gate either acknowledges everything or asks for a marker.
	if g.policy == Degrade && k > 0 && g.healthyCounted() < k {
		if _, ok := g.NeedsDegradeMarker(); !ok && c != w.extracted {
			return fmt.Errorf("degrade: %d healthy counted of K=%d, commit %d < extracted %d and no marker asked for",
				g.healthyCounted(), k, c, w.extracted)
		}
	}
	// Nothing pending: the gate agrees with Raft.
	if w.pendK < 0 && !g.hasProposal && g.k != w.raftK {
		return fmt.Errorf("gate K=%d, recorded K=%d", g.k, w.raftK)
	}
	if w.pendMarker == 0 && !w.pendClear && g.marker != w.raftMarker {
		return fmt.Errorf("gate marker %d, recorded marker %d", g.marker, w.raftMarker)
	}
	for i, id := range w.ids {
		r := g.replicas[id]
		if !w.pendAdd[i] && !w.pendRem[i] && r.member != w.raftSet[i] {
			return fmt.Errorf("gate member(%s)=%t, recorded %t", id, r.member, w.raftSet[i])
		}
	}
	// The ACK to send names the commit index and its position.
	if a, ok := g.Ready(); ok {
		if a.Seqno != c || a.Position != posOf(c) {
			return fmt.Errorf("Ready() = %d at %s, want %d at %s", a.Seqno, a.Position, c, posOf(c))
		}
		if a.Seqno < w.sent {
			return fmt.Errorf("Ready() = %d after %d was sent", a.Seqno, w.sent)
		}
		g.Sent(a)
		w.sent = a.Seqno
		if _, again := g.Ready(); again {
			return fmt.Errorf("Ready() still reports an ACK after Sent(%d)", a.Seqno)
		}
	}
	return nil
}

type pathNode struct {
	ev     string
	parent *pathNode
}

func (p *pathNode) String() string {
	var evs []string
	for ; p != nil; p = p.parent {
		evs = append(evs, p.ev)
	}
	slices.Reverse(evs)
	return strings.Join(evs, " → ")
}

// explore runs a breadth-first search over every interleaving of events up
// to depth, de-duplicating states, and returns the number of distinct states.
func explore(t *testing.T, cfg modelConfig, depth int) int {
	t.Helper()
	w0, err := newWorld(cfg)
	if err != nil {
		t.Fatalf("%s: %v", cfg, err)
	}
	if err := w0.check(0); err != nil {
		t.Fatalf("%s: initial state: %v", cfg, err)
	}
	type item struct {
		w    *world
		path *pathNode
	}
	seen := map[string]bool{w0.key(): true}
	frontier := []item{{w0, nil}}
	transitions := 0
	for d := 0; d < depth && len(frontier) > 0; d++ {
		var next []item
		for _, it := range frontier {
			for _, ev := range it.w.events() {
				ok, err := ev.ok(it.w)
				if err != nil {
					t.Fatalf("%s: %v\npath: %s → %s", cfg, err, it.path, ev.name)
				}
				if !ok {
					continue
				}
				w := it.w.clone()
				prev := w.g.commit
				if ev.name == "restartGate" {
					prev = 0
				}
				path := &pathNode{ev.name, it.path}
				if err := ev.do(w); err != nil {
					t.Fatalf("%s: %v\npath: %s", cfg, err, path)
				}
				transitions++
				if err := w.check(prev); err != nil {
					t.Fatalf("%s: invariant violated: %v\npath: %s\ngate: %+v", cfg, err, path, w.g.Status())
				}
				k := w.key()
				if seen[k] {
					continue
				}
				seen[k] = true
				next = append(next, item{w, path})
			}
		}
		frontier = next
	}
	t.Logf("%s: depth %d: %d distinct states, %d transitions", cfg, depth, len(seen), transitions)
	return len(seen)
}

// TestModelExhaustive enumerates every interleaving of extraction, acks,
// replica crashes and restarts, agent restarts, sync-set additions and
// removals, K changes and degraded-marker steps (each "recorded" step at its
// own time), for up to three replicas and K ≤ 2, and checks the invariant
// after every step.
func TestModelExhaustive(t *testing.T) {
	depth := 10
	if testing.Short() {
		depth = 7
	}
	if *flagDepth > 0 {
		depth = *flagDepth
	}
	configs := []modelConfig{
		{n: 3, members: []int{0, 1}, k: 1, maxSeq: 3, maxK: 2},
		{n: 3, members: []int{0, 1}, k: 2, maxSeq: 3, maxK: 2},
		{n: 3, members: []int{0}, k: 1, maxSeq: 3, maxK: 2},
		{n: 3, members: []int{0, 1, 2}, k: 2, maxSeq: 3, maxK: 2},
		{n: 2, members: nil, k: 0, maxSeq: 3, maxK: 2},
	}
	total := 0
	start := time.Now()
	for _, policy := range []Policy{Strict, Degrade} {
		for _, cfg := range configs {
			cfg.policy = policy
			total += explore(t, cfg, depth)
		}
	}
	// RecoverLag changes when degraded acknowledgement ends; run one
	// configuration with it.
	total += explore(t, modelConfig{n: 3, members: []int{0, 1}, k: 1, policy: Degrade, maxSeq: 3, maxK: 2, recoverLag: 1}, depth)
	t.Logf("exhaustive model: %d states explored in total in %v", total, time.Since(start).Round(time.Millisecond))
}
