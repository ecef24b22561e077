// Command semisync compares Quire's K-of-N semi-sync gate with MariaDB's
// own replication on one machine: sysbench oltp_write_only against a
// primary mariadbd with two replicas, in these modes:
//
//	A  async: MariaDB's asynchronous replication to both replicas
//	   (CHANGE MASTER TO … MASTER_USE_GTID=slave_pos; START SLAVE)
//	B  native semi-sync: the same, with rpl_semi_sync_master_enabled and
//	   AFTER_SYNC on the primary and rpl_semi_sync_slave_enabled on both
//	   replicas; MariaDB waits for the first replica's ACK
//	C  Quire K=1: no MariaDB replication; Quire agents (in this process)
//	   on all three hosts, sync set {db2, db3}, K=1
//	D  Quire K=2
//
// and optional ones: B-io (native semi-sync, the replicas run only the IO
// thread and apply nothing), B-fsync (native semi-sync, the replicas fsync
// the relay log before they ACK, as Quire's replicas fsync their log) and
// B-par (native semi-sync, the replicas apply with 8 parallel threads, as
// Quire's replicas do with 8 channels).
//
//	go run ./bench/semisync -duration 30s -rounds 2 -out /tmp/semisync.md
//
// Every mode runs on a fresh cluster (three new mariadbd, the schemas
// prepared again), and the modes alternate round by round (A B C D A B C D
// …) so that a drift in the machine's load hits every mode alike. The
// program prints a table per round, a summary with the ratios to native
// semi-sync (B), and where the commit time goes (MariaDB's semi-sync wait,
// the agents' log fsyncs and ack wait, CPU per transaction). It asserts
// nothing. Every process and directory it makes is removed on exit, also
// after Ctrl-C.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"syscall"
	"time"
)

// options are the command-line settings.
type options struct {
	work       workload
	rounds     int
	modes      []mode
	dir        string
	out        string
	cpuprofile string
	verbose    bool
}

func main() {
	os.Exit(run())
}

