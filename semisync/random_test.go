package semisync

import (
	"fmt"
	"math/rand"
	"strings"
	"testing"
	"time"
)

// randomEvents are the steps the random test adds to the exhaustive model's:
// reports that lag behind fsyncs, stale reports, cancelled removals, policy
// changes, forgetting replicas, and agent restarts that know only a lower
// bound of the commit index.
func (w *world) randomEvents(rng *rand.Rand) []event {
	var evs []event
	add := func(name string, ok func(w *world) bool, do func(w *world) error) {
		evs = append(evs, event{name, func(w *world) (bool, error) { return ok(w), nil }, do})
	}
	yes := func(*world) bool { return true }
	for i, id := range w.ids {
		add("fsync("+id+")", func(w *world) bool {
			return w.alive[i] && w.durable[i]+w.unreported[i] < w.extracted
		}, func(w *world) error {
			w.unreported[i] = min(w.unreported[i]+1+uint64(rng.Intn(3)), w.extracted-w.durable[i])
			return nil
		})
		add("staleReport("+id+")", func(w *world) bool { return w.durable[i] > 0 }, func(w *world) error {
			before := w.g.Status().StaleReports
			if err := w.g.Durable(id, uint64(rng.Int63n(int64(w.durable[i])))); err != nil {
				return err
			}
			if after := w.g.Status().StaleReports; after != before+1 {
				return fmt.Errorf("stale report not counted: %d → %d", before, after)
			}
			return nil
		})
		add("cancelRemove("+id+")", func(w *world) bool {
			r := w.g.replicas[id]
			return r != nil && r.removing && !w.okRem[i] && !w.pendRem[i]
		}, func(w *world) error { return w.g.CancelRemove(id) })
		add("forget("+id+")", func(w *world) bool {
			r := w.g.replicas[id]
			return r != nil && !r.member && !w.pendAdd[i]
		}, func(w *world) error {
			if err := w.g.Forget(id); err != nil {
				return err
			}
			// The replica reconnects at once.
			if err := w.g.Durable(id, w.durable[i]); err != nil {
				return err
			}
			return w.g.SetHealthy(id, w.alive[i])
		})
	}
	add("setPolicy", yes, func(w *world) error { return w.g.SetPolicy(Policy(rng.Intn(2))) })
	add("restartGateLowerBound", yes, func(w *world) error {
		return w.restartGate(uint64(rng.Int63n(int64(w.g.commit) + 1)))
	})
	return evs
}

// TestModelRandom runs long random sequences of the model's steps at larger
// sizes (up to five replicas, K up to 3, hundreds of transactions) and checks
// the same invariants after every step. The seed is logged; rerun with
// -semisync.seed to reproduce.
func TestModelRandom(t *testing.T) {
	seed := *flagSeed
	if seed == 0 {
		seed = time.Now().UnixNano()
	}
	runs := 300
	if testing.Short() {
		runs = 40
	}
	if *flagRuns > 0 {
		runs = *flagRuns
	}
	t.Logf("seed %d (rerun with -semisync.seed=%d), %d runs", seed, seed, runs)
	rng := rand.New(rand.NewSource(seed))
	steps, states := 0, map[string]bool{}
	for run := range runs {
		cfg := modelConfig{n: 2 + rng.Intn(4), policy: Policy(rng.Intn(2)), maxSeq: 300, maxK: 3,
			recoverLag: []uint64{0, 1, 3}[rng.Intn(3)]}
		for i := range cfg.n {
			if rng.Intn(3) > 0 {
				cfg.members = append(cfg.members, i)
			}
		}
		cfg.k = rng.Intn(min(len(cfg.members), cfg.maxK) + 1)
		w, err := newWorld(cfg)
		if err != nil {
			t.Fatalf("run %d: %s: %v", run, cfg, err)
		}
		var path *pathNode
		for range 1000 {
			evs := w.events()
			evs = append(evs, w.randomEvents(rng)...)
			// Extraction and acks drive everything; give them more weight.
			for range 3 {
				evs = append(evs, evs[0])
			}
			ev := evs[rng.Intn(len(evs))]
			ok, err := ev.ok(w)
			if err != nil {
				t.Fatalf("seed %d run %d: %s: %v\npath: %s → %s", seed, run, cfg, err, path, ev.name)
			}
			if !ok {
				continue
			}
			prev := w.g.commit
			if strings.HasPrefix(ev.name, "restartGate") {
				prev = 0
			}
			path = &pathNode{ev.name, path}
			if err := ev.do(w); err != nil {
				t.Fatalf("seed %d run %d: %s: %v\npath: %s", seed, run, cfg, err, path)
			}
			if err := w.check(prev); err != nil {
				t.Fatalf("seed %d run %d: %s: invariant violated: %v\npath: %s\ngate: %+v", seed, run, cfg, err, path, w.g.Status())
			}
			steps++
			if len(states) < 1<<20 {
				states[w.key()] = true
			}
		}
	}
	t.Logf("random model: %d runs, %d steps, %d distinct states", runs, steps, len(states))
}
