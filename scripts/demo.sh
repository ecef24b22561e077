#!/usr/bin/env bash
# Local Quire sandbox: three MariaDB instances on fixed loopback ports, data
# in .demo/ under the repository. Idempotent: `up` starts what is not
# running, `down` stops everything and removes .demo/, `status` reports.
#
# QUIRE_DEMO_DIR=/abs/path puts the sandbox there instead of .demo/ (the
# chaos test uses its own directory); the ports stay the same, so only one
# sandbox runs at a time. For harnesses: `stop` stops every process and keeps
# the directory; `start mysqld|agent dbN` and `start manager mN` start one
# process that is not running (as a service manager restarts a killed one).
set -euo pipefail
umask 077   # keys, passwords, option files, logs and configurations: owner only

top=$(cd "$(dirname "$0")/.." && pwd)
demo="${QUIRE_DEMO_DIR:-$top/.demo}"
case "$demo" in /*) ;; *) echo "demo: QUIRE_DEMO_DIR must be an absolute path, got '$demo'" >&2; exit 2 ;; esac
shown=.demo   # how messages name the directory
[ "$demo" = "$top/.demo" ] || shown=$demo
nodes=(db1 db2 db3)
mysql_port() { echo $((33060 + $1)); }   # db1 → 33061 …

find_bin() {
  for p in "$(command -v "$1" 2>/dev/null)" "/usr/sbin/$1" "/usr/bin/$1"; do
    [ -n "$p" ] && [ -x "$p" ] && { echo "$p"; return; }
  done
  echo "demo: $1 not found; run 'make deps' (as root) or install mariadb-server" >&2; exit 1
}

# alive PIDFILE: the process runs (a killed one that is not reaped yet, a
# zombie, counts as gone).
alive() {
  local pid st
  [ -f "$1" ] || return 1
  pid=$(cat "$1")
  kill -0 "$pid" 2>/dev/null || return 1
  st=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null) || return 0
  [ "${st%% *}" != Z ]
}

# http_ok PORT PATH: does 127.0.0.1:PORT answer PATH with 200? (no curl needed)
http_ok() {
  local line
  { exec 3<>"/dev/tcp/127.0.0.1/$1"; } 2>/dev/null || return 1
  printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' "$2" >&3
  IFS= read -r line <&3
  exec 3<&-
  [[ $line == *" 200 "* ]]
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

user_flag=()
[ "$(id -u)" = 0 ] && user_flag=(--user=root)
# The servers' administrator is the account running the demo, authenticated
# by the unix socket (no password anywhere); nothing else logs in as it.
admin=$(id -un)
admin_sql() { "$(find_bin mariadb)" --no-defaults -S "$1" -u"$admin" "${@:2}"; }

# The accounts (accounts/accounts.go holds the same lists; a Go test checks
# this copy): the agent's, the application's (schema app only) and a
# monitoring account. None has SUPER, GRANT OPTION or CREATE USER; only the
# agent's has READ_ONLY ADMIN and CONNECTION ADMIN, so the application
# cannot write through read_only or survive a fence.
agent_grants='SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, PROCESS, REFERENCES, INDEX, ALTER, CREATE TEMPORARY TABLES, LOCK TABLES, EXECUTE, REPLICATION SLAVE, BINLOG MONITOR, CREATE VIEW, SHOW VIEW, CREATE ROUTINE, ALTER ROUTINE, EVENT, TRIGGER, DELETE HISTORY, SET USER, CONNECTION ADMIN, READ_ONLY ADMIN, REPLICATION MASTER ADMIN, BINLOG ADMIN, BINLOG REPLAY'
app_grants='SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, REFERENCES, INDEX, ALTER, CREATE TEMPORARY TABLES, LOCK TABLES, EXECUTE, CREATE VIEW, SHOW VIEW, CREATE ROUTINE, ALTER ROUTINE, EVENT, TRIGGER'
monitor_grants='PROCESS, BINLOG MONITOR, SLAVE MONITOR'

# new_password FILE: a random password in FILE (mode 0600), kept if present.
new_password() {
  [ -f "$1" ] || (umask 077; head -c 18 /dev/urandom | base64 | tr -d '/+=' > "$1")
  chmod 600 "$1"
}

# option_file FILE USER PASSWORD_FILE: a [client] option file (mode 0600) so
# that no password is ever on a command line.
option_file() {
  (umask 077; printf '[client]\nuser=%s\npassword=%s\n' "$2" "$(cat "$3")" > "$1")
  chmod 600 "$1"
}

start_db() {
  local i=$1 name=${nodes[$(( $1 - 1 ))]} dir="$demo/${nodes[$(( $1 - 1 ))]}" port
  port=$(mysql_port "$i")
  if alive "$dir/mysqld.pid"; then echo "demo: $name already running on 127.0.0.1:$port"; return; fi
  if port_busy "$port"; then
    echo "demo: port $port is taken by another process; stop it or run 'make demo-down' first" >&2; exit 1
  fi
  mkdir -p "$dir/tmp"
  cat > "$dir/my.cnf" <<CNF
[mariadbd]
datadir=$dir/data
socket=$dir/mysqld.sock
pid-file=$dir/mysqld.pid
log-error=$dir/error.log
tmpdir=$dir/tmp
bind-address=127.0.0.1
port=$port
server_id=$i
log_bin=$dir/data/binlog
binlog_format=ROW
binlog_checksum=CRC32
log_slave_updates=ON
gtid_strict_mode=OFF
skip-name-resolve
innodb_buffer_pool_size=64M
innodb_log_file_size=32M
max_allowed_packet=256M
performance_schema=OFF
rpl_semi_sync_master_enabled=ON
rpl_semi_sync_master_wait_point=AFTER_SYNC
rpl_semi_sync_master_wait_no_slave=ON
rpl_semi_sync_master_timeout=4294967295
read_only=ON
CNF
  chmod 600 "$dir/my.cnf"
  if [ ! -d "$dir/data/mysql" ]; then
    "$(find_bin mariadb-install-db)" --defaults-file="$dir/my.cnf" --auth-root-authentication-method=socket \
      --auth-root-socket-user="$admin" --skip-test-db "${user_flag[@]}" >"$dir/install.log" 2>&1 \
      || { echo "demo: mariadb-install-db failed for $name; see $dir/install.log" >&2; exit 1; }
    fresh=1
  else
    fresh=0
  fi
  "$(find_bin mariadbd)" --defaults-file="$dir/my.cnf" "${user_flag[@]}" >/dev/null 2>&1 &
  local deadline=$((SECONDS + 60))
  until admin_sql "$dir/mysqld.sock" -e 'SELECT 1' >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then echo "demo: $name did not answer in 60 s; see $dir/error.log" >&2; tail -5 "$dir/error.log" >&2; exit 1; fi
    sleep 0.2
  done
  if [ "$fresh" = 1 ]; then
    # Passwords travel on standard input, never on a command line.
    admin_sql "$dir/mysqld.sock" <<SQL
SET SESSION sql_log_bin=0;
CREATE USER IF NOT EXISTS 'quire'@'127.0.0.1' IDENTIFIED BY '$(cat "$demo/mysql.password")';
GRANT $agent_grants ON *.* TO 'quire'@'127.0.0.1';
CREATE USER IF NOT EXISTS 'app'@'127.0.0.1' IDENTIFIED BY '$(cat "$demo/app.password")';
GRANT $app_grants ON \`app\`.* TO 'app'@'127.0.0.1';
CREATE USER IF NOT EXISTS 'monitor'@'127.0.0.1' IDENTIFIED BY '$(cat "$demo/monitor.password")';
GRANT $monitor_grants ON *.* TO 'monitor'@'127.0.0.1';
RESET MASTER;
SQL
  fi
  echo "demo: $name up on 127.0.0.1:$port"
}

bin="$top/bin"
raft_port()  { echo $((7300 + $1)); }   # manager i: Raft
mgr_port()   { echo $((7310 + $1)); }   # manager i: gRPC
mhttp_port() { echo $((7320 + $1)); }   # manager i: HTTP
agent_port() { echo $((7400 + $1)); }   # agent i: gRPC
ahttp_port() { echo $((7480 + $1)); }   # agent i: HTTP
managers_csv() { echo "127.0.0.1:$(mgr_port 1),127.0.0.1:$(mgr_port 2),127.0.0.1:$(mgr_port 3)"; }

quire() {
  QUIRE_MANAGERS=$(managers_csv) QUIRE_TLS_CA="$demo/certs/ca.crt" \
  QUIRE_TLS_CERT="$demo/certs/operator.crt" QUIRE_TLS_KEY="$demo/certs/operator.key" "$bin/quire" "$@"
}

# write_cli_config: the CLI's configuration file (cmd/quire/cliconfig.go),
# so that `export QUIRE_CONFIG=...` is all `bin/quire status` needs.
write_cli_config() {
  cat >"$demo/cli.yaml" <<YAML
# quire CLI configuration for the demo: export QUIRE_CONFIG=$demo/cli.yaml
managers: [127.0.0.1:$(mgr_port 1), 127.0.0.1:$(mgr_port 2), 127.0.0.1:$(mgr_port 3)]
tls: {ca: certs/ca.crt, cert: certs/operator.crt, key: certs/operator.key}
YAML
  chmod 600 "$demo/cli.yaml"
}

make_certs() {
  [ -f "$demo/certs/ca.crt" ] && return
  "$bin/quire" certs init --dir "$demo/certs" --cn "Quire demo CA" >/dev/null
  # Each certificate carries its role: managers, agents, the operator.
  for n in m1 m2 m3; do
    "$bin/quire" certs issue --dir "$demo/certs" --role manager --name "$n" --hosts 127.0.0.1,localhost >/dev/null
  done
  for n in db1 db2 db3; do
    "$bin/quire" certs issue --dir "$demo/certs" --role agent --name "$n" --hosts 127.0.0.1,localhost >/dev/null
  done
  "$bin/quire" certs issue --dir "$demo/certs" --role operator --name operator >/dev/null
  echo "demo: certificates in $shown/certs (mutual TLS everywhere; roles: manager m1-m3, agent db1-db3, operator)"
}

tls_yaml() {
  printf 'tls:\n  ca_file: %s\n  cert_file: %s\n  key_file: %s\n' "$demo/certs/ca.crt" "$demo/certs/$1.crt" "$demo/certs/$1.key"
}

start_proc() { # name pidfile logfile cmd...
  local name=$1 pidf=$2 logf=$3; shift 3
  if alive "$pidf"; then echo "demo: $name already running"; return; fi
  nohup "$@" >>"$logf" 2>&1 &
  echo $! > "$pidf"
}

start_manager() {
  local i=$1 dir="$demo/m$1"
  mkdir -p "$dir"
  {
    echo "node_id: m$i"
    echo "raft_listen: 127.0.0.1:$(raft_port "$i")"
    echo "grpc_listen: 127.0.0.1:$(mgr_port "$i")"
    echo "http_listen: 127.0.0.1:$(mhttp_port "$i")"
    echo "data_dir: $dir/data"
    echo "peers:"
    for j in 1 2 3; do
      echo "  - {id: m$j, raft_addr: 127.0.0.1:$(raft_port "$j"), grpc_addr: 127.0.0.1:$(mgr_port "$j")}"
    done
    tls_yaml "m$i"
    echo "failover: {timeout: 3s}"
  } > "$dir/manager.yaml"
  chmod 600 "$dir/manager.yaml"
  start_proc "manager m$i" "$dir/manager.pid" "$dir/manager.log" "$bin/quire-manager" --config "$dir/manager.yaml" --bootstrap
}

start_agent() {
  local i=$1 n=${nodes[$(( $1 - 1 ))]} dir="$demo/${nodes[$(( $1 - 1 ))]}"
  {
    echo "node_id: $n"
    echo "listen: 127.0.0.1:$(agent_port "$i")"
    echo "http_listen: 127.0.0.1:$(ahttp_port "$i")"
    echo "data_dir: $dir/agent"
    echo "managers: [$(managers_csv)]"
    echo "mysql: {host: 127.0.0.1, port: $(mysql_port "$i"), user: quire, password_file: $demo/mysql.password}"
    tls_yaml "$n"
    echo "replication: {heartbeat: 500ms}"
  } > "$dir/agent.yaml"
  chmod 600 "$dir/agent.yaml"
  start_proc "agent $n" "$dir/agent.pid" "$dir/agent.log" "$bin/quire-agent" --config "$dir/agent.yaml"
}

init_cluster() {
  local deadline=$((SECONDS + 60))
  until quire status --timeout 2s >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then echo "demo: managers did not elect a leader in 60 s; see $shown/m*/manager.log" >&2; exit 1; fi
    sleep 0.3
  done
  if quire status --json 2>/dev/null | grep -q '"primary": *"db'; then return; fi
  for i in 1 2 3; do
    n=${nodes[$((i-1))]}
    quire members add --id "$n" --mysql "127.0.0.1:$(mysql_port "$i")" --agent "127.0.0.1:$(agent_port "$i")" >/dev/null 2>&1 || true
  done
  quire set-k 1 >/dev/null
  quire init --primary db1 --sync-set db2,db3 >/dev/null
  echo "demo: cluster initialized: db1 primary, sync set db2,db3, K=1"
  deadline=$((SECONDS + 60))
  until http_ok "$(ahttp_port 1)" /primary; do
    if [ $SECONDS -ge $deadline ]; then echo "demo: db1 did not become a writable primary in 60 s; see $shown/db1/agent.log" >&2; exit 1; fi
    sleep 0.3
  done
  # The application's schema, created by the application account through
  # the primary: the first commit the sync set acknowledges.
  timeout 60 "$(find_bin mariadb)" --defaults-extra-file="$demo/app.cnf" -h127.0.0.1 -P"$(mysql_port 1)" \
    -e 'CREATE DATABASE IF NOT EXISTS app' \
    || { echo "demo: the application account could not create schema app on db1; see .demo/db*/agent.log" >&2; exit 1; }
}

