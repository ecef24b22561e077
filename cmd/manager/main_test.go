package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quire-ha/quire/certs"
	"github.com/quire-ha/quire/manager"
)

const waitTimeout = 20 * time.Second

// freeAddr returns a loopback address that was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

type peerAddrs struct{ id, raft, grpc, http string }

// syncBuffer is a bytes.Buffer safe for the logger and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// process is one manager running through run() in a goroutine.
type process struct {
	cancel context.CancelFunc
	done   chan error
	logs   *syncBuffer
}

func start(t *testing.T, cfgPath string, args ...string) *process {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	p := &process{cancel: cancel, done: make(chan error, 1), logs: &syncBuffer{}}
	go func() {
		p.done <- run(ctx, append([]string{"--config", cfgPath}, args...), io.Discard, p.logs, nil)
	}()
	t.Cleanup(func() { p.stop(t) })
	return p
}

// stop cancels the manager (as SIGTERM does) and waits for run to return.
func (p *process) stop(t *testing.T) {
	t.Helper()
	if p.cancel == nil {
		return
	}
	p.cancel()
	p.cancel = nil
	select {
	case err := <-p.done:
		if err != nil {
			t.Errorf("manager exited with %v\nlogs:\n%s", err, p.logs)
		}
	case <-time.After(waitTimeout):
		t.Fatalf("manager did not stop within %s", waitTimeout)
	}
}

