package main

import (
	"slices"
	"strings"
	"testing"
	"time"
)

// sample is sysbench 1.0.20's output for a short run with --histogram=on
// and --percentile=95 (the histogram shortened to five buckets).
const sample = `sysbench 1.0.20 (using system LuaJIT 2.1.0-beta3)

Running the test with following options:
Number of threads: 1
Initializing random number generator from current time


Initializing worker threads...

Threads started!

Latency histogram (values are in milliseconds)
       value  ------------- distribution ------------- count
       0.432 |*                                        5
       0.440 |******                                   28
       1.030 |****************************************116
       9.560 |                                         1
      12.301 |                                         1
 
SQL statistics:
    queries performed:
        read:                            0
        write:                           604
        other:                           302
        total:                           906
    transactions:                        151    (75.32 per sec.)
    queries:                             906    (451.92 per sec.)
    ignored errors:                      2      (1.00 per sec.)
    reconnects:                          0      (0.00 per sec.)

General statistics:
    total time:                          2.0020s
    total number of events:              151

Latency (ms):
         min:                                    0.43
         avg:                                    0.66
         max:                                   12.34
         95th percentile:                        1.03
         sum:                                 1996.37

Threads fairness:
    events (avg/stddev):           151.0000/0.00
    execution time (avg/stddev):   1.9964/0.00
`

func TestParseSysbench(t *testing.T) {
	r, err := parseSysbench([]byte(sample))
	if err != nil {
		t.Fatal(err)
	}
	if r.transactions != 151 || r.tps != 75.32 || r.errors != 2 || r.reconnects != 0 {
		t.Errorf("transactions %d, tps %v, errors %d, reconnects %d; want 151, 75.32, 2, 0", r.transactions, r.tps, r.errors, r.reconnects)
	}
	if r.seconds != 2.002 || r.avgMS != 0.66 || r.p95MS != 1.03 {
		t.Errorf("total time %v, avg %v, p95 %v; want 2.002, 0.66, 1.03", r.seconds, r.avgMS, r.p95MS)
	}
	want := histogram{0.432: 5, 0.440: 28, 1.030: 116, 9.560: 1, 12.301: 1}
	if len(r.hist) != len(want) {
		t.Fatalf("histogram %v, want %v", r.hist, want)
	}
	for v, n := range want {
		if r.hist[v] != n {
			t.Errorf("histogram bucket %v: %d, want %d", v, r.hist[v], n)
		}
	}
	// The histogram's own percentile agrees with sysbench's.
	if got := r.hist.percentile(95); got != r.p95MS {
		t.Errorf("histogram p95 %v, sysbench says %v", got, r.p95MS)
	}
}