# HAProxy (Debian's haproxy; optional): a write port that follows the agents'
# /primary check and a read port over the agents' /replica checks, as a
# deployment puts it in front of the cluster.
haproxy_write_port=33070
haproxy_read_port=33071
start_haproxy() {
  local hp cfg="$demo/haproxy.cfg" i
  hp=$(command -v haproxy 2>/dev/null || true)
  [ -n "$hp" ] || [ ! -x /usr/sbin/haproxy ] || hp=/usr/sbin/haproxy
  if [ -z "$hp" ]; then echo "demo: haproxy not installed; no write/read ports (make deps installs it)"; return; fi
  if alive "$demo/haproxy.pid"; then echo "demo: haproxy already running"; return; fi
  for p in $haproxy_write_port $haproxy_read_port; do
    if port_busy "$p"; then echo "demo: port $p is taken by another process; stop it or run 'make demo-down' first" >&2; exit 1; fi
  done
  {
    cat <<CFG
# Generated by scripts/demo.sh. Health checks ask the agents (HTTP), traffic
# goes to the databases; a node that stops answering /primary loses its
# sessions at once (on-marked-down shutdown-sessions).
global
  maxconn 512
defaults
  mode tcp
  timeout connect 2s
  timeout client 1h
  timeout server 1h
  timeout check 1s
  default-server inter 200ms fall 2 rise 1 on-marked-down shutdown-sessions
frontend write
  bind 127.0.0.1:$haproxy_write_port
  default_backend primary
backend primary
  option httpchk GET /primary
  http-check expect status 200
CFG
    for i in 1 2 3; do echo "  server ${nodes[$((i-1))]} 127.0.0.1:$(mysql_port "$i") check port $(ahttp_port "$i")"; done
    cat <<CFG
frontend read
  bind 127.0.0.1:$haproxy_read_port
  default_backend replicas
backend replicas
  balance leastconn
  option httpchk GET /replica
  http-check expect status 200
CFG
    for i in 1 2 3; do echo "  server ${nodes[$((i-1))]} 127.0.0.1:$(mysql_port "$i") check port $(ahttp_port "$i")"; done
  } > "$cfg"
  "$hp" -c -q -f "$cfg" || { echo "demo: haproxy refuses $cfg" >&2; exit 1; }
  "$hp" -D -f "$cfg" -p "$demo/haproxy.pid" >>"$demo/haproxy.log" 2>&1 \
    || { echo "demo: haproxy did not start; see $shown/haproxy.log" >&2; exit 1; }
  echo "demo: haproxy: writes on 127.0.0.1:$haproxy_write_port (the primary), reads on 127.0.0.1:$haproxy_read_port (healthy replicas)"
}

