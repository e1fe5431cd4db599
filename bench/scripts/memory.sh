#!/usr/bin/env bash
# The memory test of docs/performance.md: three `starling start` processes
# under a mixed load (half reads, half blind writes over 1M keys) for
# DURATION seconds, VmRSS of each sampled every second.
# Usage: bench/scripts/memory.sh [duration_s] [rate_ops_s]
set -euo pipefail
source "$(dirname "$0")/lib.sh"
DURATION=${1:-600}
RATE=${2:-}
trap stop_all EXIT
start_three
RATE_FLAG=()
[[ -n $RATE ]] && RATE_FLAG=(--rate "$RATE")
"$BENCH" run --workload mixed --read-fraction 0.5 --keys 1000000 --n-val 3 --r 2 --w 2 \
    --connections 32 --duration-s "$DURATION" --no-ceiling --progress-s 10 "${RATE_FLAG[@]}" \
    --watch-pid "$(IFS=,; echo "${NODE_PIDS[*]}")" --json "$OUT/memory.json" 2>&1 | tee "$OUT/memory.txt"
