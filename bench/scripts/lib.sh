# Shared helpers of the bench scripts: start a cluster, wait until it is
# ready (bounded polling of a condition, never a fixed sleep), stop it.
# Sourced, not run.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
STARLING=${STARLING:-$ROOT/target/release/starling}
BENCH=${BENCH:-$ROOT/target/release/bench}
OUT=${OUT:-$ROOT/target/bench}
mkdir -p "$OUT"
PIDS=()
DIRS=()

# Stops every node this script started, gracefully, and waits for them.
stop_all() {
    local pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    PIDS=()
    # The clusters' data directories go with them: each run starts fresh.
    local dir
    for dir in "${DIRS[@]}"; do rm -rf "$dir"; done
    DIRS=()
}

# Polls "$@" every 100 ms until it succeeds, at most $1 seconds.
wait_for() {
    local seconds=$1; shift
    local i
    for ((i = 0; i < seconds * 10; i++)); do
        if "$@"; then return 0; fi
        sleep 0.1
    done
    echo "timed out after ${seconds}s waiting for: $*" >&2
    return 1
}

# `starling dev` in a fresh directory: three nodes in one process on
# 127.0.0.1:8098-8100. Sets DEV_PID.
start_dev() {
    local dir; dir=$(mktemp -d /tmp/starling-bench-dev.XXXXXX)
    DIRS+=("$dir")
    "$STARLING" dev --dir "$dir" >"$OUT/dev.log" 2>&1 &
    DEV_PID=$!
    PIDS+=("$DEV_PID")
    wait_for 60 grep -q "dev cluster is up" "$OUT/dev.log"
}

alive_count() {
    curl -fsS "http://$1/admin/members" 2>/dev/null | grep -o '"alive"' | wc -l
}

all_see_three() {
    local port
    for port in 8098 8099 8100; do
        [[ $(alive_count "127.0.0.1:$port") -ge 3 ]] || return 1
    done
}

# Three `starling start` processes (HTTP 8098-8100, QUIC 7946-7948) in
# fresh directories, so one can be killed alone. Sets NODE_PIDS.
start_three() {
    local dir; dir=$(mktemp -d /tmp/starling-bench-nodes.XXXXXX)
    DIRS+=("$dir")
    local secret="bench-cluster-secret-0123456789"
    NODE_PIDS=()
    local i
    for i in 0 1 2; do
        local join=()
        [[ $i -gt 0 ]] && join=(--join 127.0.0.1:7946)
        "$STARLING" start --node-name "node$((i + 1))@127.0.0.1" --data-dir "$dir/node$((i + 1))" \
            --http-listen "127.0.0.1:$((8098 + i))" --cluster-listen "127.0.0.1:$((7946 + i))" \
            --cluster-secret "$secret" "${join[@]}" --log-format text \
            >"$OUT/node$((i + 1)).log" 2>&1 &
        NODE_PIDS+=("$!")
        PIDS+=("$!")
    done
    wait_for 60 all_see_three
}
