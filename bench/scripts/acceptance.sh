#!/usr/bin/env bash
# The acceptance runs of docs/performance.md on a `starling dev` cluster:
# N=3, R=W=2, sync=always, 100-byte values, 32 connections, uniform keys;
# write-only, then read-only, each against the same-run ceiling, each on a
# fresh cluster (so the reads do not share the cores with the compactions
# the writes left behind).
# Usage: bench/scripts/acceptance.sh [duration_s] [repeat]
set -euo pipefail
source "$(dirname "$0")/lib.sh"
DURATION=${1:-20}
REPEAT=${2:-3}
trap stop_all EXIT
COMMON=(--n-val 3 --r 2 --w 2 --connections 32 --value-size-bytes 100 --key-dist uniform
        --duration-s "$DURATION" --repeat "$REPEAT")
start_dev
"$BENCH" run --workload write --keys 1000000 "${COMMON[@]}" --watch-pid "$DEV_PID" \
    --json "$OUT/write.json" | tee "$OUT/write.txt"
stop_all
start_dev
"$BENCH" run --workload read --keys 10000 --preload "${COMMON[@]}" --watch-pid "$DEV_PID" \
    --json "$OUT/read.json" | tee "$OUT/read.txt"
