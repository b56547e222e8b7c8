#!/usr/bin/env bash
# The QUIC floor (examples/quic_floor.rs): starts its server on 127.0.0.1
# with an ephemeral port, opens SESSIONS sessions against it, prints the
# server's CPU time, memory and UDP datagrams per session set-up, and stops
# the server. It fails if any session failed. docs/performance.md §17 sets
# these figures beside quicmatch's and the thin floor's.
#
# Usage: scripts/quic-floor.sh
# Environment (all optional):
#   PROFILE=debug|release   build to use (default debug; release for real figures)
#   SESSIONS=20             sessions to open (10000 for the figures of §17)
#   CONNECT_ARGS="..."      extra flags for `quic_floor connect`
#                           (e.g. --no-resumption)
#   NO_BUILD=1              use the binary already built
#   BIN_DIR=dir             take the binary from dir (implies NO_BUILD)
set -euo pipefail

cd "$(dirname "$0")/.."

PROFILE=${PROFILE:-debug}
SESSIONS=${SESSIONS:-20}
CONNECT_ARGS=${CONNECT_ARGS:-}

case "$PROFILE" in
    release) build_flag=(--release) ;;
    debug) build_flag=() ;;
    *) echo "PROFILE must be debug or release" >&2; exit 2 ;;
esac
if [[ -n "${BIN_DIR:-}" ]]; then
    bin="$BIN_DIR"
else
    if [[ -z "${NO_BUILD:-}" ]]; then
        cargo build "${build_flag[@]}" --example quic_floor >&2
    fi
    bin="${CARGO_TARGET_DIR:-target}/$PROFILE/examples"
fi
floor="$bin/quic_floor"
[[ -x "$floor" ]] || { echo "no $floor" >&2; exit 2; }

log=$(mktemp)
"$floor" serve --port 0 >"$log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -f "$log"' EXIT

# Wait (bounded) for the server to print its address and certificate hash.
for _ in $(seq 1 200); do
    grep -q "certificate hash" "$log" && break
    kill -0 "$server" 2>/dev/null || { cat "$log" >&2; exit 1; }
    sleep 0.05
done
line=$(grep "certificate hash" "$log") || { echo "the server did not start" >&2; cat "$log" >&2; exit 1; }
port=$(sed -E 's/.* on [0-9.]+:([0-9]+),.*/\1/' <<<"$line")
hash=${line##* }

# shellcheck disable=SC2086
timeout 600 "$floor" connect --port "$port" --cert-hash "$hash" --server-pid "$server" \
    --sessions "$SESSIONS" $CONNECT_ARGS
