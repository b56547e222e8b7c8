#!/usr/bin/env bash
# One comparison run: quicmatch, the plain stack (examples/floor_server.rs:
# a bare wtransport server with first-come matching, docs/performance.md §7)
# and a Socket.IO server doing the same job (benches/socketio/server.js),
# measured the same way on this machine, one after the other, then a
# Markdown table with one column per server on stdout.
#
# Every scenario runs against each server in turn (scenario by scenario, so
# that the host's changing load falls on all three alike), each time on a
# fresh server process (like RESTART_EACH=1), at the same sizes:
#   connect  CONNECT_PAIRS pairs: sessions connected + matched; RSS and CPU
#            per session set-up, wall time
#   relay    RELAY_PAIRS pairs, MESSAGES 2 KB offers per pair, paced to 50
#            per session per second, which saturates both cores ("saturated")
#   churn    CHURN_PAIRS pairs for DURATION seconds (not the floor server:
#            it does not re-match)
#   one pair ONE_PAIR_MESSAGES offers back to back (--frame-rate 0; quicmatch
#            started with its rate limits raised for this run only)
# quicmatch and the floor server are started and measured by
# scripts/load-smoke.sh with quicmatch-load; the Socket.IO server is started
# the same way here and measured by benches/socketio/load.js, which runs the
# same scenarios with the same checks and reports the same JSON fields.
#
# A full run at the default sizes takes about 2 minutes on the 2-core test VM
# (115 s on 2026-12-07; the 10,000-session connects take a third of it).
# Needs node 20 (also for the table) and the Rust binaries below.
#
# Usage: scripts/compare.sh > table.md
# Environment (all optional):
#   CONNECT_PAIRS=5000 RELAY_PAIRS=1000 CHURN_PAIRS=1000 MESSAGES=100
#   ONE_PAIR_MESSAGES=1000 DURATION=10
#   SERVERS="quicmatch floor socketio"   which columns, in that order
#   BIN_DIR=target/release   quicmatch, quicmatch-load and floor_server (built
#                            there with cargo if missing and BIN_DIR is the default)
#   UDP_BUFFER_BYTES=33554432   socket buffers of quicmatch, the floor server
#                               and quicmatch-load
#   OUT_DIR=dir              keep every run's JSON report and log there
#                            (default: a temporary directory, removed)
set -euo pipefail

cd "$(dirname "$0")/.."

CONNECT_PAIRS=${CONNECT_PAIRS:-5000}
RELAY_PAIRS=${RELAY_PAIRS:-1000}
CHURN_PAIRS=${CHURN_PAIRS:-1000}
MESSAGES=${MESSAGES:-100}
ONE_PAIR_MESSAGES=${ONE_PAIR_MESSAGES:-1000}
DURATION=${DURATION:-10}
SERVERS=${SERVERS:-quicmatch floor socketio}
BIN_DIR=${BIN_DIR:-target/release}
UDP_BUFFER_BYTES=${UDP_BUFFER_BYTES:-33554432}

for server in $SERVERS; do
    case "$server" in
        quicmatch | floor | socketio) ;;
        *) echo "SERVERS may hold quicmatch, floor and socketio" >&2; exit 2 ;;
    esac
done

# 10,000 sessions are 10,000 sockets on each side.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# The binaries: built only when missing.
floor_bin="$BIN_DIR/examples/floor_server"
[[ -x "$floor_bin" ]] || floor_bin="$BIN_DIR/floor_server"
needs_rust=0
[[ " $SERVERS " == *" quicmatch "* || " $SERVERS " == *" floor "* ]] && needs_rust=1
if ((needs_rust)) && [[ ! -x "$BIN_DIR/quicmatch" || ! -x "$BIN_DIR/quicmatch-load" || ! -x "$floor_bin" ]]; then
    if [[ "$BIN_DIR" != target/release ]]; then
        echo "$BIN_DIR lacks quicmatch, quicmatch-load or floor_server" >&2
        exit 2
    fi
    cargo build --release --bin quicmatch --bin quicmatch-load --example floor_server >&2
fi
if [[ " $SERVERS " == *" socketio "* && ! -d benches/socketio/node_modules ]]; then
    (cd benches/socketio && npm ci --no-audit --no-fund >&2)
fi

if [[ -n "${OUT_DIR:-}" ]]; then
    mkdir -p "$OUT_DIR"
    out=$OUT_DIR
else
    out=$(mktemp -d)
fi
sio_pid=""
cleanup() {
    if [[ -n "$sio_pid" ]]; then
        kill "$sio_pid" 2>/dev/null || true
        wait "$sio_pid" 2>/dev/null || true
    fi
    if [[ -z "${OUT_DIR:-}" ]]; then
        rm -rf "$out"
    fi
}
trap cleanup EXIT

