// Type tests of quicmatch.d.ts, checked by `tsc -p web/tsconfig.json`
// (tests/sdk_package.rs runs it). Nothing here runs: each line either must
// type-check, or, after `// @ts-expect-error`, must not (tsc fails on an
// expect-error line that has no error). The import goes through the
// package's own name, so it also checks package.json's "exports" map.

import {
  CloseCode,
  decodeClientMsg,
  decodeDatagram,
  decodeServerMsg,
  DecodeError,
  encodeClientMsg,
  encodeDatagram,
  encodeFrame,
  encodeServerMsg,
  fetchTransportInfo,
  FrameLengthError,
  FrameReader,
  MAX_CHAT_LEN,
  MAX_FRAME_LEN,
  MAX_ICE_FIELD_LEN,
  MAX_SDP_LEN,
  PROTOCOL_VERSION,
  QuicmatchError,
  QuicmatchSession,
  SIGNAL_PATH,
  UNIT_DATAGRAM,
  UNIT_FRAME,
  utf8Length,
  WEBSOCKET_CLOSE_BASE,
  WEBSOCKET_SUBPROTOCOL,
} from 'quicmatch';
import type {
  ClientMsg,
  Datagram,
  JoinAnswer,
  Profile,
  QuicmatchErrorCode,
  QuicmatchEventMap,
  ServerMsg,
  SessionOptions,
  SessionState,
  TransportInfo,
  TransportKind,
  U64,
  WebTransportLike,
} from 'quicmatch';

/** `true` only when A and B are the same type (not merely assignable). */
type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
function expectTrue<T extends true>(_proof?: T): void {}

// -- constants ---------------------------------------------------------------

expectTrue<Equal<typeof PROTOCOL_VERSION, '1.1'>>();
expectTrue<Equal<typeof WEBSOCKET_SUBPROTOCOL, 'quicmatch.v1'>>();
expectTrue<Equal<typeof SIGNAL_PATH, '/signal'>>();
const limits: number[] = [MAX_FRAME_LEN, MAX_SDP_LEN, MAX_ICE_FIELD_LEN, MAX_CHAT_LEN, UNIT_FRAME, UNIT_DATAGRAM, WEBSOCKET_CLOSE_BASE];
expectTrue<Equal<typeof CloseCode.AT_CAPACITY, 4>>();
// @ts-expect-error CloseCode is frozen
CloseCode.NORMAL = 1;

// -- codec -------------------------------------------------------------------

const join: ClientMsg = { type: 'Join', profile: { name: 'Jo', age: 25, gender: 'Female' } };
const joinBytes: Uint8Array = encodeClientMsg(join);
const framed: Uint8Array = encodeFrame(joinBytes);
const back: ClientMsg = decodeClientMsg(framed.slice(4));
encodeClientMsg({ type: 'Offer', match_id: 2n ** 60n, sdp: 'v=0' });
encodeClientMsg({ type: 'Ice', match_id: 1, candidate: { candidate: '', sdp_mid: null, sdp_m_line_index: null, username_fragment: null } });
// @ts-expect-error an Offer needs its sdp
encodeClientMsg({ type: 'Offer', match_id: 1 });
// @ts-expect-error gender is 'Male' or 'Female'
encodeClientMsg({ type: 'Join', profile: { name: 'Jo', age: 25, gender: 'female' } });
// @ts-expect-error a server message is not a client message
encodeClientMsg({ type: 'Waiting', queue_position: 1 });

function describe(msg: ServerMsg): string {
  switch (msg.type) {
    case 'Waiting':
      return `#${msg.queue_position}`;
    case 'Matched':
      return `${msg.partner.name} ${msg.initiator} ${msg.ice_servers[0]?.urls.join(',')}`;
    case 'Offer':
    case 'Answer':
      return msg.sdp;
    case 'Ice':
      return msg.candidate.candidate + (msg.candidate.sdp_mid ?? '');
    case 'PartnerDisconnected':
      return String(msg.match_id);
    case 'Error': {
      // @ts-expect-error not an ErrorCode
      const wrong = msg.code === 'Nope';
      return `${msg.code}: ${msg.message} ${wrong}`;
    }
    case 'Pong':
      return String(msg.nonce);
    case 'Closing':
      return `${msg.code} ${msg.reason}`;
  }
}
const server: string = describe(decodeServerMsg(encodeServerMsg({ type: 'Pong', nonce: 7 })));
const datagram: Datagram = decodeDatagram(encodeDatagram({ type: 'ChatAck', match_id: 1, seq: 2 }));

const reader = new FrameReader();
reader.push(framed);
const payload: Uint8Array | null = reader.next();
const byteLength: number = utf8Length('héllo');

function codecError(err: unknown): string {
  if (err instanceof DecodeError) return err.message;
  if (err instanceof FrameLengthError) return `length ${err.length}`;
  return 'other';
}

