// quicmatch.js: the browser side of the quicmatch signaling protocol, version
// 1.1 (docs/protocol.md). Dependency-free ES module for the WebTransport API,
// with the protocol's WebSocket fallback (section 7).
//
// Three layers:
//  1. The codec: bincode 2 (`config::standard()`) for ClientMsg, ServerMsg and
//     Datagram, plus the 4-byte big-endian framing of the signaling stream.
//     Decoding is strict: it rejects exactly what the Rust server rejects
//     (unknown variants, bad bool/option tags, invalid UTF-8, short input,
//     trailing bytes), so a bad frame never turns into a half-right message.
//  2. Carriers: what carries frames and datagrams. A WebTransport session
//     (one bidirectional stream, datagrams) or a WebSocket (one tagged unit per
//     message); both offer the same few operations (see `Carrier`).
//  3. `QuicmatchSession`: one session with reconnects, the choice of carrier
//     (WebTransport, falling back to the WebSocket), the current match, relay
//     helpers and chat over datagrams with ack/resend.
//
// Value shapes used by the codec (field names exactly as in the protocol):
//   ClientMsg:  {type: 'Join', profile: {name, age, gender}}
//               {type: 'Offer' | 'Answer', match_id, sdp}
//               {type: 'Ice', match_id, candidate: {candidate, sdp_mid, sdp_m_line_index, username_fragment}}
//               {type: 'Stop'} | {type: 'Leave'} | {type: 'Ping', nonce}
//   ServerMsg:  {type: 'Waiting', queue_position}
//               {type: 'Matched', match_id, partner, initiator, ice_servers: [{urls, username, credential}]}
//               {type: 'Offer' | 'Answer' | 'Ice', ...as above}
//               {type: 'PartnerDisconnected', match_id}
//               {type: 'Error', code: 'BadFrame' | ... | 'ServerBusy', message}
//               {type: 'Pong', nonce} | {type: 'Closing', code, reason}
//   Datagram:   {type: 'Chat', match_id, seq, text} | {type: 'ChatAck', match_id, seq}
//   Gender is 'Male' or 'Female'; an Option is `null` when None (encoders
//   also take `undefined`).
//
// Integers: u8, u16 and u32 are JS numbers. A u64 (match_id, nonce) decodes to
// a number when it is at most Number.MAX_SAFE_INTEGER (2^53 - 1), which every
// match id the server hands out is, and to a BigInt above that, so no value is
// ever silently rounded. Encoders take a u64 as either a safe integer number or
// a BigInt.

/** The protocol version this module speaks (docs/protocol.md); the package's major.minor. */
export const PROTOCOL_VERSION = '1.1';
/** Largest signaling frame payload, in bytes. */
export const MAX_FRAME_LEN = 65536;
/** Largest `sdp` of an Offer or Answer, in bytes. */
export const MAX_SDP_LEN = 32768;
/** Largest `candidate`, `sdp_mid` or `username_fragment`, in bytes. */
export const MAX_ICE_FIELD_LEN = 1024;
/** Largest chat text, in bytes of UTF-8 (it must also be non-empty). */
export const MAX_CHAT_LEN = 1000;
/** The URL path of the WebTransport session (and of the WebSocket fallback, on the HTTP sidecar). */
export const SIGNAL_PATH = '/signal';
/** The subprotocol a WebSocket session offers (protocol section 7). */
export const WEBSOCKET_SUBPROTOCOL = 'quicmatch.v1';
/** First byte of a WebSocket unit that carries a frame's payload (a ClientMsg or ServerMsg). */
export const UNIT_FRAME = 0x00;
/** First byte of a WebSocket unit that carries a Datagram. */
export const UNIT_DATAGRAM = 0x01;
/** A WebSocket close status is this plus the session close code (4003: server shutting down). */
export const WEBSOCKET_CLOSE_BASE = 4000;

/** Session close codes, as carried by the server's `Closing` frame. */
export const CloseCode = Object.freeze({
  NORMAL: 0,
  PROTOCOL_VIOLATION: 1,
  ABUSE: 2,
  SHUTTING_DOWN: 3,
  AT_CAPACITY: 4,
});

/** Thrown when bytes do not decode to exactly one message. */
export class DecodeError extends Error {
  /** @param {string} message */
  constructor(message) {
    super(message);
    this.name = 'DecodeError';
  }
}

/** Thrown by {@link FrameReader} for a length prefix of 0 or over 65,536: the stream cannot be resynchronised after it. */
export class FrameLengthError extends Error {
  /** @param {number} length */
  constructor(length) {
    super(`frame length ${length} is outside 1..=${MAX_FRAME_LEN}`);
    this.name = 'FrameLengthError';
    this.length = length;
  }
}

/**
 * The one error type of a session: every rejected promise and every `error`
 * event carries one.
 *
 * `code` is a server ErrorCode name when `fromServer` is true (`InvalidProfile`,
 * `AlreadyJoined`, `RateLimited`, `ServerBusy`, ...), else one of the session's
 * own: `NotConnected`, `NotMatched`, `TooLarge`, `DatagramTooLarge`, `EmptyChat`,
 * `InvalidArgument`, `BadServerFrame`, `ProtocolViolation`, `ConnectFailed`,
 * `Unsupported`, `Aborted`, `Timeout`, `Closed`, `Left`, `ChatFailed`,
 * `PingTimeout`, `ServerClosed` (then `closeCode` is the server's `Closing` code).
 */
export class QuicmatchError extends Error {
  /**
   * @param {string} code
   * @param {string} message
   * @param {{fromServer?: boolean, cause?: unknown, closeCode?: ?number}} [more]
   */
  constructor(code, message, { fromServer = false, cause, closeCode = null } = {}) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = 'QuicmatchError';
    this.code = code;
    this.fromServer = fromServer;
    this.closeCode = closeCode;
  }
}

/**
 * A promise settled from outside that also gives up by itself: with code
 * `Aborted` when `signal` aborts, with `timeoutCode` after `timeoutMs`. Then
 * `onGiveUp(error)` runs, to undo what the promise stood for. Settling twice
 * is harmless.
 * @template T
 * @param {{signal?: AbortSignal, timeoutMs?: number}} opts
 * @param {string} what for messages ("joining")
 * @param {(err: QuicmatchError) => void} [onGiveUp]
 * @param {string} [timeoutCode]
 */
function deferred({ signal, timeoutMs } = {}, what, onGiveUp, timeoutCode = 'Timeout') {
  let resolvePromise;
  let rejectPromise;
  /** @type {Promise<T>} */
  const promise = new Promise((resolve, reject) => {
    resolvePromise = resolve;
    rejectPromise = reject;
  });
  let timer = null;
  const d = {
    promise,
    settled: false,
    /** @param {T} value */
    resolve(value) {
      if (d.settled) return;
      d.settled = true;
      cleanup();
      resolvePromise(value);
    },
    /** @param {QuicmatchError} err */
    reject(err) {
      if (d.settled) return;
      d.settled = true;
      cleanup();
      rejectPromise(err);
    },
  };
  const giveUp = (err) => {
    if (d.settled) return;
    d.reject(err);
    onGiveUp?.(err);
  };
  const aborted = () => giveUp(new QuicmatchError('Aborted', `${what} was aborted`, { cause: signal?.reason }));
  const cleanup = () => {
    clearTimeout(timer);
    signal?.removeEventListener('abort', aborted);
  };
  if (signal?.aborted) {
    queueMicrotask(aborted); // after the caller has registered `d`
  } else {
    signal?.addEventListener('abort', aborted, { once: true });
    if (typeof timeoutMs === 'number' && timeoutMs > 0 && Number.isFinite(timeoutMs)) {
      timer = setTimeout(() => giveUp(new QuicmatchError(timeoutCode, `${what} took longer than ${timeoutMs} ms`)), timeoutMs);
    }
  }
  return d;
}

// ---------------------------------------------------------------------------
// Schema. Each type is a small descriptor; one generic encoder and one generic
// decoder walk them, so ClientMsg, ServerMsg and Datagram cannot disagree on
// how a shared piece (Profile, IceCandidate, a u64) is written.

const U8 = { kind: 'u8' };
const U16 = { kind: 'uint', bits: 16 };
const U32 = { kind: 'uint', bits: 32 };
const U64 = { kind: 'uint', bits: 64 };
const BOOL = { kind: 'bool' };
const STRING = { kind: 'string' };
const option = (inner) => ({ kind: 'option', inner });
const vec = (inner) => ({ kind: 'vec', inner });
const struct = (fields) => ({ kind: 'struct', fields });
/** An enum whose variants carry nothing: the JS value is the variant's name. */
const names = (variants) => ({ kind: 'names', variants });
/** An enum with data: the JS value is `{type: name, ...fields}`. */
const tagged = (name, variants) => ({ kind: 'tagged', name, variants });

const GENDER = names(['Male', 'Female']);
const ERROR_CODE = names([
  'BadFrame', 'InvalidProfile', 'NotJoined', 'AlreadyJoined',
  'NotMatched', 'TooLarge', 'RateLimited', 'ServerBusy',
]);
const PROFILE = struct([['name', STRING], ['age', U8], ['gender', GENDER]]);
const ICE_CANDIDATE = struct([
  ['candidate', STRING],
  ['sdp_mid', option(STRING)],
  ['sdp_m_line_index', option(U16)],
  ['username_fragment', option(STRING)],
]);
const ICE_SERVER = struct([
  ['urls', vec(STRING)],
  ['username', option(STRING)],
  ['credential', option(STRING)],
]);
const SDP_FIELDS = [['match_id', U64], ['sdp', STRING]];
const ICE_FIELDS = [['match_id', U64], ['candidate', ICE_CANDIDATE]];

// Variant order is the wire index: never reorder.
const CLIENT_MSG = tagged('ClientMsg', [
  // `Join(Profile)` is a newtype variant; its bytes are those of a struct
  // variant with the one field, which the JS shape names `profile`.
  ['Join', [['profile', PROFILE]]],
  ['Offer', SDP_FIELDS],
  ['Answer', SDP_FIELDS],
  ['Ice', ICE_FIELDS],
  ['Stop', []],
  ['Leave', []],
  ['Ping', [['nonce', U64]]],
]);
const SERVER_MSG = tagged('ServerMsg', [
  ['Waiting', [['queue_position', U32]]],
  ['Matched', [['match_id', U64], ['partner', PROFILE], ['initiator', BOOL], ['ice_servers', vec(ICE_SERVER)]]],
  ['Offer', SDP_FIELDS],
  ['Answer', SDP_FIELDS],
  ['Ice', ICE_FIELDS],
  ['PartnerDisconnected', [['match_id', U64]]],
  ['Error', [['code', ERROR_CODE], ['message', STRING]]],
  ['Pong', [['nonce', U64]]],
  ['Closing', [['code', U32], ['reason', STRING]]],
]);
const DATAGRAM = tagged('Datagram', [
  ['Chat', [['match_id', U64], ['seq', U32], ['text', STRING]]],
  ['ChatAck', [['match_id', U64], ['seq', U32]]],
]);