write_cluster_json() {
  {
    echo '{'
    echo '  "nodes": ['
    for i in 1 2 3; do
      sep=','; [ $i = 3 ] && sep=''
      printf '    {"id": "%s", "mysql": "127.0.0.1:%s", "agent": "127.0.0.1:%s", "agent_http": "127.0.0.1:%s", "data_dir": "%s"}%s\n' \
        "${nodes[$((i-1))]}" "$(mysql_port $i)" "$(agent_port $i)" "$(ahttp_port $i)" "$demo/${nodes[$((i-1))]}" "$sep"
    done
    echo '  ],'
    echo '  "managers": ['
    for i in 1 2 3; do
      sep=','; [ $i = 3 ] && sep=''
      printf '    {"id": "m%s", "raft": "127.0.0.1:%s", "grpc": "127.0.0.1:%s", "http": "127.0.0.1:%s"}%s\n' \
        "$i" "$(raft_port $i)" "$(mgr_port $i)" "$(mhttp_port $i)" "$sep"
    done
    echo '  ],'
    printf '  "certs": "%s",\n' "$demo/certs"
    printf '  "mysql_user": "quire",\n  "mysql_password_file": "%s",\n' "$demo/mysql.password"
    printf '  "app_user": "app",\n  "app_password_file": "%s",\n  "app_option_file": "%s",\n  "app_database": "app",\n' "$demo/app.password" "$demo/app.cnf"
    printf '  "monitor_user": "monitor",\n  "monitor_password_file": "%s"\n' "$demo/monitor.password"
    echo '}'
  } > "$demo/cluster.json"
}

