package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/quire-ha/quire/txlog"
)

// counters are what the benchmark reads just before and just after the
// clients run.
type counters struct {
	at      time.Time
	dbCPU   []time.Duration // each node's mariadbd
	self    time.Duration   // this process: the agents in Quire modes
	selfIO  uint64          // this process's read and write system calls
	machine machineCPU
	semi    map[string]float64   // the primary's Rpl_semi_sync_master_* status
	logs    []txlog.Stats        // each agent's log (Quire modes)
	metrics []map[string]float64 // each agent's fsync metrics
}

const (
	fsyncMetric = "quire_txlog_fsync_duration_seconds"
	blockMetric = "quire_apply_block_size_transactions"
	ackMetric   = "quire_ship_replica_ack_seconds"
)

// sumLabeled adds up the series of metric name (with any labels).
func sumLabeled(m map[string]float64, name string) float64 {
	var t float64
	for k, v := range m {
		if k == name || strings.HasPrefix(k, name+"{") {
			t += v
		}
	}
	return t
}

// snapshot reads the counters.
func (c *cluster) snapshot(ctx context.Context) (counters, error) {
	s := counters{at: time.Now(), self: selfCPU(), selfIO: selfSyscalls(), machine: readMachineCPU()}
	for _, n := range c.nodes {
		d, err := procCPU(n.db.pid())
		if err != nil {
			return s, fmt.Errorf("mariadbd %s: %w", n.name, err)
		}
		s.dbCPU = append(s.dbCPU, d)
		if n.agent == nil {
			continue
		}
		s.logs = append(s.logs, n.agent.Log().Stats())
		m, err := scrapeMetrics(ctx, n.agent.HTTPAddr(), fsyncMetric+"_", blockMetric+"_", ackMetric+"_")
		if err != nil {
			return s, fmt.Errorf("agent %s: %w", n.name, err)
		}
		s.metrics = append(s.metrics, m)
	}
	var err error
	s.semi, err = c.primary().status(ctx, "Rpl_semi_sync_master_")
	return s, err
}

// runResult is one mode's run in one round.
type runResult struct {
	round   int
	mode    mode
	version string
	setup   time.Duration // fresh cluster to the clients' start

	loadBefore, loadAfter string
	clients               []sysbenchResult
	hist                  histogram // all clients' latencies
	tx                    uint64
	tps                   float64 // sum of the clients' rates
	errors, reconnects    uint64

	wall time.Duration // between the two snapshots
	// CPU time used during the run.
	cpuPrimary, cpuReplicas, cpuSelf, cpuSysbench time.Duration
	cpuOthers, iowait                             time.Duration      // everything else on the machine; CPUs idle waiting for I/O
	semi                                          map[string]float64 // change of the primary's Rpl_semi_sync_master_* counters
	logs                                          []logUse           // each agent's log (Quire modes)
	ship                                          durations          // per transaction: durable in db1's log → in the K-th replica's
	lag                                           uint64             // the replicas' largest apply lag (transactions) when the clients stopped
	blocks, blockTx                               float64            // blocks the replicas' appliers committed, and the transactions in them
	acks, ackSeconds                              float64            // batches the primary's agent timed from sending to a replica's durable report, and their total time
	syscalls                                      uint64             // read and write system calls of this process (the agents)
}

// logUse is one agent's log during a run.
type logUse struct {
	records, fsyncs          uint64
	fsyncSeconds, fsyncCount float64
}

