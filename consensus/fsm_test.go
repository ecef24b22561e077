package consensus

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

func rlog(index uint64, data []byte) *raft.Log {
	return &raft.Log{Index: index, Term: 1, Type: raft.LogCommand, Data: data}
}

// applyAll feeds cmds to f as committed log entries and fails on any refusal.
func applyAll(t *testing.T, f *FSM, cmds ...Command) {
	t.Helper()
	for i, c := range cmds {
		b, err := Encode(c)
		if err != nil {
			t.Fatal(err)
		}
		if resp := f.Apply(rlog(uint64(i+1), b)); resp != nil {
			if err, ok := resp.(error); ok {
				t.Fatalf("apply %T: %v", c, err)
			}
		}
	}
}

// memSink is a raft.SnapshotSink in memory.
type memSink struct {
	bytes.Buffer
	closed, cancelled bool
}

func (s *memSink) ID() string    { return "mem" }
func (s *memSink) Cancel() error { s.cancelled = true; return nil }
func (s *memSink) Close() error  { s.closed = true; return nil }

func snapshot(t *testing.T, f *FSM) []byte {
	t.Helper()
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	snap.Release()
	if !sink.closed || sink.cancelled {
		t.Fatalf("sink closed=%v cancelled=%v", sink.closed, sink.cancelled)
	}
	return sink.Bytes()
}

func TestFSMSnapshotRestoreReplaces(t *testing.T) {
	f := NewFSM(nil)
	// State A.
	applyAll(t, f,
		AddMember{member("a", 1)}, AddMember{member("b", 2)}, AddMember{member("c", 3)},
		SetPrimary{Epoch: 1, Primary: "a", FirstSeqno: 1},
		SetSyncSet{Members: []string{"b", "c"}}, SetK{2},
		SetPolicy{PolicyDegrade},
		MarkDegraded{AsyncSince: 40, Reason: "c lagging", At: t0},
		RecordCommitIndex{50},
		SetSettings{FailoverTimeout: dur(3 * time.Second)},
	)
	stateA := f.State()
	snapA := snapshot(t, f)

	// State B differs in every field.
	applyAll(t, f,
		ClearDegraded{}, SetPolicy{PolicyStrict},
		SetK{1}, SetSyncSet{Members: []string{"c"}},
		SetPrimary{Epoch: 2, Primary: "b", FirstSeqno: 60, Automatic: true, Reason: "a down", At: t0},
		RemoveMember{"a"}, AddMember{member("d", 4)},
		RecordCommitIndex{70},
		SetSettings{AntiFlapWindow: dur(time.Minute)},
	)
	stateB := f.State()
	if reflect.DeepEqual(stateA, stateB) {
		t.Fatal("states A and B are equal; the test proves nothing")
	}

	changed := f.Changed()
	if err := f.Restore(io.NopCloser(bytes.NewReader(snapA))); err != nil {
		t.Fatal(err)
	}
	select {
	case <-changed:
	default:
		t.Error("Restore did not signal a change")
	}
	if got := f.State(); !reflect.DeepEqual(got, stateA) {
		t.Fatalf("after restore:\n got %+v\nwant %+v", got, stateA)
	}
	// The restored state is live: B's commands apply again on top of A.
	applyAll(t, f, SetPolicy{PolicyStrict})
}

func TestFSMRestoreRefusesBadSnapshots(t *testing.T) {
	f := NewFSM(nil)
	applyAll(t, f, AddMember{member("a", 1)})
	want := f.State()
	tests := []struct{ name, data, errText string }{
		{"garbage", "not json", "restore snapshot"},
		{"future format", `{"format":3,"state":{}}`, "format 3"},
		{"inconsistent state", `{"format":1,"state":{"policy":"strict","k":-1,"settings":{"failover_timeout":1}}}`, "k=-1"},
		{"unknown field", `{"format":1,"state":{"policy":"strict","settings":{"failover_timeout":1},"x":1}}`, `unknown field "x"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := f.Restore(io.NopCloser(strings.NewReader(tt.data)))
			if err == nil || !strings.Contains(err.Error(), tt.errText) {
				t.Fatalf("Restore = %v, want error containing %q", err, tt.errText)
			}
			if got := f.State(); !reflect.DeepEqual(got, want) {
				t.Fatalf("failed restore changed the state: %+v", got)
			}
		})
	}
}

func TestFSMApplyRefusals(t *testing.T) {
	f := NewFSM(nil)
	applyAll(t, f, AddMember{member("a", 1)}, AddMember{member("b", 2)})
	want := f.State()
	for _, data := range [][]byte{
		[]byte("garbage"),
		[]byte(`{"version":9,"type":"set_k","payload":{"k":1}}`),
		mustEncode(t, SetK{5}),
		mustEncode(t, RemoveMember{"zz"}),
		mustEncode(t, SetPrimary{Epoch: 7, Primary: "a", FirstSeqno: 1}),
	} {
		resp := f.Apply(rlog(10, data))
		err, ok := resp.(error)
		if !ok {
			t.Fatalf("Apply(%s) = %v, want an error", data, resp)
		}
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("Apply(%s) error %v does not wrap ErrInvalid", data, err)
		}
		if got := f.State(); !reflect.DeepEqual(got, want) {
			t.Fatalf("refused %s changed the state", data)
		}
	}
	resp := f.Apply(rlog(11, mustEncode(t, SetK{1})))
	st, ok := resp.(State)
	if !ok || st.K != 1 {
		t.Fatalf("Apply(set_k 1) = %#v, want the new State", resp)
	}
}

func mustEncode(t *testing.T, c Command) []byte {
	t.Helper()
	b, err := Encode(c)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
