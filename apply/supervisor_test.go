package apply

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func TestRetryAfter(t *testing.T) {
	guard := fmt.Errorf("apply: channel 2: %w", ErrGuard)
	drain := fmt.Errorf("apply: the channel count changed: %w", ErrDrainFirst)
	other := errors.New("apply: connect: connection refused")
	for _, tc := range []struct {
		name         string
		err          error
		ran, backoff time.Duration
		wait, next   time.Duration
		wantRefused  bool
	}{
		{"first error", other, time.Second, minBackoff, minBackoff, 2 * minBackoff, false},
		{"doubles", other, time.Second, 800 * time.Millisecond, 800 * time.Millisecond, 1600 * time.Millisecond, false},
		{"capped", other, time.Second, maxBackoff, maxBackoff, maxBackoff, false},
		{"a long run resets", other, longRun + time.Second, maxBackoff, minBackoff, 2 * minBackoff, false},
		{"a guard resumes at once", guard, time.Second, 5 * time.Second, minBackoff, 2 * minBackoff, false},
		{"drain first: stay stopped", drain, time.Second, 5 * time.Second, 0, minBackoff, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wait, next, refused := retryAfter(tc.err, tc.ran, tc.backoff)
			if wait != tc.wait || next != tc.next || refused != tc.wantRefused {
				t.Fatalf("retryAfter(%v, %s, %s) = %s, %s, %v; want %s, %s, %v", tc.err, tc.ran, tc.backoff, wait, next, refused, tc.wait, tc.next, tc.wantRefused)
			}
		})
	}
}

func TestRecordRetryDelay(t *testing.T) {
	for n, want := range map[int]time.Duration{1: 2 * time.Second, 2: 4 * time.Second, 5: 32 * time.Second, 6: time.Minute, 40: time.Minute} {
		if got := recordRetryDelay(n); got != want {
			t.Errorf("recordRetryDelay(%d) = %s, want %s", n, got, want)
		}
	}
}

func TestFirstUnapplied(t *testing.T) {
	for _, tc := range []struct {
		name    string
		rows    []uint64
		recs    []placed
		want    uint64
		wantErr bool
	}{
		{"none", []uint64{5, 5}, nil, 0, false},
		{"uneven rows cover their channels", []uint64{9, 7, 8}, []placed{{6, 1}, {7, 1}, {8, 2}, {9, 0}}, 0, false},
		{"a channel behind", []uint64{9, 6, 8}, []placed{{7, 1}, {8, 2}, {9, 0}}, 7, false},
		{"serialized, applied everywhere", []uint64{9, 9}, []placed{{9, SerialChannel}}, 0, false},
		{"serialized, applied nowhere", []uint64{8, 8}, []placed{{9, SerialChannel}}, 9, false},
		{"serialized, applied on some channels", []uint64{9, 8}, []placed{{9, SerialChannel}}, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := firstUnapplied(tc.rows, tc.recs)
			if got != tc.want || (err != nil) != tc.wantErr {
				t.Fatalf("firstUnapplied(%v, %v) = %d, %v; want %d, error %v", tc.rows, tc.recs, got, err, tc.want, tc.wantErr)
			}
		})
	}
}

