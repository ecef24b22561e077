package config

import "time"

// Manager is the configuration of a Quire manager (cmd/manager), read from
// YAML. See docs/configuration.md for every key.
type Manager struct {
	// NodeID is this manager's Raft server id; Peers must list it.
	NodeID string `yaml:"node_id" check:"required,nodeid"`
	// RaftListen is the address Raft listens on.
	RaftListen string `yaml:"raft_listen" check:"listen"`
	// GRPCListen serves agents and the quire CLI.
	GRPCListen string `yaml:"grpc_listen" check:"listen"`
	// HTTPListen serves /metrics and health.
	HTTPListen string `yaml:"http_listen" check:"listen"`
	// DataDir holds the Raft log, stable store and snapshots.
	DataDir string `yaml:"data_dir" check:"required"`
	// Peers lists every manager, this one included.
	Peers []Peer `yaml:"peers" check:"required"`
	// AllowEvenPeers permits an even number of peers.
	AllowEvenPeers bool `yaml:"allow_even_peers"`
	// TLS secures gRPC and Raft.
	TLS TLS `yaml:"tls"`
	// Failover tunes automatic failover.
	Failover Failover `yaml:"failover"`
	// LogLevel is debug, info, warn or error.
	LogLevel string `yaml:"log_level" enum:"debug,info,warn,error"`
	// LogFormat is text or json.
	LogFormat string `yaml:"log_format" enum:"text,json"`
}

// Peer is one manager of the Raft group.
type Peer struct {
	// ID is the manager's node_id.
	ID string `yaml:"id" check:"required,nodeid"`
	// RaftAddr is the address other managers reach its Raft on.
	RaftAddr string `yaml:"raft_addr" check:"required,hostport"`
	// GRPCAddr is the address agents and the CLI reach it on.
	GRPCAddr string `yaml:"grpc_addr" check:"required,hostport"`
}

// Failover tunes automatic failover (DESIGN.md §6).
type Failover struct {
	// Timeout is how long the primary must be unreachable or unhealthy
	// before it counts as failed.
	Timeout time.Duration `yaml:"timeout" range:"1s..10m"`
	// AntiFlapWindow is the time after an automatic failover during which
	// no second one happens without an operator's acknowledgement; 0
	// turns the protection off.
	AntiFlapWindow time.Duration `yaml:"anti_flap_window" range:"0s..168h"`
	// Auto enables automatic failover; when false, only operators fail over.
	Auto bool `yaml:"auto"`
}

func defaultManager() *Manager {
	return &Manager{
		RaftListen: "0.0.0.0:7300",
		GRPCListen: "0.0.0.0:7301",
		HTTPListen: "0.0.0.0:7380",
		LogLevel:   "info",
		LogFormat:  "text",
		Failover:   Failover{Timeout: 10 * time.Second, AntiFlapWindow: time.Hour, Auto: true},
	}
}

// LoadManager reads, checks and returns the manager configuration in the
// file at path, with defaults filled in. The error lists every problem found
// (see [Errors]).
func LoadManager(path string) (*Manager, error) {
	data, err := readConfig(path)
	if err != nil {
		return nil, err
	}
	return ParseManager(data, path)
}

// ParseManager is [LoadManager] for a file already read; name is used in
// messages and relative paths are resolved against its directory.
func ParseManager(data []byte, name string) (*Manager, error) {
	return parseManager(data, name, osEnviron)
}

func parseManager(data []byte, name string, env environ) (*Manager, error) {
	m := defaultManager()
	d, ok := decode(data, name, m)
	if !ok {
		return nil, d.err()
	}
	dir := configDir(name)
	m.DataDir = resolvePath(dir, m.DataDir)
	m.checkListeners(d)
	m.checkPeers(d)
	m.TLS.finish(d, env, dir, "tls")
	if err := d.err(); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *Manager) checkListeners(d *decoder) {
	keys := []string{"raft_listen", "grpc_listen", "http_listen"}
	addrs := []string{m.RaftListen, m.GRPCListen, m.HTTPListen}
	for i := range keys {
		for j := range i {
			if !d.bad[keys[i]] && !d.bad[keys[j]] && sameListener(addrs[i], addrs[j]) {
				d.fail(d.line(keys[i]), keys[i], "%q collides with %s %q; use another port", addrs[i], keys[j], addrs[j])
				break
			}
		}
	}
}

func (m *Manager) checkPeers(d *decoder) {
	if d.bad["peers"] || len(m.Peers) == 0 {
		return
	}
	type field struct {
		key string
		get func(Peer) string
	}
	for _, f := range []field{
		{"id", func(p Peer) string { return p.ID }},
		{"raft_addr", func(p Peer) string { return p.RaftAddr }},
		{"grpc_addr", func(p Peer) string { return p.GRPCAddr }},
	} {
		first := map[string]string{}
		for i, p := range m.Peers {
			path := join(indexPath("peers", i), f.key)
			v := f.get(p)
			if d.bad[path] || d.bad[indexPath("peers", i)] || v == "" {
				continue
			}
			if q, dup := first[v]; dup {
				d.fail(d.line(path), path, "%q is listed twice (also at %s)", v, q)
			} else {
				first[v] = path
			}
		}
	}
	self := false
	for _, p := range m.Peers {
		self = self || p.ID == m.NodeID
	}
	if !self && !d.bad["node_id"] && m.NodeID != "" {
		d.fail(d.line("peers"), "peers", "no peer has id %q (node_id); list every manager, this one included", m.NodeID)
	}
	if n := len(m.Peers); n%2 == 0 && !m.AllowEvenPeers {
		d.fail(d.line("peers"), "peers", "%d peers is an even number: it survives no more failed managers than %d peers "+
			"but needs a larger quorum; use 1, 3 or 5 peers, or set allow_even_peers: true", n, n-1)
	}
}