const utf8Encoder = new TextEncoder();
// fatal: invalid UTF-8 is an error, as in Rust's String::from_utf8.
// ignoreBOM: keep a leading U+FEFF as a character, as Rust does.
const utf8Decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** Byte length of a string once encoded as UTF-8. @param {string} text */
export function utf8Length(text) {
  return utf8Encoder.encode(text).length;
}

// ---------------------------------------------------------------------------
// Encoder

class Writer {
  constructor() {
    this.buf = new Uint8Array(64);
    this.len = 0;
  }

  reserve(n) {
    if (this.len + n <= this.buf.length) return;
    const bigger = new Uint8Array(Math.max(this.buf.length * 2, this.len + n));
    bigger.set(this.buf.subarray(0, this.len));
    this.buf = bigger;
  }

  byte(b) {
    this.reserve(1);
    this.buf[this.len++] = b;
  }

  bytes(b) {
    this.reserve(b.length);
    this.buf.set(b, this.len);
    this.len += b.length;
  }

  /** Little-endian unsigned integer of `n` bytes. @param {bigint} v @param {number} n */
  le(v, n) {
    for (let i = 0; i < n; i++) {
      this.byte(Number(v & 0xffn));
      v >>= 8n;
    }
  }

  /** bincode varint: < 251 in one byte, else a 0xFB/0xFC/0xFD marker and 2/4/8 bytes LE. */
  varint(value, bits, path) {
    const v = toUint(value, bits, path);
    if (v < 251n) this.byte(Number(v));
    else if (v < 0x1_0000n) { this.byte(0xfb); this.le(v, 2); }
    else if (v < 0x1_0000_0000n) { this.byte(0xfc); this.le(v, 4); }
    else { this.byte(0xfd); this.le(v, 8); }
  }

  finish() {
    return this.buf.slice(0, this.len);
  }
}

/** Checks that `value` is an unsigned integer that fits in `bits` bits; returns it as a BigInt. */
function toUint(value, bits, path) {
  let v;
  if (typeof value === 'bigint') v = value;
  else if (typeof value === 'number' && Number.isSafeInteger(value)) v = BigInt(value);
  else throw new TypeError(`${path}: expected an integer (a safe integer number or a BigInt), got ${describe(value)}`);
  if (v < 0n || v >= 1n << BigInt(bits)) throw new RangeError(`${path}: ${v} does not fit in u${bits}`);
  return v;
}

function describe(value) {
  if (typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'bigint') return `${value}n`;
  return String(value);
}

function encodeValue(w, type, value, path) {
  switch (type.kind) {
    case 'u8':
      w.byte(Number(toUint(value, 8, path)));
      return;
    case 'uint':
      w.varint(value, type.bits, path);
      return;
    case 'bool':
      if (typeof value !== 'boolean') throw new TypeError(`${path}: expected a boolean, got ${describe(value)}`);
      w.byte(value ? 1 : 0);
      return;
    case 'string': {
      if (typeof value !== 'string') throw new TypeError(`${path}: expected a string, got ${describe(value)}`);
      // A lone surrogate has no UTF-8 form; TextEncoder would swap it for U+FFFD.
      if (typeof value.isWellFormed === 'function' && !value.isWellFormed()) {
        throw new TypeError(`${path}: string holds a lone surrogate`);
      }
      const bytes = utf8Encoder.encode(value);
      w.varint(bytes.length, 64, path);
      w.bytes(bytes);
      return;
    }
    case 'option':
      if (value === null || value === undefined) {
        w.byte(0);
      } else {
        w.byte(1);
        encodeValue(w, type.inner, value, path);
      }
      return;
    case 'vec':
      if (!Array.isArray(value)) throw new TypeError(`${path}: expected an array, got ${describe(value)}`);
      w.varint(value.length, 64, path);
      value.forEach((item, i) => encodeValue(w, type.inner, item, `${path}[${i}]`));
      return;
    case 'struct':
      if (value === null || typeof value !== 'object') throw new TypeError(`${path}: expected an object, got ${describe(value)}`);
      for (const [name, fieldType] of type.fields) encodeValue(w, fieldType, value[name], `${path}.${name}`);
      return;
    case 'names': {
      const index = type.variants.indexOf(value);
      if (index < 0) throw new TypeError(`${path}: expected one of ${type.variants.join(', ')}, got ${describe(value)}`);
      w.varint(index, 32, path);
      return;
    }
    case 'tagged': {
      const tag = value?.type;
      const index = type.variants.findIndex(([name]) => name === tag);
      if (index < 0) throw new TypeError(`${path}: unknown ${type.name} type ${describe(tag)}`);
      w.varint(index, 32, path);
      for (const [name, fieldType] of type.variants[index][1]) encodeValue(w, fieldType, value[name], `${tag}.${name}`);
      return;
    }
    default:
      throw new Error(`unknown schema kind ${type.kind}`);
  }
}

function encodeWith(type, value) {
  const w = new Writer();
  encodeValue(w, type, value, type.name);
  return w.finish();
}

// ---------------------------------------------------------------------------
// Decoder

const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);

class Reader {
  /** @param {Uint8Array} buf */
  constructor(buf) {
    this.buf = buf;
    this.pos = 0;
  }

  get remaining() {
    return this.buf.length - this.pos;
  }

  take(n, path) {
    if (n > this.remaining) throw new DecodeError(`${path}: input ends early (need ${n} bytes, have ${this.remaining})`);
    const out = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }

  byte(path) {
    return this.take(1, path)[0];
  }

  /**
   * bincode varint for an integer of `bits` bits. Like bincode, a marker too
   * wide for the type (0xFC for a u16, 0xFD for a u32, 0xFE/0xFF for anything
   * here) is an error; a value written wider than needed is accepted.
   */
  varint(bits, path) {
    const first = this.byte(path);
    if (first < 251) return first;
    let n;
    if (first === 0xfb) n = 2;
    else if (first === 0xfc && bits >= 32) n = 4;
    else if (first === 0xfd && bits >= 64) n = 8;
    else throw new DecodeError(`${path}: invalid varint marker 0x${first.toString(16)} for a u${bits}`);
    const b = this.take(n, path);
    let v = 0n;
    for (let i = n - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[i]);
    return v <= MAX_SAFE ? Number(v) : v;
  }

  /** A length (string bytes or vec elements); each counted unit takes at least one byte, so more than what is left is short input. */
  length(path) {
    const len = this.varint(64, path);
    if (typeof len !== 'number' || len > this.remaining) {
      throw new DecodeError(`${path}: length ${len} is more than the ${this.remaining} bytes left`);
    }
    return len;
  }
}

function decodeValue(r, type, path) {
  switch (type.kind) {
    case 'u8':
      return r.byte(path);
    case 'uint':
      return r.varint(type.bits, path);
    case 'bool': {
      const b = r.byte(path);
      if (b > 1) throw new DecodeError(`${path}: invalid bool byte 0x${b.toString(16)}`);
      return b === 1;
    }
    case 'string': {
      const bytes = r.take(r.length(path), path);
      try {
        return utf8Decoder.decode(bytes);
      } catch {
        throw new DecodeError(`${path}: invalid UTF-8`);
      }
    }
    case 'option': {
      const tag = r.byte(path);
      if (tag === 0) return null;
      if (tag === 1) return decodeValue(r, type.inner, path);
      throw new DecodeError(`${path}: invalid Option tag 0x${tag.toString(16)}`);
    }
    case 'vec': {
      const len = r.length(path);
      const out = [];
      for (let i = 0; i < len; i++) out.push(decodeValue(r, type.inner, `${path}[${i}]`));
      return out;
    }
    case 'struct': {
      const out = {};
      for (const [name, fieldType] of type.fields) out[name] = decodeValue(r, fieldType, `${path}.${name}`);
      return out;
    }
    case 'names': {
      const index = r.varint(32, path);
      if (typeof index !== 'number' || index >= type.variants.length) throw new DecodeError(`${path}: unknown variant ${index}`);
      return type.variants[index];
    }
    case 'tagged': {
      const index = r.varint(32, path);
      if (typeof index !== 'number' || index >= type.variants.length) {
        throw new DecodeError(`${type.name}: unknown variant ${index}`);
      }
      const [tag, fields] = type.variants[index];
      const out = { type: tag };
      for (const [name, fieldType] of fields) out[name] = decodeValue(r, fieldType, `${tag}.${name}`);
      return out;
    }
    default:
      throw new Error(`unknown schema kind ${type.kind}`);
  }
}

function decodeWith(type, bytes) {
  if (!(bytes instanceof Uint8Array)) {
    if (bytes instanceof ArrayBuffer) bytes = new Uint8Array(bytes);
    else throw new TypeError('expected a Uint8Array or ArrayBuffer');
  }
  const r = new Reader(bytes);
  const value = decodeValue(r, type, type.name);
  if (r.remaining !== 0) throw new DecodeError(`${type.name}: ${r.remaining} trailing bytes after the message`);
  return value;
}

/**
 * @typedef {'Male'|'Female'} Gender
 * @typedef {{name: string, age: number, gender: Gender}} Profile
 * @typedef {number|bigint} U64 A u64: a number when it is a safe integer, else a BigInt.
 * @typedef {{candidate: string, sdp_mid: ?string, sdp_m_line_index: ?number, username_fragment: ?string}} WireIceCandidate
 * @typedef {{urls: string[], username: ?string, credential: ?string}} WireIceServer
 * @typedef {'BadFrame'|'InvalidProfile'|'NotJoined'|'AlreadyJoined'|'NotMatched'|'TooLarge'|'RateLimited'|'ServerBusy'} ErrorCode
 * @typedef {{type: 'Join', profile: Profile}
 *   | {type: 'Offer'|'Answer', match_id: U64, sdp: string}
 *   | {type: 'Ice', match_id: U64, candidate: WireIceCandidate}
 *   | {type: 'Stop'} | {type: 'Leave'} | {type: 'Ping', nonce: U64}} ClientMsg
 * @typedef {{type: 'Waiting', queue_position: number}
 *   | {type: 'Matched', match_id: U64, partner: Profile, initiator: boolean, ice_servers: WireIceServer[]}
 *   | {type: 'Offer'|'Answer', match_id: U64, sdp: string}
 *   | {type: 'Ice', match_id: U64, candidate: WireIceCandidate}
 *   | {type: 'PartnerDisconnected', match_id: U64}
 *   | {type: 'Error', code: ErrorCode, message: string}
 *   | {type: 'Pong', nonce: U64}
 *   | {type: 'Closing', code: number, reason: string}} ServerMsg
 * @typedef {{type: 'Chat', match_id: U64, seq: number, text: string}
 *   | {type: 'ChatAck', match_id: U64, seq: number}} Datagram
 */

