package binlog

import (
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/quire-ha/quire/txlog"
)

func TestPositionCompare(t *testing.T) {
	tests := []struct {
		a, b Position
		want int
	}{
		{Position{"binlog.000001", 4}, Position{"binlog.000001", 4}, 0},
		{Position{"binlog.000001", 4}, Position{"binlog.000001", 5}, -1},
		{Position{"binlog.000002", 4}, Position{"binlog.000001", 999}, 1},
		{Position{"binlog.999999", 4}, Position{"binlog.1000000", 4}, -1},
		{Position{"a.000001", 4}, Position{"b.000001", 4}, -1},
		{Position{"binlog", 4}, Position{"binlog.000001", 4}, -1},
		{Position{}, Position{"binlog.000001", 4}, -1},
	}
	for _, tc := range tests {
		if got := tc.a.Compare(tc.b); got != tc.want {
			t.Errorf("%s vs %s = %d, want %d", tc.a, tc.b, got, tc.want)
		}
		if got := tc.b.Compare(tc.a); got != -tc.want {
			t.Errorf("%s vs %s = %d, want %d", tc.b, tc.a, got, -tc.want)
		}
	}
}

func TestPositionValidate(t *testing.T) {
	for _, p := range []Position{{"", 4}, {"../binlog.000001", 4}, {"binlog.000001", 3}, {"binlog.000001", 1 << 32}, {"a\x00b", 4}} {
		if err := p.validate(); !errors.Is(err, ErrConfig) {
			t.Errorf("%q: error %v, want ErrConfig", p, err)
		}
	}
	if err := (Position{"binlog.000001", 4}).validate(); err != nil {
		t.Error(err)
	}
	for s, ok := range map[string]bool{"0-1-5": true, "0-1-5,1-2-9": true, "": false, "0-1": false, "0-1-5'; DROP": false, "0-1-5,": false} {
		if err := validateGTIDState(s); (err == nil) != ok {
			t.Errorf("validateGTIDState(%q) = %v", s, err)
		}
	}
}

func TestBackoff(t *testing.T) {
	lo, hi := 100*time.Millisecond, 5*time.Second
	tests := []struct {
		n    int
		u    float64
		want time.Duration
	}{
		{0, 0.5, 0},
		{1, 0, 50 * time.Millisecond},
		{1, 0.999999, 100 * time.Millisecond},
		{2, 0, 100 * time.Millisecond},
		{3, 0.5, 300 * time.Millisecond},
		{7, 0, 2500 * time.Millisecond}, // 6.4 s capped at 5 s
		{1000, 1, 5 * time.Second},      // no overflow
	}
	for _, tc := range tests {
		got := backoff(tc.n, lo, hi, tc.u)
		if d := got - tc.want; d < -time.Microsecond || d > time.Microsecond {
			t.Errorf("backoff(%d, u=%v) = %s, want %s", tc.n, tc.u, got, tc.want)
		}
	}
	// Exhaustive bounds: every wait lies in [d/2, d] for d = min(lo·2^(n-1), hi).
	for n := 1; n < 70; n++ {
		d := lo
		for i := 1; i < n && d < hi; i++ {
			d *= 2
		}
		d = min(d, hi)
		for _, u := range []float64{0, 0.25, 0.5, 0.75, 0.999} {
			if got := backoff(n, lo, hi, u); got < d/2 || got > d {
				t.Fatalf("backoff(%d, %v) = %s outside [%s, %s]", n, u, got, d/2, d)
			}
		}
	}
}

