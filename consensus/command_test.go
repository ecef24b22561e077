package consensus

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func member(id string, n int) Member {
	return Member{
		ID:           id,
		MySQLAddr:    fmt.Sprintf("10.0.0.%d:3306", n),
		AgentAddr:    fmt.Sprintf("10.0.0.%d:7000", n),
		ManagerAddr:  fmt.Sprintf("10.0.0.%d:7001", n),
		Priority:     n,
		MayBePrimary: true,
	}
}

// mustApply applies cmds in order and fails the test on any error.
func mustApply(t *testing.T, s State, cmds ...Command) State {
	t.Helper()
	for _, c := range cmds {
		var err error
		if s, err = s.Apply(c); err != nil {
			t.Fatalf("apply %T: %v", c, err)
		}
	}
	return s
}

// baseState: members a, b, c, d (d may not be primary); primary a at
// epoch 1; sync set {b, c}; K 1; commit index 100.
func baseState(t *testing.T) State {
	d := member("d", 4)
	d.MayBePrimary = false
	return mustApply(t, NewState(),
		AddMember{member("a", 1)}, AddMember{member("b", 2)}, AddMember{member("c", 3)}, AddMember{d},
		SetPrimary{Epoch: 1, Primary: "a", FirstSeqno: 1},
		SetSyncSet{Members: []string{"c", "b"}},
		SetK{K: 1},
		RecordCommitIndex{Seqno: 100},
	)
}

func dur(d time.Duration) *time.Duration { return &d }

