package main

import (
	"slices"
	"strings"
	"testing"
	"time"
)

var (
	testNodes    = []string{"db1", "db2", "db3"}
	testManagers = []string{"m1", "m2", "m3"}
)

func TestPlanFaultsCoversEveryTargetAndIsReproducible(t *testing.T) {
	plan := planFaults(42, 60, 3*time.Minute, allKinds, testNodes, testManagers)
	if len(plan) != 60 {
		t.Fatalf("got %d faults, want 60", len(plan))
	}
	if again := planFaults(42, 60, 3*time.Minute, allKinds, testNodes, testManagers); !slices.Equal(plan, again) {
		t.Fatal("the same seed gave a different plan")
	}
	if other := planFaults(43, 60, 3*time.Minute, allKinds, testNodes, testManagers); slices.Equal(plan, other) {
		t.Fatal("seeds 42 and 43 gave the same plan")
	}
	// The first ten cover every target.
	seen := map[string]bool{}
	for _, f := range plan[:10] {
		seen[f.Kind.String()+" "+f.Target] = true
	}
	for _, n := range testNodes {
		for _, k := range []faultKind{killAgent, killMariadbd} {
			if !seen[k.String()+" "+n] {
				t.Errorf("the first 10 faults do not %s %s", k, n)
			}
		}
	}
	for _, m := range testManagers {
		if !seen[killManager.String()+" "+m] {
			t.Errorf("the first 10 faults do not kill manager %s", m)
		}
	}
	if !seen[stopAgent.String()+" "] {
		t.Error("the first 10 faults stop no replica agent")
	}
	slot := 3 * time.Minute / 60
	for i, f := range plan {
		if f.At < time.Duration(i)*slot || f.At > time.Duration(i)*slot+slot/2 {
			t.Errorf("fault %d starts at %s, outside its slot", i, f.At)
		}
		lo, hi := minRestartDelay, maxRestartDelay
		if f.Kind == stopAgent {
			lo, hi = minStop, maxStop
			if f.Target != "" {
				t.Errorf("fault %d: a stop names target %q; the replica is chosen when it runs", i, f.Target)
			}
		} else if f.Target == "" {
			t.Errorf("fault %d (%s) has no target", i, f.Kind)
		}
		if f.Hold < lo || f.Hold > hi {
			t.Errorf("fault %d (%s): hold %s outside [%s, %s]", i, f.Kind, f.Hold, lo, hi)
		}
	}
}

func TestPlanFaultsFewerThanTargets(t *testing.T) {
	plan := planFaults(1, 3, time.Minute, allKinds, testNodes, testManagers)
	if len(plan) != 3 {
		t.Fatalf("got %d faults, want 3", len(plan))
	}
	seen := map[plannedFault]bool{}
	for _, f := range plan {
		k := plannedFault{Kind: f.Kind, Target: f.Target}
		if seen[k] {
			t.Errorf("%s %s twice among the first faults", f.Kind, f.Target)
		}
		seen[k] = true
	}
}

func TestPlanFaultsKinds(t *testing.T) {
	kinds, err := parseKinds("stop, agent,stop")
	if err != nil || !slices.Equal(kinds, []faultKind{killAgent, stopAgent}) {
		t.Fatalf("parseKinds = %v, %v", kinds, err)
	}
	if _, err := parseKinds("agent,disk"); err == nil || !strings.Contains(err.Error(), `"disk"`) {
		t.Errorf("parseKinds(agent,disk) error %v", err)
	}
	for _, f := range planFaults(5, 40, time.Minute, kinds, testNodes, testManagers) {
		if f.Kind != killAgent && f.Kind != stopAgent {
			t.Errorf("fault of kind %s, not asked for", f.Kind)
		}
	}
}

