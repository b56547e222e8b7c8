// Types of quicmatch.js, the browser side of the quicmatch signaling protocol
// version 1.1 (docs/protocol.md). The package's version is the protocol's
// major.minor plus a patch number for fixes of the module itself, so 1.1.x
// speaks protocol 1.1. Written for TypeScript 4.8 and later, with the "dom"
// and "es2022" libraries.

// ---------------------------------------------------------------------------
// Constants

/** The protocol version this module speaks (docs/protocol.md); the package's major.minor. */
export declare const PROTOCOL_VERSION: '1.1';
/** Largest signaling frame payload, in bytes. */
export declare const MAX_FRAME_LEN: 65536;
/** Largest `sdp` of an Offer or Answer, in bytes. */
export declare const MAX_SDP_LEN: 32768;
/** Largest `candidate`, `sdp_mid` or `username_fragment`, in bytes. */
export declare const MAX_ICE_FIELD_LEN: 1024;
/** Largest chat text, in bytes of UTF-8 (it must also be non-empty). */
export declare const MAX_CHAT_LEN: 1000;
/** The URL path of the WebTransport session (and of the WebSocket fallback, on the HTTP sidecar). */
export declare const SIGNAL_PATH: '/signal';
/** The subprotocol a WebSocket session offers (protocol section 7). */
export declare const WEBSOCKET_SUBPROTOCOL: 'quicmatch.v1';
/** First byte of a WebSocket unit that carries a frame's payload (a ClientMsg or ServerMsg). */
export declare const UNIT_FRAME: 0x00;
/** First byte of a WebSocket unit that carries a Datagram. */
export declare const UNIT_DATAGRAM: 0x01;
/** A WebSocket close status is this plus the session close code (4003: server shutting down). */
export declare const WEBSOCKET_CLOSE_BASE: 4000;

/** Session close codes, as carried by the server's `Closing` frame. */
export declare const CloseCode: Readonly<{
  NORMAL: 0;
  PROTOCOL_VIOLATION: 1;
  ABUSE: 2;
  SHUTTING_DOWN: 3;
  AT_CAPACITY: 4;
}>;

// ---------------------------------------------------------------------------
// Wire values (the protocol's field names)

export type Gender = 'Male' | 'Female';
export interface Profile {
  name: string;
  /** 18 to 99 for the server to accept it; the codec takes any u8. */
  age: number;
  gender: Gender;
}
/** A u64: a number when it is a safe integer, else a BigInt. Encoders take either. */
export type U64 = number | bigint;
export interface WireIceCandidate {
  candidate: string;
  sdp_mid: string | null;
  sdp_m_line_index: number | null;
  username_fragment: string | null;
}
export interface WireIceServer {
  urls: string[];
  username: string | null;
  credential: string | null;
}
/** The codes of the server's `Error` frame. */
export type ErrorCode =
  | 'BadFrame'
  | 'InvalidProfile'
  | 'NotJoined'
  | 'AlreadyJoined'
  | 'NotMatched'
  | 'TooLarge'
  | 'RateLimited'
  | 'ServerBusy';
export type ClientMsg =
  | { type: 'Join'; profile: Profile }
  | { type: 'Offer' | 'Answer'; match_id: U64; sdp: string }
  | { type: 'Ice'; match_id: U64; candidate: WireIceCandidate }
  | { type: 'Stop' }
  | { type: 'Leave' }
  | { type: 'Ping'; nonce: U64 };
export type ServerMsg =
  | { type: 'Waiting'; queue_position: number }
  | {
      type: 'Matched';
      match_id: U64;
      partner: Profile;
      initiator: boolean;
      ice_servers: WireIceServer[];
    }
  | { type: 'Offer' | 'Answer'; match_id: U64; sdp: string }
  | { type: 'Ice'; match_id: U64; candidate: WireIceCandidate }
  | { type: 'PartnerDisconnected'; match_id: U64 }
  | { type: 'Error'; code: ErrorCode; message: string }
  | { type: 'Pong'; nonce: U64 }
  | { type: 'Closing'; code: number; reason: string };
