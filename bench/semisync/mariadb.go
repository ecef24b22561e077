package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/go-sql-driver/mysql"
)

// server is one mariadbd the benchmark started. The benchmark cannot use
// internal/mariadbtest (it needs a testing.TB), so it starts the server the
// way bench/datapath does: its own directory made with mariadb-install-db,
// a free loopback port, a unique server_id, ROW binlog with CRC32
// checksums, sync_binlog=1 and innodb_flush_log_at_trx_commit=1.
type server struct {
	name     string
	serverID uint32
	dir      string
	port     int
	user     string
	password string

	cmd  *exec.Cmd
	done chan struct{} // closed when mariadbd has exited
	db   *sql.DB       // the benchmark user over TCP, opened by startServer
}

const (
	dbUser     = "quirebench"
	dbPassword = "quirebench"
)

func (s *server) dataDir() string  { return filepath.Join(s.dir, "data") }
func (s *server) socket() string   { return filepath.Join(s.dir, "mysqld.sock") }
func (s *server) errorLog() string { return filepath.Join(s.dir, "error.log") }

// addr returns the server's loopback TCP address.
func (s *server) addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// pid returns mariadbd's process id, 0 if it is not running.
func (s *server) pid() int {
	if s.cmd == nil || s.cmd.Process == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

// startServer creates a data directory under parent and starts mariadbd in
// it. extra are my.cnf lines for the [mariadbd] section. On error nothing
// is left behind.
func startServer(ctx context.Context, parent, name string, serverID uint32, extra []string) (*server, error) {
	mariadbd, err := lookPath("mariadbd")
	if err != nil {
		return nil, err
	}
	installDB, err := lookPath("mariadb-install-db")
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(parent, "mariadbd-"+name+"-")
	if err != nil {
		return nil, fmt.Errorf("mariadbd %s: temp dir: %w", name, err)
	}
	s := &server{name: name, serverID: serverID, dir: dir, user: dbUser, password: dbPassword, done: make(chan struct{})}
	close(s.done)
	ok := false
	defer func() {
		if !ok {
			s.remove()
		}
	}()
	// The extra settings (read_only, semi-sync) could stop the bootstrap;
	// they are added for the real start.
	if err := s.writeConfig(nil); err != nil {
		return nil, err
	}
	args := []string{"--defaults-file=" + filepath.Join(dir, "my.cnf"), "--auth-root-authentication-method=normal", "--skip-test-db"}
	if os.Geteuid() == 0 {
		args = append(args, "--user=root")
	}
	if out, err := exec.CommandContext(ctx, installDB, args...).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("mariadbd %s: mariadb-install-db: %w\n%s\nerror log:\n%s", name, err, out, s.tail(20))
	}
	// A port the kernel hands out may be taken before mariadbd binds it.
	for attempt := 0; ; attempt++ {
		if s.port, err = freePort(); err != nil {
			return nil, err
		}
		if err = s.writeConfig(extra); err != nil {
			return nil, err
		}
		err = s.start(ctx, mariadbd)
		if err == nil || attempt == 4 || !strings.Contains(err.Error(), "Address already in use") {
			break
		}
	}
	if err != nil {
		return nil, err
	}
	if err := s.createUser(ctx); err != nil {
		return nil, err
	}
	c := mysql.NewConfig()
	c.User, c.Passwd = s.user, s.password
	c.Net, c.Addr = "tcp", s.addr()
	c.Timeout = 5 * time.Second
	conn, err := mysql.NewConnector(c)
	if err != nil {
		return nil, fmt.Errorf("mariadbd %s: %w", s.name, err)
	}
	s.db = sql.OpenDB(conn)
	s.db.SetMaxOpenConns(4)
	ok = true
	return s, nil
}

