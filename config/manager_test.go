package config

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

// managerBase is a valid seven-line manager configuration; cases append to
// it from line 8.
const managerBase = `node_id: m1
data_dir: /var/lib/quire/manager
tls: {insecure_plaintext: true}
peers:
  - {id: m1, raft_addr: "h1:7300", grpc_addr: "h1:7301"}
  - {id: m2, raft_addr: "h2:7300", grpc_addr: "h2:7301"}
  - {id: m3, raft_addr: "h3:7300", grpc_addr: "h3:7301"}
`

const twoPeers = `peers:
  - {id: m1, raft_addr: "h1:7300", grpc_addr: "h1:7301"}
  - {id: m2, raft_addr: "h2:7300", grpc_addr: "h2:7301"}
`

var badManagers = []struct {
	name string
	yaml string
	want []wantErr
}{
	{"timeout not a duration", "node_id: m1\ndata_dir: /d\nfailover:\n  timeout: ten\ntls: {insecure_plaintext: true}\n" + twoPeers + "allow_even_peers: true\n",
		[]wantErr{{4, "failover.timeout", `manager.yaml:4: failover.timeout: "ten" is not a duration (e.g. 10s, 1m)`}}},
	{"timeout out of range", managerBase + "failover:\n  timeout: 500ms\n",
		[]wantErr{{9, "failover.timeout", "failover.timeout: 500ms is out of range (allowed 1s..10m)"}}},
	{"anti-flap window out of range", managerBase + "failover:\n  anti_flap_window: 200h\n",
		[]wantErr{{9, "failover.anti_flap_window", "200h is out of range (allowed 0s..168h)"}}},
	{"auto not a boolean", managerBase + "failover:\n  auto: maybe\n",
		[]wantErr{{9, "failover.auto", `"maybe" is not a boolean`}}},
	{"even number of peers", "node_id: m1\ndata_dir: /d\ntls: {insecure_plaintext: true}\n" + twoPeers,
		[]wantErr{{4, "peers", "peers: 2 peers is an even number: it survives no more failed managers than 1 peers but needs a larger quorum; use 1, 3 or 5 peers, or set allow_even_peers: true"}}},
	{"peers do not include node_id", "node_id: m9\n" + managerBase[len("node_id: m1\n"):],
		[]wantErr{{4, "peers", `peers: no peer has id "m9" (node_id)`}}},
	{"peers missing", "node_id: m1\ndata_dir: /d\ntls: {insecure_plaintext: true}\n",
		[]wantErr{{0, "peers", "manager.yaml: peers: required key is missing"}}},
	{"peers empty", "node_id: m1\ndata_dir: /d\ntls: {insecure_plaintext: true}\npeers: []\n",
		[]wantErr{{4, "peers", "peers: must not be empty"}}},
	{"duplicate peer id", managerBase + "  - {id: m2, raft_addr: \"h4:7300\", grpc_addr: \"h4:7301\"}\n  - {id: m5, raft_addr: \"h5:7300\", grpc_addr: \"h5:7301\"}\n",
		[]wantErr{{8, "peers[3].id", `peers[3].id: "m2" is listed twice (also at peers[1].id)`}}},
	{"duplicate raft address", "node_id: m1\ndata_dir: /d\ntls: {insecure_plaintext: true}\npeers:\n  - {id: m1, raft_addr: \"h1:7300\", grpc_addr: \"h1:7301\"}\n  - {id: m2, raft_addr: \"h1:7300\", grpc_addr: \"h2:7301\"}\n  - {id: m3, raft_addr: \"h3:7300\", grpc_addr: \"h3:7301\"}\n",
		[]wantErr{{6, "peers[1].raft_addr", `"h1:7300" is listed twice (also at peers[0].raft_addr)`}}},
	{"peer without raft_addr", "node_id: m1\ndata_dir: /d\ntls: {insecure_plaintext: true}\npeers:\n  - {id: m1, raft_addr: \"h1:7300\", grpc_addr: \"h1:7301\"}\n  - id: m2\n    grpc_addr: \"h2:7301\"\n  - {id: m3, raft_addr: \"h3:7300\", grpc_addr: \"h3:7301\"}\n",
		[]wantErr{{6, "peers[1].raft_addr", "manager.yaml:6: peers[1].raft_addr: required key is missing"}}},
	{"unknown key in a peer", "node_id: m1\ndata_dir: /d\ntls: {insecure_plaintext: true}\npeers:\n  - id: m1\n    raft: \"h1:7300\"\n    grpc_addr: \"h1:7301\"\n",
		[]wantErr{
			{5, "peers[0].raft_addr", "peers[0].raft_addr: required key is missing"},
			{6, "peers[0].raft", `unknown key "peers[0].raft" (allowed in peers[0]: id, raft_addr, grpc_addr)`},
		}},
	{"peer id invalid", "node_id: m1\ndata_dir: /d\ntls: {insecure_plaintext: true}\npeers:\n  - {id: m1, raft_addr: \"h1:7300\", grpc_addr: \"h1:7301\"}\n  - {id: \"M 2\", raft_addr: \"h2:7300\", grpc_addr: \"h2:7301\"}\n  - {id: m3, raft_addr: \"h3:7300\", grpc_addr: \"h3:7301\"}\n",
		[]wantErr{{6, "peers[1].id", `peers[1].id: "M 2" is not a valid node id`}}},
	{"peer address without host", "node_id: m1\ndata_dir: /d\ntls: {insecure_plaintext: true}\npeers:\n  - {id: m1, raft_addr: \":7300\", grpc_addr: \"h1:7301\"}\n",
		[]wantErr{{5, "peers[0].raft_addr", `peers[0].raft_addr: ":7300" is not a valid address (host:port)`}}},
	{"peers not a list", "node_id: m1\ndata_dir: /d\ntls: {insecure_plaintext: true}\npeers: {m1: h1}\n",
		[]wantErr{{4, "peers", "peers: expected a list, got a mapping"}}},
	{"listeners collide", managerBase + "grpc_listen: 0.0.0.0:7300\n",
		[]wantErr{{8, "grpc_listen", `grpc_listen: "0.0.0.0:7300" collides with raft_listen "0.0.0.0:7300"`}}},
	{"unknown key", managerBase + "failover_timeout: 10s\n",
		[]wantErr{{8, "failover_timeout", `unknown key "failover_timeout" (allowed: node_id, raft_listen, grpc_listen, http_listen, data_dir, peers, allow_even_peers, tls, failover, log_level, log_format)`}}},
	{"tls missing", "node_id: m1\ndata_dir: /d\npeers:\n  - {id: m1, raft_addr: \"h1:7300\", grpc_addr: \"h1:7301\"}\n",
		[]wantErr{{0, "tls", "tls: set ca_file, cert_file and key_file"}}},
	{"log format not allowed", managerBase + "log_format: xml\n",
		[]wantErr{{8, "log_format", `log_format: "xml" is not allowed (allowed: text, json)`}}},
}

