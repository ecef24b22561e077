// Package mariadbtest starts real mariadbd processes for tests.
//
// Each instance gets its own temporary data directory (made with
// mariadb-install-db), a free loopback port, a unique server_id and the binlog
// settings Quire relies on (ROW format, CRC32 checksums, log_slave_updates).
// Everything is stopped and removed when the test ends, whether it passes,
// fails or panics.
//
//	insts := mariadbtest.Start(t, 3)
//	insts[0].DB.Exec("CREATE DATABASE s1")
//	insts[0].Kill()    // SIGKILL, data stays
//	insts[0].Restart() // same data directory and port
package mariadbtest

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	_ "github.com/go-sql-driver/mysql" // database/sql driver

	"github.com/quire-ha/quire/accounts"
)

// DirPrefix starts the name of every temporary directory the harness makes.
const DirPrefix = "quire-mariadbtest-"

// StartTimeout bounds how long an instance may take to answer after start.
var StartTimeout = 60 * time.Second

// Options tune the instances Start creates.
type Options struct {
	// ServerIDBase is added to the instance index (1-based) to make server_id.
	// Zero means 100.
	ServerIDBase uint32
	// Settings are extra my.cnf lines for the [mariadbd] section, e.g.
	// "rpl_semi_sync_master_enabled=ON". They override the defaults.
	Settings []string
	// Quiet suppresses the error log copy into the test log on failure.
	Quiet bool
}

// SemiSyncPrimary are the primary settings of DESIGN.md §3.
var SemiSyncPrimary = []string{
	"rpl_semi_sync_master_enabled=ON",
	"rpl_semi_sync_master_wait_point=AFTER_SYNC",
	"rpl_semi_sync_master_wait_no_slave=ON",
	"rpl_semi_sync_master_timeout=4294967295",
}

// FailClosed are the settings every server of a Quire cluster starts with
// (DESIGN.md §3, Fail closed): read-only, and semi-sync on, so a restarted
// server acknowledges no commit until a primary agent's gate does.
var FailClosed = append([]string{"read_only=ON"}, SemiSyncPrimary...)

// Instance is one running (or killed) mariadbd.
type Instance struct {
	// Index is the 1-based position of the instance in its group.
	Index int
	// ServerID is the instance's server_id.
	ServerID uint32
	// Host and Port are the loopback TCP address.
	Host string
	Port int
	// Dir holds datadir, socket, pid and error log.
	Dir string
	// User and Password log in over TCP with every privilege.
	User, Password string
	// AgentUser and AgentPassword log in over TCP with exactly the agent's
	// privileges (accounts.Agent); agenttest runs agents with them.
	AgentUser, AgentPassword string
	// AppUser and AppPassword are an application account (accounts.App on
	// schema AppDatabase; the schema is not created).
	AppUser, AppPassword string
	// DB is a connection pool to the instance (reconnects after Restart).
	DB *sql.DB

	tb   testing.TB
	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// Addr returns "host:port".
func (in *Instance) Addr() string { return net.JoinHostPort(in.Host, strconv.Itoa(in.Port)) }

// DSN returns a go-sql-driver/mysql DSN for database db (may be empty).
func (in *Instance) DSN(db string) string {
	return fmt.Sprintf("%s:%s@tcp(%s)/%s?parseTime=true&multiStatements=true&interpolateParams=true", in.User, in.Password, in.Addr(), db)
}

// AppDatabase is the schema the application account may use.
const AppDatabase = "app"

// AgentDSN is DSN for the agent's account; AppDSN for the application's.
func (in *Instance) AgentDSN(db string) string {
	return fmt.Sprintf("%s:%s@tcp(%s)/%s?parseTime=true&multiStatements=true&interpolateParams=true", in.AgentUser, in.AgentPassword, in.Addr(), db)
}

// AppDSN is DSN for the application account.
func (in *Instance) AppDSN(db string) string {
	return fmt.Sprintf("%s:%s@tcp(%s)/%s?parseTime=true&interpolateParams=true", in.AppUser, in.AppPassword, in.Addr(), db)
}

// DataDir is the instance's MariaDB data directory.
func (in *Instance) DataDir() string { return filepath.Join(in.Dir, "data") }

// Socket is the instance's unix socket path.
func (in *Instance) Socket() string { return filepath.Join(in.Dir, "mysqld.sock") }

// ErrorLog is the path of the instance's error log.
func (in *Instance) ErrorLog() string { return filepath.Join(in.Dir, "error.log") }

// PID returns the process id of the running mariadbd, or 0.
func (in *Instance) PID() int {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.cmd == nil || in.cmd.Process == nil || isClosed(in.done) {
		return 0
	}
	return in.cmd.Process.Pid
}

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// Start starts n instances and registers their removal with tb.Cleanup.
// It fails the test if an instance cannot start, and skips it with -short.
func Start(tb testing.TB, n int, opts ...Options) []*Instance {
	tb.Helper()
	if testing.Short() {
		tb.Skip("mariadbtest: needs real mariadbd processes; skipped with -short (make test-unit)")
	}
	var o Options
	if len(opts) > 0 {
		o = opts[0]
	}
	if o.ServerIDBase == 0 {
		o.ServerIDBase = 100
	}
	if err := checkBinaries(); err != nil {
		tb.Fatal(err)
	}
	insts := make([]*Instance, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			insts[i], errs[i] = newInstance(tb, i+1, o)
		}()
	}
	wg.Wait()
	for _, in := range insts {
		if in != nil {
			tb.Cleanup(func() { in.remove(o.Quiet) })
		}
	}
	if err := errors.Join(errs...); err != nil {
		tb.Fatal(err)
	}
	return insts
}