func TestValidate(t *testing.T) {
	base := baseState(t)
	degradable := mustApply(t, base, SetPolicy{PolicyDegrade})
	degraded := mustApply(t, degradable, MarkDegraded{AsyncSince: 101, Reason: "b and c down", At: t0})
	failedOver := mustApply(t, base, SetPrimary{Epoch: 2, Primary: "b", FirstSeqno: 150, SyncSet: []string{"c"}, Automatic: true, Reason: "a unreachable", At: t0})
	k3 := mustApply(t, base, SetSyncSet{Members: []string{"b", "c", "d"}}, SetK{K: 3})

	tests := []struct {
		name  string
		state State
		cmd   Command
		field string // "" means valid
		value string // must appear in the error text
	}{
		// Members.
		{"add member", base, AddMember{member("e", 5)}, "", ""},
		{"add member empty id", base, AddMember{member("", 5)}, "member.id", `member.id=""`},
		{"add member bad id", base, AddMember{member("e f", 5)}, "member.id", `"e f"`},
		{"add duplicate member", base, AddMember{member("b", 5)}, "member.id", `"b"`},
		{"add member reusing mysql addr", base, AddMember{Member{ID: "e", MySQLAddr: "10.0.0.2:3306", AgentAddr: "10.0.0.5:7000"}}, "member.mysql_addr", `"10.0.0.2:3306"`},
		{"add member without agent addr", base, AddMember{Member{ID: "e", MySQLAddr: "10.0.0.5:3306"}}, "member.agent_addr", `member.agent_addr=""`},
		{"add member bad manager addr", base, AddMember{Member{ID: "e", MySQLAddr: "10.0.0.5:3306", AgentAddr: "10.0.0.5:7000", ManagerAddr: "nohostport"}}, "member.manager_addr", `"nohostport"`},
		{"update member", base, UpdateMember{Member{ID: "b", MySQLAddr: "10.0.0.9:3306", AgentAddr: "10.0.0.9:7000", Priority: 9, MayBePrimary: true}}, "", ""},
		{"update unknown member", base, UpdateMember{member("zz", 9)}, "member.id", `"zz"`},
		{"update primary to may-not-be-primary", base, UpdateMember{Member{ID: "a", MySQLAddr: "10.0.0.1:3306", AgentAddr: "10.0.0.1:7000"}}, "member.may_be_primary", "false"},
		{"remove member", base, RemoveMember{"d"}, "", ""},
		{"remove empty id", base, RemoveMember{""}, "id", `id=""`},
		{"remove unknown member", base, RemoveMember{"zz"}, "id", `"zz"`},
		{"remove primary", base, RemoveMember{"a"}, "id", `id="a": is the primary`},
		{"remove sync-set member", base, RemoveMember{"b"}, "id", `id="b": is in the sync set`},
		{"remove leaving too few for K", mustApply(t, k3, SetSyncSet{Members: []string{"b", "c"}}), RemoveMember{"d"}, "id", "fewer than k=3"},

		// K.
		{"set k", base, SetK{2}, "", ""},
		{"set k zero", base, SetK{0}, "", ""},
		{"negative k", base, SetK{-1}, "k", "k=-1"},
		{"k above candidates", base, SetK{4}, "k", "k=4: exceeds the 3 members"},

		// Policy.
		{"set policy degrade", base, SetPolicy{PolicyDegrade}, "", ""},
		{"unknown policy", base, SetPolicy{"lenient"}, "policy", `"lenient"`},

		// Sync set.
		{"set sync set", base, SetSyncSet{Members: []string{"d", "b"}}, "", ""},
		{"empty sync set", base, SetSyncSet{}, "", ""},
		{"sync set unknown member", base, SetSyncSet{Members: []string{"b", "zz"}}, "members", `"zz": is not a member`},
		{"sync set empty id", base, SetSyncSet{Members: []string{"b", ""}}, "members", "empty id"},
		{"sync set duplicate", base, SetSyncSet{Members: []string{"b", "c", "b"}}, "members", `"b": is listed twice`},
		{"sync set contains primary", base, SetSyncSet{Members: []string{"a", "b"}}, "members", `"a": is the primary`},

		// Primary and epochs.
		{"set primary", base, SetPrimary{Epoch: 2, Primary: "b", FirstSeqno: 101}, "", ""},
		{"epoch skips", base, SetPrimary{Epoch: 3, Primary: "b", FirstSeqno: 101}, "epoch", "epoch=3: must be 2"},
		{"epoch repeats", base, SetPrimary{Epoch: 1, Primary: "b", FirstSeqno: 101}, "epoch", "epoch=1: must be 2"},
		{"primary unknown", base, SetPrimary{Epoch: 2, Primary: "zz", FirstSeqno: 101}, "primary", `"zz": is not a member`},
		{"primary empty", base, SetPrimary{Epoch: 2, FirstSeqno: 101}, "primary", `primary=""`},
		{"primary may not be primary", base, SetPrimary{Epoch: 2, Primary: "d", FirstSeqno: 101}, "primary", `"d": may not be primary`},
		{"first seqno zero", base, SetPrimary{Epoch: 2, Primary: "b"}, "first_seqno", "first_seqno=0"},
		{"first seqno at commit index", base, SetPrimary{Epoch: 2, Primary: "b", FirstSeqno: 100}, "first_seqno", "first_seqno=100: is not above the recorded commit index 100"},
		{"first seqno at commit index, loss accepted", base, SetPrimary{Epoch: 2, Primary: "b", FirstSeqno: 100, AcceptLoss: true}, "", ""},
		{"first seqno at commit index, degraded", degraded, SetPrimary{Epoch: 2, Primary: "b", FirstSeqno: 90}, "", ""},
		{"first seqno below previous epoch", failedOver, SetPrimary{Epoch: 3, Primary: "c", FirstSeqno: 120, AcceptLoss: true}, "first_seqno", "first_seqno=120: is below epoch 2's first seqno 150"},
		{"new sync set contains new primary", base, SetPrimary{Epoch: 2, Primary: "b", FirstSeqno: 101, SyncSet: []string{"b", "c"}}, "sync_set", `"b": is the primary`},
		{"promotion leaves K unreachable", mustApply(t, NewState(), AddMember{member("a", 1)}, AddMember{member("b", 2)}, SetK{2}), SetPrimary{Epoch: 1, Primary: "a", FirstSeqno: 1}, "primary", "k=2 would exceed the 1 members"},
		{"automatic without reason", base, SetPrimary{Epoch: 2, Primary: "b", FirstSeqno: 101, Automatic: true, At: t0}, "reason", `reason=""`},
		{"automatic without time", base, SetPrimary{Epoch: 2, Primary: "b", FirstSeqno: 101, Automatic: true, Reason: "x"}, "at", "at=0001-01-01T00:00:00Z"},
		{"automatic inside anti-flap window", failedOver, SetPrimary{Epoch: 3, Primary: "c", FirstSeqno: 150, Automatic: true, Reason: "b unreachable", At: t0.Add(time.Minute)}, "automatic", "unacknowledged"},
		{"automatic after anti-flap window", failedOver, SetPrimary{Epoch: 3, Primary: "c", FirstSeqno: 150, Automatic: true, Reason: "b unreachable", At: t0.Add(2 * time.Hour)}, "", ""},
		{"automatic after acknowledgement", mustApply(t, failedOver, AcknowledgeFailover{By: "ops", At: t0}), SetPrimary{Epoch: 3, Primary: "c", FirstSeqno: 150, Automatic: true, Reason: "b unreachable", At: t0.Add(time.Minute)}, "", ""},
		{"manual inside anti-flap window", failedOver, SetPrimary{Epoch: 3, Primary: "c", FirstSeqno: 150, At: t0.Add(time.Minute)}, "", ""},

		// Degraded marker.
		{"mark degraded", degradable, MarkDegraded{AsyncSince: 101, Reason: "b down", At: t0}, "", ""},
		{"mark degraded under strict", base, MarkDegraded{AsyncSince: 101, Reason: "b down", At: t0}, "policy", `policy="strict"`},
		{"mark degraded twice", degraded, MarkDegraded{AsyncSince: 105, Reason: "again", At: t0}, "degraded", "already degraded since seqno 101"},
		{"mark degraded seqno zero", degradable, MarkDegraded{Reason: "b down", At: t0}, "async_since", "async_since=0"},
		{"mark degraded without reason", degradable, MarkDegraded{AsyncSince: 101, At: t0}, "reason", `reason=""`},
		{"clear degraded", degraded, ClearDegraded{}, "", ""},
		{"clear when not degraded", base, ClearDegraded{}, "degraded", "not degraded"},

		// Commit index.
		{"commit index forward", base, RecordCommitIndex{150}, "", ""},
		{"commit index same", base, RecordCommitIndex{100}, "", ""},
		{"commit index backwards", base, RecordCommitIndex{99}, "seqno", "seqno=99: is below the recorded commit index 100"},

		// Failover record.
		{"record failover", base, RecordFailover{At: t0, Epoch: 1, To: "a", Reason: "x"}, "", ""},
		{"record failover future epoch", base, RecordFailover{At: t0, Epoch: 2, To: "a", Reason: "x"}, "epoch", "epoch=2"},
		{"record failover unknown member", base, RecordFailover{At: t0, Epoch: 1, To: "zz", Reason: "x"}, "to", `"zz"`},
		{"acknowledge", failedOver, AcknowledgeFailover{By: "ops", At: t0}, "", ""},
		{"acknowledge nothing", base, AcknowledgeFailover{By: "ops", At: t0}, "last_failover", "no automatic failover"},
		{"acknowledge anonymously", failedOver, AcknowledgeFailover{At: t0}, "by", `by=""`},

		// Settings.
		{"set settings", base, SetSettings{FailoverTimeout: dur(5 * time.Second)}, "", ""},
		{"set nothing", base, SetSettings{}, "settings", "nothing to set"},
		{"zero failover timeout", base, SetSettings{FailoverTimeout: dur(0)}, "failover_timeout", "failover_timeout=0s"},
		{"negative anti-flap window", base, SetSettings{AntiFlapWindow: dur(-time.Second)}, "anti_flap_window", "anti_flap_window=-1s"},
		{"anti-flap window too long", base, SetSettings{AntiFlapWindow: dur(MaxAntiFlapWindow + time.Second)}, "anti_flap_window", "longer than"},
		{"failover timeout too long", base, SetSettings{FailoverTimeout: dur(MaxFailoverTimeout + 1)}, "failover_timeout", "longer than"},

		{"nil command", base, nil, "type", "nil command"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before, _ := json.Marshal(tt.state)
			next, err := tt.state.Apply(tt.cmd)
			after, _ := json.Marshal(tt.state)
			if string(before) != string(after) {
				t.Fatalf("Apply changed its receiver:\nbefore %s\nafter  %s", before, after)
			}
			if verr := tt.state.Validate(tt.cmd); (verr == nil) != (err == nil) {
				t.Fatalf("Validate = %v but Apply = %v", verr, err)
			}
			if tt.field == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				if err := next.Check(); err != nil {
					t.Fatalf("result breaks an invariant: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("no error, want one on field %s", tt.field)
			}
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("error %v is %T, not *ValidationError", err, err)
			}
			if ve.Field != tt.field {
				t.Errorf("field = %q, want %q (error: %v)", ve.Field, tt.field, err)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error does not wrap ErrInvalid")
			}
			if !strings.Contains(err.Error(), tt.field) || !strings.Contains(err.Error(), tt.value) {
				t.Errorf("error %q should name field %q and contain %q", err, tt.field, tt.value)
			}
			if tt.cmd != nil && !strings.Contains(err.Error(), string(tt.cmd.Type())) {
				t.Errorf("error %q should name the command type %q", err, tt.cmd.Type())
			}
			if !reflect.DeepEqual(next, tt.state) {
				t.Errorf("failed Apply returned a changed state")
			}
		})
	}
}

