package consensus

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

// twoTerms is a state with members a, b, c, primary a of epoch 1, sync set
// b, c, K=1 and a recorded commit index of 100.
func twoTerms(t *testing.T) State {
	t.Helper()
	s := NewState()
	for i, id := range []string{"a", "b", "c"} {
		m := member(id, i+1)
		m.Priority = 0
		s = mustApply(t, s, AddMember{m})
	}
	s = mustApply(t, s, SetPrimary{Epoch: 1, Primary: "a", FirstSeqno: 1, SyncSet: []string{"b", "c"}})
	s = mustApply(t, s, SetK{1})
	return mustApply(t, s, RecordCommitIndex{100})
}

func TestSetPrimaryCertificate(t *testing.T) {
	cert := func(commit, prim uint64) *Certificate {
		return &Certificate{CommitIndex: commit, CommitIndexFrom: "a", PrimarySeqno: prim, PrimaryEpoch: 1}
	}
	tests := []struct {
		name    string
		cmd     SetPrimary
		degrade bool
		want    string // error text, "" for success
	}{
		{"holds the commit index", SetPrimary{Epoch: 2, Primary: "b", FirstSeqno: 121, Certificate: cert(120, 120)}, false, ""},
		{"beyond it", SetPrimary{Epoch: 2, Primary: "b", FirstSeqno: 131, Certificate: cert(120, 130)}, false, ""},
		{"below the reported commit index", SetPrimary{Epoch: 2, Primary: "b", FirstSeqno: 111, Certificate: cert(120, 110)}, false,
			"certificate.primary_seqno=110: is below the highest reported commit index 120 (from a)"},
		{"below it, accepting loss", SetPrimary{Epoch: 2, Primary: "b", FirstSeqno: 111, AcceptLoss: true, Certificate: cert(120, 110)}, false, ""},
		{"below it, degraded", SetPrimary{Epoch: 2, Primary: "b", FirstSeqno: 111, Certificate: cert(120, 110)}, true, ""},
		{"first seqno not after the certificate's", SetPrimary{Epoch: 2, Primary: "b", FirstSeqno: 125, Certificate: cert(120, 120)}, false,
			"certificate.primary_seqno=120: must be first_seqno-1 = 124"},
		{"certificate without the recorded commit index", SetPrimary{Epoch: 2, Primary: "b", FirstSeqno: 121, Certificate: cert(90, 120)}, false,
			"certificate.commit_index=90: is below the recorded commit index 100"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := twoTerms(t)
			if tt.degrade {
				s = mustApply(t, s, SetPolicy{PolicyDegrade})
				s = mustApply(t, s, MarkDegraded{AsyncSince: 101, Reason: "c down", At: t0})
			}
			next, err := s.Apply(tt.cmd)
			if tt.want != "" {
				if err == nil || !strings.Contains(err.Error(), tt.want) {
					t.Fatalf("Apply = %v, want error containing %q", err, tt.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := next.EpochHistory[1].Certificate
			if !reflect.DeepEqual(got, tt.cmd.Certificate) {
				t.Fatalf("recorded certificate %+v, want %+v", got, tt.cmd.Certificate)
			}
		})
	}
}

func TestSetPrimaryRecordsPromotion(t *testing.T) {
	s := twoTerms(t)
	s = mustApply(t, s, SetPrimary{Epoch: 2, Primary: "b", FirstSeqno: 121, Automatic: true, Reason: "a failed", At: t0, By: "m2"})
	if len(s.Decisions) != 1 {
		t.Fatalf("decisions %+v, want one promotion", s.Decisions)
	}
	d := s.Decisions[0]
	if d.Kind != DecisionPromotion || d.Epoch != 2 || d.Node != "b" || d.By != "m2" || d.Reason != "a failed" || !d.At.Equal(t0) {
		t.Fatalf("promotion decision %+v", d)
	}
	e := s.EpochHistory[1]
	if !e.Automatic || e.Reason != "a failed" || !e.At.Equal(t0) {
		t.Fatalf("epoch entry %+v", e)
	}
	// A promotion without a reason records no decision.
	s = mustApply(t, s, SetPrimary{Epoch: 3, Primary: "c", FirstSeqno: 130})
	if len(s.Decisions) != 1 {
		t.Fatalf("decisions %+v, want still one", s.Decisions)
	}
}

func TestRecordDecision(t *testing.T) {
	s := twoTerms(t)
	ok := Decision{At: t0, Kind: DecisionDetection, Epoch: 1, Node: "a", By: "m1", Reason: "primary a silent"}
	bad := []struct {
		mod  func(*Decision)
		want string
	}{
		{func(d *Decision) { d.Kind = "guess" }, `decision.kind="guess": unknown kind`},
		{func(d *Decision) { d.Kind = DecisionPromotion }, "promotions are recorded by set_primary"},
		{func(d *Decision) { d.At = time.Time{} }, "decision.at"},
		{func(d *Decision) { d.Reason = "" }, "decision.reason"},
		{func(d *Decision) { d.Reason = strings.Repeat("x", MaxDecisionReason+1) }, "longer than 4096"},
		{func(d *Decision) { d.Epoch = 2 }, "beyond the current epoch 1"},
	}
	for _, b := range bad {
		d := ok
		b.mod(&d)
		if err := s.Validate(RecordDecision{d}); err == nil || !strings.Contains(err.Error(), b.want) {
			t.Errorf("RecordDecision(%+v) = %v, want %q", d, err, b.want)
		}
	}
	// The log keeps the newest MaxDecisions entries.
	for i := range MaxDecisions + 5 {
		d := ok
		d.At = t0.Add(time.Duration(i) * time.Second)
		s = mustApply(t, s, RecordDecision{d})
	}
	if len(s.Decisions) != MaxDecisions {
		t.Fatalf("%d decisions, want %d", len(s.Decisions), MaxDecisions)
	}
	if first := s.Decisions[0].At; !first.Equal(t0.Add(5 * time.Second)) {
		t.Fatalf("oldest kept decision at %s, want t0+5s", first)
	}
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
}

// TestDecodeVersion1 checks that version-1 entries, written before the
// certificate and the decision log existed, still decode.
func TestDecodeVersion1(t *testing.T) {
	cmd, err := Decode([]byte(`{"version":1,"type":"set_primary","payload":{"epoch":2,"primary":"b","first_seqno":5}}`))
	if err != nil {
		t.Fatal(err)
	}
	if sp, ok := cmd.(SetPrimary); !ok || sp.Epoch != 2 || sp.Certificate != nil {
		t.Fatalf("decoded %#v", cmd)
	}
}