func lookPath(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, d := range []string{"/usr/sbin", "/usr/bin"} {
		p := filepath.Join(d, name)
		if st, err := os.Stat(p); err == nil && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found in PATH, /usr/sbin or /usr/bin: install it (Debian: apt-get install -y mariadb-server sysbench)", name)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// baseSettings are the my.cnf lines every server of every mode gets; the
// same as bench/datapath's, so the two programs' numbers are comparable.
func (s *server) baseSettings() []string {
	return []string{
		"[mariadbd]",
		"datadir=" + s.dataDir(),
		"socket=" + s.socket(),
		"pid-file=" + filepath.Join(s.dir, "mysqld.pid"),
		"log-error=" + s.errorLog(),
		"tmpdir=" + s.dir,
		"bind-address=127.0.0.1",
		"port=" + strconv.Itoa(s.port),
		"server_id=" + strconv.FormatUint(uint64(s.serverID), 10),
		"log_bin=" + filepath.Join(s.dataDir(), "binlog"),
		"relay_log=" + filepath.Join(s.dataDir(), "relay"),
		"binlog_format=ROW",
		"binlog_checksum=CRC32",
		"log_slave_updates=ON",
		"skip-name-resolve",
		"skip-slave-start",
		"sync_binlog=1",
		"innodb_flush_log_at_trx_commit=1",
		"innodb_buffer_pool_size=256M",
		"innodb_log_file_size=128M",
		"innodb_log_buffer_size=16M",
		"max_allowed_packet=256M",
		"performance_schema=OFF",
		"max_connections=200",
		"gtid_domain_id=0",
	}
}

func (s *server) writeConfig(extra []string) error {
	lines := append(s.baseSettings(), extra...)
	if err := os.WriteFile(filepath.Join(s.dir, "my.cnf"), []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		return fmt.Errorf("mariadbd %s: write my.cnf: %w", s.name, err)
	}
	return nil
}

// start launches mariadbd and waits until it answers on its socket.
func (s *server) start(ctx context.Context, mariadbd string) error {
	args := []string{"--defaults-file=" + filepath.Join(s.dir, "my.cnf")}
	if os.Geteuid() == 0 {
		args = append(args, "--user=root")
	}
	cpu := split.replica
	if s.name == "db1" {
		cpu = split.primary
	}
	// taskset execs mariadbd in the same process, so cmd's pid is
	// mariadbd's.
	prog, args := split.command(cpu, mariadbd, args...)
	cmd := exec.Command(prog, args...)
	// Its own process group keeps a terminal's Ctrl-C away from it (the
	// benchmark stops it); the death signal covers a killed benchmark.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("mariadbd %s: start: %w", s.name, err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	s.cmd, s.done = cmd, done

	db, err := sql.Open("mysql", "root@unix("+s.socket()+")/")
	if err != nil {
		s.kill()
		return fmt.Errorf("mariadbd %s: %w", s.name, err)
	}
	defer db.Close()
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case <-done:
			return fmt.Errorf("mariadbd %s exited during start-up (port %d); error log:\n%s", s.name, s.port, s.tail(20))
		case <-ctx.Done():
			s.kill()
			return ctx.Err()
		default:
		}
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		err := db.PingContext(pctx)
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			s.kill()
			return fmt.Errorf("mariadbd %s not answering after 60s: %v; error log:\n%s", s.name, err, s.tail(20))
		}
		time.Sleep(20 * time.Millisecond) // poll interval
	}
}

// createUser adds the benchmark's TCP user (which also replicates) and
// empties the binlog, so the first transaction the benchmark writes has
// GTID 0-<server_id>-1. Nothing here is binlogged: with semi-sync on and no
// replica connected yet, a binlogged statement would wait for an ACK.
func (s *server) createUser(ctx context.Context) error {
	db, err := sql.Open("mysql", "root@unix("+s.socket()+")/")
	if err != nil {
		return fmt.Errorf("mariadbd %s: %w", s.name, err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	for _, q := range []string{
		"SET SESSION sql_log_bin=0",
		fmt.Sprintf("CREATE USER '%s'@'127.0.0.1' IDENTIFIED BY '%s'", s.user, s.password),
		fmt.Sprintf("GRANT ALL ON *.* TO '%s'@'127.0.0.1'", s.user),
		"RESET MASTER",
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("mariadbd %s: %s: %w", s.name, q, err)
		}
	}
	return nil
}

// exec runs statements on the server in order.
func (s *server) exec(ctx context.Context, stmts ...string) error {
	for _, q := range stmts {
		if _, err := s.db.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("mariadbd %s: %s: %w", s.name, q, err)
		}
	}
	return nil
}