up() {
  mkdir -p "$demo"
  for p in mysql app monitor; do new_password "$demo/$p.password"; done
  option_file "$demo/app.cnf" app "$demo/app.password"
  for f in quire quire-manager quire-agent; do
    [ -x "$bin/$f" ] || { echo "demo: $bin/$f missing: run 'make build' (make demo does)" >&2; exit 1; }
  done
  for i in 1 2 3; do start_db "$i"; done
  make_certs
  for i in 1 2 3; do start_manager "$i"; done
  for i in 1 2 3; do start_agent "$i"; done
  init_cluster
  write_cluster_json
  write_cli_config
  start_haproxy
  # The status is worth printing once every node has taken its role.
  local deadline=$((SECONDS + 30))
  until quire status --json 2>/dev/null | tr -d ' \n' | grep -q '"nodes":\[' && \
        ! quire status --json 2>/dev/null | tr -d ' \n' | grep -q '"healthy":false'; do
    [ $SECONDS -ge $deadline ] && break
    sleep 0.3
  done
  echo
  quire status || true
  cat <<TXT

Quire demo: three MariaDB instances, three agents and three managers run on
127.0.0.1 (data, logs and certificates in $shown/).
  cluster description: $shown/cluster.json
  write on the primary: mariadb --defaults-extra-file=$shown/app.cnf -h127.0.0.1 -P33061 app
                        (the application account: schema app, no way through read_only)
  through HAProxy:      -P$haproxy_write_port writes (follows failover), -P$haproxy_read_port reads (if haproxy runs)
  cluster status:       make demo-status     (quire status with the demo's certificates)
  the CLI directly:     export QUIRE_CONFIG=$demo/cli.yaml
                        bin/quire status     (and every other cluster command)
  stop and remove:      make demo-down
TXT
}

# stop_pid PIDFILE TENTHS: SIGTERM (after SIGCONT, in case it was stopped),
# wait up to TENTHS tenths of a second, then SIGKILL.
stop_pid() {
  local pid
  alive "$1" || return 1
  pid=$(cat "$1")
  kill -CONT "$pid" 2>/dev/null || true
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 "$2"); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
}