/** Encodes a client message (unframed). Throws TypeError/RangeError for a value that does not fit the type. @param {ClientMsg} msg @returns {Uint8Array} */
export function encodeClientMsg(msg) { return encodeWith(CLIENT_MSG, msg); }
/** Decodes bytes that must hold exactly one client message. Throws {@link DecodeError}. @param {Uint8Array|ArrayBuffer} bytes @returns {ClientMsg} */
export function decodeClientMsg(bytes) { return decodeWith(CLIENT_MSG, bytes); }
/** Encodes a server message (unframed). @param {ServerMsg} msg @returns {Uint8Array} */
export function encodeServerMsg(msg) { return encodeWith(SERVER_MSG, msg); }
/** Decodes bytes that must hold exactly one server message. Throws {@link DecodeError}. @param {Uint8Array|ArrayBuffer} bytes @returns {ServerMsg} */
export function decodeServerMsg(bytes) { return decodeWith(SERVER_MSG, bytes); }
/** Encodes a datagram. @param {Datagram} msg @returns {Uint8Array} */
export function encodeDatagram(msg) { return encodeWith(DATAGRAM, msg); }
/** Decodes bytes that must hold exactly one datagram. Throws {@link DecodeError}. @param {Uint8Array|ArrayBuffer} bytes @returns {Datagram} */
export function decodeDatagram(bytes) { return decodeWith(DATAGRAM, bytes); }

// ---------------------------------------------------------------------------
// Framing

/**
 * Prefixes an encoded message with its 4-byte big-endian length.
 * @param {Uint8Array} payload 1 to 65,536 bytes
 * @returns {Uint8Array}
 */
export function encodeFrame(payload) {
  if (payload.length < 1 || payload.length > MAX_FRAME_LEN) {
    throw new RangeError(`frame payload of ${payload.length} bytes is outside 1..=${MAX_FRAME_LEN}`);
  }
  const out = new Uint8Array(4 + payload.length);
  new DataView(out.buffer).setUint32(0, payload.length, false);
  out.set(payload, 4);
  return out;
}

/**
 * Splits a byte stream into frame payloads: chunks go in with {@link FrameReader#push},
 * whole payloads come out of {@link FrameReader#next}.
 */
export class FrameReader {
  constructor() {
    /** @type {Uint8Array} */
    this.buf = new Uint8Array(0);
  }

  /** Appends bytes read from the stream. @param {Uint8Array} chunk */
  push(chunk) {
    if (this.buf.length === 0) {
      this.buf = chunk.slice();
      return;
    }
    const joined = new Uint8Array(this.buf.length + chunk.length);
    joined.set(this.buf);
    joined.set(chunk, this.buf.length);
    this.buf = joined;
  }

  /**
   * The next whole frame's payload, or null until one has arrived.
   * Throws {@link FrameLengthError} for a length of 0 or over 65,536.
   * @returns {Uint8Array|null}
   */
  next() {
    if (this.buf.length < 4) return null;
    const len = new DataView(this.buf.buffer, this.buf.byteOffset, 4).getUint32(0, false);
    if (len === 0 || len > MAX_FRAME_LEN) throw new FrameLengthError(len);
    if (this.buf.length < 4 + len) return null;
    const payload = this.buf.slice(4, 4 + len);
    this.buf = this.buf.slice(4 + len);
    return payload;
  }
}

// ---------------------------------------------------------------------------
// Session

/**
 * The server's `/api/webtransport` answer, decoded. `websocket` is the
 * WebSocket fallback's URL, or null when the server names none.
 * @typedef {{url: string, serverCertificateHashes: {algorithm: string, value: Uint8Array}[], websocket: ?string}} TransportInfo
 */

/**
 * Fetches `/api/webtransport` relative to `base` and turns the base64
 * certificate hashes into bytes, as `new WebTransport` wants them.
 * @param {string|URL} [base] page or server URL; defaults to the current page
 * @param {typeof fetch} [fetchFn]
 * @returns {Promise<TransportInfo>}
 */
export async function fetchTransportInfo(base = globalThis.location?.href, fetchFn = globalThis.fetch) {
  const res = await fetchFn(new URL('/api/webtransport', base), { cache: 'no-store' });
  if (!res.ok) throw new Error(`/api/webtransport answered ${res.status}`);
  const json = await res.json();
  if (typeof json?.url !== 'string') throw new Error('/api/webtransport: no url');
  const hashes = (json.serverCertificateHashes ?? []).map((h) => ({
    algorithm: h.algorithm,
    value: Uint8Array.from(atob(h.value), (c) => c.charCodeAt(0)),
  }));
  const websocket = typeof json.websocket === 'string' ? json.websocket : null;
  return { url: json.url, serverCertificateHashes: hashes, websocket };
}

// ---------------------------------------------------------------------------
// Carriers

/**
 * What a session does with a transport. A carrier is open when it is handed
 * to the session; {@link Carrier#start} then hands over what arrives until
 * the carrier closes.
 *
 * @typedef {object} CarrierHandlers
 * @property {(payload: Uint8Array) => void} frame one received frame's payload (an encoded ServerMsg)
 * @property {(bytes: Uint8Array) => void} datagram one received encoded Datagram
 * @property {(code: string, message: string) => void} error something the server sent that is not
 *   protocol (`BadServerFrame`: skipped; `ProtocolViolation`: the carrier closes itself with code 1)
 * @property {(level: 'debug'|'info'|'warn', message: string) => void} log
 *
 * @typedef {object} Carrier
 * @property {'webtransport'|'websocket'} kind
 * @property {string} url the session URL (without a join token)
 * @property {number|undefined} maxDatagramSize largest encoded Datagram it can carry, if known
 * @property {(handlers: CarrierHandlers) => Promise<{code: ?number, reason: string}>} start starts
 *   handing over frames and datagrams; resolves once the carrier has closed and everything it
 *   received has been handed over (`code`: a session close code the carrier itself learned, else null)
 * @property {(payload: Uint8Array) => Promise<void>} sendFrame sends one encoded ClientMsg (1 to 65,536 bytes)
 * @property {(bytes: Uint8Array) => Promise<void>} sendDatagram sends one encoded Datagram
 * @property {(code: number, reason: string) => void} close closes with a session close code
 */

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** A WebTransport session with its signaling stream. @implements {Carrier} */
class WebTransportCarrier {
  /**
   * Opens a session to `url` and its signaling stream. With `timeoutMs` > 0,
   * gives up when the session is not ready by then; gives up too when
   * `signal` aborts.
   * @param {(url: string, options: WebTransportOptions) => WebTransport} make
   * @param {string} url with the join token, if any
   * @param {string} shownUrl without it
   * @param {WebTransportOptions} options
   * @param {number} timeoutMs
   * @param {AbortSignal} signal
   * @returns {Promise<WebTransportCarrier>}
   */
  static async open(make, url, shownUrl, options, timeoutMs, signal) {
    const transport = make(url, options);
    // `closed` rejects too when `ready` does; and `ready` may reject after a timeout.
    transport.closed.catch(() => {});
    transport.ready.catch(() => {});
    let timer = null;
    let cancelled = null;
    try {
      const late = new Promise((_, reject) => {
        if (timeoutMs > 0) timer = setTimeout(() => reject(new Error(`WebTransport was not ready within ${timeoutMs} ms`)), timeoutMs);
        cancelled = () => reject(new Error('connecting was cancelled'));
        if (signal.aborted) cancelled();
        else signal.addEventListener('abort', cancelled, { once: true });
      });
      await Promise.race([transport.ready, late]);
      const stream = await Promise.race([transport.createBidirectionalStream(), late]);
      clearTimeout(timer);
      signal.removeEventListener('abort', cancelled);
      return new WebTransportCarrier(transport, stream, shownUrl);
    } catch (err) {
      clearTimeout(timer);
      signal.removeEventListener('abort', cancelled);
      try {
        transport.close();
      } catch {
        // already closed
      }
      throw err;
    }
  }

  constructor(transport, stream, url) {
    this.kind = 'webtransport';
    this.url = url;
    /** @private */ this.transport = transport;
    /** @private */ this.stream = stream;
    /** @private */ this.writer = stream.writable.getWriter();
    /** @private */ this.dgWriter = (transport.datagrams.createWritable?.() ?? transport.datagrams.writable).getWriter();
  }

  get maxDatagramSize() {
    return this.transport.datagrams?.maxDatagramSize;
  }

  async start(handlers) {
    const readDone = this.readFrames(this.stream.readable.getReader(), handlers);
    this.readDatagrams(this.transport.datagrams.readable.getReader(), handlers);
    const reason = await this.transport.closed.then(
      (info) => info?.reason ?? '',
      (err) => String(err?.message ?? err),
    );
    // The close and the last frames travel separately inside the browser: let
    // the signaling stream hand over what it still holds (above all the
    // server's Closing frame, whose code decides what happens next).
    await Promise.race([readDone, sleep(500)]);
    return { code: null, reason };
  }

  sendFrame(payload) {
    return this.writer.write(encodeFrame(payload));
  }

  sendDatagram(bytes) {
    return this.dgWriter.write(bytes);
  }

  close(code, reason) {
    try {
      this.transport.close({ closeCode: code, reason });
    } catch {
      // already closed
    }
  }

  /** @private */
  async readFrames(reader, handlers) {
    const frames = new FrameReader();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        frames.push(value);
        for (let payload = frames.next(); payload; payload = frames.next()) handlers.frame(payload);
      }
    } catch (err) {
      if (err instanceof FrameLengthError) {
        handlers.error('ProtocolViolation', err.message);
        this.close(CloseCode.PROTOCOL_VIOLATION, 'bad frame length');
        return;
      }
      handlers.log('debug', `signaling stream: ${err?.message ?? err}`);
    }
    // The stream ended: the session is of no use without it. (After a Closing
    // frame the server closes the transport itself; closing it here is harmless.)
    this.close(CloseCode.NORMAL, 'signaling stream ended');
  }

  /** @private */
  async readDatagrams(reader, handlers) {
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        handlers.datagram(value);
      }
    } catch (err) {
      handlers.log('debug', `datagrams: ${err?.message ?? err}`);
    }
  }
}

