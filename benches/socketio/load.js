#!/usr/bin/env node
// Load generator for the Socket.IO server of server.js: the scenarios of
// quicmatch-load (src/bin/quicmatch-load/) run the same way, with the same
// checks, printing one JSON line with the same field names, so that one
// script (scripts/compare.sh) reads the figures of all three servers.
//
//   node load.js --url http://127.0.0.1:PORT --scenario connect|relay|churn \
//       --pairs P [--messages M] [--duration-secs D] --server-pid PID [--quiet]
//
// Every scenario first connects 2P sessions (socket.io-client, WebSocket
// only, one connection each; each pings once, acknowledged, so the server
// has admitted it), then joins them all at once (even-numbered women,
// odd-numbered men) and checks every `matched` against the partner's.
//   connect  stops there: the figure is the time until everyone is matched.
//   relay    every initiator sends M offers (sdp padded to --payload-bytes,
//            stamped with pair, sequence, match id and send time), one at a
//            time (the next once the partner got the last), all pairs at
//            once, paced to --frame-rate per session (0 = back to back).
//            Latency is one way; a wrong, repeated or out-of-order offer is
//            misrouted; one not delivered in --message-timeout-ms is lost.
//   churn    the initiator of every match sends `next` at once; both are
//            matched again, over and over for D seconds; then every session
//            pings twice (a barrier between) and every match is checked
//            from both sides.
// Server CPU is utime+stime of /proc/PID/stat (10 ms resolution), server
// memory VmRSS of /proc/PID/status; the generator's own CPU is
// process.cpuUsage(). Exit 0 when nothing was lost or misrouted, no error
// was seen and no phase timed out; 1 otherwise; 2 if it could not run.
'use strict';

const fs = require('node:fs');
const { execFileSync } = require('node:child_process');
const { performance } = require('node:perf_hooks');
const { io } = require('socket.io-client');

// ---- Command line ---------------------------------------------------------

const DEFAULTS = {
  url: 'http://127.0.0.1:5700',
  scenario: 'relay',
  pairs: 100,
  messages: 100,
  'duration-secs': 10,
  'payload-bytes': 2048,
  'frame-rate': 50,
  'connect-concurrency': 256,
  'phase-timeout-secs': 120,
  'message-timeout-ms': 10000,
};

function parseArgs(argv) {
  const a = { ...DEFAULTS, 'server-pid': [], quiet: false };
  for (let i = 0; i < argv.length; i++) {
    const key = argv[i].replace(/^--/, '');
    if (key === 'quiet') a.quiet = true;
    else if (key === 'help' || key === 'h') {
      console.log(fs.readFileSync(__filename, 'utf8').split('\n').slice(1, 28).join('\n'));
      process.exit(0);
    } else if (!(key in a) || i + 1 >= argv.length) usage(`unknown or incomplete option ${argv[i]}`);
    else if (key === 'server-pid') a[key].push(Number(argv[++i]));
    else a[key] = typeof DEFAULTS[key] === 'number' ? Number(argv[++i]) : argv[++i];
  }
  for (const [k, v] of Object.entries(DEFAULTS)) {
    if (typeof v === 'number' && !(Number.isInteger(a[k]) && a[k] >= 0)) usage(`--${k} must be a whole number`);
  }
  if (!a['server-pid'].every((pid) => Number.isInteger(pid) && pid > 0)) usage('--server-pid must be a process id');
  if (!['connect', 'relay', 'churn'].includes(a.scenario)) usage('--scenario must be connect, relay or churn');
  if (a.pairs < 1) usage('--pairs must be at least 1');
  if (a['payload-bytes'] < 64 || a['payload-bytes'] > 32768) usage('--payload-bytes must be from 64 to 32768');
  if (a['connect-concurrency'] < 1) usage('--connect-concurrency must be at least 1');
  const host = new URL(a.url).hostname;
  if (!['127.0.0.1', 'localhost', '[::1]'].includes(host)) usage('--url must be a loopback address');
  return a;
}

function usage(why) {
  console.error(`load.js: ${why} (--help lists the options)`);
  process.exit(2);
}

const args = parseArgs(process.argv.slice(2));
const P = args.pairs;
const M = args.messages;
const SESSIONS = 2 * P;
const RATE = args['frame-rate'];
const PHASE_MS = args['phase-timeout-secs'] * 1000;
const MESSAGE_MS = args['message-timeout-ms'];

