#!/usr/bin/env bash
# Deploys a three-node Quire cluster with deploy/ansible/site.yml into three
# Docker containers on a private network, then checks it:
#   - `quire status --json` (run in db1) shows 3 nodes, exactly one primary,
#     every node healthy;
#   - a row written on the primary appears on both replicas;
#   - a second run of the playbook changes nothing (idempotence).
#
# No container registry is needed: the base image is a Debian 12 root file
# system made with debootstrap from this machine's own apt mirror (read from
# /etc/apt/sources.list*), then `docker import`ed and cached by tag.
# Containers, the network and the temporary build are removed on exit
# (KEEP=1 keeps the containers for debugging).
#
# usage: deploy/ansible/test/docker.sh        (as root: debootstrap needs it)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
ansible_dir=$(cd "$here/.." && pwd)
top=$(cd "$ansible_dir/../.." && pwd)
prefix=${QUIRE_TEST_PREFIX:-quire-ansible-test}
net=$prefix-net
nodes=(db1 db2 db3)
# Packages of the base image. The image tag carries a hash of this list and
# of the image recipe version, so a change rebuilds the image.
base_packages=python3,mariadb-server,mariadb-client,procps,iproute2,less
image_recipe=1
image=$prefix-base:bookworm-$(printf '%s %s' "$base_packages" "$image_recipe" | sha256sum | cut -c1-12)