/**
 * A WebSocket session (protocol section 7): every binary message is one unit,
 * `0x00` + a frame's payload or `0x01` + a datagram. @implements {Carrier}
 */
class WebSocketCarrier {
  /**
   * Opens a WebSocket to `url`, offering the `quicmatch.v1` subprotocol;
   * gives up when `signal` aborts.
   * @param {(url: string, protocols: string[]) => WebSocket} make
   * @param {string} url with the join token, if any
   * @param {string} shownUrl without it
   * @param {AbortSignal} signal
   * @returns {Promise<WebSocketCarrier>}
   */
  static open(make, url, shownUrl, signal) {
    return new Promise((resolve, reject) => {
      if (signal.aborted) {
        reject(new Error('connecting was cancelled'));
        return;
      }
      const ws = make(url, [WEBSOCKET_SUBPROTOCOL]);
      const carrier = new WebSocketCarrier(ws, shownUrl);
      const settle = () => {
        ws.removeEventListener('open', opened);
        ws.removeEventListener('close', failed);
        signal.removeEventListener('abort', cancelled);
      };
      const opened = () => {
        settle();
        resolve(carrier);
      };
      // An `error` event is always followed by `close`; the browser tells no more.
      const failed = (e) => {
        settle();
        reject(new Error(`WebSocket ${shownUrl} closed before it opened (status ${e.code})`));
      };
      const cancelled = () => {
        settle();
        carrier.close(CloseCode.NORMAL, 'connecting was cancelled');
        reject(new Error('connecting was cancelled'));
      };
      ws.addEventListener('open', opened, { once: true });
      ws.addEventListener('close', failed, { once: true });
      signal.addEventListener('abort', cancelled, { once: true });
    });
  }

  constructor(ws, url) {
    this.kind = 'websocket';
    this.url = url;
    /** @private */ this.ws = ws;
    ws.binaryType = 'arraybuffer';
    // Messages are events: keep any that come before start().
    /** @private @type {MessageEvent[]|null} */ this.early = [];
    /** @private @type {?CarrierHandlers} */ this.handlers = null;
    ws.addEventListener('message', (e) => {
      if (this.handlers) this.onMessage(e);
      else this.early.push(e);
    });
    /** @private */
    this.closed = new Promise((resolve) => {
      ws.addEventListener('close', (e) => resolve(e), { once: true });
    });
  }

  /** A unit carries up to 65,536 bytes after its tag. */
  get maxDatagramSize() {
    return MAX_FRAME_LEN;
  }

  async start(handlers) {
    // Hand over what came early once the session has finished taking this
    // carrier (message events are tasks: none can come in between).
    await null;
    this.handlers = handlers;
    for (const e of this.early.splice(0)) this.onMessage(e);
    this.early = null;
    // Every message event comes before the close event: nothing is left behind.
    const e = await this.closed;
    const status = e.code;
    const code = status > WEBSOCKET_CLOSE_BASE && status < WEBSOCKET_CLOSE_BASE + 1000 ? status - WEBSOCKET_CLOSE_BASE : null;
    return { code, reason: e.reason || `WebSocket closed with status ${status}` };
  }

  sendFrame(payload) {
    return this.sendUnit(UNIT_FRAME, payload);
  }

  sendDatagram(bytes) {
    return this.sendUnit(UNIT_DATAGRAM, bytes);
  }

  close(code, reason) {
    try {
      // A close reason is at most 123 bytes of UTF-8.
      let short = reason;
      while (utf8Length(short) > 123) short = short.slice(0, -1);
      this.ws.close(WEBSOCKET_CLOSE_BASE + code, short);
    } catch {
      // already closed
    }
  }

