package failover_test

import (
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/quire-ha/quire/failover"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

const timeout = 2 * time.Second

func at(d time.Duration) time.Time { return t0.Add(d) }

func healthyPrimary(received time.Duration) failover.NodeReport {
	return failover.NodeReport{ID: "a", Received: at(received), Role: "primary", Epoch: 1, DatabaseHealthy: true}
}

func replica(id string, received time.Duration, streaming bool) failover.NodeReport {
	r := failover.NodeReport{ID: id, Received: at(received), Role: "replica", Epoch: 1, DatabaseHealthy: true, Streaming: streaming}
	if !streaming {
		r.StreamLost = time.Second
	}
	return r
}

func input(now time.Duration, p failover.NodeReport, replicas ...failover.NodeReport) failover.DetectInput {
	return failover.DetectInput{Now: at(now), Timeout: timeout, Epoch: 1, Primary: "a", LeaderSince: t0.Add(-time.Hour),
		PrimaryReport: p, Replicas: replicas}
}

func TestDetect(t *testing.T) {
	unhealthy := healthyPrimary(10 * time.Second)
	unhealthy.DatabaseHealthy = false
	gone := unhealthy
	gone.DatabaseGone = true
	failing := healthyPrimary(10 * time.Second)
	failing.Error = "primary role: binlog dump: connection reset"
	tests := []struct {
		name      string
		watch     failover.Watch
		in        failover.DetectInput
		verdict   failover.Verdict
		kind      failover.Kind
		fast      bool
		confirmed []string
		streaming []string
		since     time.Time
		reason    string
	}{
		{name: "no primary", in: failover.DetectInput{Now: t0, Timeout: timeout}, verdict: failover.Healthy},
		{name: "healthy", in: input(10500*time.Millisecond, healthyPrimary(10*time.Second)), verdict: failover.Healthy},
		{name: "short agent outage on a live database",
			in:      input(11900*time.Millisecond, healthyPrimary(10*time.Second), replica("b", 11800*time.Millisecond, false)),
			verdict: failover.Healthy},
		{name: "database unhealthy, first seen", in: input(10100*time.Millisecond, unhealthy),
			verdict: failover.Suspect, kind: failover.KindUnhealthy, since: at(10 * time.Second), reason: "database unhealthy, for 100ms so far"},
		{name: "database unhealthy for the timeout",
			watch: failover.Watch{Epoch: 1, Primary: "a", Since: at(8 * time.Second)}, in: input(10*time.Second, unhealthy),
			verdict: failover.Failed, kind: failover.KindUnhealthy, since: at(8 * time.Second), reason: "for 2s (failover timeout 2s)"},
		{name: "role failing for the timeout",
			watch: failover.Watch{Epoch: 1, Primary: "a", Since: at(7 * time.Second)}, in: input(10*time.Second, failing),
			verdict: failover.Failed, kind: failover.KindUnhealthy, since: at(7 * time.Second), reason: "binlog dump"},
		{name: "a watch of another epoch is forgotten",
			watch: failover.Watch{Epoch: 0, Primary: "a", Since: at(1 * time.Second)}, in: input(10*time.Second, unhealthy),
			verdict: failover.Suspect, kind: failover.KindUnhealthy, since: at(10 * time.Second)},
		{name: "database gone: fast path", in: input(10*time.Second, gone),
			verdict: failover.Failed, kind: failover.KindDatabaseGone, fast: true, since: at(10 * time.Second), reason: "without waiting"},
		{name: "silent, replicas confirm",
			in:      input(12100*time.Millisecond, healthyPrimary(10*time.Second), replica("b", 12*time.Second, false), replica("c", 12*time.Second, false)),
			verdict: failover.Failed, kind: failover.KindSilent, confirmed: []string{"b", "c"}, since: at(10 * time.Second),
			reason: "replicas b, c lost their streams too"},
		{name: "silent, one replica confirms, the other is unreachable",
			in:      input(12100*time.Millisecond, healthyPrimary(10*time.Second), replica("b", 12*time.Second, false), replica("c", 5*time.Second, true)),
			verdict: failover.Failed, kind: failover.KindSilent, confirmed: []string{"b"}, since: at(10 * time.Second)},
		{name: "silent, but a replica still streams",
			in:      input(12100*time.Millisecond, healthyPrimary(10*time.Second), replica("b", 12*time.Second, false), replica("c", 12*time.Second, true)),
			verdict: failover.Suspect, kind: failover.KindSilent, confirmed: []string{"b"}, streaming: []string{"c"}, since: at(10 * time.Second),
			reason: "c still stream(s) from it"},
		{name: "silent, no replica reachable",
			in:      input(12100*time.Millisecond, healthyPrimary(10*time.Second), replica("b", 5*time.Second, false)),
			verdict: failover.Suspect, kind: failover.KindSilent, since: at(10 * time.Second), reason: "no reachable replica of epoch 1 confirms"},
		{name: "silent, replicas of another epoch or role do not confirm",
			in: input(12100*time.Millisecond, healthyPrimary(10*time.Second),
				failover.NodeReport{ID: "b", Received: at(12 * time.Second), Role: "none", Epoch: 1},
				failover.NodeReport{ID: "c", Received: at(12 * time.Second), Role: "replica", Epoch: 0}),
			verdict: failover.Suspect, kind: failover.KindSilent, since: at(10 * time.Second)},
		{name: "unhealthy, then silent: counts from the first bad report",
			watch: failover.Watch{Epoch: 1, Primary: "a", Since: at(9 * time.Second)},
			in:    input(12100*time.Millisecond, unhealthy, replica("b", 12*time.Second, false)),
			// 2.1s of silence after the unhealthy report at 10s.
			verdict: failover.Failed, kind: failover.KindSilent, confirmed: []string{"b"}, since: at(9 * time.Second)},
		{name: "new leader, no heartbeat yet",
			in: failover.DetectInput{Now: at(11 * time.Second), Timeout: timeout, Epoch: 1, Primary: "a", LeaderSince: at(10 * time.Second),
				Replicas: []failover.NodeReport{replica("b", 10500*time.Millisecond, false)}},
			verdict: failover.Suspect, kind: failover.KindSilent, reason: "yet since this manager became leader"},
		{name: "new leader, no heartbeat for the timeout",
			in: failover.DetectInput{Now: at(12100 * time.Millisecond), Timeout: timeout, Epoch: 1, Primary: "a", LeaderSince: at(10 * time.Second),
				Replicas: []failover.NodeReport{replica("b", 12*time.Second, false)}},
			verdict: failover.Failed, kind: failover.KindSilent, confirmed: []string{"b"}, since: at(10 * time.Second),
			reason: "since this manager became leader 2.1s ago"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, d := failover.Detect(tt.watch, tt.in)
			if d.Verdict != tt.verdict || d.Kind != tt.kind || d.Fast != tt.fast ||
				!slices.Equal(d.Confirmed, tt.confirmed) || !slices.Equal(d.Streaming, tt.streaming) {
				t.Fatalf("Detect = %+v\nwant verdict %s kind %q fast %t confirmed %v streaming %v", d, tt.verdict, tt.kind, tt.fast, tt.confirmed, tt.streaming)
			}
			if !tt.since.IsZero() && !d.Since.Equal(tt.since) {
				t.Errorf("since %s, want %s", d.Since, tt.since)
			}
			if !strings.Contains(d.Reason, tt.reason) {
				t.Errorf("reason %q does not contain %q", d.Reason, tt.reason)
			}
		})
	}
}

