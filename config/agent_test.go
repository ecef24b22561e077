package config

import (
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"
)

// wantErr is one expected problem: its line, key path and a fragment of the
// full message (which starts with "file:line: ").
type wantErr struct {
	line int
	path string
	frag string
}

// checkErrs asserts that err holds exactly the problems in want, in order.
func checkErrs(t *testing.T, file string, err error, want []wantErr) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want %d", len(want))
	}
	got := Errors(err)
	if len(got) != len(want) {
		t.Fatalf("got %d problems, want %d:\n%v", len(got), len(want), err)
	}
	for i, w := range want {
		g := got[i]
		prefix := file + ": "
		if w.line > 0 {
			prefix = fmt.Sprintf("%s:%d: ", file, w.line)
		}
		msg := g.Error()
		if g.File != file || g.Line != w.line || g.Path != w.path || !strings.HasPrefix(msg, prefix) || !strings.Contains(msg, w.frag) {
			t.Errorf("problem %d:\n got  line %d path %q: %s\n want line %d path %q, containing %q", i, g.Line, g.Path, msg, w.line, w.path, w.frag)
		}
		for _, secret := range []string{testPassword, testEnvPassword, "hunter2"} {
			if strings.Contains(msg, secret) {
				t.Errorf("problem %d shows a password: %s", i, msg)
			}
		}
	}
	if t.Failed() {
		t.Logf("all problems:\n%v", err)
	}
}

// agentBase is a valid four-line agent configuration; cases append to it
// from line 5.
const agentBase = `node_id: db1
data_dir: /var/lib/quire
mysql: {password_env: QUIRE_PW}
tls: {insecure_plaintext: true}
`