// row runs a query that returns at most one row and returns its columns
// by name (empty if there is no row).
func (s *server) row(ctx context.Context, query string) (map[string]string, error) {
	rows, err := s.db.QueryContext(ctx, query)
	if err != nil {
		return nil, fmt.Errorf("mariadbd %s: %s: %w", s.name, query, err)
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return nil, fmt.Errorf("mariadbd %s: %s: %w", s.name, query, err)
	}
	out := map[string]string{}
	if rows.Next() {
		vals := make([]sql.NullString, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return nil, fmt.Errorf("mariadbd %s: %s: %w", s.name, query, err)
		}
		for i, c := range cols {
			out[c] = vals[i].String
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("mariadbd %s: %s: %w", s.name, query, err)
	}
	return out, nil
}

// status returns the server's global status variables whose names start
// with prefix, as numbers where they are numbers (ON/OFF become 1/0).
func (s *server) status(ctx context.Context, prefix string) (map[string]float64, error) {
	rows, err := s.db.QueryContext(ctx, "SHOW GLOBAL STATUS LIKE '"+prefix+"%'")
	if err != nil {
		return nil, fmt.Errorf("mariadbd %s: global status %s*: %w", s.name, prefix, err)
	}
	defer rows.Close()
	out := map[string]float64{}
	for rows.Next() {
		var k, v string
		if err := rows.Scan(&k, &v); err != nil {
			return nil, fmt.Errorf("mariadbd %s: global status %s*: %w", s.name, prefix, err)
		}
		switch strings.ToUpper(v) {
		case "ON":
			out[k] = 1
		case "OFF":
			out[k] = 0
		default:
			if f, err := strconv.ParseFloat(v, 64); err == nil {
				out[k] = f
			}
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("mariadbd %s: global status %s*: %w", s.name, prefix, err)
	}
	return out, nil
}

// gtidSeq returns the sequence number of the server's GTID position in
// domain 0 read with query (e.g. SELECT @@gtid_binlog_pos): its binlog
// was reset, so on the primary it counts the binlog's transactions.
func (s *server) gtidSeq(ctx context.Context, query string) (uint64, error) {
	var pos string
	if err := s.db.QueryRowContext(ctx, query).Scan(&pos); err != nil {
		return 0, fmt.Errorf("mariadbd %s: %s: %w", s.name, query, err)
	}
	n, err := parseGTIDPos(pos)
	if err != nil {
		return 0, fmt.Errorf("mariadbd %s: %s: %w", s.name, query, err)
	}
	return n, nil
}

// parseGTIDPos returns the sequence number of a one-domain GTID position
// ("0-101-42" → 42; "" → 0).
func parseGTIDPos(pos string) (uint64, error) {
	if pos == "" {
		return 0, nil
	}
	if strings.Contains(pos, ",") {
		return 0, fmt.Errorf("GTID position %q has more than one domain", pos)
	}
	parts := strings.Split(pos, "-")
	if len(parts) != 3 {
		return 0, fmt.Errorf("GTID %q is not domain-server-sequence", pos)
	}
	n, err := strconv.ParseUint(parts[2], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("GTID %q: %w", pos, err)
	}
	return n, nil
}

// tail returns the last n lines of the error log.
func (s *server) tail(n int) string {
	b, err := os.ReadFile(s.errorLog())
	if err != nil {
		return "(no error log: " + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// kill stops mariadbd with SIGKILL and waits for it; the benchmark throws
// the data away, so there is no point in a clean shutdown.
func (s *server) kill() error {
	if s.cmd == nil {
		return nil
	}
	select {
	case <-s.done:
		return nil
	default:
	}
	if err := s.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("mariadbd %s: kill: %w", s.name, err)
	}
	select {
	case <-s.done:
		return nil
	case <-time.After(30 * time.Second):
		return fmt.Errorf("mariadbd %s (pid %d) did not exit after SIGKILL", s.name, s.cmd.Process.Pid)
	}
}

// remove kills mariadbd and deletes its directory.
func (s *server) remove() error {
	if s.db != nil {
		s.db.Close()
	}
	err := s.kill()
	if rerr := os.RemoveAll(s.dir); rerr != nil {
		err = errors.Join(err, fmt.Errorf("mariadbd %s: remove %s: %w", s.name, s.dir, rerr))
	}
	return err
}
