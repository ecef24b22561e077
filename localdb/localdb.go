// Package localdb is the agent's control of its own mariadbd: the
// connection settings, read_only, client sessions, semi-sync waits and the
// settings a primary needs.
//
// Every function takes a context and bounds itself besides: a statement
// that waits for a lock gives up after LockWait, so a fence can never hang
// behind a commit that itself waits for a semi-sync ACK.
package localdb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/quire-ha/quire/config"
)

// Timeouts of the agent's own statements.
const (
	// ConnectTimeout bounds the TCP (or socket) connect and handshake.
	ConnectTimeout = 5 * time.Second
	// StatementTimeout is the deadline of one control statement when the
	// caller's context has none shorter.
	StatementTimeout = 10 * time.Second
	// LockWait is the session lock_wait_timeout of control statements:
	// SET GLOBAL read_only waits for running commits, and a commit that
	// waits for a semi-sync ACK would otherwise hold it for good.
	LockWait = 2 * time.Second
)

// DriverConfig returns the go-sql-driver settings for c: TCP or socket,
// user, password, connect timeout. Callers add their own session settings.
func DriverConfig(c config.MySQL) *mysql.Config {
	mc := mysql.NewConfig()
	mc.User = c.User
	mc.Passwd = c.Password.Reveal()
	if c.Socket != "" {
		mc.Net, mc.Addr = "unix", c.Socket
	} else {
		mc.Net, mc.Addr = "tcp", net.JoinHostPort(c.Host, strconv.Itoa(c.Port))
	}
	mc.Timeout = ConnectTimeout
	mc.ParseTime = true
	return mc
}

// Open returns the agent's control pool for c. Reads and writes on its
// connections time out after a minute as a backstop; callers pass
// contexts with shorter deadlines.
func Open(c config.MySQL) (*sql.DB, error) {
	mc := DriverConfig(c)
	mc.ReadTimeout = time.Minute
	mc.WriteTimeout = time.Minute
	conn, err := mysql.NewConnector(mc)
	if err != nil {
		return nil, fmt.Errorf("mysql settings: %w", err)
	}
	db := sql.OpenDB(conn)
	db.SetMaxOpenConns(16)
	db.SetMaxIdleConns(4)
	db.SetConnMaxIdleTime(time.Minute)
	return db, nil
}

// bounded returns ctx with at most d left.
func bounded(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, d)
}

// controlConn returns a connection with a short lock_wait_timeout.
func controlConn(ctx context.Context, db *sql.DB) (*sql.Conn, error) {
	conn, err := db.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("connect to the local database: %w", err)
	}
	secs := int(LockWait / time.Second)
	if _, err := conn.ExecContext(ctx, fmt.Sprintf("SET SESSION lock_wait_timeout = %d", secs)); err != nil {
		conn.Close()
		return nil, fmt.Errorf("connect to the local database: SET lock_wait_timeout: %w", err)
	}
	return conn, nil
}

// ReadOnly reports the server's global read_only.
func ReadOnly(ctx context.Context, db *sql.DB) (bool, error) {
	ctx, cancel := bounded(ctx, StatementTimeout)
	defer cancel()
	var ro bool
	if err := db.QueryRowContext(ctx, "SELECT @@global.read_only").Scan(&ro); err != nil {
		return false, fmt.Errorf("read read_only: %w", err)
	}
	return ro, nil
}

// Probe is a cheap health check of the local database: it answers whether
// the server is up and whether it is read-only, within timeout.
func Probe(ctx context.Context, db *sql.DB, timeout time.Duration) (readOnly bool, err error) {
	ctx, cancel := bounded(ctx, timeout)
	defer cancel()
	if err := db.QueryRowContext(ctx, "SELECT @@global.read_only").Scan(&readOnly); err != nil {
		return false, err
	}
	return readOnly, nil
}

// Gone reports whether err says that nothing listens at the database's
// address: the connection was refused (TCP) or the socket file is missing.
// The server process is then gone (it exited, or has not started), unlike
// a timeout, which a hung or overloaded server also gives.
func Gone(err error) bool {
	return err != nil && (errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ENOENT))
}