func TestPickReplica(t *testing.T) {
	st := &clusterStatus{Primary: "db2", Nodes: []nodeStatus{{ID: "db3", Role: "replica"}, {ID: "db1", Role: "replica"}, {ID: "db2", Role: "primary"}}}
	if got := pickReplica(st, testNodes, 0); got != "db1" {
		t.Errorf("pick 0 = %s, want db1", got)
	}
	if got := pickReplica(st, testNodes, 3); got != "db3" {
		t.Errorf("pick 3 = %s, want db3", got)
	}
	// Without a status: anyone but db1, the demo's first primary.
	if got := pickReplica(nil, testNodes, 0); got != "db2" {
		t.Errorf("pick without status = %s, want db2", got)
	}
}

func TestMissingIDs(t *testing.T) {
	for _, tc := range []struct {
		acked, have []int64
		n           int
		sample      []int64
	}{
		{nil, nil, 0, nil},
		{[]int64{1, 2, 3}, []int64{1, 2, 3}, 0, nil},
		{[]int64{1, 2, 3}, []int64{0, 1, 2, 3, 4}, 0, nil}, // extra rows are fine
		{[]int64{1, 2, 3}, nil, 3, []int64{1, 2}},
		{[]int64{1, 3, 5, 7, 9}, []int64{2, 3, 4, 9}, 3, []int64{1, 5}},
	} {
		n, sample := missingIDs(tc.acked, tc.have, 2)
		if n != tc.n || !slices.Equal(sample, tc.sample) {
			t.Errorf("missingIDs(%v, %v) = %d %v, want %d %v", tc.acked, tc.have, n, sample, tc.n, tc.sample)
		}
	}
}

func TestChecksumProblems(t *testing.T) {
	same := []string{"1", "2", "3", "4"}
	if ps := checksumProblems(testNodes, map[string][]string{"db1": same, "db2": same, "db3": same}); len(ps) != 0 {
		t.Errorf("equal checksums: %v", ps)
	}
	ps := checksumProblems(testNodes, map[string][]string{"db1": same, "db2": {"1", "2", "9", "4"}})
	if len(ps) != 4 {
		t.Fatalf("got %d problems, want 4 (db3 read nothing, db2's chaos2.t differs): %v", len(ps), ps)
	}
	if !strings.Contains(ps[2], "chaos2.t differs: db1=3 db2=9 db3=?") {
		t.Errorf("problem for chaos2.t: %q", ps[2])
	}
}

func TestStatusProblems(t *testing.T) {
	st := &clusterStatus{Epoch: 2, Primary: "db1", Nodes: []nodeStatus{
		{ID: "db1", Role: "primary", ReportedRole: "primary", Epoch: 2, Healthy: true, Reachable: true, DatabaseHealthy: true},
		{ID: "db2", Role: "replica", ReportedRole: "replica", Epoch: 2, Healthy: true, Reachable: true, DatabaseHealthy: true},
		{ID: "db3", Role: "replica", ReportedRole: "none", Epoch: 1, Reachable: true, Error: "apply: boom"},
	}}
	ps := statusProblems(st)
	if len(ps) != 1 {
		t.Fatalf("got %v, want one problem (db3)", ps)
	}
	for _, want := range []string{"db3 (replica)", "healthy=no", `reports role "none"`, "epoch 1, cluster epoch 2", "role_error: apply: boom"} {
		if !strings.Contains(ps[0], want) {
			t.Errorf("%q lacks %q", ps[0], want)
		}
	}
}

