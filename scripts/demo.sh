#!/usr/bin/env bash
# Local Quire sandbox: three MariaDB instances on fixed loopback ports, data
# in .demo/ under the repository. Idempotent: `up` starts what is not
# running, `down` stops everything and removes .demo/, `status` reports.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
demo="$top/.demo"
nodes=(db1 db2 db3)
mysql_port() { echo $((33060 + $1)); }   # db1 → 33061 …

find_bin() {
  for p in "$(command -v "$1" 2>/dev/null)" "/usr/sbin/$1" "/usr/bin/$1"; do
    [ -n "$p" ] && [ -x "$p" ] && { echo "$p"; return; }
  done
  echo "demo: $1 not found; run 'make deps' (as root) or install mariadb-server" >&2; exit 1
}

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

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
    "$(find_bin mariadb-install-db)" --defaults-file="$dir/my.cnf" --auth-root-authentication-method=normal \
      --skip-test-db "${user_flag[@]}" >"$dir/install.log" 2>&1 \
      || { echo "demo: mariadb-install-db failed for $name; see $dir/install.log" >&2; exit 1; }
    fresh=1
  else
    fresh=0
  fi
  "$(find_bin mariadbd)" --defaults-file="$dir/my.cnf" "${user_flag[@]}" >/dev/null 2>&1 &
  local deadline=$((SECONDS + 60))
  until "$(find_bin mariadb)" --no-defaults -S "$dir/mysqld.sock" -uroot -e 'SELECT 1' >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then echo "demo: $name did not answer in 60 s; see $dir/error.log" >&2; tail -5 "$dir/error.log" >&2; exit 1; fi
    sleep 0.2
  done
  if [ "$fresh" = 1 ]; then
    "$(find_bin mariadb)" --no-defaults -S "$dir/mysqld.sock" -uroot <<SQL
SET SESSION sql_log_bin=0;
CREATE USER IF NOT EXISTS 'quire'@'127.0.0.1' IDENTIFIED BY '$(cat "$demo/mysql.password")';
GRANT ALL ON *.* TO 'quire'@'127.0.0.1' WITH GRANT OPTION;
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

make_certs() {
  [ -f "$demo/certs/ca.crt" ] && return
  "$bin/quire" certs init --dir "$demo/certs" --cn "Quire demo CA" >/dev/null
  for n in m1 m2 m3 db1 db2 db3 operator; do
    "$bin/quire" certs issue --dir "$demo/certs" --name "$n" --hosts 127.0.0.1,localhost >/dev/null
  done
  echo "demo: certificates in .demo/certs (mutual TLS everywhere)"
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
    if [ $SECONDS -ge $deadline ]; then echo "demo: managers did not elect a leader in 60 s; see .demo/m*/manager.log" >&2; exit 1; fi
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
    if [ $SECONDS -ge $deadline ]; then echo "demo: db1 did not become a writable primary in 60 s; see .demo/db1/agent.log" >&2; exit 1; fi
    sleep 0.3
  done
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
    printf '  "mysql_user": "quire",\n  "mysql_password_file": "%s"\n' "$demo/mysql.password"
    echo '}'
  } > "$demo/cluster.json"
}

up() {
  mkdir -p "$demo"
  if [ ! -f "$demo/mysql.password" ]; then
    (umask 077; head -c 18 /dev/urandom | base64 | tr -d '/+=' > "$demo/mysql.password")
  fi
  chmod 600 "$demo/mysql.password"
  for f in quire quire-manager quire-agent; do
    [ -x "$bin/$f" ] || { echo "demo: $bin/$f missing: run 'make build' (make demo does)" >&2; exit 1; }
  done
  for i in 1 2 3; do start_db "$i"; done
  make_certs
  for i in 1 2 3; do start_manager "$i"; done
  for i in 1 2 3; do start_agent "$i"; done
  init_cluster
  write_cluster_json
  echo
  quire status || true
  cat <<TXT

Quire demo: three MariaDB instances, three agents and three managers run on
127.0.0.1 (data, logs and certificates in .demo/).
  cluster description: .demo/cluster.json
  write on the primary: mariadb -h127.0.0.1 -P33061 -uquire -p"\$(cat .demo/mysql.password)"
  cluster status:       make demo-status     (quire status with the demo's certificates)
  stop and remove:      make demo-down
TXT
}

down() {
  [ -d "$demo" ] || { echo "demo: nothing to stop"; return; }
  for pidf in "$demo"/db*/agent.pid "$demo"/m*/manager.pid; do
    [ -f "$pidf" ] || continue
    if alive "$pidf"; then
      pid=$(cat "$pidf"); kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
    fi
  done
  for n in "${nodes[@]}"; do
    pidf="$demo/$n/mysqld.pid"
    if alive "$pidf"; then
      pid=$(cat "$pidf"); kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
      echo "demo: $n stopped"
    fi
  done
  rm -rf "$demo"
  echo "demo: removed .demo/"
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
      gtid=$("$(find_bin mariadb)" --no-defaults -S "$demo/$n/mysqld.sock" -uroot -N -e 'SELECT @@gtid_binlog_pos' 2>/dev/null || echo '?')
      [ -n "$gtid" ] || gtid='(empty)'
    fi
    printf '%-5s %-17s %-8s %s\n' "$n" "127.0.0.1:$port" "$state" "$gtid"
  done
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
