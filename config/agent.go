package config

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// Agent is the configuration of a Quire agent (cmd/agent), read from YAML.
// See docs/configuration.md for every key.
type Agent struct {
	// NodeID names this database host in the cluster; it matches the
	// member id the managers know it by.
	NodeID string `yaml:"node_id" check:"required,nodeid"`
	// Listen is the gRPC address (log stream, manager orders).
	Listen string `yaml:"listen" check:"listen"`
	// HTTPListen serves /primary, /replica and /metrics.
	HTTPListen string `yaml:"http_listen" check:"listen"`
	// DataDir holds the transaction log and the agent's state.
	DataDir string `yaml:"data_dir" check:"required"`
	// Managers are the gRPC addresses (host:port) of the managers. Empty
	// until the managers exist.
	Managers []string `yaml:"managers" check:"hostport,unique"`
	// LogLevel is debug, info, warn or error.
	LogLevel string `yaml:"log_level" enum:"debug,info,warn,error"`
	// LogFormat is text or json.
	LogFormat string `yaml:"log_format" enum:"text,json"`
	// MySQL is how the agent reaches its local mariadbd.
	MySQL MySQL `yaml:"mysql"`
	// TLS secures gRPC.
	TLS TLS `yaml:"tls"`
	// Replication tunes detection and the K-of-N ack gate.
	Replication Replication `yaml:"replication"`
	// Log tunes the transaction log.
	Log Log `yaml:"log"`
	// Apply tunes the parallel applier.
	Apply Apply `yaml:"apply"`
	// Static fixes the agent's role when it runs without managers (the
	// local sandbox, tests). With managers, they assign roles.
	Static Static `yaml:"static"`
}

// Static is a fixed role for an agent without managers.
type Static struct {
	// Role is "primary" or "replica"; "none" (the default) waits for managers.
	Role string `yaml:"role" enum:"none,primary,replica"`
	// Epoch is the primary term the role belongs to.
	Epoch int64 `yaml:"epoch" range:"1..1000000000"`
	// PrimaryAgent is the primary agent's gRPC address (replicas only).
	PrimaryAgent string `yaml:"primary_agent" check:"hostport"`
}

func (st *Static) check(d *decoder, managers []string, path string) {
	pr, pa := join(path, "role"), join(path, "primary_agent")
	if d.bad[pr] || d.bad[pa] {
		return
	}
	switch {
	case st.Role != "none" && len(managers) > 0:
		d.fail(d.line(pr), pr, "%q is only for running without managers; the managers listed in managers assign roles (remove static.role or managers)", st.Role)
	case st.Role == "replica" && st.PrimaryAgent == "":
		d.fail(d.line(pr), pa, "a static replica needs the primary agent's address (host:port)")
	case st.Role != "replica" && st.PrimaryAgent != "":
		d.fail(d.line(pa), pa, "only a static replica streams from a primary agent (static.role is %q)", st.Role)
	}
}

// MySQL is the connection of an agent to its local mariadbd.
type MySQL struct {
	// Host and Port locate mariadbd over TCP (ignored when Socket is set).
	Host string `yaml:"host" check:"required"`
	// Port is the TCP port of mariadbd.
	Port int `yaml:"port" range:"1..65535"`
	// Socket, if set, is the Unix socket to connect to instead of Host:Port.
	Socket string `yaml:"socket"`
	// User is the database user the agent logs in as.
	User string `yaml:"user" check:"required"`
	// PasswordFile names a file (mode 0600 or stricter) holding the password.
	PasswordFile string `yaml:"password_file"`
	// PasswordEnv names an environment variable holding the password.
	PasswordEnv string `yaml:"password_env" check:"envname"`
	// Password is loaded from PasswordFile or PasswordEnv; it is never
	// read from the configuration file itself. It is zero when neither is
	// set (unix_socket authentication through Socket).
	Password Secret `yaml:"-"`
}

// refuseKey refuses a password written into the file.
func (MySQL) refuseKey(path string) (string, bool) {
	if !strings.HasSuffix(path, ".password") {
		return "", false
	}
	base := strings.TrimSuffix(path, "password")
	return fmt.Sprintf("a password is never read from the configuration file; put it in a file with mode 0600 "+
		"and set %spassword_file, or set %spassword_env to the name of an environment variable that holds it",
		base, base), true
}