func TestConfigDefaults(t *testing.T) {
	ok := Config{Addr: "127.0.0.1:3306", User: "quire", ServerID: 7}
	c, err := ok.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if c.HeartbeatPeriod != time.Second || c.DeadAfter != 2*time.Second || c.MaxTxSize != 1<<30 || c.Logger == nil {
		t.Errorf("defaults: %+v", c)
	}
	bad := map[string]func(*Config){
		"Addr":            func(c *Config) { c.Addr = "" },
		"User":            func(c *Config) { c.User = "" },
		"ServerID":        func(c *Config) { c.ServerID = 0 },
		"HeartbeatPeriod": func(c *Config) { c.HeartbeatPeriod = time.Microsecond },
		"DeadAfter":       func(c *Config) { c.HeartbeatPeriod, c.DeadAfter = time.Second, time.Millisecond },
		"ReconnectMin":    func(c *Config) { c.ReconnectMin, c.ReconnectMax = time.Second, time.Millisecond },
		"MaxTxSize":       func(c *Config) { c.MaxTxSize = -1 },
		"ReportHost":      func(c *Config) { c.ReportHost = strings.Repeat("h", 256) },
	}
	for key, mutate := range bad {
		c := ok
		mutate(&c)
		if _, err := c.withDefaults(); !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), key) {
			t.Errorf("bad %s: error %v, want ErrConfig naming %s", key, err, key)
		}
	}
}

func TestResumeValidate(t *testing.T) {
	p := func(f string, n uint64) Position { return Position{f, n} }
	tests := []struct {
		r  Resume
		ok bool
	}{
		{Resume{Position: p("binlog.000001", 4)}, true},
		{Resume{GTIDState: "0-1-5"}, true},
		{Resume{}, false},
		{Resume{GTIDState: "0-1-5", Acked: p("binlog.000001", 4)}, false},
		{Resume{Position: p("binlog.000002", 400), Acked: p("binlog.000001", 900)}, true},
		{Resume{Position: p("binlog.000001", 400), Acked: p("binlog.000001", 900)}, false},
		{Resume{Position: p("binlog.000001", 2)}, false},
	}
	for _, tc := range tests {
		if err := tc.r.validate(); (err == nil) != tc.ok {
			t.Errorf("%+v: %v", tc.r, err)
		}
	}
}

// testSource is a Source without a connection, for the numbering logic.
func testSource(semi bool, r Resume) *Source {
	s := &Source{cfg: Config{Epoch: 3, SemiSync: semi, Logger: slog.New(slog.DiscardHandler)}, resume: r,
		seqno: r.Seqno, last: r.Position, lastGTID: r.GTID, acked: r.Acked, closeCh: make(chan struct{})}
	if s.acked.IsZero() && semi {
		s.acked = r.Position
	}
	return s
}

func rec(gtid string, file string, pos uint64) *txlog.Record {
	return &txlog.Record{GTID: gtid, SourceFile: file, SourcePos: pos}
}

func TestAdmit(t *testing.T) {
	f := "binlog.000001"
	type in struct {
		r  *txlog.Record
		ok bool // numbered (true) or dropped (false)
	}
	tests := []struct {
		name   string
		resume Resume
		synced bool
		recs   []in
		err    error
	}{
		{"dump at the last record", Resume{Seqno: 10, GTID: "0-1-10", Position: Position{f, 1000}}, true,
			[]in{{rec("0-1-11", f, 1100), true}, {rec("0-1-12", f, 1200), true}}, nil},
		{"dump from an earlier ack drops what was numbered", Resume{Seqno: 10, GTID: "0-1-10", Position: Position{f, 1000}}, false,
			[]in{{rec("0-1-9", f, 900), false}, {rec("0-1-10", f, 1000), false}, {rec("0-1-11", f, 1100), true}}, nil},
		{"another transaction at the last position", Resume{Seqno: 10, GTID: "0-1-10", Position: Position{f, 1000}}, false,
			[]in{{rec("0-1-9", f, 900), false}, {rec("0-2-10", f, 1000), false}}, ErrDiverged},
		{"no transaction ends at the last position", Resume{Seqno: 10, Position: Position{f, 1000}}, false,
			[]in{{rec("0-1-9", f, 900), false}, {rec("0-1-11", f, 1100), false}}, ErrDiverged},
		{"GTID start numbers from the first", Resume{Seqno: 4, GTIDState: "0-1-4"}, true,
			[]in{{rec("0-1-5", f, 500), true}, {rec("0-1-6", f, 600), true}}, nil},
		{"next file", Resume{Seqno: 1, Position: Position{f, 1000}}, true,
			[]in{{rec("0-1-2", "binlog.000002", 400), true}}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := testSource(false, tc.resume)
			s.synced = tc.synced
			want := tc.resume.Seqno
			for i, x := range tc.recs {
				ok, err := s.admit(x.r)
				if err != nil {
					if i != len(tc.recs)-1 || !errors.Is(err, tc.err) {
						t.Fatalf("record %d: %v", i, err)
					}
					return
				}
				if ok != x.ok {
					t.Fatalf("record %d (%s): numbered %v, want %v", i, x.r.GTID, ok, x.ok)
				}
				if ok {
					want++
					if x.r.Seqno != want || x.r.Epoch != 3 {
						t.Fatalf("record %d: seqno %d epoch %d, want %d 3", i, x.r.Seqno, x.r.Epoch, want)
					}
				}
			}
			if tc.err != nil {
				t.Fatalf("no error, want %v", tc.err)
			}
		})
	}
}

