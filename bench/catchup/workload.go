package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/go-sql-driver/mysql"
)

// workload is the write stream recorded on the source: sysbench's
// oltp_write_only transaction, written in Go because sysbench keeps all its
// tables in one schema and the stream needs several (Quire's shard is the
// schema). Each transaction, on the table sbtest1 of one schema, is
//
//	UPDATE sbtest1 SET k=k+1 WHERE id=?        (index update)
//	UPDATE sbtest1 SET c=? WHERE id=?          (non-index update)
//	DELETE FROM sbtest1 WHERE id=?
//	INSERT INTO sbtest1 (id, k, c, pad) VALUES (?, ?, ?, ?)   (the deleted id)
//
// with sysbench's column values, sent as one round trip.
type workload struct {
	schemas int     // schemas sb0.. sb<schemas-1>, one sbtest1 table each
	rows    int     // rows per table
	clients int     // concurrent sessions
	tx      int     // transactions to commit
	hot     float64 // share of transactions on sb0; 0 means uniform
}

// tables returns the qualified names of the workload's tables.
func (w workload) tables() []string {
	out := make([]string, w.schemas)
	for s := range w.schemas {
		out[s] = fmt.Sprintf("sb%d.sbtest1", s)
	}
	return out
}

// prepare creates the schemas and fills the tables, as sysbench's prepare
// does (the secondary index is created after the rows are in).
func (w workload) prepare(ctx context.Context, db *sql.DB) error {
	r := rand.New(rand.NewPCG(42, 42))
	for s := range w.schemas {
		for _, q := range []string{
			fmt.Sprintf("CREATE DATABASE sb%d", s),
			fmt.Sprintf("CREATE TABLE sb%d.sbtest1 (id INTEGER NOT NULL AUTO_INCREMENT, k INTEGER DEFAULT '0' NOT NULL, c CHAR(120) DEFAULT '' NOT NULL, pad CHAR(60) DEFAULT '' NOT NULL, PRIMARY KEY (id)) ENGINE=InnoDB", s),
		} {
			if _, err := db.ExecContext(ctx, q); err != nil {
				return fmt.Errorf("prepare: %s: %w", q, err)
			}
		}
		const chunk = 1000
		for i := 1; i <= w.rows; i += chunk {
			var b strings.Builder
			fmt.Fprintf(&b, "INSERT INTO sb%d.sbtest1 (id, k, c, pad) VALUES ", s)
			var args []any
			for id := i; id < min(i+chunk, w.rows+1); id++ {
				if id > i {
					b.WriteString(", ")
				}
				b.WriteString("(?, ?, ?, ?)")
				args = append(args, id, 1+r.IntN(w.rows), sysbenchC(r), sysbenchPad(r))
			}
			if _, err := db.ExecContext(ctx, b.String(), args...); err != nil {
				return fmt.Errorf("prepare: fill sb%d.sbtest1: %w", s, err)
			}
		}
		q := fmt.Sprintf("CREATE INDEX k_1 ON sb%d.sbtest1(k)", s)
		if _, err := db.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("prepare: %s: %w", q, err)
		}
	}
	return nil
}

// digits fills sysbench's '#' templates.
func digits(r *rand.Rand, groups, size int) string {
	var b strings.Builder
	for g := range groups {
		if g > 0 {
			b.WriteByte('-')
		}
		for range size {
			b.WriteByte(byte('0' + r.IntN(10)))
		}
	}
	return b.String()
}

// sysbenchC is sysbench's value for c: ten groups of 11 digits.
func sysbenchC(r *rand.Rand) string { return digits(r, 10, 11) }

// sysbenchPad is sysbench's value for pad: five groups of 11 digits.
func sysbenchPad(r *rand.Rand) string { return digits(r, 5, 11) }

// schema picks the schema of the next transaction.
func (w workload) schema(r *rand.Rand) int {
	if w.hot > 0 && w.schemas > 1 {
		if r.Float64() < w.hot {
			return 0
		}
		return 1 + r.IntN(w.schemas-1)
	}
	return r.IntN(w.schemas)
}

// run commits exactly w.tx transactions from w.clients sessions. A
// transaction that deadlocks is rolled back and tried again with new
// values; it counts once it commits.
func (w workload) run(ctx context.Context, db *sql.DB) error {
	var tickets atomic.Int64
	errs := make([]error, w.clients)
	var wg sync.WaitGroup
	for c := range w.clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[c] = w.client(ctx, db, c, &tickets)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (w workload) client(ctx context.Context, db *sql.DB, id int, tickets *atomic.Int64) error {
	conn, err := db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("client %d: %w", id, err)
	}
	defer conn.Close()
	r := rand.New(rand.NewPCG(uint64(id), 7))
	for tickets.Add(1) <= int64(w.tx) {
		for attempt := 1; ; attempt++ {
			s := w.schema(r)
			q := fmt.Sprintf("START TRANSACTION; UPDATE sb%[1]d.sbtest1 SET k=k+1 WHERE id=?; UPDATE sb%[1]d.sbtest1 SET c=? WHERE id=?; "+
				"DELETE FROM sb%[1]d.sbtest1 WHERE id=?; INSERT INTO sb%[1]d.sbtest1 (id, k, c, pad) VALUES (?, ?, ?, ?); COMMIT", s)
			del := 1 + r.IntN(w.rows)
			_, err := conn.ExecContext(ctx, q,
				1+r.IntN(w.rows),
				sysbenchC(r), 1+r.IntN(w.rows),
				del,
				del, 1+r.IntN(w.rows), sysbenchC(r), sysbenchPad(r))
			if err == nil {
				break
			}
			var me *mysql.MySQLError
			if errors.As(err, &me) && (me.Number == 1213 || me.Number == 1205) && attempt < 100 {
				if _, err := conn.ExecContext(ctx, "ROLLBACK"); err != nil {
					return fmt.Errorf("client %d: rollback after %v: %w", id, me, err)
				}
				continue
			}
			return fmt.Errorf("client %d: %w", id, err)
		}
	}
	return nil
}
