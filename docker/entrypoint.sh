#!/usr/bin/env bash
# Entry point of the Starling image (installed as
# /usr/local/bin/starling-entrypoint by docker/Dockerfile).
#
#   starling-entrypoint [start] [FLAGS...]  run one node, configured by STARLING_*
#                                           environment variables (and FLAGS)
#   starling-entrypoint health              exit 0 if this node answers GET /ping
#   starling-entrypoint COMMAND...          run `starling COMMAND...` (admin, --help)
#
# The node reads its configuration itself; this script only refuses settings
# that would make a broken cluster look healthy, says what it starts, and
# then replaces itself with `starling` (exec), so the node is PID 1 and gets
# SIGTERM directly.
#
# node/tests/compose_topology.rs runs this very file, with the Dockerfile's
# and compose.yaml's environment, in network namespaces.

set -euo pipefail

# The placeholder in docker/.env.example. A secret that is published in a
# repository is no secret: refuse it rather than run a cluster anyone can join.
readonly PLACEHOLDER_SECRET='replace-me-with-the-output-of-openssl-rand-hex-32'

log() {
    printf 'starling-entrypoint: %s\n' "$*" >&2
}

# GET /ping on this node's HTTP port, with bash's /dev/tcp: the image carries
# no curl. The port comes from STARLING_HTTP_LISTEN; a wildcard address is
# checked on loopback.
health() {
    local listen="${STARLING_HTTP_LISTEN:-127.0.0.1:8098}"
    local port="${listen##*:}"
    local host="${listen%:*}"
    host="${host#[}"
    host="${host%]}"
    case "$host" in
        0.0.0.0 | '') host=127.0.0.1 ;;
        ::) host=::1 ;;
    esac
    local status_line
    exec 3<>"/dev/tcp/${host}/${port}" || return 1
    printf 'GET /ping HTTP/1.0\r\nHost: %s\r\n\r\n' "$host" >&3
    IFS= read -r -t 5 status_line <&3 || return 1
    exec 3<&-
    [[ "$status_line" =~ ^HTTP/1\.[01]\ 200 ]]
}

start() {
    local secret="${STARLING_CLUSTER_SECRET:-}"
    if [[ "$secret" == "$PLACEHOLDER_SECRET" ]]; then
        log "STARLING_CLUSTER_SECRET is still the placeholder from .env.example; set a random one (openssl rand -hex 32)"
        exit 64
    fi
    if [[ -n "${STARLING_JOIN:-}" && -z "$secret" ]]; then
        log "STARLING_JOIN is set but STARLING_CLUSTER_SECRET is not: every node of a cluster needs the same secret"
        exit 64
    fi

    log "node ${STARLING_NODE_NAME:-(default name)}: http ${STARLING_HTTP_LISTEN:-(default)}" \
        "advertised as ${STARLING_HTTP_ADVERTISE:-(listen address)}," \
        "cluster ${STARLING_CLUSTER_LISTEN:-(default)} advertised as ${STARLING_CLUSTER_ADVERTISE:-(listen address)}," \
        "data ${STARLING_DATA_DIR:-(default)}, seeds ${STARLING_JOIN:-(none)}"

    # Say which seeds resolve now. Not fatal: in compose and Kubernetes a
    # peer's name appears only once it runs, and the node resolves its seeds
    # again every few seconds.
    local seed host
    local -a seeds
    IFS=',' read -r -a seeds <<<"${STARLING_JOIN:-}"
    for seed in "${seeds[@]}"; do
        seed="${seed//[[:space:]]/}"
        [[ -n "$seed" ]] || continue
        host="${seed%:*}"
        host="${host#[}"
        host="${host%]}"
        if getent ahosts "$host" >/dev/null 2>&1; then
            log "seed ${seed} resolves"
        else
            log "seed ${seed} does not resolve (yet); the node keeps trying"
        fi
    done

    exec starling start "$@"
}

case "${1:-start}" in
    start)
        shift || true
        start "$@"
        ;;
    -*)
        start "$@"
        ;;
    health)
        health
        ;;
    *)
        exec starling "$@"
        ;;
esac