log() { printf '%s docker.sh: %s\n' "$(date +%T)" "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (debootstrap and docker need it)"
for c in docker debootstrap ansible-playbook go; do
  command -v "$c" >/dev/null || die "$c missing: apt-get install -y docker.io debootstrap ansible (go: see README.md)"
done
docker info >/dev/null 2>&1 || die "the Docker daemon does not answer: start it (systemctl start docker)"

# apt_mirror prints the first Debian archive URI (not the security one) of
# this machine's apt sources, deb822 (*.sources) or one-line (*.list) style.
apt_mirror() {
  local f uri
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    uri=$(awk '
      /^[[:space:]]*$/ { if (u != "" && s ~ /(^| )bookworm( |$)/) { print u; exit } u=""; s=""; next }
      /^URIs:/   { u=$2 }
      /^Suites:/ { $1=""; s=$0" " }
      END { if (u != "" && s ~ /(^| )bookworm( |$)/) print u }' "$f" | head -1)
    [ -n "$uri" ] && { echo "$uri"; return; }
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    uri=$(awk '$1 == "deb" && $0 !~ /security/ {
      for (i = 2; i <= NF; i++) if ($i !~ /^\[/ && $i ~ /:\/\//) { if ($(i+1) == "bookworm") { print $i; exit } } }' "$f" | head -1)
    [ -n "$uri" ] && { echo "$uri"; return; }
  done
  return 1
}

build_image() {
  if docker image inspect "$image" >/dev/null 2>&1; then
    log "base image $image exists (cached)"; return
  fi
  local mirror rootfs
  mirror=$(apt_mirror) || die "no Debian bookworm mirror found in /etc/apt/sources.list or /etc/apt/sources.list.d/"
  rootfs=$(mktemp -d "/var/tmp/$prefix-rootfs.XXXXXX")
  log "debootstrap bookworm from the machine's mirror into $rootfs (a few minutes)"
  if ! debootstrap --variant=minbase --include="$base_packages" bookworm "$rootfs" "$mirror" >"$rootfs.log" 2>&1; then
    tail -20 "$rootfs.log" >&2; rm -rf "$rootfs"; die "debootstrap failed; full log in $rootfs.log"
  fi
  # Services are started by the playbook, not by package scripts.
  printf '#!/bin/sh\nexit 101\n' >"$rootfs/usr/sbin/policy-rc.d"
  chmod 755 "$rootfs/usr/sbin/policy-rc.d"
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/run/mysqld
  log "docker import as $image"
  tar -C "$rootfs" -c . | docker import -c 'CMD ["/bin/sleep", "infinity"]' - "$image" >/dev/null
  rm -rf "$rootfs" "$rootfs.log"
}

work=$(mktemp -d "/tmp/$prefix.XXXXXX")
cleanup() {
  local rc=$?
  if [ "${KEEP:-0}" = 1 ]; then
    log "KEEP=1: containers ${nodes[*]/#/$prefix-} and network $net left running; work dir $work"
    return
  fi
  for n in "${nodes[@]}"; do docker rm -f "$prefix-$n" >/dev/null 2>&1 || true; done
  docker network rm "$net" >/dev/null 2>&1 || true
  rm -rf "$work"
  exit $rc
}
trap cleanup EXIT

build_image
[ "${1:-}" = --image-only ] && exit 0

# Static binaries (CGO_ENABLED=0): they run on the control node (quire certs)
# and in the containers alike.
log "building quire, quire-agent, quire-manager (CGO_ENABLED=0) into $work/bin"
mkdir -p "$work/bin"
(cd "$top" && for c in quire:cmd/quire quire-agent:cmd/agent quire-manager:cmd/manager; do
  CGO_ENABLED=0 go build -o "$work/bin/${c%%:*}" "./${c#*:}" || exit 1
done) || die "go build failed"

log "starting containers ${nodes[*]} on network $net"
for n in "${nodes[@]}"; do docker rm -f "$prefix-$n" >/dev/null 2>&1 || true; done
docker network rm "$net" >/dev/null 2>&1 || true
docker network create "$net" >/dev/null
for n in "${nodes[@]}"; do
  docker run -d --init --name "$prefix-$n" --hostname "$n" --network "$net" --network-alias "$n" \
    "$image" /bin/sleep infinity >/dev/null
done

{
  echo "[quire]"
  for n in "${nodes[@]}"; do
    echo "$n ansible_host=$prefix-$n"
  done
  echo
  echo "[quire:vars]"
  echo "ansible_connection=community.docker.docker"
  echo "ansible_user=root"
  echo "ansible_become=false"
  echo "ansible_python_interpreter=/usr/bin/python3"
  echo "quire_service_manager=none"
  echo "quire_build_dir=$work/bin"
  echo "quire_certs_dir=$work/certs"
  echo "quire_cluster_name=dockertest"
  echo "mariadb_apt_cache_valid_time=0"
  echo "quire_log_format=text"
} >"$work/inventory.ini"

export ANSIBLE_CONFIG="$ansible_dir/ansible.cfg" ANSIBLE_NOCOLOR=1 ANSIBLE_RETRY_FILES_ENABLED=0
playbook() { ansible-playbook -i "$work/inventory.ini" "$ansible_dir/site.yml"; }

# recap_changed LOG prints the sum of changed= over the PLAY RECAP lines.
recap_changed() { sed -n '/PLAY RECAP/,$p' "$1" | grep -o 'changed=[0-9]*' | awk -F= '{ s += $2 } END { print s + 0 }'; }

t0=$SECONDS
log "first run of site.yml"
if ! playbook >"$work/run1.log" 2>&1; then
  tail -60 "$work/run1.log" | cut -c1-600 >&2
  for n in "${nodes[@]}"; do
    log "--- $n: logs"; docker exec "$prefix-$n" sh -c 'tail -n 20 /var/log/quire/*.log' >&2 || true
  done
  die "first run failed; the log above ends it"
fi
run1=$((SECONDS - t0))
log "first run: ok in ${run1}s, changed=$(recap_changed "$work/run1.log")"

cli() { docker exec "$prefix-db1" bash -c 'set -a; . /etc/quire/cli.env; set +a; exec quire "$@"' quire "$@"; }
sql() { local n=$1; shift; docker exec -i "$prefix-$n" mariadb --protocol=socket -N -B "$@"; }

# Wait until status shows 3 healthy nodes, one primary.
log "checking quire status --json"
deadline=$((SECONDS + 60)) primary=""
while :; do
  if out=$(cli status --json 2>&1) && primary=$(printf '%s' "$out" | python3 -c '
import json, sys
s = json.load(sys.stdin)
nodes = s.get("nodes") or []
prim = [n["id"] for n in nodes if n.get("role") == "primary"]
ok = len(nodes) == 3 and len(prim) == 1 and all(n.get("healthy") for n in nodes) and s.get("primary") == prim[0]
print(prim[0] if ok else "")
sys.exit(0 if ok else 1)'); then
    break
  fi
  [ $SECONDS -lt $deadline ] || { printf '%s\n' "$out" >&2; cli status >&2 || true; die "quire status did not show 3 healthy nodes with one primary in 60 s"; }
  sleep 1
done
cli status >&2
log "status: 3 healthy nodes, primary $primary"

log "checking the modes of the secrets"
for n in "${nodes[@]}"; do
  i=${n#db}
  want="/etc/quire/mysql.password 600 quire
/etc/quire/agent.yaml 600 quire
/etc/quire/manager.yaml 600 quire
/etc/quire/tls/$n.key 600 quire
/etc/quire/tls/m$i.key 600 quire
/etc/quire/tls/operator.key 600 root
/etc/quire/cli.env 600 root"
  # shellcheck disable=SC2046
  got=$(docker exec "$prefix-$n" stat -c '%n %a %U' $(cut -d' ' -f1 <<<"$want"))
  [ "$got" = "$want" ] || die "$n: file modes differ; want:
$want
got:
$got"
done
got=$(stat -c '%a' "$work/certs" "$work/certs/ca.key" | paste -sd' ')
[ "$got" = "700 600" ] || die "control node: certificate directory and CA key have modes $got, want 700 600"

log "writing a row on the primary $primary"
token="ansible-$(date +%s)-$RANDOM"
sql "$primary" <<SQL
CREATE DATABASE IF NOT EXISTS quire_ansible_test;
CREATE TABLE IF NOT EXISTS quire_ansible_test.t (id INT PRIMARY KEY, v VARCHAR(64)) ENGINE=InnoDB;
REPLACE INTO quire_ansible_test.t VALUES (1, '$token');
SQL
for n in "${nodes[@]}"; do
  [ "$n" = "$primary" ] && continue
  deadline=$((SECONDS + 60))
  until [ "$(sql "$n" -e 'SELECT v FROM quire_ansible_test.t WHERE id = 1' 2>/dev/null)" = "$token" ]; do
    [ $SECONDS -lt $deadline ] || { docker exec "$prefix-$n" tail -n 30 /var/log/quire/quire-agent.log >&2; die "the row written on $primary did not reach $n in 60 s"; }
    sleep 0.5
  done
  log "replica $n has the row"
done

t0=$SECONDS
log "second run of site.yml (must change nothing)"
playbook >"$work/run2.log" 2>&1 || { tail -60 "$work/run2.log" | cut -c1-600 >&2; die "second run failed"; }
run2=$((SECONDS - t0))
changed=$(recap_changed "$work/run2.log")
if [ "$changed" != 0 ]; then
  grep -E '^(changed|TASK)' "$work/run2.log" | grep -B1 '^changed' >&2
  die "second run changed $changed things; it must change nothing"
fi
log "second run: ok in ${run2}s, changed=0"

epoch=$(cli status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["epoch"])')
[ "$epoch" = 1 ] || die "epoch is $epoch after the second run; the cluster was bootstrapped again"
log "PASS: 3 nodes, primary $primary, replicated write, idempotent second run (first run ${run1}s, second ${run2}s)"
echo "1 passed, 0 failed"