// checkBinaries reports which MariaDB programs are missing and how to install them.
func checkBinaries() error {
	var missing []string
	for _, b := range []string{"mariadbd", "mariadb-install-db"} {
		if _, err := lookPath(b); err != nil {
			missing = append(missing, b)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("mariadbtest: %s not found in PATH, /usr/sbin or /usr/bin: install MariaDB 10.11 (Debian: apt-get install -y mariadb-server)", strings.Join(missing, ", "))
	}
	return nil
}

func lookPath(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, d := range []string{"/usr/sbin", "/usr/bin", "/usr/local/mysql/bin"} {
		p := filepath.Join(d, name)
		if st, err := os.Stat(p); err == nil && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found", name)
}

func newInstance(tb testing.TB, idx int, o Options) (*Instance, error) {
	dir, err := os.MkdirTemp("", DirPrefix)
	if err != nil {
		return nil, fmt.Errorf("mariadbtest: temp dir: %w", err)
	}
	in := &Instance{
		Index: idx, ServerID: o.ServerIDBase + uint32(idx), Host: "127.0.0.1",
		Dir: dir, User: "quiretest", Password: "quiretest", tb: tb,
		AgentUser: "quireagent", AgentPassword: "quireagent", AppUser: "app", AppPassword: "app",
		done: make(chan struct{}),
	}
	close(in.done)
	if err := os.Mkdir(filepath.Join(dir, "tmp"), 0o700); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("mariadbtest: %w", err)
	}
	if err := in.writeConfig(o.Settings); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	installDB, _ := lookPath("mariadb-install-db")
	args := []string{"--defaults-file=" + filepath.Join(dir, "my.cnf"), "--auth-root-authentication-method=normal", "--skip-test-db"}
	if os.Geteuid() == 0 {
		args = append(args, "--user=root")
	}
	// mariadbd --bootstrap crashes now and then under load (seen:
	// "Segmentation fault" on a loaded 2-core machine); a fresh attempt works.
	var out []byte
	for attempt := 1; ; attempt++ {
		out, err = exec.Command(installDB, args...).CombinedOutput()
		if err == nil || attempt == 3 {
			break
		}
		tb.Logf("mariadbtest: mariadb-install-db failed (attempt %d, retrying): %v", attempt, err)
		os.RemoveAll(in.DataDir())
	}
	if err != nil {
		tail := in.tail(15)
		os.RemoveAll(dir)
		return nil, fmt.Errorf("mariadbtest: mariadb-install-db in %s: %w\n%s\nerror log:\n%s", dir, err, out, tail)
	}
	// A port from the kernel can be taken by someone else before mariadbd
	// binds it; try a few.
	for attempt := 0; ; attempt++ {
		in.Port, err = freePort()
		if err == nil {
			err = in.writeConfig(o.Settings)
		}
		if err == nil {
			err = in.start()
		}
		if err == nil || attempt == 4 || !strings.Contains(err.Error(), "Address already in use") {
			break
		}
	}
	if err != nil {
		in.remove(o.Quiet)
		return nil, err
	}
	if err := in.createUser(); err != nil {
		in.remove(o.Quiet)
		return nil, err
	}
	in.DB, err = sql.Open("mysql", in.DSN(""))
	if err != nil {
		in.remove(o.Quiet)
		return nil, fmt.Errorf("mariadbtest: open pool: %w", err)
	}
	return in, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("mariadbtest: find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func (in *Instance) writeConfig(extra []string) error {
	lines := []string{
		"[mariadbd]",
		"datadir=" + in.DataDir(),
		"socket=" + in.Socket(),
		"pid-file=" + filepath.Join(in.Dir, "mysqld.pid"),
		"log-error=" + in.ErrorLog(),
		// mariadbd removes every #sql* file in its tmpdir at start-up: a
		// shared /tmp lets one instance's start break another's bootstrap.
		"tmpdir=" + filepath.Join(in.Dir, "tmp"),
		"bind-address=127.0.0.1",
		"port=" + strconv.Itoa(in.Port),
		"server_id=" + strconv.FormatUint(uint64(in.ServerID), 10),
		"log_bin=" + filepath.Join(in.DataDir(), "binlog"),
		"binlog_format=ROW",
		"binlog_checksum=CRC32",
		"log_slave_updates=ON",
		"skip-name-resolve",
		"innodb_buffer_pool_size=32M",
		"innodb_log_file_size=16M",
		"innodb_log_buffer_size=8M",
		"max_allowed_packet=256M",
		"performance_schema=OFF",
		"max_connections=200",
		"gtid_domain_id=0",
		"lower_case_table_names=0",
	}
	lines = append(lines, extra...)
	cnf := strings.Join(lines, "\n") + "\n"
	if err := os.WriteFile(filepath.Join(in.Dir, "my.cnf"), []byte(cnf), 0o600); err != nil {
		return fmt.Errorf("mariadbtest: write my.cnf: %w", err)
	}
	return nil
}

// start launches mariadbd and waits until it answers on its socket.
func (in *Instance) start() error {
	mariadbd, _ := lookPath("mariadbd")
	args := []string{"--defaults-file=" + filepath.Join(in.Dir, "my.cnf")}
	if os.Geteuid() == 0 {
		args = append(args, "--user=root")
	}
	cmd := exec.Command(mariadbd, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("mariadbtest: start mariadbd: %w", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	in.mu.Lock()
	in.cmd, in.done = cmd, done
	in.mu.Unlock()
	if err := in.waitReady(done); err != nil {
		in.Kill()
		return err
	}
	return nil
}

func (in *Instance) waitReady(done chan struct{}) error {
	db, err := sql.Open("mysql", "root@unix("+in.Socket()+")/")
	if err != nil {
		return fmt.Errorf("mariadbtest: %w", err)
	}
	defer db.Close()
	deadline := time.Now().Add(StartTimeout)
	for {
		select {
		case <-done:
			return fmt.Errorf("mariadbtest: mariadbd %d exited during start-up (port %d); error log:\n%s", in.Index, in.Port, in.tail(30))
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := db.PingContext(ctx)
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("mariadbtest: mariadbd %d not answering after %s: %v; error log:\n%s", in.Index, StartTimeout, err, in.tail(30))
		}
		time.Sleep(20 * time.Millisecond) // poll interval, not a stand-in for a condition
	}
}

func (in *Instance) createUser() error {
	db, err := sql.Open("mysql", "root@unix("+in.Socket()+")/")
	if err != nil {
		return fmt.Errorf("mariadbtest: %w", err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	for _, q := range []string{
		"SET SESSION sql_log_bin=0",
		fmt.Sprintf("CREATE USER IF NOT EXISTS '%s'@'127.0.0.1' IDENTIFIED BY '%s'", in.User, in.Password),
		fmt.Sprintf("GRANT ALL ON *.* TO '%s'@'127.0.0.1' WITH GRANT OPTION", in.User),
		fmt.Sprintf("CREATE USER IF NOT EXISTS %s IDENTIFIED BY '%s'", accounts.Account(in.AgentUser, "127.0.0.1"), in.AgentPassword),
		accounts.Grant(accounts.Agent, accounts.AgentOn, in.AgentUser, "127.0.0.1"),
		fmt.Sprintf("CREATE USER IF NOT EXISTS %s IDENTIFIED BY '%s'", accounts.Account(in.AppUser, "127.0.0.1"), in.AppPassword),
		accounts.Grant(accounts.App, accounts.AppOn(AppDatabase), in.AppUser, "127.0.0.1"),
		"RESET MASTER",
	} {
		if _, err := db.Exec(q); err != nil {
			return fmt.Errorf("mariadbtest: %s: %w", q, err)
		}
	}
	return nil
}

// tail returns the last n lines of the error log.
func (in *Instance) tail(n int) string {
	b, err := os.ReadFile(in.ErrorLog())
	if err != nil {
		return "(no error log: " + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Kill sends SIGKILL to mariadbd and waits for it to exit. The data
// directory stays, so Restart can bring the instance back (crash recovery).
func (in *Instance) Kill() error {
	in.mu.Lock()
	cmd, done := in.cmd, in.done
	in.mu.Unlock()
	if cmd == nil || isClosed(done) {
		return nil
	}
	if err := cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("mariadbtest: kill mariadbd %d: %w", in.Index, err)
	}
	select {
	case <-done:
		return nil
	case <-time.After(30 * time.Second):
		return fmt.Errorf("mariadbtest: mariadbd %d (pid %d) did not exit after SIGKILL", in.Index, cmd.Process.Pid)
	}
}

// Stop shuts mariadbd down cleanly (SIGTERM) and waits for it.
func (in *Instance) Stop() error {
	in.mu.Lock()
	cmd, done := in.cmd, in.done
	in.mu.Unlock()
	if cmd == nil || isClosed(done) {
		return nil
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("mariadbtest: stop mariadbd %d: %w", in.Index, err)
	}
	select {
	case <-done:
		return nil
	case <-time.After(60 * time.Second):
		return in.Kill()
	}
}

// Restart starts a stopped or killed instance again on the same data
// directory and port; crash recovery runs as on a real server. Settings, if
// given, are appended to its my.cnf first (e.g. "init-rpl-role=SLAVE").
func (in *Instance) Restart(settings ...string) error {
	if in.PID() != 0 {
		return fmt.Errorf("mariadbtest: restart mariadbd %d: still running (pid %d); Kill or Stop it first", in.Index, in.PID())
	}
	if len(settings) > 0 {
		b, err := os.ReadFile(filepath.Join(in.Dir, "my.cnf"))
		if err != nil {
			return fmt.Errorf("mariadbtest: %w", err)
		}
		b = append(b, []byte(strings.Join(settings, "\n")+"\n")...)
		if err := os.WriteFile(filepath.Join(in.Dir, "my.cnf"), b, 0o600); err != nil {
			return fmt.Errorf("mariadbtest: %w", err)
		}
	}
	if err := in.start(); err != nil {
		return err
	}
	return nil
}

// remove kills the instance and deletes its directory. On a failed test
// it copies the end of the error log into the test log first.
func (in *Instance) remove(quiet bool) {
	if in.DB != nil {
		in.DB.Close()
	}
	if in.tb.Failed() && !quiet {
		in.tb.Logf("mariadbtest: mariadbd %d (port %d) error log tail:\n%s", in.Index, in.Port, in.tail(20))
	}
	if err := in.Kill(); err != nil {
		in.tb.Errorf("%v", err)
	}
	if err := os.RemoveAll(in.Dir); err != nil {
		in.tb.Errorf("mariadbtest: remove %s: %v", in.Dir, err)
	}
}

// Leftovers lists temporary directories and mariadbd processes that the
// harness made and that still exist. Tests use it to prove cleanup.
func Leftovers(dirs []string, pids []int) []string {
	var left []string
	for _, d := range dirs {
		if _, err := os.Stat(d); err == nil {
			left = append(left, "directory "+d)
		}
	}
	for _, p := range pids {
		if alive(p) {
			left = append(left, "process "+strconv.Itoa(p))
		}
	}
	sort.Strings(left)
	return left
}

// alive reports whether pid runs and is not a zombie.
func alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// Field 3 is the state; the command name in field 2 may hold spaces.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		return false
	}
	return s[i+2] != 'Z' && s[i+2] != 'X'
}
