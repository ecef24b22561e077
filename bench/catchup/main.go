// Command catchup is the catch-up test: how fast does a replica apply a
// recorded write stream, with Quire's parallel applier and with MariaDB's
// own parallel replication?
//
//	go run ./bench/catchup -tx 100000 -out /tmp/catchup.md
//
// For each stream variant (uniform: every transaction on a random one of 8
// schemas; skewed: 80 % on one hot schema) it starts a source mariadbd,
// creates the schemas and tables (sysbench's sbtest1 layout), stops it
// cleanly and keeps a copy of its data directory as the snapshot, starts it
// again, empties its binlog and commits -tx sysbench oltp_write_only
// transactions from -clients sessions. The binlog is the stream: it is read
// through package binlog into a transaction log (epoch 1, seqnos 1..tx),
// as a primary's agent would.
//
// Then, for every configuration, a replica mariadbd starts on a fresh copy
// of the snapshot and applies the stream:
//
//   - Quire: apply.Applier with 1, 4 and 8 channels × block size 1, 10 and
//     100, shard commit order, reading the transaction log. Timed from Run
//     to every record applied.
//   - MariaDB: CHANGE MASTER TO the source (binlog file and position), the
//     IO thread fetches the whole stream into the relay log first, then
//     START SLAVE SQL_THREAD with slave_parallel_threads 0, 4 and 8 and
//     slave_parallel_mode conservative and optimistic. Timed from START
//     SLAVE SQL_THREAD to @@gtid_slave_pos = the stream's last GTID,
//     waited for with MASTER_GTID_WAIT (a poll would take CPU from the
//     replica being measured).
//
// Every server runs with innodb_flush_log_at_trx_commit=1, sync_binlog=1,
// log_bin, log_slave_updates=ON, ROW binlog with CRC32. After each run
// every table's CHECKSUM TABLE must equal the source's; if one differs the
// program stops with an error naming the configuration and the tables, and
// prints no table. Each row also shows the CPU the replica's mariadbd, this
// program (where Quire's applier runs) and the whole host used during the
// timed catch-up, the evidence for what limited it.
//
// With -rounds N every configuration is measured N times (every other
// round in reverse order) and the table shows the fastest round, the one
// least disturbed by other work on a shared machine, and every round's
// rate. -channels, -blocks, -threads, -modes and -variants choose a subset
// of the matrix: on 2 cores the full matrix at -tx 100000 takes about 45
// minutes per round, most of it in the block-size-1 and serial
// configurations. RESULTS.md holds measured tables.
//
// It prints transactions/s per configuration and, per block size, the
// ratios of the targets (Quire with 8 channels against MariaDB with 8
// threads and against Quire with 1 channel); it asserts nothing about
// speed. Every process and directory it makes is removed
// on exit, also after Ctrl-C.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"
)

// options are the command-line settings.
type options struct {
	work       workload
	hot        float64
	variants   []string
	channels   []int
	blocks     []int
	threads    []int
	modes      []string
	dir        string
	out        string
	timeout    time.Duration
	waitLoad   float64
	waitMax    time.Duration
	rounds     int
	verbose    bool
	profileDir string
	commandArg []string
}

func main() {
	os.Exit(run())
}