// ---- Counters and failures (as quicmatch-load's shared.rs) ----------------

const counters = { connected: 0, matched: 0, delivered: 0, lost: 0, misrouted: 0, errors: 0, matches: 0 };
const failures = { kept: [], total: 0 };
let phase = 'connect';

function fail(what) {
  failures.total++;
  if (failures.kept.length < 20) failures.kept.push(what);
}
function error(what) {
  counters.errors++;
  fail(what);
}
function misrouted(what) {
  counters.misrouted++;
  fail(what);
}

// Nanoseconds since the run started: the timestamp offers carry.
const epoch = performance.now();
const sinceEpochNs = () => Math.round((performance.now() - epoch) * 1e6);

// ---- /proc (as quicmatch-load's procfs.rs) --------------------------------

let clockTicks = 100;
try {
  clockTicks = Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100;
} catch {
  // keep 100
}

function readOr(path) {
  try {
    return fs.readFileSync(path, 'utf8');
  } catch {
    return null;
  }
}

// utime + stime of a process, in clock ticks.
function cpuTicks(pid) {
  const stat = readOr(`/proc/${pid}/stat`);
  if (stat === null) return null;
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(fields[11]) + Number(fields[12]);
}

function rssKib(pid) {
  const status = readOr(`/proc/${pid}/status`);
  const line = status?.split('\n').find((l) => l.startsWith('VmRSS:'));
  return line ? Number(line.split(/\s+/)[1]) : null;
}

// Summed over every --server-pid; null if none is given or one is unreadable.
function sum(read) {
  if (args['server-pid'].length === 0) return null;
  let total = 0;
  for (const pid of args['server-pid']) {
    const v = read(pid);
    if (v === null) return null;
    total += v;
  }
  return total;
}

function sample() {
  const self = process.cpuUsage();
  return {
    at: performance.now(),
    serverTicks: sum(cpuTicks),
    selfUs: self.user + self.system,
    rss: sum(rssKib),
  };
}

// One phase between two samples: wall time, server and generator CPU.
function between(a, b) {
  return {
    secs: (b.at - a.at) / 1000,
    serverUs: a.serverTicks === null || b.serverTicks === null
      ? null : Math.round(((b.serverTicks - a.serverTicks) * 1e6) / clockTicks),
    selfUs: b.selfUs - a.selfUs,
  };
}

// ---- Pacing (as quicmatch-load's pacer.rs) --------------------------------

// Spaces a session's sends at least 1.02 / rate seconds apart.
class Pacer {
  constructor(rate) {
    this.interval = rate > 0 ? 1020 / rate : 0; // ms
    this.next = 0;
  }

  notBefore(at) {
    this.next = Math.max(this.next, at);
  }

  // Runs fn once the next send is allowed, and books that send.
  after(fn) {
    if (this.interval === 0) return fn();
    const now = performance.now();
    const at = Math.max(this.next, now);
    this.next = at + this.interval;
    if (at > now) setTimeout(fn, at - now);
    else fn();
  }
}

// When pair `id` starts, spread over one pacing interval.
const stagger = (start, id) => (RATE > 0 ? start + (1000 / RATE) * (id / P) : start);

// ---- Sessions -------------------------------------------------------------

const SERVER_EVENTS = ['waiting', 'matched', 'offer', 'answer', 'ice', 'partnerLeft', 'serverError', 'chat', 'chatAck'];
const genderOf = (index) => (index % 2 === 0 ? 'female' : 'male');
const indexOf = (name) => (typeof name === 'string' && /^s\d+$/.test(name) ? Number(name.slice(1)) : null);

// One client session; whatever the server sends goes to `handler`, which
// each phase sets.
class Session {
  constructor(index, socket) {
    this.index = index;
    this.socket = socket;
    this.pacer = new Pacer(RATE);
    this.handler = (event, data) => error(`session ${index}: unexpected ${event} ${JSON.stringify(data)}`);
    for (const event of SERVER_EVENTS) socket.on(event, (data) => this.handler(event, data));
    socket.on('disconnect', (reason) => {
      if (!this.closing) error(`session ${index}: disconnected (${reason})`);
    });
  }