func TestStalls(t *testing.T) {
	s := time.Second
	ms := time.Millisecond
	times := []time.Duration{1 * s, 2 * s, 5 * s, 6 * s, 6 * s, 6100 * ms}
	// Fault 0 at 2.05 s (just after the ack at 2 s: within the tolerance)
	// causes the 2 → 5 s gap; fault 1 at 4 s starts inside that gap and
	// is not blamed for it; fault 2 at 5.5 s gets the 5 → 6 s gap (it
	// started inside it); nothing after 6.1 s until the end at 9 s: the
	// gap is blamed on the last fault before it.
	per, longest, long := stalls(times, 9*s, []time.Duration{2050 * ms, 4 * s, 5500 * ms}, 2900*ms)
	want := []time.Duration{3 * s, 0, 2900 * ms}
	if !slices.Equal(per, want) {
		t.Errorf("per fault %v, want %v", per, want)
	}
	if longest != (gap{from: 2 * s, to: 5 * s, fault: 0}) {
		t.Errorf("longest %+v", longest)
	}
	if want := []gap{{2 * s, 5 * s, 0}, {6100 * ms, 9 * s, 2}}; !slices.Equal(long, want) {
		t.Errorf("long gaps %+v, want %+v", long, want)
	}
	// The gap before the first fault is nobody's; a fault that starts
	// inside a gap gets all of it.
	per, longest, _ = stalls([]time.Duration{1 * s, 5 * s, 6 * s}, 6*s, []time.Duration{5500 * ms}, s)
	if per[0] != s || longest != (gap{from: 1 * s, to: 5 * s, fault: -1}) {
		t.Errorf("per fault %v, longest %+v", per, longest)
	}
	if per, longest, _ := stalls(nil, 5*s, []time.Duration{s}, s); per[0] != 0 || longest.length() != 0 {
		t.Errorf("no writes: %v %+v", per, longest)
	}
}

func TestByKind(t *testing.T) {
	recs := []faultRecord{
		{N: 1, Kind: killAgent, Role: "primary", Stall: time.Second},
		{N: 2, Kind: killAgent, Role: "primary", Stall: 3 * time.Second, Err: "restart failed"},
		{N: 3, Kind: stopAgent, Role: "replica", Stall: 0},
	}
	rows := byKind(recs)
	if len(rows) != 2 {
		t.Fatalf("got %d rows, want 2", len(rows))
	}
	r := rows[1] // "kill -9 agent (primary)" sorts after "SIGSTOP agent (replica)"
	if r.label != "kill -9 agent (primary)" || r.count != 2 || r.failed != 1 || r.stall != 3*time.Second || r.worst != 2 {
		t.Errorf("row %+v", r)
	}
	var b strings.Builder
	printTable(&b, recs)
	if !strings.Contains(b.String(), "all faults") || !strings.Contains(b.String(), "3.00 s") {
		t.Errorf("table:\n%s", b.String())
	}
}

func TestSummarizeLog(t *testing.T) {
	log := `time=1 level=INFO msg="taking role" role=replica
time=2 level=WARN msg="managers: heartbeat failed" err="x"
time=3 level=ERROR msg="role failed" err="boom"
time=4 level=WARN msg="managers: heartbeat failed" err="y"
`
	sum := summarizeLog(log)
	if len(sum) != 2 || sum[0].count != 2 || sum[0].msg != `"managers: heartbeat failed"` || !strings.Contains(sum[0].last, `err="y"`) {
		t.Errorf("summary %+v", sum)
	}
}

func TestPrintLongStalls(t *testing.T) {
	s := time.Second
	recs := []faultRecord{
		{N: 1, Kind: killMariadbd, Target: "db1", Role: "primary", Start: 10 * s, End: 12 * s},
		{N: 2, Kind: killManager, Target: "m2", Role: "follower", Start: 20 * s, End: 21 * s},
		{N: 3, Kind: killAgent, Target: "db1", Role: "primary", Start: 30 * s, End: 31 * s},
	}
	var b strings.Builder
	printLongStalls(&b, recs, []gap{{10 * s, 33 * s, 0}, {40 * s, 50 * s, 2}}, 50*s)
	out := b.String()
	for _, want := range []string{
		"blamed on #1 kill -9 mariadbd db1 (primary) at 10.0 s\n      faults while it lasted: #2 kill -9 manager m2, #3 kill -9 agent db1\n",
		"blamed on #3 kill -9 agent db1 (primary) at 30.0 s; writes never resumed\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}
