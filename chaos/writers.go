package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/go-sql-driver/mysql"
)

// The writers' tables: schema chaos<i>.t for i < numSchemas; writer w
// writes to schema w mod numSchemas, so the replicas apply them on several
// channels (the applier's shard is the schema).
const numSchemas = 4

func schemaOf(w int) int { return w % numSchemas }

func tableName(s int) string { return fmt.Sprintf("chaos%d.t", s) }

// writerID is the id writer w gives its seq-th row: unique per writer, and
// the writer is readable from it (w+1 in the top digits).
func writerID(w int, seq int64) int64 { return int64(w+1)*1_000_000_000_000 + seq }

// Backoff of a writer after an error: doubled from min up to max, reset by
// an acknowledged write.
const (
	minBackoff = 50 * time.Millisecond
	maxBackoff = time.Second
	// commitTimeout bounds one transaction (the connection's read timeout:
	// database/sql takes the context away before COMMIT); a commit still
	// waiting then is abandoned with its connection and its id not
	// recorded.
	commitTimeout = 15 * time.Second
)

// acks records every acknowledged write: its id (by table) and when the
// COMMIT returned OK.
type acks struct {
	start time.Time
	mu    sync.Mutex
	ids   [numSchemas][]int64
	times []time.Duration // nondecreasing: taken under mu
	// errors counts the writers' errors by message.
	errors map[string]int
	nerr   int
}

func newAcks(start time.Time) *acks { return &acks{start: start, errors: map[string]int{}} }

func (a *acks) add(schema int, id int64) {
	a.mu.Lock()
	a.ids[schema] = append(a.ids[schema], id)
	a.times = append(a.times, time.Since(a.start))
	a.mu.Unlock()
}

func (a *acks) fail(msg string) {
	a.mu.Lock()
	a.errors[msg]++
	a.nerr++
	a.mu.Unlock()
}

// count returns the number of acknowledged writes and the time of the last
// one (-1 if none).
func (a *acks) count() (int, time.Duration) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.times) == 0 {
		return 0, -1
	}
	return len(a.times), a.times[len(a.times)-1]
}

// topErrors returns the n most frequent errors as lines.
func (a *acks) topErrors(n int) []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return topErrors(a.errors, n)
}

// sortedIDs returns the acknowledged ids of schema s, sorted.
func (a *acks) sortedIDs(s int) []int64 {
	a.mu.Lock()
	ids := append([]int64(nil), a.ids[s]...)
	a.mu.Unlock()
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	return ids
}

// writers runs n writer connections against the primary that the newest
// `quire status` names.
type writers struct {
	c     *cluster
	acks  *acks
	n     int
	every time.Duration // per writer: at most one write per every (0: no limit)
}

// dsn is the data source name of the quire account on addr.
func (c *cluster) dsn(addr string) string {
	cfg := mysql.NewConfig()
	cfg.User, cfg.Passwd, cfg.Net, cfg.Addr = "quire", c.password, "tcp", addr
	cfg.Timeout, cfg.ReadTimeout, cfg.WriteTimeout = 2*time.Second, commitTimeout, 10*time.Second
	cfg.InterpolateParams = true
	return cfg.FormatDSN()
}

// createTables creates the writers' schemas on the primary at addr.
func (c *cluster) createTables(ctx context.Context, addr string) error {
	db, err := sql.Open("mysql", c.dsn(addr))
	if err != nil {
		return fmt.Errorf("open %s: %w", addr, err)
	}
	defer db.Close()
	for s := range numSchemas {
		for _, q := range []string{
			fmt.Sprintf("CREATE DATABASE IF NOT EXISTS chaos%d", s),
			fmt.Sprintf("CREATE TABLE IF NOT EXISTS %s (id BIGINT PRIMARY KEY, writer INT NOT NULL, seq BIGINT NOT NULL, pad VARCHAR(64) NOT NULL) ENGINE=InnoDB", tableName(s)),
		} {
			if _, err := db.ExecContext(ctx, q); err != nil {
				return fmt.Errorf("create the writers' tables on %s: %s: %w", addr, q, err)
			}
		}
	}
	return nil
}

// run runs the writers until ctx ends.
func (ws *writers) run(ctx context.Context) {
	var wg sync.WaitGroup
	for w := range ws.n {
		wg.Go(func() { ws.writer(ctx, w) })
	}
	wg.Wait()
}

// writer w: connect to the primary, write one row per transaction, record
// the id once COMMIT returned OK; on any error close the connection, back
// off, read the primary again and reconnect.
func (ws *writers) writer(ctx context.Context, w int) {
	var seq int64
	backoff := minBackoff
	for ctx.Err() == nil {
		if err := ws.session(ctx, w, &seq, &backoff); err != nil && ctx.Err() == nil {
			ws.acks.fail(errClass(err))
		}
		sleepCtx(ctx, backoff)
		backoff = min(2*backoff, maxBackoff)
	}
}

// session writes over one connection until an error.
func (ws *writers) session(ctx context.Context, w int, seq *int64, backoff *time.Duration) error {
	id, addr := ws.c.primary()
	if addr == "" {
		return errors.New("quire status names no primary")
	}
	db, err := sql.Open("mysql", ws.c.dsn(addr))
	if err != nil {
		return fmt.Errorf("open %s: %w", id, err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	conn, err := db.Conn(cctx)
	cancel()
	if err != nil {
		return fmt.Errorf("connect to %s: %w", id, err)
	}
	defer conn.Close()
	s := schemaOf(w)
	// The quire account may write on a read-only server (it has READ_ONLY
	// ADMIN); an application's account may not. The guard makes the
	// writers behave like the application: a row is inserted only while
	// the server is writable.
	q := fmt.Sprintf("INSERT INTO %s (id, writer, seq, pad) SELECT ?, ?, ?, ? FROM DUAL WHERE @@global.read_only = 0", tableName(s))
	next := time.Now()
	for ctx.Err() == nil {
		*seq++
		rid := writerID(w, *seq)
		if err := ws.write(ctx, conn, q, w, *seq, rid); err != nil {
			return fmt.Errorf("%s: %w", id, err)
		}
		ws.acks.add(s, rid)
		*backoff = minBackoff
		if ws.every > 0 {
			next = next.Add(ws.every)
			if now := time.Now(); next.Before(now) {
				next = now // no bursts after a stall
			}
			sleepCtx(ctx, time.Until(next))
		}
	}
	return nil
}

// errReadOnly: the guarded insert found the server read-only.
var errReadOnly = errors.New("the server is read-only")

// write runs one transaction; nil means COMMIT returned OK.
func (ws *writers) write(ctx context.Context, conn *sql.Conn, q string, w int, seq, id int64) error {
	tctx, cancel := context.WithTimeout(ctx, commitTimeout)
	defer cancel()
	tx, err := conn.BeginTx(tctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	res, err := tx.ExecContext(tctx, q, id, w, seq, fmt.Sprintf("writer %d row %d", w, seq))
	if err != nil {
		tx.Rollback()
		return fmt.Errorf("insert: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil || n != 1 {
		tx.Rollback()
		return errReadOnly
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// errClass shortens an error for the error counts: the same failure of
// different writers counts as one message.
func errClass(err error) string {
	s := err.Error()
	if len(s) > 160 {
		s = s[:160] + "…"
	}
	return strings.ReplaceAll(s, "\n", " ")
}