stop_all() {
  stop_pid "$demo/haproxy.pid" 30 || true
  for pidf in "$demo"/db*/agent.pid "$demo"/m*/manager.pid; do
    [ -f "$pidf" ] || continue
    stop_pid "$pidf" 100 || true
  done
  for n in "${nodes[@]}"; do
    if stop_pid "$demo/$n/mysqld.pid" 300; then echo "demo: $n stopped"; fi
  done
}

down() {
  [ -d "$demo" ] || { echo "demo: nothing to stop"; return; }
  stop_all
  rm -rf "$demo"
  echo "demo: removed $shown/"
}

stop() {
  [ -d "$demo" ] || { echo "demo: nothing to stop"; return; }
  stop_all
  echo "demo: stopped; data and logs kept in $shown/"
}

# start_one KIND NAME: start one process of a sandbox that `up` made.
start_one() {
  [ -f "$demo/cluster.json" ] || { echo "demo: no sandbox in $shown/ (run up first)" >&2; exit 1; }
  local kind=${1:-} name=${2:-} i
  case "$kind:$name" in
    mysqld:db[123]) i=${name#db}; start_db "$i" ;;
    agent:db[123])  i=${name#db}; start_agent "$i" ;;
    manager:m[123]) i=${name#m}; start_manager "$i" ;;
    *) echo "usage: $0 start mysqld|agent db1|db2|db3, or $0 start manager m1|m2|m3" >&2; exit 2 ;;
  esac
}

status() {
  [ -d "$demo" ] || { echo "demo: not running (make demo)"; exit 0; }
  if [ -f "$demo/certs/operator.crt" ] && [ -x "$bin/quire" ]; then
    quire status || true
    echo
  fi
  printf '%-5s %-17s %-8s %s\n' NODE MYSQL STATE GTID_BINLOG_POS
  for i in 1 2 3; do
    n=${nodes[$((i-1))]}; port=$(mysql_port "$i"); state=down; gtid=-
    if alive "$demo/$n/mysqld.pid"; then
      state=up
      gtid=$(admin_sql "$demo/$n/mysqld.sock" -N -e 'SELECT @@gtid_binlog_pos' 2>/dev/null || echo '?')
      [ -n "$gtid" ] || gtid='(empty)'
    fi
    printf '%-5s %-17s %-8s %s\n' "$n" "127.0.0.1:$port" "$state" "$gtid"
  done
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  stop) stop ;;
  start) start_one "${2:-}" "${3:-}" ;;
  status) status ;;
  *) echo "usage: $0 up|down|status|stop|start KIND NAME" >&2; exit 2 ;;
esac
