package semisync_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/quire-ha/quire/semisync"
)

func pos(s uint64) semisync.BinlogPosition {
	return semisync.BinlogPosition{File: "bin.000001", Pos: 100 * s}
}

// op is one step of a scripted test.
type op func(g *semisync.Gate) error

func extract(n uint64) op {
	return func(g *semisync.Gate) error {
		for range n {
			s := g.LastExtracted() + 1
			if err := g.Extracted(s, pos(s)); err != nil {
				return err
			}
		}
		return nil
	}
}

func durable(id string, s uint64) op {
	return func(g *semisync.Gate) error { return g.Durable(id, s) }
}

func healthy(id string, h bool) op {
	return func(g *semisync.Gate) error { return g.SetHealthy(id, h) }
}

func up(ids ...string) op {
	return func(g *semisync.Gate) error {
		for _, id := range ids {
			if err := g.SetHealthy(id, true); err != nil {
				return err
			}
		}
		return nil
	}
}

func newGate(t *testing.T, cfg semisync.Config, ops ...op) *semisync.Gate {
	t.Helper()
	g, err := semisync.New(cfg)
	if err != nil {
		t.Fatalf("New(%+v): %v", cfg, err)
	}
	run(t, g, ops...)
	return g
}

func run(t *testing.T, g *semisync.Gate, ops ...op) {
	t.Helper()
	for i, o := range ops {
		if err := o(g); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
	}
}

func replica(t *testing.T, g *semisync.Gate, id string) semisync.ReplicaStatus {
	t.Helper()
	for _, r := range g.Status().Replicas {
		if r.ID == id {
			return r
		}
	}
	t.Fatalf("replica %q not in status %+v", id, g.Status())
	return semisync.ReplicaStatus{}
}

func wantErr(t *testing.T, err error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want one containing %q", parts)
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("error %q does not contain %q", err, p)
		}
	}
}

func TestAckRule(t *testing.T) {
	ab := []string{"a", "b"}
	tests := []struct {
		name string
		cfg  semisync.Config
		ops  []op
		want uint64
	}{
		{"K=0 acknowledges what is extracted", semisync.Config{K: 0}, []op{extract(3)}, 3},
		{"K=0 with members", semisync.Config{Members: ab, K: 0}, []op{extract(2)}, 2},
		{"K=1 nothing held", semisync.Config{Members: ab, K: 1}, []op{extract(3)}, 0},
		{"K=1 one holder", semisync.Config{Members: ab, K: 1}, []op{extract(3), durable("b", 2)}, 2},
		{"K=1 highest holder", semisync.Config{Members: ab, K: 1}, []op{extract(3), durable("a", 1), durable("b", 3)}, 3},
		{"K=2 second highest", semisync.Config{Members: ab, K: 2}, []op{extract(3), durable("a", 1), durable("b", 3)}, 1},
		{"K=2 of 3", semisync.Config{Members: []string{"a", "b", "c"}, K: 2},
			[]op{extract(5), durable("a", 5), durable("b", 2), durable("c", 4)}, 4},
		{"non-member ignored", semisync.Config{Members: ab, K: 1}, []op{extract(3), durable("x", 3)}, 0},
		{"durable beyond extracted is capped", semisync.Config{Members: ab, K: 1}, []op{extract(2), durable("a", 9)}, 2},
		{"report before extraction counts later", semisync.Config{Members: ab, K: 1}, []op{durable("a", 4), extract(3)}, 3},
		{"lower report does not move back", semisync.Config{Members: ab, K: 1}, []op{extract(3), durable("a", 3), durable("a", 1)}, 3},
		{"health does not matter for counting", semisync.Config{Members: ab, K: 2},
			[]op{extract(2), durable("a", 2), durable("b", 2), healthy("a", false)}, 2},
		{"start from a commit index", semisync.Config{Members: ab, K: 1, CommitIndex: 10, CommitPosition: pos(10)},
			[]op{extract(2), durable("a", 11)}, 11},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := newGate(t, tt.cfg, tt.ops...)
			if got := g.CommitIndex(); got != tt.want {
				t.Errorf("CommitIndex() = %d, want %d (status %+v)", got, tt.want, g.Status())
			}
		})
	}
}

