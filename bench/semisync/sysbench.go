package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// workload is sysbench oltp_write_only: one sysbench process per client,
// each with one thread, client i on schema sb<i mod schemas + 1>, every
// schema with one table sbtest1 of tableSize rows.
type workload struct {
	clients, schemas, tableSize int
	duration                    time.Duration
}

// schema returns the schema client i writes to.
func (w workload) schema(i int) string { return fmt.Sprintf("sb%d", i%w.schemas+1) }

// seconds is the duration as sysbench's --time takes it.
func (w workload) seconds() int { return int(math.Ceil(w.duration.Seconds())) }

// args returns sysbench's arguments for one process on schema against p.
func (w workload) args(p *server, schema string) []string {
	return []string{
		"oltp_write_only",
		"--db-driver=mysql",
		"--mysql-host=127.0.0.1",
		"--mysql-port=" + strconv.Itoa(p.port),
		"--mysql-user=" + p.user,
		"--mysql-password=" + p.password,
		"--mysql-db=" + schema,
		"--tables=1",
		"--table-size=" + strconv.Itoa(w.tableSize),
	}
}

// commandLine is one client's sysbench run command, for the report.
func (w workload) commandLine() string {
	return fmt.Sprintf("sysbench oltp_write_only --db-driver=mysql --mysql-db=sb<n> --tables=1 --table-size=%d --threads=1 --time=%d --report-interval=0 --histogram=on --percentile=95 run",
		w.tableSize, w.seconds())
}

// prepare creates the schemas and runs sysbench prepare in each, all at
// once.
func (w workload) prepare(ctx context.Context, p *server) error {
	for s := range w.schemas {
		if err := p.exec(ctx, fmt.Sprintf("CREATE DATABASE sb%d", s+1)); err != nil {
			return err
		}
	}
	errs := make([]error, w.schemas)
	var wg sync.WaitGroup
	for s := range w.schemas {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _, errs[s] = runProcess(ctx, "sysbench", append(w.args(p, w.schema(s)), "prepare")...)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// run starts the clients' sysbench processes together and returns each
// one's result and the CPU time they used.
func (w workload) run(ctx context.Context, p *server) ([]sysbenchResult, time.Duration, error) {
	results := make([]sysbenchResult, w.clients)
	cpu := make([]time.Duration, w.clients)
	errs := make([]error, w.clients)
	var wg sync.WaitGroup
	for i := range w.clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			args := append(w.args(p, w.schema(i)),
				"--threads=1",
				"--time="+strconv.Itoa(w.seconds()),
				"--events=0",
				"--report-interval=0",
				"--histogram=on",
				"--percentile=95",
				"run")
			out, used, err := runProcess(ctx, "sysbench", args...)
			cpu[i] = used
			if err != nil {
				errs[i] = fmt.Errorf("client %d: %w", i+1, err)
				return
			}
			if results[i], err = parseSysbench(out); err != nil {
				errs[i] = fmt.Errorf("client %d: sysbench output: %w\n%s", i+1, err, tailLines(out, 30))
			}
		}()
	}
	wg.Wait()
	var total time.Duration
	for _, c := range cpu {
		total += c
	}
	return results, total, errors.Join(errs...)
}

// runProcess runs a program to completion and returns its standard output
// and the CPU time it used. The process is killed if ctx is done.
func runProcess(ctx context.Context, name string, args ...string) ([]byte, time.Duration, error) {
	path, err := lookPath(name)
	if err != nil {
		return nil, 0, err
	}
	prog, args := split.command(split.primary, path, args...)
	cmd := exec.CommandContext(ctx, prog, args...)
	// Its own process group keeps a terminal's Ctrl-C away from it (ctx
	// stops it); the death signal covers a killed benchmark.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	var used time.Duration
	if cmd.ProcessState != nil {
		used = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil, used, ctx.Err()
		}
		return nil, used, fmt.Errorf("%s %s: %w\n%s%s", name, args[len(args)-1], err, tailLines(stdout.Bytes(), 20), tailLines(stderr.Bytes(), 20))
	}
	return stdout.Bytes(), used, nil
}

func tailLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n") + "\n"
}

// sysbenchResult is what one sysbench run printed.
type sysbenchResult struct {
	transactions uint64
	tps          float64 // transactions per second, as sysbench computed it
	errors       uint64  // ignored errors (deadlocks sysbench retried)
	reconnects   uint64
	seconds      float64 // total time
	avgMS, p95MS float64 // sysbench's own latency summary
	hist         histogram
}

