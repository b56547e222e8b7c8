#!/usr/bin/env node
// The Socket.IO server quicmatch is compared with (scripts/compare.sh): the
// same job as quicmatch (docs/protocol.md §4: join with a profile,
// opposite-gender FIFO matching, relayed offer/answer/ice, next/leave, chat
// and its acks forwarded), written the way a typical Omegle-clone Socket.IO
// server does it: one process, state in memory, one event per message,
// JSON objects as Socket.IO encodes them by default, WebSocket transport only.
//
//   node server.js [--port N] [--host 127.0.0.1]     (or PORT=N; 0 = any free port)
//
// Prints "socket.io server on http://127.0.0.1:PORT" once listening.
// GET /api/stats answers like quicmatch's sidecar, so the load generator
// (load.js) can wait for every session to be gone after a run.
//
// Events, client -> server (an ack callback is optional everywhere):
//   join {name, age, gender}       -> waiting {queuePosition} | matched {...}
//   offer {matchId, sdp}, answer {matchId, sdp}, ice {matchId, candidate}
//                                   -> the same event and object to the partner
//   next                            ends the match; both are queued again
//   leave                           ends the match, leaves the queue
//   chat {matchId, seq, text}, chatAck {matchId, seq}  -> forwarded to the partner
//   ping nonce, ack                 -> ack(nonce)
// server -> client: waiting, matched {matchId, partner {name, age, gender},
//   initiator}, offer/answer/ice, partnerLeft {matchId},
//   serverError {code, message} (codes named as in docs/protocol.md's ErrorCode).
'use strict';

const http = require('node:http');
const { Server } = require('socket.io');

// Command line and environment: --port N, --host H (loopback only).
function option(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}
const port = Number(option('port', process.env.PORT ?? 5700));
const host = option('host', process.env.HOST ?? '127.0.0.1');
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  console.error(`bad port ${port}`);
  process.exit(2);
}
if (host !== '127.0.0.1') {
  console.error('this benchmark server binds 127.0.0.1 only');
  process.exit(2);
}

// The protocol's limits (docs/protocol.md §4).
const MIN_AGE = 18;
const MAX_AGE = 120;
const MAX_NAME = 32;
const MAX_SDP = 32768;
const MAX_CANDIDATE = 1024;
const MAX_CHAT = 1000;
const GENDERS = ['male', 'female'];

// Waiting sessions by gender, oldest first. A Map keeps insertion order and
// deletes in O(1), so it is the FIFO queue with removal from the middle
// (next, leave, disconnect) that an array's indexOf/splice would make O(n).
const queues = { male: new Map(), female: new Map() };
let lastMatchId = 0;
let sessions = 0;
let activeMatches = 0;

// Sessions' own state; the Socket.IO socket is one of its fields.
//   state: 'idle' | 'waiting' | 'matched'; partner: the partner's session;
//   previous: the id of the immediately previous partner (never re-matched).
function newSession(socket) {
  return { socket, id: socket.id, profile: null, state: 'idle', partner: null, matchId: 0, previous: null };
}

function error(s, code, message) {
  s.socket.emit('serverError', { code, message });
}

// Checks a profile (docs/protocol.md §4.1); returns the trimmed profile or a reason.
function checkProfile(p) {
  if (p === null || typeof p !== 'object') return 'profile must be an object';
  if (typeof p.name !== 'string') return 'name must be a string';
  const name = p.name.trim();
  const chars = [...name].length;
  if (chars < 1 || chars > MAX_NAME) return `name must be 1 to ${MAX_NAME} characters`;
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f-\u009f]/.test(name)) return 'name must have no control characters';
  if (!Number.isInteger(p.age) || p.age < MIN_AGE || p.age > MAX_AGE) return `age must be ${MIN_AGE} to ${MAX_AGE}`;
  if (!GENDERS.includes(p.gender)) return 'gender must be male or female';
  return { name, age: p.age, gender: p.gender };
}

// Matches an idle session with the longest-waiting session of the opposite
// gender that is neither its previous partner nor has it as previous partner
// (quicmatch's rule), or queues it. The one that waited is the initiator.
function enqueue(s) {
  const other = queues[s.profile.gender === 'male' ? 'female' : 'male'];
  for (const [id, waiter] of other) {
    if (id === s.previous || waiter.previous === s.id) continue;
    other.delete(id);
    const matchId = ++lastMatchId;
    activeMatches++;
    for (const [one, two, initiator] of [[waiter, s, true], [s, waiter, false]]) {
      one.state = 'matched';
      one.partner = two;
      one.matchId = matchId;
      one.socket.emit('matched', { matchId, partner: two.profile, initiator });
    }
    return;
  }
  const own = queues[s.profile.gender];
  own.set(s.id, s);
  s.state = 'waiting';
  s.socket.emit('waiting', { queuePosition: own.size });
}

