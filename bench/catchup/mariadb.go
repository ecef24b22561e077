package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"io/fs"
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
// same way bench/datapath does: its own directory, a free loopback port, a
// unique server_id, ROW binlog with CRC32 checksums and the same fsync
// settings on every server.
type server struct {
	name     string
	serverID uint32
	dir      string
	port     int
	extra    []string // my.cnf lines beyond the common ones

	cmd  *exec.Cmd
	done chan struct{} // closed when mariadbd has exited
}

const (
	dbUser     = "quirebench"
	dbPassword = "quirebench"
)

// commonSettings are the my.cnf lines every server of the benchmark gets,
// the source and every replica alike.
var commonSettings = []string{
	"binlog_format=ROW",
	"binlog_checksum=CRC32",
	"log_slave_updates=ON",
	"sync_binlog=1",
	"innodb_flush_log_at_trx_commit=1",
	"innodb_buffer_pool_size=256M",
	"innodb_log_file_size=128M",
	"innodb_log_buffer_size=16M",
	"max_allowed_packet=256M",
	"performance_schema=OFF",
	"max_connections=200",
	"gtid_domain_id=0",
	"skip-name-resolve",
	"skip_slave_start=ON",
}

func (s *server) dataDir() string  { return filepath.Join(s.dir, "data") }
func (s *server) socket() string   { return filepath.Join(s.dir, "mysqld.sock") }
func (s *server) errorLog() string { return filepath.Join(s.dir, "error.log") }

// addr returns the server's loopback TCP address.
func (s *server) addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// config returns a go-sql-driver configuration for the benchmark user.
func (s *server) config() *mysql.Config {
	c := mysql.NewConfig()
	c.User, c.Passwd = dbUser, dbPassword
	c.Net, c.Addr = "tcp", s.addr()
	c.Timeout = 5 * time.Second
	return c
}

// open returns a pool for the benchmark user.
func (s *server) open(conns int) (*sql.DB, error) {
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

// newServer creates a data directory under parent with mariadb-install-db,
// starts mariadbd in it and adds the benchmark's TCP user. On error nothing
// is left behind.
func newServer(ctx context.Context, parent, name string, serverID uint32, extra []string) (*server, error) {
	installDB, err := lookPath("mariadb-install-db")
	if err != nil {
		return nil, err
	}
	s, err := makeServer(parent, name, serverID, extra)
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			s.remove()
		}
	}()
	if err := s.writeConfig(); err != nil {
		return nil, err
	}
	args := []string{"--defaults-file=" + filepath.Join(s.dir, "my.cnf"), "--auth-root-authentication-method=normal", "--skip-test-db"}
	if os.Geteuid() == 0 {
		args = append(args, "--user=root")
	}
	if out, err := exec.CommandContext(ctx, installDB, args...).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("mariadbd %s: mariadb-install-db: %w\n%s\nerror log:\n%s", name, err, out, s.tail(20))
	}
	if err := s.startOnFreePort(ctx); err != nil {
		return nil, err
	}
	if err := s.rootExec(ctx,
		"SET SESSION sql_log_bin=0",
		fmt.Sprintf("CREATE USER '%s'@'127.0.0.1' IDENTIFIED BY '%s'", dbUser, dbPassword),
		fmt.Sprintf("GRANT ALL ON *.* TO '%s'@'127.0.0.1'", dbUser),
	); err != nil {
		return nil, err
	}
	ok = true
	return s, nil
}

// cloneServer starts a mariadbd on a copy of the data directory snapshot
// (made by a clean shutdown). The copy leaves out the snapshot's binary
// logs, so the clone starts with an empty binlog and no GTID history of
// its own. On error nothing is left behind.
func cloneServer(ctx context.Context, parent, name string, serverID uint32, snapshot string, extra []string) (*server, error) {
	s, err := makeServer(parent, name, serverID, extra)
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			s.remove()
		}
	}()
	if err := copyDir(ctx, snapshot, s.dataDir()); err != nil {
		return nil, fmt.Errorf("mariadbd %s: copy the snapshot: %w", name, err)
	}
	if err := s.startOnFreePort(ctx); err != nil {
		return nil, err
	}
	ok = true
	return s, nil
}

func makeServer(parent, name string, serverID uint32, extra []string) (*server, error) {
	dir, err := os.MkdirTemp(parent, "mariadbd-"+name+"-")
	if err != nil {
		return nil, fmt.Errorf("mariadbd %s: temp dir: %w", name, err)
	}
	s := &server{name: name, serverID: serverID, dir: dir, extra: extra, done: make(chan struct{})}
	close(s.done)
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
	return "", fmt.Errorf("%s not found in PATH, /usr/sbin or /usr/bin: install MariaDB 10.11 (Debian: apt-get install -y mariadb-server)", name)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func (s *server) writeConfig() error {
	lines := []string{
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
	}
	lines = append(lines, commonSettings...)
	lines = append(lines, s.extra...)
	if err := os.WriteFile(filepath.Join(s.dir, "my.cnf"), []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		return fmt.Errorf("mariadbd %s: write my.cnf: %w", s.name, err)
	}
	return nil
}

// startOnFreePort picks a port and starts mariadbd; a port the kernel hands
// out may be taken before mariadbd binds it, so it tries a few.
func (s *server) startOnFreePort(ctx context.Context) error {
	var err error
	for attempt := 0; ; attempt++ {
		if s.port, err = freePort(); err != nil {
			return err
		}
		if err = s.writeConfig(); err != nil {
			return err
		}
		err = s.start(ctx)
		if err == nil || attempt == 4 || !strings.Contains(err.Error(), "Address already in use") {
			return err
		}
	}
}

// start launches mariadbd with the current my.cnf and waits until it
// answers on its socket.
func (s *server) start(ctx context.Context) error {
	mariadbd, err := lookPath("mariadbd")
	if err != nil {
		return err
	}
	args := []string{"--defaults-file=" + filepath.Join(s.dir, "my.cnf")}
	if os.Geteuid() == 0 {
		args = append(args, "--user=root")
	}
	cmd := exec.Command(mariadbd, args...)
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

// rootExec runs statements as root over the socket, on one connection.
func (s *server) rootExec(ctx context.Context, stmts ...string) error {
	db, err := sql.Open("mysql", "root@unix("+s.socket()+")/")
	if err != nil {
		return fmt.Errorf("mariadbd %s: %w", s.name, err)
	}
	defer db.Close()
	conn, err := db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("mariadbd %s: %w", s.name, err)
	}
	defer conn.Close()
	for _, q := range stmts {
		if _, err := conn.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("mariadbd %s: %s: %w", s.name, q, err)
		}
	}
	return nil
}