var badAgents = []struct {
	name string
	yaml string
	want []wantErr
}{
	{"unknown top-level key", agentBase + "replicaton:\n  k: 1\n",
		[]wantErr{{5, "replicaton", `agent.yaml:5: unknown key "replicaton" (allowed: node_id, listen, http_listen, data_dir, managers, log_level, log_format, mysql, tls, replication, log, apply, static); did you mean "replication"?`}}},
	{"static role with managers", agentBase + "managers: [m1:7301]\nstatic:\n  role: primary\n",
		[]wantErr{{7, "static.role", `"primary" is only for running without managers`}}},
	{"static replica without primary", agentBase + "static:\n  role: replica\n",
		[]wantErr{{6, "static.primary_agent", "a static replica needs the primary agent's address"}}},
	{"static primary with primary_agent", agentBase + "static:\n  role: primary\n  primary_agent: db2:7400\n",
		[]wantErr{{7, "static.primary_agent", `only a static replica streams from a primary agent (static.role is "primary")`}}},
	{"static role unknown", agentBase + "static:\n  role: leader\n",
		[]wantErr{{6, "static.role", `"leader" is not allowed (allowed: none, primary, replica)`}}},
	{"static epoch zero", agentBase + "static:\n  epoch: 0\n",
		[]wantErr{{6, "static.epoch", "0 is out of range (allowed 1..1000000000)"}}},
	{"unknown nested key", agentBase + "apply:\n  chanels: 4\n",
		[]wantErr{{6, "apply.chanels", `unknown key "apply.chanels" (allowed in apply: channels, block_size,`}}},
	{"channels out of range", agentBase + "apply:\n  channels: 0\n",
		[]wantErr{{6, "apply.channels", "agent.yaml:6: apply.channels: 0 is out of range (allowed 1..256)"}}},
	{"integer beyond int64", agentBase + "apply:\n  channels: 99999999999999999999\n",
		[]wantErr{{6, "apply.channels", "99999999999999999999 is out of range (allowed 1..256)"}}},
	{"policy not allowed", agentBase + "replication:\n  policy: lenient\n",
		[]wantErr{{6, "replication.policy", `agent.yaml:6: replication.policy: "lenient" is not allowed (allowed: strict, degrade)`}}},
	{"duration not a duration", agentBase + "replication:\n  heartbeat: fast\n",
		[]wantErr{{6, "replication.heartbeat", `replication.heartbeat: "fast" is not a duration (e.g. 10s, 1m)`}}},
	{"duration without unit", agentBase + "replication:\n  heartbeat: 5\n",
		[]wantErr{{6, "replication.heartbeat", `"5" is not a duration: add a unit (e.g. 5s, 5ms)`}}},
	{"duration out of range", agentBase + "replication:\n  heartbeat: 10ms\n",
		[]wantErr{{6, "replication.heartbeat", "replication.heartbeat: 10ms is out of range (allowed 100ms..1m)"}}},
	{"decimal size unit", agentBase + "apply:\n  block_bytes: 64MB\n",
		[]wantErr{{6, "apply.block_bytes", `apply.block_bytes: "64MB" is not a size: unit "MB" is ambiguous; use MiB`}}},
	{"size not a size", agentBase + "replication:\n  max_transaction_bytes: lots\n",
		[]wantErr{{6, "replication.max_transaction_bytes", `"lots" is not a size (e.g. 64MiB, 1GiB, 1048576)`}}},
	{"size out of range", agentBase + "log:\n  segment_bytes: 512KiB\n",
		[]wantErr{{6, "log.segment_bytes", "log.segment_bytes: 512KiB is out of range (allowed 1MiB..1GiB)"}}},
	{"port out of range", "node_id: db1\ndata_dir: /d\nmysql:\n  password_env: QUIRE_PW\n  port: 70000\ntls: {insecure_plaintext: true}\n",
		[]wantErr{{5, "mysql.port", "agent.yaml:5: mysql.port: 70000 is out of range (allowed 1..65535)"}}},
	{"port not an integer", "node_id: db1\ndata_dir: /d\nmysql:\n  password_env: QUIRE_PW\n  port: abc\ntls: {insecure_plaintext: true}\n",
		[]wantErr{{5, "mysql.port", `mysql.port: "abc" is not an integer`}}},
	{"node_id missing", "data_dir: /d\nmysql: {password_env: QUIRE_PW}\ntls: {insecure_plaintext: true}\n",
		[]wantErr{{0, "node_id", "agent.yaml: node_id: required key is missing"}}},
	{"node_id invalid", "node_id: DB_1\ndata_dir: /d\nmysql: {password_env: QUIRE_PW}\ntls: {insecure_plaintext: true}\n",
		[]wantErr{{1, "node_id", `node_id: "DB_1" is not a valid node id (1-63 characters a-z`}}},
	{"data_dir empty", "node_id: db1\ndata_dir: \"\"\nmysql: {password_env: QUIRE_PW}\ntls: {insecure_plaintext: true}\n",
		[]wantErr{{2, "data_dir", "data_dir: must not be empty"}}},
	{"duplicate key", agentBase + "log_level: info\nlog_level: debug\n",
		[]wantErr{{6, "log_level", "agent.yaml:6: log_level: duplicate key (first set on line 5)"}}},
	{"duplicate nested key", agentBase + "apply:\n  channels: 4\n  channels: 5\n",
		[]wantErr{{7, "apply.channels", "apply.channels: duplicate key (first set on line 6)"}}},
	{"key without value", agentBase + "log_level:\n",
		[]wantErr{{5, "log_level", "log_level: has no value (expected a string)"}}},
	{"password in the file", "node_id: db1\ndata_dir: /d\nmysql:\n  password: hunter2\ntls: {insecure_plaintext: true}\n",
		[]wantErr{{4, "mysql.password", "mysql.password: a password is never read from the configuration file; put it in a file with mode 0600 and set mysql.password_file, or set mysql.password_env"}}},
	{"no password source", "node_id: db1\ndata_dir: /d\nmysql: {user: quire}\ntls: {insecure_plaintext: true}\n",
		[]wantErr{{3, "mysql", "mysql: no password: set password_file"}}},
	{"both password sources", "node_id: db1\ndata_dir: /d\nmysql: {password_env: QUIRE_PW, password_file: /etc/quire/mysql.password}\ntls: {insecure_plaintext: true}\n",
		[]wantErr{{3, "mysql.password_env", "set only one of password_file and password_env"}}},
	{"password env unset", "node_id: db1\ndata_dir: /d\nmysql: {password_env: QUIRE_NOPE}\ntls: {insecure_plaintext: true}\n",
		[]wantErr{{3, "mysql.password_env", "mysql.password_env: environment variable QUIRE_NOPE is not set"}}},
	{"password env empty", "node_id: db1\ndata_dir: /d\nmysql: {password_env: QUIRE_EMPTY}\ntls: {insecure_plaintext: true}\n",
		[]wantErr{{3, "mysql.password_env", "environment variable QUIRE_EMPTY is empty"}}},
	{"password env name invalid", "node_id: db1\ndata_dir: /d\nmysql: {password_env: 1BAD}\ntls: {insecure_plaintext: true}\n",
		[]wantErr{{3, "mysql.password_env", `"1BAD" is not a valid environment variable name`}}},
	{"password file missing", "node_id: db1\ndata_dir: /d\nmysql: {password_file: /etc/quire/none}\ntls: {insecure_plaintext: true}\n",
		[]wantErr{{3, "mysql.password_file", "mysql.password_file: /etc/quire/none does not exist"}}},
	{"password file readable by other", "node_id: db1\ndata_dir: /d\nmysql: {password_file: /etc/quire/open.password}\ntls: {insecure_plaintext: true}\n",
		[]wantErr{{3, "mysql.password_file", "/etc/quire/open.password has mode 0644, so group or other may read it; run chmod 600 /etc/quire/open.password"}}},
	{"password file readable by group", "node_id: db1\ndata_dir: /d\nmysql: {password_file: /etc/quire/group.password}\ntls: {insecure_plaintext: true}\n",
		[]wantErr{{3, "mysql.password_file", "has mode 0640"}}},
	{"password file empty", "node_id: db1\ndata_dir: /d\nmysql: {password_file: /etc/quire/empty.password}\ntls: {insecure_plaintext: true}\n",
		[]wantErr{{3, "mysql.password_file", "/etc/quire/empty.password is empty"}}},
	{"password file two lines", "node_id: db1\ndata_dir: /d\nmysql: {password_file: /etc/quire/twoline.password}\ntls: {insecure_plaintext: true}\n",
		[]wantErr{{3, "mysql.password_file", "holds more than one line"}}},
	{"password file is a directory", "node_id: db1\ndata_dir: /d\nmysql: {password_file: /etc/quire/dir}\ntls: {insecure_plaintext: true}\n",
		[]wantErr{{3, "mysql.password_file", "/etc/quire/dir is not a regular file"}}},
	{"tls missing", "node_id: db1\ndata_dir: /d\nmysql: {password_env: QUIRE_PW}\n",
		[]wantErr{{0, "tls", "agent.yaml: tls: set ca_file, cert_file and key_file for mutual TLS, or insecure_plaintext: true"}}},
	{"tls incomplete", "node_id: db1\ndata_dir: /d\nmysql: {password_env: QUIRE_PW}\ntls:\n  ca_file: /etc/quire/ca.pem\n  cert_file: /etc/quire/cert.pem\n",
		[]wantErr{{4, "tls.key_file", "tls.key_file: required key is missing: set ca_file, cert_file and key_file together, or insecure_plaintext: true"}}},
	{"tls plaintext with files", "node_id: db1\ndata_dir: /d\nmysql: {password_env: QUIRE_PW}\ntls:\n  insecure_plaintext: true\n  ca_file: /etc/quire/ca.pem\n",
		[]wantErr{{6, "tls.ca_file", "tls.ca_file: must not be set together with insecure_plaintext: true"}}},
	{"tls key readable by group", "node_id: db1\ndata_dir: /d\nmysql: {password_env: QUIRE_PW}\ntls:\n  ca_file: /etc/quire/ca.pem\n  cert_file: /etc/quire/cert.pem\n  key_file: /etc/quire/group.password\n",
		[]wantErr{{7, "tls.key_file", "tls.key_file: /etc/quire/group.password has mode 0640, so group or other may read the private key; run chmod 600 /etc/quire/group.password"}}},
	{"tls file does not exist", "node_id: db1\ndata_dir: /d\nmysql: {password_env: QUIRE_PW}\ntls:\n  ca_file: /etc/quire/nope.pem\n  cert_file: /etc/quire/cert.pem\n  key_file: /etc/quire/key.pem\n",
		[]wantErr{{5, "tls.ca_file", "agent.yaml:5: tls.ca_file: /etc/quire/nope.pem does not exist"}}},
	{"k larger than sync set", agentBase + "replication:\n  k: 3\n  sync_set: [db2, db3]\n",
		[]wantErr{{6, "replication.k", "replication.k: K=3 is larger than the sync set [db2, db3] (2 members)"}}},
	{"sync set holds this node", agentBase + "replication:\n  sync_set: [db2, db1]\n",
		[]wantErr{{6, "replication.sync_set[1]", `replication.sync_set[1]: "db1" is this node (node_id)`}}},
	{"sync set duplicate", agentBase + "replication:\n  sync_set:\n    - db2\n    - db2\n",
		[]wantErr{{8, "replication.sync_set[1]", `replication.sync_set[1]: "db2" is listed twice (also at replication.sync_set[0])`}}},
	{"serialize_unknown false", agentBase + "apply:\n  serialize_unknown: false\n",
		[]wantErr{{6, "apply.serialize_unknown", "apply.serialize_unknown: false is not allowed (allowed: true): a transaction that cannot be attributed"}}},
	{"boolean not a boolean", agentBase + "apply:\n  serialize_unknown: yes\n",
		[]wantErr{{6, "apply.serialize_unknown", `apply.serialize_unknown: "yes" is not a boolean (allowed: true, false)`}}},
	{"manager address without port", agentBase + "managers: [m1]\n",
		[]wantErr{{5, "managers[0]", `managers[0]: "m1" is not a valid address (host:port)`}}},
	{"managers not a list", agentBase + "managers: m1:7301\n",
		[]wantErr{{5, "managers", `managers: expected a list, got "m1:7301"`}}},
	{"section not a mapping", agentBase + "apply: [1, 2]\n",
		[]wantErr{{5, "apply", "apply: expected a mapping, got a list"}}},
	{"log level not allowed", agentBase + "log_level: verbose\n",
		[]wantErr{{5, "log_level", `log_level: "verbose" is not allowed (allowed: debug, info, warn, error)`}}},
	{"listen address invalid", agentBase + "listen: 7400\n",
		[]wantErr{{5, "listen", `listen: "7400" is not a valid listen address`}}},
	{"listeners collide", agentBase + "http_listen: 127.0.0.1:7400\n",
		[]wantErr{{5, "http_listen", `http_listen: "127.0.0.1:7400" collides with listen "0.0.0.0:7400"`}}},
	{"shard map empty shard", agentBase + "apply:\n  shard_map:\n    sales: \"\"\n",
		[]wantErr{{7, "apply.shard_map.sales", `apply.shard_map.sales: "" is not a valid name`}}},
	{"critical shard duplicate", agentBase + "apply:\n  critical_shards: [cfg, cfg]\n",
		[]wantErr{{6, "apply.critical_shards[1]", `"cfg" is listed twice`}}},
}