// Replication tunes failure detection and the ack gate (DESIGN.md §3).
// K, SyncSet and Policy are the initial cluster settings; once the cluster
// runs, the managers' Raft state is authoritative.
type Replication struct {
	// Heartbeat is the interval of heartbeats between agents and managers.
	Heartbeat time.Duration `yaml:"heartbeat" range:"100ms..60s"`
	// DeadAfterHeartbeats is how many heartbeats may be missed before a
	// peer counts as lost.
	DeadAfterHeartbeats int `yaml:"dead_after_heartbeats" range:"2..100"`
	// K is how many sync-set members must hold a transaction durably
	// before its commit is acknowledged; 0 means asynchronous.
	K int `yaml:"k" range:"0..16"`
	// SyncSet lists the replicas whose acks count.
	SyncSet []string `yaml:"sync_set" check:"nodeid,unique"`
	// Policy is strict (block commits when fewer than K members are
	// healthy) or degrade (continue asynchronously, recorded in Raft).
	Policy string `yaml:"policy" enum:"strict,degrade"`
	// MaxTransactionBytes bounds one transaction's size in the log.
	MaxTransactionBytes ByteSize `yaml:"max_transaction_bytes" range:"1MiB..16GiB"`
}

// Log tunes the transaction log.
type Log struct {
	// SegmentBytes is the size at which a segment file is closed.
	SegmentBytes ByteSize `yaml:"segment_bytes" range:"1MiB..1GiB"`
	// Retention is how long records are kept, by their commit time, once
	// no member needs them any more; 0 purges as soon as that is safe.
	Retention time.Duration `yaml:"retention" range:"0s..8760h"`
	// PurgeInterval is how often the agent looks for segments to purge.
	PurgeInterval time.Duration `yaml:"purge_interval" range:"1s..1h"`
}

// Apply tunes the parallel applier of a replica (DESIGN.md §4).
type Apply struct {
	// Channels is the number of worker connections.
	Channels int `yaml:"channels" range:"1..256"`
	// BlockSize is the most transactions one block commit holds.
	BlockSize int `yaml:"block_size" range:"1..10000"`
	// BlockBytes is the most event bytes one block commit holds.
	BlockBytes ByteSize `yaml:"block_bytes" range:"64KiB..1GiB"`
	// BlockTime is how long a channel may wait to fill a block.
	BlockTime time.Duration `yaml:"block_time" range:"0s..10s"`
	// PartialBlocks is how many channels may apply a block that is not
	// full at the same time; the others wait up to BlockTime for a slot
	// and gather more transactions meanwhile.
	PartialBlocks int `yaml:"partial_blocks" range:"1..256"`
	// CommitOrder is shard (channels commit independently) or global
	// (commits follow seqno order).
	CommitOrder string `yaml:"commit_order" enum:"shard,global"`
	// MaxDivergenceSeqnos is how many seqnos a channel may run ahead of
	// the slowest.
	MaxDivergenceSeqnos int64 `yaml:"max_divergence_seqnos" range:"1..100000000"`
	// MaxDivergence is how far in source commit time a channel may run
	// ahead of the slowest.
	MaxDivergence time.Duration `yaml:"max_divergence" range:"100ms..1h"`
	// ShardMap maps a schema to a shard name; schemas mapped to one shard
	// form a shard group. Unmapped schemas are their own shard.
	ShardMap map[string]string `yaml:"shard_map" check:"ident"`
	// CriticalShards are shards holding global data: a transaction
	// touching one runs alone.
	CriticalShards []string `yaml:"critical_shards" check:"ident,unique"`
	// SerializeUnknown must be true: a transaction that cannot be
	// attributed to exactly one known shard runs alone.
	SerializeUnknown bool `yaml:"serialize_unknown"`
}

func defaultAgent() *Agent {
	return &Agent{
		Listen:     "0.0.0.0:7400",
		HTTPListen: "0.0.0.0:7480",
		LogLevel:   "info",
		LogFormat:  "text",
		MySQL:      MySQL{Host: "127.0.0.1", Port: 3306, User: "quire"},
		Replication: Replication{
			Heartbeat:           time.Second,
			DeadAfterHeartbeats: 2,
			K:                   1,
			Policy:              "strict",
			MaxTransactionBytes: GiB,
		},
		Log:    Log{SegmentBytes: 64 * MiB, Retention: 24 * time.Hour, PurgeInterval: time.Minute},
		Static: Static{Role: "none", Epoch: 1},
		Apply: Apply{
			Channels:            8,
			BlockSize:           10,
			BlockBytes:          16 * MiB,
			BlockTime:           50 * time.Millisecond,
			PartialBlocks:       1,
			CommitOrder:         "shard",
			MaxDivergenceSeqnos: 10000,
			MaxDivergence:       10 * time.Second,
			SerializeUnknown:    true,
		},
	}
}

