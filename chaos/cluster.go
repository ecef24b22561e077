package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// cluster is the sandbox scripts/demo.sh made in dir: its processes, pid
// files, logs, and the managers' view of it (`quire status --json`).
type cluster struct {
	repo, dir string
	script    string // scripts/demo.sh
	bin       string // the repository's bin/
	password  string
	nodes     []nodeInfo
	managers  []managerInfo

	// log receives the output of every demo.sh call.
	logMu sync.Mutex
	log   io.Writer

	mu        sync.Mutex
	status    *clusterStatus
	statusAt  time.Time
	statusErr error
}

// nodeInfo and managerInfo are entries of cluster.json (written by demo.sh).
type nodeInfo struct {
	ID      string `json:"id"`
	MySQL   string `json:"mysql"`
	Agent   string `json:"agent"`
	DataDir string `json:"data_dir"`
}

type managerInfo struct {
	ID   string `json:"id"`
	GRPC string `json:"grpc"`
}

// clusterStatus is the part of `quire status --json` the harness reads.
type clusterStatus struct {
	Epoch   uint64       `json:"epoch"`
	Primary string       `json:"primary"`
	K       int          `json:"k"`
	Leader  string       `json:"leader"`
	Nodes   []nodeStatus `json:"nodes"`
}

type nodeStatus struct {
	ID              string  `json:"id"`
	MySQL           string  `json:"mysql"`
	Role            string  `json:"role"`
	ReportedRole    string  `json:"reported_role"`
	Epoch           uint64  `json:"epoch"`
	Reachable       bool    `json:"reachable"`
	Healthy         bool    `json:"healthy"`
	DatabaseHealthy bool    `json:"database_healthy"`
	ReadOnly        bool    `json:"read_only"`
	DurableSeqno    uint64  `json:"durable_seqno"`
	AppliedSeqno    uint64  `json:"applied_seqno"`
	LagTx           *uint64 `json:"lag_tx"`
	ApplyLagTx      *uint64 `json:"apply_lag_tx"`
	InSyncSet       bool    `json:"in_sync_set"`
	Error           string  `json:"error"`
}

// proc names one process of the sandbox: kind mysqld, agent (name db1…)
// or manager (name m1…).
type proc struct{ kind, name string }

func (p proc) String() string {
	if p.kind == "mysqld" {
		return "mariadbd " + p.name
	}
	return p.kind + " " + p.name
}

// procs lists every process of the sandbox.
func (c *cluster) procs() []proc {
	var ps []proc
	for _, n := range c.nodes {
		ps = append(ps, proc{"mysqld", n.ID}, proc{"agent", n.ID})
	}
	for _, m := range c.managers {
		ps = append(ps, proc{"manager", m.ID})
	}
	return ps
}

func (c *cluster) pidFile(p proc) string {
	switch p.kind {
	case "mysqld":
		return filepath.Join(c.dir, p.name, "mysqld.pid")
	case "agent":
		return filepath.Join(c.dir, p.name, "agent.pid")
	default:
		return filepath.Join(c.dir, p.name, "manager.pid")
	}
}

// logFile is the process's log: the agent's and manager's output, the
// mariadbd error log.
func (c *cluster) logFile(p proc) string {
	switch p.kind {
	case "mysqld":
		return filepath.Join(c.dir, p.name, "error.log")
	case "agent":
		return filepath.Join(c.dir, p.name, "agent.log")
	default:
		return filepath.Join(c.dir, p.name, "manager.log")
	}
}

// pid returns the process's pid if it runs.
func (c *cluster) pid(p proc) (int, bool) {
	b, err := os.ReadFile(c.pidFile(p))
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, false
	}
	return pid, pidAlive(pid)
}

// pidFileContent describes the pid file for a report: its pid and whether
// /proc knows it.
func (c *cluster) pidFileContent(p proc) string {
	b, err := os.ReadFile(c.pidFile(p))
	if err != nil {
		return err.Error()
	}
	s := strings.TrimSpace(string(b))
	pid, err := strconv.Atoi(s)
	if err != nil {
		return fmt.Sprintf("%q", s)
	}
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return fmt.Sprintf("pid %d, gone", pid)
	}
	if f := strings.Fields(string(st[bytes.LastIndexByte(st, ')')+1:])); len(f) > 0 {
		return fmt.Sprintf("pid %d, state %s", pid, f[0])
	}
	return fmt.Sprintf("pid %d", pid)
}

// pidAlive reports whether pid runs; a zombie (killed, not reaped yet)
// does not.
func pidAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		return true
	}
	return s[i+2] != 'Z'
}

// waitGone waits until pid no longer runs, at most d.
func waitGone(ctx context.Context, pid int, d time.Duration) error {
	deadline := time.Now().Add(d)
	for pidAlive(pid) {
		if time.Now().After(deadline) {
			return fmt.Errorf("pid %d still runs %s after SIGKILL", pid, d)
		}
		if err := sleepCtx(ctx, 20*time.Millisecond); err != nil {
			return err
		}
	}
	return nil
}