// usage fills the CPU, semi-sync and log figures from two snapshots.
func (r *runResult) usage(c0, c1 counters, sysbench time.Duration) {
	r.wall = c1.at.Sub(c0.at)
	r.cpuPrimary = c1.dbCPU[0] - c0.dbCPU[0]
	for i := 1; i < len(c1.dbCPU); i++ {
		r.cpuReplicas += c1.dbCPU[i] - c0.dbCPU[i]
	}
	r.cpuSelf = c1.self - c0.self
	r.syscalls = c1.selfIO - c0.selfIO
	r.cpuSysbench = sysbench
	ours := r.cpuPrimary + r.cpuReplicas + r.cpuSelf + r.cpuSysbench
	r.cpuOthers = max(0, c1.machine.busy-c0.machine.busy-ours)
	r.iowait = c1.machine.iowait - c0.machine.iowait
	r.semi = map[string]float64{}
	for k, v := range c1.semi {
		r.semi[k] = v - c0.semi[k]
	}
	for i := range c1.logs {
		r.logs = append(r.logs, logUse{
			records:      c1.logs[i].Records - c0.logs[i].Records,
			fsyncs:       c1.logs[i].Fsyncs - c0.logs[i].Fsyncs,
			fsyncSeconds: c1.metrics[i][fsyncMetric+"_sum"] - c0.metrics[i][fsyncMetric+"_sum"],
			fsyncCount:   c1.metrics[i][fsyncMetric+"_count"] - c0.metrics[i][fsyncMetric+"_count"],
		})
		if i == 0 {
			r.acks = sumLabeled(c1.metrics[i], ackMetric+"_count") - sumLabeled(c0.metrics[i], ackMetric+"_count")
			r.ackSeconds = sumLabeled(c1.metrics[i], ackMetric+"_sum") - sumLabeled(c0.metrics[i], ackMetric+"_sum")
		}
		if i > 0 {
			r.blocks += sumLabeled(c1.metrics[i], blockMetric+"_count") - sumLabeled(c0.metrics[i], blockMetric+"_count")
			r.blockTx += sumLabeled(c1.metrics[i], blockMetric+"_sum") - sumLabeled(c0.metrics[i], blockMetric+"_sum")
		}
	}
}

// report collects the runs and prints them.
type report struct {
	opts    options
	started time.Time
	runs    []runResult
}

// table is a header and rows of cells.
type table struct {
	header []string
	rows   [][]string
}

func (t table) text(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, strings.Join(t.header, "\t")+"\t")
	for _, r := range t.rows {
		fmt.Fprintln(tw, strings.Join(r, "\t")+"\t")
	}
	tw.Flush()
}

func (t table) markdown(w io.Writer) {
	fmt.Fprintf(w, "| %s |\n", strings.Join(t.header, " | "))
	fmt.Fprintf(w, "|%s\n", strings.Repeat("---|", len(t.header)))
	for _, r := range t.rows {
		fmt.Fprintf(w, "| %s |\n", strings.Join(r, " | "))
	}
}

func f0(v float64) string { return strconv.FormatFloat(v, 'f', 0, 64) }
func f1(v float64) string { return strconv.FormatFloat(v, 'f', 1, 64) }
func f2(v float64) string { return strconv.FormatFloat(v, 'f', 2, 64) }

// msf formats milliseconds with enough digits for small values.
func msf(v float64) string {
	switch a := max(v, -v); {
	case a < 10:
		return f2(v)
	case a < 100:
		return f1(v)
	default:
		return f0(v)
	}
}

func cores(d, wall time.Duration) string {
	if wall <= 0 {
		return "–"
	}
	return f2(d.Seconds() / wall.Seconds())
}

// roundTable is one round: a row per mode.
func (rep *report) roundTable(round int) table {
	t := table{header: []string{"mode", "replication", "TPS", "p95 ms", "avg ms", "transactions", "errors", "CPU cores: ours", "others", "iowait", "load 1m before", "after", "set-up s"}}
	for _, r := range rep.runs {
		if r.round != round {
			continue
		}
		ours := r.cpuPrimary + r.cpuReplicas + r.cpuSelf + r.cpuSysbench
		t.rows = append(t.rows, []string{
			r.mode.name, r.mode.title, f0(r.tps), msf(r.hist.percentile(95)), msf(r.hist.mean()),
			strconv.FormatUint(r.tx, 10), strconv.FormatUint(r.errors, 10),
			cores(ours, r.wall), cores(r.cpuOthers, r.wall), cores(r.iowait, r.wall),
			firstField(r.loadBefore), firstField(r.loadAfter), f0(r.setup.Seconds()),
		})
	}
	return t
}

func orDash(s string) string {
	if s == "" {
		return "–"
	}
	return s
}

func firstField(s string) string {
	f := strings.Fields(s)
	if len(f) == 0 {
		return "?"
	}
	return f[0]
}

// modeRuns returns the runs of mode name, in round order.
func (rep *report) modeRuns(name string) []runResult {
	var out []runResult
	for _, r := range rep.runs {
		if r.mode.name == name {
			out = append(out, r)
		}
	}
	return out
}