# Starts the Socket.IO server on a free loopback port, as load-smoke.sh
# starts its servers: in the background, its log polled (bounded) for the
# line that names the port. Sets sio_pid and sio_port.
start_socketio() {
    local log="$out/socketio-server.log"
    node benches/socketio/server.js --port 0 >"$log" 2>&1 &
    sio_pid=$!
    for _ in $(seq 1 200); do
        if grep -q "socket.io server on" "$log"; then
            break
        fi
        if ! kill -0 "$sio_pid" 2>/dev/null; then
            echo "socket.io server exited:" >&2
            cat "$log" >&2
            exit 1
        fi
        sleep 0.05
    done
    sio_port=$(sed -n 's|.*socket.io server on http://127\.0\.0\.1:\([0-9]*\).*|\1|p' "$log" | head -n1)
    if [[ -z "$sio_port" ]]; then
        echo "socket.io server did not come up:" >&2
        cat "$log" >&2
        exit 1
    fi
}

stop_socketio() {
    kill "$sio_pid" 2>/dev/null || true
    wait "$sio_pid" 2>/dev/null || true
    sio_pid=""
}

# run SERVER NAME SCENARIO PAIRS MESSAGES [one-pair]: one scenario on a fresh
# server; its JSON report goes to $out/SERVER-NAME.json (empty if none came).
run() {
    local server=$1 name=$2 scenario=$3 pairs=$4 messages=$5 unpaced=${6:-}
    local json="$out/$server-$name.json" log="$out/$server-$name.log" status=0
    echo "== $server: $name ($scenario, $pairs pairs)" >&2
    if [[ "$server" == socketio ]]; then
        local extra=()
        [[ -n "$unpaced" ]] && extra=(--frame-rate 0)
        start_socketio
        timeout 600 node benches/socketio/load.js --url "http://127.0.0.1:$sio_port" \
            --server-pid "$sio_pid" --scenario "$scenario" --pairs "$pairs" \
            --messages "$messages" --duration-secs "$DURATION" --quiet "${extra[@]}" \
            >"$json" 2>"$log" || status=$?
        stop_socketio
    else
        local server_args="--udp-buffer-bytes $UDP_BUFFER_BYTES"
        local load_args="--quiet --udp-buffer-bytes $UDP_BUFFER_BYTES"
        if [[ -n "$unpaced" ]]; then
            load_args+=" --frame-rate 0"
            if [[ "$server" == quicmatch ]]; then
                server_args+=" --frame-rate 1000000000 --datagram-rate 1000000000"
            fi
        fi
        SERVER=$server BIN_DIR=$BIN_DIR RESTART_EACH=1 SCENARIOS=$scenario \
            PAIRS=$pairs MESSAGES=$messages DURATION=$DURATION \
            SERVER_ARGS=$server_args LOAD_ARGS=$load_args \
            scripts/load-smoke.sh >"$json" 2>"$log" || status=$?
    fi
    if ((status != 0)); then
        echo "== $server: $name FAILED (exit $status; $log)" >&2
        failed_runs=$((failed_runs + 1))
    fi
}
failed_runs=0

started=$(date +%s)
for server in $SERVERS; do
    run "$server" connect connect "$CONNECT_PAIRS" 0
done
for server in $SERVERS; do
    run "$server" relay relay "$RELAY_PAIRS" "$MESSAGES"
done
for server in $SERVERS; do
    [[ "$server" == floor ]] && continue
    run "$server" churn churn "$CHURN_PAIRS" 0
done
for server in $SERVERS; do
    run "$server" one-pair relay 1 "$ONE_PAIR_MESSAGES" unpaced
done
echo "== all runs took $(($(date +%s) - started)) s" >&2

# The table, from the JSON reports.
OUT=$out SERVERS=$SERVERS CONNECT_PAIRS=$CONNECT_PAIRS RELAY_PAIRS=$RELAY_PAIRS \
    CHURN_PAIRS=$CHURN_PAIRS MESSAGES=$MESSAGES ONE_PAIR_MESSAGES=$ONE_PAIR_MESSAGES \
    DURATION=$DURATION node - <<'EOF'
const fs = require('node:fs');
const env = process.env;
const servers = env.SERVERS.split(/\s+/).filter(Boolean);
const titles = { quicmatch: 'quicmatch', floor: 'plain stack (floor_server)', socketio: 'Socket.IO 4.8' };
const n = (x) => Number(x).toLocaleString('en-US');
const notes = [];

// One report, or null when the run printed none.
function report(server, name) {
  try {
    const text = fs.readFileSync(`${env.OUT}/${server}-${name}.json`, 'utf8').trim().split('\n').pop();
    return text ? JSON.parse(text) : null;
  } catch {
    return null;
  }
}

// A cell: the figure from a run, marked when the run failed its checks.
function cell(server, name, figure) {
  if (server === 'floor' && name === 'churn') return 'n/a (does not re-match)';
  const r = report(server, name);
  if (!r) return 'no report';
  let value;
  try {
    value = figure(r);
  } catch {
    value = null;
  }
  const text = value === null || value === undefined ? '–' : value;
  if (!r.ok) {
    notes.push(`${titles[server]}, ${name}: failed its checks (lost ${r.lost}, misrouted ${r.misrouted}, `
      + `errors ${r.errors}): ${(r.failures || []).slice(0, 3).join('; ')}`);
    return `${text} (failed)`;
  }
  return text;
}