export type Datagram =
  | { type: 'Chat'; match_id: U64; seq: number; text: string }
  | { type: 'ChatAck'; match_id: U64; seq: number };

// ---------------------------------------------------------------------------
// Errors

/** Thrown when bytes do not decode to exactly one message. */
export declare class DecodeError extends Error {
  constructor(message: string);
  name: 'DecodeError';
}

/** Thrown by {@link FrameReader} for a length prefix of 0 or over 65,536. */
export declare class FrameLengthError extends Error {
  constructor(length: number);
  name: 'FrameLengthError';
  /** The length prefix that was read. */
  length: number;
}

/** A code the session gives itself (`fromServer` false). */
export type LocalErrorCode =
  | 'NotConnected'
  | 'NotMatched'
  | 'TooLarge'
  | 'DatagramTooLarge'
  | 'EmptyChat'
  | 'InvalidArgument'
  | 'BadServerFrame'
  | 'ProtocolViolation'
  | 'ConnectFailed'
  | 'Unsupported'
  | 'Aborted'
  | 'Timeout'
  | 'Closed'
  | 'Left'
  | 'ChatFailed'
  | 'PingTimeout'
  | 'ServerClosed';
/** Every code a {@link QuicmatchError} can have. */
export type QuicmatchErrorCode = ErrorCode | LocalErrorCode;

export interface QuicmatchErrorOptions {
  /** Whether `code` is the server's (an `Error` frame). Default false. */
  fromServer?: boolean;
  /** The underlying error, if any. */
  cause?: unknown;
  /** The server's `Closing` code, for `ServerClosed`. Default null. */
  closeCode?: number | null;
}

/**
 * The one error type of a session: every rejected promise and every `error`
 * event carries one.
 */
export declare class QuicmatchError extends Error {
  constructor(code: QuicmatchErrorCode, message: string, options?: QuicmatchErrorOptions);
  name: 'QuicmatchError';
  /**
   * A server {@link ErrorCode} name (`fromServer` true when the server sent
   * it; `join()` itself refuses with `AlreadyJoined`), or a {@link LocalErrorCode}.
   */
  readonly code: QuicmatchErrorCode;
  /** Whether the server sent this error (an `Error` frame). */
  readonly fromServer: boolean;
  /** For `ServerClosed`: the server's `Closing` code (1 or 2); else null. */
  readonly closeCode: number | null;
  /** The underlying error, if any. */
  cause?: unknown;
}

// ---------------------------------------------------------------------------
// Codec and framing

/** Byte length of a string once encoded as UTF-8. */
export declare function utf8Length(text: string): number;
/** Encodes a client message (unframed). Throws TypeError/RangeError for a value that does not fit the type. */
export declare function encodeClientMsg(msg: ClientMsg): Uint8Array;
/** Decodes bytes that must hold exactly one client message. Throws {@link DecodeError}. */
export declare function decodeClientMsg(bytes: Uint8Array | ArrayBuffer): ClientMsg;
/** Encodes a server message (unframed). */
export declare function encodeServerMsg(msg: ServerMsg): Uint8Array;
/** Decodes bytes that must hold exactly one server message. Throws {@link DecodeError}. */
export declare function decodeServerMsg(bytes: Uint8Array | ArrayBuffer): ServerMsg;
/** Encodes a datagram. */
export declare function encodeDatagram(msg: Datagram): Uint8Array;
/** Decodes bytes that must hold exactly one datagram. Throws {@link DecodeError}. */
export declare function decodeDatagram(bytes: Uint8Array | ArrayBuffer): Datagram;
/** Prefixes an encoded message (1 to 65,536 bytes) with its 4-byte big-endian length. */
export declare function encodeFrame(payload: Uint8Array): Uint8Array;

/** Splits a byte stream into frame payloads. */
export declare class FrameReader {
  constructor();
  /** Appends bytes read from the stream. */
  push(chunk: Uint8Array): void;
  /** The next whole frame's payload, or null until one has arrived. Throws {@link FrameLengthError}. */
  next(): Uint8Array | null;
}

