// Package agenttest runs real quire-agent processes for tests: it builds the
// binary once per test binary, writes each agent's configuration, starts,
// SIGKILLs and restarts the processes, and reads their /status.
package agenttest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/quire-ha/quire/agent"
	"github.com/quire-ha/quire/certs"
	"github.com/quire-ha/quire/internal/mariadbtest"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
	buildDir  string
)

// Binary builds quire-agent (once per test binary) and returns its path.
// The build directory is removed by Cleanup, which TestMain should call.
func Binary(tb testing.TB) string {
	tb.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "quire-agenttest-bin-")
		if buildErr != nil {
			return
		}
		_, file, _, _ := runtime.Caller(0)
		root := filepath.Join(filepath.Dir(file), "..", "..")
		binPath = filepath.Join(buildDir, "quire-agent")
		cmd := exec.Command("go", "build", "-o", binPath, "./cmd/agent")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("agenttest: go build ./cmd/agent: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		tb.Fatal(buildErr)
	}
	return binPath
}

// Cleanup removes the built binary; call it from TestMain after m.Run.
func Cleanup() {
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
}

// Options describe one agent.
type Options struct {
	Node  string
	DB    *mariadbtest.Instance
	Role  string // none, primary, replica
	Epoch uint64
	// PrimaryAgent is the primary agent's gRPC address (replicas).
	PrimaryAgent string
	// K, SyncSet and Policy configure a static primary's ack gate.
	K       int
	SyncSet []string
	Policy  string
	// Extra YAML appended to the generated configuration.
	Extra string
	// CADir, if set, is a CA directory (certs.InitCA; e.g. a
	// managertest cluster's CADir): the agent gets an agent certificate for
	// Node from it and speaks mutual TLS. Empty: plaintext on loopback.
	CADir string
}

// Proc is one agent process.
type Proc struct {
	Opts     Options
	Dir      string // data_dir and config
	GRPCAddr string
	HTTPAddr string
	tb       testing.TB

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	logs *bytes.Buffer
}

// handedOut holds every address freeAddr returned in this test binary: a
// port the kernel offers again before the process it was given to binds
// it must not go to a second agent.
var handedOut = struct {
	sync.Mutex
	addrs map[string]bool
}{addrs: map[string]bool{}}

func freeAddr(tb testing.TB) string {
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			tb.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		handedOut.Lock()
		dup := handedOut.addrs[addr]
		handedOut.addrs[addr] = true
		handedOut.Unlock()
		if !dup {
			return addr
		}
	}
	tb.Fatal("agenttest: no loopback port that was not handed out already")
	return ""
}

// Start writes the configuration and starts the agent. The process is
// killed and its directory removed when the test ends.
func Start(tb testing.TB, o Options) *Proc {
	tb.Helper()
	Binary(tb)
	dir := tb.TempDir()
	p := &Proc{Opts: o, Dir: dir, GRPCAddr: freeAddr(tb), HTTPAddr: freeAddr(tb), tb: tb, logs: &bytes.Buffer{}}
	pwFile := filepath.Join(dir, "mysql.password")
	// The agent logs in with exactly its privileges (accounts.Agent).
	if err := os.WriteFile(pwFile, []byte(o.DB.AgentPassword+"\n"), 0o600); err != nil {
		tb.Fatal(err)
	}
	if o.Role == "" {
		o.Role = agent.RoleNone
	}
	if o.Epoch == 0 {
		o.Epoch = 1
	}
	if o.Policy == "" {
		o.Policy = "strict"
	}
	cfg := fmt.Sprintf(`node_id: %s
listen: %s
http_listen: %s
data_dir: %s
log_level: debug
mysql:
  host: 127.0.0.1
  port: %d
  user: %s
  password_file: %s
%s
replication:
  heartbeat: 200ms
  k: %d
  sync_set: [%s]
  policy: %s
static:
  role: %s
  epoch: %d
`, o.Node, p.GRPCAddr, p.HTTPAddr, filepath.Join(dir, "data"), o.DB.Port, o.DB.AgentUser, pwFile,
		tlsYAML(tb, o, dir), o.K, strings.Join(o.SyncSet, ", "), o.Policy, o.Role, o.Epoch)
	if o.PrimaryAgent != "" {
		cfg += "  primary_agent: " + o.PrimaryAgent + "\n"
	}
	cfg += o.Extra
	if err := os.WriteFile(filepath.Join(dir, "agent.yaml"), []byte(cfg), 0o600); err != nil {
		tb.Fatal(err)
	}
	p.Opts = o
	tb.Cleanup(func() {
		p.Kill()
		if tb.Failed() {
			tb.Logf("agent %s log tail:\n%s", o.Node, p.LogTail(40))
		}
	})
	if err := p.Restart(); err != nil {
		tb.Fatal(err)
	}
	return p
}

