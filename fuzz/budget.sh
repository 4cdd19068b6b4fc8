#!/usr/bin/env bash
# Fuzzes one target until it has had CPU_SECONDS of CPU time in this run,
# in chunks, niced, and appends each chunk to fuzz/budget.tsv (date,
# commit, target, CPU seconds, runs, new corpus files, crash files), so
# a target's total across sessions is the sum of its rows.
#
#   fuzz/budget.sh member_peer 3600
#
# Needs `cargo install cargo-fuzz` and the nightly toolchain. Crashes land
# in fuzz/artifacts/<target>/; each becomes a regression test before the
# input joins fuzz/corpus/<target>/.
set -euo pipefail
cd "$(dirname "$0")"
target=$1; budget=$2; chunk=${CHUNK_SECS:-600}
corpus=corpus/$target
mkdir -p "$corpus" artifacts/"$target" logs
spent=0
while [ "$spent" -lt "$budget" ]; do
  before=$(ls "$corpus" | wc -l); crashes_before=$(ls artifacts/"$target" | wc -l)
  log=logs/$target-$(date +%s).log
  /usr/bin/time -f "%U %S" -o logs/time.$$ nice -n 19 cargo +nightly fuzz run -s none "$target" "$corpus" -- \
    -max_total_time="$chunk" -rss_limit_mb=512 -max_len=8192 -timeout=30 \
    -print_final_stats=1 >"$log" 2>&1 || true
  cpu=$(tail -1 logs/time.$$ | awk '{printf "%d", $1 + $2}')
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo 0)
  added=$(( $(ls "$corpus" | wc -l) - before ))
  crashes=$(( $(ls artifacts/"$target" | wc -l) - crashes_before ))
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$(date -u +%FT%TZ)" "$(git rev-parse --short HEAD)" \
    "$target" "$cpu" "${runs:-0}" "$added" "$crashes" >> budget.tsv
  spent=$((spent + cpu))
  if [ "$crashes" -gt 0 ]; then echo "$target: crash, see $log"; exit 1; fi
done
echo "$target: $spent CPU seconds"