func TestFixedIndex(t *testing.T) {
	f := FixedIndex(7)
	if v, err := f.WaitFor(context.Background(), 7); v != 7 || err != nil {
		t.Fatalf("WaitFor(7) = %d, %v", v, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := f.WaitFor(ctx, 8); !errors.Is(err, context.Canceled) {
		t.Fatalf("WaitFor(8) returned %v before its context ended", err)
	}
	if f.Get() != 7 {
		t.Fatalf("Get() = %d", f.Get())
	}
}

// A lift lets a run apply beyond the commit index only while it lasts, and
// a later Run's commit index never has it.
func TestRunCtlLift(t *testing.T) {
	w := committedIndex(5)
	rc := newRunCtl(w)
	// blocked reports whether WaitFor(seqno) still waits; the short
	// deadline is the observation window of a negative.
	blocked := func(seqno uint64) bool {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
		defer cancel()
		_, err := rc.WaitFor(ctx, seqno)
		return errors.Is(err, context.DeadlineExceeded)
	}
	if v, err := rc.WaitFor(context.Background(), 3); v != 5 || err != nil {
		t.Fatalf("WaitFor(3) = %d, %v", v, err)
	}
	if !blocked(8) {
		t.Fatal("WaitFor(8) returned with the commit index at 5")
	}
	got := make(chan uint64, 1)
	go func() {
		v, _ := rc.WaitFor(context.Background(), 8)
		got <- v
	}()
	rc.lift(10)
	if v := <-got; v != 10 {
		t.Fatalf("WaitFor(8) after lift(10) = %d", v)
	}
	if rc.Get() != 10 {
		t.Fatalf("Get() while lifted = %d", rc.Get())
	}
	rc.unlift(10)
	if rc.Get() != 5 || !blocked(8) {
		t.Fatalf("after unlift: Get() = %d; WaitFor(8) must wait again", rc.Get())
	}
	rc.lift(10)
	rc.lift(12)
	rc.unlift(10) // another caller's lift stays
	if rc.Get() != 12 {
		t.Fatalf("Get() = %d, want the later lift 12", rc.Get())
	}
	if next := newRunCtl(w); next.Get() != 5 || w.Get() != 5 {
		t.Fatalf("the next Run's commit index is %d (watermark %d), want 5", next.Get(), w.Get())
	}
}

// An applier replaced by one of another channel count registers the same
// metric names again.
func TestSwapRegisterer(t *testing.T) {
	reg := prometheus.NewRegistry()
	sr := &swapRegisterer{Registerer: reg}
	mk := func() prometheus.Collector {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: "quire_test_total", Help: "test"})
	}
	sr.MustRegister(mk())
	if err := sr.Register(mk()); err == nil {
		t.Fatal("a second collector of the same name registered")
	}
	if old := sr.unregisterAll(); len(old) != 1 {
		t.Fatalf("unregisterAll returned %d collectors, want 1", len(old))
	}
	if err := sr.Register(mk()); err != nil {
		t.Fatalf("after unregisterAll: %v", err)
	}
	mfs, err := reg.Gather()
	if err != nil || len(mfs) != 1 {
		t.Fatalf("gather: %d families, %v", len(mfs), err)
	}
}

// testHost is a Host whose Held the test sets between Runs.
type testHost struct {
	mu       sync.Mutex
	prepares int
	held     *Held
	kept     []int
}

func (h *testHost) Prepare(context.Context) ([]string, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.prepares++
	return []string{"test warning"}, nil
}

func (h *testHost) Held() (*Held, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.held, nil
}

func (h *testHost) KeepChannels(n int, _ uint64) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.kept = append(h.kept, n)
	return nil
}

func (h *testHost) setHeld(hd *Held) {
	h.mu.Lock()
	h.held = hd
	h.mu.Unlock()
}