func run() int {
	o := options{work: workload{schemas: 8}}
	var variants, channels, blocks, threads, modes string
	flag.IntVar(&o.work.tx, "tx", 100000, "transactions in the recorded stream")
	flag.IntVar(&o.work.clients, "clients", 8, "source sessions writing the stream")
	flag.IntVar(&o.work.rows, "rows", 10000, "rows per table (sysbench --table-size)")
	flag.Float64Var(&o.hot, "hot", 0.8, "share of the skewed stream's transactions on the hot schema")
	flag.StringVar(&variants, "variants", "uniform,skewed", "streams to record: uniform, skewed")
	flag.StringVar(&channels, "channels", "1,4,8", "Quire channel counts")
	flag.StringVar(&blocks, "blocks", "1,10,100", "Quire block sizes")
	flag.StringVar(&threads, "threads", "0,4,8", "MariaDB slave_parallel_threads values")
	flag.StringVar(&modes, "modes", "conservative,optimistic", "MariaDB slave_parallel_mode values (for threads > 0)")
	flag.StringVar(&o.dir, "dir", os.TempDir(), "directory for the databases and logs (use the disk you care about; tmpfs makes fsync free)")
	flag.StringVar(&o.out, "out", "", "also write the results as markdown to this file")
	flag.DurationVar(&o.timeout, "timeout", 20*time.Minute, "give up on one configuration's catch-up after this long")
	flag.Float64Var(&o.waitLoad, "wait-load", 0, "before starting, wait until the 1-minute load average is below this (0: do not wait)")
	flag.DurationVar(&o.waitMax, "wait-max", 15*time.Minute, "wait at most this long for -wait-load")
	flag.IntVar(&o.rounds, "rounds", 1, "measure every configuration this many times (every other round in reverse order) and report the fastest")
	flag.BoolVar(&o.verbose, "v", false, "show the applier's and binlog reader's info logs")
	flag.StringVar(&o.profileDir, "cpuprofile", "", "write a CPU profile of this program (where Quire's applier runs) during each Quire catch-up into this existing directory, as <stream>-<channels>ch-block<block>-round<N>.pprof")
	flag.Parse()
	o.commandArg = os.Args[1:]

	var err error
	parseInts := func(name, s string, lo int) []int {
		var out []int
		for f := range strings.SplitSeq(s, ",") {
			if f = strings.TrimSpace(f); f == "" {
				continue
			}
			n, perr := strconv.Atoi(f)
			if perr != nil || n < lo {
				err = errors.Join(err, fmt.Errorf("-%s: %q is not an integer of at least %d", name, f, lo))
				continue
			}
			out = append(out, n)
		}
		return out
	}
	o.channels = parseInts("channels", channels, 1)
	o.blocks = parseInts("blocks", blocks, 1)
	o.threads = parseInts("threads", threads, 0)
	for f := range strings.SplitSeq(variants, ",") {
		switch f = strings.TrimSpace(f); f {
		case "uniform", "skewed":
			o.variants = append(o.variants, f)
		case "":
		default:
			err = errors.Join(err, fmt.Errorf("-variants: %q is not uniform or skewed", f))
		}
	}
	for f := range strings.SplitSeq(modes, ",") {
		switch f = strings.TrimSpace(f); f {
		case "conservative", "optimistic", "aggressive", "minimal":
			o.modes = append(o.modes, f)
		case "":
		default:
			err = errors.Join(err, fmt.Errorf("-modes: %q is not conservative, optimistic, aggressive or minimal", f))
		}
	}
	switch {
	case o.work.tx < 1:
		err = errors.Join(err, errors.New("-tx must be at least 1"))
	case o.work.clients < 1:
		err = errors.Join(err, errors.New("-clients must be at least 1"))
	case o.work.rows < 10:
		err = errors.Join(err, errors.New("-rows must be at least 10"))
	case o.hot <= 0 || o.hot > 1:
		err = errors.Join(err, errors.New("-hot must be in (0, 1]"))
	case len(o.variants) == 0:
		err = errors.Join(err, errors.New("-variants is empty"))
	case o.rounds < 1:
		err = errors.Join(err, errors.New("-rounds must be at least 1"))
	case o.timeout <= 0:
		err = errors.Join(err, errors.New("-timeout must be positive"))
	}
	if o.profileDir != "" {
		if st, serr := os.Stat(o.profileDir); serr != nil || !st.IsDir() {
			err = errors.Join(err, fmt.Errorf("-cpuprofile: %q is not an existing directory", o.profileDir))
		}
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "catchup: %v\n", err)
		return 2
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

	if o.waitLoad > 0 {
		if err := waitForLoad(ctx, o.waitLoad, o.waitMax); err != nil {
			fmt.Fprintf(os.Stderr, "catchup: %v\n", err)
			return 130
		}
	}
	rep := report{opts: o, loadStart: loadAverage(), start: time.Now()}
	for _, v := range o.variants {
		res, err := runVariant(ctx, o, v, logger)
		if err != nil {
			if ctx.Err() != nil {
				fmt.Fprintln(os.Stderr, "catchup: interrupted; everything it started is stopped and removed")
				return 130
			}
			fmt.Fprintf(os.Stderr, "catchup: %s: %v\n", v, err)
			return 1
		}
		rep.variants = append(rep.variants, res)
	}
	rep.end = time.Now()
	rep.printText(os.Stdout)
	if o.out != "" {
		f, err := os.Create(o.out)
		if err == nil {
			rep.printMarkdown(f)
			err = f.Close()
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "catchup: -out: %v\n", err)
			return 1
		}
	}
	return 0
}