func TestApplyEffects(t *testing.T) {
	s := baseState(t)
	if got, want := s.Members[0].ID+s.Members[1].ID+s.Members[2].ID+s.Members[3].ID, "abcd"; got != want {
		t.Fatalf("members order %q, want %q", got, want)
	}
	if !reflect.DeepEqual(s.SyncSet, []string{"b", "c"}) {
		t.Fatalf("sync set %q, want sorted [b c]", s.SyncSet)
	}

	// A promotion without a sync set drops the new primary from the old one
	// and records the epoch; an automatic one records the failover.
	s = mustApply(t, s, SetPrimary{Epoch: 2, Primary: "b", FirstSeqno: 120, Automatic: true, Reason: "a down", At: t0})
	if s.Epoch != 2 || s.Primary != "b" {
		t.Fatalf("epoch %d primary %q", s.Epoch, s.Primary)
	}
	if !reflect.DeepEqual(s.SyncSet, []string{"c"}) {
		t.Fatalf("sync set %q, want [c]", s.SyncSet)
	}
	wantHist := []EpochEntry{{Epoch: 1, Primary: "a", FirstSeqno: 1},
		{Epoch: 2, Primary: "b", FirstSeqno: 120, At: t0, Automatic: true, Reason: "a down"}}
	if !reflect.DeepEqual(s.EpochHistory, wantHist) {
		t.Fatalf("history %+v, want %+v", s.EpochHistory, wantHist)
	}
	wantFo := &Failover{At: t0, Epoch: 2, From: "a", To: "b", Reason: "a down"}
	if !reflect.DeepEqual(s.LastFailover, wantFo) {
		t.Fatalf("last failover %+v, want %+v", s.LastFailover, wantFo)
	}
	if err := s.AutomaticFailoverAllowed(t0.Add(time.Minute)); err == nil || !strings.Contains(err.Error(), "unacknowledged") {
		t.Fatalf("AutomaticFailoverAllowed inside window = %v", err)
	}
	if err := s.AutomaticFailoverAllowed(t0.Add(DefaultAntiFlapWindow)); err != nil {
		t.Fatalf("AutomaticFailoverAllowed at window end = %v", err)
	}
	s = mustApply(t, s, AcknowledgeFailover{By: "ops", At: t0.Add(time.Second)})
	if !s.LastFailover.Acknowledged || s.LastFailover.AcknowledgedBy != "ops" {
		t.Fatalf("acknowledge not recorded: %+v", s.LastFailover)
	}
	if err := s.AutomaticFailoverAllowed(t0.Add(time.Minute)); err != nil {
		t.Fatalf("AutomaticFailoverAllowed after ack = %v", err)
	}
	s = mustApply(t, s, SetSettings{AntiFlapWindow: dur(time.Minute)})
	if s.Settings.AntiFlapWindow != time.Minute || s.Settings.FailoverTimeout != DefaultFailoverTimeout {
		t.Fatalf("settings %+v", s.Settings)
	}
}