// Ends `s`'s match: its partner is told and (quicmatch's rule) queued again
// first; `s` is left idle for the caller to queue or not.
function endMatch(s) {
  const partner = s.partner;
  const matchId = s.matchId;
  activeMatches--;
  s.state = 'idle';
  s.partner = null;
  s.previous = partner.id;
  partner.state = 'idle';
  partner.partner = null;
  partner.previous = s.id;
  partner.socket.emit('partnerLeft', { matchId });
  enqueue(partner);
}

// Leaves any match or queue; the session becomes idle.
function leave(s) {
  if (s.state === 'matched') endMatch(s);
  else if (s.state === 'waiting') {
    queues[s.profile.gender].delete(s.id);
    s.state = 'idle';
  }
}

// Why a relayed string field is refused ('BadFrame', 'TooLarge'), or null.
function tooLong(value, limit, optional) {
  if (optional && value == null) return null;
  if (typeof value !== 'string') return 'BadFrame';
  return Buffer.byteLength(value) > limit ? 'TooLarge' : null;
}

// The partner of a relay or chat sender, or null (with an error when the
// sender is not matched; silently for a stale match id, as in quicmatch).
function partnerFor(s, msg) {
  if (s.state !== 'matched') {
    error(s, 'NotMatched', 'not matched');
    return null;
  }
  if (msg === null || typeof msg !== 'object') {
    error(s, 'BadFrame', 'expected an object');
    return null;
  }
  return msg.matchId === s.matchId ? s.partner : null;
}

const httpServer = http.createServer((req, res) => {
  if (req.method === 'GET' && req.url === '/api/stats') {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({
      totalUsers: sessions,
      activeMatches,
      queues: { male: queues.male.size, female: queues.female.size },
    }));
    return;
  }
  res.writeHead(404);
  res.end();
});

// WebSocket only: no long-polling and no upgrade from it. Messages stay
// uncompressed (perMessageDeflate is off by default) and are encoded by the
// default JSON parser. 64 KiB per message, the protocol's frame limit.
const io = new Server(httpServer, {
  transports: ['websocket'],
  allowUpgrades: false,
  serveClient: false,
  maxHttpBufferSize: 65536,
});

io.on('connection', (socket) => {
  const s = newSession(socket);
  sessions++;

  socket.on('join', (profile) => {
    if (s.state !== 'idle') return error(s, 'AlreadyJoined', 'already joined');
    const checked = checkProfile(profile);
    if (typeof checked === 'string') return error(s, 'InvalidProfile', checked);
    s.profile = checked;
    enqueue(s);
  });

  // The three relays: checked, then the same object goes to the partner.
  for (const event of ['offer', 'answer']) {
    socket.on(event, (msg) => {
      const partner = partnerFor(s, msg);
      if (!partner) return;
      const problem = tooLong(msg.sdp, MAX_SDP, false);
      if (problem) return error(s, problem, `sdp must be a string of at most ${MAX_SDP} bytes`);
      partner.socket.emit(event, msg);
    });
  }
  socket.on('ice', (msg) => {
    const partner = partnerFor(s, msg);
    if (!partner) return;
    const c = msg.candidate;
    const problem = c === null || typeof c !== 'object' ? 'BadFrame'
      : tooLong(c.candidate, MAX_CANDIDATE, false) || tooLong(c.sdpMid, MAX_CANDIDATE, true)
        || tooLong(c.usernameFragment, MAX_CANDIDATE, true);
    if (problem) return error(s, problem, `candidate fields must be strings of at most ${MAX_CANDIDATE} bytes`);
    partner.socket.emit('ice', msg);
  });

  socket.on('next', () => {
    if (s.state === 'idle') return error(s, 'NotJoined', 'join first');
    if (s.state === 'waiting') {
      // Still waiting: say where (1-based).
      let position = 1;
      for (const id of queues[s.profile.gender].keys()) {
        if (id === s.id) break;
        position++;
      }
      return socket.emit('waiting', { queuePosition: position });
    }
    endMatch(s);
    enqueue(s);
  });

  socket.on('leave', () => leave(s));

  // Chat and its ack, forwarded as they came (1 to 1000 bytes of text).
  socket.on('chat', (msg) => {
    const partner = partnerFor(s, msg);
    if (!partner) return;
    if (typeof msg.text !== 'string' || msg.text.length === 0 || Buffer.byteLength(msg.text) > MAX_CHAT) {
      return error(s, 'TooLarge', `text must be 1 to ${MAX_CHAT} bytes`);
    }
    partner.socket.emit('chat', msg);
  });
  socket.on('chatAck', (msg) => {
    const partner = partnerFor(s, msg);
    if (partner) partner.socket.emit('chatAck', msg);
  });

  socket.on('ping', (nonce, ack) => {
    if (typeof ack === 'function') ack(nonce);
  });

  // Gone for any reason: leave as if by `leave` (the partner is told and queued).
  socket.on('disconnect', () => {
    leave(s);
    sessions--;
  });
});

httpServer.listen(port, host, () => {
  console.log(`socket.io server on http://${host}:${httpServer.address().port} (pid ${process.pid})`);
});

// A signal ends it at once: a benchmark server keeps no state worth a drain.
for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => process.exit(0));