func TestStaleReportsCounted(t *testing.T) {
	g := newGate(t, semisync.Config{Members: []string{"a"}, K: 1}, extract(3), durable("a", 3), durable("a", 2), durable("a", 3), durable("a", 0))
	if st := g.Status(); st.StaleReports != 2 || st.Replicas[0].StaleReports != 2 || st.Replicas[0].Durable != 3 {
		t.Errorf("status after two lower reports and one equal: %+v", st)
	}
}

func TestExtractedValidation(t *testing.T) {
	g := newGate(t, semisync.Config{Members: []string{"a"}, K: 1}, extract(2))
	before := g.Status()
	wantErr(t, g.Extracted(4, pos(4)), "extracted seqno 4, want 3")
	wantErr(t, g.Extracted(2, pos(5)), "want 3")
	wantErr(t, g.Extracted(3, semisync.BinlogPosition{Pos: 500}), "empty binlog file name")
	wantErr(t, g.Extracted(3, pos(2)), "not after seqno 2")
	wantErr(t, g.Extracted(3, semisync.BinlogPosition{File: "bin.000000", Pos: 900}), "not after")
	if after := g.Status(); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("failed Extracted changed the gate:\n%+v\n%+v", before, after)
	}
	// A new file with a lower offset is later.
	if err := g.Extracted(3, semisync.BinlogPosition{File: "bin.000002", Pos: 4}); err != nil {
		t.Fatal(err)
	}
}