  // Pings (acknowledged) within `ms`; calls done(ok) once.
  ping(nonce, ms, done) {
    this.socket.timeout(ms).emit('ping', nonce, (err, got) => {
      if (err) error(`session ${this.index}: ping ${nonce} timed out`);
      else if (got !== nonce) error(`session ${this.index}: pong ${got} for ping ${nonce}`);
      done(!err && got === nonce);
    });
  }

  close() {
    this.closing = true;
    this.socket.disconnect();
  }
}

// Resolves (true) once the returned `tick` has been called `count` times,
// or (false, recording `what` as timed out) after `ms`.
function countdown(count, ms, what) {
  let left = count;
  let resolve;
  const promise = new Promise((r) => { resolve = r; });
  const timer = setTimeout(() => {
    fail(`${what} timed out with ${left} of ${count} unfinished`);
    left = -1;
    resolve(false);
  }, ms);
  const tick = () => {
    if (left > 0 && --left === 0) {
      clearTimeout(timer);
      resolve(true);
    }
  };
  if (count === 0) {
    clearTimeout(timer);
    resolve(true);
  }
  return { promise, tick };
}

// Connects every session, --connect-concurrency at a time; each pings once.
async function connectAll() {
  const sessions = [];
  let nextIndex = 0;
  const all = countdown(SESSIONS, PHASE_MS, 'connect phase');
  const startOne = () => {
    if (nextIndex >= SESSIONS) return;
    const index = nextIndex++;
    const socket = io(args.url, {
      transports: ['websocket'],
      forceNew: true,
      reconnection: false,
      timeout: PHASE_MS,
    });
    const finish = (session) => {
      if (session) {
        sessions.push(session);
        counters.connected++;
      }
      all.tick();
      startOne();
    };
    socket.once('connect_error', (e) => {
      error(`session ${index}: connect: ${e.message}`);
      socket.close();
      finish(null);
    });
    socket.once('connect', () => {
      const session = new Session(index, socket);
      session.ping(index, PHASE_MS, (ok) => {
        if (!ok) session.close();
        finish(ok ? session : null);
      });
    });
  };
  for (let i = 0; i < Math.min(args['connect-concurrency'], SESSIONS); i++) startOne();
  await all.promise;
  return sessions;
}

// Joins every session at once and waits for every `matched`; returns the
// sessions with their match {matchId, partner, initiator}.
async function joinAll(sessions) {
  const all = countdown(sessions.length, PHASE_MS, 'join phase');
  const matched = [];
  for (const s of sessions) {
    const gender = genderOf(s.index);
    s.handler = (event, data) => {
      if (event === 'waiting') return;
      if (event !== 'matched') return error(`session ${s.index}: expected matched, got ${event}`);
      const partner = indexOf(data?.partner?.name);
      if (partner === null) return misrouted(`session ${s.index}: partner ${data?.partner?.name} is not ours`);
      if (data.partner.gender === gender || genderOf(partner) !== data.partner.gender) {
        return misrouted(`session ${s.index}: matched with ${data.partner.name} of the wrong gender`);
      }
      s.match = { matchId: data.matchId, partner, initiator: data.initiator };
      s.handler = (e, d) => error(`session ${s.index}: unexpected ${e} ${JSON.stringify(d)} after matched`);
      matched.push(s);
      counters.matched++;
      all.tick();
    };
    s.pacer.after(() => s.socket.emit('join', { name: `s${s.index}`, age: 30, gender }));
  }
  await all.promise;
  return matched;
}

// Checks every match against the partner's; returns the pairs
// {id, matchId, initiator, responder} and the sessions left unpaired.
function pairUp(matched) {
  const slots = new Array(SESSIONS).fill(null);
  for (const s of matched) slots[s.index] = s;
  const pairs = [];
  for (const s of slots) {
    if (!s || !s.match.initiator) continue;
    const other = slots[s.match.partner];
    if (!other || other.match.partner !== s.index || other.match.matchId !== s.match.matchId || other.match.initiator) {
      misrouted(`session ${s.index}: match ${s.match.matchId} is not mirrored by its partner ${s.match.partner}`);
      continue;
    }
    slots[s.index] = slots[other.index] = null;
    pairs.push({ id: pairs.length, matchId: s.match.matchId, initiator: s, responder: other });
  }
  const unpaired = slots.filter((s) => s !== null);
  for (const s of unpaired) misrouted(`session ${s.index}: match ${s.match.matchId} has no consistent partner`);
  return { pairs, unpaired };
}