// shutdown stops mariadbd cleanly (SIGTERM) and waits for it, so its data
// directory can be copied.
func (s *server) shutdown(ctx context.Context) error {
	if s.cmd == nil {
		return nil
	}
	select {
	case <-s.done:
		return fmt.Errorf("mariadbd %s had exited before its shutdown; error log:\n%s", s.name, s.tail(20))
	default:
	}
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return fmt.Errorf("mariadbd %s: shutdown: %w", s.name, err)
	}
	select {
	case <-s.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(2 * time.Minute):
		return fmt.Errorf("mariadbd %s (pid %d) did not shut down within 2 minutes", s.name, s.cmd.Process.Pid)
	}
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
	err := s.kill()
	if rerr := os.RemoveAll(s.dir); rerr != nil {
		err = errors.Join(err, fmt.Errorf("mariadbd %s: remove %s: %w", s.name, s.dir, rerr))
	}
	return err
}

// skipInSnapshot reports whether a data directory entry stays out of a
// snapshot copy: the binary and relay logs and their index and state
// files, and replication positions.
func skipInSnapshot(name string) bool {
	for _, p := range []string{"binlog.", "relay.", "relay-"} {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	switch name {
	case "master.info", "relay-log.info", "multi-master.info":
		return true
	}
	return false
}

// copyDir copies the regular files and directories under src to dst, which
// must not exist, leaving out the top-level entries skipInSnapshot names,
// and fsyncs every file.
func copyDir(ctx context.Context, src, dst string) error {
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		if rel != "." && !strings.Contains(rel, string(filepath.Separator)) && skipInSnapshot(rel) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		target := filepath.Join(dst, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			return os.Mkdir(target, info.Mode().Perm()|0o700)
		case info.Mode().IsRegular():
			return copyFile(path, target, info.Mode().Perm())
		default:
			return nil // sockets, pipes: not part of the data
		}
	})
}

func copyFile(src, dst string, perm fs.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm|0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("copy %s: %w", src, err)
	}
	// Written back now, the copy's pages do not compete with the fsyncs
	// of the catch-up that follows.
	if err := out.Sync(); err != nil {
		out.Close()
		return fmt.Errorf("copy %s: %w", src, err)
	}
	return out.Close()
}

// queryRow runs a query that returns one row and returns it by column name.
// No row gives an empty map.
func queryRow(ctx context.Context, db *sql.DB, q string) (map[string]string, error) {
	rows, err := db.QueryContext(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", q, err)
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", q, err)
	}
	out := map[string]string{}
	if !rows.Next() {
		return out, rows.Err()
	}
	vals := make([]sql.RawBytes, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	if err := rows.Scan(ptrs...); err != nil {
		return nil, fmt.Errorf("%s: %w", q, err)
	}
	for i, c := range cols {
		out[c] = string(vals[i])
	}
	return out, rows.Err()
}

// binlogCounters are a server's Binlog_commits and Binlog_group_commits:
// transactions written to the binlog, and binlog group commits (each one
// fsync with sync_binlog=1).
type binlogCounters struct{ commits, groups uint64 }

func readBinlogCounters(ctx context.Context, db *sql.DB) (binlogCounters, error) {
	rows, err := db.QueryContext(ctx, "SHOW GLOBAL STATUS WHERE Variable_name IN ('Binlog_commits', 'Binlog_group_commits')")
	if err != nil {
		return binlogCounters{}, fmt.Errorf("read binlog counters: %w", err)
	}
	defer rows.Close()
	var c binlogCounters
	for rows.Next() {
		var name string
		var v uint64
		if err := rows.Scan(&name, &v); err != nil {
			return c, fmt.Errorf("read binlog counters: %w", err)
		}
		switch strings.ToLower(name) {
		case "binlog_commits":
			c.commits = v
		case "binlog_group_commits":
			c.groups = v
		}
	}
	return c, rows.Err()
}

// checksums returns CHECKSUM TABLE of every table, by name.
func checksums(ctx context.Context, db *sql.DB, tables []string) (map[string]string, error) {
	rows, err := db.QueryContext(ctx, "CHECKSUM TABLE "+strings.Join(tables, ", "))
	if err != nil {
		return nil, fmt.Errorf("checksum tables: %w", err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var name string
		var sum sql.NullString
		if err := rows.Scan(&name, &sum); err != nil {
			return nil, fmt.Errorf("checksum tables: %w", err)
		}
		if !sum.Valid {
			return nil, fmt.Errorf("checksum tables: %s does not exist", name)
		}
		out[name] = sum.String
	}
	return out, rows.Err()
}