func TestBinlogPositionCompare(t *testing.T) {
	p := func(f string, o uint64) semisync.BinlogPosition { return semisync.BinlogPosition{File: f, Pos: o} }
	tests := []struct {
		a, b semisync.BinlogPosition
		want int
	}{
		{p("bin.000001", 4), p("bin.000001", 4), 0},
		{p("bin.000001", 4), p("bin.000001", 5), -1},
		{p("bin.000002", 4), p("bin.000001", 900), 1},
		{p("bin.999999", 9), p("bin.1000000", 4), -1},
		{p("a.000009", 4), p("b.000001", 4), -1},
		{p("bin", 4), p("bin", 3), 1},
		{p("", 0), p("bin.000001", 4), -1},
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

func TestReadySentResend(t *testing.T) {
	g := newGate(t, semisync.Config{Members: []string{"a"}, K: 1})
	if a, ok := g.Ready(); ok {
		t.Fatalf("Ready() = %+v on a new gate", a)
	}
	g.Resend()
	if a, ok := g.Ready(); ok {
		t.Fatalf("Ready() = %+v after Resend with nothing acknowledged", a)
	}
	run(t, g, extract(3), durable("a", 2))
	a, ok := g.Ready()
	if !ok || a.Seqno != 2 || a.Position != pos(2) {
		t.Fatalf("Ready() = %+v, %t; want seqno 2 at %s", a, ok, pos(2))
	}
	run(t, g, durable("a", 3))
	// Cumulative: the newest covers the older one, which was never sent.
	a, _ = g.Ready()
	if a.Seqno != 3 || a.Position != pos(3) {
		t.Fatalf("Ready() = %+v, want seqno 3", a)
	}
	g.Sent(semisync.Ack{Seqno: 9}) // beyond the commit index: ignored
	if _, ok := g.Ready(); !ok {
		t.Fatal("Sent beyond the commit index suppressed the ACK")
	}
	g.Sent(a)
	if a, ok := g.Ready(); ok {
		t.Fatalf("Ready() = %+v after Sent", a)
	}
	g.Resend()
	if a, ok := g.Ready(); !ok || a.Seqno != 3 {
		t.Fatalf("Ready() after Resend = %+v, %t", a, ok)
	}
	g.Sent(a)
	if _, ok := g.Ready(); ok {
		t.Fatal("Ready() after Resend and Sent")
	}
}

func TestNewValidation(t *testing.T) {
	tests := []struct {
		cfg   semisync.Config
		parts []string
	}{
		{semisync.Config{Members: []string{"a", ""}, K: 1}, []string{"empty member id"}},
		{semisync.Config{Members: []string{"a", "a"}, K: 1}, []string{`"a" listed twice`}},
		{semisync.Config{Members: []string{"b", "a"}, K: 3}, []string{"K=3", "{a, b}"}},
		{semisync.Config{Members: []string{"a"}, K: -1}, []string{"K=-1"}},
		{semisync.Config{Policy: 7}, []string{"unknown policy 7"}},
	}
	for _, tt := range tests {
		_, err := semisync.New(tt.cfg)
		wantErr(t, err, tt.parts...)
	}
}

func TestEmptyIDs(t *testing.T) {
	g := newGate(t, semisync.Config{})
	wantErr(t, g.Durable("", 1), "empty replica id")
	wantErr(t, g.SetHealthy("", true), "empty replica id")
	wantErr(t, g.AddRecorded(""), "empty replica id")
}

func TestAddCountsOnceCaughtUp(t *testing.T) {
	g := newGate(t, semisync.Config{Members: []string{"a"}, K: 1, Policy: semisync.Degrade},
		up("a", "b"), extract(5), durable("a", 5), durable("b", 2))
	if err := g.AddRecorded("b"); err != nil {
		t.Fatal(err)
	}
	if r := replica(t, g, "b"); !r.Member || r.Counted {
		t.Fatalf("b right after AddRecorded: %+v, want member, not counted", r)
	}
	// Not caught up, so not a healthy counted member: a's loss leaves none.
	run(t, g, healthy("a", false))
	if since, ok := g.NeedsDegradeMarker(); !ok || since != 6 {
		t.Fatalf("NeedsDegradeMarker() = %d, %t; want 6, true", since, ok)
	}
	run(t, g, durable("b", 5))
	if r := replica(t, g, "b"); !r.Counted {
		t.Fatalf("b caught up but not counted: %+v", r)
	}
	if _, ok := g.NeedsDegradeMarker(); ok {
		t.Fatal("NeedsDegradeMarker with b healthy and counted")
	}
	run(t, g, extract(1), durable("b", 6))
	if g.CommitIndex() != 6 {
		t.Fatalf("commit index %d, want 6 from b", g.CommitIndex())
	}
	wantErr(t, g.AddRecorded("b"), `add "b": already in the sync set {a, b}`)
}

func TestRemoveOrdering(t *testing.T) {
	g := newGate(t, semisync.Config{Members: []string{"a", "b", "c"}, K: 1},
		up("a", "b", "c"), extract(4), durable("a", 4), durable("b", 2))
	if err := g.BeginRemove("a"); err != nil {
		t.Fatal(err)
	}
	if r := replica(t, g, "a"); !r.Removing || r.Counted || !r.Member {
		t.Fatalf("a after BeginRemove: %+v", r)
	}
	// a is no longer counted: 5 waits for b or c.
	run(t, g, extract(1), durable("a", 5))
	if g.CommitIndex() != 4 {
		t.Fatalf("commit index %d, want 4 (a not counted)", g.CommitIndex())
	}
	if g.CanRecordRemoval("a") {
		t.Fatal("CanRecordRemoval(a) while nobody else holds 4")
	}
	if g.CanRecordRemoval("b") {
		t.Fatal("CanRecordRemoval(b) without BeginRemove")
	}
	wantErr(t, g.BeginRemove("a"), "already begun")
	wantErr(t, g.BeginRemove("x"), `remove "x": not in the sync set {a, b, c}`)
	run(t, g, durable("b", 4))
	if !g.CanRecordRemoval("a") {
		t.Fatal("CanRecordRemoval(a) false with b holding 4")
	}
	if err := g.RemovalRecorded("a"); err != nil {
		t.Fatal(err)
	}
	if r := replica(t, g, "a"); r.Member || r.Counted || r.Removing {
		t.Fatalf("a after RemovalRecorded: %+v", r)
	}
	wantErr(t, g.RemovalRecorded("a"), "not in the sync set {b, c}")
}

func TestRemoveRefusedWhenTooFewRemain(t *testing.T) {
	g := newGate(t, semisync.Config{Members: []string{"a", "b"}, K: 2})
	before := fmt.Sprint(g.Status())
	wantErr(t, g.BeginRemove("a"), "K=2", "only 1 members would remain in {b}")
	if fmt.Sprint(g.Status()) != before {
		t.Fatal("refused BeginRemove changed the gate")
	}
	g = newGate(t, semisync.Config{Members: []string{"a", "b", "c"}, K: 2})
	if err := g.BeginRemove("a"); err != nil {
		t.Fatal(err)
	}
	wantErr(t, g.BeginRemove("b"), "K=2", "{c}")
}

func TestRemovalRecordedOutOfOrder(t *testing.T) {
	// Raft removed a without the gate's consent: the gate adopts it (it only
	// gets stricter) and reports the broken ordering.
	g := newGate(t, semisync.Config{Members: []string{"a", "b"}, K: 1}, up("a", "b"), extract(2), durable("a", 2))
	wantErr(t, g.RemovalRecorded("a"), `removal of "a" recorded but not begun`)
	if r := replica(t, g, "a"); r.Member || r.Counted {
		t.Fatalf("a still counted after its removal was recorded: %+v", r)
	}
	run(t, g, extract(1), durable("a", 3))
	if g.CommitIndex() != 2 {
		t.Fatalf("commit index %d, want 2", g.CommitIndex())
	}
	// Begun but recorded too early.
	g = newGate(t, semisync.Config{Members: []string{"a", "b"}, K: 1}, up("a", "b"), extract(2), durable("a", 2))
	run(t, g, func(g *semisync.Gate) error { return g.BeginRemove("a") })
	wantErr(t, g.RemovalRecorded("a"), "recorded too early", "0 of {b} hold seqno 2")
}

func TestCancelRemove(t *testing.T) {
	g := newGate(t, semisync.Config{Members: []string{"a", "b"}, K: 1}, up("a", "b"), extract(2), durable("a", 2))
	wantErr(t, g.CancelRemove("a"), "no removal begun")
	run(t, g, func(g *semisync.Gate) error { return g.BeginRemove("a") })
	if err := g.CancelRemove("a"); err != nil {
		t.Fatal(err)
	}
	if r := replica(t, g, "a"); !r.Counted || r.Removing {
		t.Fatalf("a after CancelRemove: %+v", r)
	}
	if g.CanRecordRemoval("a") {
		t.Fatal("CanRecordRemoval after CancelRemove")
	}
}

func TestRaiseK(t *testing.T) {
	g := newGate(t, semisync.Config{Members: []string{"a", "b", "c"}, K: 1},
		up("a", "b", "c"), extract(3), durable("a", 3), durable("b", 1))
	if err := g.ProposeK(2); err != nil {
		t.Fatal(err)
	}
	if st := g.Status(); st.K != 2 || st.RecordedK != 1 || !st.KProposed || st.ProposedK != 2 {
		t.Fatalf("status after ProposeK(2): %+v", st)
	}
	// Takes effect at once: 4 needs two holders.
	run(t, g, extract(1), durable("a", 4))
	if g.CommitIndex() != 3 {
		t.Fatalf("commit index %d, want 3", g.CommitIndex())
	}
	// Recording waits until two members hold everything acknowledged (3).
	if k, ok := g.CanRecordK(); ok || k != 2 {
		t.Fatalf("CanRecordK() = %d, %t; want 2, false", k, ok)
	}
	run(t, g, durable("c", 3))
	if k, ok := g.CanRecordK(); !ok || k != 2 {
		t.Fatalf("CanRecordK() = %d, %t; want 2, true", k, ok)
	}
	if err := g.KRecorded(2); err != nil {
		t.Fatal(err)
	}
	if st := g.Status(); st.K != 2 || st.RecordedK != 2 || st.KProposed {
		t.Fatalf("status after KRecorded(2): %+v", st)
	}
	if _, ok := g.CanRecordK(); ok {
		t.Fatal("CanRecordK with nothing proposed")
	}
}

func TestLowerK(t *testing.T) {
	g := newGate(t, semisync.Config{Members: []string{"a", "b"}, K: 2},
		up("a", "b"), extract(3), durable("a", 3), durable("b", 1))
	if err := g.ProposeK(1); err != nil {
		t.Fatal(err)
	}
	// Not in effect before it is recorded.
	if g.CommitIndex() != 1 || g.Status().K != 2 {
		t.Fatalf("lower K took effect before being recorded: %+v", g.Status())
	}
	if k, ok := g.CanRecordK(); !ok || k != 1 {
		t.Fatalf("CanRecordK() = %d, %t; want 1, true", k, ok)
	}
	if err := g.KRecorded(1); err != nil {
		t.Fatal(err)
	}
	if g.CommitIndex() != 3 {
		t.Fatalf("commit index %d after lowering K, want 3", g.CommitIndex())
	}
	// Lowering straight from Raft, without a proposal, is fine too.
	if err := g.KRecorded(0); err != nil {
		t.Fatal(err)
	}
	run(t, g, extract(2))
	if g.CommitIndex() != 5 {
		t.Fatalf("commit index %d with K=0, want 5", g.CommitIndex())
	}
}

func TestKValidation(t *testing.T) {
	g := newGate(t, semisync.Config{Members: []string{"b", "a"}, K: 1}, up("a", "b"), extract(1), durable("a", 1))
	before := fmt.Sprint(g.Status())
	wantErr(t, g.ProposeK(3), "K=3", "{a, b}", "2 members")
	wantErr(t, g.ProposeK(-1), "K=-1")
	wantErr(t, g.KRecorded(3), "K=3", "{a, b}")
	wantErr(t, g.KRecorded(-2), "K=-2")
	if fmt.Sprint(g.Status()) != before {
		t.Fatal("refused K change altered the gate")
	}
	run(t, g, func(g *semisync.Gate) error { return g.BeginRemove("a") })
	wantErr(t, g.ProposeK(2), "K=2", "{b}")
	// A raise recorded without proposal or too early is adopted and reported.
	g = newGate(t, semisync.Config{Members: []string{"a", "b"}, K: 1}, up("a", "b"), extract(1), durable("a", 1))
	wantErr(t, g.KRecorded(2), "K=2 recorded too early", "1 of {a, b} hold seqno 1")
	if g.Status().K != 2 {
		t.Fatalf("recorded K not adopted: %+v", g.Status())
	}
	// Withdrawing a proposal by proposing the recorded K.
	g = newGate(t, semisync.Config{Members: []string{"a", "b"}, K: 1})
	run(t, g, func(g *semisync.Gate) error { return g.ProposeK(2) }, func(g *semisync.Gate) error { return g.ProposeK(1) })
	if st := g.Status(); st.KProposed || st.K != 1 {
		t.Fatalf("proposal not withdrawn: %+v", st)
	}
}

func TestStrictNeverDegrades(t *testing.T) {
	g := newGate(t, semisync.Config{Members: []string{"a"}, K: 1}, extract(3))
	if _, ok := g.NeedsDegradeMarker(); ok {
		t.Fatal("strict gate asks for the degraded marker")
	}
	// A marker recorded anyway (policy changed meanwhile) does not make a
	// strict gate acknowledge early.
	if err := g.DegradeRecorded(1); err != nil {
		t.Fatal(err)
	}
	if g.CommitIndex() != 0 || g.Status().DegradedAcking {
		t.Fatalf("strict gate acknowledged early: %+v", g.Status())
	}
	if err := g.SetPolicy(semisync.Degrade); err != nil {
		t.Fatal(err)
	}
	if g.CommitIndex() != 3 {
		t.Fatalf("commit index %d after switching to degrade, want 3", g.CommitIndex())
	}
	wantErr(t, g.SetPolicy(9), "unknown policy 9")
}

func TestDegradeLifecycle(t *testing.T) {
	g := newGate(t, semisync.Config{Members: []string{"a", "b"}, K: 2, Policy: semisync.Degrade},
		up("a", "b"), extract(2), durable("a", 2), durable("b", 2))
	if _, ok := g.NeedsDegradeMarker(); ok {
		t.Fatal("marker asked for with both members healthy")
	}
	run(t, g, healthy("b", false), extract(3), durable("a", 5))
	since, ok := g.NeedsDegradeMarker()
	if !ok || since != 3 {
		t.Fatalf("NeedsDegradeMarker() = %d, %t; want 3, true", since, ok)
	}
	// Nothing beyond what K members hold until the marker is recorded.
	if g.CommitIndex() != 2 {
		t.Fatalf("commit index %d before the marker, want 2", g.CommitIndex())
	}
	wantErr(t, g.DegradeRecorded(0), "between 1 and commit index 2 + 1")
	wantErr(t, g.DegradeRecorded(4), "between 1 and commit index 2 + 1")
	if err := g.DegradeRecorded(since); err != nil {
		t.Fatal(err)
	}
	if st := g.Status(); g.CommitIndex() != 5 || !st.DegradedAcking || st.DegradedSince != 3 {
		t.Fatalf("after the marker: %+v", st)
	}
	if err := g.DegradeRecorded(since); err != nil {
		t.Fatalf("recording the same marker again: %v", err)
	}
	wantErr(t, g.DegradeRecorded(2), "while marker 3 is in force")
	if _, ok := g.NeedsDegradeMarker(); ok {
		t.Fatal("marker asked for while one is in force")
	}
	if g.MarkerClearable() {
		t.Fatal("marker clearable while b is down")
	}
	wantErr(t, g.DegradeCleared(), "cleared too early")
	// The early clear was adopted: record the marker again.
	if err := g.DegradeRecorded(since); err != nil {
		t.Fatal(err)
	}
	run(t, g, extract(2))
	if g.CommitIndex() != 7 {
		t.Fatalf("commit index %d while degraded, want 7", g.CommitIndex())
	}
	// b comes back and catches up: early acknowledgement ends, for good.
	run(t, g, healthy("b", true), durable("b", 6))
	if g.MarkerClearable() || !g.Status().DegradedAcking {
		t.Fatalf("b behind the commit index, yet: %+v", g.Status())
	}
	run(t, g, durable("b", 7), durable("a", 7))
	if !g.MarkerClearable() || g.Status().DegradedAcking {
		t.Fatalf("b caught up, marker not clearable: %+v", g.Status())
	}
	run(t, g, extract(1))
	if g.CommitIndex() != 7 {
		t.Fatalf("commit index %d after early acknowledgement ended, want 7", g.CommitIndex())
	}
	// A new failure before the clear: no early acks on the spent marker; a
	// new one is needed.
	run(t, g, healthy("b", false), extract(1))
	if g.CommitIndex() != 7 {
		t.Fatalf("commit index %d: acknowledged early on a spent marker", g.CommitIndex())
	}
	since, ok = g.NeedsDegradeMarker()
	if !ok || since != 8 {
		t.Fatalf("NeedsDegradeMarker() = %d, %t; want 8, true", since, ok)
	}
	if err := g.DegradeRecorded(since); err != nil {
		t.Fatal(err)
	}
	if g.CommitIndex() != 9 || g.Status().DegradedSince != 8 {
		t.Fatalf("after the new marker: %+v", g.Status())
	}
	run(t, g, healthy("b", true), durable("a", 9), durable("b", 9))
	if !g.MarkerClearable() {
		t.Fatalf("not clearable: %+v", g.Status())
	}
	if err := g.DegradeCleared(); err != nil {
		t.Fatal(err)
	}
	if st := g.Status(); st.DegradedSince != 0 || g.MarkerClearable() {
		t.Fatalf("after DegradeCleared: %+v", st)
	}
	wantErr(t, g.DegradeCleared(), "none recorded")
}

// With the only member down but holding the commit index, the marker must
// still let the gate acknowledge: a member that is down does not end
// degraded operation.
func TestDegradeNeedsHealthyMembersToEnd(t *testing.T) {
	g := newGate(t, semisync.Config{Members: []string{"a"}, K: 1, Policy: semisync.Degrade},
		up("a"), extract(2), durable("a", 2), healthy("a", false), extract(1))
	since, ok := g.NeedsDegradeMarker()
	if !ok {
		t.Fatal("no marker asked for")
	}
	if err := g.DegradeRecorded(since); err != nil {
		t.Fatal(err)
	}
	if g.CommitIndex() != 3 {
		t.Fatalf("commit index %d, want 3: %+v", g.CommitIndex(), g.Status())
	}
	if g.MarkerClearable() {
		t.Fatal("clearable with the only member down")
	}
}

func TestRecoverLag(t *testing.T) {
	for _, tt := range []struct {
		lag        uint64
		wantCommit uint64
	}{
		{0, 11}, // b at 8 is not at the commit index 10: keep acknowledging early
		{2, 10}, // b within 2 of 10: stop and wait for it
	} {
		t.Run(fmt.Sprint("lag=", tt.lag), func(t *testing.T) {
			g := newGate(t, semisync.Config{Members: []string{"a", "b"}, K: 1, Policy: semisync.Degrade, RecoverLag: tt.lag},
				healthy("a", false), healthy("b", false))
			since, _ := g.NeedsDegradeMarker()
			run(t, g, func(g *semisync.Gate) error { return g.DegradeRecorded(since) }, extract(10))
			run(t, g, healthy("b", true), durable("b", 8), extract(1))
			if g.CommitIndex() != tt.wantCommit {
				t.Fatalf("commit index %d, want %d: %+v", g.CommitIndex(), tt.wantCommit, g.Status())
			}
			if tt.lag == 0 {
				return
			}
			// Waiting: b catches up to the frozen commit index even though
			// extraction goes on; then the marker may be cleared.
			run(t, g, extract(5), durable("b", 10))
			if !g.MarkerClearable() {
				t.Fatalf("b holds the commit index, marker not clearable: %+v", g.Status())
			}
			run(t, g, durable("b", 16))
			if g.CommitIndex() != 16 {
				t.Fatalf("commit index %d, want 16 from b", g.CommitIndex())
			}
		})
	}
}

func TestAckedCeiling(t *testing.T) {
	// An agent restarts knowing only that 5 was acknowledged; its log ends at
	// 9, so an earlier gate may have acknowledged up to 9.
	cfg := semisync.Config{Members: []string{"a", "b"}, K: 1, CommitIndex: 5, CommitPosition: pos(5), AckedCeiling: 9}
	g := newGate(t, cfg, up("a", "b"), durable("a", 9), durable("b", 5), extract(4))
	if g.CommitIndex() != 9 {
		t.Fatalf("commit index %d, want 9", g.CommitIndex())
	}
	g = newGate(t, cfg, up("a", "b"), durable("a", 9), durable("b", 6))
	run(t, g, func(g *semisync.Gate) error { return g.BeginRemove("a") })
	if g.CanRecordRemoval("a") {
		t.Fatal("removal of a allowed though b lacks 7..9, which may have been acknowledged")
	}
	run(t, g, durable("b", 9))
	if !g.CanRecordRemoval("a") {
		t.Fatal("removal of a refused with b holding the ceiling")
	}
}

func TestStatusAndForget(t *testing.T) {
	g := newGate(t, semisync.Config{Members: []string{"b", "a"}, K: 1},
		up("a"), extract(5), durable("a", 5), durable("b", 2), durable("z", 7))
	st := g.Status()
	if st.CommitIndex != 5 || st.CommitPosition != pos(5) || st.LastExtracted != 5 || st.Policy != semisync.Strict {
		t.Errorf("status: %+v", st)
	}
	want := []semisync.ReplicaStatus{
		{ID: "a", Durable: 5, Lag: 0, Healthy: true, Member: true, Counted: true},
		// b was counted from the start: nothing was acknowledged yet.
		{ID: "b", Durable: 2, Lag: 3, Member: true, Counted: true},
		{ID: "z", Durable: 7, Lag: 0},
	}
	if fmt.Sprint(st.Replicas) != fmt.Sprint(want) {
		t.Errorf("replicas:\n got %+v\nwant %+v", st.Replicas, want)
	}
	wantErr(t, g.Forget("a"), `forget "a": still in the sync set {a, b}`)
	if err := g.Forget("z"); err != nil {
		t.Fatal(err)
	}
	if err := g.Forget("never-seen"); err != nil {
		t.Fatal(err)
	}
	if n := len(g.Status().Replicas); n != 2 {
		t.Errorf("%d replicas after Forget(z), want 2", n)
	}
}

func TestParsePolicy(t *testing.T) {
	for _, p := range []semisync.Policy{semisync.Strict, semisync.Degrade} {
		got, err := semisync.ParsePolicy(p.String())
		if err != nil || got != p {
			t.Errorf("ParsePolicy(%q) = %v, %v", p.String(), got, err)
		}
	}
	_, err := semisync.ParsePolicy("lenient")
	wantErr(t, err, `unknown policy "lenient"`)
}