// TestDetectAgentOutage: the primary's agent stops heartbeating for less
// than the timeout while its database lives, then comes back: no step
// fails over, whatever the replicas say.
func TestDetectAgentOutage(t *testing.T) {
	var w failover.Watch
	last := healthyPrimary(0)
	for now := time.Duration(0); now < 10*time.Second; now += 50 * time.Millisecond {
		// Heartbeats every 200ms, except during an outage of 1.6s: with the
		// heartbeat interval, 1.8s without a heartbeat.
		if now%(200*time.Millisecond) == 0 && (now < 3*time.Second || now >= 3*time.Second+timeout-400*time.Millisecond) {
			last = healthyPrimary(now)
		}
		var d failover.Detection
		w, d = failover.Detect(w, input(now, last, replica("b", now, false), replica("c", now, false)))
		if d.Verdict == failover.Failed {
			t.Fatalf("at %s: %s", now, d.Reason)
		}
	}
}

// TestDetectNeverEarly is a property test over random sequences of
// reports: Detect fails over before the primary has been bad for the
// timeout only by the fast path, on a fresh report of a gone database; a
// failure of a silent primary always has a confirming replica and none
// streaming; a fresh good report is always healthy.
func TestDetectNeverEarly(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	failed := map[failover.Kind]int{}
	for seq := 0; seq < 2000; seq++ {
		var w failover.Watch
		var p failover.NodeReport
		reps := []failover.NodeReport{{ID: "b"}, {ID: "c"}}
		leaderSince := at(time.Duration(rng.IntN(3000)) * time.Millisecond)
		// badSince: when the primary's reports or heartbeats first went
		// bad in the current period (what a correct detector may count
		// from), zero while good.
		var badSince time.Time
		for now := leaderSince; now.Before(leaderSince.Add(10 * time.Second)); now = now.Add(time.Duration(10+rng.IntN(300)) * time.Millisecond) {
			if rng.IntN(3) == 0 { // a heartbeat of the primary arrives
				p = failover.NodeReport{ID: "a", Received: now, Role: "primary", Epoch: 1,
					DatabaseHealthy: rng.IntN(4) != 0, DatabaseGone: rng.IntN(20) == 0}
				if rng.IntN(8) == 0 {
					p.Error = "something"
				}
				if p.DatabaseGone {
					p.DatabaseHealthy = false
				}
				bad := !p.DatabaseHealthy || p.Error != ""
				switch {
				case !bad:
					badSince = time.Time{}
				case badSince.IsZero():
					badSince = now
				}
			}
			for i := range reps {
				if rng.IntN(3) == 0 {
					reps[i] = failover.NodeReport{ID: reps[i].ID, Received: now, Role: []string{"replica", "none"}[rng.IntN(2)],
						Epoch: uint64(rng.IntN(2)), Streaming: rng.IntN(2) == 0}
				}
			}
			in := failover.DetectInput{Now: now, Timeout: timeout, Epoch: 1, Primary: "a", LeaderSince: leaderSince,
				PrimaryReport: p, Replicas: slices.Clone(reps)}
			var d failover.Detection
			w, d = failover.Detect(w, in)
			fresh := !p.Received.IsZero() && now.Sub(p.Received) <= timeout
			if fresh && p.DatabaseHealthy && p.Error == "" && d.Verdict != failover.Healthy {
				t.Fatalf("seq %d at %s: a fresh good report gave %s: %s", seq, now.Sub(t0), d.Verdict, d.Reason)
			}
			if d.Verdict != failover.Failed {
				continue
			}
			failed[d.Kind]++
			if d.Fast {
				if !fresh || !p.DatabaseGone {
					t.Fatalf("seq %d at %s: fast path without a fresh report of a gone database: %s", seq, now.Sub(t0), d.Reason)
				}
				continue
			}
			// Bad for the timeout: silent since the last heartbeat (or since
			// leading), or reporting bad since badSince.
			heard := p.Received
			if heard.IsZero() {
				heard = leaderSince
			}
			from := heard
			if !badSince.IsZero() && badSince.Before(from) {
				from = badSince
			}
			if fresh {
				from = badSince
			}
			if from.IsZero() || now.Sub(from) < timeout {
				t.Fatalf("seq %d at %s: failed after %s of trouble (from %s): %s", seq, now.Sub(t0), now.Sub(from), from.Sub(t0), d.Reason)
			}
			if d.Kind == failover.KindSilent {
				confirmed := 0
				for _, r := range reps {
					reachable := !r.Received.IsZero() && now.Sub(r.Received) <= timeout
					if reachable && r.Role == "replica" && r.Epoch == 1 {
						if r.Streaming {
							t.Fatalf("seq %d at %s: failed while %s streams: %s", seq, now.Sub(t0), r.ID, d.Reason)
						}
						confirmed++
					}
				}
				if confirmed == 0 {
					t.Fatalf("seq %d at %s: a silent primary failed without confirmation: %s", seq, now.Sub(t0), d.Reason)
				}
			}
		}
	}
	for _, k := range []failover.Kind{failover.KindSilent, failover.KindUnhealthy, failover.KindDatabaseGone} {
		if failed[k] == 0 {
			t.Errorf("no failure of kind %s was generated: the property test checks nothing for it", k)
		}
	}
	t.Logf("failures checked: %v", failed)
}

func TestConfirm(t *testing.T) {
	failed := failover.Detection{Verdict: failover.Failed, Kind: failover.KindSilent}
	tests := []struct {
		d    failover.Detection
		a    failover.PrimaryAnswer
		want bool
		why  string
	}{
		{failover.Detection{Verdict: failover.Suspect}, failover.PrimaryAnswer{}, false, "nothing to confirm"},
		{failed, failover.PrimaryAnswer{Err: "connection refused"}, true, "does not answer the leader either (connection refused)"},
		{failed, failover.PrimaryAnswer{Answered: true, DatabaseHealthy: true}, false, "reports its database healthy"},
		{failed, failover.PrimaryAnswer{Answered: true}, true, "database does not answer"},
		{failed, failover.PrimaryAnswer{Answered: true, DatabaseHealthy: true, RoleError: "dump failed"}, true, "role fails: dump failed"},
	}
	for _, tt := range tests {
		got, why := failover.Confirm(tt.d, tt.a)
		if got != tt.want || !strings.Contains(why, tt.why) {
			t.Errorf("Confirm(%+v) = %t, %q; want %t, %q", tt.a, got, why, tt.want, tt.why)
		}
	}
}