// OpenWrites sets read_only=OFF.
func OpenWrites(ctx context.Context, db *sql.DB) error {
	ctx, cancel := bounded(ctx, StatementTimeout)
	defer cancel()
	conn, err := controlConn(ctx, db)
	if err != nil {
		return err
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "SET GLOBAL read_only = OFF"); err != nil {
		return fmt.Errorf("SET GLOBAL read_only = OFF: %w", err)
	}
	return nil
}

// sessionFilter selects client sessions: everything but this connection,
// the server's own threads and replication threads.
const sessionFilter = `SELECT id FROM information_schema.processlist
	WHERE id <> CONNECTION_ID() AND user NOT IN ('system user', 'event_scheduler', 'unauthenticated user')
	AND command NOT IN ('Binlog Dump', 'Daemon', 'Slave_IO', 'Slave_SQL', 'Slave_worker')`

// KillClientSessions kills every client session but conn's own and the
// server's threads. It returns how many it killed. A session that ends by
// itself meanwhile is not an error.
func KillClientSessions(ctx context.Context, conn *sql.Conn) (int, error) {
	rows, err := conn.QueryContext(ctx, sessionFilter)
	if err != nil {
		return 0, fmt.Errorf("list sessions: %w", err)
	}
	var ids []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return 0, fmt.Errorf("list sessions: %w", err)
		}
		ids = append(ids, id)
	}
	if err := rows.Close(); err != nil {
		return 0, fmt.Errorf("list sessions: %w", err)
	}
	killed := 0
	for _, id := range ids {
		// Error 1094 (unknown thread): the session ended meanwhile.
		if _, err := conn.ExecContext(ctx, fmt.Sprintf("KILL CONNECTION %d", id)); err == nil {
			killed++
		} else if !isMySQLError(err, 1094) {
			return killed, fmt.Errorf("KILL CONNECTION %d: %w", id, err)
		}
	}
	return killed, nil
}

// Fence makes the database refuse client writes: it kills client sessions
// (releasing any commit that waits for an ACK, which then fails for its
// client), sets read_only=ON with a short lock wait, retrying while
// commits hold the lock, and kills the sessions that connected meanwhile.
// It returns how many sessions it killed.
func Fence(ctx context.Context, db *sql.DB) (int, error) {
	ctx, cancel := bounded(ctx, 3*StatementTimeout)
	defer cancel()
	conn, err := controlConn(ctx, db)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	killed := 0
	var last error
	for attempt := 0; attempt < 5; attempt++ {
		n, err := KillClientSessions(ctx, conn)
		killed += n
		if err != nil {
			return killed, err
		}
		if _, err := conn.ExecContext(ctx, "SET GLOBAL read_only = ON"); err != nil {
			last = err
			if ctx.Err() != nil || !isMySQLError(err, 1205) {
				return killed, fmt.Errorf("SET GLOBAL read_only = ON: %w", err)
			}
			continue // a commit held the lock: kill again, try again
		}
		n, err = KillClientSessions(ctx, conn)
		return killed + n, err
	}
	return killed, fmt.Errorf("SET GLOBAL read_only = ON: still waiting for running commits after 5 tries: %w", last)
}

// StopSemiSyncWaits makes a replica's commits stop waiting for a semi-sync
// ACK (no one sends one to a replica). A server restarts with semi-sync on
// (fail closed), so a client session may already wait for an ACK: switching
// semi-sync off would release it as a success. So when semi-sync is on, the
// database is fenced first (read_only on, client sessions killed), and only
// then is it switched off. It reports whether it changed anything. A server
// without the semi-sync variables (MySQL without the plugin) needs nothing.
func StopSemiSyncWaits(ctx context.Context, db *sql.DB, log *slog.Logger) (bool, error) {
	ctx, cancel := bounded(ctx, 4*StatementTimeout)
	defer cancel()
	var semi sql.NullBool
	switch err := db.QueryRowContext(ctx, "SELECT @@global.rpl_semi_sync_master_enabled").Scan(&semi); {
	case isMySQLError(err, 1193):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("read rpl_semi_sync_master_enabled: %w", err)
	case !semi.Bool:
		return false, nil
	}
	killed, err := Fence(ctx, db)
	if err != nil {
		return false, fmt.Errorf("fence before switching semi-sync off: %w", err)
	}
	conn, err := controlConn(ctx, db)
	if err != nil {
		return false, err
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "SET GLOBAL rpl_semi_sync_master_enabled = OFF"); err != nil {
		return false, fmt.Errorf("SET GLOBAL rpl_semi_sync_master_enabled = OFF: %w", err)
	}
	log.Warn("replica database had semi-sync on (a restarted server starts so): fenced it, then switched semi-sync off",
		"sessions_killed", killed)
	return true, nil
}

