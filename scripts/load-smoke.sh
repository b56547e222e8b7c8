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
set -euo pipefail

cd "$(dirname "$0")/.."

PROFILE=${PROFILE:-debug}
PAIRS=${PAIRS:-5}
MESSAGES=${MESSAGES:-20}
DURATION=${DURATION:-2}
SERVER=${SERVER:-quicmatch}
case "$SERVER" in
    quicmatch) SCENARIOS=${SCENARIOS:-connect relay chat churn} ;;
    floor) SCENARIOS=${SCENARIOS:-connect relay chat} ;;
    *) echo "SERVER must be quicmatch or floor" >&2; exit 2 ;;
esac
SERVER_ARGS=${SERVER_ARGS:-}
LOAD_ARGS=${LOAD_ARGS:-}
RESTART_EACH=${RESTART_EACH:-0}

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
        fi
    fi
    bin="target/$PROFILE"
fi
floor_bin="$bin/examples/floor_server"
[[ -x "$floor_bin" ]] || floor_bin="$bin/floor_server"

workdir=$(mktemp -d)
server_pid=""

stop_server() {
    if [[ -n "$server_pid" ]]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
        server_pid=""
    fi
}
cleanup() {
    stop_server
    rm -rf "$workdir"
}
trap cleanup EXIT

# Starts the server and sets server_pid, quic_port and http_port from its
# log (and cert_args for the floor server, which has no sidecar).
start_server() {
    local log="$workdir/server.log"
    local ready="HTTP sidecar on"
    if [[ "$SERVER" == floor ]]; then
        # shellcheck disable=SC2086
        "$floor_bin" --port 0 $SERVER_ARGS >"$log" 2>&1 &
        ready="certificate hash"
    else
        # shellcheck disable=SC2086
        "$bin/quicmatch" --bind 127.0.0.1 --port 0 $SERVER_ARGS >"$log" 2>&1 &
    fi
    server_pid=$!
    # Wait (bounded) for the server to log its addresses.
    for _ in $(seq 1 200); do
        if grep -q "$ready" "$log"; then
            break
        fi
        if ! kill -0 "$server_pid" 2>/dev/null; then
            echo "server exited:" >&2
            cat "$log" >&2
            exit 1
        fi
        sleep 0.05
    done
    if [[ "$SERVER" == floor ]]; then
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
}

failed=()
cert_args=()
start_server
for scenario in $SCENARIOS; do
    if [[ "$RESTART_EACH" == 1 && -z "$server_pid" ]]; then
        start_server
    fi
    echo "== $scenario: $PAIRS pairs, $MESSAGES messages (server pid $server_pid, port $quic_port)" >&2
    # shellcheck disable=SC2086
    if timeout 600 "$bin/quicmatch-load" \
        --url "https://127.0.0.1:$quic_port/signal" \
        --http "http://127.0.0.1:$http_port" \
        --server-pid "$server_pid" \
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