const ms1 = (x) => x.toLocaleString('en-US', { minimumFractionDigits: 1, maximumFractionDigits: 1 });
const us = (x) => (x === null || x === undefined ? null : x >= 10000 ? `${ms1(x / 1000)} ms` : `${n(Math.round(x))} µs`);
// CPU time over wall time of a phase: how many cores server and generator kept busy.
const cores = (p) => `${(p.server_cpu_us / 1e6 / (p.ms / 1000)).toFixed(2)} / ${(p.generator_cpu_us / 1e6 / (p.ms / 1000)).toFixed(2)}`;
const kib = (x) => (x === null ? null : `${x.toFixed(1)} KiB`);
const secs = (ms) => (ms >= 1000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.round(ms)} ms`);
const p50p99 = (r) => `${us(r.latency.p50_us)} / ${us(r.latency.p99_us)}`;

const C = 2 * env.CONNECT_PAIRS;
const R = 2 * env.RELAY_PAIRS;
const H = 2 * env.CHURN_PAIRS;
const rows = [
  [`RSS per session, ${n(C)} sessions connected + matched`, 'connect', (r) => kib(r.server_rss_kib.per_session)],
  [`server CPU per session set-up (${n(C)} sessions)`, 'connect', (r) => us(r.server_cpu_us_per_session_connect)],
  [`time for ${n(C)} sessions connected + matched`, 'connect', (r) => secs(r.connected_and_matched_ms)],
  [`server CPU per relayed 2 KB offer, ${n(R)} sessions`, 'relay', (r) => us(r.server_cpu_us_per_message)],
  [`server CPU per churn match, ${n(H)} sessions`, 'churn', (r) => us(r.server_cpu_us_per_match)],
  [`relay p50 / p99, ${n(R)} saturated sessions`, 'relay', p50p99],
  [`offers relayed per second, ${n(R)} saturated sessions`, 'relay', (r) => n(Math.round(r.messages_per_sec))],
  [`churn matches per second, ${n(H)} sessions`, 'churn', (r) => n(Math.round(r.matches_per_sec))],
  [`relay p50 / p99, one pair unloaded (back to back)`, 'one-pair', p50p99],
  [`cores busy, server / generator: connect phase, ${n(C)} sessions`, 'connect', (r) => cores(r.connect)],
  [`cores busy, server / generator: saturated relay`, 'relay', (r) => cores(r.scenario_phase)],
  [`cores busy, server / generator: churn`, 'churn', (r) => cores(r.scenario_phase)],
  [`generator's own CPU per session set-up`, 'connect', (r) => us(r.generator_cpu_us.per_session_connect)],
  [`generator's own CPU per relayed offer (${n(R)} sessions)`, 'relay', (r) => us(r.generator_cpu_us.per_message)],
  [`generator's own CPU per churn match`, 'churn', (r) => us(r.generator_cpu_us.per_match)],
];
const runs = ['connect', 'relay', 'churn', 'one-pair'];
const lines = [];
lines.push(`| | ${servers.map((s) => titles[s]).join(' | ')} |`);
lines.push(`| --- |${servers.map(() => ' --- |').join('')}`);
for (const [label, name, figure] of rows) {
  lines.push(`| ${label} | ${servers.map((s) => cell(s, name, figure)).join(' | ')} |`);
}
// UDP receive-buffer drops (RcvbufErrors of /proc/net/snmp, machine-wide)
// summed over a server's runs; TCP has none to count.
lines.push(`| UDP drops (RcvbufErrors, all runs) | ${servers.map((s) => {
  if (s === 'socketio') return 'n/a (TCP)';
  let total = 0;
  const parts = [];
  for (const name of runs) {
    const d = report(s, name)?.udp_drops?.rcvbuf_errors;
    if (d) parts.push(`${name} ${n(d)}`);
    total += d || 0;
  }
  return parts.length ? `${n(total)} (${parts.join(', ')})` : '0';
}).join(' | ')} |`);
lines.push(`| lost / misrouted / errors (all runs) | ${servers.map((s) => {
  const t = [0, 0, 0];
  for (const name of runs) {
    const r = report(s, name);
    if (r) [r.lost, r.misrouted, r.errors].forEach((v, i) => { t[i] += v || 0; });
  }
  return t.join(' / ');
}).join(' | ')} |`);
console.log(lines.join('\n'));
console.log(`\nSizes: connect ${n(env.CONNECT_PAIRS)} pairs; relay ${n(env.RELAY_PAIRS)} pairs × ${n(env.MESSAGES)} offers `
  + `(50 per session per second); churn ${n(env.CHURN_PAIRS)} pairs × ${env.DURATION} s; one pair × `
  + `${n(env.ONE_PAIR_MESSAGES)} offers back to back. A fresh server for every run.`);
for (const note of [...new Set(notes)]) console.log(`\n- ${note}`);
EOF

# The table marks a failed run's figures; the exit status says so too.
if ((failed_runs > 0)); then
    echo "$failed_runs runs failed their checks" >&2
    exit 1
fi
