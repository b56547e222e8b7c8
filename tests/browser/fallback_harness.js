// The fallback on a timeout, in a real browser against a real server: the
// page's /api/webtransport names a WebTransport URL that never becomes ready
// (a UDP port that swallows packets), the session is given the right
// WebSocket URL. The session joins, is cut off once (its WebSocket closed
// from this side, as a lost connection would be) and reconnects.
//
// One async function expression, called with the module, the WebSocket URL
// and the timeout; resolves to what happened, which tests/browser.rs judges.
(async function fallback(m, websocketUrl, timeoutMs) {
  // Watch what the module opens: the URL of each WebTransport, each WebSocket.
  const webTransports = [];
  const webSockets = [];
  const RealWebTransport = window.WebTransport;
  const RealWebSocket = window.WebSocket;
  window.WebTransport = new Proxy(RealWebTransport, {
    construct(target, args) {
      webTransports.push(String(args[0]));
      return Reflect.construct(target, args);
    },
  });
  window.WebSocket = new Proxy(RealWebSocket, {
    construct(target, args) {
      const ws = Reflect.construct(target, args);
      webSockets.push(ws);
      return ws;
    },
  });

  const until = async (cond, what, ms = 20000) => {
    const end = performance.now() + ms;
    while (!cond()) {
      if (performance.now() > end) throw new Error(`timed out waiting for ${what}: ${JSON.stringify(events)}`);
      await new Promise((r) => setTimeout(r, 10));
    }
  };

  const events = [];
  const s = new m.QuicmatchSession({
    websocketUrl,
    webTransportTimeoutMs: timeoutMs,
    initialBackoffMs: 50,
    maxBackoffMs: 100,
    logger: (level, message) => console[level](`[session] ${message}`),
  });
  for (const type of ['transport', 'open', 'waiting', 'close', 'error']) {
    // An error's detail is a QuicmatchError: its message is not an own enumerable field.
    s.addEventListener(type, (e) => events.push({ type, at: performance.now(), ...e.detail, message: e.detail?.message }));
  }
  const of = (type) => events.filter((e) => e.type === type);

  try {
    const started = performance.now();
    s.join({ name: 'Fay', age: 40, gender: 'Female' }).catch(() => {});
    await until(() => of('waiting').length === 1, 'waiting over the fallback');
    const firstOpenMs = of('open')[0].at - started;
    const firstTransport = s.transport;
    const socketProtocol = webSockets[0]?.protocol;

    const cutAt = performance.now();
    webSockets[0].close();
    await until(() => of('waiting').length === 2, 'waiting again after the reconnect');
    const reopenMs = of('open')[1].at - cutAt;
    return {
      webTransports,
      webSockets: webSockets.length,
      socketProtocol,
      firstOpenMs,
      firstTransport,
      reopenMs,
      transport: s.transport,
      events: events.map(({ type, transport, fallback, reason, code, message }) => ({ type, transport, fallback, reason, code, message })),
    };
  } finally {
    s.close();
    window.WebTransport = RealWebTransport;
    window.WebSocket = RealWebSocket;
  }
})