// Times with a monotonic reading and a zone are stored normalized, so that a
// state compares equal after a JSON round trip.
func TestTimesNormalized(t *testing.T) {
	s := mustApply(t, baseState(t), SetPolicy{PolicyDegrade},
		MarkDegraded{AsyncSince: 101, Reason: "x", At: time.Now().In(time.FixedZone("X", 3600))})
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var back State
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, s) {
		t.Fatalf("JSON round trip differs:\n%+v\n%+v", back, s)
	}
}

func TestClone(t *testing.T) {
	s := mustApply(t, baseState(t), SetPolicy{PolicyDegrade}, MarkDegraded{AsyncSince: 5, Reason: "x", At: t0},
		RecordFailover{At: t0, Epoch: 1, To: "a", Reason: "x"})
	c := s.Clone()
	if !reflect.DeepEqual(c, s) {
		t.Fatal("clone differs")
	}
	c.Members[0].Priority = 99
	c.SyncSet[0] = "zz"
	c.EpochHistory[0].Primary = "zz"
	c.Degraded.Reason = "changed"
	c.LastFailover.To = "zz"
	if s.Members[0].Priority == 99 || s.SyncSet[0] == "zz" || s.EpochHistory[0].Primary == "zz" ||
		s.Degraded.Reason == "changed" || s.LastFailover.To == "zz" {
		t.Fatal("changing the clone changed the original")
	}
}