async function info(): Promise<string> {
  const found: TransportInfo = await fetchTransportInfo('https://chat.example.org/', fetch);
  const hash: Uint8Array | undefined = found.serverCertificateHashes[0]?.value;
  return `${found.url} ${found.websocket ?? 'no WebSocket'} ${hash?.length}`;
}

// -- session: options ----------------------------------------------------------

const fakeWebTransport = (): WebTransportLike => ({
  ready: Promise.resolve(),
  closed: new Promise(() => {}),
  close() {},
  createBidirectionalStream: async () => new TransformStream<Uint8Array, Uint8Array>(),
  datagrams: { readable: new ReadableStream(), writable: new WritableStream(), maxDatagramSize: 1200 },
});

const options: SessionOptions = {
  base: new URL('https://chat.example.org/'),
  transport: 'auto',
  webTransportTimeoutMs: 2000,
  websocketUrl: 'wss://chat.example.org/signal',
  token: async () => 'jwt',
  initialBackoffMs: 500,
  maxBackoffMs: 10_000,
  capacityBackoffMs: 5000,
  chatResendMs: 700,
  chatMaxResends: 4,
  earlyChatMs: 3000,
  keepAliveMs: 0,
  pingTimeoutMs: 10_000,
  connectTimeoutMs: 15_000,
  joinTimeoutMs: 15_000,
  probeTimeoutMs: 5000,
  webTransport: (url, init) => {
    const pinned: string | undefined = init.serverCertificateHashes?.[0]?.algorithm;
    return url && pinned !== 'none' ? fakeWebTransport() : fakeWebTransport();
  },
  webSocket: (url, protocols) => new WebSocket(url, protocols),
  fetch: (input, init) => fetch(input, init),
  environment: window,
  logger: (level, message) => console[level](message),
};
const session = new QuicmatchSession(options);
new QuicmatchSession();
new QuicmatchSession({ token: 'jwt', environment: null });

// @ts-expect-error no such transport
new QuicmatchSession({ transport: 'quic' });
// @ts-expect-error a number of milliseconds
new QuicmatchSession({ keepAliveMs: '20s' });
// @ts-expect-error the WebSocket factory gets the URL and the subprotocols, and returns a WebSocket
new QuicmatchSession({ webSocket: (url: URL) => new WebSocket(url) });
// @ts-expect-error the WebSocket factory must return a WebSocket
new QuicmatchSession({ webSocket: () => 'ws://localhost/signal' });
// @ts-expect-error no such option
new QuicmatchSession({ reconnect: false });

const supported: boolean = QuicmatchSession.isSupported() && QuicmatchSession.isSupported('websocket');
// @ts-expect-error no such transport
QuicmatchSession.isSupported('quic');

// -- session: read-only state --------------------------------------------------

const state: SessionState = session.state;
const matchId: U64 | null = session.matchId;
const partner: Profile | null = session.partner;
const flags: boolean[] = [session.initiator, session.joined];
const last: Profile | null = session.profile;
const carrier: TransportKind | null = session.transport;
// @ts-expect-error state is read-only
session.state = 'idle';
// @ts-expect-error matchId is read-only
session.matchId = 1;
// @ts-expect-error transport is read-only
session.transport = 'websocket';
// @ts-expect-error no such state
const unknownState = session.state === 'open';

// -- session: events -----------------------------------------------------------

session.addEventListener('matched', (e) => {
  const name: string = e.detail.partner.name;
  const servers: RTCIceServer[] = e.detail.iceServers;
  const id: U64 = e.detail.matchId;
  const initiator: boolean = e.detail.initiator;
  // @ts-expect-error misspelt field
  e.detail.partner.nmae;
  return [name, servers, id, initiator];
});
// @ts-expect-error misspelt event name
session.addEventListener('matchd', (e) => e.detail.partner.name);
// @ts-expect-error misspelt event name, even with a listener that reads no detail
session.addEventListener('matchd', () => {});
// @ts-expect-error misspelt event name
session.removeEventListener('chat-acked', () => {});

