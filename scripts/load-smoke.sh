#!/usr/bin/env bash
# Load-generator smoke test: starts a quicmatch server (or, with SERVER=floor,
# the bare-stack baseline of examples/floor_server.rs) on 127.0.0.1 with an
# ephemeral port, runs quicmatch-load's scenarios against it at a small size,
# stops the server, and fails if any scenario lost or misrouted a message, got
# an error or timed out. Each scenario's JSON report goes to stdout.
#
# Usage: scripts/load-smoke.sh
# Environment (all optional):
#   PROFILE=debug|release   build to use (default debug; release for real figures)
#   PAIRS=5 MESSAGES=20     size of each run
#   DURATION=2              seconds of churn
#   SCENARIOS="connect relay chat churn"
#   SERVER_ARGS="..."       extra server flags (e.g. --udp-buffer-bytes 16777216)
#   LOAD_ARGS="..."         extra quicmatch-load flags
#   RESTART_EACH=1          a fresh server for every scenario (clean RSS figures)
#   NO_BUILD=1              use the binaries already built
#   BIN_DIR=dir             take both binaries from dir (implies NO_BUILD)
#   SERVER=floor            run against examples/floor_server.rs (the bare
#                           stack, docs/performance.md §7) instead of quicmatch;
#                           its scenarios are connect, relay and chat
#   SERVER=thin             run against examples/thin_floor.rs: the floor
#                           server on the thin WebTransport layer over quinn
#                           (src/webtransport/) instead of wtransport's server
#   NODES=2                 that many quicmatch nodes sharing one pool on a
#                           redis-server of the script's own (default 1: one
#                           process, no Redis); sessions are spread over them,
#                           and the server's CPU and RSS figures are the sum of
#                           the nodes' and redis-server's
#   POOL=1                  a Redis pool even for NODES=1 (implied by NODES > 1)
#   LOG_DIR=dir             keep the servers' (and Redis's) logs there
set -euo pipefail

cd "$(dirname "$0")/.."

PROFILE=${PROFILE:-debug}
PAIRS=${PAIRS:-5}
MESSAGES=${MESSAGES:-20}
DURATION=${DURATION:-2}
SERVER=${SERVER:-quicmatch}
case "$SERVER" in
    quicmatch) SCENARIOS=${SCENARIOS:-connect relay chat churn} ;;
    floor | thin) SCENARIOS=${SCENARIOS:-connect relay chat} ;;
    *) echo "SERVER must be quicmatch, floor or thin" >&2; exit 2 ;;
esac
SERVER_ARGS=${SERVER_ARGS:-}
LOAD_ARGS=${LOAD_ARGS:-}
RESTART_EACH=${RESTART_EACH:-0}
NODES=${NODES:-1}
POOL=${POOL:-0}
if [[ "$NODES" != 1 ]]; then
    POOL=1
fi
if [[ ("$NODES" != 1 || "$POOL" != 0) && "$SERVER" != quicmatch ]]; then
    echo "NODES and POOL apply to SERVER=quicmatch only" >&2
    exit 2
fi

case "$PROFILE" in
    release) build_flag=(--release) ;;
    debug) build_flag=() ;;
    *) echo "PROFILE must be debug or release" >&2; exit 2 ;;
esac
if [[ -n "${BIN_DIR:-}" ]]; then
    bin="$BIN_DIR"
else
    if [[ -z "${NO_BUILD:-}" ]]; then
        cargo build "${build_flag[@]}" --bin quicmatch --bin quicmatch-load >&2
        if [[ "$SERVER" == floor ]]; then
            cargo build "${build_flag[@]}" --example floor_server >&2
        elif [[ "$SERVER" == thin ]]; then
            cargo build "${build_flag[@]}" --example thin_floor >&2
        fi
    fi
    bin="target/$PROFILE"
fi
floor_name=floor_server
if [[ "$SERVER" == thin ]]; then
    floor_name=thin_floor
fi
floor_bin="$bin/examples/$floor_name"
[[ -x "$floor_bin" ]] || floor_bin="$bin/$floor_name"

workdir=$(mktemp -d)
server_pids=()
quic_ports=()
http_ports=()
redis_pid=""

