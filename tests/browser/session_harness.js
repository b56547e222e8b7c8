// Exercises QuicmatchSession (web/quicmatch.js) against a scripted fake
// server: the page's WebTransport, WebSocket and fetch are replaced by fakes
// that record what the session sends and let each check play the server's
// part. This covers what a real server rarely does on cue: stale relay
// messages, chat datagrams racing their Matched frame, lost acks, Closing
// codes, bad WebSocket units, a WebTransport that never becomes ready.
//
// One async function expression; tests/browser.rs evaluates it in Chromium
// with the module. Resolves to {checks, failures}.
(async function checkSession(m) {
  const failures = [];
  let checks = 0;
  const check = (ok, what) => {
    checks++;
    if (!ok) failures.push(what);
  };
  const show = (v) => JSON.stringify(v, (_k, x) => (typeof x === 'bigint' ? `${x}n` : x));
  /** A promise the check does not wait for: its rejection is expected and not reported. */
  const quiet = (p) => {
    p.catch(() => {});
    return p;
  };
  /** How `p` settles: 'resolved', or the code of the QuicmatchError it rejects with. */
  const outcome = (p) => p.then(
    () => 'resolved',
    (e) => (e instanceof m.QuicmatchError ? e.code : `not a QuicmatchError: ${e?.stack ?? e}`),
  );
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

  /** Waits until `cond()` is truthy (polling), or fails with `what` after `ms`. */
  const until = async (cond, what, ms = 3000) => {
    const end = performance.now() + ms;
    while (!cond()) {
      if (performance.now() > end) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 5));
    }
  };

  /** A fake WebTransport: what the client writes is decoded into `frames` / `datagrams`. */
  class FakeTransport {
    static all = [];
    /** How new sessions behave: 'ready' at once, 'hang' (never ready) or 'fail' (ready rejects). */
    static mode = 'ready';

    constructor(url, options) {
      FakeTransport.all.push(this);
      this.url = url;
      this.options = options;
      this.frames = [];
      this.datagramsSent = [];
      this.closedWith = null;
      const mode = FakeTransport.mode;
      this.ready = mode === 'ready' ? Promise.resolve()
        : mode === 'hang' ? new Promise(() => {})
          : Promise.reject(new Error('Opening handshake failed.'));
      this.closed = new Promise((resolve) => { this.resolveClosed = resolve; });
      const incoming = new ReadableStream({ start: (c) => { this.streamCtl = c; } });
      const dgIncoming = new ReadableStream({ start: (c) => { this.dgCtl = c; } });
      const frameReader = new m.FrameReader();
      this.stream = {
        readable: incoming,
        writable: new WritableStream({
          write: (chunk) => {
            frameReader.push(chunk);
            for (let p = frameReader.next(); p; p = frameReader.next()) this.frames.push(m.decodeClientMsg(p));
          },
        }),
      };
      this.datagrams = {
        maxDatagramSize: 1200,
        readable: dgIncoming,
        writable: new WritableStream({ write: (chunk) => { this.datagramsSent.push(m.decodeDatagram(chunk)); } }),
      };
    }

    async createBidirectionalStream() { return this.stream; }
    /** The server sends a frame. */
    send(msg) { this.streamCtl.enqueue(m.encodeFrame(m.encodeServerMsg(msg))); }
    /** The server sends a datagram. */
    datagram(dg) { this.dgCtl.enqueue(m.encodeDatagram(dg)); }
    /** The server closes the session. */
    serverClose() { this.streamCtl.close(); this.resolveClosed({ closeCode: 0, reason: '' }); }
    /** The client closes the session. */
    close(info) { this.closedWith = info ?? {}; this.resolveClosed(info ?? { closeCode: 0, reason: '' }); }
    sent(type) { return this.frames.filter((f) => f.type === type); }
  }

  /** A fake WebSocket: what the client sends is decoded into `units` ({frame} or {datagram}). */
  class FakeWebSocket extends EventTarget {
    static all = [];
    /** When set, new sockets fail to open (error, then close 1006). */
    static refuse = false;

    constructor(url, protocols) {
      super();
      FakeWebSocket.all.push(this);
      this.url = url;
      this.protocols = protocols;
      this.binaryType = 'blob';
      this.readyState = 0;
      this.units = [];
      this.closedWith = null;
      setTimeout(() => {
        if (FakeWebSocket.refuse) {
          this.readyState = 3;
          this.dispatchEvent(new Event('error'));
          this.dispatchEvent(Object.assign(new Event('close'), { code: 1006, reason: '' }));
        } else {
          this.readyState = 1;
          this.dispatchEvent(new Event('open'));
        }
      }, 0);
    }

    send(data) {
      if (this.readyState !== 1) throw new Error(`send in readyState ${this.readyState}`);
      const u = new Uint8Array(ArrayBuffer.isView(data) ? data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength) : data);
      if (u[0] === 0) this.units.push({ frame: m.decodeClientMsg(u.subarray(1)) });
      else if (u[0] === 1) this.units.push({ datagram: m.decodeDatagram(u.subarray(1)) });
      else this.units.push({ bad: Array.from(u) });
    }

    /** The client closes the socket. */
    close(code, reason) {
      this.closedWith = { code, reason };
      if (this.readyState === 3) return;
      this.readyState = 3;
      setTimeout(() => this.dispatchEvent(Object.assign(new Event('close'), { code: code ?? 1005, reason: reason ?? '' })), 0);
    }

    /** The server sends one unit: a tag and bytes. */
    unit(tag, bytes) {
      const u = new Uint8Array(1 + bytes.length);
      u[0] = tag;
      u.set(bytes, 1);
      this.message(u.buffer);
    }
    /** The server sends a WebSocket message (an ArrayBuffer, or a string for a text message). */
    message(data) { this.dispatchEvent(new MessageEvent('message', { data })); }
    /** The server sends a frame (a ServerMsg) or a datagram. */
    tell(msg) { this.unit(0, m.encodeServerMsg(msg)); }
    datagram(dg) { this.unit(1, m.encodeDatagram(dg)); }
    /** The server closes the socket with `status`. */
    serverClose(status, reason = '') {
      this.readyState = 3;
      this.dispatchEvent(Object.assign(new Event('close'), { code: status, reason }));
    }
    get frames() { return this.units.filter((u) => u.frame).map((u) => u.frame); }
    get datagramsSent() { return this.units.filter((u) => u.datagram).map((u) => u.datagram); }
    sent(type) { return this.frames.filter((f) => f.type === type); }
  }

  const realWebTransport = globalThis.WebTransport;
  const realWebSocket = globalThis.WebSocket;
  const realFetch = globalThis.fetch;
  globalThis.WebTransport = FakeTransport;
  globalThis.WebSocket = FakeWebSocket;
  /** What the fake /api/webtransport answers; `null` makes it answer 404. */
  let serverInfo;
  const defaultInfo = {
    url: 'https://localhost:4433/signal',
    serverCertificateHashes: [{ algorithm: 'sha-256', value: btoa('\x01\x02\x03') }],
    websocket: 'ws://localhost:4433/signal',
  };
  serverInfo = defaultInfo;
  let fetches = 0;
  globalThis.fetch = async (url) => {
    fetches++;
    check(String(url).endsWith('/api/webtransport'), `fetched ${url}`);
    if (serverInfo === null) return new Response('not here', { status: 404 });
    return new Response(JSON.stringify(serverInfo));
  };

  const newSession = (opts = {}) => {
    const s = new m.QuicmatchSession({
      base: 'http://localhost:1/',
      initialBackoffMs: 20,
      maxBackoffMs: 80,
      capacityBackoffMs: 300,
      chatResendMs: 40,
      chatMaxResends: 2,
      earlyChatMs: 1000,
      keepAliveMs: 0,
      ...opts,
    });
    const events = [];
    for (const type of ['transport', 'open', 'waiting', 'matched', 'offer', 'answer', 'ice', 'chat', 'chat-ack', 'chat-failed',
      'partner-disconnected', 'pong', 'closing', 'error', 'close', 'statechange']) {
      s.addEventListener(type, (e) => {
        // An error's detail is a QuicmatchError, whose message is not an own enumerable field.
        if (type === 'error') check(e.detail instanceof m.QuicmatchError, `error event detail ${e.detail}`);
        events.push({ type, ...e.detail, message: e.detail?.message });
      });
    }
    const of = (type) => events.filter((e) => e.type === type);
    return { s, events, of };
  };
  const profile = { name: 'Ann', age: 30, gender: 'Female' };

  try {
    // --- connect, join, match, relay -------------------------------------------
    {
      FakeTransport.all = [];
      const { s, of } = newSession();
      const joined = s.join(profile);
      await until(() => of('open').length === 1, 'open');
      const t = FakeTransport.all[0];
      check(t.url === 'https://localhost:4433/signal', `url ${t.url}`);
      const hash = t.options.serverCertificateHashes?.[0];
      check(hash?.algorithm === 'sha-256' && show(Array.from(hash.value)) === '[1,2,3]', `hashes ${show(t.options)}`);
      await until(() => t.frames.length >= 2, 'first frames');
      check(t.frames[0].type === 'Ping', `first frame is ${show(t.frames[0])}`);
      check(s.transport === 'webtransport', `transport getter ${s.transport}`);
      check(show(of('transport')) === show([{ type: 'transport', transport: 'webtransport', url: t.url, fallback: false, reason: null }]),
        `transport event ${show(of('transport'))}`);
      check(show(t.frames[1]) === show({ type: 'Join', profile }), `join frame ${show(t.frames[1])}`);

      t.send({ type: 'Waiting', queue_position: 3 });
      await until(() => of('waiting').length === 1, 'waiting');
      check(of('waiting')[0].queuePosition === 3 && s.state === 'waiting', 'waiting position');
      check(show(await joined) === show({ type: 'waiting', queuePosition: 3 }), 'join() resolves with the first answer');

      const iceServers = [
        { urls: ['stun:a'], username: null, credential: null },
        { urls: ['turn:b'], username: 'u', credential: 'c' },
      ];
      t.send({ type: 'Matched', match_id: 7, partner: { name: 'Bo', age: 40, gender: 'Male' }, initiator: true, ice_servers: iceServers });
      await until(() => of('matched').length === 1, 'matched');
      const matched = of('matched')[0];
      check(matched.matchId === 7 && matched.initiator === true && matched.partner.name === 'Bo', `matched ${show(matched)}`);
      // RTCIceServer: absent fields left out, never null.
      check(show(matched.iceServers) === show([{ urls: ['stun:a'] }, { urls: ['turn:b'], username: 'u', credential: 'c' }]),
        `iceServers ${show(matched.iceServers)}`);

      check(s.sendOffer('v=0 offer') === true, 'sendOffer');
      s.sendIce({ candidate: 'candidate:1', sdpMid: '0', sdpMLineIndex: 0, usernameFragment: 'uf' });
      s.sendIce(null);
      await until(() => t.sent('Ice').length === 2, 'ice frames');
      check(show(t.sent('Offer')[0]) === show({ type: 'Offer', match_id: 7, sdp: 'v=0 offer' }), 'offer frame');
      check(show(t.sent('Ice')[0].candidate) === show({ candidate: 'candidate:1', sdp_mid: '0', sdp_m_line_index: 0, username_fragment: 'uf' }), 'ice frame');
      check(show(t.sent('Ice')[1].candidate) === show({ candidate: '', sdp_mid: null, sdp_m_line_index: null, username_fragment: null }),
        `end-of-candidates frame ${show(t.sent('Ice')[1])}`);

      // Relay of an older match is ignored; the current one is delivered.
      t.send({ type: 'Answer', match_id: 6, sdp: 'stale' });
      t.send({ type: 'Ice', match_id: 6, candidate: { candidate: 'x', sdp_mid: null, sdp_m_line_index: null, username_fragment: null } });
      t.send({ type: 'Answer', match_id: 7, sdp: 'v=0 answer' });
      t.send({ type: 'Ice', match_id: 7, candidate: { candidate: 'y', sdp_mid: '1', sdp_m_line_index: 1, username_fragment: null } });
      await until(() => of('ice').length === 1, 'ice event');
      check(of('answer').length === 1 && of('answer')[0].sdp === 'v=0 answer', `answers ${show(of('answer'))}`);
      check(show(of('ice')[0].candidate) === show({ candidate: 'y', sdpMid: '1', sdpMLineIndex: 1, usernameFragment: null }), 'ice event shape');

      // --- chat: ack, dedupe, resend -----------------------------------------------
      t.datagram({ type: 'Chat', match_id: 7, seq: 1, text: 'hello' });
      t.datagram({ type: 'Chat', match_id: 7, seq: 1, text: 'hello' }); // a resend: shown once, acked twice
      t.datagram({ type: 'Chat', match_id: 6, seq: 2, text: 'stale' }); // an ended match: ignored
      await until(() => t.datagramsSent.filter((d) => d.type === 'ChatAck').length === 2, 'two acks');
      check(of('chat').length === 1 && of('chat')[0].text === 'hello', `chats ${show(of('chat'))}`);
      check(t.datagramsSent.every((d) => d.type !== 'ChatAck' || (d.match_id === 7 && d.seq === 1)), 'acks carry the seq');

      const delivered = s.chat('hi there');
      await until(() => t.datagramsSent.filter((d) => d.type === 'Chat').length >= 2, 'a resend');
      const chats = t.datagramsSent.filter((d) => d.type === 'Chat');
      const seq = chats[0].seq;
      check(chats.every((d) => d.seq === seq && d.match_id === 7 && d.text === 'hi there'), 'resend keeps the seq');
      t.datagram({ type: 'ChatAck', match_id: 7, seq });
      await until(() => of('chat-ack').length === 1, 'chat-ack');
      const receipt = await delivered;
      check(receipt.seq === seq && receipt.matchId === 7 && typeof receipt.rttMs === 'number', `chat() resolves on the ack: ${show(receipt)}`);
      const resent = t.datagramsSent.length;
      await new Promise((r) => setTimeout(r, 150)); // several resend periods: no more copies after the ack
      check(t.datagramsSent.length === resent, 'no resend after the ack');

      // Unacknowledged: given up after chatMaxResends resends.
      const lost = outcome(s.chat('into the void'));
      await until(() => of('chat-failed').length === 1, 'chat-failed');
      check((await lost) === 'ChatFailed', 'the lost chat rejects with ChatFailed');
      const lostSeq = of('chat-failed')[0].seq;
      check(t.datagramsSent.filter((d) => d.type === 'Chat' && d.seq === lostSeq).length === 3, 'sent once plus two resends');

      // Limits: empty, over 1000 bytes, over the datagram size, not a string.
      const errorsBefore = of('error').length;
      check((await outcome(s.chat(''))) === 'EmptyChat', 'empty chat refused');
      check((await outcome(s.chat('é'.repeat(501)))) === 'TooLarge', '1002-byte chat refused');
      check((await outcome(s.chat(42))) === 'InvalidArgument', 'a chat that is not a string is refused');
      t.datagrams.maxDatagramSize = 100;
      check((await outcome(s.chat('x'.repeat(200)))) === 'DatagramTooLarge', 'datagram size checked');
      t.datagrams.maxDatagramSize = 1200;
      check(of('error').length === errorsBefore, 'a refused chat rejects its promise, no error event');
      quiet(s.chat('x'.repeat(1000)));
      check(t.datagramsSent.some((d) => d.type === 'Chat' && d.text.length === 1000), '1000-byte chat accepted');

      // --- a new match's chat can come before its Matched frame ------------------------
      t.send({ type: 'PartnerDisconnected', match_id: 7 });
      await until(() => of('partner-disconnected').length === 1, 'partner-disconnected');
      check(of('partner-disconnected')[0].reason === 'partner-left' && s.matchId === null, 'match ended');
      t.datagram({ type: 'Chat', match_id: 8, seq: 1, text: 'early bird' });
      await new Promise((r) => setTimeout(r, 30));
      check(of('chat').length === 1, 'early chat held back until Matched');
      t.send({ type: 'Matched', match_id: 8, partner: { name: 'Cy', age: 22, gender: 'Male' }, initiator: false, ice_servers: [] });
      await until(() => of('chat').length === 2, 'early chat delivered');
      check(of('chat')[1].matchId === 8 && of('chat')[1].text === 'early bird', 'early chat belongs to match 8');
      check(t.datagramsSent.some((d) => d.type === 'ChatAck' && d.match_id === 8 && d.seq === 1), 'early chat acked');
      check(s.sendOffer('x') === true && t.frames.at(-1).match_id === 8, 'relay uses the new match id');

      // stop(): Stop frame, match over locally.
      s.stop();
      await until(() => t.sent('Stop').length === 1, 'Stop frame');
      check(s.state === 'waiting' && s.matchId === null, `after stop: ${s.state}`);
      check(s.sendAnswer('late') === false && of('error').at(-1).code === 'NotMatched', 'relay refused when not matched');

      // ping()
      const rtt = s.ping();
      await until(() => t.sent('Ping').length === 2, 'second Ping');
      t.send({ type: 'Pong', nonce: t.sent('Ping')[1].nonce });
      check(typeof (await rtt) === 'number', 'ping resolves with the round trip');

      // Server errors become error events.
      t.send({ type: 'Error', code: 'RateLimited', message: 'slow down' });
      await until(() => of('error').some((e) => e.fromServer), 'server error');
      check(of('error').find((e) => e.fromServer).code === 'RateLimited', 'server error code');

      // --- Closing 3: reconnect soon and join again with the same profile -----------
      t.send({ type: 'Matched', match_id: 9, partner: { name: 'Di', age: 50, gender: 'Male' }, initiator: false, ice_servers: [] });
      await until(() => s.matchId === 9, 'matched 9');
      t.send({ type: 'Closing', code: 3, reason: 'server shutting down' });
      t.serverClose();
      await until(() => of('close').length === 1, 'close after Closing 3');
      const c3 = of('close')[0];
      check(c3.code === 3 && c3.reconnectInMs !== null && c3.reconnectInMs <= 1000, `close 3: ${show(c3)}`);
      check(of('partner-disconnected').at(-1).reason === 'connection-lost', 'lost connection ends the match');
      await until(() => of('open').length === 2, 'reopen after Closing 3');
      const t2 = FakeTransport.all[1];
      await until(() => t2.sent('Join').length === 1, 'Join after reconnect');
      check(show(t2.sent('Join')[0].profile) === show(profile), 're-joined with the last profile');

      // --- Closing 4: back off at least capacityBackoffMs --------------------------
      t2.send({ type: 'Closing', code: 4, reason: 'server at capacity' });
      t2.serverClose();
      await until(() => of('close').length === 2, 'close after Closing 4');
      check(of('close')[1].code === 4 && of('close')[1].reconnectInMs >= 300, `close 4: ${show(of('close')[1])}`);
      await until(() => of('open').length === 3, 'reopen after Closing 4', 3000);
      const t3 = FakeTransport.all[2];

      // --- lost connection, no Closing: exponential back-off ------------------------------
      t3.serverClose();
      await until(() => of('close').length === 3, 'close without Closing');
      check(of('close')[2].code === null && of('close')[2].reconnectInMs !== null, `plain close: ${show(of('close')[2])}`);
      await until(() => of('open').length === 4, 'reopen after a lost connection');
      const t4 = FakeTransport.all[3];

      // --- leave(), then Closing 2: no reconnect -------------------------------------
      s.leave();
      await until(() => t4.sent('Leave').length === 1, 'Leave frame');
      check(s.state === 'idle' && !s.joined, 'idle after leave');
      t4.send({ type: 'Closing', code: 2, reason: 'abuse' });
      t4.serverClose();
      await until(() => of('close').length === 4, 'close after Closing 2');
      check(of('close')[3].code === 2 && of('close')[3].reconnectInMs === null, `close 2: ${show(of('close')[3])}`);
      await new Promise((r) => setTimeout(r, 200));
      check(FakeTransport.all.length === 4 && s.state === 'disconnected', 'no reconnect after Closing 2');
    }

    // --- Closing 1: no reconnect either; a user close never reconnects ---------------
    {
      FakeTransport.all = [];
      const { s, of } = newSession();
      await s.connect();
      const t = FakeTransport.all[0];
      t.send({ type: 'Closing', code: 1, reason: 'protocol violation' });
      t.serverClose();
      await until(() => of('close').length === 1, 'close after Closing 1');
      check(of('close')[0].reconnectInMs === null, 'no reconnect after Closing 1');

      await s.connect(); // an explicit connect() starts again
      const t2 = FakeTransport.all[1];
      s.close();
      check(t2.closedWith?.closeCode === 0, `user close uses code 0: ${show(t2.closedWith)}`);
      check(of('close').at(-1).byUser === true && s.state === 'closed', 'user close event');
      await new Promise((r) => setTimeout(r, 200));
      check(FakeTransport.all.length === 2, 'no reconnect after a user close');
    }

    // --- join tokens: a fresh one for every connection attempt, in the URL ---------
    {
      FakeTransport.all = [];
      let minted = 0;
      const { s } = newSession({ token: async () => `tok.en-${++minted}` });
      await s.connect();
      const t = FakeTransport.all[0];
      check(t.url === 'https://localhost:4433/signal?token=tok.en-1', `token url ${t.url}`);
      t.serverClose();
      await until(() => FakeTransport.all.length === 2, 'reconnected with a token');
      check(FakeTransport.all[1].url === 'https://localhost:4433/signal?token=tok.en-2', `fresh token ${FakeTransport.all[1].url}`);
      s.close();
      FakeTransport.all = [];
      const fixed = newSession({ token: 'a b' }).s;
      await fixed.connect();
      check(FakeTransport.all[0].url === 'https://localhost:4433/signal?token=a%20b', `string token ${FakeTransport.all[0].url}`);
      fixed.close();
    }

    // --- a frame with an impossible length: the client closes with code 1 ----------
    {
      FakeTransport.all = [];
      const { s, of } = newSession();
      await s.connect();
      const t = FakeTransport.all[0];
      t.streamCtl.enqueue(new Uint8Array([0, 1, 0, 1, 0]));
      await until(() => t.closedWith !== null, 'client closes the transport');
      check(t.closedWith.closeCode === 1, `closed with ${show(t.closedWith)}`);
      check(of('error').some((e) => e.code === 'ProtocolViolation'), 'ProtocolViolation error');
      // A bad (but skippable) frame is only an error event.
      await until(() => of('open').length === 2, 'reconnected');
      const t2 = FakeTransport.all[1];
      t2.streamCtl.enqueue(new Uint8Array([0, 0, 0, 1, 0x42]));
      t2.send({ type: 'Pong', nonce: 12345 });
      await until(() => of('error').some((e) => e.code === 'BadServerFrame'), 'BadServerFrame');
      check(t2.closedWith === null, 'a bad frame does not close the session');
      s.close();
    }

    // --- the WebSocket carrier (transport: 'websocket') -------------------------------
    {
      FakeTransport.all = [];
      FakeWebSocket.all = [];
      const { s, of } = newSession({ transport: 'websocket' });
      quiet(s.join(profile));
      await until(() => of('open').length === 1, 'open over the WebSocket');
      const w = FakeWebSocket.all[0];
      check(FakeTransport.all.length === 0, 'no WebTransport when the WebSocket is forced');
      check(w.url === 'ws://localhost:4433/signal', `WebSocket url from /api/webtransport: ${w.url}`);
      check(show(w.protocols) === show(['quicmatch.v1']), `subprotocol offered: ${show(w.protocols)}`);
      check(w.binaryType === 'arraybuffer', `binaryType ${w.binaryType}`);
      check(s.transport === 'websocket', `transport getter ${s.transport}`);
      check(show(of('transport')) === show([{ type: 'transport', transport: 'websocket', url: 'ws://localhost:4433/signal', fallback: false, reason: 'chosen by the transport option' }]),
        `transport event ${show(of('transport'))}`);
      check(of('open')[0].transport === 'websocket', 'open says websocket');
      await until(() => w.frames.length >= 2, 'first units');
      check(w.frames[0].type === 'Ping' && show(w.frames[1]) === show({ type: 'Join', profile }), `first units ${show(w.units)}`);

      // Frames both ways, relay filtering as over WebTransport.
      w.tell({ type: 'Matched', match_id: 21, partner: { name: 'Bo', age: 33, gender: 'Male' }, initiator: true, ice_servers: [] });
      await until(() => of('matched').length === 1, 'matched over the WebSocket');
      check(s.sendOffer('v=0 ws offer') === true, 'sendOffer over the WebSocket');
      await until(() => w.sent('Offer').length === 1, 'Offer unit');
      check(show(w.sent('Offer')[0]) === show({ type: 'Offer', match_id: 21, sdp: 'v=0 ws offer' }), 'Offer unit content');
      w.tell({ type: 'Answer', match_id: 20, sdp: 'stale' });
      w.tell({ type: 'Answer', match_id: 21, sdp: 'v=0 ws answer' });
      await until(() => of('answer').length === 1, 'answer over the WebSocket');
      check(of('answer')[0].sdp === 'v=0 ws answer', 'stale answer ignored');

      // A 0x01 unit is a datagram: a chat is acked with a 0x01 unit, a repeat shown once.
      w.datagram({ type: 'Chat', match_id: 21, seq: 5, text: 'over tcp' });
      w.datagram({ type: 'Chat', match_id: 21, seq: 5, text: 'over tcp' });
      await until(() => w.datagramsSent.filter((d) => d.type === 'ChatAck').length === 2, 'acks as 0x01 units');
      check(of('chat').length === 1 && of('chat')[0].text === 'over tcp', `chats ${show(of('chat'))}`);
      check(w.datagramsSent.every((d) => d.type !== 'ChatAck' || (d.match_id === 21 && d.seq === 5)), 'ack content');
      const delivered = s.chat('x'.repeat(1000));
      await until(() => w.datagramsSent.some((d) => d.type === 'Chat'), 'chat as a 0x01 unit');
      const seq = w.datagramsSent.find((d) => d.type === 'Chat').seq;
      w.datagram({ type: 'ChatAck', match_id: 21, seq });
      await until(() => of('chat-ack').length === 1, 'chat-ack over the WebSocket');
      check((await outcome(delivered)) === 'resolved', 'a 1000-byte chat fits a unit and is acknowledged');
      check(w.units.every((u) => !u.bad), 'every unit the client sent is tagged 0x00 or 0x01');

      // Units that are not protocol: BadServerFrame, skipped, the session goes on.
      const before = of('error').filter((e) => e.code === 'BadServerFrame').length;
      w.message('a text message');
      w.message(new Uint8Array([7, 1, 2]).buffer);
      w.message(new Uint8Array([0]).buffer);
      w.message(new ArrayBuffer(0));
      w.unit(0, new Uint8Array([0x42]));
      w.unit(1, new Uint8Array([0x42])); // a malformed datagram: dropped quietly, as over WebTransport
      w.tell({ type: 'Pong', nonce: 999 });
      await until(() => of('error').filter((e) => e.code === 'BadServerFrame').length === before + 5, 'five bad units reported');
      check(w.closedWith === null && s.state === 'matched', 'bad units do not end the session');

      // Closing 3 then status 4003: reconnect soon, over the WebSocket again, and re-join.
      w.tell({ type: 'Closing', code: 3, reason: 'server shutting down' });
      w.serverClose(4003, 'server shutting down');
      await until(() => of('close').length === 1, 'close after Closing 3');
      const c3 = of('close')[0];
      check(c3.code === 3 && c3.reconnectInMs !== null && c3.reconnectInMs <= 1000, `close 3: ${show(c3)}`);
      check(of('partner-disconnected').at(-1)?.reason === 'connection-lost', 'the match ends with the connection');
      check(s.transport === null, 'no transport while disconnected');
      await until(() => of('open').length === 2, 'reopen after Closing 3');
      const w2 = FakeWebSocket.all[1];
      await until(() => w2.sent('Join').length === 1, 'Join after the reconnect');
      check(FakeTransport.all.length === 0 && of('transport').length === 2, 'still the WebSocket');

      // Closing 4 then 4004: back off at least capacityBackoffMs.
      w2.tell({ type: 'Closing', code: 4, reason: 'server at capacity' });
      w2.serverClose(4004, 'server at capacity');
      await until(() => of('close').length === 2, 'close after Closing 4');
      check(of('close')[1].code === 4 && of('close')[1].reconnectInMs >= 300, `close 4: ${show(of('close')[1])}`);
      await until(() => of('open').length === 3, 'reopen after Closing 4');
      const w3 = FakeWebSocket.all[2];

      // A plain close (no Closing, no 4000+ status): back-off.
      w3.serverClose(1006);
      await until(() => of('close').length === 3, 'close without Closing');
      check(of('close')[2].code === null && of('close')[2].reconnectInMs !== null, `plain close: ${show(of('close')[2])}`);
      await until(() => of('open').length === 4, 'reopen after a lost WebSocket');
      const w4 = FakeWebSocket.all[3];

      // Status 4002 whose Closing unit was lost: the status decides, no reconnect.
      w4.serverClose(4002, 'abuse');
      await until(() => of('close').length === 4, 'close 4002');
      check(of('close')[3].code === 2 && of('close')[3].reconnectInMs === null, `close 4002: ${show(of('close')[3])}`);
      await new Promise((r) => setTimeout(r, 150));
      check(FakeWebSocket.all.length === 4 && s.state === 'disconnected', 'no reconnect after 4002');

      // A user close: status 4000 + 0.
      await s.connect();
      const w5 = FakeWebSocket.all[4];
      s.close();
      check(w5.closedWith?.code === 4000, `user close status: ${show(w5.closedWith)}`);
      await new Promise((r) => setTimeout(r, 100));
      check(FakeWebSocket.all.length === 5, 'no reconnect after a user close');
    }

    // --- where the WebSocket URL comes from; tokens ----------------------------------
    {
      FakeWebSocket.all = [];
      let fetched = fetches;
      const explicit = newSession({ transport: 'websocket', websocketUrl: 'ws://elsewhere:81/signal', token: 'a b' }).s;
      await explicit.connect();
      check(FakeWebSocket.all[0].url === 'ws://elsewhere:81/signal?token=a%20b', `explicit url and token: ${FakeWebSocket.all[0].url}`);
      check(fetches === fetched, 'no /api/webtransport lookup with an explicit WebSocket URL');
      explicit.close();

      // No /api/webtransport and the module is not from `base`'s origin: no URL to guess.
      serverInfo = null;
      FakeWebSocket.all = [];
      const { s, of } = newSession({ transport: 'websocket' });
      quiet(s.connect());
      await until(() => of('error').some((e) => e.code === 'ConnectFailed'), 'ConnectFailed without a WebSocket URL');
      check(FakeWebSocket.all.length === 0 && /websocketUrl/.test(of('error')[0].message), `no guess: ${of('error')[0].message}`);
      s.close();
      serverInfo = defaultInfo;
    }

    // --- 'auto': no WebTransport in the browser --------------------------------------
    {
      FakeTransport.all = [];
      FakeWebSocket.all = [];
      delete globalThis.WebTransport;
      const { s, of } = newSession();
      await s.connect();
      globalThis.WebTransport = FakeTransport;
      check(s.transport === 'websocket' && FakeWebSocket.all.length === 1, `without WebTransport: ${s.transport}`);
      const ev = of('transport')[0];
      check(ev.fallback === true && /no WebTransport/.test(ev.reason), `transport event ${show(ev)}`);
      s.close();
      // Not remembered: WebTransport did not fail, it was not there.
      const again = newSession();
      await again.s.connect();
      check(again.s.transport === 'webtransport' && FakeTransport.all.length === 1, `with WebTransport back: ${again.s.transport}`);
      again.s.close();
    }

    // --- 'auto': WebTransport and the WebSocket both fail: nothing remembered ----------
    {
      FakeTransport.all = [];
      FakeWebSocket.all = [];
      FakeTransport.mode = 'fail';
      FakeWebSocket.refuse = true;
      const { s, of } = newSession();
      quiet(s.connect());
      await until(() => of('error').some((e) => e.code === 'ConnectFailed'), 'ConnectFailed when both fail');
      const msg = of('error').find((e) => e.code === 'ConnectFailed').message;
      check(/WebTransport: .*handshake failed.*; WebSocket: /.test(msg), `both failures reported: ${msg}`);
      check(FakeTransport.all.length === 1 && FakeWebSocket.all.length === 1, 'one of each tried');
      s.close();
      FakeTransport.mode = 'ready';
      FakeWebSocket.refuse = false;
      const again = newSession();
      await again.s.connect();
      check(again.s.transport === 'webtransport', `WebTransport tried again after both failed: ${again.s.transport}`);
      again.s.close();
    }

    // --- isSupported(), Unsupported, injected factories ----------------------------
    {
      check(m.QuicmatchSession.isSupported() && m.QuicmatchSession.isSupported('websocket') && m.QuicmatchSession.isSupported('webtransport'),
        'isSupported() with both transports');
      delete globalThis.WebTransport;
      delete globalThis.WebSocket;
      try {
        check(!m.QuicmatchSession.isSupported() && !m.QuicmatchSession.isSupported('webtransport'), 'isSupported() without either');
        const before = fetches;
        const { s, of } = newSession();
        check((await outcome(s.connect())) === 'Unsupported', 'connect() rejects with Unsupported');
        check((await outcome(s.join(profile))) === 'Unsupported', 'join() rejects with Unsupported');
        check(fetches === before && s.state === 'disconnected' && of('error').length === 0, 'nothing is tried without a transport');
        FakeTransport.all = [];
        const wt = newSession({ transport: 'webtransport', webTransport: (url, o) => new FakeTransport(url, o) }).s;
        await wt.connect();
        check(wt.transport === 'webtransport' && FakeTransport.all.length === 1, 'an injected WebTransport factory is used');
        wt.close();
        FakeWebSocket.all = [];
        const ws = newSession({ webSocket: (url, p) => new FakeWebSocket(url, p) }).s;
        await ws.connect();
        check(ws.transport === 'websocket' && FakeWebSocket.all.length === 1, 'an injected WebSocket factory is used');
        ws.close();
      } finally {
        globalThis.WebTransport = FakeTransport;
        globalThis.WebSocket = FakeWebSocket;
      }
    }

    // --- connecting fails: connect() still settles, then the session stops -----------
    {
      FakeTransport.all = [];
      FakeTransport.mode = 'fail';
      const { s, of } = newSession({ transport: 'webtransport' });
      const started = performance.now();
      check((await outcome(s.connect({ timeoutMs: 250 }))) === 'Timeout', 'connect() times out when every attempt fails');
      const took = performance.now() - started;
      check(took >= 240 && took < 2000, `connect() gave up after ${took} ms`);
      check(of('error').filter((e) => e.code === 'ConnectFailed').length >= 2, 'each failed attempt is a ConnectFailed event');
      check(s.state === 'disconnected', `stopped after the timeout: ${s.state}`);
      const states = of('statechange').map((e) => e.state);
      check(states[0] === 'connecting' && states.includes('reconnecting') && states.at(-1) === 'disconnected', `states ${show(states)}`);
      const tried = FakeTransport.all.length;
      await sleep(200);
      check(FakeTransport.all.length === tried, 'no attempt after connect() gave up');

      // An AbortSignal: Aborted, and the attempt under way is closed.
      FakeTransport.mode = 'hang';
      const ctl = new AbortController();
      const aborted = outcome(s.connect({ signal: ctl.signal }));
      await until(() => FakeTransport.all.length === tried + 1, 'an attempt under way');
      ctl.abort();
      check((await aborted) === 'Aborted', 'connect() rejects with Aborted');
      await until(() => FakeTransport.all.at(-1).closedWith !== null, 'the hanging WebTransport closed');
      check(s.state === 'disconnected', `stopped after the abort: ${s.state}`);
      check((await outcome(s.connect({ signal: AbortSignal.abort() }))) === 'Aborted', 'an aborted signal rejects at once');

      // /api/webtransport failing: ConnectFailed events, and connect() settles.
      FakeTransport.mode = 'ready';
      serverInfo = null;
      check((await outcome(s.connect({ timeoutMs: 150 }))) === 'Timeout', 'connect() settles while /api/webtransport fails');
      check(/404/.test(of('error').at(-1).message), `the failed lookup is reported: ${of('error').at(-1).message}`);
      serverInfo = defaultInfo;
      s.close();
    }

    // --- close() while connecting settles everything ---------------------------------
    {
      FakeTransport.all = [];
      FakeTransport.mode = 'hang';
      const { s } = newSession({ transport: 'webtransport' });
      const connecting = outcome(s.connect());
      const joining = outcome(s.join(profile));
      await until(() => FakeTransport.all.length === 1, 'an attempt under way');
      s.close();
      check((await connecting) === 'Closed' && (await joining) === 'Closed', 'close() rejects connect() and join() with Closed');
      await until(() => FakeTransport.all[0].closedWith !== null, 'the attempt under way closed');
      const refused = await Promise.all([s.connect(), s.join(profile), s.ping(), s.chat('hi'), s.reconnectNow()].map(outcome));
      check(refused.every((c) => c === 'Closed'), `a closed session refuses everything: ${show(refused)}`);
      FakeTransport.mode = 'ready';
      await sleep(50);
      check(s.state === 'closed' && FakeTransport.all.length === 1, 'nothing more after close()');
    }

    // --- pings: a timeout, a dead connection, a drop --------------------------------
    {
      FakeTransport.all = [];
      const { s, of } = newSession({ keepAliveMs: 60, pingTimeoutMs: 100 });
      await s.connect();
      const t = FakeTransport.all[0];
      check((await outcome(s.ping({ timeoutMs: 30 }))) === 'PingTimeout', 'an unanswered ping() rejects with PingTimeout');
      // The fake never answers the keep-alive pings: the connection is declared dead and replaced.
      await until(() => of('close').length === 1, 'a dead connection noticed', 2000);
      check(/keep-alive/.test(of('close')[0].reason) && of('close')[0].reconnectInMs !== null, `dead: ${show(of('close')[0])}`);
      check(t.closedWith !== null, 'the dead transport is closed');
      await until(() => of('open').length === 2, 'reconnected after a dead ping');
      const pending = outcome(s.ping({ timeoutMs: 5000 }));
      FakeTransport.all[1].serverClose();
      check((await pending) === 'NotConnected', 'a ping rejects when the connection drops');
      s.close();
    }

    // --- back-off: doubles from initialBackoffMs, jittered, capped at maxBackoffMs ----
    {
      FakeTransport.all = [];
      FakeTransport.mode = 'fail';
      const { s, of } = newSession({ transport: 'webtransport', initialBackoffMs: 20, maxBackoffMs: 80 });
      quiet(s.connect({ timeoutMs: 5000 }));
      await until(() => of('close').length >= 6, 'six failed attempts', 3000);
      s.close();
      FakeTransport.mode = 'ready';
      const delays = of('close').slice(0, 6).map((c) => c.reconnectInMs);
      const expected = delays.map((_, i) => Math.min(80, 20 * 2 ** i));
      check(delays.every((d, i) => d >= Math.floor(expected[i] / 2) && d <= expected[i]),
        `back-off ${show(delays)} within half to all of ${show(expected)}`);
    }

    // --- join(): refusal, no re-join, timeout, leave, the leave race, chat abort -------
    {
      FakeTransport.all = [];
      const { s, of } = newSession();
      const refused = s.join({ name: 'Ann', age: 30, gender: 'Female' }).then(() => null, (e) => e);
      await until(() => FakeTransport.all[0]?.sent('Join').length === 1, 'Join');
      const t = FakeTransport.all[0];
      t.send({ type: 'Error', code: 'InvalidProfile', message: 'age is out of range' });
      const err = await refused;
      check(err instanceof m.QuicmatchError && err.code === 'InvalidProfile' && err.fromServer === true,
        `join() rejects with the server's refusal: ${err}`);
      check(!of('error').some((e) => e.code === 'InvalidProfile'), 'the refusal is not also an error event');
      check(!s.joined && s.state === 'idle', `not joined after the refusal: ${s.state}`);
      check((await outcome(s.join({ name: 'Ann', age: 300, gender: 'Female' }))) === 'InvalidArgument', 'a profile that cannot be encoded');
      t.serverClose();
      await until(() => of('open').length === 2, 'reconnected');
      const t2 = FakeTransport.all[1];
      await until(() => t2.frames.length >= 1, 'the first frame after reconnecting');
      await sleep(30);
      check(t2.sent('Join').length === 0, 'no re-join after InvalidProfile');

      // No answer: Timeout, and the session leaves.
      check((await outcome(s.join(profile, { timeoutMs: 60 }))) === 'Timeout', 'join() times out');
      await until(() => t2.sent('Leave').length === 1, 'the Leave after a join() timed out');
      check(!s.joined && s.state === 'idle', `a join() that timed out leaves: ${s.state}`);
      /** leave(), and the nonce of the Ping that follows the Leave. */
      const leave = async () => {
        const pings = t2.sent('Ping').length;
        s.leave();
        await until(() => t2.sent('Ping').length === pings + 1, 'the Ping after the Leave');
        return t2.sent('Ping').at(-1).nonce;
      };
      // leave() while a join() waits: Left.
      const left = outcome(s.join(profile));
      let barrier = await leave();
      check((await left) === 'Left', 'leave() rejects a pending join() with Left');
      const joining = s.join(profile);
      t2.send({ type: 'Pong', nonce: barrier }); // the server saw the Leave...
      t2.send({ type: 'Waiting', queue_position: 1 }); // ...and answers the new Join
      check(show(await joining) === show({ type: 'waiting', queuePosition: 1 }), 'joined again after leaving');

      // The leave race: what the server sent before it saw the Leave is ignored.
      barrier = await leave();
      t2.send({ type: 'Matched', match_id: 31, partner: { name: 'Bo', age: 40, gender: 'Male' }, initiator: true, ice_servers: [] });
      await sleep(30);
      check(of('matched').length === 0 && s.state === 'idle' && s.matchId === null, 'a Matched sent before the server saw the Leave is ignored');
      const rejoined = s.join(profile);
      t2.send({ type: 'Waiting', queue_position: 2 }); // also from before the Leave
      await sleep(30);
      check(of('waiting').length === 1 && s.state === 'idle', `a Waiting sent before the Leave is ignored: ${s.state}`);
      t2.send({ type: 'Pong', nonce: barrier });
      t2.send({ type: 'Matched', match_id: 32, partner: { name: 'Cy', age: 41, gender: 'Male' }, initiator: false, ice_servers: [] });
      const answer = await rejoined;
      check(answer.type === 'matched' && answer.matchId === 32 && s.matchId === 32, `the answer to the new Join counts: ${show(answer)}`);
      check((await outcome(s.join(profile))) === 'AlreadyJoined', 'join() while matched');

      // chat() with an AbortSignal: Aborted, and no more resends.
      const ctl = new AbortController();
      const aborted = outcome(s.chat('wait for me', { signal: ctl.signal }));
      ctl.abort();
      check((await aborted) === 'Aborted', 'chat() rejects with Aborted');
      const copies = t2.datagramsSent.filter((d) => d.text === 'wait for me').length;
      await sleep(120);
      check(t2.datagramsSent.filter((d) => d.text === 'wait for me').length === copies, 'no resend after the abort');
      s.close();
    }

    // --- reconnectNow(), statechange, read-only state ---------------------------------
    {
      FakeTransport.all = [];
      const { s, of } = newSession({ initialBackoffMs: 5000, maxBackoffMs: 5000 });
      await s.connect();
      FakeTransport.all[0].serverClose();
      await until(() => s.state === 'reconnecting', 'reconnecting');
      check(of('close')[0].reconnectInMs >= 2500, `a long back-off: ${of('close')[0].reconnectInMs}`);
      const asked = performance.now();
      await s.reconnectNow();
      check(performance.now() - asked < 1000 && FakeTransport.all.length === 2 && s.state === 'idle', 'reconnectNow() skips the back-off');
      const states = of('statechange').map((e) => `${e.previous}>${e.state}`);
      check(show(states) === show(['disconnected>connecting', 'connecting>idle', 'idle>reconnecting', 'reconnecting>idle']), `statechange ${show(states)}`);
      for (const key of ['state', 'matchId', 'partner', 'initiator', 'profile', 'joined', 'transport']) {
        const was = s[key];
        try {
          s[key] = 'written';
        } catch {
          // a getter without a setter: a TypeError in strict code
        }
        check(s[key] === was, `${key} is read-only`);
      }
      s.close();
    }

    // --- the network and the page's visibility ------------------------------------------
    {
      FakeTransport.all = [];
      const env = new EventTarget();
      env.document = new EventTarget();
      env.document.visibilityState = 'hidden';
      const { s, of } = newSession({ environment: env, initialBackoffMs: 5000, maxBackoffMs: 5000, probeTimeoutMs: 80 });
      await s.connect();
      FakeTransport.all[0].serverClose();
      await until(() => s.state === 'reconnecting', 'reconnecting');
      env.dispatchEvent(new Event('online'));
      await until(() => of('open').length === 2, 'reconnected at once when the browser went online', 1000);
      const t2 = FakeTransport.all[1];
      await until(() => t2.sent('Ping').length === 1, 'the first Ping');
      const pings = t2.sent('Ping').length;
      env.document.visibilityState = 'visible';
      env.document.dispatchEvent(new Event('visibilitychange'));
      await until(() => t2.sent('Ping').length === pings + 1, 'a probe when the page became visible');
      t2.send({ type: 'Pong', nonce: t2.sent('Ping').at(-1).nonce });
      await sleep(150);
      check(s.transport !== null && FakeTransport.all.length === 2, 'an answered probe keeps the connection');
      env.dispatchEvent(new Event('offline'));
      await until(() => of('close').length === 2, 'an unanswered probe after going offline', 1000);
      check(/went offline/.test(of('close')[1].reason), `reason: ${of('close')[1].reason}`);
      s.close();
      env.dispatchEvent(new Event('online'));
      await sleep(30);
      check(FakeTransport.all.length === 2, 'a closed session ignores the network');
    }

    // --- 'auto': WebTransport never ready, the WebSocket works: remembered --------------
    // (Last: this sets the module's memory for the page's life.)
    {
      FakeTransport.all = [];
      FakeWebSocket.all = [];
      FakeTransport.mode = 'hang';
      const { s, of } = newSession({ webTransportTimeoutMs: 150 });
      const started = performance.now();
      quiet(s.join(profile));
      await until(() => of('open').length === 1, 'open after the fallback');
      const waited = performance.now() - started;
      check(waited >= 140, `waited ${waited} ms for WebTransport`);
      check(FakeTransport.all.length === 1 && FakeTransport.all[0].closedWith !== null, 'the WebTransport attempt is closed');
      check(s.transport === 'websocket', `after the timeout: ${s.transport}`);
      const ev = of('transport')[0];
      check(ev.transport === 'websocket' && ev.fallback === true && /not ready within 150 ms/.test(ev.reason), `fallback event ${show(ev)}`);
      const w = FakeWebSocket.all[0];
      await until(() => w.sent('Join').length === 1, 'Join over the fallback');

      // A reconnect goes straight to the WebSocket.
      FakeTransport.mode = 'ready';
      w.serverClose(1006);
      const lost = performance.now();
      await until(() => of('open').length === 2, 'reopen');
      check(FakeTransport.all.length === 1, 'no WebTransport attempt on the reconnect');
      check(performance.now() - lost < 140 + 80, 'the reconnect did not wait for WebTransport');
      const ev2 = of('transport')[1];
      check(ev2.transport === 'websocket' && ev2.fallback === true && /earlier on this page/.test(ev2.reason), `remembered: ${show(ev2)}`);
      s.close();
      // So does a new session in 'auto' mode; forcing WebTransport still works.
      const other = newSession();
      await other.s.connect();
      check(other.s.transport === 'websocket' && FakeTransport.all.length === 1, `a new auto session: ${other.s.transport}`);
      other.s.close();
      const forced = newSession({ transport: 'webtransport' });
      await forced.s.connect();
      check(forced.s.transport === 'webtransport' && FakeTransport.all.length === 2, `forced WebTransport: ${forced.s.transport}`);
      forced.s.close();
      check((() => { try { newSession({ transport: 'carrier pigeon' }); return false; } catch (e) { return e instanceof RangeError; } })(),
        'an unknown transport option throws');
    }
  } catch (err) {
    failures.push(`stopped: ${err.stack ?? err}`);
  } finally {
    globalThis.WebTransport = realWebTransport;
    globalThis.WebSocket = realWebSocket;
    globalThis.fetch = realFetch;
  }
  return { checks, failures };
})
