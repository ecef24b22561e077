#!/usr/bin/env bash
# Failover benchmark (docs/failover.md): RUNS failovers per fault and writer
# count, each on a fresh three-node cluster of real mariadbd, agents and
# managers on loopback; prints a table of the writers' outage.
#
#   bench/failover/run.sh                 # 10 runs, 1 and 16 writers
#   RUNS=3 WRITERS=1 bench/failover/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
scripts/deps.sh
out=$(mktemp); trap 'rm -f "$out"' EXIT
rc=0
QUIRE_FAILOVER_RUNS=${RUNS:-10} QUIRE_FAILOVER_WRITERS=${WRITERS:-1,16} \
  go test -count=1 -timeout 90m -v -run '^TestFailoverBenchmark$' ./agent >"$out" 2>&1 || rc=$?
# The table, and every failure in full.
grep -v -E '^\s*(=== |--- PASS|ok |PASS$)' "$out" | grep -v -E '^\s+\S+\.go:[0-9]+: ' || true
[ $rc = 0 ] || { echo "bench/failover: a run failed (go test exit $rc):"; grep -E -- '--- FAIL|_test.go:[0-9]+:' "$out" | tail -40; }
exit $rc
