package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/quire-ha/quire/apply"
	"github.com/quire-ha/quire/binlog"
)

// replicaSettings are the my.cnf lines of every replica, Quire's and
// MariaDB's alike, beyond commonSettings. binlog_ignore_db=quire keeps
// Quire's restart-row updates out of the replica's binlog (as
// docs/applier.md recommends), as MariaDB keeps its mysql.gtid_slave_pos
// updates out.
var replicaSettings = []string{
	"binlog_ignore_db=quire",
}

// config is one way of applying the stream.
type config struct {
	quire bool
	// Quire: channels and block size (shard commit order).
	channels, block int
	// MariaDB: slave_parallel_threads and slave_parallel_mode.
	threads int
	mode    string
}

func (c config) replicator() string {
	if c.quire {
		return "Quire"
	}
	return "MariaDB"
}

// parallelism is the channel or thread count.
func (c config) parallelism() int {
	if c.quire {
		return c.channels
	}
	return c.threads
}

// detail is the block size or the parallel mode.
func (c config) detail() string {
	if c.quire {
		return "block " + strconv.Itoa(c.block)
	}
	if c.threads == 0 {
		return "serial"
	}
	return c.mode
}

func (c config) String() string {
	if c.quire {
		return fmt.Sprintf("Quire channels=%d, block=%d", c.channels, c.block)
	}
	if c.threads == 0 {
		return "MariaDB slave_parallel_threads=0"
	}
	return fmt.Sprintf("MariaDB slave_parallel_threads=%d, %s", c.threads, c.mode)
}

// measurement is one configuration's catch-up on one stream.
type measurement struct {
	variant    string
	round      int
	cfg        config
	elapsed    time.Duration
	tx         uint64
	binlog     binlogCounters // the replica's, during the catch-up
	cpu        cpuUse         // during the catch-up
	loadBefore string
	loadAfter  string
}

func (m measurement) txPerSec() float64 { return float64(m.tx) / m.elapsed.Seconds() }

// cpuPerTx is the CPU time the replica's mariadbd and this program used per
// transaction applied, in milliseconds.
func (m measurement) cpuPerTx() float64 {
	if m.tx == 0 {
		return 0
	}
	return (m.cpu.mariadbd + m.cpu.self) * m.elapsed.Seconds() * 1000 / float64(m.tx)
}

// catchUp applies the stream to a fresh copy of the snapshot with cfg and
// checks the result against the source's checksums: a table that differs is
// an error, so no number is ever reported for a wrong catch-up.
func catchUp(ctx context.Context, root string, serverID uint32, snapshot string, src *server, st stream, cfg config,
	tables []string, want map[string]string, timeout time.Duration, profile string, logger *slog.Logger) (m measurement, err error) {
	m.cfg, m.tx = cfg, st.records
	rep, err := cloneServer(ctx, root, "replica", serverID, snapshot, replicaSettings)
	if err != nil {
		return m, err
	}
	defer func() {
		if rerr := rep.remove(); rerr != nil {
			err = errors.Join(err, rerr)
		}
	}()
	db, err := rep.open(2)
	if err != nil {
		return m, err
	}
	defer db.Close()
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	// Both replicators start with the stream on the replica's disk: Quire's
	// in its transaction log, MariaDB's in its relay log (fetched first).
	if !cfg.quire {
		if err := fetchRelayLog(rctx, rep, src, st, cfg); err != nil {
			return m, err
		}
	}
	before, err := readBinlogCounters(rctx, db)
	if err != nil {
		return m, err
	}
	m.loadBefore = loadAverage()
	cpu0 := sampleCPU(rep.cmd.Process.Pid)
	if cfg.quire {
		var stopProfile func() error
		if profile != "" {
			if stopProfile, err = startProfile(profile); err != nil {
				return m, err
			}
		}
		m.elapsed, err = applyQuire(rctx, rep, st, cfg, logger)
		if stopProfile != nil {
			err = errors.Join(err, stopProfile())
		}
	} else {
		m.elapsed, err = applyMariaDB(rctx, rep, st)
	}
	m.cpu = sampleCPU(rep.cmd.Process.Pid).since(cpu0)
	m.loadAfter = loadAverage()
	if err != nil {
		if ctx.Err() == nil && rctx.Err() != nil {
			return m, fmt.Errorf("%s: not caught up after %s: %w", cfg, timeout, err)
		}
		return m, fmt.Errorf("%s: %w", cfg, err)
	}
	after, err := readBinlogCounters(ctx, db)
	if err != nil {
		return m, err
	}
	m.binlog = binlogCounters{commits: after.commits - before.commits, groups: after.groups - before.groups}
	got, err := checksums(ctx, db, tables)
	if err != nil {
		return m, err
	}
	if err := compareChecksums(tables, got, want); err != nil {
		return m, fmt.Errorf("%s: %w", cfg, err)
	}
	return m, nil
}