stop_server() {
    local pid
    for pid in "${server_pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${server_pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    server_pids=()
    quic_ports=()
    http_ports=()
}
cleanup() {
    stop_server
    if [[ -n "$redis_pid" ]]; then
        kill "$redis_pid" 2>/dev/null || true
        wait "$redis_pid" 2>/dev/null || true
    fi
    if [[ -n "${LOG_DIR:-}" ]]; then
        mkdir -p "$LOG_DIR"
        cp "$workdir"/*.log "$LOG_DIR"/ 2>/dev/null || true
    fi
    rm -rf "$workdir"
}
trap cleanup EXIT

# Starts a redis-server of our own on a free loopback port; sets redis_url.
start_redis() {
    local port log="$workdir/redis.log"
    for _ in $(seq 1 20); do
        port=$((20000 + RANDOM % 40000))
        : >"$log"
        redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
            --protected-mode no >"$log" 2>&1 &
        redis_pid=$!
        for _ in $(seq 1 100); do
            if grep -q "Ready to accept connections" "$log"; then
                redis_url="redis://127.0.0.1:$port"
                return
            fi
            if ! kill -0 "$redis_pid" 2>/dev/null; then
                break
            fi
            sleep 0.05
        done
        kill "$redis_pid" 2>/dev/null || true
        wait "$redis_pid" 2>/dev/null || true
        redis_pid=""
    done
    echo "redis-server did not start:" >&2
    cat "$log" >&2
    exit 1
}

# Starts one server (node $1) and appends its pid, QUIC port and HTTP port
# from its log (and sets cert_args for the floor server, which has no
# sidecar).
start_node() {
    local log="$workdir/server-$1.log"
    local ready="HTTP sidecar on"
    local pool_args=()
    if [[ -n "$redis_pid" ]]; then
        pool_args=(--redis "$redis_url")
    fi
    if [[ "$SERVER" != quicmatch ]]; then
        # shellcheck disable=SC2086
        "$floor_bin" --port 0 $SERVER_ARGS >"$log" 2>&1 &
        ready="certificate hash"
    else
        # shellcheck disable=SC2086
        "$bin/quicmatch" --bind 127.0.0.1 --port 0 "${pool_args[@]}" $SERVER_ARGS >"$log" 2>&1 &
    fi
    local pid=$!
    server_pids+=("$pid")
    # Wait (bounded) for the server to log its addresses.
    for _ in $(seq 1 200); do
        if grep -q "$ready" "$log"; then
            break
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "server exited:" >&2
            cat "$log" >&2
            exit 1
        fi
        sleep 0.05
    done
    local quic_port http_port
    if [[ "$SERVER" != quicmatch ]]; then
        quic_port=$(sed -n 's|.*floor server on https://127\.0\.0\.1:\([0-9]*\)/signal.*|\1|p' "$log" | head -n1)
        local hash
        hash=$(sed -n 's|.*certificate hash \([A-Za-z0-9+/=]*\).*|\1|p' "$log" | head -n1)
        if [[ -z "$hash" ]]; then
            echo "floor server printed no certificate hash:" >&2
            cat "$log" >&2
            exit 1
        fi
        cert_args=(--cert-hash "$hash")
        # The floor has no sidecar; the discard port refuses at once, and
        # the generator then skips the server's session count.
        http_port=9
    else
        quic_port=$(sed -n 's|.*WebTransport on https://127\.0\.0\.1:\([0-9]*\)/signal.*|\1|p' "$log" | head -n1)
        http_port=$(sed -n 's|.*HTTP sidecar on http://127\.0\.0\.1:\([0-9]*\)/.*|\1|p' "$log" | head -n1)
    fi
    if [[ -z "$quic_port" || -z "$http_port" ]]; then
        echo "server did not come up:" >&2
        cat "$log" >&2
        exit 1
    fi
    quic_ports+=("$quic_port")
    http_ports+=("$http_port")
}

start_server() {
    local i
    for i in $(seq 1 "$NODES"); do
        start_node "$i"
    done
}

failed=()
cert_args=()
if [[ "$POOL" == 1 ]]; then
    start_redis
fi
start_server
for scenario in $SCENARIOS; do
    if [[ "$RESTART_EACH" == 1 && ${#server_pids[@]} == 0 ]]; then
        start_server
    fi
    echo "== $scenario: $PAIRS pairs, $MESSAGES messages (server pids ${server_pids[*]}, ports ${quic_ports[*]})" >&2
    node_args=()
    for i in "${!server_pids[@]}"; do
        node_args+=(--url "https://127.0.0.1:${quic_ports[$i]}/signal")
        node_args+=(--http "http://127.0.0.1:${http_ports[$i]}")
        node_args+=(--server-pid "${server_pids[$i]}")
    done
    # In a pool, Redis's CPU time and memory count as the server's too.
    if [[ -n "$redis_pid" ]]; then
        node_args+=(--server-pid "$redis_pid")
    fi
    # shellcheck disable=SC2086
    if timeout 600 "$bin/quicmatch-load" \
        "${node_args[@]}" \
        --scenario "$scenario" \
        --pairs "$PAIRS" \
        --messages "$MESSAGES" \
        --duration-secs "$DURATION" \
        "${cert_args[@]}" \
        $LOAD_ARGS; then
        echo "== $scenario: ok" >&2
    else
        echo "== $scenario: FAILED (exit $?)" >&2
        failed+=("$scenario")
    fi
    if [[ "$RESTART_EACH" == 1 ]]; then
        stop_server
    fi
done
stop_server

if ((${#failed[@]})); then
    echo "load smoke test failed: ${failed[*]}" >&2
    exit 1
fi
echo "load smoke test passed: $SCENARIOS" >&2
