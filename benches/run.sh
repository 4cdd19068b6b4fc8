#!/usr/bin/env bash
# Issue 6, end to end: runs the huddle e2e bench (benches/e2e/) and then the
# automerge-repo race (benches/race/race.mjs) back to back, and prints one
# table with both and their ratio. Everything runs on 127.0.0.1 only.
#
#   benches/run.sh            full sizes (about 20 minutes on 2 cores)
#   benches/run.sh --tiny     every part once, tiny (about 30 s after the build)
#
# Extra arguments go to both (e.g. --runs 1, --only latency,catchup).
# Logs: target/e2e/huddle.log, target/e2e/race.log.
set -euo pipefail
cd "$(dirname "$0")/.."
out=target/e2e
mkdir -p "$out"

echo "== machine: $(nproc) cores, $(lscpu | grep 'Model name' | sed 's/ *Model name: *//')"
echo "== huddle (cargo bench --bench e2e -- $*)"
timeout 3600 cargo bench --bench e2e -- "$@" 2>&1 | tee "$out/huddle.log"

echo "== automerge-repo (node benches/race/race.mjs $*)"
race=ok
if command -v node >/dev/null && command -v npm >/dev/null; then
  if [ ! -d benches/race/node_modules/@automerge/automerge-repo ]; then
    (cd benches/race && timeout 600 npm install --no-audit --no-fund) || race="npm install failed"
  fi
else
  race="node or npm is not installed"
fi
if [ "$race" = ok ]; then
  # The race takes the options both understand.
  timeout 3600 node benches/race/race.mjs "$@" 2>&1 | tee "$out/race.log" || race="the race failed"
else
  echo "skipping the race: $race" | tee "$out/race.log"
fi

echo
node benches/race/table.mjs "$out/huddle.log" "$out/race.log" 2>/dev/null \
  || grep '^RESULT' "$out/huddle.log" "$out/race.log"
