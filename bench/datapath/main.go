// Command datapath measures Quire's data path end to end on one machine:
// three mariadbd (a primary and two replicas' databases) and three agents
// running in this process — db1's agent extracts the primary's binlog into
// its transaction log and serves it, db2's and db3's stream it, append it
// and fsync. A write workload runs against the primary; the program reports
// the client commit rate, how fast transactions become durable in each log
// (transactions/s and MB/s of encoded log records, records per fsync), and
// the latency each transaction adds from its COMMIT returning to the client
// to its record being durable in each log.
//
//	go run ./bench/datapath -duration 30s -clients 8 -schemas 8 -modes none,0,1 -out /tmp/datapath.md
//
// -modes lists the modes to run, each on a fresh cluster. A number is K:
// how many of the two replicas must hold a transaction durably before the
// primary's agent sends MariaDB the semi-sync ACK that lets COMMIT return.
// With K=0 the ACK follows the primary agent's own log fsync and the
// replicas are asynchronous; with K=1 COMMIT waits for the first replica.
// "none" is the baseline: the primary's mariadbd alone, semi-sync off, no
// agents, so the client columns show what Quire costs the client.
//
// It prints tables; it asserts nothing. Every process and directory it
// makes is removed on exit, also after Ctrl-C.
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
	duration time.Duration
	modes    []mode
	work     workload
	dir      string
	out      string
	verbose  bool
}

func main() {
	os.Exit(run())
}

func run() int {
	var o options
	var modes string
	flag.DurationVar(&o.duration, "duration", 30*time.Second, "how long the workload runs in each mode")
	flag.IntVar(&o.work.clients, "clients", 8, "concurrent client connections")
	flag.IntVar(&o.work.schemas, "schemas", 8, "schemas the workload writes to (one table each)")
	flag.IntVar(&o.work.rowSize, "rowsize", 256, "bytes of padding per row written")
	flag.IntVar(&o.work.rows, "rows", 1000, "rows per table before the workload starts")
	flag.StringVar(&modes, "modes", "0", "comma-separated modes: K (0, 1 or 2 replicas must hold a transaction before COMMIT returns) or none (no agents, no semi-sync)")
	flag.StringVar(&o.dir, "dir", os.TempDir(), "directory for the databases and logs (use the disk you care about; tmpfs makes fsync free)")
	flag.StringVar(&o.out, "out", "", "also write the results as markdown to this file")
	flag.BoolVar(&o.verbose, "v", false, "show the agents' info logs")
	flag.Parse()
	var err error
	if o.modes, err = parseModes(modes); err != nil {
		fmt.Fprintf(os.Stderr, "datapath: -modes: %v\n", err)
		return 2
	}
	switch {
	case o.duration <= 0:
		err = errors.New("-duration must be positive")
	case o.work.clients < 1:
		err = errors.New("-clients must be at least 1")
	case o.work.schemas < 1:
		err = errors.New("-schemas must be at least 1")
	case o.work.rowSize < 0 || o.work.rowSize > 1<<20:
		err = errors.New("-rowsize must be between 0 and 1048576")
	case o.work.rows < 1:
		err = errors.New("-rows must be at least 1")
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "datapath: %v\n", err)
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

	var results []result
	for _, m := range o.modes {
		res, err := measure(ctx, o, m, logger)
		if err != nil {
			if ctx.Err() != nil {
				fmt.Fprintln(os.Stderr, "datapath: interrupted; everything it started is stopped and removed")
				return 130
			}
			fmt.Fprintf(os.Stderr, "datapath: %s: %v\n", m, err)
			return 1
		}
		results = append(results, res)
	}
	printText(os.Stdout, o, results)
	if o.out != "" {
		f, err := os.Create(o.out)
		if err == nil {
			printMarkdown(f, o, results)
			err = f.Close()
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "datapath: -out: %v\n", err)
			return 1
		}
	}
	return 0
}

// mode is one configuration to measure: agents with an ack gate waiting
// for k replicas, or no agents at all.
type mode struct {
	agents bool
	k      int
}

