#!/usr/bin/env bash
# Installs (as root on Debian) or lists (otherwise) the system packages that
# Quire's tests and demo need. Package sources come from the machine's own
# apt configuration.
set -euo pipefail

need_pkgs=()
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/usr/bin/$1" ]; }
have mariadbd           || need_pkgs+=(mariadb-server)
have mariadb            || need_pkgs+=(mariadb-client)
have mariadb-install-db || need_pkgs+=(mariadb-server)
have haproxy            || need_pkgs+=(haproxy)   # the demo's write and read ports
# Benchmarks and checks; the test suite itself needs only MariaDB.
if [ "${QUIRE_DEPS_BENCH:-0}" = 1 ]; then
  have sysbench          || need_pkgs+=(sysbench)
  have pt-table-checksum || need_pkgs+=(percona-toolkit)
fi
# deploy/ansible checks and its Docker test.
if [ "${QUIRE_DEPS_ANSIBLE:-0}" = 1 ]; then
  have ansible-playbook || need_pkgs+=(ansible)
  have ansible-lint     || need_pkgs+=(ansible-lint)
  have shellcheck       || need_pkgs+=(shellcheck)
  have debootstrap      || need_pkgs+=(debootstrap)
fi
[ ${#need_pkgs[@]} -eq 0 ] && exit 0
# unique
mapfile -t need_pkgs < <(printf '%s\n' "${need_pkgs[@]}" | sort -u)

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "deps: installing ${need_pkgs[*]} with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  # The package lists may be missing on a fresh machine.
  if ! apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/tmp/quire-apt.log 2>&1; then
    apt-get update -qq >>/tmp/quire-apt.log 2>&1
    apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >>/tmp/quire-apt.log 2>&1 || {
      echo "deps: apt-get install ${need_pkgs[*]} failed; see /tmp/quire-apt.log" >&2; tail -20 /tmp/quire-apt.log >&2; exit 1; }
  fi
  # Debian starts the packaged server; Quire's tests and demo run their own.
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet mariadb 2>/dev/null; then systemctl stop mariadb || true; fi
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet haproxy 2>/dev/null; then systemctl stop haproxy || true; fi
  exit 0
fi

cat >&2 <<MSG
deps: missing system packages: ${need_pkgs[*]}
Install them, then run the command again. On Debian 12 / Ubuntu:
    sudo apt-get update && sudo apt-get install -y ${need_pkgs[*]}
MSG
exit 1