// ---- Relay (as quicmatch-load's relay.rs) ---------------------------------

// The sdp of offer `seq` of pair `pair`, padded to --payload-bytes.
function payload(pair, seq, matchId, sentNs) {
  const text = `p=${pair} s=${seq} m=${matchId} t=${sentNs} `;
  return text.length < args['payload-bytes'] ? text + 'a'.repeat(args['payload-bytes'] - text.length) : text;
}

function parseStamp(text) {
  if (typeof text !== 'string') return null;
  const m = /^p=(\d+) s=(\d+) m=(\d+) t=(\d+) /.exec(text.slice(0, 80));
  return m ? { pair: Number(m[1]), seq: Number(m[2]), matchId: Number(m[3]), sentNs: Number(m[4]) } : null;
}

// Every initiator sends M offers, one at a time; resolves with the latencies (ns).
function relay(pairs) {
  const latencies = [];
  const start = performance.now();
  const all = countdown(pairs.length, PHASE_MS, 'scenario');
  const waiting = new Set(); // pairs with an offer on the way, for the watchdog
  const finishPair = (pair) => {
    waiting.delete(pair);
    // An extra offer or an error before these pongs is caught.
    for (const [role, s] of [['initiator', pair.initiator], ['responder', pair.responder]]) {
      s.handler = (event) => (event === 'offer'
        ? misrouted(`pair ${pair.id} ${role}: an extra offer`)
        : error(`pair ${pair.id} ${role}: unexpected ${event}`));
    }
    let pongs = 0;
    const pong = () => {
      if (++pongs === 2) all.tick();
    };
    pair.initiator.ping(2 ** 40 + pair.initiator.index, MESSAGE_MS, pong);
    pair.responder.ping(2 ** 40 + pair.responder.index, MESSAGE_MS, pong);
  };
  for (const pair of pairs) {
    const { id, matchId, initiator, responder } = pair;
    let seq = 0;
    const send = () => {
      pair.deadline = performance.now() + MESSAGE_MS;
      waiting.add(pair);
      initiator.socket.emit('offer', { matchId, sdp: payload(id, seq, matchId, sinceEpochNs()) });
    };
    responder.handler = (event, data) => {
      const gotNs = sinceEpochNs();
      if (event !== 'offer') return error(`pair ${id} responder: unexpected ${event} ${JSON.stringify(data)}`);
      const st = parseStamp(data?.sdp);
      if (!st || st.pair !== id || st.seq !== seq || st.matchId !== matchId || data.matchId !== matchId
          || data.sdp.length < args['payload-bytes']) {
        return misrouted(`pair ${id}: expected offer ${seq} of match ${matchId}, got ${JSON.stringify(st)} (match ${data?.matchId})`);
      }
      latencies.push(gotNs - st.sentNs);
      counters.delivered++;
      waiting.delete(pair);
      if (++seq === M) finishPair(pair);
      else initiator.pacer.after(send);
    };
    pair.lose = () => {
      counters.lost += M - seq;
      fail(`pair ${id}: ${M - seq} offers lost from offer ${seq}: not delivered within ${MESSAGE_MS} ms`);
      seq = M; // a late one is now misrouted
      finishPair(pair);
    };
    if (M === 0) finishPair(pair);
    else {
      initiator.pacer.notBefore(stagger(start, id));
      initiator.pacer.after(send);
    }
  }
  // Offers not delivered in time are lost.
  const watchdog = setInterval(() => {
    const now = performance.now();
    for (const pair of waiting) if (now > pair.deadline) pair.lose();
  }, 100);
  return all.promise.then(() => {
    clearInterval(watchdog);
    return latencies;
  });
}

// ---- Churn (as quicmatch-load's churn.rs) ---------------------------------