// histogram is sysbench's latency histogram: count of transactions per
// bucket value (ms). sysbench's buckets are the same in every process, so
// histograms of concurrent processes add up exactly.
type histogram map[float64]uint64

// add adds o's counts to h.
func (h histogram) add(o histogram) {
	for v, n := range o {
		h[v] += n
	}
}

// total returns the number of transactions counted.
func (h histogram) total() uint64 {
	var t uint64
	for _, n := range h {
		t += n
	}
	return t
}

// percentile returns the nearest-rank p-th percentile (0 < p ≤ 100): the
// smallest bucket value with at least ⌈p/100·total⌉ transactions at or
// below it, as sysbench computes its own; 0 for an empty histogram.
func (h histogram) percentile(p float64) float64 {
	total := h.total()
	if total == 0 {
		return 0
	}
	rank := uint64(math.Ceil(p / 100 * float64(total)))
	rank = max(rank, 1)
	values := make([]float64, 0, len(h))
	for v := range h {
		values = append(values, v)
	}
	slices.Sort(values)
	var seen uint64
	for _, v := range values {
		seen += h[v]
		if seen >= rank {
			return v
		}
	}
	return values[len(values)-1]
}

// mean returns the count-weighted mean of the bucket values.
func (h histogram) mean() float64 {
	var sum float64
	var n uint64
	for v, c := range h {
		sum += v * float64(c)
		n += c
	}
	if n == 0 {
		return 0
	}
	return sum / float64(n)
}

var (
	// "       1.234 |****                 12"
	histLine = regexp.MustCompile(`^\s*([0-9]+(?:\.[0-9]+)?)\s+\|\**\s*([0-9]+)\s*$`)
	// "    transactions:     3027   (1511.70 per sec.)"
	countLine = regexp.MustCompile(`^\s*(transactions|ignored errors|reconnects):\s+([0-9]+)\s+\(([0-9.]+) per sec\.\)\s*$`)
	// "         95th percentile:      1.03", "    total time:     2.0020s"
	valueLine = regexp.MustCompile(`^\s*(avg|95th percentile|total time):\s+([0-9.]+)s?\s*$`)
)

// parseSysbench reads the output of one sysbench 1.0 run with
// --histogram=on and --percentile=95.
func parseSysbench(out []byte) (sysbenchResult, error) {
	r := sysbenchResult{hist: histogram{}}
	found := map[string]bool{}
	inHist := false
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "Latency histogram") {
			inHist = true
			found["histogram"] = true
			continue
		}
		if inHist {
			if m := histLine.FindStringSubmatch(line); m != nil {
				v, err1 := strconv.ParseFloat(m[1], 64)
				n, err2 := strconv.ParseUint(m[2], 10, 64)
				if err := errors.Join(err1, err2); err != nil {
					return r, fmt.Errorf("histogram line %q: %w", line, err)
				}
				r.hist[v] += n
				continue
			}
			if strings.Contains(line, "distribution") {
				continue // the column header
			}
			inHist = false
		}
		if m := countLine.FindStringSubmatch(line); m != nil {
			n, err := strconv.ParseUint(m[2], 10, 64)
			if err != nil {
				return r, fmt.Errorf("%q: %w", line, err)
			}
			switch m[1] {
			case "transactions":
				r.transactions = n
				if r.tps, err = strconv.ParseFloat(m[3], 64); err != nil {
					return r, fmt.Errorf("%q: %w", line, err)
				}
			case "ignored errors":
				r.errors = n
			case "reconnects":
				r.reconnects = n
			}
			found[m[1]] = true
			continue
		}
		if m := valueLine.FindStringSubmatch(line); m != nil {
			v, err := strconv.ParseFloat(m[2], 64)
			if err != nil {
				return r, fmt.Errorf("%q: %w", line, err)
			}
			switch m[1] {
			case "avg":
				r.avgMS = v
			case "95th percentile":
				r.p95MS = v
			case "total time":
				r.seconds = v
			}
			found[m[1]] = true
		}
	}
	if err := sc.Err(); err != nil {
		return r, err
	}
	var missing []string
	for _, k := range []string{"transactions", "ignored errors", "total time", "avg", "95th percentile", "histogram"} {
		if !found[k] {
			missing = append(missing, k)
		}
	}
	if len(missing) > 0 {
		return r, fmt.Errorf("no %s in the output (sysbench 1.0 with --histogram=on and --percentile=95?)", strings.Join(missing, ", "))
	}
	if got := r.hist.total(); got != r.transactions {
		return r, fmt.Errorf("the latency histogram counts %d transactions, the summary %d", got, r.transactions)
	}
	return r, nil
}
