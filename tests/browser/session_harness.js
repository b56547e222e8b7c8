// Exercises QuicmatchSession (web/quicmatch.js) against a scripted fake
// server: the page's WebTransport and fetch are replaced by fakes that record
// what the session sends and let each check play the server's part. This
// covers what a real server rarely does on cue: stale relay messages, chat
// datagrams racing their Matched frame, lost acks, Closing codes.
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

    constructor(url, options) {
      FakeTransport.all.push(this);
      this.url = url;
      this.options = options;
      this.frames = [];
      this.datagramsSent = [];
      this.closedWith = null;
      this.ready = Promise.resolve();
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

  const realWebTransport = globalThis.WebTransport;
  const realFetch = globalThis.fetch;
  globalThis.WebTransport = FakeTransport;
  globalThis.fetch = async (url) => {
    check(String(url).endsWith('/api/webtransport'), `fetched ${url}`);
    return new Response(JSON.stringify({
      url: 'https://localhost:4433/signal',
      serverCertificateHashes: [{ algorithm: 'sha-256', value: btoa('\x01\x02\x03') }],
    }));
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
    for (const type of ['open', 'waiting', 'matched', 'offer', 'answer', 'ice', 'chat', 'chat-ack', 'chat-failed',
      'partner-disconnected', 'pong', 'closing', 'error', 'close']) {
      s.addEventListener(type, (e) => events.push({ type, ...e.detail }));
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
      s.join(profile);
      await until(() => of('open').length === 1, 'open');
      const t = FakeTransport.all[0];
      check(t.url === 'https://localhost:4433/signal', `url ${t.url}`);
      const hash = t.options.serverCertificateHashes?.[0];
      check(hash?.algorithm === 'sha-256' && show(Array.from(hash.value)) === '[1,2,3]', `hashes ${show(t.options)}`);
      await until(() => t.frames.length >= 2, 'first frames');
      check(t.frames[0].type === 'Ping', `first frame is ${show(t.frames[0])}`);
      check(show(t.frames[1]) === show({ type: 'Join', profile }), `join frame ${show(t.frames[1])}`);

      t.send({ type: 'Waiting', queue_position: 3 });
      await until(() => of('waiting').length === 1, 'waiting');
      check(of('waiting')[0].queuePosition === 3 && s.state === 'waiting', 'waiting position');

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

      const seq = s.chat('hi there');
      check(typeof seq === 'number', 'chat returns a seq');
      await until(() => t.datagramsSent.filter((d) => d.type === 'Chat').length >= 2, 'a resend');
      const chats = t.datagramsSent.filter((d) => d.type === 'Chat');
      check(chats.every((d) => d.seq === seq && d.match_id === 7 && d.text === 'hi there'), 'resend keeps the seq');
      t.datagram({ type: 'ChatAck', match_id: 7, seq });
      await until(() => of('chat-ack').length === 1, 'chat-ack');
      const resent = t.datagramsSent.length;
      await new Promise((r) => setTimeout(r, 150)); // several resend periods: no more copies after the ack
      check(t.datagramsSent.length === resent, 'no resend after the ack');

      // Unacknowledged: given up after chatMaxResends resends.
      const lost = s.chat('into the void');
      await until(() => of('chat-failed').length === 1, 'chat-failed');
      check(of('chat-failed')[0].seq === lost, 'the lost chat is reported');
      check(t.datagramsSent.filter((d) => d.type === 'Chat' && d.seq === lost).length === 3, 'sent once plus two resends');

      // Limits: empty, over 1000 bytes, over the datagram size.
      check(s.chat('') === null && of('error').at(-1).code === 'EmptyChat', 'empty chat refused');
      check(s.chat('é'.repeat(501)) === null && of('error').at(-1).code === 'TooLarge', '1002-byte chat refused');
      t.datagrams.maxDatagramSize = 100;
      check(s.chat('x'.repeat(200)) === null && of('error').at(-1).code === 'DatagramTooLarge', 'datagram size checked');
      t.datagrams.maxDatagramSize = 1200;
      check(s.chat('x'.repeat(1000)) !== null, '1000-byte chat accepted');

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
  } catch (err) {
    failures.push(`stopped: ${err.stack ?? err}`);
  } finally {
    globalThis.WebTransport = realWebTransport;
    globalThis.fetch = realFetch;
  }
  return { checks, failures };
})