func (m mode) String() string {
	if !m.agents {
		return "no agents"
	}
	return fmt.Sprintf("K=%d", m.k)
}

func parseModes(s string) ([]mode, error) {
	var modes []mode
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(f)
		if f == "none" {
			modes = append(modes, mode{})
			continue
		}
		k, err := strconv.Atoi(f)
		if err != nil || k < 0 || k > 2 {
			return nil, fmt.Errorf("%q is not none, 0, 1 or 2", f)
		}
		modes = append(modes, mode{agents: true, k: k})
	}
	return modes, nil
}

// result is one mode's measurements.
type result struct {
	mode       mode
	version    string
	loadBefore string
	loadAfter  string
	commits    int
	elapsed    time.Duration // first transaction sent to last one returned
	txBytes    float64       // mean encoded record size
	client     distribution  // COMMIT round trip as the client sees it
	logs       []logResult
}

// logResult is one agent's log during the workload.
type logResult struct {
	node           string
	role           string
	txPerSec       float64 // workload transactions / (last durable − start)
	mbPerSec       float64
	recordsPerSync float64
	fsyncMean      time.Duration // mean duration of the log's fsyncs
	added          distribution  // durable in this log − COMMIT returned
}

// measure runs one mode on a fresh cluster.
func measure(ctx context.Context, o options, m mode, logger *slog.Logger) (res result, err error) {
	res.mode = m
	root, err := os.MkdirTemp(o.dir, "quire-datapath-")
	if err != nil {
		return res, err
	}
	defer func() {
		if rerr := os.RemoveAll(root); rerr != nil {
			err = errors.Join(err, rerr)
		}
	}()
	if m.agents {
		fmt.Fprintf(os.Stderr, "datapath: %s: starting three mariadbd and agents\n", m)
	} else {
		fmt.Fprintf(os.Stderr, "datapath: %s: starting one mariadbd\n", m)
	}
	cl, err := startCluster(ctx, root, m, logger)
	if err != nil {
		return res, err
	}
	defer func() {
		if cerr := cl.close(); cerr != nil && !errors.Is(cerr, context.Canceled) {
			err = errors.Join(err, cerr)
		}
	}()
	primary := cl.nodes[0]
	agents := cl.agents() // none in the baseline mode
	db, err := openPool(primary.db, o.work.clients+1)
	if err != nil {
		return res, err
	}
	defer db.Close()
	if err := db.QueryRowContext(ctx, "SELECT VERSION()").Scan(&res.version); err != nil {
		return res, fmt.Errorf("read the MariaDB version: %w", err)
	}

	fmt.Fprintf(os.Stderr, "datapath: %s: creating %d schemas with %d rows each\n", m, o.work.schemas, o.work.rows)
	if err := o.work.setup(ctx, db); err != nil {
		return res, err
	}
	setupLast, err := binlogGTIDSeq(ctx, db)
	if err != nil {
		return res, err
	}
	if err := cl.waitDurable(ctx, setupLast, 2*time.Minute); err != nil {
		return res, err
	}
	// Seqno n is the n-th transaction of the binlog since the agent
	// started at its beginning, which RESET MASTER made GTID 0-101-n.
	for _, n := range agents {
		l := n.agent.Log()
		if got := l.DurableSeqno(); got != setupLast {
			return res, fmt.Errorf("agent %s: log durable at seqno %d after set-up, the binlog holds %d transactions", n.name, got, setupLast)
		}
		gtids, _, err := logRecords(l, setupLast, setupLast, primary.db.serverID)
		if err != nil {
			return res, fmt.Errorf("agent %s: %w", n.name, err)
		}
		if gtids[0] != setupLast {
			return res, fmt.Errorf("agent %s: seqno %d holds GTID 0-%d-%d: seqnos do not follow binlog order", n.name, setupLast, primary.db.serverID, gtids[0])
		}
	}

	clock := time.Now()
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	watches := make([]*durableWatch, len(agents))
	fsyncs := make([]fsyncTotals, len(agents))
	for i, n := range agents {
		watches[i] = watchDurable(wctx, n.agent.Log(), clock)
		if fsyncs[i], err = scrapeFsyncs(ctx, n.agent.HTTPAddr()); err != nil {
			return res, fmt.Errorf("agent %s: %w", n.name, err)
		}
	}
	res.loadBefore = loadAverage()
	fmt.Fprintf(os.Stderr, "datapath: %s: workload for %s (%d clients)\n", m, o.duration, o.work.clients)
	commits, err := o.work.run(ctx, db, clock, clock.Add(o.duration))
	if err != nil {
		return res, err
	}
	if err := cl.check(); err != nil {
		return res, err
	}
	last, err := binlogGTIDSeq(ctx, db)
	if err != nil {
		return res, err
	}
	if len(commits) == 0 {
		return res, errors.New("the workload committed no transaction")
	}
	if want := last - setupLast; uint64(len(commits)) != want {
		return res, fmt.Errorf("the clients committed %d transactions, the binlog holds %d after set-up", len(commits), want)
	}
	if err := cl.waitDurable(ctx, last, 2*time.Minute); err != nil {
		return res, err
	}
	wcancel()
	for _, w := range watches {
		<-w.done
	}
	res.loadAfter = loadAverage()

	res.commits = len(commits)
	rtt := make([]time.Duration, len(commits))
	var first, end time.Duration = commits[0].sent, 0
	for i, c := range commits {
		rtt[i] = c.returned - c.sent
		first, end = min(first, c.sent), max(end, c.returned)
	}
	res.elapsed = end - first
	res.client = newDistribution(rtt)

	for i, n := range agents {
		l, w := n.agent.Log(), watches[i]
		gtids, bytes, err := logRecords(l, setupLast+1, last, primary.db.serverID)
		if err != nil {
			return res, fmt.Errorf("agent %s: %w", n.name, err)
		}
		for j, g := range gtids {
			if s := setupLast + 1 + uint64(j); g != s {
				return res, fmt.Errorf("agent %s: seqno %d holds GTID 0-%d-%d: seqnos do not follow binlog order", n.name, s, primary.db.serverID, g)
			}
		}
		if i == 0 {
			res.txBytes = float64(bytes) / float64(len(gtids))
		}
		st := l.Stats()
		dRecords, dBytes, dSyncs := st.Records-w.stats.Records, st.Bytes-w.stats.Bytes, st.Fsyncs-w.stats.Fsyncs
		if dRecords != uint64(len(commits)) {
			return res, fmt.Errorf("agent %s: %d records appended during the workload, want %d", n.name, dRecords, len(commits))
		}
		lastAt, ok := w.durableAt(last)
		if !ok {
			return res, fmt.Errorf("agent %s: the watch missed seqno %d", n.name, last)
		}
		added := make([]time.Duration, len(commits))
		for j, c := range commits {
			at, ok := w.durableAt(c.gtidSeq) // seqno == GTID sequence, checked above
			if !ok {
				return res, fmt.Errorf("agent %s: the watch missed seqno %d", n.name, c.gtidSeq)
			}
			added[j] = at - c.returned
		}
		span := (lastAt - first).Seconds()
		lr := logResult{
			node: n.name, role: "replica",
			txPerSec: float64(len(commits)) / span,
			mbPerSec: float64(dBytes) / 1e6 / span,
			added:    newDistribution(added),
		}
		if i == 0 {
			lr.role = "primary"
		}
		if dSyncs > 0 {
			lr.recordsPerSync = float64(dRecords) / float64(dSyncs)
		}
		fs, err := scrapeFsyncs(ctx, n.agent.HTTPAddr())
		if err != nil {
			return res, fmt.Errorf("agent %s: %w", n.name, err)
		}
		if c := fs.count - fsyncs[i].count; c > 0 {
			lr.fsyncMean = time.Duration((fs.seconds - fsyncs[i].seconds) / c * float64(time.Second))
		}
		res.logs = append(res.logs, lr)
	}
	return res, nil
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

const logLibrary = "txlog (own format, CRC32C, group fsync)"

var header = []string{"mode", "clients", "schemas", "log", "tx/s client", "tx/s durable", "MB/s", "records/fsync", "fsync mean ms",
	"client tx p50 ms", "client tx p99 ms", "added p50 ms", "added p90 ms", "added p99 ms", "added max ms"}

// rows returns the table: one row per mode and log.
func rows(o options, results []result) [][]string {
	var out [][]string
	for _, r := range results {
		client := []string{
			r.mode.String(),
			strconv.Itoa(o.work.clients),
			strconv.Itoa(o.work.schemas),
		}
		clientRate := strconv.FormatFloat(float64(r.commits)/r.elapsed.Seconds(), 'f', 0, 64)
		clientLat := []string{ms(r.client.percentile(50)), ms(r.client.percentile(99))}
		if len(r.logs) == 0 {
			row := append(slices.Clone(client), "none", clientRate, "–", "–", "–", "–")
			row = append(row, clientLat...)
			out = append(out, append(row, "–", "–", "–", "–"))
			continue
		}
		for _, l := range r.logs {
			row := append(slices.Clone(client),
				fmt.Sprintf("%s (%s)", l.node, l.role),
				clientRate,
				strconv.FormatFloat(l.txPerSec, 'f', 0, 64),
				strconv.FormatFloat(l.mbPerSec, 'f', 2, 64),
				strconv.FormatFloat(l.recordsPerSync, 'f', 1, 64),
				ms(l.fsyncMean))
			row = append(row, clientLat...)
			out = append(out, append(row,
				ms(l.added.percentile(50)), ms(l.added.percentile(90)), ms(l.added.percentile(99)), ms(l.added.max())))
		}
	}
	return out
}

// notes are the lines printed under the table.
func notes(o options, results []result) []string {
	out := []string{
		fmt.Sprintf("log library: %s", logLibrary),
		fmt.Sprintf("machine: %d CPUs (%s), %s, %s %s/%s, data in %s", runtime.NumCPU(), cpuModel(), versionOf(results), runtime.Version(), runtime.GOOS, runtime.GOARCH, o.dir),
		fmt.Sprintf("workload: %s per mode, %d clients, %d schemas of %d rows; each transaction updates one row and inserts one with %d bytes of padding, one round trip",
			o.duration, o.work.clients, o.work.schemas, o.work.rows, o.work.rowSize),
	}
	for _, r := range results {
		size := ""
		if r.txBytes > 0 {
			size = fmt.Sprintf(", %.0f bytes per log record", r.txBytes)
		}
		out = append(out, fmt.Sprintf("%s: %d transactions in %.1fs%s, load average %s before, %s after",
			r.mode, r.commits, r.elapsed.Seconds(), size, r.loadBefore, r.loadAfter))
	}
	return out
}

func versionOf(results []result) string {
	if len(results) == 0 {
		return "MariaDB ?"
	}
	return "MariaDB " + results[0].version
}

func printText(w io.Writer, o options, results []result) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, strings.Join(header, "\t")+"\t")
	for _, r := range rows(o, results) {
		fmt.Fprintln(tw, strings.Join(r, "\t")+"\t")
	}
	tw.Flush()
	fmt.Fprintln(w)
	for _, n := range notes(o, results) {
		fmt.Fprintln(w, n)
	}
}

func printMarkdown(w io.Writer, o options, results []result) {
	fmt.Fprintf(w, "| %s |\n", strings.Join(header, " | "))
	fmt.Fprintf(w, "|%s\n", strings.Repeat("---|", len(header)))
	for _, r := range rows(o, results) {
		fmt.Fprintf(w, "| %s |\n", strings.Join(r, " | "))
	}
	fmt.Fprintln(w)
	for _, n := range notes(o, results) {
		fmt.Fprintf(w, "- %s\n", n)
	}
	fmt.Fprintf(w, "\ncommand: `go run ./bench/datapath %s`\n", strings.Join(os.Args[1:], " "))
}
