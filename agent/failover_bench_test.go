package agent_test

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestFailoverBenchmark measures automatic failovers: for each fault and
// writer count, QUIRE_FAILOVER_RUNS runs on a fresh three-node cluster,
// each checked for lost acknowledged ids, and prints a table of the
// writers' outage (kill to the first acknowledged commit on the new
// primary) and the new term's commit time: min / median / max. It is
// skipped unless QUIRE_FAILOVER_RUNS is set; bench/failover/run.sh runs it.
func TestFailoverBenchmark(t *testing.T) {
	runs, _ := strconv.Atoi(os.Getenv("QUIRE_FAILOVER_RUNS"))
	if runs <= 0 {
		t.Skip("a benchmark: set QUIRE_FAILOVER_RUNS=N (bench/failover/run.sh)")
	}
	counts := []int{1, 16}
	if v := os.Getenv("QUIRE_FAILOVER_WRITERS"); v != "" {
		counts = nil
		for _, f := range strings.Split(v, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n < 1 {
				t.Fatalf("QUIRE_FAILOVER_WRITERS=%q: want numbers ≥ 1, comma-separated", v)
			}
			counts = append(counts, n)
		}
	}
	type fault struct {
		name    string
		timeout time.Duration
		node    bool // the agent dies too (a lost host)
	}
	faults := []fault{
		{"kill -9 primary mariadbd (fast path)", 30 * time.Second, false},
		{"kill -9 primary node (agent+mariadbd, timeout 2s)", 2 * time.Second, true},
	}
	type row struct {
		fault          string
		writers        int
		outage, commit []time.Duration
		acked          int
	}
	var rows []row
	for _, f := range faults {
		for _, n := range counts {
			r := row{fault: f.name, writers: n}
			for i := 0; i < runs; i++ {
				t.Run(fmt.Sprintf("%s/%dw/%d", f.name, n, i), func(t *testing.T) {
					c, cli := failoverCluster(t, f.timeout)
					ws := make([]*writer, n)
					for j := range ws {
						ws[j] = startWriterAt(t, cli, j+1, n)
					}
					for _, w := range ws {
						w.waitAcked(5, time.Minute)
					}
					// Nothing may have failed over before the fault.
					if st := waitEpoch(t, cli, 1, time.Minute); st.Epoch != 1 || st.Primary != "db1" {
						h, _ := cli.History(t.Context())
						t.Fatalf("before the fault: epoch %d primary %s, want epoch 1 with db1 (decisions: %+v)", st.Epoch, st.Primary, h.Decisions)
					}
					// The leader hears every node (a fresh heartbeat each),
					// so the fault starts from a settled cluster.
					settle := time.Now().Add(time.Minute)
					for {
						st, err := cli.Status(t.Context())
						fresh := err == nil && len(st.Nodes) == 3
						for _, nd := range st.Nodes {
							fresh = fresh && nd.Healthy && time.Since(nd.LastHeartbeat) < 500*time.Millisecond
						}
						if fresh {
							break
						}
						if time.Now().After(settle) {
							t.Fatalf("the cluster did not settle in a minute (status err %v)", err)
						}
						time.Sleep(50 * time.Millisecond) // poll interval
					}
					killed := time.Now()
					if f.node {
						c.procs[0].Kill()
					}
					if err := c.dbs[0].Kill(); err != nil {
						t.Fatal(err)
					}
					st := waitEpoch(t, cli, 2, time.Minute)
					committed := time.Since(killed)
					if h, err := cli.History(t.Context()); err == nil {
						for _, d := range h.Decisions {
							if d.Kind == "detection" {
								t.Logf("detection: %s", d.Reason)
							}
						}
					}
					newIdx := 1
					if st.Primary == "db3" {
						newIdx = 2
					}
					var before []int
					for _, w := range ws {
						before = append(before, w.count())
					}
					for j, w := range ws {
						w.waitAcked(before[j]+3, time.Minute)
					}
					var acked []int
					first := time.Duration(-1)
					for _, w := range ws {
						w.stop()
						w.mu.Lock()
						acked = append(acked, w.acked...)
						for _, at := range w.ackTimes {
							if at.After(killed.Add(committed)) {
								if d := at.Sub(killed); first < 0 || d < first {
									first = d
								}
								break
							}
						}
						w.mu.Unlock()
					}
					c.checkAcked(newIdx, acked)
					r.outage = append(r.outage, first)
					r.commit = append(r.commit, committed)
					r.acked += len(acked)
				})
			}
			rows = append(rows, r)
		}
	}
	mmm := func(ds []time.Duration) string {
		if len(ds) == 0 {
			return "-"
		}
		s := slices.Clone(ds)
		slices.Sort(s)
		ms := func(d time.Duration) string { return fmt.Sprintf("%.2f", d.Seconds()) }
		return ms(s[0]) + " / " + ms(s[len(s)/2]) + " / " + ms(s[len(s)-1])
	}
	fmt.Printf("\nautomatic failover, %d runs per row; seconds min / median / max (no acknowledged id was lost in any run)\n", runs)
	fmt.Printf("%-52s %-8s %-22s %-22s %s\n", "FAULT", "WRITERS", "OUTAGE (first commit)", "NEW TERM COMMITTED", "ACKED IDS")
	for _, r := range rows {
		if len(r.outage) == 0 {
			continue // filtered out with -run
		}
		fmt.Printf("%-52s %-8d %-22s %-22s %d\n", r.fault, r.writers, mmm(r.outage), mmm(r.commit), r.acked)
	}
}