// ---------------------------------------------------------------------------
// /api/webtransport

/** The server's `/api/webtransport` answer, decoded. */
export interface TransportInfo {
  url: string;
  serverCertificateHashes: { algorithm: string; value: Uint8Array }[];
  /** The WebSocket fallback's URL, or null when the server names none. */
  websocket: string | null;
}

/**
 * Fetches `/api/webtransport` relative to `base` (default: the page's URL)
 * and turns the base64 certificate hashes into bytes.
 */
export declare function fetchTransportInfo(
  base?: string | URL,
  fetchFn?: typeof fetch,
): Promise<TransportInfo>;

// ---------------------------------------------------------------------------
// Session

/** The `transport` option. */
export type TransportOption = 'auto' | 'webtransport' | 'websocket';
/** The carrier of an open connection. */
export type TransportKind = 'webtransport' | 'websocket';
/** {@link QuicmatchSession.state}. */
export type SessionState =
  | 'disconnected'
  | 'connecting'
  | 'reconnecting'
  | 'idle'
  | 'waiting'
  | 'matched'
  | 'closed';

/**
 * What the session hands to the `webTransport` factory: the browser's
 * `WebTransportOptions` (this module sets `serverCertificateHashes` only).
 */
export interface SessionWebTransportOptions {
  serverCertificateHashes?: { algorithm: string; value: BufferSource }[];
}

/**
 * The members of a `WebTransport` the session uses: what a `webTransport`
 * factory must return. The browser's `WebTransport` has them all.
 */
export interface WebTransportLike {
  readonly ready: Promise<unknown>;
  readonly closed: Promise<unknown>;
  close(closeInfo?: { closeCode?: number; reason?: string }): void;
  createBidirectionalStream(): Promise<{ readonly readable: ReadableStream; readonly writable: WritableStream }>;
  readonly datagrams: {
    readonly readable: ReadableStream;
    readonly writable: WritableStream;
    readonly maxDatagramSize?: number;
  };
}

/**
 * Where the session listens for `online` and `offline`; its `document` gives
 * `visibilitychange`. `window` is one.
 */
export type SessionEnvironment = EventTarget & {
  navigator?: { readonly onLine: boolean };
  document?: EventTarget & { readonly visibilityState: DocumentVisibilityState };
};

/** Options of `new QuicmatchSession(options)`; every one is optional. */
export interface SessionOptions {
  /** Where `/api/webtransport` is fetched from. Default: the page's URL. */
  base?: string | URL;
  /** Which carrier to use. Default `'auto'` (WebTransport, falling back to the WebSocket). */
  transport?: TransportOption;
  /** In `'auto'` mode, how long WebTransport may take to become ready before the WebSocket is tried. Default 3000. */
  webTransportTimeoutMs?: number;
  /** The WebSocket fallback's URL (`wss://HOST/signal`); wins over the server's answer. */
  websocketUrl?: string | URL | null;
  /** A join token, or a function that fetches a fresh one before every connection attempt. */
  token?: string | (() => string | Promise<string>);
  /** First reconnect delay after a lost connection. Default 1000. */
  initialBackoffMs?: number;
  /** Longest reconnect delay. Default 30000. */
  maxBackoffMs?: number;
  /** Shortest delay after `Closing` code 4 (server at capacity). Default 5000. */
  capacityBackoffMs?: number;
  /** How long a chat waits for its ack before it is sent again. Default 700. */
  chatResendMs?: number;
  /** Resends before a chat is given up. Default 4. */
  chatMaxResends?: number;
  /** How long a chat for a not yet known match is kept. Default 3000. */
  earlyChatMs?: number;
  /** Interval of keep-alive pings while connected; 0 for none. Default 20000. */
  keepAliveMs?: number;
  /** When a `ping()` gives up. Default 10000. */
  pingTimeoutMs?: number;
  /** Default timeout of `connect()` and `join()` waiting for the connection to open. Default 15000. */
  connectTimeoutMs?: number;
  /** Default timeout of `join()` waiting for `Waiting` or `Matched`. Default 15000. */
  joinTimeoutMs?: number;
  /** After `online` or the page becoming visible, how long a Ping may take before the connection is replaced. Default 5000. */
  probeTimeoutMs?: number;
  /** Makes the WebTransport session. Default `(url, options) => new WebTransport(url, options)`. */
  webTransport?: (url: string, options: SessionWebTransportOptions) => WebTransportLike;
  /** Makes the WebSocket. Default `(url, protocols) => new WebSocket(url, protocols)`. */
  webSocket?: (url: string, protocols: string[]) => WebSocket;
  /** Fetches `/api/webtransport`. Default `globalThis.fetch`. */
  fetch?: typeof fetch;
  /** Where `online`, `offline` and `visibilitychange` are listened for. Default `globalThis`; null: nowhere. */
  environment?: SessionEnvironment | null;
  /** Receives the session's diagnostics. */
  logger?: (level: 'debug' | 'info' | 'warn', message: string) => void;
}