// TestSupervisor drives a Supervisor against a real replica: ApplyThrough
// with no Run applies up to a seqno and stops; the seeding refuses a
// database that lacks records before what it holds (and ApplyThrough gives
// up at once), and accepts uneven rows that cover them; ApplyThrough
// during a Run lifts its commit index only while it lasts; SetChannels
// drains and switches; the replica ends equal to the source.
func TestSupervisor(t *testing.T) {
	insts := startInstances(t, 2, 110)
	src, rep := insts[0], insts[1]
	counterWorkload(t, src.DB, 11, 200)
	recs := binlogRecords(t, src)
	last := uint64(len(recs))
	m, _ := NewShardMap(ShardConfig{}, 4)
	// m: a channel record, so the rows end uneven.
	var mid uint64
	for i := len(recs) / 3; ; i++ {
		if _, ser, _ := Classify(&recs[i], m); !ser {
			mid = recs[i].Seqno
			break
		}
	}
	host := &testHost{}
	sup, err := NewSupervisor(SupervisorConfig{
		Applier: Config{DSN: rep.DSN(""), Channels: 4, Logger: slog.New(slog.NewTextHandler(testLogger(t), nil))},
		DB:      rep.DB, Source: &memSource{recs}, Host: host,
		DrainCommand: func(n int) string { return fmt.Sprintf("drain-to %d", n) },
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rowsNow := func() []uint64 {
		t.Helper()
		rows, err := ReadRestartRows(ctx, rep.DB, "quire")
		if err != nil {
			t.Fatal(err)
		}
		var out []uint64
		for _, r := range rows {
			out = append(out, r.Seqno)
		}
		return out
	}

	// No Run: ApplyThrough runs the applier itself, up to mid, and stops it.
	if err := sup.ApplyThrough(ctx, mid); err != nil {
		t.Fatal(err)
	}
	rows := rowsNow()
	if st := sup.Status(); st != nil || slices.Max(rows) != mid || slices.Min(rows) == mid || sup.applier().Applied() < mid || host.prepares == 0 {
		t.Fatalf("after ApplyThrough(%d) with no Run: status %+v, rows %v, applied %d, %d prepares; want no run, uneven rows up to %d",
			mid, st, rows, sup.applier().Applied(), host.prepares, mid)
	}

	// The database claims to hold records from mid+2 on: mid+1 is missing
	// under them. ApplyThrough gives up at once; nothing moves.
	host.setHeld(&Held{First: mid + 2, Last: recs[mid+1], What: "test term"})
	began := time.Now()
	err = sup.ApplyThrough(ctx, last)
	if !errors.Is(err, ErrRecordsMissing) || time.Since(began) > time.Minute {
		t.Fatalf("ApplyThrough with records missing: %v after %s", err, time.Since(began))
	}
	t.Logf("refused: %v", err)
	if got := rowsNow(); !slices.Equal(got, rows) {
		t.Fatalf("rows moved: %v, were %v", got, rows)
	}

	// Held from mid+1 (and nothing more: Last is mid): the uneven rows
	// cover every record before it, so the seeding raises them to mid.
	host.setHeld(&Held{First: mid + 1, Last: recs[mid-1], What: "test term"})
	w := committedIndex(mid)
	rctx, rcancel := context.WithCancel(ctx)
	runDone := make(chan struct{})
	go func() { defer close(runDone); sup.Run(rctx, w) }()
	waitSup(t, sup, "the run started", func(st *SupervisorStatus) bool { return st.Running })
	host.setHeld(nil)
	if rows := rowsNow(); slices.Min(rows) != mid || slices.Max(rows) != mid {
		t.Fatalf("rows after seeding to %d: %v", mid, rows)
	}
	if st := sup.Status(); st.CommitSeqno != mid || !slices.Contains(st.Warnings, "test warning") {
		t.Fatalf("status: %+v", st)
	}

	// ApplyThrough during the Run: beyond its commit index, for the call.
	upTo := mid + (last-mid)/2
	if err := sup.ApplyThrough(ctx, upTo); err != nil {
		t.Fatal(err)
	}
	if rows := rowsNow(); slices.Max(rows) > upTo || sup.applier().Applied() < upTo {
		t.Fatalf("after ApplyThrough(%d) in a Run at %d: rows %v, applied %d", upTo, mid, rows, sup.applier().Applied())
	}

	// SetChannels: drain with 4, switch to 2; the Run goes on.
	res, err := sup.SetChannels(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	rows = rowsNow()
	if res.OldCount != 4 || res.Count != 2 || !res.Running || len(rows) != 2 || slices.Min(rows) != res.DrainedSeqno || res.DrainedSeqno > upTo ||
		!slices.Equal(host.kept, []int{2}) || sup.Channels() != 2 {
		t.Fatalf("SetChannels(2): %+v, rows %v, kept %v", res, rows, host.kept)
	}
	if _, err := sup.SetChannels(ctx, MaxChannels+1); !errors.Is(err, ErrBadChannels) {
		t.Fatalf("SetChannels(%d): %v", MaxChannels+1, err)
	}

	w.Set(last)
	if err := sup.WaitApplied(ctx, last); err != nil {
		t.Fatal(err)
	}
	if st := sup.Status(); st.AppliedSeqno != last || len(st.Channels) != 3 || st.LagTransactions != 0 || st.Transactions == 0 {
		t.Fatalf("status at the end: %+v", st)
	}
	rcancel()
	<-runDone
	if _, err := sup.SetChannels(ctx, 3); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("SetChannels with no Run: %v", err)
	}
	sameData(t, src.DB, rep.DB)
}

// waitSup polls the Supervisor's status until cond holds.
func waitSup(t *testing.T, s *Supervisor, what string, cond func(*SupervisorStatus) bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		if st := s.Status(); st != nil && cond(st) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; status %+v", what, s.Status())
		}
		time.Sleep(10 * time.Millisecond) // poll interval
	}
}