func run() int {
	var o options
	var modeList string
	flag.DurationVar(&o.work.duration, "duration", 30*time.Second, "how long sysbench runs in each mode and round (whole seconds)")
	flag.IntVar(&o.work.clients, "clients", 8, "concurrent clients: sysbench processes of one thread each")
	flag.IntVar(&o.work.schemas, "schemas", 8, "schemas, one sysbench table each; client i writes to schema i mod schemas")
	flag.IntVar(&o.work.tableSize, "table-size", 10000, "rows per sysbench table")
	flag.IntVar(&o.rounds, "rounds", 2, "rounds; each round runs every mode once, in -modes order")
	flag.StringVar(&modeList, "modes", defaultModes, "comma-separated modes: A (async), B (native semi-sync), C (Quire K=1), D (Quire K=2), B-io, B-fsync, B-par")
	flag.StringVar(&o.dir, "dir", os.TempDir(), "directory for the databases and logs (use the disk you care about; tmpfs makes fsync free)")
	flag.StringVar(&o.out, "out", "", "also write the results as markdown to this file")
	flag.StringVar(&o.cpuprofile, "cpuprofile", "", "write a CPU profile of the agents for each Quire run into this directory")
	flag.BoolVar(&o.verbose, "v", false, "show the agents' info logs")
	flag.StringVar(&replicaApply, "replica-apply", "", "Quire modes: the replicas' agent `apply` settings as a YAML flow mapping, e.g. '{channels: 4, block_time: 5ms}' (default: the agent's defaults)")
	splitFlag := flag.String("split-cpus", "", "stand in for separate hosts on 2 CPUs: db1 and sysbench on CPU 0, db2 and db3 on CPU 1, and the agents (this process) with them: "+agentsOnPrimary+" or "+agentsOnReplicas)
	flag.Parse()
	var err error
	if split, err = parseSplit(*splitFlag); err != nil {
		fmt.Fprintf(os.Stderr, "semisync: %v\n", err)
		return 2
	}
	if err = split.pinSelf(); err != nil {
		fmt.Fprintf(os.Stderr, "semisync: %v\n", err)
		return 1
	}
	if o.modes, err = parseModes(modeList); err != nil {
		fmt.Fprintf(os.Stderr, "semisync: -modes: %v\n", err)
		return 2
	}
	switch {
	case flag.NArg() > 0:
		err = fmt.Errorf("unexpected arguments %q", flag.Args())
	case o.work.duration < time.Second:
		err = errors.New("-duration must be at least 1s")
	case o.work.clients < 1:
		err = errors.New("-clients must be at least 1")
	case o.work.schemas < 1:
		err = errors.New("-schemas must be at least 1")
	case o.work.tableSize < 1:
		err = errors.New("-table-size must be at least 1")
	case o.rounds < 1:
		err = errors.New("-rounds must be at least 1")
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "semisync: %v\n", err)
		return 2
	}
	if o.cpuprofile != "" {
		if err := os.MkdirAll(o.cpuprofile, 0o755); err != nil {
			fmt.Fprintf(os.Stderr, "semisync: -cpuprofile: %v\n", err)
			return 2
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		stop() // a second Ctrl-C kills the program outright
	}()
	level := slog.LevelWarn
	if o.verbose {
		level = slog.LevelInfo
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	root, err := os.MkdirTemp(o.dir, "quire-semisync-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "semisync: %v\n", err)
		return 1
	}
	defer os.RemoveAll(root)

	rep := report{opts: o, started: time.Now()}
	for round := 1; round <= o.rounds; round++ {
		for _, m := range o.modes {
			res, err := measure(ctx, o, round, m, root, logger)
			if err != nil {
				if ctx.Err() != nil {
					fmt.Fprintln(os.Stderr, "semisync: interrupted; everything it started is stopped and removed")
					return 130
				}
				fmt.Fprintf(os.Stderr, "semisync: round %d, mode %s: %v\n", round, m.name, err)
				return 1
			}
			fmt.Fprintf(os.Stderr, "semisync: round %d, %s %s: %.0f tx/s, p95 %.2f ms (load %s)\n",
				round, m.name, m.title, res.tps, res.hist.percentile(95), res.loadAfter)
			rep.runs = append(rep.runs, res)
		}
		rep.printRound(os.Stdout, round)
	}
	rep.printSummary(os.Stdout)
	if o.out != "" {
		f, err := os.Create(o.out)
		if err == nil {
			rep.markdown(f)
			err = f.Close()
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "semisync: -out: %v\n", err)
			return 1
		}
	}
	return 0
}