// allCommands returns one valid-looking value of every command type.
func allCommands() []Command {
	return []Command{
		AddMember{member("e", 5)},
		UpdateMember{member("b", 7)},
		RemoveMember{"d"},
		SetK{2},
		SetPolicy{PolicyDegrade},
		SetSyncSet{Members: []string{"b", "d"}},
		SetPrimary{Epoch: 2, Primary: "b", FirstSeqno: 101, SyncSet: []string{"c"}, AcceptLoss: true, Automatic: true, Reason: "r", At: t0,
			By: "m1", Certificate: &Certificate{CommitIndex: 100, CommitIndexFrom: "c", PrimarySeqno: 100, PrimaryEpoch: 1,
				Positions: map[string]Position{"b": {1, 100}}, LossPossibleSince: 90}},
		MarkDegraded{AsyncSince: 3, Reason: "r", At: t0},
		ClearDegraded{},
		RecordCommitIndex{7},
		RecordFailover{At: t0, Epoch: 1, From: "a", To: "b", Reason: "r"},
		AcknowledgeFailover{By: "ops", At: t0},
		SetSettings{FailoverTimeout: dur(time.Second), AntiFlapWindow: dur(time.Minute)},
		RevokeCertificate{RevokedCert{Serial: "abc", Name: "db2", Reason: "r", By: "operator/ops", At: t0}},
		RecordDecision{Decision: Decision{At: t0, Kind: DecisionRefusal, Epoch: 1, Node: "a", By: "m1", Reason: "r"}},
	}
}

func TestEncodeDecodeRoundTrip(t *testing.T) {
	seen := map[CommandType]bool{}
	for _, c := range allCommands() {
		b, err := Encode(c)
		if err != nil {
			t.Fatalf("encode %T: %v", c, err)
		}
		got, err := Decode(b)
		if err != nil {
			t.Fatalf("decode %s: %v", b, err)
		}
		if !reflect.DeepEqual(got, c) {
			t.Errorf("round trip of %T:\n got %#v\nwant %#v", c, got, c)
		}
		seen[c.Type()] = true
	}
	for typ := range decoders {
		if !seen[typ] {
			t.Errorf("command type %s not covered", typ)
		}
	}
}

func TestDecodeErrors(t *testing.T) {
	tests := []struct {
		name, in, field, value string
	}{
		{"unknown version", `{"version":3,"type":"set_k","payload":{"k":1}}`, "version", "version=3"},
		{"version zero", `{"type":"set_k","payload":{"k":1}}`, "version", "version=0"},
		{"unknown type", `{"version":1,"type":"set_q","payload":{}}`, "type", `type="set_q"`},
		{"unknown payload field", `{"version":1,"type":"set_k","payload":{"k":1,"kk":2}}`, "payload", `unknown field "kk"`},
		{"wrong payload type", `{"version":1,"type":"set_k","payload":{"k":"two"}}`, "payload", "two"},
		{"unknown envelope field", `{"version":1,"type":"set_k","payload":{},"extra":1}`, "envelope", "extra"},
		{"not json", `set k 2`, "envelope", "set k 2"},
		{"trailing data", `{"version":1,"type":"set_k","payload":{}} {}`, "envelope", "trailing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Decode([]byte(tt.in))
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("Decode error %v (%T), want *ValidationError", err, err)
			}
			if ve.Field != tt.field || !strings.Contains(err.Error(), tt.value) {
				t.Errorf("error %q: field %q, want field %q and text %q", err, ve.Field, tt.field, tt.value)
			}
		})
	}
}

