package apply

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// sysbenchLike runs n write transactions (sysbench oltp_write_only style:
// two updates, a delete and an insert) over 8 schemas from 8 sessions.
func sysbenchLike(t testing.TB, db *sql.DB, n int) {
	t.Helper()
	const schemas, rows = 8, 2000
	var setup []string
	for s := range schemas {
		setup = append(setup, fmt.Sprintf("CREATE DATABASE sb%d", s),
			fmt.Sprintf("CREATE TABLE sb%d.t (id INT PRIMARY KEY, k INT NOT NULL, c CHAR(120) NOT NULL, pad CHAR(60) NOT NULL, KEY (k))", s))
		var vals []string
		for i := 1; i <= rows; i++ {
			vals = append(vals, fmt.Sprintf("(%d, %d, REPEAT('c', 120), REPEAT('p', 60))", i, i))
		}
		setup = append(setup, fmt.Sprintf("INSERT INTO sb%d.t VALUES %s", s, strings.Join(vals, ",")))
	}
	for _, q := range setup {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	per := n / 8
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx := context.Background()
			c, err := db.Conn(ctx)
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			r := rand.New(rand.NewPCG(uint64(w), 1))
			for i := range per {
				s := r.IntN(schemas)
				id := 1 + r.IntN(rows)
				q := fmt.Sprintf("BEGIN; UPDATE sb%[1]d.t SET k=k+1 WHERE id=%[2]d; UPDATE sb%[1]d.t SET c='%[3]d' WHERE id=%[4]d; "+
					"DELETE FROM sb%[1]d.t WHERE id=%[5]d; INSERT INTO sb%[1]d.t VALUES (%[5]d, %[2]d, REPEAT('x', 120), REPEAT('y', 60)); COMMIT",
					s, id, i, 1+r.IntN(rows), 1+r.IntN(rows))
				if _, err := c.ExecContext(ctx, q); err != nil {
					if isErrNo(err, erLockDeadlock) {
						c.ExecContext(ctx, "ROLLBACK")
						continue
					}
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// TestThroughputTable prints how fast the applier replays a sysbench-like
// write workload with several configurations. It is a benchmark program,
// not a test: it runs only when QUIRE_APPLY_BENCH is set to the number of
// source transactions (e.g. QUIRE_APPLY_BENCH=20000), and asserts nothing
// but equal data.
func TestThroughputTable(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("QUIRE_APPLY_BENCH"))
	if n <= 0 {
		t.Skip("set QUIRE_APPLY_BENCH=<transactions> to run")
	}
	src := startInstances(t, 1, 100)[0]
	start := time.Now()
	sysbenchLike(t, src.DB, n)
	srcTime := time.Since(start)
	recs := binlogRecords(t, src)
	type row struct {
		channels, block int
		order           CommitOrder
		d               time.Duration
		commits         uint64
	}
	var rows []row
	for i, c := range []struct {
		channels, block int
		order           CommitOrder
	}{
		{1, 1, CommitShard}, {4, 1, CommitShard}, {8, 1, CommitShard},
		{1, 10, CommitShard}, {4, 10, CommitShard}, {8, 10, CommitShard},
		{4, 1, CommitGlobal}, {4, 10, CommitGlobal},
	} {
		rep := startInstances(t, 1, uint32(110+i))[0]
		a, err := New(Config{DSN: rep.DSN(""), Channels: c.channels, BlockSize: c.block, CommitOrder: c.order})
		if err != nil {
			t.Fatal(err)
		}
		// Only the data transactions count: apply the setup first.
		runApplier(t, a, &memSource{recs}, 8*3, 5*time.Minute)
		var before int64
		rep.DB.QueryRow("SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME='BINLOG_COMMITS'").Scan(&before)
		t0 := time.Now()
		runApplier(t, a, &memSource{recs}, uint64(len(recs)), 5*time.Minute)
		d := time.Since(t0)
		var after int64
		rep.DB.QueryRow("SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME='BINLOG_COMMITS'").Scan(&after)
		sameData(t, src.DB, rep.DB)
		rows = append(rows, row{c.channels, c.block, c.order, d, uint64(after - before)})
		if err := rep.Stop(); err != nil {
			t.Fatal(err)
		}
	}
	var flush, sync string
	src.DB.QueryRow("SELECT @@innodb_flush_log_at_trx_commit, @@sync_binlog").Scan(&flush, &sync)
	data := len(recs) - 8*3
	fmt.Printf("\napply throughput: %d source transactions (%d records after the setup), sysbench-like writes on 8 schemas\n", n, data)
	fmt.Printf("source: %v with 8 sessions (%.0f tx/s); replica innodb_flush_log_at_trx_commit=%s sync_binlog=%s\n\n", srcTime.Round(time.Millisecond), float64(n)/srcTime.Seconds(), flush, sync)
	fmt.Printf("%-8s %-9s %-6s %10s %10s %14s\n", "order", "channels", "block", "seconds", "tx/s", "binlog commits")
	for _, r := range rows {
		fmt.Printf("%-8s %-9d %-6d %10.2f %10.0f %14d\n", r.order, r.channels, r.block, r.d.Seconds(), float64(data)/r.d.Seconds(), r.commits)
	}
	fmt.Println()
}
