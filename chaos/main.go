// Command chaos is Quire's chaos test: it starts a three-node sandbox like
// `make demo` (scripts/demo.sh, in its own directory), runs 8 writers that
// record every acknowledged id against the primary, and injects faults at
// random: kill -9 of each agent, each mariadbd (the primary's too) and each
// manager, each killed process restarted after 0.2-3 s as a service manager
// would, and SIGSTOP of a replica's agent for 1-8 s. After the last fault
// the cluster must converge within -converge: every acknowledged id on
// every node, CHECKSUM TABLE equal on all nodes, every node healthy in
// `quire status`. It prints a table of faults by kind with the longest
// write stall after each, and exits non-zero if the cluster did not
// converge.
//
//	go run ./chaos -faults 60 -duration 3m
//
// See docs/chaos.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/go-sql-driver/mysql"
)

// options are the command-line settings.
type options struct {
	faults   int
	duration time.Duration
	seed     uint64
	dir      string
	keep     bool
	writers  int
	rate     int
	converge time.Duration
	kinds    []faultKind
}

// Exit codes.
const (
	exitOK          = 0
	exitFailed      = 1 // the cluster did not converge
	exitSetup       = 2 // bad flags, or the sandbox could not start
	exitInterrupted = 130
)

func main() {
	os.Exit(run())
}

func run() int {
	var o options
	flag.IntVar(&o.faults, "faults", 60, "number of faults")
	flag.DurationVar(&o.duration, "duration", 3*time.Minute, "spread the faults over this long (a fault waits for the previous one, so a run may take longer)")
	flag.Uint64Var(&o.seed, "seed", 0, "seed of the fault schedule (0: a random one, printed)")
	flag.StringVar(&o.dir, "dir", ".chaos", "the sandbox's directory (removed first, and at the end unless the run fails or -keep)")
	flag.BoolVar(&o.keep, "keep", false, "keep the sandbox's directory (data and logs) after a successful run")
	flag.IntVar(&o.writers, "writers", 8, "writer connections")
	flag.IntVar(&o.rate, "rate", 400, "at most this many writes per second, all writers together (0: as fast as they go)")
	flag.DurationVar(&o.converge, "converge", 60*time.Second, "after the last fault, the cluster must converge within this long")
	kinds := flag.String("kinds", "agent,mariadbd,manager,stop", "fault kinds, comma-separated: agent, mariadbd, manager (kill -9 and restart), stop (SIGSTOP of a replica's agent)")
	flag.Parse()
	var err error
	if o.kinds, err = parseKinds(*kinds); err != nil {
		fmt.Fprintf(os.Stderr, "chaos: %v\n", err)
		return exitSetup
	}
	if flag.NArg() > 0 || o.faults < 1 || o.duration <= 0 || o.writers < 1 || o.rate < 0 || o.converge <= 0 {
		fmt.Fprintln(os.Stderr, "chaos: want -faults ≥ 1, -duration > 0, -writers ≥ 1, -rate ≥ 0, -converge > 0 and no arguments")
		flag.Usage()
		return exitSetup
	}
	if o.seed == 0 {
		o.seed = rand.Uint64()
	}
	mysql.SetLogger(log.New(io.Discard, "", 0)) // the writers count their errors
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	h, err := newHarness(o, os.Stdout)
	if err != nil {
		fmt.Fprintf(os.Stderr, "chaos: %v\n", err)
		return exitSetup
	}
	return h.run(ctx)
}

// harness is one chaos run.
type harness struct {
	o     options
	c     *cluster
	out   io.Writer
	outMu sync.Mutex
	start time.Time
	locks procLocks

	mu    sync.Mutex
	exits []unplannedExit
}