// waitForLoad polls the 1-minute load average until it is below limit.
func waitForLoad(ctx context.Context, limit float64, most time.Duration) error {
	deadline := time.Now().Add(most)
	for {
		l := loadAverage()
		one, _ := strconv.ParseFloat(strings.Fields(l + " ?")[0], 64)
		if one < limit {
			return nil
		}
		if time.Now().After(deadline) {
			fmt.Fprintf(os.Stderr, "catchup: load average still %s after %s; starting anyway\n", l, most)
			return nil
		}
		fmt.Fprintf(os.Stderr, "catchup: load average %s, waiting for the 1-minute value to drop below %.1f\n", l, limit)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(15 * time.Second): // poll interval
		}
	}
}

// variantResult is one stream and every configuration's catch-up on it.
type variantResult struct {
	name      string
	version   string
	record    time.Duration // the source committing the stream
	groups    float64       // the source's transactions per binlog group commit
	logBytes  uint64
	hotShare  float64 // share of the records on the busiest schema
	serial    int     // records Quire serializes
	loadStart string
	runs      []measurement
}

// configs returns the configurations to measure, MariaDB's and Quire's
// interleaved so that a change in the machine's load spreads over both.
func (o options) configs() []config {
	var mdb, q []config
	for _, t := range o.threads {
		if t == 0 {
			mdb = append(mdb, config{threads: 0})
			continue
		}
		for _, m := range o.modes {
			mdb = append(mdb, config{threads: t, mode: m})
		}
	}
	for _, c := range o.channels {
		for _, b := range o.blocks {
			q = append(q, config{quire: true, channels: c, block: b})
		}
	}
	var out []config
	for i := 0; i < max(len(mdb), len(q)); i++ {
		if i < len(mdb) {
			out = append(out, mdb[i])
		}
		if i < len(q) {
			out = append(out, q[i])
		}
	}
	return out
}

