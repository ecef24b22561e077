#!/usr/bin/env bash
# Static checks of deploy/ansible: ansible-playbook --syntax-check and
# ansible-lint (production profile), plus bash -n and shellcheck (when
# installed) on the test scripts and the rendered quire-service supervisor.
# Needs the Debian packages ansible and ansible-lint (apt-get install -y
# ansible ansible-lint); no hosts, no network.
set -euo pipefail

dir=$(cd "$(dirname "$0")/.." && pwd)
cd "$dir"
for c in ansible-playbook ansible-lint; do
  command -v "$c" >/dev/null || { echo "lint.sh: $c missing: apt-get install -y ansible ansible-lint" >&2; exit 1; }
done
export ANSIBLE_CONFIG="$dir/ansible.cfg" ANSIBLE_NOCOLOR=1
fails=0 passes=0
quiet() { "$@" >/dev/null; }
check() { # name command...
  local name=$1; shift
  if "$@"; then passes=$((passes + 1)); echo "lint.sh: ok: $name"
  else fails=$((fails + 1)); echo "lint.sh: FAIL: $name" >&2; fi
}

check "syntax-check" ansible-playbook -i inventory.example.ini --syntax-check site.yml
check "ansible-lint" ansible-lint --nocolor --profile production site.yml roles
for f in test/*.sh; do check "bash -n $f" bash -n "$f"; done

# The supervisor is a Jinja template: render it with the default values and
# check the bash that comes out.
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
render() {
  ansible localhost -i localhost, -c local -m ansible.builtin.template \
    -a "src=$dir/roles/quire_common/templates/quire-service.j2 dest=$tmp/quire-service" \
    -e quire_service_conf_dir=/etc/quire/services -e quire_log_dir=/var/log/quire >/dev/null
}
check "render quire-service" render
if [ -f "$tmp/quire-service" ]; then
  check "bash -n quire-service" bash -n "$tmp/quire-service"
fi
# The systemd units: render them and let systemd-analyze read them (the
# binaries are stand-ins: only the unit syntax is checked).
if command -v systemd-analyze >/dev/null; then
  mkdir -p "$tmp/bin" "$tmp/units"
  for s in quire-agent quire-manager; do
    cp /bin/true "$tmp/bin/$s"
    check "render $s.service" quiet ansible localhost -i localhost, -c local -m ansible.builtin.template \
      -a "src=$dir/roles/quire/templates/$s.service.j2 dest=$tmp/units/$s.service" \
      -e quire_user=root -e quire_group=root -e "quire_bin_dir=$tmp/bin" -e quire_etc_dir=/etc/quire \
      -e quire_data_dir=/var/lib/quire -e quire_systemd_hardening=true -o
  done
  verify_units() {
    local out
    out=$(systemd-analyze verify "$tmp"/units/*.service 2>&1) || { echo "$out" >&2; return 1; }
    # verify exits 0 on some warnings; fail on any line naming our units.
    if grep -E 'quire-(agent|manager)\.service:' <<<"$out" >&2; then return 1; fi
  }
  check "systemd-analyze verify units" verify_units
else
  echo "lint.sh: systemd-analyze not installed; unit check skipped"
fi

if command -v shellcheck >/dev/null; then
  for f in test/*.sh "$tmp/quire-service"; do [ -f "$f" ] && check "shellcheck $(basename "$f")" shellcheck "$f"; done
else
  echo "lint.sh: shellcheck not installed; skipped (apt-get install -y shellcheck)"
fi
echo "$passes passed, $fails failed"
[ "$fails" = 0 ]