func TestParseManagerBad(t *testing.T) {
	for _, tc := range badManagers {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := parseManager([]byte(tc.yaml), "manager.yaml", testEnv)
			if cfg != nil {
				t.Errorf("got a config with the error")
			}
			checkErrs(t, "manager.yaml", err, tc.want)
		})
	}
}

func TestParseManagerGood(t *testing.T) {
	for _, tc := range []struct {
		name  string
		yaml  string
		check func(*Manager) bool
	}{
		{"three peers, defaults", managerBase, func(m *Manager) bool {
			want := defaultManager()
			want.NodeID, want.DataDir, want.TLS.InsecurePlaintext = "m1", "/var/lib/quire/manager", true
			want.Peers = []Peer{{"m1", "h1:7300", "h1:7301"}, {"m2", "h2:7300", "h2:7301"}, {"m3", "h3:7300", "h3:7301"}}
			return reflect.DeepEqual(m, want) && m.Failover.Timeout == 10*time.Second && m.Failover.Auto &&
				m.Failover.AntiFlapWindow == time.Hour && m.GRPCListen == "0.0.0.0:7301"
		}},
		{"one peer", "node_id: solo\ndata_dir: d\ntls: {insecure_plaintext: true}\npeers: [{id: solo, raft_addr: \"localhost:7300\", grpc_addr: \"localhost:7301\"}]\n",
			func(m *Manager) bool {
				wd, _ := os.Getwd()
				return len(m.Peers) == 1 && m.DataDir == filepath.Join(wd, "d")
			}},
		{"even peers allowed", "node_id: m1\ndata_dir: /d\ntls: {insecure_plaintext: true}\nallow_even_peers: true\n" + twoPeers,
			func(m *Manager) bool { return len(m.Peers) == 2 && m.AllowEvenPeers }},
		{"failover settings", managerBase + "failover: {timeout: 30s, anti_flap_window: 0s, auto: false}\n",
			func(m *Manager) bool {
				return m.Failover == Failover{Timeout: 30 * time.Second}
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := parseManager([]byte(tc.yaml), "manager.yaml", testEnv)
			if err != nil {
				t.Fatal(err)
			}
			if !tc.check(m) {
				t.Errorf("unexpected config %+v", m)
			}
		})
	}
}

func TestExampleManager(t *testing.T) {
	data, err := os.ReadFile("../deploy/examples/manager.yaml")
	if err != nil {
		t.Fatal(err)
	}
	m, err := parseManager(data, "manager.yaml", testEnv)
	if err != nil {
		t.Fatal(err)
	}
	if m.NodeID != "m1" || len(m.Peers) != 3 || m.Peers[2].GRPCAddr != "db3.example.net:7301" || m.TLS.CAFile != "/etc/quire/tls/ca.pem" {
		t.Errorf("example parsed as %+v", m)
	}
}