// runVariant records one stream and measures every configuration on it.
func runVariant(ctx context.Context, o options, variant string, logger *slog.Logger) (res variantResult, err error) {
	res.name, res.loadStart = variant, loadAverage()
	w := o.work
	if variant == "skewed" {
		w.hot = o.hot
	}
	root, err := os.MkdirTemp(o.dir, "quire-catchup-")
	if err != nil {
		return res, err
	}
	defer func() {
		if rerr := os.RemoveAll(root); rerr != nil {
			err = errors.Join(err, rerr)
		}
	}()
	say := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "catchup: %s: "+format+"\n", append([]any{variant}, args...)...)
	}

	say("starting the source and creating %d schemas of %d rows", w.schemas, w.rows)
	src, err := newServer(ctx, root, "source", 101, nil)
	if err != nil {
		return res, err
	}
	defer func() {
		if rerr := src.remove(); rerr != nil {
			err = errors.Join(err, rerr)
		}
	}()
	db, err := src.open(w.clients + 1)
	if err != nil {
		return res, err
	}
	err = db.QueryRowContext(ctx, "SELECT VERSION()").Scan(&res.version)
	if err == nil {
		err = w.prepare(ctx, db)
	}
	db.Close()
	if err != nil {
		return res, err
	}

	// The snapshot: the source's data directory after a clean shutdown.
	snapshot := filepath.Join(root, "snapshot")
	if err := src.shutdown(ctx); err != nil {
		return res, err
	}
	if err := copyDir(ctx, src.dataDir(), snapshot); err != nil {
		return res, fmt.Errorf("snapshot: %w", err)
	}
	if err := src.start(ctx); err != nil {
		return res, err
	}
	if err := src.rootExec(ctx, "RESET MASTER"); err != nil {
		return res, err
	}
	if db, err = src.open(w.clients + 1); err != nil {
		return res, err
	}
	defer db.Close()

	say("writing %d transactions from %d sessions (%s)", w.tx, w.clients, describeSkew(w))
	before, err := readBinlogCounters(ctx, db)
	if err != nil {
		return res, err
	}
	t0 := time.Now()
	if err := w.run(ctx, db); err != nil {
		return res, err
	}
	res.record = time.Since(t0)
	after, err := readBinlogCounters(ctx, db)
	if err != nil {
		return res, err
	}
	if g := after.groups - before.groups; g > 0 {
		res.groups = float64(after.commits-before.commits) / float64(g)
	}
	firstFile, end, gtid, err := endOfBinlog(ctx, db)
	if err != nil {
		return res, err
	}
	if want := fmt.Sprintf("0-%d-%d", src.serverID, w.tx); gtid != want {
		return res, fmt.Errorf("the source's GTID position is %q after %d transactions on an empty binlog, want %q", gtid, w.tx, want)
	}
	tables := w.tables()
	want, err := checksums(ctx, db, tables)
	if err != nil {
		return res, err
	}

	say("reading the binlog (%s to %s) into a transaction log", firstFile, end)
	st, err := record(ctx, src, filepath.Join(root, "txlog"), firstFile, gtid, uint64(w.tx), logger)
	if err != nil {
		return res, err
	}
	defer st.log.Close()
	if st.end != end {
		return res, fmt.Errorf("the last record ends at %s, the source's binlog at %s", st.end, end)
	}
	res.logBytes, res.serial = st.bytes, st.multi
	for _, n := range st.perSchema {
		res.hotShare = max(res.hotShare, float64(n)/float64(st.records))
	}

	serverID := uint32(200)
	for round := range o.rounds {
		cfgs := o.configs()
		if round%2 == 1 {
			slices.Reverse(cfgs) // a trend in the machine's load hits the other end
		}
		for _, cfg := range cfgs {
			say("round %d: %s", round+1, cfg)
			serverID++
			profile := ""
			if o.profileDir != "" && cfg.quire {
				profile = filepath.Join(o.profileDir, fmt.Sprintf("%s-%dch-block%d-round%d.pprof", variant, cfg.channels, cfg.block, round+1))
			}
			m, err := catchUp(ctx, root, serverID, snapshot, src, st, cfg, tables, want, o.timeout, profile, logger)
			if err != nil {
				return res, err
			}
			m.variant, m.round = variant, round+1
			say("round %d: %s: %.1fs, %.0f tx/s, every table equal to the source's; CPU: mariadbd %s %%, catchup process %s %%, host busy %s %% of %d00 %%",
				round+1, cfg, m.elapsed.Seconds(), m.txPerSec(), percent(m.cpu.mariadbd), percent(m.cpu.self), percent(m.cpu.hostBusy), m.cpu.cpus)
			res.runs = append(res.runs, m)
		}
	}
	return res, nil
}

func describeSkew(w workload) string {
	if w.hot == 0 {
		return "uniform over the schemas"
	}
	return fmt.Sprintf("%.0f %% on sb0, the rest uniform over the other %d schemas", 100*w.hot, w.schemas-1)
}