// measure runs one mode once on a fresh cluster.
func measure(ctx context.Context, o options, round int, m mode, root string, logger *slog.Logger) (res runResult, err error) {
	res.round, res.mode = round, m
	start := time.Now()
	dir, err := os.MkdirTemp(root, fmt.Sprintf("round%d-%s-", round, m.name))
	if err != nil {
		return res, err
	}
	defer func() {
		if rerr := os.RemoveAll(dir); rerr != nil {
			err = errors.Join(err, rerr)
		}
	}()
	fmt.Fprintf(os.Stderr, "semisync: round %d, %s %s: starting three mariadbd\n", round, m.name, m.title)
	cl, err := startCluster(ctx, dir, m, logger)
	if err != nil {
		return res, err
	}
	defer func() {
		if cerr := cl.close(); cerr != nil && !errors.Is(cerr, context.Canceled) {
			err = errors.Join(err, cerr)
		}
	}()
	p := cl.primary()
	if err := p.db.QueryRowContext(ctx, "SELECT VERSION()").Scan(&res.version); err != nil {
		return res, fmt.Errorf("read the MariaDB version: %w", err)
	}
	if err := o.work.prepare(ctx, p); err != nil {
		return res, err
	}
	before, err := p.gtidSeq(ctx, "SELECT @@gtid_binlog_pos")
	if err != nil {
		return res, err
	}
	if err := cl.waitReplicated(ctx, before, 2*time.Minute); err != nil {
		return res, err
	}
	if err := cl.check(ctx); err != nil {
		return res, err
	}
	// Write out what set-up left in the page cache, so that its writeback
	// does not land in the measurement.
	syscall.Sync()
	res.setup = time.Since(start)

	var watches []*durableWatch // Quire modes: the primary's log, then the replicas'
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	if m.quire {
		clock := time.Now()
		for _, n := range cl.nodes {
			watches = append(watches, watchDurable(wctx, n.agent.Log(), clock))
		}
	}
	c0, err := cl.snapshot(ctx)
	if err != nil {
		return res, err
	}
	res.loadBefore = loadAverage()
	if o.cpuprofile != "" && m.quire {
		f, err := os.Create(filepath.Join(o.cpuprofile, fmt.Sprintf("semisync-round%d-%s.pprof", round, m.name)))
		if err != nil {
			return res, fmt.Errorf("-cpuprofile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return res, fmt.Errorf("-cpuprofile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	fmt.Fprintf(os.Stderr, "semisync: round %d, %s %s: sysbench for %ds (%d clients over %d schemas)\n",
		round, m.name, m.title, o.work.seconds(), o.work.clients, o.work.schemas)
	clients, sysbenchCPU, err := o.work.run(ctx, p)
	if err != nil {
		return res, err
	}
	pprof.StopCPUProfile()
	c1, err := cl.snapshot(ctx)
	if err != nil {
		return res, err
	}
	res.loadAfter = loadAverage()
	if err := cl.check(ctx); err != nil {
		return res, err
	}

	res.clients = clients
	res.hist = histogram{}
	for _, c := range clients {
		res.hist.add(c.hist)
		res.tx += c.transactions
		res.tps += c.tps
		res.errors += c.errors
		res.reconnects += c.reconnects
	}
	last, err := p.gtidSeq(ctx, "SELECT @@gtid_binlog_pos")
	if err != nil {
		return res, err
	}
	if got := last - before; got != res.tx {
		return res, fmt.Errorf("sysbench committed %d transactions, the primary's binlog holds %d more than before the run", res.tx, got)
	}
	res.usage(c0, c1, sysbenchCPU)
	if m.semiSync {
		if n := res.semi["Rpl_semi_sync_master_no_tx"]; n != 0 {
			return res, fmt.Errorf("MariaDB committed %.0f transactions without a semi-sync ACK (Rpl_semi_sync_master_no_tx): semi-sync was off during the run", n)
		}
		if c1.semi["Rpl_semi_sync_master_status"] != 1 {
			return res, errors.New("semi-sync is off on the primary after the run (Rpl_semi_sync_master_status)")
		}
	}
	if m.quire {
		if st := cl.nodes[0].agent.Status(); st.CommitSeqno < last {
			return res, fmt.Errorf("every commit returned, but the ack gate's commit index is %d < %d", st.CommitSeqno, last)
		}
	}
	// How far behind the replicas' databases (or, B-io, relay logs) were
	// when the clients stopped.
	for _, n := range cl.nodes[1:] {
		var got uint64
		if m.quire {
			got = applied(n.agent.Status())
		} else if got, err = n.replicated(ctx, m.ioOnly); err != nil {
			return res, err
		}
		if got < last {
			res.lag = max(res.lag, last-got)
		}
	}
	if m.quire {
		if err := cl.waitReplicated(ctx, last, 2*time.Minute); err != nil {
			return res, err
		}
		wcancel()
		for _, w := range watches {
			<-w.done
		}
		res.ship = shipDelays(watches[0], watches[1:], m.k, before+1, last)
		if len(res.ship) != int(res.tx) {
			return res, fmt.Errorf("the log watches saw %d of the run's %d transactions durable", len(res.ship), res.tx)
		}
	}
	return res, nil
}
