package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestLoad loads both kinds of file from disk, with real TLS and password
// files. The configuration files themselves are world-readable (0644): they
// name key files but hold no secret, so that is fine.
func TestLoad(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{"ca.pem", "node.pem"} {
		writeFile(t, dir, f, "pem", 0o644)
	}
	writeFile(t, dir, "node-key.pem", "key", 0o600)
	writeFile(t, dir, "mysql.password", leak+"\n", 0o600)
	agentPath := writeFile(t, dir, "agent.yaml", `node_id: db1
data_dir: agent-data
mysql: {password_file: mysql.password}
tls: {ca_file: ca.pem, cert_file: node.pem, key_file: node-key.pem}
`, 0o644)
	managerPath := writeFile(t, dir, "manager.yaml", `node_id: m1
data_dir: manager-data
peers: [{id: m1, raft_addr: "127.0.0.1:7300", grpc_addr: "127.0.0.1:7301"}]
tls: {ca_file: ca.pem, cert_file: node.pem, key_file: node-key.pem}
`, 0o644)

	a, err := LoadAgent(agentPath)
	if err != nil {
		t.Fatal(err)
	}
	if a.TLS.KeyFile != filepath.Join(dir, "node-key.pem") || a.DataDir != filepath.Join(dir, "agent-data") ||
		a.MySQL.Password.Reveal() != leak {
		t.Errorf("agent: %+v", a)
	}
	m, err := LoadManager(managerPath)
	if err != nil {
		t.Fatal(err)
	}
	if m.TLS.CAFile != filepath.Join(dir, "ca.pem") || m.DataDir != filepath.Join(dir, "manager-data") {
		t.Errorf("manager: %+v", m)
	}

	// Problems name the path as given.
	bad := writeFile(t, dir, "bad.yaml", "node_id: db1\ndata_dir: /d\nmysql: {socket: /run/mysqld.sock, port: 0}\ntls: {insecure_plaintext: true}\n", 0o644)
	_, err = LoadAgent(bad)
	checkErrs(t, bad, err, []wantErr{{3, "mysql.port", bad + ":3: mysql.port: 0 is out of range (allowed 1..65535)"}})

	for _, tc := range []struct{ path, frag string }{
		{filepath.Join(dir, "missing.yaml"), "no such file or directory"},
		{dir, "is not a regular file"},
	} {
		if _, err := LoadAgent(tc.path); err == nil || !strings.Contains(err.Error(), tc.frag) || !strings.Contains(err.Error(), tc.path) {
			t.Errorf("LoadAgent(%s) = %v, want an error naming the file and containing %q", tc.path, err, tc.frag)
		}
		if _, err := LoadManager(tc.path); err == nil || !strings.Contains(err.Error(), tc.frag) {
			t.Errorf("LoadManager(%s) = %v, want an error containing %q", tc.path, err, tc.frag)
		}
	}
	big := writeFile(t, dir, "big.yaml", "# "+strings.Repeat("x", maxFileSize)+"\n", 0o644)
	if _, err := LoadAgent(big); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("LoadAgent(big) = %v", err)
	}
	if err := os.Remove(big); err != nil {
		t.Fatal(err)
	}
}

func TestLogger(t *testing.T) {
	var b strings.Builder
	a := &Agent{LogLevel: "warn", LogFormat: "json"}
	log := a.Logger(&b)
	log.Info("hidden")
	log.Warn("shown")
	if out := b.String(); strings.Contains(out, "hidden") || !strings.Contains(out, `"msg":"shown"`) {
		t.Errorf("json/warn logger wrote %q", out)
	}
	b.Reset()
	m := &Manager{LogLevel: "debug", LogFormat: "text"}
	m.Logger(&b).Debug("shown")
	if out := b.String(); !strings.Contains(out, "level=DEBUG msg=shown") {
		t.Errorf("text/debug logger wrote %q", out)
	}
}