// writeConfig writes self's configuration into dir; its data directory is
// dataDir/<id>.
func writeConfig(t *testing.T, dir, dataDir string, self peerAddrs, peers []peerAddrs, caDir string) string {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "node_id: %s\nraft_listen: %s\ngrpc_listen: %s\nhttp_listen: %s\ndata_dir: %s\n",
		self.id, self.raft, self.grpc, self.http, filepath.Join(dataDir, self.id))
	b.WriteString("peers:\n")
	for _, p := range peers {
		fmt.Fprintf(&b, "  - id: %s\n    raft_addr: %s\n    grpc_addr: %s\n", p.id, p.raft, p.grpc)
	}
	fmt.Fprintf(&b, "tls:\n  ca_file: %s\n  cert_file: %s\n  key_file: %s\n",
		filepath.Join(caDir, certs.CACert), certs.CertFile(caDir, self.id), certs.KeyFile(caDir, self.id))
	b.WriteString("failover:\n  timeout: 3s\n  anti_flap_window: 10m\nlog_level: info\n")
	path := filepath.Join(dir, self.id+".yaml")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func httpGet(url string) (int, string) {
	c := &http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", waitTimeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestThreeManagers(t *testing.T) {
	dir := t.TempDir()
	caDir := filepath.Join(dir, "ca")
	if err := certs.InitCA(caDir, "test CA"); err != nil {
		t.Fatal(err)
	}
	var peers []peerAddrs
	for i := range 3 {
		id := fmt.Sprintf("m%d", i+1)
		if err := certs.Issue(caDir, caDir, id, certs.RoleManager, []string{"127.0.0.1"}); err != nil {
			t.Fatal(err)
		}
		peers = append(peers, peerAddrs{id, freeAddr(t), freeAddr(t), freeAddr(t)})
	}
	if err := certs.Issue(caDir, caDir, "operator", certs.RoleOperator, nil); err != nil {
		t.Fatal(err)
	}
	var paths []string
	var procs []*process
	for _, p := range peers {
		paths = append(paths, writeConfig(t, dir, dir, p, peers, caDir))
		procs = append(procs, start(t, paths[len(paths)-1], "--bootstrap"))
	}

	// Every manager names the same leader on /leader and is healthy.
	var leader string
	waitFor(t, "every manager to name the same leader", func() bool {
		leader = ""
		for _, p := range peers {
			code, body := httpGet("http://" + p.http + "/leader")
			if code != http.StatusOK {
				return false
			}
			var v struct {
				ID       string `json:"id"`
				GRPCAddr string `json:"grpc_addr"`
			}
			if err := json.Unmarshal([]byte(body), &v); err != nil {
				t.Fatalf("/leader: %v: %s", err, body)
			}
			if leader != "" && v.ID != leader {
				return false
			}
			leader = v.ID
		}
		return true
	})
	for _, p := range peers {
		if code, body := httpGet("http://" + p.http + "/healthz"); code != http.StatusOK || !strings.Contains(body, "leader="+leader) {
			t.Errorf("%s /healthz: %d %q", p.id, code, body)
		}
	}
	leaders := 0
	for _, p := range peers {
		code, body := httpGet("http://" + p.http + "/metrics")
		if code != http.StatusOK {
			t.Fatalf("%s /metrics: %d", p.id, code)
		}
		for _, want := range []string{"quire_manager_raft_leader ", "quire_manager_build_info{", "go_goroutines", "quire_manager_epoch 0"} {
			if !strings.Contains(body, want) {
				t.Errorf("%s /metrics lacks %q", p.id, want)
			}
		}
		if strings.Contains(body, "\nquire_manager_raft_leader 1\n") {
			leaders++
		}
	}
	if leaders != 1 {
		t.Errorf("%d managers report quire_manager_raft_leader 1, want 1", leaders)
	}

	// The service answers over mutual TLS; InitCluster applies the
	// configured failover settings.
	tc, err := certs.ClientConfig(certs.Files{CA: filepath.Join(caDir, certs.CACert),
		Cert: certs.CertFile(caDir, "operator"), Key: certs.KeyFile(caDir, "operator")}, "")
	if err != nil {
		t.Fatal(err)
	}
	cl, err := manager.NewClient(manager.ClientConfig{Addrs: []string{peers[0].grpc, peers[1].grpc, peers[2].grpc}, TLS: tc})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if _, err := cl.AddMember(ctx, manager.Member{ID: "db1", MySQLAddr: "127.0.0.1:3306", AgentAddr: "127.0.0.1:7400", MayBePrimary: true}); err != nil {
		t.Fatal(err)
	}
	st, err := cl.InitCluster(ctx, "db1", nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.Epoch != 1 || st.FailoverTimeout != 3*time.Second || st.AntiFlapWindow != 10*time.Minute {
		t.Errorf("after init: %+v", st)
	}

	// SIGTERM (a cancelled context) stops every manager cleanly; a restart
	// with --bootstrap keeps the state.
	for _, p := range procs {
		p.stop(t)
	}
	for i, p := range peers {
		if strings.Contains(procs[i].logs.String(), "level=ERROR") {
			t.Errorf("%s logged errors:\n%s", p.id, procs[i].logs)
		}
	}
	for i := range peers {
		procs[i] = start(t, paths[i], "--bootstrap")
	}
	waitFor(t, "the restarted cluster to answer", func() bool {
		st, err := cl.Status(ctx)
		return err == nil && st.Epoch == 1 && st.Primary == "db1"
	})
	for i, p := range peers {
		if strings.Contains(procs[i].logs.String(), "bootstrap skipped") {
			t.Errorf("%s: bootstrap on restart with the same peers warned:\n%s", p.id, procs[i].logs)
		}
	}

	// A changed peer list at a later start is a warning, not fatal.
	procs[0].stop(t)
	changed := append([]peerAddrs(nil), peers...)
	changed[2].raft = freeAddr(t)
	path := writeConfig(t, t.TempDir(), dir, peers[0], changed, caDir)
	p := start(t, path, "--bootstrap")
	waitFor(t, "the bootstrap conflict warning", func() bool { return strings.Contains(p.logs.String(), "bootstrap skipped") })
	waitFor(t, "m1 to serve again after the conflict", func() bool {
		select {
		case err := <-p.done:
			t.Fatalf("manager exited after a bootstrap conflict: %v\n%s", err, p.logs)
		default:
		}
		code, _ := httpGet("http://" + peers[0].http + "/healthz")
		return code == http.StatusOK
	})
	p.stop(t)
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{{"--nope"}, {"extra"}, {"--config", filepath.Join(t.TempDir(), "missing.yaml")}} {
		if err := run(context.Background(), args, io.Discard, io.Discard, nil); !errors.Is(err, errUsage) {
			t.Errorf("run %q: %v, want a usage error", args, err)
		}
	}
}

// Plaintext is refused at start-up unless every address is on loopback;
// the error names the key.
func TestPlaintextOffLoopbackRefused(t *testing.T) {
	dir := t.TempDir()
	base := "node_id: m1\ndata_dir: " + filepath.Join(dir, "data") + "\ntls: {insecure_plaintext: true}\n" +
		"raft_listen: 127.0.0.1:0\nhttp_listen: 127.0.0.1:0\n" +
		"peers: [{id: m1, raft_addr: \"127.0.0.1:17300\", grpc_addr: \"127.0.0.1:17301\"}]\n"
	path := filepath.Join(dir, "m.yaml")
	if err := os.WriteFile(path, []byte(base+"grpc_listen: 0.0.0.0:0\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	err := run(context.Background(), []string{"--config", path}, io.Discard, io.Discard, nil)
	if !errors.Is(err, errUsage) || !strings.Contains(err.Error(), "grpc_listen: \"0.0.0.0:0\" is not a loopback address") {
		t.Fatalf("plaintext on 0.0.0.0: %v", err)
	}
	// --check says the same.
	if err := run(context.Background(), []string{"--config", path, "--check"}, io.Discard, io.Discard, nil); err == nil || !strings.Contains(err.Error(), "grpc_listen") {
		t.Fatalf("--check: %v", err)
	}
}