// means returns a mode's mean TPS and mean p95 over its runs.
func means(runs []runResult) (tps, p95 float64) {
	for _, r := range runs {
		tps += r.tps
		p95 += r.hist.percentile(95)
	}
	n := float64(len(runs))
	return tps / n, p95 / n
}

// summaryTable is the mean over rounds of every mode and its ratios to B.
func (rep *report) summaryTable() table {
	t := table{header: []string{"mode", "replication", "TPS (mean)", "TPS per round", "p95 ms (mean)", "p95 per round", "TPS ÷ B", "p95 ÷ B", "TPS ÷ B per round", "p95 ÷ B per round"}}
	baseRuns := rep.modeRuns(baseline)
	var bTPS, bP95 float64
	if len(baseRuns) > 0 {
		bTPS, bP95 = means(baseRuns)
	}
	for _, m := range rep.opts.modes {
		runs := rep.modeRuns(m.name)
		if len(runs) == 0 {
			continue
		}
		tps, p95 := means(runs)
		var perTPS, perP95, ratioTPS, ratioP95 []string
		for _, r := range runs {
			perTPS = append(perTPS, f0(r.tps))
			perP95 = append(perP95, msf(r.hist.percentile(95)))
			// The same round's B ran minutes apart at most: the paired
			// ratio is less exposed to drift in the machine's load.
			for _, b := range baseRuns {
				if b.round == r.round {
					ratioTPS = append(ratioTPS, f2(r.tps/b.tps))
					ratioP95 = append(ratioP95, f2(r.hist.percentile(95)/b.hist.percentile(95)))
				}
			}
		}
		rt, rp := "–", "–"
		if bTPS > 0 && bP95 > 0 {
			rt, rp = f2(tps/bTPS), f2(p95/bP95)
		}
		t.rows = append(t.rows, []string{m.name, m.title, f0(tps), strings.Join(perTPS, ", "), msf(p95), strings.Join(perP95, ", "), rt, rp,
			orDash(strings.Join(ratioTPS, ", ")), orDash(strings.Join(ratioP95, ", "))})
	}
	return t
}

// profileTable shows where the commit time and the CPU go, pooled over
// every round of a mode.
func (rep *report) profileTable() table {
	t := table{header: []string{"mode", "commit waits for ACK: avg ms", "waits/tx",
		"db1 log fsync ms", "db1 records/fsync", "replica logs fsync ms", "replica records/fsync", "batch sent → replica's ack: avg ms", "db1 log → K-th replica log: avg ms", "p95 ms",
		"CPU ms/tx: db1", "db2+db3", "agents", "sysbench", "replica apply lag at end (tx)", "replica tx/block", "agents' read+write syscalls/tx"}}
	for _, m := range rep.opts.modes {
		runs := rep.modeRuns(m.name)
		if len(runs) == 0 {
			continue
		}
		var tx, waits, waitUS float64
		var p, rep logUse
		var ship durations
		var cpuP, cpuR, cpuS, cpuB time.Duration
		var lags []string
		var blocks, blockTx, acks, ackSeconds float64
		var syscalls uint64
		for _, r := range runs {
			syscalls += r.syscalls
			acks += r.acks
			ackSeconds += r.ackSeconds
			blocks += r.blocks
			blockTx += r.blockTx
			tx += float64(r.tx)
			waits += r.semi["Rpl_semi_sync_master_tx_waits"]
			waitUS += r.semi["Rpl_semi_sync_master_tx_wait_time"]
			for i, l := range r.logs {
				dst := &rep
				if i == 0 {
					dst = &p
				}
				dst.records += l.records
				dst.fsyncs += l.fsyncs
				dst.fsyncSeconds += l.fsyncSeconds
				dst.fsyncCount += l.fsyncCount
			}
			ship = append(ship, r.ship...)
			cpuP += r.cpuPrimary
			cpuR += r.cpuReplicas
			cpuS += r.cpuSelf
			cpuB += r.cpuSysbench
			lags = append(lags, strconv.FormatUint(r.lag, 10))
		}
		perTx := func(d time.Duration) string {
			if tx == 0 {
				return "–"
			}
			return f2(float64(d.Milliseconds()) / tx)
		}
		row := []string{m.name, "–", "–", "–", "–", "–", "–", "–", "–", "–", perTx(cpuP), perTx(cpuR), perTx(cpuS), perTx(cpuB), strings.Join(lags, ", "), "–", "–"}
		if waits > 0 {
			row[1] = msf(waitUS / waits / 1000)
			row[2] = f2(waits / tx)
		}
		if m.quire {
			if p.fsyncCount > 0 {
				row[3] = msf(p.fsyncSeconds / p.fsyncCount * 1000)
			}
			if p.fsyncs > 0 {
				row[4] = f1(float64(p.records) / float64(p.fsyncs))
			}
			if rep.fsyncCount > 0 {
				row[5] = msf(rep.fsyncSeconds / rep.fsyncCount * 1000)
			}
			if rep.fsyncs > 0 {
				row[6] = f1(float64(rep.records) / float64(rep.fsyncs))
			}
			if blocks > 0 {
				row[15] = f2(blockTx / blocks)
			}
			if acks > 0 {
				row[7] = msf(ackSeconds / acks * 1000)
			}
			if syscalls > 0 && tx > 0 {
				row[16] = f1(float64(syscalls) / tx)
			}
			if len(ship) > 0 {
				row[8] = msf(float64(ship.mean()) / 1e6)
				row[9] = msf(float64(ship.percentile(95)) / 1e6)
			}
		} else {
			row[12] = "–" // nothing of the benchmark process is in the path
		}
		t.rows = append(t.rows, row)
	}
	return t
}

