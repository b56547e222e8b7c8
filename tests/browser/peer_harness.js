// One side of a call, made with QuicmatchSession directly (not the app), so
// that a test can choose the session's options: here, the carrier. It joins,
// sets up an RTCPeerConnection with a data channel when matched (the
// initiator makes the offer), relays offer, answer and ICE through the
// session, and sends one chat line. What happened is kept in `window.peer`,
// which tests/browser.rs polls.
//
// One function expression, called with the module and
// {transport, name, gender, chat}; returns at once.
(function startPeer(m, opts) {
  const peer = {
    transports: [],
    state: 'joining',
    partner: null,
    initiator: null,
    sentOffer: false,
    gotOffer: false,
    sentAnswer: false,
    gotAnswer: false,
    iceSent: 0,
    iceReceived: 0,
    pcState: 'none',
    channelMessages: [],
    chats: [],
    acked: [],
    errors: [],
  };
  window.peer = peer;
  const s = new m.QuicmatchSession({
    transport: opts.transport,
    logger: (level, message) => console[level](`[session] ${message}`),
  });
  window.peerSession = s;
  const on = (type, handler) => s.addEventListener(type, (e) => {
    Promise.resolve(handler(e.detail)).catch((err) => peer.errors.push(`${type}: ${err}`));
  });
  let pc = null;
  let pendingIce = [];
  const addIce = (c) => pc.addIceCandidate(c).catch((err) => console.warn('ICE refused:', err));

  on('transport', ({ transport, reason }) => {
    peer.transports.push(transport);
    console.info(`[peer] signaling over ${transport}${reason ? ` (${reason})` : ''}`);
  });
  on('waiting', () => { peer.state = 'waiting'; });
  on('matched', async ({ partner, initiator, iceServers }) => {
    peer.state = 'matched';
    peer.partner = partner.name;
    peer.initiator = initiator;
    pc = new RTCPeerConnection({ iceServers });
    pendingIce = [];
    pc.addEventListener('icecandidate', (e) => {
      if (s.sendIce(e.candidate)) peer.iceSent++;
    });
    pc.addEventListener('connectionstatechange', () => { peer.pcState = pc.connectionState; });
    const use = (channel) => {
      channel.addEventListener('open', () => channel.send(`${opts.name} on the data channel`));
      channel.addEventListener('message', (e) => peer.channelMessages.push(e.data));
    };
    pc.addEventListener('datachannel', (e) => use(e.channel));
    // Chat through the session at once: it may reach the partner before its
    // own Matched does, which the session handles.
    s.chat(opts.chat).catch((e) => { if (e.code !== 'ChatFailed') peer.errors.push(`chat: ${e.code}: ${e.message}`); });
    if (initiator) {
      use(pc.createDataChannel('call'));
      await pc.setLocalDescription(await pc.createOffer());
      peer.sentOffer = s.sendOffer(pc.localDescription.sdp);
    }
  });
  on('offer', async ({ sdp }) => {
    peer.gotOffer = true;
    await pc.setRemoteDescription({ type: 'offer', sdp });
    for (const c of pendingIce.splice(0)) await addIce(c);
    await pc.setLocalDescription(await pc.createAnswer());
    peer.sentAnswer = s.sendAnswer(pc.localDescription.sdp);
  });
  on('answer', async ({ sdp }) => {
    peer.gotAnswer = true;
    await pc.setRemoteDescription({ type: 'answer', sdp });
    for (const c of pendingIce.splice(0)) await addIce(c);
  });
  on('ice', ({ candidate }) => {
    peer.iceReceived++;
    if (pc.remoteDescription) return addIce(candidate);
    pendingIce.push(candidate);
  });
  on('chat', ({ text }) => { peer.chats.push(text); });
  on('chat-ack', ({ seq }) => { peer.acked.push(seq); });
  on('error', ({ code, message }) => { peer.errors.push(`${code}: ${message}`); });
  s.join({ name: opts.name, age: 30, gender: opts.gender }).catch((e) => { peer.errors.push(`join: ${e.code}: ${e.message}`); });
  return true;
})