func newHarness(o options, out io.Writer) (*harness, error) {
	repo, err := os.Getwd()
	if err != nil {
		return nil, fmt.Errorf("working directory: %w", err)
	}
	script := filepath.Join(repo, "scripts", "demo.sh")
	if _, err := os.Stat(script); err != nil {
		return nil, fmt.Errorf("run me from the repository's top directory (no scripts/demo.sh here): %w", err)
	}
	bin := filepath.Join(repo, "bin")
	for _, b := range []string{"quire", "quire-agent", "quire-manager"} {
		if _, err := os.Stat(filepath.Join(bin, b)); err != nil {
			return nil, fmt.Errorf("bin/%s missing: run 'make build' (make chaos does): %w", b, err)
		}
	}
	dir, err := filepath.Abs(o.dir)
	if err != nil {
		return nil, fmt.Errorf("-dir %s: %w", o.dir, err)
	}
	if dir == filepath.Join(repo, ".demo") {
		return nil, errors.New("-dir .demo is make demo's directory; choose another")
	}
	c := &cluster{repo: repo, dir: dir, script: script, bin: bin}
	return &harness{o: o, c: c, out: out}, nil
}

func (h *harness) since() time.Duration { return time.Since(h.start) }

// wall is the UTC clock time (as the agents and managers log it) d after
// the start.
func (h *harness) wall(d time.Duration) string { return h.start.Add(d).UTC().Format("15:04:05.000") }

func (h *harness) printf(format string, args ...any) {
	h.outMu.Lock()
	defer h.outMu.Unlock()
	fmt.Fprintf(h.out, format, args...)
	h.c.logMu.Lock()
	if h.c.log != nil {
		fmt.Fprintf(h.c.log, format, args...)
	}
	h.c.logMu.Unlock()
}

func (h *harness) nodeIDs() []string {
	var ids []string
	for _, n := range h.c.nodes {
		ids = append(ids, n.ID)
	}
	return ids
}

func (h *harness) managerIDs() []string {
	var ids []string
	for _, m := range h.c.managers {
		ids = append(ids, m.ID)
	}
	return ids
}