// loadAverage returns the 1, 5 and 15 minute load averages.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// cpuModel returns the first CPU's model name.
func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	for line := range strings.Lines(string(b)) {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

func firstField(s string) string {
	if f := strings.Fields(s); len(f) > 0 {
		return f[0]
	}
	return "?"
}

// report is everything the program prints.
type report struct {
	opts       options
	loadStart  string
	start, end time.Time
	variants   []variantResult
}

// header returns the main table's columns; with several rounds a column
// lists every round's rate and the others describe the fastest round.
func (r report) header() []string {
	h := []string{"stream", "replica", "channels/threads", "block/mode", "seconds", "tx/s"}
	if r.opts.rounds > 1 {
		h = append(h, "tx/s by round")
	}
	return append(h, "binlog commits", "tx per binlog fsync",
		"mariadbd CPU %", "catchup CPU %", "CPU ms per tx", "host busy %", "host iowait %",
		"load 1m before", "load 1m after", "data")
}

// tableOrder returns the configurations in the order of the table:
// MariaDB's, then Quire's.
func (o options) tableOrder() []config {
	cfgs := o.configs()
	slices.SortStableFunc(cfgs, func(a, b config) int {
		switch {
		case a.quire == b.quire:
			return 0
		case b.quire:
			return -1
		}
		return 1
	})
	return cfgs
}

// best returns the fastest round of cfg and every round's rate.
func (v variantResult) best(cfg config) (*measurement, []string) {
	var best *measurement
	var rates []string
	for i := range v.runs {
		m := &v.runs[i]
		if m.cfg != cfg {
			continue
		}
		rates = append(rates, strconv.FormatFloat(m.txPerSec(), 'f', 0, 64))
		if best == nil || m.txPerSec() > best.txPerSec() {
			best = m
		}
	}
	return best, rates
}

// rows returns one row per stream and configuration, from its fastest
// round. Every run's data was checked: a difference ends the program.
func (r report) rows() [][]string {
	var out [][]string
	for _, v := range r.variants {
		for _, cfg := range r.opts.tableOrder() {
			best, rates := v.best(cfg)
			if best == nil {
				continue
			}
			perSync := "–"
			if best.binlog.groups > 0 {
				perSync = strconv.FormatFloat(float64(best.tx)/float64(best.binlog.groups), 'f', 1, 64)
			}
			row := []string{
				v.name, cfg.replicator(), strconv.Itoa(cfg.parallelism()), cfg.detail(),
				strconv.FormatFloat(best.elapsed.Seconds(), 'f', 2, 64),
				strconv.FormatFloat(best.txPerSec(), 'f', 0, 64),
			}
			if r.opts.rounds > 1 {
				row = append(row, strings.Join(rates, " / "))
			}
			out = append(out, append(row,
				strconv.FormatUint(best.binlog.commits, 10), perSync,
				percent(best.cpu.mariadbd), percent(best.cpu.self), strconv.FormatFloat(best.cpuPerTx(), 'f', 2, 64),
				percent(best.cpu.hostBusy), percent(best.cpu.hostIOWait),
				firstField(best.loadBefore), firstField(best.loadAfter), "equal"))
		}
	}
	return out
}

// The targets.
const (
	targetVsMariaDB = 1.2 // Quire 8 channels / MariaDB 8 threads
	targetVsOne     = 2.5 // Quire 8 channels / Quire 1 channel
)

// ratioHeader and ratios compare, per block size, Quire with 8 channels
// against MariaDB with 8 threads (its faster mode) and against Quire with 1
// channel at the same block size.
var ratioHeader = []string{"stream", "block", "Quire 8 ch tx/s", "MariaDB 8 threads tx/s (faster mode)",
	fmt.Sprintf("Quire 8 ch / MariaDB 8 threads (target ≥ %.1f)", targetVsMariaDB), "Quire 1 ch tx/s",
	fmt.Sprintf("Quire 8 ch / Quire 1 ch (target ≥ %.1f)", targetVsOne)}

// ratio formats a/b and whether it meets the target.
func ratio(a, b, target float64) string {
	verdict := "met"
	if a/b < target {
		verdict = "MISSED"
	}
	return fmt.Sprintf("%.2f× %s", a/b, verdict)
}

func (r report) ratios() [][]string {
	var out [][]string
	for _, v := range r.variants {
		find := func(match func(config) bool) (float64, string) {
			best, what := 0.0, ""
			for _, m := range v.runs {
				if match(m.cfg) && m.txPerSec() > best {
					best, what = m.txPerSec(), m.cfg.detail()
				}
			}
			return best, what
		}
		mdb, mode := find(func(c config) bool { return !c.quire && c.threads == 8 })
		for _, b := range r.opts.blocks {
			q8, _ := find(func(c config) bool { return c.quire && c.channels == 8 && c.block == b })
			q1, _ := find(func(c config) bool { return c.quire && c.channels == 1 && c.block == b })
			if q8 == 0 {
				continue
			}
			row := []string{v.name, strconv.Itoa(b), strconv.FormatFloat(q8, 'f', 0, 64), "–", "–", "–", "–"}
			if mdb > 0 {
				row[3] = fmt.Sprintf("%.0f (%s)", mdb, mode)
				row[4] = ratio(q8, mdb, targetVsMariaDB)
			}
			if q1 > 0 {
				row[5] = strconv.FormatFloat(q1, 'f', 0, 64)
				row[6] = ratio(q8, q1, targetVsOne)
			}
			out = append(out, row)
		}
	}
	return out
}

func (r report) notes() []string {
	o := r.opts
	version := "?"
	if len(r.variants) > 0 {
		version = r.variants[0].version
	}
	out := []string{
		"command: go run ./bench/catchup " + strings.Join(o.commandArg, " "),
		fmt.Sprintf("machine: %d CPUs (%s), MariaDB %s, %s %s/%s, data in %s", runtime.NumCPU(), cpuModel(), version, runtime.Version(), runtime.GOOS, runtime.GOARCH, o.dir),
		"every server: innodb_flush_log_at_trx_commit=1, sync_binlog=1, log_bin, log_slave_updates=ON, binlog_format=ROW, binlog_checksum=CRC32; replicas also binlog_ignore_db=quire",
		fmt.Sprintf("stream: %d sysbench oltp_write_only transactions (Go workload: 2 updates, a delete, an insert on sbN.sbtest1) from %d sessions on 8 schemas of %d rows", o.work.tx, o.work.clients, o.work.rows),
		"Quire: apply.Applier, shard commit order, reading the transaction log built from the source binlog by package binlog; timed from Run to Applied = last seqno",
		"MariaDB: relay log fetched first by the IO thread; timed from START SLAVE SQL_THREAD to @@gtid_slave_pos = the last GTID (MASTER_GTID_WAIT); other replication settings at their defaults (slave_parallel_max_queued 128 KiB, slave_domain_parallel_threads 0)",
		fmt.Sprintf("%d round(s) per configuration; the table shows the fastest; load averages count the benchmark's own processes, which wait on fsync", o.rounds),
		fmt.Sprintf("CPU columns, over the timed catch-up of the fastest round, in %% of one CPU: the replica's mariadbd; this program (Quire's applier runs in it; in MariaDB rows it only waits in MASTER_GTID_WAIT); the CPU time of both per transaction applied, in ms; the whole host (%d00 %% = every CPU busy, other users' work included) and its I/O wait", runtime.NumCPU()),
		"data: after every run CHECKSUM TABLE of every table equals the source's (a difference stops the program with an error and no table)",
		fmt.Sprintf("load average (1, 5, 15 min): %s at the start, %s at the end; %s in all", r.loadStart, loadAverage(), r.end.Sub(r.start).Round(time.Second)),
	}
	for _, v := range r.variants {
		out = append(out, fmt.Sprintf("%s stream: recorded in %.1fs (%.0f tx/s on the source, %.1f transactions per binlog group commit), %.0f bytes per log record, busiest schema %.1f %% of the records, %d records serialized by Quire",
			v.name, v.record.Seconds(), float64(o.work.tx)/v.record.Seconds(), v.groups, float64(v.logBytes)/float64(o.work.tx), 100*v.hotShare, v.serial))
	}
	return out
}

func writeTable(w io.Writer, header []string, rows [][]string) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, strings.Join(header, "\t")+"\t")
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t")+"\t")
	}
	tw.Flush()
}

func (r report) printText(w io.Writer) {
	writeTable(w, r.header(), r.rows())
	fmt.Fprintln(w)
	writeTable(w, ratioHeader, r.ratios())
	fmt.Fprintln(w)
	for _, n := range r.notes() {
		fmt.Fprintln(w, n)
	}
}

func writeMarkdown(w io.Writer, header []string, rows [][]string) {
	fmt.Fprintf(w, "| %s |\n", strings.Join(header, " | "))
	fmt.Fprintf(w, "|%s\n", strings.Repeat("---|", len(header)))
	for _, r := range rows {
		fmt.Fprintf(w, "| %s |\n", strings.Join(r, " | "))
	}
}

func (r report) printMarkdown(w io.Writer) {
	fmt.Fprintf(w, "```\ngo run ./bench/catchup %s\n```\n\n", strings.Join(r.opts.commandArg, " "))
	writeMarkdown(w, r.header(), r.rows())
	fmt.Fprintln(w)
	writeMarkdown(w, ratioHeader, r.ratios())
	fmt.Fprintln(w)
	for _, n := range r.notes() {
		fmt.Fprintf(w, "- %s\n", n)
	}
}