// maxFileSize bounds a configuration file.
const maxFileSize = 1 << 20

// LoadAgent reads, checks and returns the agent configuration in the file
// at path, with defaults filled in and the MySQL password loaded. The error
// lists every problem found (see [Errors]).
func LoadAgent(path string) (*Agent, error) {
	data, err := readConfig(path)
	if err != nil {
		return nil, err
	}
	return ParseAgent(data, path)
}

// ParseAgent is [LoadAgent] for a file already read; name is used in
// messages and relative paths are resolved against its directory.
func ParseAgent(data []byte, name string) (*Agent, error) {
	return parseAgent(data, name, osEnviron)
}

func parseAgent(data []byte, name string, env environ) (*Agent, error) {
	a := defaultAgent()
	d, ok := decode(data, name, a)
	if !ok {
		return nil, d.err()
	}
	dir := configDir(name)
	a.DataDir = resolvePath(dir, a.DataDir)
	a.checkListeners(d)
	a.MySQL.finish(d, env, dir, "mysql")
	a.TLS.finish(d, env, dir, "tls")
	a.Replication.check(d, a.NodeID, "replication")
	a.Apply.check(d, "apply")
	a.Static.check(d, a.Managers, "static")
	if err := d.err(); err != nil {
		return nil, err
	}
	return a, nil
}

func readConfig(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("config: %s is not a regular file", path)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("config: read %s: %w", path, err)
	}
	if len(data) > maxFileSize {
		return nil, fmt.Errorf("config: %s is larger than %d bytes", path, maxFileSize)
	}
	return data, nil
}

func (a *Agent) checkListeners(d *decoder) {
	if !d.bad["listen"] && !d.bad["http_listen"] && sameListener(a.Listen, a.HTTPListen) {
		d.fail(d.line("http_listen"), "http_listen", "%q collides with listen %q; use another port", a.HTTPListen, a.Listen)
	}
}

func (m *MySQL) finish(d *decoder, env environ, dir, path string) {
	pf, pe := join(path, "password_file"), join(path, "password_env")
	m.Socket = resolvePath(dir, m.Socket)
	m.PasswordFile = resolvePath(dir, m.PasswordFile)
	switch {
	case d.bad[path] || d.bad[pf] || d.bad[pe] || d.bad[join(path, "password")]:
	case m.PasswordFile != "" && m.PasswordEnv != "":
		d.fail(d.line(pe), pe, "set only one of password_file and password_env")
	case m.PasswordFile == "" && m.PasswordEnv == "":
		if m.Socket == "" {
			d.fail(d.line(path), path, "no password: set password_file (a file with mode 0600) or password_env "+
				"(an environment variable name), or socket to log in with unix_socket authentication")
		}
	default:
		m.Password, _ = d.loadPassword(env, path, m.PasswordFile, m.PasswordEnv)
	}
}

func (r *Replication) check(d *decoder, nodeID, path string) {
	ps, pk := join(path, "sync_set"), join(path, "k")
	if d.bad[ps] {
		return
	}
	for i, id := range r.SyncSet {
		p := indexPath(ps, i)
		if id == nodeID && !d.bad[p] {
			d.fail(d.line(p), p, "%q is this node (node_id); the sync set lists the replicas whose acks count", id)
		}
	}
	if len(r.SyncSet) > 0 && r.K > len(r.SyncSet) && !d.bad[pk] {
		d.fail(d.line(pk), pk, "K=%d is larger than the sync set [%s] (%d members), so commits could never be acknowledged",
			r.K, strings.Join(r.SyncSet, ", "), len(r.SyncSet))
	}
}

func (ap *Apply) check(d *decoder, path string) {
	p := join(path, "serialize_unknown")
	if !ap.SerializeUnknown && !d.bad[p] {
		d.fail(d.line(p), p, "false is not allowed (allowed: true): a transaction that cannot be attributed to exactly "+
			"one known shard may change rows another channel is changing, and applying it in parallel could leave "+
			"this replica different from the primary without any error")
	}
}