func TestParseSysbenchErrors(t *testing.T) {
	for _, tc := range []struct {
		name, out, want string
	}{
		{"empty", "", "no transactions, ignored errors, total time, avg, 95th percentile, histogram"},
		{"no histogram", strings.Replace(sample, "Latency histogram", "Something else", 1), "no histogram"},
		{"no percentile", strings.Replace(sample, "95th percentile", "99th percentile", 1), "no 95th percentile"},
		{"histogram short", strings.Replace(sample, "116\n", "115\n", 1), "the latency histogram counts 150 transactions, the summary 151"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseSysbench([]byte(tc.out))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestHistogramPercentile(t *testing.T) {
	h := histogram{1: 50, 2: 45, 3: 4, 10: 1}
	for _, tc := range []struct {
		p    float64
		want float64
	}{
		{1, 1}, {50, 1}, {50.5, 2}, {95, 2}, {96, 3}, {99, 3}, {99.5, 10}, {100, 10},
	} {
		if got := h.percentile(tc.p); got != tc.want {
			t.Errorf("p%v = %v, want %v", tc.p, got, tc.want)
		}
	}
	if got := (histogram{}).percentile(95); got != 0 {
		t.Errorf("empty histogram p95 = %v, want 0", got)
	}
	if got := h.mean(); got != (50+90+12+10)/100.0 {
		t.Errorf("mean %v, want 1.62", got)
	}
}

func TestHistogramAdd(t *testing.T) {
	// Two clients' histograms merge exactly: the merged p95 is that of all
	// transactions, not the mean or maximum of the clients' p95s.
	a := histogram{1: 90, 5: 10}  // p95 5
	b := histogram{1: 100, 20: 0} // p95 1
	m := histogram{}
	m.add(a)
	m.add(b)
	if m.total() != 200 || m[1] != 190 || m[5] != 10 {
		t.Fatalf("merged %v", m)
	}
	if got := m.percentile(95); got != 1 {
		t.Errorf("merged p95 %v, want 1 (190 of 200 are 1 ms)", got)
	}
}

func TestParseModes(t *testing.T) {
	for _, tc := range []struct {
		in, want, err string
	}{
		{in: "A,B,C,D", want: "A B C D"},
		{in: " c , a ", want: "C A"},
		{in: "B-io,b-FSYNC", want: "B-io B-fsync"},
		{in: "A,E", err: `unknown mode "E"`},
		{in: "A,a", err: "mode A is listed twice"},
		{in: " , ", err: "no mode given"},
	} {
		got, err := parseModes(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("parseModes(%q) error %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("parseModes(%q): %v", tc.in, err)
			continue
		}
		var names []string
		for _, m := range got {
			names = append(names, m.name)
		}
		if s := strings.Join(names, " "); s != tc.want {
			t.Errorf("parseModes(%q) = %s, want %s", tc.in, s, tc.want)
		}
	}
}

// TestModeSettings checks the promise the comparison rests on: the primary
// has the same semi-sync settings whether MariaDB's replicas or Quire's
// agent send the ACK, and only the native semi-sync modes make the
// replicas semi-sync clients.
func TestModeSettings(t *testing.T) {
	byName := map[string]mode{}
	for _, m := range modes {
		byName[m.name] = m
	}
	primary := func(n string) string { return strings.Join(byName[n].settings(0), ";") }
	replica := func(n string) string { return strings.Join(byName[n].settings(1), ";") }
	if primary("A") != "" {
		t.Errorf("async primary settings %q, want none", primary("A"))
	}
	for _, n := range []string{"C", "D", "B-io", "B-fsync"} {
		if primary(n) != primary("B") {
			t.Errorf("mode %s primary settings %q differ from B's %q", n, primary(n), primary("B"))
		}
	}
	for n, want := range map[string]string{
		"A":       "read_only=ON",
		"B":       "read_only=ON;rpl_semi_sync_slave_enabled=ON",
		"B-io":    "read_only=ON;rpl_semi_sync_slave_enabled=ON",
		"B-fsync": "read_only=ON;rpl_semi_sync_slave_enabled=ON;sync_relay_log=1;sync_master_info=1",
		"C":       "read_only=ON",
		"D":       "read_only=ON",
	} {
		if got := replica(n); got != want {
			t.Errorf("mode %s replica settings %q, want %q", n, got, want)
		}
	}
}

func TestParseGTIDPos(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want uint64
		err  bool
	}{
		{"", 0, false}, {"0-101-42", 42, false}, {"0-101-1,1-102-3", 0, true}, {"0-101", 0, true}, {"0-101-x", 0, true},
	} {
		got, err := parseGTIDPos(tc.in)
		if got != tc.want || (err != nil) != tc.err {
			t.Errorf("parseGTIDPos(%q) = %d, %v; want %d, error %v", tc.in, got, err, tc.want, tc.err)
		}
	}
}

func TestShipDelays(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		var out []time.Duration
		for _, x := range v {
			out = append(out, time.Duration(x)*time.Millisecond)
		}
		return out
	}
	// Seqnos 11..13; replica r2 has not seen 13.
	p := &durableWatch{from: 10, at: ms(0, 10, 20)}
	r1 := &durableWatch{from: 10, at: ms(5, 12, 30)}
	r2 := &durableWatch{from: 10, at: ms(3, 18)}
	if got, want := shipDelays(p, []*durableWatch{r1, r2}, 1, 11, 13), ms(3, 2, 10); !slices.Equal(got, want) {
		t.Errorf("K=1: %v, want %v", got, want)
	}
	if got, want := shipDelays(p, []*durableWatch{r1, r2}, 2, 11, 13), ms(5, 8); !slices.Equal(got, want) {
		t.Errorf("K=2: %v, want %v (seqno 13 is on one replica only)", got, want)
	}
	if got := shipDelays(p, []*durableWatch{r1, r2}, 3, 11, 13); got != nil {
		t.Errorf("K=3 of 2 replicas: %v, want none", got)
	}
	d := durations(ms(1, 2, 3, 10))
	if d.mean() != 4*time.Millisecond || d.percentile(50) != 2*time.Millisecond || d.percentile(95) != 10*time.Millisecond {
		t.Errorf("mean %v p50 %v p95 %v", d.mean(), d.percentile(50), d.percentile(95))
	}
}

func TestParseSplit(t *testing.T) {
	for _, tc := range []struct {
		in      string
		on      bool
		own     int
		wantErr string
	}{
		{in: "", on: false},
		{in: agentsOnPrimary, on: true, own: 0},
		{in: agentsOnReplicas, on: true, own: 1},
		{in: "replicas", wantErr: `-split-cpus "replicas": want agents-on-primary or agents-on-replicas`},
	} {
		c, err := parseSplit(tc.in)
		if tc.wantErr != "" {
			if err == nil || err.Error() != tc.wantErr {
				t.Errorf("parseSplit(%q): error %v, want %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Skipf("parseSplit(%q): %v (machine without 2 CPUs or taskset)", tc.in, err)
		}
		if c.on != tc.on || (c.on && (c.own != tc.own || c.primary != 0 || c.replica != 1)) {
			t.Errorf("parseSplit(%q) = %+v", tc.in, c)
		}
		prog, args := c.command(1, "/usr/sbin/mariadbd", "--x")
		if want := map[bool]string{true: "taskset", false: "/usr/sbin/mariadbd"}[c.on]; prog != want {
			t.Errorf("parseSplit(%q).command runs %s %v, want %s", tc.in, prog, args, want)
		}
	}
}