func TestParseAgentBad(t *testing.T) {
	for _, tc := range badAgents {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := parseAgent([]byte(tc.yaml), "agent.yaml", testEnv)
			if cfg != nil {
				t.Errorf("got a config with the error")
			}
			checkErrs(t, "agent.yaml", err, tc.want)
		})
	}
}

func TestParseAgentReportsAllErrorsByLine(t *testing.T) {
	const y = `apply:
  channels: 0
  commit_order: random
node_id: Bad!
data_dir: /d
bogus: 1
mysql: {password_env: QUIRE_PW, port: 0}
replication:
  policy: lenient
`
	_, err := parseAgent([]byte(y), "agent.yaml", testEnv)
	checkErrs(t, "agent.yaml", err, []wantErr{
		{0, "tls", "set ca_file, cert_file and key_file"},
		{2, "apply.channels", "0 is out of range"},
		{3, "apply.commit_order", `"random" is not allowed (allowed: shard, global)`},
		{4, "node_id", `"Bad!" is not a valid node id`},
		{6, "bogus", `unknown key "bogus"`},
		{7, "mysql.port", "0 is out of range (allowed 1..65535)"},
		{9, "replication.policy", `"lenient" is not allowed`},
	})
}

func TestParseAgentMinimalGetsDefaults(t *testing.T) {
	cfg, err := parseAgent([]byte(agentBase), "agent.yaml", testEnv)
	if err != nil {
		t.Fatal(err)
	}
	want := defaultAgent()
	want.NodeID = "db1"
	want.DataDir = "/var/lib/quire"
	want.MySQL.PasswordEnv = "QUIRE_PW"
	want.TLS.InsecurePlaintext = true
	if cfg.MySQL.Password.Reveal() != testEnvPassword {
		t.Errorf("password not loaded from the environment")
	}
	cfg.MySQL.Password = Secret{}
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("got  %+v\nwant %+v", cfg, want)
	}
	// Spot-check that the defaults are the documented ones.
	if cfg.Listen != "0.0.0.0:7400" || cfg.Apply.Channels != 8 || cfg.Apply.BlockBytes != 16*MiB ||
		cfg.Replication.Heartbeat != time.Second || cfg.Replication.MaxTransactionBytes != GiB ||
		cfg.Log.SegmentBytes != 64*MiB || !cfg.Apply.SerializeUnknown || cfg.Replication.Policy != "strict" {
		t.Errorf("unexpected defaults: %+v", cfg)
	}
}

