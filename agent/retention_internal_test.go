package agent

import (
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/quire-ha/quire/config"
	"github.com/quire-ha/quire/manager"
	"github.com/quire-ha/quire/semisync"
	"github.com/quire-ha/quire/txlog"
)

func TestGateFloor(t *testing.T) {
	rs := func(durable ...uint64) []semisync.ReplicaStatus {
		var out []semisync.ReplicaStatus
		for i, d := range durable {
			out = append(out, semisync.ReplicaStatus{ID: string(rune('b' + i)), Durable: d, Member: true})
		}
		return out
	}
	for _, tc := range []struct {
		name string
		in   []semisync.ReplicaStatus
		want uint64
	}{
		{"no replica known", nil, 0},
		{"the lowest durable seqno", rs(40, 35, 50), 35},
		{"a member that has not reported", rs(40, 0), 0},
		{"a non-member that streamed counts too", append(rs(40), semisync.ReplicaStatus{ID: "x", Durable: 12}), 12},
	} {
		got, why := gateFloor(tc.in)
		if got != tc.want || (got == 0) != (why != "") {
			t.Errorf("%s: gateFloor = %d, %q; want %d (and a reason exactly when 0)", tc.name, got, why, tc.want)
		}
	}
}

// testAgent is an Agent with just a data directory and a log of records
// 1..last of epoch 2.
func testAgent(t *testing.T, last uint64, managers ...string) *Agent {
	t.Helper()
	dir := t.TempDir()
	l, err := txlog.Open(filepath.Join(dir, "txlog"), txlog.Options{SegmentSize: 4096, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	for s := uint64(1); s <= last; s++ {
		if err := l.Append(txlog.Record{Seqno: s, Epoch: 2, Timestamp: 1, Events: make([]byte, 1000)}); err != nil {
			t.Fatal(err)
		}
	}
	cfg := &config.Agent{DataDir: dir, Managers: managers}
	return &Agent{cfg: cfg, txl: l, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
}

func TestPrimaryKeepFrom(t *testing.T) {
	write := func(t *testing.T, path, s string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name         string
		start, acked string // file contents; "" for none
		want         uint64
	}{
		{"no term recorded", "", "", 0},
		{"another epoch's term", `{"epoch":1,"first_seqno":1}`, "", 0},
		{"the term's start", `{"epoch":2,"first_seqno":11}`, "", 11},
		{"after the last ACK", `{"epoch":2,"first_seqno":11}`, `{"epoch":2,"seqno":15}`, 16},
		{"an ACK of another epoch", `{"epoch":2,"first_seqno":11}`, `{"epoch":1,"seqno":15}`, 11},
		{"an ACK beyond the log", `{"epoch":2,"first_seqno":11}`, `{"epoch":2,"seqno":31}`, 11},
		{"an ACK before the term", `{"epoch":2,"first_seqno":11}`, `{"epoch":2,"seqno":5}`, 11},
		{"a damaged ACK file", `{"epoch":2,"first_seqno":11}`, `{"epoch":`, 11},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := testAgent(t, 30)
			if tc.start != "" {
				write(t, a.extractStartPath(), tc.start)
			}
			if tc.acked != "" {
				write(t, a.ackStatePath(), tc.acked)
			}
			got, why := a.localKeepFrom(Role{Kind: RolePrimary, Epoch: 2})
			if got != tc.want || (got == 0) != (why != "") {
				t.Fatalf("localKeepFrom = %d, %q; want %d (and a reason exactly when 0)", got, why, tc.want)
			}
		})
	}
}

func TestRetentionBounds(t *testing.T) {
	// Static replica: no cluster floor, and no applier yet: nothing.
	a := testAgent(t, 30)
	b := a.retentionBounds(Role{Kind: RoleReplica, Epoch: 2, PrimaryAgent: "p:1"})
	if b.keepFrom != 0 || b.floor != 0 || b.why == "" {
		t.Errorf("static replica without an applier: %+v, want nothing purged, with a reason", b)
	}
	if f, _ := a.clusterFloor(Role{Kind: RoleReplica}); f != math.MaxUint64 {
		t.Errorf("static replica's cluster floor %d, want none (MaxUint64)", f)
	}
	// Static primary without a running gate: nothing.
	if b := a.retentionBounds(Role{Kind: RolePrimary, Epoch: 2}); b.keepFrom != 0 || b.why == "" {
		t.Errorf("static primary without a gate: %+v", b)
	}
	// No role: nothing.
	if b := a.retentionBounds(Role{Kind: RoleNone}); b.keepFrom != 0 || b.why == "" {
		t.Errorf("no role: %+v", b)
	}

	// Managed primary: the lower of the managers' floor and its own need.
	m := testAgent(t, 30, "m1:7300")
	if err := os.WriteFile(m.extractStartPath(), []byte(`{"epoch":2,"first_seqno":11}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(m.ackStatePath(), []byte(`{"epoch":2,"seqno":20}`), 0o600); err != nil {
		t.Fatal(err)
	}
	primary := Role{Kind: RolePrimary, Epoch: 2}
	if b := m.retentionBounds(primary); b.keepFrom != 0 || b.why != "no assignment from the managers yet" {
		t.Errorf("before any assignment: %+v", b)
	}
	for _, tc := range []struct {
		floor, want uint64
	}{{0, 0}, {15, 15}, {25, 21}} {
		m.asg, m.hasAsg = manager.Assignment{Role: manager.RolePrimary, Epoch: 2, RetainFrom: tc.floor}, true
		b := m.retentionBounds(primary)
		if b.keepFrom != tc.want || b.floor != tc.floor || (b.keepFrom == 0) != (b.why != "") {
			t.Errorf("floor %d: %+v, want keep from %d", tc.floor, b, tc.want)
		}
	}

	// A pass purges whole segments below the bound that are old enough.
	m.role = primary
	m.cfg.Log.Retention = time.Hour // the records committed at Unix time 1
	b, res, err := m.purgeOnce(time.Now())
	if err != nil || b.keepFrom != 21 || res.Segments == 0 || m.txl.FirstSeqno() > 21 || m.txl.FirstSeqno() == 1 {
		t.Fatalf("purgeOnce = %+v, %+v, %v; first seqno %d", b, res, err, m.txl.FirstSeqno())
	}
	m.cfg.Log.Retention = 0
	first := m.txl.FirstSeqno()
	if _, res, err := m.purgeOnce(time.Now()); err != nil || res.Segments != 0 || m.txl.FirstSeqno() != first {
		t.Fatalf("second pass purged again: %+v, %v", res, err)
	}
}