// randomCommand draws a command from small domains so that both valid and
// invalid ones are common.
func randomCommand(r *rand.Rand, s State) Command {
	ids := []string{"a", "b", "c", "d", "e", ""}
	id := func() string { return ids[r.IntN(len(ids))] }
	var some []string
	for range r.IntN(4) {
		some = append(some, id())
	}
	n := r.IntN(5) + 1
	switch r.IntN(13) {
	case 0:
		m := member(id(), n)
		m.MayBePrimary = r.IntN(4) != 0
		return AddMember{m}
	case 1:
		m := member(id(), n)
		m.MayBePrimary = r.IntN(4) != 0
		return UpdateMember{m}
	case 2:
		return RemoveMember{id()}
	case 3:
		return SetK{r.IntN(6) - 1}
	case 4:
		return SetPolicy{[]Policy{PolicyStrict, PolicyDegrade, "x"}[r.IntN(3)]}
	case 5:
		return SetSyncSet{Members: some}
	case 6:
		var set []string
		if r.IntN(2) == 0 {
			set = some
		}
		epoch := uint64(r.IntN(6))
		if r.IntN(2) == 0 {
			epoch = s.Epoch + 1
		}
		return SetPrimary{Epoch: epoch, Primary: id(), FirstSeqno: s.CommitIndex + uint64(r.IntN(20)), SyncSet: set,
			AcceptLoss: r.IntN(3) == 0, Automatic: r.IntN(2) == 0, Reason: "r", At: t0.Add(time.Duration(r.IntN(300)) * time.Minute)}
	case 7:
		return MarkDegraded{AsyncSince: uint64(r.IntN(300)), Reason: "r", At: t0}
	case 8:
		return ClearDegraded{}
	case 9:
		return RecordCommitIndex{max(s.CommitIndex+uint64(r.IntN(20)), 3) - 3}
	case 10:
		return RecordFailover{At: t0, Epoch: uint64(r.IntN(4)), To: id(), Reason: "r"}
	case 11:
		return AcknowledgeFailover{By: id(), At: t0}
	default:
		return SetSettings{FailoverTimeout: dur(time.Duration(r.IntN(3)-1) * time.Second)}
	}
}

// TestRandomCommands applies long random command sequences: every state
// reached passes Check, a refused command changes nothing, and applying the
// encoded command through the FSM gives the same result.
func TestRandomCommands(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	f := NewFSM(nil)
	s := NewState()
	applied, refused := 0, 0
	for i := range 5000 {
		cmd := randomCommand(r, s)
		before := s.Clone()
		next, err := s.Apply(cmd)
		if !reflect.DeepEqual(s, before) {
			t.Fatalf("step %d: Apply changed its receiver", i)
		}
		b, encErr := Encode(cmd)
		if encErr != nil {
			t.Fatalf("step %d: encode: %v", i, encErr)
		}
		resp := f.Apply(rlog(uint64(i+1), b))
		if err != nil {
			refused++
			if !reflect.DeepEqual(next, s) {
				t.Fatalf("step %d: refused %T returned a changed state", i, cmd)
			}
			if rerr, ok := resp.(error); !ok || rerr.Error() != err.Error() {
				t.Fatalf("step %d: FSM response %v, want error %v", i, resp, err)
			}
		} else {
			applied++
			if err := next.Check(); err != nil {
				t.Fatalf("step %d: %T led to an inconsistent state: %v", i, cmd, err)
			}
			s = next
		}
		if got := f.State(); !reflect.DeepEqual(got, s) {
			t.Fatalf("step %d: FSM state differs from State.Apply:\n%+v\n%+v", i, got, s)
		}
	}
	t.Logf("%d applied, %d refused; final epoch %d, commit index %d, %d members", applied, refused, s.Epoch, s.CommitIndex, len(s.Members))
	if applied < 500 || refused < 500 || s.Epoch < 20 {
		t.Fatalf("generator is lopsided: %d applied, %d refused", applied, refused)
	}
}

func TestMaxMembers(t *testing.T) {
	s := NewState()
	for i := range MaxMembers {
		s = mustApply(t, s, AddMember{member(fmt.Sprintf("n%d", i), i+1)})
	}
	_, err := s.Apply(AddMember{member("one-more", MaxMembers+1)})
	if err == nil || !strings.Contains(err.Error(), "at most 64") {
		t.Fatalf("member %d: %v", MaxMembers+1, err)
	}
}