// applyQuire runs Quire's applier on the replica until it has applied every
// record of the stream, and returns how long that took from the start of
// Run.
func applyQuire(ctx context.Context, rep *server, st stream, cfg config, logger *slog.Logger) (time.Duration, error) {
	a, err := apply.New(apply.Config{
		DSN:         rep.config().FormatDSN(),
		Channels:    cfg.channels,
		BlockSize:   cfg.block,
		CommitOrder: apply.CommitShard,
		Logger:      logger,
	})
	if err != nil {
		return 0, err
	}
	var ci apply.Watermark
	ci.Set(st.records) // the whole stream is committed
	src := apply.SourceFunc(func(from uint64) (apply.Reader, error) {
		r, err := st.log.NewReader(from)
		if err != nil {
			return nil, err
		}
		return r, nil
	})
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	runErr := make(chan error, 1)
	applied := make(chan error, 1)
	start := time.Now()
	go func() { runErr <- a.Run(runCtx, src, &ci) }()
	go func() { applied <- a.WaitApplied(runCtx, st.records) }()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-applied:
			elapsed := time.Since(start)
			stop()
			rerr := <-runErr
			if err != nil {
				return 0, errors.Join(err, rerr)
			}
			return elapsed, nil
		case err := <-runErr:
			stop()
			if err == nil {
				err = errors.New("the applier's run ended")
			}
			return 0, fmt.Errorf("applied %d of %d records: %w", a.Applied(), st.records, err)
		case <-tick.C:
			// A stopped channel waits for an operator: nothing else will
			// un-stop it.
			s := a.Status()
			for _, c := range append(s.Channels, s.Serial) {
				if c.Stopped != nil {
					stop()
					<-runErr
					return 0, fmt.Errorf("channel %d stopped: %w", c.Channel, c.Stopped)
				}
			}
		}
	}
}

// fetchRelayLog points the replica at the source and runs only the IO
// thread until the whole stream is in the replica's relay log.
func fetchRelayLog(ctx context.Context, rep, src *server, st stream, cfg config) error {
	db, err := rep.open(1)
	if err != nil {
		return err
	}
	defer db.Close()
	mode := cfg.mode
	if mode == "" {
		mode = "conservative"
	}
	for _, q := range []string{
		fmt.Sprintf("SET GLOBAL slave_parallel_threads = %d", cfg.threads),
		fmt.Sprintf("SET GLOBAL slave_parallel_mode = '%s'", mode),
		fmt.Sprintf("CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT=%d, MASTER_USER='%s', MASTER_PASSWORD='%s', MASTER_LOG_FILE='%s', MASTER_LOG_POS=4, MASTER_USE_GTID=no",
			src.port, dbUser, dbPassword, st.firstFile),
		"START SLAVE IO_THREAD",
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("replica: %s: %w", q, err)
		}
	}
	for {
		s, err := queryRow(ctx, db, "SHOW SLAVE STATUS")
		if err != nil {
			return err
		}
		if s["Last_IO_Errno"] != "" && s["Last_IO_Errno"] != "0" {
			return fmt.Errorf("replica IO thread: error %s: %s", s["Last_IO_Errno"], s["Last_IO_Error"])
		}
		pos, _ := strconv.ParseUint(s["Read_Master_Log_Pos"], 10, 64)
		if (binlog.Position{File: s["Master_Log_File"], Pos: pos}).Compare(st.end) >= 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("replica IO thread at %s:%d, the stream ends at %s: %w", s["Master_Log_File"], pos, st.end, ctx.Err())
		case <-time.After(50 * time.Millisecond): // poll interval
		}
	}
}

