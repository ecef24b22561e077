package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-sql-driver/mysql"
)

// workload is the write load: clients run transactions over schemas s0..
// s<schemas-1>, each an UPDATE of a random existing row and an INSERT of a
// new one, with rowSize bytes of padding per row.
type workload struct {
	clients, schemas, rowSize, rows int
}

// commit is one transaction the workload committed: its GTID sequence
// number (domain 0, the primary's server_id) and when COMMIT was sent
// and returned, measured from the run's clock.
type commit struct {
	gtidSeq        uint64
	sent, returned time.Duration
}

// openPool opens a connection pool to s that sends each transaction as one
// multi-statement round trip.
func openPool(s *server, conns int) (*sql.DB, error) {
	c := s.config()
	c.MultiStatements = true
	c.InterpolateParams = true
	conn, err := mysql.NewConnector(c)
	if err != nil {
		return nil, fmt.Errorf("mariadbd %s: %w", s.name, err)
	}
	db := sql.OpenDB(conn)
	db.SetMaxOpenConns(conns)
	db.SetMaxIdleConns(conns)
	return db, nil
}

// setup creates the schemas and fills each table with w.rows rows.
func (w workload) setup(ctx context.Context, db *sql.DB) error {
	pad := strings.Repeat("p", w.rowSize)
	for s := range w.schemas {
		for _, q := range []string{
			fmt.Sprintf("CREATE DATABASE s%d", s),
			fmt.Sprintf("CREATE TABLE s%d.t (id BIGINT AUTO_INCREMENT PRIMARY KEY, k INT NOT NULL, v VARCHAR(64) NOT NULL, pad LONGBLOB NOT NULL)", s),
		} {
			if _, err := db.ExecContext(ctx, q); err != nil {
				return fmt.Errorf("setup: %s: %w", q, err)
			}
		}
		const chunk = 100
		for i := 0; i < w.rows; i += chunk {
			var b strings.Builder
			fmt.Fprintf(&b, "INSERT INTO s%d.t (k, v, pad) VALUES ", s)
			var args []any
			for j := i; j < min(i+chunk, w.rows); j++ {
				if j > i {
					b.WriteString(", ")
				}
				b.WriteString("(?, ?, ?)")
				args = append(args, j, "row "+strconv.Itoa(j), pad)
			}
			if _, err := db.ExecContext(ctx, b.String(), args...); err != nil {
				return fmt.Errorf("setup: fill s%d.t: %w", s, err)
			}
		}
	}
	return nil
}

// run runs the clients until the deadline and returns every committed
// transaction. A client finishes the transaction it is in when the deadline
// passes; ctx ends them at once (and the run is then abandoned).
func (w workload) run(ctx context.Context, db *sql.DB, clock time.Time, deadline time.Time) ([]commit, error) {
	results := make([][]commit, w.clients)
	errs := make([]error, w.clients)
	var wg sync.WaitGroup
	for c := range w.clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[c], errs[c] = w.client(ctx, db, c, clock, deadline)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	var all []commit
	for _, r := range results {
		all = append(all, r...)
	}
	return all, nil
}

// client runs transactions on one connection. Each transaction is one
// round trip: BEGIN, UPDATE, INSERT, COMMIT and SELECT @@last_gtid, which
// names the transaction's GTID (the GTID and the transaction's position in
// the binlog are how its log record is found later).
func (w workload) client(ctx context.Context, db *sql.DB, id int, clock, deadline time.Time) ([]commit, error) {
	conn, err := db.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("client %d: %w", id, err)
	}
	defer conn.Close()
	r := rand.New(rand.NewPCG(uint64(id), 1))
	letters := []byte("abcdefghijklmnopqrstuvwxyz0123456789")
	pad := make([]byte, w.rowSize)
	var out []commit
	for n := 0; time.Now().Before(deadline); n++ {
		s := r.IntN(w.schemas)
		for i := range pad {
			pad[i] = letters[r.IntN(len(letters))]
		}
		q := fmt.Sprintf("START TRANSACTION; UPDATE s%d.t SET k = k + 1, pad = ? WHERE id = ?; INSERT INTO s%d.t (k, v, pad) VALUES (?, ?, ?); COMMIT; SELECT @@last_gtid", s, s)
		sent := time.Since(clock)
		gtid, err := queryLast(ctx, conn, q, pad, 1+r.IntN(w.rows), r.IntN(1000), fmt.Sprintf("client %d tx %d", id, n), pad)
		returned := time.Since(clock)
		if err != nil {
			return out, fmt.Errorf("client %d, transaction %d: %w", id, n, err)
		}
		seq, err := gtidSeq(gtid)
		if err != nil {
			return out, fmt.Errorf("client %d, transaction %d: @@last_gtid: %w", id, n, err)
		}
		out = append(out, commit{gtidSeq: seq, sent: sent, returned: returned})
	}
	return out, nil
}

// queryLast runs a multi-statement query and returns the single value of
// its last result set.
func queryLast(ctx context.Context, conn *sql.Conn, q string, args ...any) (string, error) {
	rows, err := conn.QueryContext(ctx, q, args...)
	if err != nil {
		return "", err
	}
	defer rows.Close()
	var v string
	got := false
	for {
		for rows.Next() {
			if err := rows.Scan(&v); err != nil {
				return "", err
			}
			got = true
		}
		if !rows.NextResultSet() {
			break
		}
	}
	if err := rows.Err(); err != nil {
		return "", err
	}
	if !got {
		return "", errors.New("the query returned no value")
	}
	return v, nil
}

// gtidSeq returns the sequence number of a MariaDB GTID
// "domain-server-sequence".
func gtidSeq(gtid string) (uint64, error) {
	parts := strings.Split(gtid, "-")
	if len(parts) != 3 {
		return 0, fmt.Errorf("GTID %q is not domain-server-sequence", gtid)
	}
	n, err := strconv.ParseUint(parts[2], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("GTID %q: %w", gtid, err)
	}
	return n, nil
}

// binlogGTIDSeq returns the sequence number of the primary's last GTID in
// domain 0 (the binlog was reset, so it counts the binlog's transactions).
func binlogGTIDSeq(ctx context.Context, db *sql.DB) (uint64, error) {
	var pos string
	if err := db.QueryRowContext(ctx, "SELECT @@gtid_binlog_pos").Scan(&pos); err != nil {
		return 0, fmt.Errorf("read @@gtid_binlog_pos: %w", err)
	}
	if pos == "" {
		return 0, nil
	}
	if strings.Contains(pos, ",") {
		return 0, fmt.Errorf("@@gtid_binlog_pos %q has more than one domain", pos)
	}
	return gtidSeq(pos)
}