/** Options of every promise-returning method. */
export interface CallOptions {
  /** Rejects the promise with `Aborted` when it aborts. */
  signal?: AbortSignal;
  /** Rejects the promise with `Timeout` (for `ping()`: `PingTimeout`) after this many ms. */
  timeoutMs?: number;
}

export interface WaitingDetail {
  /** 1-based position in the queue. */
  queuePosition: number;
}
export interface MatchedDetail {
  matchId: U64;
  partner: Profile;
  /** Whether this side creates the offer. */
  initiator: boolean;
  /** Ready for `new RTCPeerConnection({iceServers})`. */
  iceServers: RTCIceServer[];
}
/** What `join()` resolves with: the first `Waiting` or `Matched` after it. */
export type JoinAnswer = ({ type: 'waiting' } & WaitingDetail) | ({ type: 'matched' } & MatchedDetail);
/** What `chat()` resolves with once the partner acknowledged. */
export interface ChatResult {
  matchId: U64;
  seq: number;
  rttMs: number;
}

export interface StateChangeDetail {
  state: SessionState;
  previous: SessionState;
}
export interface TransportDetail {
  transport: TransportKind;
  url: string;
  /** True when `'auto'` mode chose the WebSocket. */
  fallback: boolean;
  /** Why the WebSocket is used; null for WebTransport. */
  reason: string | null;
}
export interface OpenDetail {
  url: string;
  transport: TransportKind;
}
export interface SdpDetail {
  matchId: U64;
  sdp: string;
}
export interface IceDetail {
  matchId: U64;
  /** `candidate === ''` is end-of-candidates. */
  candidate: RTCIceCandidateInit;
}
export interface ChatDetail {
  matchId: U64;
  seq: number;
  text: string;
}
export interface ChatAckDetail {
  matchId: U64;
  seq: number;
  rttMs: number;
}
export interface PartnerDisconnectedDetail {
  matchId: U64;
  reason: 'partner-left' | 'connection-lost';
}
export interface PongDetail {
  nonce: U64;
  rttMs: number;
}
export interface ClosingDetail {
  code: number;
  reason: string;
}
export interface CloseDetail {
  /** The `Closing` code, or a WebSocket status 4001 to 4999 minus 4000, else null. */
  code: number | null;
  reason: string;
  /** Whether `close()` closed it. */
  byUser: boolean;
  /** When the session reconnects by itself; null when it does not. */
  reconnectInMs: number | null;
}

/** Every event of a {@link QuicmatchSession}, by name. */
export interface QuicmatchEventMap {
  statechange: CustomEvent<StateChangeDetail>;
  transport: CustomEvent<TransportDetail>;
  open: CustomEvent<OpenDetail>;
  waiting: CustomEvent<WaitingDetail>;
  matched: CustomEvent<MatchedDetail>;
  offer: CustomEvent<SdpDetail>;
  answer: CustomEvent<SdpDetail>;
  ice: CustomEvent<IceDetail>;
  chat: CustomEvent<ChatDetail>;
  'chat-ack': CustomEvent<ChatAckDetail>;
  'chat-failed': CustomEvent<ChatDetail>;
  'partner-disconnected': CustomEvent<PartnerDisconnectedDetail>;
  pong: CustomEvent<PongDetail>;
  closing: CustomEvent<ClosingDetail>;
  error: CustomEvent<QuicmatchError>;
  close: CustomEvent<CloseDetail>;
}

