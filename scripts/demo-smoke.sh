#!/usr/bin/env bash
# Checks a running `make demo` cluster: a write on the primary reaches both
# replicas' logs and `quire status --json` reports it. Used by CI.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
demo="$top/.demo"
export QUIRE_MANAGERS=127.0.0.1:7311,127.0.0.1:7312,127.0.0.1:7313
export QUIRE_TLS_CA=$demo/certs/ca.crt QUIRE_TLS_CERT=$demo/certs/operator.crt QUIRE_TLS_KEY=$demo/certs/operator.key
mariadb --no-defaults -h127.0.0.1 -P33061 -uquire -p"$(cat "$demo/mysql.password")" \
  -e "CREATE DATABASE IF NOT EXISTS smoke; CREATE TABLE IF NOT EXISTS smoke.t (id INT PRIMARY KEY); REPLACE INTO smoke.t VALUES (1)"
deadline=$((SECONDS + 30))
while :; do
  json=$("$top/bin/quire" status --json)
  n=$(grep -o '"durable_seqno": *[0-9]*' <<<"$json" | grep -c -v ': *0$' || true)
  [ "$n" -ge 3 ] && break
  if [ $SECONDS -ge $deadline ]; then echo "demo-smoke: the write did not reach all three logs in 30 s:"; echo "$json"; exit 1; fi
  sleep 0.5
done
echo "demo-smoke: ok (the write is durable on db1, db2 and db3)"
# The CLI with nothing but the demo's configuration file, as the demo says.
env -u QUIRE_MANAGERS -u QUIRE_TLS_CA -u QUIRE_TLS_CERT -u QUIRE_TLS_KEY QUIRE_CONFIG="$demo/cli.yaml" \
  "$top/bin/quire" status >/dev/null || { echo "demo-smoke: bin/quire status with QUIRE_CONFIG=$demo/cli.yaml failed"; exit 1; }
echo "demo-smoke: ok (bin/quire status with QUIRE_CONFIG only)"
# Through HAProxy's write port, when the demo started it.
if [ -f "$demo/haproxy.pid" ]; then
  deadline=$((SECONDS + 30))
  until mariadb --defaults-extra-file="$demo/app.cnf" -h127.0.0.1 -P33070 app \
      -e "CREATE TABLE IF NOT EXISTS smoke_lb (id INT PRIMARY KEY); REPLACE INTO smoke_lb VALUES (1)" 2>/dev/null; do
    if [ $SECONDS -ge $deadline ]; then echo "demo-smoke: no write through HAProxy's write port 33070 in 30 s"; exit 1; fi
    sleep 0.5
  done
  ro=$(mariadb --defaults-extra-file="$demo/app.cnf" -h127.0.0.1 -P33071 -N -e 'SELECT @@read_only') \
    || { echo "demo-smoke: HAProxy's read port 33071 does not answer"; exit 1; }
  [ "$ro" = 1 ] || { echo "demo-smoke: the read port 33071 reached a writable server (read_only=$ro), want a replica"; exit 1; }
  echo "demo-smoke: ok (a write through HAProxy's write port, a replica behind its read port)"
fi