// demo runs scripts/demo.sh with args against the sandbox's directory. The
// script and the processes it starts get their own process group, so a
// Ctrl-C at the terminal reaches only the harness, which stops them.
func (c *cluster) demo(ctx context.Context, args ...string) error {
	cmd := exec.CommandContext(ctx, c.script, args...)
	cmd.Dir = c.repo
	cmd.Env = append(os.Environ(), "QUIRE_DEMO_DIR="+c.dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	// The processes the script starts in the background keep no pipe of
	// ours (they write to their logs), so Wait returns when the script does.
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	c.logMu.Lock()
	if c.log != nil {
		fmt.Fprintf(c.log, "%s demo.sh %s\n%s", time.Now().Format("15:04:05.000"), strings.Join(args, " "), out.String())
	}
	c.logMu.Unlock()
	if err != nil {
		return fmt.Errorf("scripts/demo.sh %s: %w\n%s", strings.Join(args, " "), err, indent(tail(out.String(), 15)))
	}
	return nil
}

// start starts one process that is not running.
func (c *cluster) start(ctx context.Context, p proc) error {
	return c.demo(ctx, "start", p.kind, p.name)
}

// load reads cluster.json and the MariaDB password of a sandbox that `up`
// made.
func (c *cluster) load() error {
	b, err := os.ReadFile(filepath.Join(c.dir, "cluster.json"))
	if err != nil {
		return fmt.Errorf("read the sandbox description: %w", err)
	}
	var desc struct {
		Nodes    []nodeInfo    `json:"nodes"`
		Managers []managerInfo `json:"managers"`
	}
	if err := json.Unmarshal(b, &desc); err != nil {
		return fmt.Errorf("parse %s/cluster.json: %w", c.dir, err)
	}
	if len(desc.Nodes) == 0 || len(desc.Managers) == 0 {
		return fmt.Errorf("%s/cluster.json lists no nodes or no managers", c.dir)
	}
	pw, err := os.ReadFile(filepath.Join(c.dir, "mysql.password"))
	if err != nil {
		return fmt.Errorf("read the MariaDB password: %w", err)
	}
	c.nodes, c.managers, c.password = desc.Nodes, desc.Managers, strings.TrimSpace(string(pw))
	return nil
}

// quire runs bin/quire with the sandbox's managers and operator
// certificate and returns its standard output.
func (c *cluster) quire(ctx context.Context, args ...string) ([]byte, error) {
	var addrs []string
	for _, m := range c.managers {
		addrs = append(addrs, m.GRPC)
	}
	certs := filepath.Join(c.dir, "certs")
	cmd := exec.CommandContext(ctx, filepath.Join(c.bin, "quire"), args...)
	cmd.Env = append(os.Environ(), "QUIRE_MANAGERS="+strings.Join(addrs, ","),
		"QUIRE_TLS_CA="+filepath.Join(certs, "ca.crt"),
		"QUIRE_TLS_CERT="+filepath.Join(certs, "operator.crt"),
		"QUIRE_TLS_KEY="+filepath.Join(certs, "operator.key"))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("quire %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// fetchStatus asks the managers for `quire status --json`.
func (c *cluster) fetchStatus(ctx context.Context) (*clusterStatus, error) {
	out, err := c.quire(ctx, "status", "--json", "--timeout", "3s")
	if err != nil {
		return nil, err
	}
	var st clusterStatus
	if err := json.Unmarshal(out, &st); err != nil {
		return nil, fmt.Errorf("parse quire status --json: %w", err)
	}
	return &st, nil
}

// pollStatus refreshes the cached status every interval until ctx ends.
func (c *cluster) pollStatus(ctx context.Context, interval time.Duration) {
	for {
		st, err := c.fetchStatus(ctx)
		if ctx.Err() != nil {
			return
		}
		c.mu.Lock()
		if err == nil {
			c.status, c.statusAt = st, time.Now()
		}
		c.statusErr = err
		c.mu.Unlock()
		if sleepCtx(ctx, interval) != nil {
			return
		}
	}
}

// lastStatus returns the newest status the poller got (nil if none yet).
func (c *cluster) lastStatus() *clusterStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.status
}

// primary returns the primary's ID and MariaDB address from the newest
// status, or empty strings if it names none.
func (c *cluster) primary() (id, addr string) {
	st := c.lastStatus()
	if st == nil || st.Primary == "" {
		return "", ""
	}
	for _, n := range st.Nodes {
		if n.ID == st.Primary {
			return n.ID, n.MySQL
		}
	}
	return st.Primary, ""
}

// portsInUse returns the sandbox's fixed ports that something listens on.
func portsInUse() []int {
	var busy []int
	for _, p := range fixedPorts() {
		conn, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)), 200*time.Millisecond)
		if err == nil {
			conn.Close()
			busy = append(busy, p)
		}
	}
	return busy
}

// fixedPorts are the ports of scripts/demo.sh (see its *_port functions).
func fixedPorts() []int {
	var ps []int
	for i := 1; i <= 3; i++ {
		ps = append(ps, 33060+i, 7300+i, 7310+i, 7320+i, 7400+i, 7480+i)
	}
	return ps
}

// anyAlive reports whether a pid file under dir names a running process.
func anyAlive(dir string) bool {
	files, _ := filepath.Glob(filepath.Join(dir, "*", "*.pid"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 0 && pidAlive(pid) {
			return true
		}
	}
	return false
}

// sleepCtx sleeps d or until ctx ends (then it returns ctx's error).
func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	s = strings.TrimRight(s, "\n")
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// tailFile returns the last n lines of a file (at most its last 256 KiB).
func tailFile(path string, n int) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	const maxRead = 256 << 10
	fi, err := f.Stat()
	if err != nil {
		return "", err
	}
	off := max(0, fi.Size()-maxRead)
	b := make([]byte, fi.Size()-off)
	if _, err := f.ReadAt(b, off); err != nil && !errors.Is(err, io.EOF) {
		return "", err
	}
	return tail(string(b), n), nil
}

func indent(s string) string {
	if s == "" {
		return s
	}
	return "    " + strings.ReplaceAll(s, "\n", "\n    ")
}
