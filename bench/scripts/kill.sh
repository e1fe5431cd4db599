#!/usr/bin/env bash
# The kill test of docs/performance.md: three `starling start` processes,
# a write load over all three (N=3, R=W=2, 32 connections), and SIGKILL of
# the third node KILL_AT seconds into the measured run. The per-second
# timeline is in $OUT/kill-$WORKLOAD.json.
# Usage: bench/scripts/kill.sh [workload] [duration_s] [kill_at_s]
set -euo pipefail
source "$(dirname "$0")/lib.sh"
WORKLOAD=${1:-write}
DURATION=${2:-40}
KILL_AT=${3:-15}
trap stop_all EXIT
start_three
PRELOAD=()
[[ $WORKLOAD == read ]] && PRELOAD=(--preload --keys 10000)
"$BENCH" run --workload "$WORKLOAD" "${PRELOAD[@]}" --n-val 3 --r 2 --w 2 --connections 32 \
    --duration-s "$DURATION" --warmup-s 0 --no-ceiling --progress-s 1 \
    --watch-pid "$(IFS=,; echo "${NODE_PIDS[*]}")" --json "$OUT/kill-$WORKLOAD.json" \
    >"$OUT/kill-$WORKLOAD.txt" 2>&1 &
BENCH_PID=$!
# The measured run starts once the preload (if any) is done: its first
# progress line is second 1.
wait_for 120 grep -q "cluster#1     1s\]" "$OUT/kill-$WORKLOAD.txt"
sleep "$((KILL_AT - 1))"   # a chosen point in the run, not a wait for readiness
kill -KILL "${NODE_PIDS[2]}"
echo "killed node3 (pid ${NODE_PIDS[2]}) at ~${KILL_AT}s" | tee -a "$OUT/kill-$WORKLOAD.txt"
wait "$BENCH_PID"
cat "$OUT/kill-$WORKLOAD.txt"