session.addEventListener('statechange', (e) => {
  expectTrue<Equal<typeof e.detail.state, SessionState>>();
  expectTrue<Equal<typeof e.detail.previous, SessionState>>();
});
session.addEventListener('transport', (e) => {
  const kind: TransportKind = e.detail.transport;
  const why: string | null = e.detail.reason;
  return [kind, why, e.detail.fallback, e.detail.url];
});
session.addEventListener('open', (e) => [e.detail.url, e.detail.transport]);
session.addEventListener('waiting', (e) => {
  const position: number = e.detail.queuePosition;
  return position;
});
session.addEventListener('offer', (e) => [e.detail.matchId, e.detail.sdp.length]);
session.addEventListener('answer', (e) => [e.detail.matchId, e.detail.sdp.length]);
session.addEventListener('ice', async (e) => {
  const candidate: RTCIceCandidateInit = e.detail.candidate;
  await new RTCPeerConnection().addIceCandidate(candidate);
});
session.addEventListener('chat', (e) => [e.detail.matchId, e.detail.seq, e.detail.text.toUpperCase()]);
session.addEventListener('chat-ack', (e) => e.detail.rttMs.toFixed(1));
session.addEventListener('chat-failed', (e) => e.detail.text);
session.addEventListener('partner-disconnected', (e) => {
  expectTrue<Equal<typeof e.detail.reason, 'partner-left' | 'connection-lost'>>();
});
session.addEventListener('pong', (e) => [e.detail.nonce, e.detail.rttMs]);
session.addEventListener('closing', (e) => [e.detail.code, e.detail.reason]);
session.addEventListener('error', (e) => {
  const err: QuicmatchError = e.detail;
  const code: QuicmatchErrorCode = err.code;
  return [code, err.message, err.fromServer, err.closeCode, err.cause];
});
session.addEventListener('close', (e) => {
  const again: number | null = e.detail.reconnectInMs;
  const code: number | null = e.detail.code;
  return [again, code, e.detail.byUser, e.detail.reason];
});
// @ts-expect-error the detail of 'waiting' is not that of 'matched'
session.addEventListener('waiting', (e: QuicmatchEventMap['matched']) => e.detail.partner);
// A listener object, `once`, and `this`.
session.addEventListener('pong', { handleEvent: (e) => e.detail.rttMs }, { once: true });
session.addEventListener('open', function () {
  const self: QuicmatchSession = this;
  return self.state;
});
// A name only known at run time is a plain Event.
const someName: string = 'matched';
const plain = (e: Event) => e.type;
session.addEventListener(someName, plain);
session.removeEventListener(someName, plain);
// @ts-expect-error a plain Event has no detail
session.addEventListener(someName, (e) => e.detail);
const onChat = (e: QuicmatchEventMap['chat']) => e.detail.text;
session.addEventListener('chat', onChat);
session.removeEventListener('chat', onChat);
// Still an EventTarget.
const target: EventTarget = session;

// -- session: methods ----------------------------------------------------------

async function flow(): Promise<string> {
  const controller = new AbortController();
  await session.connect({ signal: controller.signal, timeoutMs: 5000 });
  await session.reconnectNow();
  const joined: JoinAnswer = await session.join({ name: 'Jo', age: 25, gender: 'Female' }, { timeoutMs: 10_000 });
  let line: string;
  if (joined.type === 'matched') {
    line = `${joined.partner.name} ${joined.initiator} ${joined.iceServers.length} ${joined.matchId}`;
    // @ts-expect-error only 'waiting' has a queue position
    joined.queuePosition;
  } else {
    line = `#${joined.queuePosition}`;
  }
  const sent: boolean = session.sendOffer('v=0') && session.sendAnswer('v=0') && session.sendIce(null);
  session.sendIce({ candidate: 'candidate:1 1 udp 1 127.0.0.1 9 typ host', sdpMid: '0', sdpMLineIndex: 0 });
  // @ts-expect-error a candidate, not a number
  session.sendIce(42);
  const acked = await session.chat('hi', { signal: controller.signal });
  const rtt: number = acked.rttMs + acked.seq;
  const pingMs: number = await session.ping({ timeoutMs: 1000 });
  // @ts-expect-error chat text is a string
  await session.chat(123);
  // @ts-expect-error the profile's age is a number
  await session.join({ name: 'Jo', age: '25', gender: 'Female' });
  // @ts-expect-error timeoutMs is a number
  await session.ping({ timeoutMs: '1s' });
  session.stop();
  session.leave();
  session.close();
  return `${line} ${sent} ${rtt} ${pingMs}`;
}

function onFailure(err: unknown): string {
  if (!(err instanceof QuicmatchError)) return 'other';
  switch (err.code) {
    case 'ServerClosed':
      return `closed by the server, code ${err.closeCode}`;
    case 'InvalidProfile':
      return err.fromServer ? 'the server refused the profile' : 'unexpected';
    case 'Aborted':
    case 'Timeout':
      return 'gave up';
    default:
      return err.code;
  }
}
const made = new QuicmatchError('Timeout', 'too slow', { cause: new Error('x'), closeCode: null });
// @ts-expect-error no such code
new QuicmatchError('Slow', 'too slow');
// @ts-expect-error code is read-only
made.code = 'Closed';

export const used = [
  limits, back, server, datagram, payload, byteLength, codecError, info, supported, state, matchId,
  partner, flags, last, carrier, unknownState, target, flow, onFailure, made,
];