async function churn(sessions) {
  if (P < 2) console.error('load.js: churn with one pair cannot re-match (never the previous partner)');
  let stopping = false;
  const logs = [];
  for (const s of sessions) {
    const st = { current: { matchId: s.match.matchId, partner: s.match.partner }, counting: true };
    s.churn = st;
    logs.push({ matchId: s.match.matchId, me: s.index, partner: s.match.partner, initiator: s.match.initiator });
    const stop = () => s.pacer.after(() => {
      if (stopping) return;
      s.socket.emit('next');
      st.current = null;
    });
    s.handler = (event, data) => {
      if (event === 'matched') {
        const partner = indexOf(data?.partner?.name);
        if (partner === null) return misrouted(`session ${s.index}: partner ${data?.partner?.name} is not ours`);
        if (st.current) misrouted(`session ${s.index}: matched ${data.matchId} while still in match ${st.current.matchId}`);
        if (genderOf(partner) === genderOf(s.index)) misrouted(`session ${s.index}: matched with same-gender ${partner}`);
        const last = st.last ?? s.match.partner;
        if (partner === last) misrouted(`session ${s.index}: re-matched with its previous partner ${partner}`);
        logs.push({ matchId: data.matchId, me: s.index, partner, initiator: data.initiator });
        st.current = { matchId: data.matchId, partner };
        st.last = partner;
        if (data.initiator && st.counting) counters.matches++;
        if (data.initiator && !stopping) stop();
      } else if (event === 'partnerLeft') {
        if (st.current?.matchId !== data?.matchId) {
          misrouted(`session ${s.index}: partnerLeft ${data?.matchId}, but its match is ${st.current?.matchId}`);
        }
        st.current = null;
      } else if (event === 'waiting') {
        if (st.current) misrouted(`session ${s.index}: waiting while in match ${st.current.matchId}`);
      } else error(`session ${s.index}: unexpected ${event} ${JSON.stringify(data)}`);
    };
    if (s.match.initiator) stop();
  }
  await new Promise((resolve) => setTimeout(resolve, args['duration-secs'] * 1000));
  stopping = true;
  // Every `next` sent has been handled once its session's pong is back.
  const first = countdown(sessions.length, PHASE_MS, 'churn: sessions never finished');
  for (const s of sessions) s.ping(2 ** 41 + s.index, PHASE_MS, first.tick);
  await first.promise;
  const end = sample();
  for (const s of sessions) s.churn.counting = false;
  // Whatever every `next` caused is now ahead of these pongs.
  const second = countdown(sessions.length, PHASE_MS, 'churn drain');
  for (const s of sessions) s.ping(2 ** 42 + s.index, PHASE_MS, second.tick);
  await second.promise;
  // Both sides of every match must agree.
  const byMatch = new Map();
  for (const r of logs) {
    if (!byMatch.has(r.matchId)) byMatch.set(r.matchId, []);
    byMatch.get(r.matchId).push(r);
  }
  for (const [matchId, sides] of byMatch) {
    const [a, b] = sides;
    if (sides.length !== 2 || a.partner !== b.me || b.partner !== a.me || a.initiator === b.initiator) {
      misrouted(`match ${matchId} seen inconsistently: ${JSON.stringify(sides)}`);
    }
  }
  return { end, matchesChecked: byMatch.size };
}

// ---- The run --------------------------------------------------------------

async function getStats() {
  try {
    const res = await fetch(new URL('/api/stats', args.url), { signal: AbortSignal.timeout(2000) });
    return (await res.json()).totalUsers ?? null;
  } catch {
    return null;
  }
}

function progress() {
  return setInterval(() => {
    console.error(`[${phase}] connected ${counters.connected} matched ${counters.matched} `
      + `delivered ${counters.delivered} matches ${counters.matches} lost ${counters.lost} `
      + `misrouted ${counters.misrouted} errors ${counters.errors}`);
  }, 2000);
}

const round2 = (x) => Math.round(x * 100) / 100;
const per = (total, count) => (total === null || total === undefined || !count ? null : round2(total / count));
const rate = (count, secs) => (secs > 0 ? round2(count / secs) : null);
const phaseJson = (p) => (p ? { ms: round2(p.secs * 1000), udp_datagrams: null, server_cpu_us: p.serverUs, generator_cpu_us: p.selfUs } : null);

// Nearest-rank percentiles of latencies (ns), in µs.
function latencyJson(ns) {
  if (ns.length === 0) return null;
  ns.sort((a, b) => a - b);
  const at = (q) => round2(ns[Math.min(Math.max(Math.ceil(q * ns.length), 1), ns.length) - 1] / 1000);
  return { count: ns.length, p50_us: at(0.5), p90_us: at(0.9), p99_us: at(0.99), max_us: at(1) };
}