func (rep *report) printRound(w io.Writer, round int) {
	fmt.Fprintf(w, "\nround %d\n", round)
	rep.roundTable(round).text(w)
}

func (rep *report) printSummary(w io.Writer) {
	fmt.Fprintf(w, "\nsummary (mean over %d rounds)\n", rep.opts.rounds)
	rep.summaryTable().text(w)
	fmt.Fprintln(w, "\nwhere the time goes (pooled over the rounds)")
	rep.profileTable().text(w)
	fmt.Fprintln(w)
	for _, n := range rep.notes() {
		fmt.Fprintln(w, n)
	}
}

// notes are the lines printed under the tables.
func (rep *report) notes() []string {
	o := rep.opts
	version := "?"
	if len(rep.runs) > 0 {
		version = rep.runs[0].version
	}
	out := []string{
		fmt.Sprintf("machine: %d CPUs (%s), MariaDB %s, %s %s/%s, data in %s", runtime.NumCPU(), cpuModel(), version, runtime.Version(), runtime.GOOS, runtime.GOARCH, o.dir),
		fmt.Sprintf("workload: sysbench oltp_write_only, %d clients (one sysbench process with one thread each) over %d schemas with one table of %d rows, %ds per run, %d rounds",
			o.work.clients, o.work.schemas, o.work.tableSize, o.work.seconds(), o.rounds),
		"client: " + o.work.commandLine(),
		fmt.Sprintf("finished %s after %s", time.Now().Format(time.DateTime), time.Since(rep.started).Round(time.Second)),
	}
	if split.on {
		out = append(out, fmt.Sprintf("CPUs split (-split-cpus): db1 and sysbench on CPU %d, db2 and db3 on CPU %d, this process (the agents) on CPU %d",
			split.primary, split.replica, split.own))
	}
	return out
}

// markdown writes every table and the notes.
func (rep *report) markdown(w io.Writer) {
	fmt.Fprintf(w, "command: `go run ./bench/semisync %s`\n\n", strings.Join(os.Args[1:], " "))
	for round := 1; round <= rep.opts.rounds; round++ {
		fmt.Fprintf(w, "Round %d:\n\n", round)
		rep.roundTable(round).markdown(w)
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "Summary (mean over %d rounds):\n\n", rep.opts.rounds)
	rep.summaryTable().markdown(w)
	fmt.Fprintln(w, "\nWhere the time goes (pooled over the rounds):")
	fmt.Fprintln(w)
	rep.profileTable().markdown(w)
	fmt.Fprintln(w)
	for _, n := range rep.notes() {
		fmt.Fprintf(w, "- %s\n", n)
	}
}