// run is the whole test; it always stops every process it started.
func (h *harness) run(ctx context.Context) (code int) {
	o := h.o
	if err := h.prepare(ctx); err != nil {
		h.printf("chaos: %v\n", err)
		return exitSetup
	}
	h.printf("chaos: seed %d, %d faults over %s, %d writers (at most %d writes/s), sandbox %s\n",
		o.seed, o.faults, o.duration, o.writers, o.rate, h.c.dir)
	h.printf("chaos: reproduce the schedule with: bin/chaos -seed %d -faults %d -duration %s -kinds %s\n", o.seed, o.faults, o.duration, kindList(o.kinds))
	h.start = time.Now()
	defer func() { code = h.cleanup(code) }()
	h.printf("chaos: times are seconds since %s UTC (the logs' clock)\n", h.wall(0))

	uctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	err := h.c.demo(uctx, "up")
	cancel()
	if err != nil {
		h.printf("chaos: the sandbox did not start: %v\n", err)
		return h.setupFailed(ctx)
	}
	if err := h.c.load(); err != nil {
		h.printf("chaos: %v\n", err)
		return h.setupFailed(ctx)
	}
	if f, err := os.OpenFile(filepath.Join(h.c.dir, "chaos.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644); err == nil {
		h.c.logMu.Lock()
		h.c.log = f
		h.c.logMu.Unlock()
		defer func() {
			h.c.logMu.Lock()
			h.c.log = nil
			h.c.logMu.Unlock()
			f.Close()
		}()
	}
	h.printf("%s sandbox up (%s); logs in %s/<node>/\n", stamp(h.since()), strings.Join(h.nodeIDs(), ", "), h.c.dir)

	pctx, stopPoll := context.WithCancel(ctx)
	defer stopPoll()
	go h.c.pollStatus(pctx, time.Second)
	addr, err := h.waitPrimary(ctx, 60*time.Second)
	if err != nil {
		h.printf("chaos: %v\n", err)
		return h.setupFailed(ctx)
	}
	if err := h.c.createTables(ctx, addr); err != nil {
		h.printf("chaos: %v\n", err)
		return h.setupFailed(ctx)
	}

	// Writers.
	acks := newAcks(h.start)
	ws := &writers{c: h.c, acks: acks, n: o.writers}
	if o.rate > 0 {
		ws.every = time.Duration(float64(time.Second) * float64(o.writers) / float64(o.rate))
	}
	wctx, stopWriters := context.WithCancel(ctx)
	defer stopWriters()
	wdone := make(chan struct{})
	go func() { defer close(wdone); ws.run(wctx) }()
	if err := waitFor(ctx, 30*time.Second, func() bool { n, _ := acks.count(); return n >= o.writers }); err != nil {
		n, _ := acks.count()
		h.printf("chaos: only %d writes acknowledged 30 s after the writers started; errors:\n%s\n", n, indent(strings.Join(acks.topErrors(10), "\n")))
		return h.setupFailed(ctx)
	}
	h.printf("%s writers running; faults start\n", stamp(h.since()))

	// Exit watcher, progress and faults.
	xctx, stopWatch := context.WithCancel(ctx)
	xdone := make(chan struct{})
	go func() { defer close(xdone); h.watchExits(xctx, o.seed) }()
	defer func() { stopWatch(); <-xdone }()
	go h.progress(xctx, acks)

	plan := planFaults(o.seed, o.faults, o.duration, o.kinds, h.nodeIDs(), h.managerIDs())
	faultsStart := time.Now()
	var recs []faultRecord
	for i, f := range plan {
		if sleepCtx(ctx, time.Until(faultsStart.Add(f.At))) != nil {
			break
		}
		r := h.runFault(ctx, i+1, f)
		recs = append(recs, r)
		h.printFault(r)
		if ctx.Err() != nil {
			break
		}
	}
	lastEnd := h.since()
	if ctx.Err() != nil {
		h.printf("\nchaos: interrupted after %d faults; stopping everything\n", len(recs))
		stopWriters()
		<-wdone
		_, last := acks.count()
		acks.mu.Lock()
		fillStalls(recs, acks.times, max(h.since(), last))
		acks.mu.Unlock()
		h.outMu.Lock()
		printTable(h.out, recs)
		h.outMu.Unlock()
		return exitInterrupted
	}

	// Convergence: restart what is down, see writes resume, stop the
	// writers, then every node must hold every acknowledged id.
	stopWatch()
	<-xdone
	h.printf("%s last fault over; restarting anything not running, then waiting up to %s for convergence\n", stamp(lastEnd), o.converge)
	deadline := h.start.Add(lastEnd + o.converge)
	dctx, cancelDeadline := context.WithDeadline(ctx, deadline)
	defer cancelDeadline()
	var problems []string
	if err := h.c.demo(dctx, "up"); err != nil {
		problems = append(problems, "restarting the sandbox after the last fault failed: "+err.Error())
	}
	resumed := waitFor(dctx, time.Until(deadline), func() bool { _, t := acks.count(); return t > lastEnd })
	_, lastAck := acks.count()
	if resumed != nil {
		problems = append(problems, fmt.Sprintf("writes did not resume after the last fault: the last acknowledged write was at %.1f s, the last fault ended at %.1f s", lastAck.Seconds(), lastEnd.Seconds()))
	} else {
		h.printf("%s writes resumed after the last fault\n", stamp(lastAck))
	}
	stopWriters()
	select {
	case <-wdone:
	case <-time.After(commitTimeout + 5*time.Second):
		problems = append(problems, fmt.Sprintf("a writer did not stop within %s of being told to", commitTimeout+5*time.Second))
	}
	end := h.since()
	var acked [numSchemas][]int64
	for s := range numSchemas {
		acked[s] = acks.sortedIDs(s)
	}
	var res checkResult
	converged := false
	for {
		res = h.check(ctx, acked)
		if len(res.problems) == 0 && len(problems) == 0 {
			converged = true
			break
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			break
		}
		sleepCtx(ctx, time.Second) // between polls
	}
	convergedAt := h.since()
	if ctx.Err() != nil {
		h.printf("\nchaos: interrupted while waiting for convergence; stopping everything\n")
		return exitInterrupted
	}

	// Report.
	acks.mu.Lock()
	times := append([]time.Duration(nil), acks.times...)
	nerr := acks.nerr
	acks.mu.Unlock()
	errs := acks.topErrors(8)
	longest, long := fillStalls(recs, times, end)
	h.printf("\n")
	h.outMu.Lock()
	printTable(h.out, recs)
	h.outMu.Unlock()
	first := time.Duration(0)
	if len(times) > 0 {
		first = times[0]
	}
	h.printf("\nacknowledged writes: %d (%.0f/s over %.0f s); writer errors: %d\n", len(times), float64(len(times))/max(1, (end-first).Seconds()), (end - first).Seconds(), nerr)
	if len(errs) > 0 {
		h.printf("writer errors by message:\n%s\n", indent(strings.Join(errs, "\n")))
	}
	h.printf("longest write stall: %s, from %.1f s to %.1f s, blamed on %s\n", secs(longest.length()), longest.from.Seconds(), longest.to.Seconds(), faultName(recs, longest.fault))
	h.outMu.Lock()
	printLongStalls(h.out, recs, long, end)
	h.outMu.Unlock()
	h.mu.Lock()
	exits := h.exits
	h.mu.Unlock()
	if len(exits) > 0 {
		h.printf("processes that exited without a fault (restarted by the harness): %d\n", len(exits))
		for _, x := range exits {
			h.printf("  %s %s (pid file: %s); its log then:\n%s\n", stamp(x.At), x.Proc, x.PidFile, indent(x.Tail))
			if x.Err != "" {
				h.printf("    restart failed: %s\n", x.Err)
			}
		}
	}
	if converged {
		h.printf("converged %s after the last fault: %d acknowledged ids on all %d nodes, checksums equal, every node healthy\n",
			secs(convergedAt-lastEnd), len(times), len(h.c.nodes))
		h.printf("chaos: PASS (seed %d)\n", o.seed)
		return exitOK
	}
	h.printf("\nchaos: FAIL: the cluster did not converge within %s after the last fault (seed %d):\n", o.converge, o.seed)
	for _, p := range append(problems, res.problems...) {
		h.printf("  - %s\n", strings.ReplaceAll(strings.TrimRight(p, "\n"), "\n", "\n    "))
	}
	h.diagnose(res)
	return exitFailed
}

// prepare stops a previous run's processes, checks that nothing else
// holds the sandbox's ports, and removes the previous run's directory.
func (h *harness) prepare(ctx context.Context) error {
	_, err := os.Stat(h.c.dir)
	exists := err == nil
	if exists && anyAlive(h.c.dir) {
		h.printf("chaos: processes of a previous run still run in %s; stopping them\n", h.c.dir)
		dctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		err := h.c.demo(dctx, "stop")
		cancel()
		if err != nil {
			return fmt.Errorf("stop the previous run: %w", err)
		}
	}
	if busy := portsInUse(); len(busy) > 0 {
		return fmt.Errorf("ports %v are in use; the chaos test needs the demo's fixed ports: is `make demo` running? Stop it with `make demo-down`", busy)
	}
	if exists {
		h.printf("chaos: removing the previous run's directory %s\n", h.c.dir)
		if err := os.RemoveAll(h.c.dir); err != nil {
			return fmt.Errorf("remove the previous run's directory: %w", err)
		}
	}
	return nil
}

// setupFailed is the exit of a run whose sandbox or writers never got
// going: the directory is kept for the logs.
func (h *harness) setupFailed(ctx context.Context) int {
	if ctx.Err() != nil {
		return exitInterrupted
	}
	return exitSetup
}

// cleanup stops every process; it removes the directory after a passing
// or interrupted run unless -keep.
func (h *harness) cleanup(code int) int {
	for _, p := range h.c.procs() { // a stopped agent could not stop
		if pid, ok := h.c.pid(p); ok {
			syscall.Kill(pid, syscall.SIGCONT)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := h.c.demo(ctx, "stop"); err != nil {
		h.printf("chaos: stopping the sandbox: %v\n", err)
		if code == exitOK {
			code = exitFailed
		}
	}
	if (code == exitOK || code == exitInterrupted) && !h.o.keep {
		if err := os.RemoveAll(h.c.dir); err != nil {
			h.printf("chaos: remove %s: %v\n", h.c.dir, err)
		}
		return code
	}
	h.printf("chaos: every process stopped; data and logs kept in %s\n", h.c.dir)
	return code
}

// waitPrimary waits until quire status names a primary and returns its
// MariaDB address.
func (h *harness) waitPrimary(ctx context.Context, d time.Duration) (string, error) {
	var addr string
	err := waitFor(ctx, d, func() bool { _, addr = h.c.primary(); return addr != "" })
	if err != nil {
		h.c.mu.Lock()
		serr := h.c.statusErr
		h.c.mu.Unlock()
		return "", fmt.Errorf("quire status named no primary within %s (last error: %v)", d, serr)
	}
	return addr, nil
}

// waitFor polls cond every 100 ms until it holds, d passes or ctx ends.
func waitFor(ctx context.Context, d time.Duration, cond func() bool) error {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("condition not met within %s", d)
		}
		if err := sleepCtx(ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
	return nil
}

// printFault prints one line per fault.
func (h *harness) printFault(r faultRecord) {
	var what string
	switch {
	case r.Kind == stopAgent:
		what = fmt.Sprintf("stopped %s for %s", fmt.Sprintf("pid %d", r.Pid), secs(r.Hold))
	case r.Pid != 0:
		what = fmt.Sprintf("pid %d; restarted %s later, up in %s", r.Pid, secs(r.Hold), secs(r.Restart))
	}
	if r.Err != "" {
		what += "; ERROR: " + r.Err
	}
	h.printf("%s #%02d at %.1f s (%s): %s %s (%s): %s\n", stamp(r.End), r.N, r.Start.Seconds(), h.wall(r.Start), r.Kind, r.Target, r.Role, what)
}

// progress prints the writers' progress every 15 s.
func (h *harness) progress(ctx context.Context, a *acks) {
	prev := 0
	for sleepCtx(ctx, 15*time.Second) == nil {
		n, last := a.count()
		a.mu.Lock()
		nerr := a.nerr
		a.mu.Unlock()
		primary, _ := h.c.primary()
		st := h.c.lastStatus()
		var epoch uint64
		if st != nil {
			epoch = st.Epoch
		}
		h.printf("%s %d writes acknowledged (%d/s in the last 15 s), %d writer errors, last ack %.1f s ago; primary %s, epoch %d\n",
			stamp(h.since()), n, (n-prev)/15, nerr, (h.since() - last).Seconds(), primary, epoch)
		prev = n
	}
}

// diagnose prints what the logs say: per agent and manager the distinct
// warnings and errors, and the tails of the logs of the nodes with a
// problem (all nodes if none is named).
func (h *harness) diagnose(res checkResult) {
	h.printf("\nwarnings and errors in the logs (count, message, last occurrence):\n")
	for _, p := range h.c.procs() {
		if p.kind == "mysqld" {
			continue
		}
		text, err := tailFile(h.c.logFile(p), 1<<30)
		if err != nil {
			h.printf("  %s: %v\n", p, err)
			continue
		}
		sum := summarizeLog(text)
		if len(sum) == 0 {
			continue
		}
		h.printf("  %s (%s):\n", p, h.c.logFile(p))
		for i, s := range sum {
			if i == 10 {
				h.printf("      … %d more messages\n", len(sum)-10)
				break
			}
			last := s.last
			if len(last) > 400 {
				last = last[:400] + "…"
			}
			h.printf("    %5d× %s %s\n          last: %s\n", s.count, s.level, s.msg, last)
		}
	}
	bad := res.bad
	if len(bad) == 0 {
		bad = map[string]bool{}
		for _, n := range h.c.nodes {
			bad[n.ID] = true
		}
	}
	for _, n := range h.c.nodes {
		if !bad[n.ID] {
			continue
		}
		for _, p := range []proc{{"agent", n.ID}, {"mysqld", n.ID}} {
			lines := 30
			if p.kind == "mysqld" {
				lines = 10
			}
			t, err := tailFile(h.c.logFile(p), lines)
			if err != nil {
				t = err.Error()
			}
			h.printf("\nlast %d lines of %s (%s):\n%s\n", lines, p, h.c.logFile(p), indent(t))
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if out, err := h.c.quire(ctx, "status"); err == nil {
		h.printf("\nquire status:\n%s\n", indent(strings.TrimRight(string(out), "\n")))
	} else {
		h.printf("\nquire status: %v\n", err)
	}
}