  /** @private */
  sendUnit(tag, bytes) {
    const unit = new Uint8Array(1 + bytes.length);
    unit[0] = tag;
    unit.set(bytes, 1);
    try {
      // Sent in order; a socket that is closing drops it, as a lost datagram.
      this.ws.send(unit);
      return Promise.resolve();
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /** @private @param {MessageEvent} e */
  onMessage(e) {
    const h = this.handlers;
    if (!(e.data instanceof ArrayBuffer)) {
      h.error('BadServerFrame', 'a text message on the WebSocket');
      return;
    }
    const unit = new Uint8Array(e.data);
    if (unit.length > 1 && unit[0] === UNIT_FRAME) h.frame(unit.subarray(1));
    else if (unit.length > 1 && unit[0] === UNIT_DATAGRAM) h.datagram(unit.subarray(1));
    else h.error('BadServerFrame', unit.length > 1 ? `unknown unit tag 0x${unit[0].toString(16)}` : 'an empty unit');
  }
}

/**
 * Set once, for the page's life, when WebTransport did not work here (not
 * ready in time, or failed) while the WebSocket did: sessions in `'auto'`
 * mode then go straight to the WebSocket. Holds why, for the `transport` event.
 * @type {?string}
 */
let webTransportFallback = null;

/**
 * @typedef {object} SessionOptions
 * @property {string|URL} [base] where `/api/webtransport` is fetched from (default: the page's URL)
 * @property {'auto'|'webtransport'|'websocket'} [transport] which carrier to use (default `'auto'`):
 *   `'auto'` uses WebTransport when the browser has it and falls back to the WebSocket when it is
 *   missing, fails or is not ready within `webTransportTimeoutMs` (remembered for the page's life);
 *   the other two force one
 * @property {number} [webTransportTimeoutMs] in `'auto'` mode, how long a WebTransport session may take
 *   to become ready before the WebSocket is tried instead (default 3000)
 * @property {string|URL} [websocketUrl] the WebSocket fallback's URL (`ws://HOST:PORT/signal`); by default
 *   the `websocket` field of `/api/webtransport`, or, when that cannot be had and this module was loaded
 *   from the same origin as `base`, `ws(s)://` that origin's host `/signal`
 * @property {string|(() => string|Promise<string>)} [token] a join token for a server that requires one
 *   (`--jwt-secret`/`--jwt-public-key`), or a function that fetches a fresh one from the site's backend;
 *   the function is called before every connection attempt, since tokens expire
 * @property {number} [connectTimeoutMs] how long `connect()` and `reconnectNow()` wait by default (default 15000)
 * @property {number} [joinTimeoutMs] how long `join()` waits for `Waiting` or `Matched` by default (default 15000)
 * @property {number} [initialBackoffMs] first reconnect delay after a lost connection (default 1000)
 * @property {number} [maxBackoffMs] longest reconnect delay (default 30000)
 * @property {number} [capacityBackoffMs] shortest delay after `Closing` code 4, server at capacity (default 5000)
 * @property {number} [chatResendMs] how long a chat waits for its ack before it is sent again (default 700)
 * @property {number} [chatMaxResends] resends before a chat is given up as lost (default 4)
 * @property {number} [earlyChatMs] how long a chat datagram for an unknown match is kept, in case its `Matched` frame is still on the way (default 3000)
 * @property {number} [keepAliveMs] interval of keep-alive pings while connected, 0 for none (default 20000);
 *   a keep-alive ping unanswered within `pingTimeoutMs` ends the connection as dead, and the session reconnects
 * @property {number} [pingTimeoutMs] when a `ping()` gives up (default 10000)
 * @property {number} [probeTimeoutMs] after the browser goes online or offline, or the page becomes visible,
 *   the session pings; no answer within this ends the connection as dead (default 5000)
 * @property {(url: string, options: WebTransportOptions) => WebTransport} [webTransport] makes WebTransport
 *   sessions (default `new WebTransport(url, options)`); for tests and wrappers
 * @property {(url: string, protocols: string[]) => WebSocket} [webSocket] makes WebSockets (default
 *   `new WebSocket(url, protocols)`)
 * @property {typeof fetch} [fetch] fetches `/api/webtransport` (default the global `fetch`)
 * @property {?EventTarget} [environment] where `online`/`offline` are listened for, and whose `document`
 *   gives `visibilitychange` (default `globalThis`; null for none)
 * @property {(level: 'debug'|'info'|'warn', message: string) => void} [logger] receives the session's diagnostics
 */

/** @type {Required<Omit<SessionOptions, 'base'|'logger'|'token'|'websocketUrl'|'webTransport'|'webSocket'|'fetch'|'environment'>>} */
const DEFAULTS = {
  transport: 'auto',
  webTransportTimeoutMs: 3000,
  connectTimeoutMs: 15000,
  joinTimeoutMs: 15000,
  initialBackoffMs: 1000,
  maxBackoffMs: 30000,
  capacityBackoffMs: 5000,
  chatResendMs: 700,
  chatMaxResends: 4,
  earlyChatMs: 3000,
  keepAliveMs: 20000,
  pingTimeoutMs: 10000,
  probeTimeoutMs: 5000,
};

/** Most chat datagrams kept while waiting for their `Matched` frame. */
const EARLY_CHAT_LIMIT = 32;
/** Received chat seqs remembered per match for de-duplication. */
const SEEN_SEQ_LIMIT = 4096;
/** Server errors that answer a `Join` (protocol section 4.1): they settle the pending `join()`. */
const JOIN_REFUSALS = new Set(['InvalidProfile', 'AlreadyJoined', 'ServerBusy']);

/** Whether this browser has a transport for the `transport` option. */
function hasCarrier(transport, hasWebTransport, hasWebSocket) {
  if (transport === 'webtransport') return hasWebTransport;
  if (transport === 'websocket') return hasWebSocket;
  return hasWebTransport || hasWebSocket;
}

/**
 * One quicmatch session over WebTransport, or over the WebSocket fallback.
 *
 * Requests return promises that always settle: they resolve, or reject with a
 * {@link QuicmatchError}; each takes `{signal, timeoutMs}`. What no promise
 * answers comes as an `error` event, whose detail is a QuicmatchError too.
 *
 * Events (all `CustomEvent`s; the payload is in `event.detail`):
 * - `statechange` `{state, previous}`: {@link QuicmatchSession#state} changed.
 * - `transport` `{transport, url, fallback, reason}`: which carrier this connection uses, just
 *   before every `open`: `transport` is `'webtransport'` or `'websocket'` (as {@link QuicmatchSession#transport}),
 *   `fallback` is true when `'auto'` mode chose the WebSocket, and `reason` says why the WebSocket
 *   is used (null for WebTransport).
 * - `open` `{url, transport}`: the transport and signaling stream are up (after every (re)connect).
 * - `waiting` `{queuePosition}`: queued at this 1-based position.
 * - `matched` `{matchId, partner, initiator, iceServers}`: `iceServers` is ready for `new RTCPeerConnection({iceServers})`.
 * - `offer` / `answer` `{matchId, sdp}`: the partner's session description (only for the current match).
 * - `ice` `{matchId, candidate}`: an `RTCIceCandidateInit`; `candidate.candidate === ''` is end-of-candidates.
 * - `chat` `{matchId, seq, text}`: a chat line from the partner, once per seq.
 * - `chat-ack` `{matchId, seq, rttMs}`: the partner received our chat `seq`.
 * - `chat-failed` `{matchId, seq, text}`: no ack after all resends (or the match ended first).
 * - `partner-disconnected` `{matchId, reason}`: the match is over; `reason` is `'partner-left'`, or
 *   `'connection-lost'` when our own connection dropped while matched. The server re-queues us
 *   after `'partner-left'`; after a lost connection the session re-joins once it reconnects.
 * - `pong` `{nonce, rttMs}`.
 * - `closing` `{code, reason}`: the server's last frame before it closes the session.
 * - `error`: a {@link QuicmatchError} no promise carries: a server `Error` that answers no
 *   `join()`, a refused `sendOffer`/`sendAnswer`/`sendIce`, `BadServerFrame`,
 *   `ProtocolViolation`, and `ConnectFailed` for each failed connection attempt.
 * - `close` `{code, reason, byUser, reconnectInMs}`: the transport is gone; `code` is the
 *   `Closing` code if the server sent one, else, over a WebSocket closed with status 4001 to 4999,
 *   that status minus 4000, else null; `reconnectInMs` is null when the session will not
 *   reconnect by itself.
 */
export class QuicmatchSession extends EventTarget {
  /** @type {'disconnected'|'connecting'|'reconnecting'|'idle'|'waiting'|'matched'|'closed'} */
  #state = 'disconnected';
  /** @type {U64|null} */
  #matchId = null;
  /** @type {Profile|null} */
  #partner = null;
  #initiator = false;
  /** @type {Profile|null} */
  #profile = null;
  #joined = false;

  /**
   * Whether this browser can run a session with this `transport` option:
   * `'auto'` needs WebTransport or WebSocket, the others need theirs.
   * @param {'auto'|'webtransport'|'websocket'} [transport]
   * @returns {boolean}
   */
  static isSupported(transport = 'auto') {
    return hasCarrier(transport, typeof globalThis.WebTransport === 'function', typeof globalThis.WebSocket === 'function');
  }

  /** @param {SessionOptions} [options] */
  constructor(options = {}) {
    super();
    const { base, logger, token, websocketUrl, webTransport, webSocket, fetch: fetchFn, environment, ...rest } = options;
    /** @private */
    this.token = token;
    /** @private */
    this.opts = { ...DEFAULTS, ...rest };
    if (!['auto', 'webtransport', 'websocket'].includes(this.opts.transport)) {
      throw new RangeError(`transport must be 'auto', 'webtransport' or 'websocket', not ${describe(this.opts.transport)}`);
    }
    /** @private */
    this.websocketUrl = websocketUrl === undefined || websocketUrl === null ? null : String(websocketUrl);
    /** @private */
    this.base = base ?? globalThis.location?.href;
    /** @private */
    this.logger = logger ?? (() => {});
    /** @private Factories; null means the browser's own (looked up when used). */
    this.makeWebTransport = webTransport ?? null;
    /** @private */ this.makeWebSocket = webSocket ?? null;
    /** @private */ this.fetchFn = fetchFn ?? ((...args) => globalThis.fetch(...args));
    /** @private @type {?EventTarget} */
    this.environment = environment === undefined ? globalThis : environment;
    /** @private @type {null | {carrier: Carrier}} */
    this.conn = null;
    /** @private */ this.running = false;
    /** @private */ this.userClosed = false;
    /** @private */ this.failures = 0;
    /** @private @type {?{code: number, reason: string}} */ this.closing = null;
    /** @private */ this.retryTimer = null;
    /** @private */ this.keepAliveTimer = null;
    /**
     * @private Aborts the connection attempt under way; null when none is. An
     * attempt that finds another controller here (or none) has been disowned.
     * @type {?AbortController}
     */
    this.attemptAbort = null;
    /** @private */ this.nextSeq = 1;
    /** @private */ this.nextNonce = 1;
    /** @private @type {Map<number, {text: string, bytes: Uint8Array, matchId: U64, resends: number, firstSentAt: number, timer: any, done: any}>} */
    this.pendingChats = new Map();
    /** @private @type {Set<number>} */ this.seenSeqs = new Set();
    /** @private @type {{dg: Datagram, at: number}[]} */ this.earlyChats = [];
    /** @private @type {Map<U64, {done: any, sentAt: number}>} */
    this.pendingPings = new Map();
    /** @private Callers of connect()/reconnectNow() waiting for the open. */ this.openWaiters = new Set();
    /** @private Callers of join() waiting for Waiting or Matched. */ this.joinWaiters = new Set();
    /** @private A Join went out on this connection and is not answered yet. */ this.joinSent = false;
    /**
     * @private The nonce of the Ping sent right after a Leave: until its Pong,
     * Waiting and Matched are leftovers from before the Leave.
     * @type {?number}
     */
    this.leaveBarrier = null;
    /** @private */ this.probing = false;
    /** @private */ this.listening = false;
    /** @private */ this.onNetworkChange = (e) => this.networkChanged(e.type === 'online' ? 'the browser went online' : 'the browser went offline');
    /** @private */
    this.onVisibilityChange = () => {
      if (this.environment?.document?.visibilityState === 'visible') this.networkChanged('the page became visible');
    };
  }

  /**
   * `'disconnected'` (not started, or stopped for good), `'connecting'` (the first attempt),
   * `'reconnecting'` (the connection was lost or an attempt failed: waiting for, or making, the
   * next attempt), `'idle'` (connected, not joined), `'waiting'`, `'matched'` or `'closed'`
   * (after {@link close}).
   * @returns {'disconnected'|'connecting'|'reconnecting'|'idle'|'waiting'|'matched'|'closed'}
   */
  get state() {
    return this.#state;
  }

  /** The current match's id, or null. @returns {U64|null} */
  get matchId() {
    return this.#matchId;
  }

  /** The current partner's profile, or null. @returns {Profile|null} */
  get partner() {
    return this.#partner;
  }

  /** Whether this side creates the offer in the current match. @returns {boolean} */
  get initiator() {
    return this.#initiator;
  }

  /** The profile of the last {@link join}, used again after a reconnect. @returns {Profile|null} */
  get profile() {
    return this.#profile;
  }

  /** True between {@link join} and {@link leave}: the session wants to be queued or matched. @returns {boolean} */
  get joined() {
    return this.#joined;
  }

  /**
   * The carrier of the open connection: `'webtransport'` or `'websocket'`;
   * null while not connected.
   * @returns {'webtransport'|'websocket'|null}
   */
  get transport() {
    return this.conn?.carrier.kind ?? null;
  }

  /**
   * Starts connecting (if not already connected or connecting) and resolves
   * once the session is open; reconnects happen by themselves afterwards.
   * Rejects with `Unsupported`, `Closed`, `ServerClosed` (the server said not
   * to come back), `Aborted` or `Timeout` (default `connectTimeoutMs`); after
   * the last two the session stops trying, unless another call still waits.
   * @param {{signal?: AbortSignal, timeoutMs?: number}} [opts]
   * @returns {Promise<void>}
   */
  connect(opts = {}) {
    const refused = this.refusal();
    if (refused) return Promise.reject(refused);
    if (this.conn) return Promise.resolve();
    const wait = this.waitFor(this.openWaiters, 'connecting', opts, this.opts.connectTimeoutMs, () => this.stopIfUnwanted());
    this.run();
    return wait;
  }

  /**
   * Skips the back-off wait and connects now (or starts again after the
   * session stopped); settles as {@link connect}.
   * @param {{signal?: AbortSignal, timeoutMs?: number}} [opts]
   * @returns {Promise<void>}
   */
  reconnectNow(opts = {}) {
    const refused = this.refusal();
    if (refused) return Promise.reject(refused);
    if (this.conn) return Promise.resolve();
    const wait = this.waitFor(this.openWaiters, 'connecting', opts, this.opts.connectTimeoutMs, () => this.stopIfUnwanted());
    if (this.running) this.retryNow();
    else this.run();
    return wait;
  }

  /**
   * Asks to be matched with `profile` (and remembers it, to re-join after a
   * reconnect); connects first if needed. Resolves with the server's first
   * answer: `{type: 'waiting', queuePosition}` or `{type: 'matched', ...}` as
   * the `matched` event. Rejects with the server's refusal (`InvalidProfile`,
   * `ServerBusy`, `AlreadyJoined`: `fromServer` true), `InvalidArgument`,
   * `Left` (a `leave()` came first), `Closed`, `ServerClosed`, `Unsupported`,
   * `Aborted` or `Timeout` (default `joinTimeoutMs`); after the last two the
   * session leaves.
   * @param {Profile} profile
   * @param {{signal?: AbortSignal, timeoutMs?: number}} [opts]
   * @returns {Promise<JoinAnswer>}
   */
  join(profile, opts = {}) {
    const refused = this.refusal();
    if (refused) return Promise.reject(refused);
    if (this.#joined && (this.#state === 'waiting' || this.#state === 'matched')) {
      return Promise.reject(new QuicmatchError('AlreadyJoined', `already ${this.#state}: leave() first`));
    }
    /** @type {Profile} */
    let clean;
    try {
      clean = { name: profile.name, age: profile.age, gender: profile.gender };
      // Encode now so a profile that cannot be sent is refused here, to the caller.
      encodeClientMsg({ type: 'Join', profile: clean });
    } catch (err) {
      return Promise.reject(new QuicmatchError('InvalidArgument', `this profile cannot be sent: ${err?.message ?? err}`, { cause: err }));
    }
    const wait = this.waitFor(this.joinWaiters, 'joining', opts, this.opts.joinTimeoutMs, () => {
      if (this.joinWaiters.size > 0) return;
      this.leave();
      this.stopIfUnwanted();
    });
    this.#profile = clean;
    this.#joined = true;
    if (!this.conn) this.run();
    else if (!this.joinSent) this.sendJoin();
    return wait;
  }

  /**
   * Ends the current match and asks for someone new (the server re-queues
   * this session). While waiting it keeps waiting.
   */
  stop() {
    // Without a connection there is no match to end; a reconnect re-joins anyway.
    if (!this.conn) return;
    this.send({ type: 'Stop' });
    if (this.#state === 'matched') {
      this.endMatch();
      this.setState('waiting');
    }
  }

  /**
   * Ends any match, leaves the queue; the session stays connected and idle.
   * A pending `join()` rejects with `Left`; a `Waiting` or `Matched` the server
   * sent before it saw the Leave is ignored.
   */
  leave() {
    this.#joined = false;
    this.joinSent = false;
    this.settle(this.joinWaiters, (w) => w.reject(new QuicmatchError('Left', 'left before the server answered the join')));
    if (!this.conn) return; // not connected: nothing to leave, and no re-join will happen
    this.send({ type: 'Leave' });
    // Frames both ways are in order: once this Ping's Pong is back, the server has seen the Leave.
    const nonce = this.nextNonce++;
    if (this.send({ type: 'Ping', nonce })) this.leaveBarrier = nonce;
    this.endMatch();
    this.setState('idle');
  }

  /** Sends our WebRTC offer to the current partner. @param {string} sdp @returns {boolean} whether it was sent */
  sendOffer(sdp) {
    return this.relay('Offer', { sdp }, typeof sdp === 'string' && utf8Length(sdp) <= MAX_SDP_LEN);
  }

  /** Sends our WebRTC answer to the current partner. @param {string} sdp @returns {boolean} whether it was sent */
  sendAnswer(sdp) {
    return this.relay('Answer', { sdp }, typeof sdp === 'string' && utf8Length(sdp) <= MAX_SDP_LEN);
  }

  /**
   * Sends one of our ICE candidates to the current partner; `null` (what
   * `onicecandidate` gives at the end) is sent as end-of-candidates.
   * @param {RTCIceCandidateInit|RTCIceCandidate|null} init
   * @returns {boolean} whether it was sent
   */
  sendIce(init) {
    const c = init && typeof init.toJSON === 'function' ? init.toJSON() : init ?? {};
    /** @type {WireIceCandidate} */
    const candidate = {
      candidate: c.candidate ?? '',
      sdp_mid: c.sdpMid ?? null,
      sdp_m_line_index: c.sdpMLineIndex ?? null,
      username_fragment: c.usernameFragment ?? null,
    };
    const fits = [candidate.candidate, candidate.sdp_mid, candidate.username_fragment]
      .every((s) => s === null || (typeof s === 'string' && utf8Length(s) <= MAX_ICE_FIELD_LEN));
    return this.relay('Ice', { candidate }, fits);
  }

  /**
   * Sends a chat line to the current partner as a datagram, resending it
   * until acknowledged (at most `chatMaxResends` times). Resolves when the
   * partner acknowledged it; rejects with `EmptyChat`, `TooLarge`,
   * `DatagramTooLarge`, `NotConnected`, `NotMatched`, `InvalidArgument`,
   * `ChatFailed` (no ack after every resend, or the match ended first),
   * `Closed`, `Aborted` or `Timeout` (none by default).
   * @param {string} text 1 to 1,000 bytes of UTF-8
   * @param {{signal?: AbortSignal, timeoutMs?: number}} [opts]
   * @returns {Promise<{matchId: U64, seq: number, rttMs: number}>}
   */
  chat(text, opts = {}) {
    const refuse = (code, message) => Promise.reject(new QuicmatchError(code, message));
    if (this.userClosed) return refuse('Closed', 'the session was closed');
    if (typeof text !== 'string') return refuse('InvalidArgument', 'chat text must be a string');
    const len = utf8Length(text);
    if (len === 0) return refuse('EmptyChat', 'chat text is empty');
    if (len > MAX_CHAT_LEN) return refuse('TooLarge', `chat text is ${len} bytes, over ${MAX_CHAT_LEN}`);
    if (!this.conn) return refuse('NotConnected', 'not connected');
    if (this.#state !== 'matched') return refuse('NotMatched', 'not matched with anyone');
    const seq = this.nextSeq;
    const matchId = this.#matchId;
    const bytes = encodeDatagram({ type: 'Chat', match_id: matchId, seq, text });
    const max = this.conn.carrier.maxDatagramSize;
    if (typeof max === 'number' && bytes.length > max) {
      return refuse('DatagramTooLarge', `chat needs ${bytes.length} bytes, the connection carries ${max} per datagram`);
    }
    this.nextSeq = (this.nextSeq + 1) % 0x1_0000_0000;
    const entry = { text, bytes, matchId, resends: 0, firstSentAt: performance.now(), timer: null, done: null };
    entry.done = deferred(opts, 'chat', () => {
      clearTimeout(entry.timer);
      if (this.pendingChats.get(seq) === entry) this.pendingChats.delete(seq);
    });
    this.pendingChats.set(seq, entry);
    this.sendDatagram(bytes);
    this.scheduleResend(seq, entry);
    return entry.done.promise;
  }

  /**
   * Sends `Ping` and resolves with the round-trip time in milliseconds.
   * Rejects with `NotConnected` (also when the connection drops first),
   * `PingTimeout` (default `pingTimeoutMs`), `Closed` or `Aborted`.
   * @param {{signal?: AbortSignal, timeoutMs?: number}} [opts]
   * @returns {Promise<number>}
   */
  ping(opts = {}) {
    if (this.userClosed) return Promise.reject(new QuicmatchError('Closed', 'the session was closed'));
    if (!this.conn) return Promise.reject(new QuicmatchError('NotConnected', 'not connected'));
    const nonce = this.nextNonce++;
    const timeoutMs = opts.timeoutMs ?? this.opts.pingTimeoutMs;
    const done = deferred({ signal: opts.signal, timeoutMs }, 'ping', () => this.pendingPings.delete(nonce), 'PingTimeout');
    this.pendingPings.set(nonce, { done, sentAt: performance.now() });
    this.send({ type: 'Ping', nonce });
    return done.promise;
  }

  /**
   * Closes the session for good (close code 0); it will not reconnect. Every
   * pending promise rejects with `Closed`.
   */
  close() {
    if (this.userClosed) return;
    this.userClosed = true;
    this.#joined = false;
    this.halt();
    const closed = () => new QuicmatchError('Closed', 'the session was closed');
    this.settle(this.openWaiters, (w) => w.reject(closed()));
    this.settle(this.joinWaiters, (w) => w.reject(closed()));
    this.endMatchChats(closed);
    const pings = [...this.pendingPings.values()];
    this.pendingPings.clear();
    for (const p of pings) p.done.reject(closed());
    const conn = this.conn;
    this.dropConnection();
    conn?.carrier.close(CloseCode.NORMAL, 'closed by user');
    this.setState('closed');
    this.emit('close', { code: null, reason: 'closed by user', byUser: true, reconnectInMs: null });
  }

  // -- connection -----------------------------------------------------------

  /** @private Why a request cannot even start, or null. */
  refusal() {
    if (this.userClosed) return new QuicmatchError('Closed', 'the session was closed');
    if (!hasCarrier(this.opts.transport, this.hasWebTransport(), this.hasWebSocket())) {
      const needs = { auto: 'WebTransport or WebSocket', webtransport: 'WebTransport', websocket: 'WebSocket' }[this.opts.transport];
      return new QuicmatchError('Unsupported', `this browser has no ${needs}`);
    }
    return null;
  }

  /** @private */
  hasWebTransport() {
    return this.makeWebTransport !== null || typeof globalThis.WebTransport === 'function';
  }

  /** @private */
  hasWebSocket() {
    return this.makeWebSocket !== null || typeof globalThis.WebSocket === 'function';
  }

  /**
   * @private A promise in `set` until settled, or until it gives up (then
   * `onGiveUp` runs); `opts.timeoutMs` undefined means `defaultTimeoutMs`.
   */
  waitFor(set, what, opts, defaultTimeoutMs, onGiveUp) {
    const w = deferred({ signal: opts.signal, timeoutMs: opts.timeoutMs ?? defaultTimeoutMs }, what, () => {
      set.delete(w);
      onGiveUp();
    });
    set.add(w);
    return w.promise;
  }

  /** @private Settles and forgets every waiter in `set`. */
  settle(set, how) {
    const waiters = [...set];
    set.clear();
    for (const w of waiters) how(w);
  }

  /** @private Starts the connection loop if it is not running. */
  run() {
    if (this.running) return;
    this.running = true;
    this.failures = 0;
    this.listen();
    this.attempt();
  }

  /** @private Nobody waits for a connection any more and none is open: stop trying. */
  stopIfUnwanted() {
    if (this.conn || !this.running || this.openWaiters.size > 0 || this.joinWaiters.size > 0) return;
    this.log('info', 'nobody waits for the connection any more: stopped connecting');
    this.halt();
    this.setState('disconnected');
  }

  /** @private Stops connecting: no attempt under way, none scheduled. */
  halt() {
    this.running = false;
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.attemptAbort?.abort();
    this.attemptAbort = null;
    this.unlisten();
  }

  /** @private Skips the back-off wait, if the session is waiting in it. */
  retryNow() {
    if (!this.running || this.conn || this.attemptAbort) return;
    clearTimeout(this.retryTimer);
    this.failures = 0;
    this.attempt();
  }

  /** @private One connection attempt; on any failure it schedules the next. */
  async attempt() {
    this.retryTimer = null;
    if (this.userClosed || !this.running || this.attemptAbort) return;
    const abort = new AbortController();
    this.attemptAbort = abort;
    this.closing = null;
    if (this.#state !== 'reconnecting') this.setState('connecting');
    let opened;
    try {
      opened = await this.openCarrier(abort.signal);
    } catch (err) {
      if (this.attemptAbort !== abort) return; // stopped meanwhile
      this.attemptAbort = null;
      const message = String(err?.message ?? err);
      this.emit('error', new QuicmatchError('ConnectFailed', message, { cause: err }));
      this.afterClose(null, message);
      return;
    }
    const { carrier, fallback, reason } = opened;
    if (this.attemptAbort !== abort) {
      carrier.close(CloseCode.NORMAL, this.userClosed ? 'closed by user' : 'no longer wanted');
      return;
    }
    this.attemptAbort = null;
    const conn = { carrier };
    this.conn = conn;
    const mine = (f) => (...args) => {
      if (this.conn === conn) f(...args);
    };
    carrier
      .start({
        frame: mine((payload) => this.onFrame(payload)),
        datagram: mine((bytes) => this.onDatagram(bytes)),
        error: mine((code, message) => this.emit('error', new QuicmatchError(code, message))),
        log: (level, message) => this.log(level, message),
      })
      .then(
        ({ code, reason: why }) => this.onCarrierClosed(conn, code, why),
        (err) => this.onCarrierClosed(conn, null, String(err?.message ?? err)),
      );
    this.log('info', `connected to ${carrier.url} (${carrier.kind}${reason ? `: ${reason}` : ''})`);
    this.setState('idle');
    // The server sees the stream only once bytes flow on it; a Ping is a
    // harmless first frame for a session that is not joining yet.
    this.keepAlive(conn);
    if (this.#joined && this.#profile) this.sendJoin();
    if (this.opts.keepAliveMs > 0) {
      this.keepAliveTimer = setInterval(() => this.keepAlive(conn), this.opts.keepAliveMs);
    }
    this.emit('transport', { transport: carrier.kind, url: carrier.url, fallback, reason });
    this.emit('open', { url: carrier.url, transport: carrier.kind });
    this.settle(this.openWaiters, (w) => w.resolve());
  }

  /** @private A Ping that ends the connection as dead when it goes unanswered. */
  keepAlive(conn, timeoutMs = undefined, why = 'no answer to a keep-alive ping') {
    this.ping({ timeoutMs }).catch((err) => {
      if (err?.code === 'PingTimeout') this.declareDead(conn, why);
    });
  }

  /** @private The connection stopped answering: drop it and reconnect. */
  declareDead(conn, why) {
    if (this.conn !== conn) return;
    this.log('warn', `${why}: the connection is dead, reconnecting`);
    this.onCarrierClosed(conn, null, why);
    conn.carrier.close(CloseCode.NORMAL, why);
  }

  /**
   * @private The network or the page's visibility changed: a connection that
   * may have died meanwhile is probed with a Ping; a session waiting to
   * reconnect tries at once.
   */
  networkChanged(why) {
    if (!this.running && !this.conn) return;
    this.log('info', why);
    const conn = this.conn;
    if (!conn) {
      this.retryNow();
      return;
    }
    if (this.probing) return;
    this.probing = true;
    this.ping({ timeoutMs: this.opts.probeTimeoutMs })
      .catch((err) => {
        if (err?.code === 'PingTimeout') this.declareDead(conn, `no answer to a ping after ${why}`);
      })
      .finally(() => {
        this.probing = false;
      });
  }

  /** @private Listens for the network and the page's visibility while the session runs. */
  listen() {
    const env = this.environment;
    if (this.listening || typeof env?.addEventListener !== 'function') return;
    this.listening = true;
    env.addEventListener('online', this.onNetworkChange);
    env.addEventListener('offline', this.onNetworkChange);
    env.document?.addEventListener?.('visibilitychange', this.onVisibilityChange);
  }

  /** @private */
  unlisten() {
    if (!this.listening) return;
    this.listening = false;
    const env = this.environment;
    env.removeEventListener('online', this.onNetworkChange);
    env.removeEventListener('offline', this.onNetworkChange);
    env.document?.removeEventListener?.('visibilitychange', this.onVisibilityChange);
  }

  /**
   * @private Opens the carrier this attempt uses, per the `transport` option:
   * in `'auto'` mode WebTransport when the browser has it and it has not
   * failed on this page before, the WebSocket when not, or when WebTransport
   * fails or is not ready in time.
   * @param {AbortSignal} signal aborts the attempt
   * @returns {Promise<{carrier: Carrier, fallback: boolean, reason: ?string}>}
   */
  async openCarrier(signal) {
    const mode = this.opts.transport;
    const hasWebTransport = this.hasWebTransport();
    const makeWebTransport = this.makeWebTransport ?? ((url, options) => new globalThis.WebTransport(url, options));
    const makeWebSocket = this.makeWebSocket ?? ((url, protocols) => new globalThis.WebSocket(url, protocols));
    // Why the WebSocket is the first choice, if it is.
    let direct = null;
    if (mode === 'websocket') direct = 'chosen by the transport option';
    else if (mode === 'auto' && !hasWebTransport) direct = 'this browser has no WebTransport';
    else if (mode === 'auto' && webTransportFallback) direct = `WebTransport did not work earlier on this page (${webTransportFallback})`;

    // An explicit WebSocket URL spares the lookup when nothing else needs it.
    let info = null;
    let infoError = null;
    if (!(direct && this.websocketUrl)) {
      try {
        info = await fetchTransportInfo(this.base, this.fetchFn);
      } catch (err) {
        if (!direct && mode === 'webtransport') throw err;
        infoError = err;
      }
    }
    const token = typeof this.token === 'function' ? await this.token() : this.token;
    if (signal.aborted) throw new Error('connecting was cancelled');
    const withToken = (url) => (token ? `${url}${url.includes('?') ? '&' : '?'}token=${encodeURIComponent(token)}` : url);
    const overWebSocket = async (reason, fallback) => {
      const url = this.webSocketUrlFrom(info);
      if (!url) {
        throw new Error(`no WebSocket URL (${infoError ? String(infoError.message ?? infoError) : '/api/webtransport names none'}; see the websocketUrl option)`);
      }
      return { carrier: await WebSocketCarrier.open(makeWebSocket, withToken(url), url, signal), fallback, reason };
    };

    if (direct) return overWebSocket(direct, mode === 'auto');
    if (!info) {
      // 'auto' without the server's answer: no WebTransport URL, but a known
      // WebSocket URL may still work. Not remembered: WebTransport did not fail.
      if (!this.webSocketUrlFrom(null)) throw infoError;
      return overWebSocket(`/api/webtransport failed: ${infoError?.message ?? infoError}`, true);
    }
    const options = info.serverCertificateHashes.length ? { serverCertificateHashes: info.serverCertificateHashes } : {};
    const overWebTransport = (timeoutMs) => WebTransportCarrier.open(makeWebTransport, withToken(info.url), info.url, options, timeoutMs, signal);
    if (mode === 'webtransport') {
      return { carrier: await overWebTransport(0), fallback: false, reason: null };
    }
    let failure;
    try {
      return { carrier: await overWebTransport(this.opts.webTransportTimeoutMs), fallback: false, reason: null };
    } catch (err) {
      failure = String(err?.message ?? err);
    }
    if (signal.aborted || !this.webSocketUrlFrom(info)) throw new Error(failure);
    this.log('info', `WebTransport failed (${failure}); trying the WebSocket`);
    let opened;
    try {
      opened = await overWebSocket(failure, true);
    } catch (err) {
      // Both failed: most likely the server is away, not WebTransport at fault.
      throw new Error(`WebTransport: ${failure}; WebSocket: ${err?.message ?? err}`);
    }
    // The WebSocket works where WebTransport did not: stay with it for the page's life.
    webTransportFallback = failure;
    return opened;
  }

  /**
   * @private The WebSocket URL: the `websocketUrl` option, else the server's
   * answer, else (when the module was loaded from `base`'s origin, i.e. the
   * sidecar serves it) `ws(s)://` that host `/signal`; null if none.
   * @param {?TransportInfo} info
   * @returns {?string}
   */
  webSocketUrlFrom(info) {
    if (this.websocketUrl) return this.websocketUrl;
    if (info?.websocket) return info.websocket;
    try {
      const base = new URL(this.base);
      if (new URL(import.meta.url).origin !== base.origin || !/^https?:$/.test(base.protocol)) return null;
      return `${base.protocol === 'https:' ? 'wss:' : 'ws:'}//${base.host}${SIGNAL_PATH}`;
    } catch {
      return null;
    }
  }

  /** @private @param {Uint8Array} payload one frame's payload */
  onFrame(payload) {
    let msg;
    try {
      msg = decodeServerMsg(payload);
    } catch (err) {
      this.emit('error', new QuicmatchError('BadServerFrame', String(err.message), { cause: err }));
      return;
    }
    this.onServerMsg(msg);
  }

  /** @private The carrier has closed: `code` is one it learned itself (a WebSocket close status), else null. */
  onCarrierClosed(conn, code, reason) {
    if (this.conn !== conn) return;
    this.dropConnection();
    // The `Closing` frame's code decides; a WebSocket's close status stands in for a lost one.
    const closing = this.closing;
    this.afterClose(closing?.code ?? code ?? null, closing?.reason ?? (reason || 'connection lost'));
  }

  /** @private Forgets the live connection and everything tied to it. */
  dropConnection() {
    this.conn = null;
    this.joinSent = false;
    this.leaveBarrier = null;
    clearInterval(this.keepAliveTimer);
    this.keepAliveTimer = null;
    const pings = [...this.pendingPings.values()];
    this.pendingPings.clear();
    for (const p of pings) p.done.reject(new QuicmatchError('NotConnected', 'the connection closed before the pong'));
    if (this.#state === 'matched') {
      const matchId = this.#matchId;
      this.endMatch();
      this.emit('partner-disconnected', { matchId, reason: 'connection-lost' });
    }
  }

  /** @private Decides whether and when to reconnect, per the `Closing` code. */
  afterClose(code, reason) {
    if (this.userClosed) return;
    let delay;
    if (code === CloseCode.PROTOCOL_VIOLATION || code === CloseCode.ABUSE) {
      delay = null; // the server asked us not to come back by ourselves
    } else if (code === CloseCode.SHUTTING_DOWN) {
      this.failures = 0; // a restart: come back soon, spread out a little
      delay = 250 + Math.random() * 750;
    } else if (code === CloseCode.AT_CAPACITY) {
      delay = Math.max(this.opts.capacityBackoffMs, this.backoff());
    } else {
      delay = this.backoff();
    }
    this.failures++;
    if (delay === null) {
      this.#joined = false;
      this.halt();
      this.setState('disconnected');
      const ended = () => new QuicmatchError('ServerClosed', `the server ended the session (code ${code}: ${reason})`, { closeCode: code });
      this.settle(this.openWaiters, (w) => w.reject(ended()));
      this.settle(this.joinWaiters, (w) => w.reject(ended()));
    } else {
      delay = Math.round(delay);
      this.setState('reconnecting');
      this.retryTimer = setTimeout(() => this.attempt(), delay);
    }
    this.log('info', `connection closed (code ${code}, ${reason}); ${delay === null ? 'not reconnecting' : `reconnecting in ${delay} ms`}`);
    this.emit('close', { code, reason, byUser: false, reconnectInMs: delay });
  }

  /** @private Exponential back-off with jitter: 50-100% of initial * 2^failures, capped. */
  backoff() {
    const full = Math.min(this.opts.maxBackoffMs, this.opts.initialBackoffMs * 2 ** Math.min(this.failures, 20));
    return full * (0.5 + Math.random() * 0.5);
  }

  // -- incoming ------------------------------------------------------------

  /** @private @param {ServerMsg} msg */
  onServerMsg(msg) {
    // Any real answer means the server took the session: the back-off starts over.
    if (msg.type !== 'Closing') this.failures = 0;
    switch (msg.type) {
      case 'Waiting':
        if (!this.takesQueueAnswer(msg.type)) return;
        this.joinSent = false;
        this.endMatch();
        this.setState('waiting');
        this.emit('waiting', { queuePosition: msg.queue_position });
        this.settle(this.joinWaiters, (w) => w.resolve({ type: 'waiting', queuePosition: msg.queue_position }));
        break;
      case 'Matched': {
        if (!this.takesQueueAnswer(msg.type)) return;
        this.joinSent = false;
        this.endMatch();
        this.#matchId = msg.match_id;
        this.#partner = msg.partner;
        this.#initiator = msg.initiator;
        this.setState('matched');
        const matched = {
          matchId: msg.match_id,
          partner: msg.partner,
          initiator: msg.initiator,
          iceServers: msg.ice_servers.map(toRtcIceServer),
        };
        this.emit('matched', matched);
        this.settle(this.joinWaiters, (w) => w.resolve({ type: 'matched', ...matched }));
        this.replayEarlyChats();
        break;
      }
      case 'Offer':
      case 'Answer':
        if (!this.isCurrent(msg.match_id, msg.type)) return;
        this.emit(msg.type === 'Offer' ? 'offer' : 'answer', { matchId: msg.match_id, sdp: msg.sdp });
        break;
      case 'Ice':
        if (!this.isCurrent(msg.match_id, msg.type)) return;
        this.emit('ice', {
          matchId: msg.match_id,
          candidate: {
            candidate: msg.candidate.candidate,
            sdpMid: msg.candidate.sdp_mid,
            sdpMLineIndex: msg.candidate.sdp_m_line_index,
            usernameFragment: msg.candidate.username_fragment,
          },
        });
        break;
      case 'PartnerDisconnected':
        if (!this.isCurrent(msg.match_id, msg.type)) return;
        this.endMatch();
        this.setState('waiting'); // the server re-queues us; Waiting or Matched follows
        this.emit('partner-disconnected', { matchId: msg.match_id, reason: 'partner-left' });
        break;
      case 'Error': {
        const err = new QuicmatchError(msg.code, msg.message, { fromServer: true });
        if (this.joinSent && JOIN_REFUSALS.has(msg.code)) {
          this.joinSent = false;
          // Refused: do not send the profile again after a reconnect. (AlreadyJoined
          // means the server holds us joined: keep it so.)
          if (msg.code !== 'AlreadyJoined') this.#joined = false;
          if (this.joinWaiters.size > 0) {
            this.settle(this.joinWaiters, (w) => w.reject(err));
            return;
          }
        }
        this.emit('error', err);
        break;
      }
      case 'Pong': {
        if (msg.nonce === this.leaveBarrier) this.leaveBarrier = null;
        const p = this.pendingPings.get(msg.nonce);
        if (!p) return;
        this.pendingPings.delete(msg.nonce);
        const rttMs = performance.now() - p.sentAt;
        p.done.resolve(rttMs);
        this.emit('pong', { nonce: msg.nonce, rttMs });
        break;
      }
      case 'Closing':
        this.closing = { code: msg.code, reason: msg.reason };
        this.log('info', `server closing the session: code ${msg.code}, ${msg.reason}`);
        this.emit('closing', { code: msg.code, reason: msg.reason });
        break;
    }
  }

  /** @private Waiting and Matched count only while joined, and not before the server saw our last Leave. */
  takesQueueAnswer(what) {
    if (this.#joined && this.leaveBarrier === null) return true;
    this.log('debug', `ignoring ${what}: it was sent before the server saw our Leave`);
    return false;
  }

  /** @private Relay messages of another match are late leftovers: ignore them. */
  isCurrent(matchId, what) {
    if (this.#state === 'matched' && matchId === this.#matchId) return true;
    this.log('debug', `ignoring ${what} for match ${matchId} (current: ${this.#matchId})`);
    return false;
  }

  /** @private @param {Uint8Array} bytes */
  onDatagram(bytes) {
    let dg;
    try {
      dg = decodeDatagram(bytes);
    } catch (err) {
      this.log('warn', `ignoring a malformed datagram: ${err.message}`);
      return;
    }
    if (this.#state === 'matched' && dg.match_id === this.#matchId) {
      this.handleDatagram(dg);
      return;
    }
    // Datagrams and the stream are not ordered with each other: the chat of
    // a brand-new match can come just before its Matched frame. Keep chats
    // for a short while; stale ones of ended matches simply expire.
    if (dg.type === 'Chat') {
      this.pruneEarlyChats();
      if (this.earlyChats.length < EARLY_CHAT_LIMIT) this.earlyChats.push({ dg, at: performance.now() });
    }
  }

  /** @private */
  pruneEarlyChats() {
    const cutoff = performance.now() - this.opts.earlyChatMs;
    this.earlyChats = this.earlyChats.filter((e) => e.at >= cutoff);
  }

  /** @private */
  replayEarlyChats() {
    this.pruneEarlyChats();
    const mine = this.earlyChats.filter((e) => e.dg.match_id === this.#matchId);
    this.earlyChats = this.earlyChats.filter((e) => e.dg.match_id !== this.#matchId);
    for (const { dg } of mine) this.handleDatagram(dg);
  }

  /** @private @param {Datagram} dg a datagram of the current match */
  handleDatagram(dg) {
    if (dg.type === 'Chat') {
      // Ack every copy: the ack of the first one may be the one that was lost.
      this.sendDatagram(encodeDatagram({ type: 'ChatAck', match_id: dg.match_id, seq: dg.seq }));
      if (this.seenSeqs.has(dg.seq)) return;
      if (this.seenSeqs.size >= SEEN_SEQ_LIMIT) this.seenSeqs.delete(this.seenSeqs.values().next().value);
      this.seenSeqs.add(dg.seq);
      this.emit('chat', { matchId: dg.match_id, seq: dg.seq, text: dg.text });
    } else {
      const entry = this.pendingChats.get(dg.seq);
      if (!entry || entry.matchId !== dg.match_id) return;
      clearTimeout(entry.timer);
      this.pendingChats.delete(dg.seq);
      const rttMs = performance.now() - entry.firstSentAt;
      this.emit('chat-ack', { matchId: dg.match_id, seq: dg.seq, rttMs });
      entry.done.resolve({ matchId: dg.match_id, seq: dg.seq, rttMs });
    }
  }

  // -- outgoing ------------------------------------------------------------

  /** @private Sends the remembered profile's Join on this connection. */
  sendJoin() {
    if (this.send({ type: 'Join', profile: this.#profile })) this.joinSent = true;
  }

  /** @private Sends one frame; false (and an `error` event) when not connected or too large. */
  send(msg) {
    if (!this.conn) return this.fail('NotConnected', `cannot send ${msg.type}: not connected`);
    let payload;
    try {
      payload = encodeClientMsg(msg);
      // A frame over 65,536 bytes would make the server close the session.
      if (payload.length > MAX_FRAME_LEN) {
        throw new RangeError(`frame payload of ${payload.length} bytes is outside 1..=${MAX_FRAME_LEN}`);
      }
    } catch (err) {
      return this.fail(err instanceof RangeError ? 'TooLarge' : 'InvalidArgument', String(err?.message ?? err));
    }
    this.conn.carrier.sendFrame(payload).catch((err) => this.log('debug', `write ${msg.type}: ${err?.message ?? err}`));
    return true;
  }

  /** @private */
  relay(type, fields, fits) {
    if (this.#state !== 'matched') return this.fail('NotMatched', `cannot send ${type}: not matched`);
    if (!fits) return this.fail('TooLarge', `${type} is over the protocol's size limit`);
    return this.send({ type, match_id: this.#matchId, ...fields });
  }

  /** @private */
  sendDatagram(bytes) {
    this.conn?.carrier.sendDatagram(bytes).catch((err) => this.log('debug', `datagram: ${err?.message ?? err}`));
  }

  /** @private */
  scheduleResend(seq, entry) {
    entry.timer = setTimeout(() => {
      if (this.pendingChats.get(seq) !== entry) return;
      if (entry.resends >= this.opts.chatMaxResends || entry.matchId !== this.#matchId || !this.conn) {
        this.pendingChats.delete(seq);
        this.emit('chat-failed', { matchId: entry.matchId, seq, text: entry.text });
        entry.done.reject(new QuicmatchError('ChatFailed', `no acknowledgement after ${entry.resends} resends`));
        return;
      }
      entry.resends++;
      this.sendDatagram(entry.bytes);
      this.scheduleResend(seq, entry);
    }, this.opts.chatResendMs);
  }

  // -- helpers ---------------------------------------------------------------

  /** @private Forgets the current match and its chat state. */
  endMatch() {
    this.endMatchChats(() => new QuicmatchError('ChatFailed', 'the match ended before the partner acknowledged the chat'));
    this.seenSeqs.clear();
    this.#matchId = null;
    this.#partner = null;
    this.#initiator = false;
  }

  /** @private Gives up every chat still waiting for its ack, with `error()`. */
  endMatchChats(error) {
    const chats = [...this.pendingChats];
    this.pendingChats.clear();
    for (const [seq, entry] of chats) {
      clearTimeout(entry.timer);
      this.emit('chat-failed', { matchId: entry.matchId, seq, text: entry.text });
      entry.done.reject(error());
    }
  }

  /** @private */
  setState(state) {
    const previous = this.#state;
    if (previous === state) return;
    this.#state = state;
    this.emit('statechange', { state, previous });
  }

  /** @private Emits a local `error` event; returns false for `return this.fail(...)`. */
  fail(code, message) {
    this.log('warn', `${code}: ${message}`);
    this.emit('error', new QuicmatchError(code, message));
    return false;
  }

  /** @private */
  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  /** @private */
  log(level, message) {
    try {
      this.logger(level, message);
    } catch {
      // a logger must never break the session
    }
  }
}

/**
 * What a `join()` resolves with: the server's first answer.
 * @typedef {{type: 'waiting', queuePosition: number}
 *   | {type: 'matched', matchId: U64, partner: Profile, initiator: boolean, iceServers: RTCIceServer[]}} JoinAnswer
 */

/** The protocol's IceServer as an RTCIceServer: absent fields left out (a `null` would become the string "null"). */
function toRtcIceServer(s) {
  /** @type {RTCIceServer} */
  const out = { urls: s.urls };
  if (s.username !== null) out.username = s.username;
  if (s.credential !== null) out.credential = s.credential;
  return out;
}