// tlsYAML is the agent's tls: section: an agent certificate for o.Node
// from o.CADir, or plaintext.
func tlsYAML(tb testing.TB, o Options, dir string) string {
	if o.CADir == "" {
		return "tls: {insecure_plaintext: true}"
	}
	if err := certs.Issue(o.CADir, dir, o.Node, certs.RoleAgent, []string{"127.0.0.1", "localhost"}); err != nil {
		tb.Fatal(err)
	}
	return fmt.Sprintf("tls: {ca_file: %s, cert_file: %s, key_file: %s}",
		filepath.Join(o.CADir, certs.CACert), certs.CertFile(dir, o.Node), certs.KeyFile(dir, o.Node))
}

// Restart starts the process again (after Kill) on the same data.
func (p *Proc) Restart() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		select {
		case <-p.done:
		default:
			return fmt.Errorf("agenttest: agent %s still running", p.Opts.Node)
		}
	}
	cmd := exec.Command(Binary(p.tb), "--config", filepath.Join(p.Dir, "agent.yaml"))
	cmd.Stdout, cmd.Stderr = (*lockedWriter)(p), (*lockedWriter)(p)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("agenttest: start agent %s: %w", p.Opts.Node, err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	p.cmd, p.done = cmd, done
	return nil
}

type lockedWriter Proc

func (w *lockedWriter) Write(b []byte) (int, error) {
	p := (*Proc)(w)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.logs.Len() > 8<<20 {
		p.logs.Reset()
	}
	return p.logs.Write(b)
}

// LogTail returns the last n lines the agent printed.
func (p *Proc) LogTail(n int) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	lines := strings.Split(strings.TrimRight(p.logs.String(), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Logs returns everything the agent printed (up to the last 8 MiB).
func (p *Proc) Logs() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.logs.String()
}

// Kill sends SIGKILL and waits for the process to exit.
func (p *Proc) Kill() {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Kill()
	<-done
}

// Signal sends sig to the running process (e.g. SIGSTOP, SIGCONT).
func (p *Proc) Signal(sig os.Signal) error {
	p.mu.Lock()
	cmd := p.cmd
	p.mu.Unlock()
	if cmd == nil {
		return fmt.Errorf("agenttest: agent %s was never started", p.Opts.Node)
	}
	return cmd.Process.Signal(sig)
}

// PID returns the process id of the last started process.
func (p *Proc) PID() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// Alive reports whether the process runs.
func (p *Proc) Alive() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Status fetches /status.
func (p *Proc) Status(ctx context.Context) (agent.Status, error) {
	var st agent.Status
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.HTTPAddr+"/status", nil)
	if err != nil {
		return st, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("agenttest: /status: %s", resp.Status)
	}
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

// WaitStatus polls /status until cond holds or d passes.
func (p *Proc) WaitStatus(what string, d time.Duration, cond func(agent.Status) bool) agent.Status {
	p.tb.Helper()
	deadline := time.Now().Add(d)
	var last agent.Status
	var lastErr error
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		st, err := p.Status(ctx)
		cancel()
		if err == nil {
			last = st
			if cond(st) {
				return st
			}
		}
		lastErr = err
		if !p.Alive() {
			p.tb.Fatalf("agent %s exited while waiting for %s; log tail:\n%s", p.Opts.Node, what, p.LogTail(30))
		}
		time.Sleep(50 * time.Millisecond) // poll interval
	}
	p.tb.Fatalf("agent %s: timed out after %s waiting for %s; last status %+v (err %v); log tail:\n%s",
		p.Opts.Node, d, what, last, lastErr, p.LogTail(30))
	return last
}

// LogDir is the agent's transaction-log directory.
func (p *Proc) LogDir() string { return filepath.Join(p.Dir, "data", "txlog") }

// Port returns the port of an address.
func Port(addr string) int {
	_, ps, _ := net.SplitHostPort(addr)
	n, _ := strconv.Atoi(ps)
	return n
}