// applyMariaDB starts the replica's SQL thread and waits until
// @@gtid_slave_pos reaches the stream's last GTID; it returns the time from
// START SLAVE SQL_THREAD to then. It waits with MASTER_GTID_WAIT, which the
// SQL thread wakes when it commits the GTID, rather than polling: a tight
// poll would take CPU from the replica it measures on a busy machine.
func applyMariaDB(ctx context.Context, rep *server, st stream) (time.Duration, error) {
	db, err := rep.open(2)
	if err != nil {
		return 0, err
	}
	defer db.Close()
	conn, err := db.Conn(ctx)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	start := time.Now()
	if _, err := conn.ExecContext(ctx, "START SLAVE SQL_THREAD"); err != nil {
		return 0, fmt.Errorf("START SLAVE SQL_THREAD: %w", err)
	}
	for {
		// 0: reached; -1: not within the timeout; NULL: an error.
		var got sql.NullInt64
		if err := conn.QueryRowContext(ctx, "SELECT MASTER_GTID_WAIT(?, 0.5)", st.lastGTID).Scan(&got); err != nil {
			if ctx.Err() != nil {
				break
			}
			return 0, fmt.Errorf("MASTER_GTID_WAIT(%s): %w", st.lastGTID, err)
		}
		if got.Valid && got.Int64 == 0 {
			elapsed := time.Since(start)
			var pos string
			if err := conn.QueryRowContext(ctx, "SELECT @@gtid_slave_pos").Scan(&pos); err != nil {
				return 0, fmt.Errorf("read @@gtid_slave_pos: %w", err)
			}
			if pos != st.lastGTID {
				return 0, fmt.Errorf("MASTER_GTID_WAIT(%s) returned, but @@gtid_slave_pos is %s", st.lastGTID, pos)
			}
			return elapsed, nil
		}
		s, err := queryRow(ctx, db, "SHOW SLAVE STATUS")
		if err != nil {
			return 0, err
		}
		if s["Last_SQL_Errno"] != "0" || s["Slave_SQL_Running"] != "Yes" {
			return 0, fmt.Errorf("replica SQL thread %s at %s: error %s: %s", s["Slave_SQL_Running"], s["Gtid_Slave_Pos"], s["Last_SQL_Errno"], s["Last_SQL_Error"])
		}
		if ctx.Err() != nil {
			break
		}
	}
	qctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	pos := "unknown"
	_ = db.QueryRowContext(qctx, "SELECT @@gtid_slave_pos").Scan(&pos)
	return 0, fmt.Errorf("replica at GTID %s, the stream ends at %s: %w", pos, st.lastGTID, ctx.Err())
}

// compareChecksums returns an error naming every table whose checksum on
// the replica (got) differs from the source's (want), or is missing.
func compareChecksums(tables []string, got, want map[string]string) error {
	var differ []string
	for _, t := range tables {
		g, ok := got[t]
		if !ok {
			g = "nothing"
		}
		if !ok || g != want[t] {
			differ = append(differ, fmt.Sprintf("%s: CHECKSUM TABLE %s on the replica, %s on the source", t, g, want[t]))
		}
	}
	if len(differ) == 0 {
		return nil
	}
	return fmt.Errorf("DATA DIFFERS FROM THE SOURCE after the catch-up (%d of %d tables): %s; "+
		"the replica applied the stream wrongly, so its rate means nothing: find the bug (the applier's or the benchmark's) before measuring again",
		len(differ), len(tables), strings.Join(differ, "; "))
}

// startProfile starts a CPU profile of this program into path and returns
// the function that stops it.
func startProfile(path string) (func() error, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("-cpuprofile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("-cpuprofile: %w", err)
	}
	return func() error {
		pprof.StopCPUProfile()
		if err := f.Close(); err != nil {
			return fmt.Errorf("-cpuprofile: %w", err)
		}
		return nil
	}, nil
}