// isMySQLError reports whether err is MySQL error number n.
func isMySQLError(err error, n uint16) bool {
	var me *mysql.MySQLError
	return errors.As(err, &me) && me.Number == n
}

// IsUnknownVariable reports error 1193: the server lacks the variable.
func IsUnknownVariable(err error) bool { return isMySQLError(err, 1193) }

// A setting the primary needs (DESIGN.md §3).
type setting struct {
	name     string
	want     string
	settable bool
	ok       func(string) bool
}

// SemiSyncTimeout is what the agent sets rpl_semi_sync_master_timeout to:
// about 49 days. The managers, not a server timer, decide to degrade.
const SemiSyncTimeout = "4294967295"

var primarySettings = []setting{
	{"binlog_format", "ROW", false, eqFold("ROW")},
	{"binlog_checksum", "CRC32", false, eqFold("CRC32")},
	{"log_bin_compress", "OFF", true, boolOff},
	{"rpl_semi_sync_master_wait_point", "AFTER_SYNC", true, eqFold("AFTER_SYNC")},
	{"rpl_semi_sync_master_wait_no_slave", "ON", true, boolOn},
	{"rpl_semi_sync_master_timeout", SemiSyncTimeout, true, func(v string) bool {
		n, err := strconv.ParseUint(v, 10, 64)
		return err == nil && n >= 24*3600*1000
	}},
	// Enabled last: from here on commits wait for our ACK.
	{"rpl_semi_sync_master_enabled", "ON", true, boolOn},
}

func eqFold(w string) func(string) bool {
	return func(v string) bool { return strings.EqualFold(v, w) }
}
func boolOn(v string) bool  { return v == "1" || strings.EqualFold(v, "ON") }
func boolOff(v string) bool { return v == "0" || strings.EqualFold(v, "OFF") }

// CheckPrimarySettings reads the semi-sync and binlog settings of the
// database, sets those it may set (telling the operator to put them in
// my.cnf), and returns an error naming each variable it cannot fix.
func CheckPrimarySettings(ctx context.Context, db *sql.DB, log *slog.Logger) error {
	ctx, cancel := bounded(ctx, 3*StatementTimeout)
	defer cancel()
	var problems []string
	for _, s := range primarySettings {
		var v sql.NullString
		if err := db.QueryRowContext(ctx, "SELECT @@GLOBAL."+s.name).Scan(&v); err != nil {
			problems = append(problems, fmt.Sprintf("%s: cannot read it: %v", s.name, err))
			continue
		}
		if s.ok(v.String) {
			continue
		}
		if !s.settable {
			problems = append(problems, fmt.Sprintf("%s is %s, Quire needs %s (set it in my.cnf and restart mariadbd)", s.name, v.String, s.want))
			continue
		}
		if _, err := db.ExecContext(ctx, fmt.Sprintf("SET GLOBAL %s = %s", s.name, s.want)); err != nil {
			problems = append(problems, fmt.Sprintf("%s is %s, Quire needs %s and could not set it: %v", s.name, v.String, s.want, err))
			continue
		}
		log.Warn("changed a database setting for semi-sync; put it in my.cnf too so that a restarted server starts fail-closed", "variable", s.name, "was", v.String, "now", s.want)
	}
	if len(problems) > 0 {
		return fmt.Errorf("the primary's settings are not usable:\n  %s", strings.Join(problems, "\n  "))
	}
	return nil
}