func TestDumpStart(t *testing.T) {
	f := "binlog.000001"
	p := func(n uint64) Position { return Position{f, n} }
	tests := []struct {
		name   string
		semi   bool
		resume Resume
		acks   []Position
		emit   []Position
		from   Position
		state  string
		synced bool
	}{
		{"plain: last record", false, Resume{Position: p(100)}, nil, []Position{p(200)}, p(200), "", true},
		{"plain: GTID until a record", false, Resume{GTIDState: "0-1-5"}, nil, nil, Position{}, "0-1-5", true},
		{"semi: resume position is acknowledged", true, Resume{Position: p(100)}, nil, []Position{p(200)}, p(100), "", false},
		{"semi: resume with acked", true, Resume{Position: p(300), Acked: p(100)}, nil, nil, p(100), "", false},
		{"semi: last ack", true, Resume{Position: p(100)}, []Position{p(200)}, []Position{p(200), p(300)}, p(200), "", false},
		{"semi: all acked", true, Resume{Position: p(100)}, []Position{p(300)}, []Position{p(200), p(300)}, p(300), "", true},
		{"semi: GTID start, nothing acked", true, Resume{GTIDState: "0-1-5"}, nil, []Position{p(200)}, Position{}, "0-1-5", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := testSource(tc.semi, tc.resume)
			s.synced = true
			for i, e := range tc.emit {
				if ok, err := s.admit(rec("0-1-"+string(rune('a'+i)), e.File, e.Pos)); !ok || err != nil {
					t.Fatalf("admit %s: %v %v", e, ok, err)
				}
			}
			for _, a := range tc.acks {
				if err := s.Ack(a.File, a.Pos); err != nil {
					t.Fatal(err)
				}
			}
			from, state, synced := s.dumpStart()
			if from != tc.from || state != tc.state || synced != tc.synced {
				t.Errorf("dumpStart = %s %q %v, want %s %q %v", from, state, synced, tc.from, tc.state, tc.synced)
			}
		})
	}
}

func TestSourceAckChecks(t *testing.T) {
	f := "binlog.000001"
	s := testSource(true, Resume{Seqno: 1, Position: Position{f, 500}, Acked: Position{f, 200}})
	if err := s.Ack(f, 600); !errors.Is(err, ErrConfig) {
		t.Errorf("ack past the last record: %v", err)
	}
	if err := s.Ack(f, 300); err != nil || s.acked != (Position{f, 300}) {
		t.Errorf("ack 300: %v, acked %s", err, s.acked)
	}
	if err := s.Ack(f, 250); err != nil || s.acked != (Position{f, 300}) {
		t.Errorf("older ack: %v, acked %s", err, s.acked)
	}
	if err := s.Ack("", 300); !errors.Is(err, ErrConfig) {
		t.Errorf("ack without file: %v", err)
	}
	plain := testSource(false, Resume{Position: Position{f, 500}})
	if err := plain.Ack(f, 500); !errors.Is(err, ErrConfig) {
		t.Errorf("ack without semi-sync: %v", err)
	}
	s.Close()
	if err := s.Ack(f, 400); !errors.Is(err, ErrClosed) {
		t.Errorf("ack after close: %v", err)
	}
}