async function main() {
  const ticker = args.quiet ? null : progress();
  const before = await getStats();
  const idle = sample();
  let sessions = await connectAll();
  const connectedSample = sample();
  const connect = between(idle, connectedSample);
  let join = null;
  let rssConnected = null;
  let paired = { pairs: [], unpaired: [] };
  if (sessions.length === SESSIONS) {
    phase = 'join';
    const matched = await joinAll(sessions);
    const joined = sample();
    join = between(connectedSample, joined);
    rssConnected = joined.rss;
    paired = pairUp(matched);
  } else fail(`only ${sessions.length} of ${SESSIONS} sessions connected`);

  let scenario = null;
  let latencies = [];
  let matchesChecked = null;
  const healthy = counters.misrouted === 0 && failures.total === 0;
  if (args.scenario !== 'connect') {
    if (healthy) {
      phase = args.scenario;
      const started = sample();
      if (args.scenario === 'relay') {
        latencies = await relay(paired.pairs);
        scenario = between(started, sample());
      } else {
        const result = await churn(paired.pairs.flatMap((p) => [p.initiator, p.responder]));
        scenario = between(started, result.end);
        matchesChecked = result.matchesChecked;
      }
    } else fail('scenario skipped: the set-up already failed');
  }

  // Teardown: close everything, wait (up to 10 s) until the server has let go.
  phase = 'teardown';
  for (const s of sessions) s.close();
  sessions = null;
  let left = null;
  if (before !== null) {
    const deadline = performance.now() + 10000;
    for (;;) {
      await new Promise((resolve) => setTimeout(resolve, 50));
      const now = await getStats();
      left = now === null ? null : Math.max(now - before, 0);
      if (now === null || now <= before || performance.now() >= deadline) break;
    }
  }
  const end = sample();
  if (ticker) clearInterval(ticker);

  const ok = failures.total === 0 && counters.misrouted === 0 && counters.errors === 0 && counters.lost === 0;
  const relaying = args.scenario === 'relay';
  const churning = args.scenario === 'churn';
  const joinMatches = Math.floor(counters.matched / 2);
  const report = {
    scenario: args.scenario,
    ok,
    server_kind: 'socket.io',
    transport: 'websocket (TCP)',
    pairs: P,
    sessions: SESSIONS,
    messages_per_pair: relaying ? M : null,
    payload_bytes: relaying ? args['payload-bytes'] : null,
    connectors: null,
    frame_rate: RATE,
    datagram_rate: null,
    connected: counters.connected,
    matched: counters.matched,
    connect: phaseJson(connect),
    join: phaseJson(join),
    scenario_phase: phaseJson(scenario),
    connected_and_matched_ms: round2((connect.secs + (join?.secs ?? 0)) * 1000),
    server_cpu_us_per_session_connect: per(connect.serverUs, counters.connected),
    latency: latencyJson(latencies),
    nodes: 1,
    cross_node_pairs: null,
    latency_cross_node: null,
    messages: counters.delivered,
    messages_per_sec: relaying ? rate(counters.delivered, scenario?.secs ?? 0) : null,
    server_cpu_us_per_message: relaying ? per(scenario?.serverUs, counters.delivered) : null,
    matches: churning ? counters.matches : joinMatches,
    matches_per_sec: churning ? rate(counters.matches, scenario?.secs ?? 0) : rate(joinMatches, join?.secs ?? 0),
    server_cpu_us_per_match: churning ? per(scenario?.serverUs, counters.matches) : per(join?.serverUs, joinMatches),
    generator_cpu_us: {
      per_session_connect: per(connect.selfUs, counters.connected),
      per_message: relaying ? per(scenario?.selfUs, counters.delivered) : null,
      per_match: churning ? per(scenario?.selfUs, counters.matches) : per(join?.selfUs, joinMatches),
    },
    matches_checked: matchesChecked,
    server_rss_kib: {
      idle: idle.rss,
      connected: rssConnected,
      after_leave: end.rss,
      per_session: idle.rss !== null && rssConnected !== null ? round2((rssConnected - idle.rss) / SESSIONS) : null,
    },
    server_sessions_left_after: left,
    udp_drops: null,
    udp_datagrams_per_event: null,
    lost: counters.lost,
    late: 0,
    chat_acks: null,
    misrouted: counters.misrouted,
    errors: counters.errors,
    failures_total: failures.total,
    failures: failures.kept,
    flood: null,
  };
  console.log(JSON.stringify(report));
  return ok ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (e) => {
    console.error(`load.js: ${e.stack ?? e}`);
    process.exit(2);
  },
);