/** A listener for event `K`: a function or an object with `handleEvent`. */
export type QuicmatchListener<K extends keyof QuicmatchEventMap> =
  | ((this: QuicmatchSession, event: QuicmatchEventMap[K]) => unknown)
  | { handleEvent(event: QuicmatchEventMap[K]): unknown };

/**
 * `string` itself, and nothing narrower: the parameter type of the untyped
 * `addEventListener` overload, so a name held in a `string` variable is
 * accepted while a misspelt literal (`'matchd'`) is an error.
 */
type AnyName<T extends string> = T & (string extends T ? unknown : never);

/**
 * One quicmatch session over WebTransport, or over the WebSocket fallback,
 * with reconnects, the current match, relay helpers and acknowledged chat.
 */
export declare class QuicmatchSession extends EventTarget {
  constructor(options?: SessionOptions);

  /** Whether this browser can run a session with that `transport` option. */
  static isSupported(transport?: TransportOption): boolean;

  /** The session's state. */
  get state(): SessionState;
  /** The current match's id, or null. */
  get matchId(): U64 | null;
  /** The current partner's profile, or null. */
  get partner(): Profile | null;
  /** Whether this side creates the offer in the current match. */
  get initiator(): boolean;
  /** The profile of the last `join()`, used again after a reconnect. */
  get profile(): Profile | null;
  /** True between `join()` and `leave()`. */
  get joined(): boolean;
  /** The open connection's carrier; null while not connected. */
  get transport(): TransportKind | null;

  /** Starts connecting if needed; resolves once open. */
  connect(options?: CallOptions): Promise<void>;
  /** Asks to be matched; resolves on the first `Waiting` or `Matched` after it. */
  join(profile: Profile, options?: CallOptions): Promise<JoinAnswer>;
  /** Ends any match and leaves the queue; stays connected. */
  leave(): void;
  /** Ends the current match and asks for someone new (Next). */
  stop(): void;
  /** Sends our offer to the current partner; false (and an `error` event) when not sent. */
  sendOffer(sdp: string): boolean;
  /** Sends our answer to the current partner; false (and an `error` event) when not sent. */
  sendAnswer(sdp: string): boolean;
  /** Sends one ICE candidate; null (end of candidates) is sent as candidate `""`. */
  sendIce(candidate: RTCIceCandidateInit | RTCIceCandidate | null): boolean;
  /** Sends a chat line; resolves when the partner acknowledged it. */
  chat(text: string, options?: CallOptions): Promise<ChatResult>;
  /** Sends `Ping`; resolves with the round-trip time in ms. */
  ping(options?: CallOptions): Promise<number>;
  /** Skips the back-off wait (or restarts after a stop) and connects now. */
  reconnectNow(options?: CallOptions): Promise<void>;
  /** Closes the session for good; every pending promise rejects with `Closed`. */
  close(): void;

  addEventListener<K extends keyof QuicmatchEventMap>(
    type: K,
    listener: QuicmatchListener<K> | null,
    options?: boolean | AddEventListenerOptions,
  ): void;
  addEventListener<T extends string>(
    type: AnyName<T>,
    listener: EventListenerOrEventListenerObject | null,
    options?: boolean | AddEventListenerOptions,
  ): void;
  removeEventListener<K extends keyof QuicmatchEventMap>(
    type: K,
    listener: QuicmatchListener<K> | null,
    options?: boolean | EventListenerOptions,
  ): void;
  removeEventListener<T extends string>(
    type: AnyName<T>,
    listener: EventListenerOrEventListenerObject | null,
    options?: boolean | EventListenerOptions,
  ): void;
}