func TestParseAgentFull(t *testing.T) {
	const y = `node_id: db-2_b
listen: "[::1]:9400"
http_listen: :9480
data_dir: data
managers: ["m1.example:7301", "10.0.0.2:7301"]
log_level: debug
log_format: json
mysql:
  host: db.local
  port: 3307
  user: agent
  password_file: /etc/quire/readonly.password
tls: &tls
  ca_file: /etc/quire/ca.pem
  cert_file: /etc/quire/cert.pem
  key_file: /etc/quire/key.pem
replication:
  heartbeat: 250ms
  dead_after_heartbeats: 3
  k: 2
  sync_set: [db1, db3]
  policy: degrade
  max_transaction_bytes: 1073741824
log:
  segment_bytes: 128 MiB
  retention: 0s
  purge_interval: 5s
apply:
  channels: 16
  block_size: 1_000
  block_bytes: 1GiB
  block_time: 0s
  commit_order: global
  max_divergence_seqnos: 500
  max_divergence: 1m30s
  shard_map: {sales_eu: sales, sales_us: sales, "odd.schema": odd}
  critical_shards: [config]
  serialize_unknown: true
`
	cfg, err := parseAgent([]byte(y), "/etc/quire/relative/agent.yaml", testEnv)
	if err != nil {
		t.Fatal(err)
	}
	want := &Agent{
		NodeID: "db-2_b", Listen: "[::1]:9400", HTTPListen: ":9480", DataDir: "/etc/quire/relative/data",
		Managers: []string{"m1.example:7301", "10.0.0.2:7301"}, LogLevel: "debug", LogFormat: "json",
		MySQL: MySQL{Host: "db.local", Port: 3307, User: "agent", PasswordFile: "/etc/quire/readonly.password",
			Password: cfg.MySQL.Password},
		TLS: TLS{CAFile: "/etc/quire/ca.pem", CertFile: "/etc/quire/cert.pem", KeyFile: "/etc/quire/key.pem"},
		Replication: Replication{Heartbeat: 250 * time.Millisecond, DeadAfterHeartbeats: 3, K: 2,
			SyncSet: []string{"db1", "db3"}, Policy: "degrade", MaxTransactionBytes: GiB},
		Log: Log{SegmentBytes: 128 * MiB, Retention: 0, PurgeInterval: 5 * time.Second},
		Apply: Apply{Channels: 16, BlockSize: 1000, BlockBytes: GiB, BlockTime: 0, PartialBlocks: 1, CommitOrder: "global",
			MaxDivergenceSeqnos: 500, MaxDivergence: 90 * time.Second,
			ShardMap:       map[string]string{"sales_eu": "sales", "sales_us": "sales", "odd.schema": "odd"},
			CriticalShards: []string{"config"}, SerializeUnknown: true},
		Static: Static{Role: "none", Epoch: 1},
	}
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("got  %+v\nwant %+v", cfg, want)
	}
	if cfg.MySQL.Password.Reveal() != testPassword {
		t.Errorf("password not loaded from the 0400 file")
	}
}

