// Two WebTransport sessions from one page to examples/thin_floor.rs (the
// thin WebTransport layer), pinned by serverCertificateHashes: each opens
// its signaling stream and joins (one male, one female); both must get
// `Matched`; an Offer from the initiator must reach the other as a relayed
// Offer; a chat datagram must cross the other way; a Ping on a third
// session must get its Pong; a second bidirectional stream on that session
// must be refused (reset); then every session closes with a code and reason.
//
// One async function expression: (module, url, base64 hash) → report.
(async function thinCheck(m, url, hashB64) {
  const hash = Uint8Array.from(atob(hashB64), (c) => c.charCodeAt(0));
  const opts = { serverCertificateHashes: [{ algorithm: 'sha-256', value: hash }] };
  const log = [];
  const withTimeout = (p, ms, what) => Promise.race([
    p,
    new Promise((_, reject) => setTimeout(() => reject(new Error(`timed out: ${what}`)), ms)),
  ]);

  async function open(label) {
    const t0 = performance.now();
    const wt = new WebTransport(url, opts);
    await withTimeout(wt.ready, 10000, `${label} ready`);
    const readyMs = performance.now() - t0;
    const stream = await withTimeout(wt.createBidirectionalStream(), 5000, `${label} stream`);
    const writer = stream.writable.getWriter();
    const reader = stream.readable.getReader();
    const frames = new m.FrameReader();
    const inbox = [];
    let waiter = null;
    (async () => {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        // A copy in this realm (Firefox hands out arrays that fail `instanceof`).
        frames.push(new Uint8Array(value));
        let payload;
        while ((payload = frames.next()) !== null) {
          inbox.push(m.decodeServerMsg(payload));
          if (waiter) waiter();
        }
      }
    })().catch((e) => log.push(`${label} read: ${e}`));
    const next = async (type) => {
      const end = performance.now() + 10000;
      for (;;) {
        const i = inbox.findIndex((msg) => msg.type === type);
        if (i >= 0) return inbox.splice(i, 1)[0];
        if (performance.now() > end) throw new Error(`${label}: no ${type}; got ${JSON.stringify(inbox)}; log ${JSON.stringify(log)}`);
        await new Promise((r) => { waiter = r; setTimeout(r, 50); });
      }
    };
    const send = (msg) => writer.write(m.encodeFrame(m.encodeClientMsg(msg)));
    const dgReader = wt.datagrams.readable.getReader();
    const dgWriter = wt.datagrams.writable.getWriter();
    return { wt, send, next, dgReader, dgWriter, readyMs };
  }

  const a = await open('a');
  const b = await open('b');
  await a.send({ type: 'Join', profile: { name: 'Ann', age: 30, gender: 'Female' } });
  await b.send({ type: 'Join', profile: { name: 'Bob', age: 31, gender: 'Male' } });
  const ma = await a.next('Matched');
  const mb = await b.next('Matched');
  const [init, other, mInit] = mb.initiator ? [b, a, mb] : [a, b, ma];
  const sdp = 'v=0 '.repeat(500);
  await init.send({ type: 'Offer', match_id: mInit.match_id, sdp });
  const offer = await other.next('Offer');

  // A chat datagram, other → initiator (resent a few times: datagrams may drop).
  const chat = m.encodeDatagram({ type: 'Chat', match_id: mInit.match_id, seq: 7, text: 'hello over a datagram' });
  let gotChat = null;
  for (let i = 0; i < 10 && !gotChat; i++) {
    await other.dgWriter.write(chat);
    const r = await Promise.race([
      init.dgReader.read(),
      new Promise((res) => setTimeout(() => res(null), 300)),
    ]);
    if (r && r.value) gotChat = m.decodeDatagram(new Uint8Array(r.value));
  }

  const c = await open('c');
  await c.send({ type: 'Ping', nonce: 42 });
  const pong = await c.next('Pong');
  // A second stream on c: the layer refuses it (RESET_STREAM / STOP_SENDING 0x10).
  let extra = 'not refused';
  try {
    const s2 = await c.wt.createBidirectionalStream();
    const w2 = s2.writable.getWriter();
    await w2.write(new Uint8Array([1, 2, 3]));
    const r2 = s2.readable.getReader();
    const res = await withTimeout(r2.read(), 5000, 'extra stream read');
    extra = `read ${JSON.stringify(res)}`;
  } catch (e) {
    extra = `refused: ${e.name}: ${e.message} (streamErrorCode ${e.streamErrorCode}, source ${e.source})`;
  }

  const closes = [];
  for (const [label, s] of [['a', a], ['b', b], ['c', c]]) {
    s.wt.close({ closeCode: 4000, reason: `bye from ${label}` });
    const info = await withTimeout(s.wt.closed.then((x) => x, (e) => ({ error: String(e) })), 5000, `${label} closed`);
    closes.push(info);
  }
  return {
    matched: [ma.type, mb.type, ma.match_id === mb.match_id],
    initiators: [ma.initiator, mb.initiator],
    offer: { type: offer.type, sdpLen: offer.sdp.length, sameMatch: offer.match_id === mInit.match_id },
    chat: gotChat,
    pong,
    extra,
    closes,
    readyMs: [a.readyMs, b.readyMs, c.readyMs],
    log,
  };
})