func TestParseAgentRelativePaths(t *testing.T) {
	const y = `node_id: db1
data_dir: ../data
mysql: {socket: run/mysqld.sock}
tls: {ca_file: ../ca.pem, cert_file: ../cert.pem, key_file: /etc/quire/key.pem}
`
	cfg, err := parseAgent([]byte(y), "/etc/quire/relative/agent.yaml", testEnv)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.DataDir != "/etc/quire/data" || cfg.MySQL.Socket != "/etc/quire/relative/run/mysqld.sock" ||
		cfg.TLS.CAFile != "/etc/quire/ca.pem" || cfg.TLS.CertFile != "/etc/quire/cert.pem" {
		t.Errorf("paths not resolved against the file's directory: %+v", cfg)
	}
	if cfg.MySQL.Password.IsSet() {
		t.Errorf("a password without a source")
	}
}

func TestParseAgentEmptyListsAndSections(t *testing.T) {
	cfg, err := parseAgent([]byte(agentBase+"managers:\nlog:\napply:\n  shard_map:\n  critical_shards: []\n"), "agent.yaml", testEnv)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Managers) != 0 || cfg.Log != defaultAgent().Log || len(cfg.Apply.ShardMap) != 0 {
		t.Errorf("empty values: %+v", cfg)
	}
}

func TestExampleAgent(t *testing.T) {
	data, err := os.ReadFile("../deploy/examples/agent.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := parseAgent(data, "agent.yaml", testEnv)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.NodeID != "db1" || len(cfg.Managers) != 3 || cfg.MySQL.Password.Reveal() != testPassword ||
		cfg.Apply.ShardMap["sales_us"] != "sales" || cfg.TLS.KeyFile != "/etc/quire/tls/db1-key.pem" {
		t.Errorf("example parsed as %+v", cfg)
	}
}
