// The quicmatch web app: a join form, a WebRTC call with the matched partner,
// text chat, Next and Leave. Signaling goes through QuicmatchSession
// (quicmatch.js), over WebTransport or its WebSocket fallback; the call itself
// is peer to peer.

import { QuicmatchSession, MAX_CHAT_LEN, utf8Length } from './quicmatch.js';

const $ = (id) => document.getElementById(id);
const ui = {
  status: $('status'),
  notice: $('notice'),
  form: $('join-form'),
  name: $('name'),
  age: $('age'),
  gender: $('gender'),
  join: $('join'),
  call: $('call'),
  remoteVideo: $('remote-video'),
  localVideo: $('local-video'),
  unmute: $('unmute'),
  next: $('next'),
  leave: $('leave'),
  chatLog: $('chat-log'),
  chatForm: $('chat-form'),
  chatInput: $('chat-input'),
  chatSend: $('chat-send'),
};

/**
 * Everything the app knows, exposed as `window.quicmatchApp` for debugging and tests.
 * `state`: 'start' (form shown), 'connecting', 'waiting', 'matched' or 'closed'
 * (disconnected for good by the server).
 */
const app = {
  /** @type {QuicmatchSession|null} */
  session: null,
  /** @type {RTCPeerConnection|null} */
  pc: null,
  state: 'start',
  /** The current match: {matchId, partner, initiator}, or null. */
  match: null,
  /** @type {MediaStream|null} */
  localStream: null,
  /** Remote ICE candidates that came before the remote description. */
  pendingIce: [],
  /** Chat lines we sent and that are not acknowledged yet, by `${matchId}:${seq}`. */
  sentLines: new Map(),
  /** Measurements (ms): join → session open, join → call connected, match → call connected, chat round trips. */
  timings: { joinAt: null, matchedAt: null, opens: [], connects: [], chatRttMs: [] },
  log: window.__log ?? [],
};
window.quicmatchApp = app;

const trace = (...args) => console.info('[app]', ...args);

// -- status and notices ------------------------------------------------------

function setStatus(text) {
  ui.status.textContent = text;
}

function showNotice(text) {
  ui.notice.textContent = text;
  ui.notice.hidden = false;
  trace('notice:', text);
}

function clearNotice() {
  ui.notice.hidden = true;
  ui.notice.textContent = '';
}

/** What to tell a person about an `error` event. */
function errorText({ code, message }) {
  switch (code) {
    case 'InvalidProfile': return `Please check your details: ${message}.`;
    case 'RateLimited': return 'Slow down a little: some messages were dropped.';
    case 'ServerBusy': return 'The server is busy. Please try again in a moment.';
    case 'TooLarge': return 'That was too long to send.';
    case 'DatagramTooLarge': return 'That message is too long for this connection; try a shorter one.';
    case 'NotMatched': return "You're not talking to anyone right now.";
    case 'NotConnected': return 'Not connected to the server right now.';
    case 'EmptyChat': return 'Type something first.';
    case 'ConnectFailed': return `Could not reach the server (${message}).`;
    default: return `Something went wrong (${code}: ${message}).`;
  }
}

/** What to tell a person when the connection closed. */
function closeText({ code, reason, reconnectInMs }) {
  const secs = reconnectInMs === null ? 0 : Math.max(1, Math.round(reconnectInMs / 1000));
  switch (code) {
    case 1: return `The server ended the session because of a protocol error (${reason}). Press Start to try again.`;
    case 2: return `The server ended the session: ${reason}. Press Start to try again later.`;
    case 3: return 'The server is restarting. Reconnecting…';
    case 4: return `The server is full right now. Trying again in ${secs} s…`;
    default:
      return reconnectInMs === null
        ? `Disconnected (${reason}).`
        : `Connection lost (${reason}). Reconnecting in ${secs} s…`;
  }
}

// -- chat log ----------------------------------------------------------------

function addChatLine(kind, who, text) {
  const li = document.createElement('li');
  li.className = `chat-line ${kind}`;
  if (who) {
    const name = document.createElement('span');
    name.className = 'who';
    name.textContent = who;
    li.append(name, ' ');
  }
  const body = document.createElement('span');
  body.className = 'text';
  body.textContent = text;
  li.append(body);
  ui.chatLog.append(li);
  ui.chatLog.scrollTop = ui.chatLog.scrollHeight;
  return li;
}

function setChatEnabled(on) {
  ui.chatInput.disabled = !on;
  ui.chatSend.disabled = !on;
}

// -- camera and call -------------------------------------------------------------

async function startCamera() {
  if (app.localStream) return;
  try {
    app.localStream = await navigator.mediaDevices.getUserMedia({
      video: { width: { ideal: 640 }, height: { ideal: 480 } },
      audio: true,
    });
  } catch (err) {
    // The call still works one way: we see and hear the partner.
    console.warn('camera/microphone unavailable:', err);
    showNotice('No camera or microphone: you can still see and hear your partner.');
  }
  ui.localVideo.srcObject = app.localStream;
}

function stopCamera() {
  for (const track of app.localStream?.getTracks() ?? []) track.stop();
  app.localStream = null;
  ui.localVideo.srcObject = null;
}

/** Plays the remote video; if the browser refuses sound without a gesture, plays muted and offers a button. */
function playRemote() {
  ui.remoteVideo.play().catch((err) => {
    if (err.name !== 'NotAllowedError') return; // e.g. AbortError when the stream changed
    ui.remoteVideo.muted = true;
    ui.unmute.hidden = false;
    ui.remoteVideo.play().catch((e) => console.warn('remote video will not play:', e));
  });
}

/** Sets up the RTCPeerConnection of a new match; the initiator makes the offer. */
function startCall({ matchId, initiator, iceServers }) {
  endCall();
  const pc = new RTCPeerConnection({ iceServers });
  app.pc = pc;
  app.pendingIce = [];
  // Handlers of a torn-down call must not touch the next one.
  const live = () => app.pc === pc;

  if (app.localStream) {
    for (const track of app.localStream.getTracks()) pc.addTrack(track, app.localStream);
  } else {
    pc.addTransceiver('audio', { direction: 'recvonly' });
    pc.addTransceiver('video', { direction: 'recvonly' });
  }

  // Trickle ICE: each candidate as it comes; null at the end becomes end-of-candidates ("").
  pc.addEventListener('icecandidate', (e) => {
    if (live()) app.session.sendIce(e.candidate);
  });
  pc.addEventListener('track', (e) => {
    if (!live()) return;
    const stream = e.streams[0] ?? new MediaStream([e.track]);
    if (ui.remoteVideo.srcObject !== stream) {
      ui.remoteVideo.srcObject = stream;
      playRemote();
    }
  });
  pc.addEventListener('connectionstatechange', () => {
    if (!live()) return;
    trace(`call ${matchId}: ${pc.connectionState}`);
    if (pc.connectionState === 'connected') {
      const now = performance.now();
      const t = app.timings;
      t.connects.push({ matchId, fromJoinMs: now - t.joinAt, fromMatchMs: now - t.matchedAt });
      setStatus(`Talking to ${app.match.partner.name}, ${app.match.partner.age}.`);
    } else if (pc.connectionState === 'failed') {
      showNotice('The video connection failed. Press Next to meet someone else.');
    }
  });

  if (initiator) {
    (async () => {
      await pc.setLocalDescription(await pc.createOffer());
      if (live()) app.session.sendOffer(pc.localDescription.sdp);
    })().catch((err) => console.error('creating the offer failed:', err));
  }
}

function endCall() {
  const pc = app.pc;
  app.pc = null;
  app.pendingIce = [];
  pc?.close();
  ui.remoteVideo.srcObject = null;
  ui.remoteVideo.muted = false;
  ui.unmute.hidden = true;
  app.match = null;
  setChatEnabled(false);
}

async function addIce(pc, candidate) {
  try {
    await pc.addIceCandidate(candidate);
  } catch (err) {
    console.warn('remote ICE candidate refused:', err);
  }
}

async function onOffer({ matchId, sdp }) {
  const pc = app.pc;
  if (!pc || app.match?.matchId !== matchId) return;
  await pc.setRemoteDescription({ type: 'offer', sdp });
  for (const c of app.pendingIce.splice(0)) await addIce(pc, c);
  await pc.setLocalDescription(await pc.createAnswer());
  if (app.pc === pc) app.session.sendAnswer(pc.localDescription.sdp);
}

async function onAnswer({ matchId, sdp }) {
  const pc = app.pc;
  if (!pc || app.match?.matchId !== matchId) return;
  await pc.setRemoteDescription({ type: 'answer', sdp });
  for (const c of app.pendingIce.splice(0)) await addIce(pc, c);
}

function onIce({ matchId, candidate }) {
  const pc = app.pc;
  if (!pc || app.match?.matchId !== matchId) return;
  if (pc.remoteDescription) addIce(pc, candidate);
  else app.pendingIce.push(candidate);
}

// -- session -------------------------------------------------------------------

function session() {
  if (app.session) return app.session;
  const s = new QuicmatchSession({
    logger: (level, message) => console[level](`[session] ${message}`),
  });
  app.session = s;
  const on = (type, handler) => s.addEventListener(type, (e) => handler(e.detail));

  on('transport', ({ transport, reason }) => {
    trace(`signaling over ${transport === 'websocket' ? `a WebSocket (${reason})` : 'WebTransport'}`);
  });
  on('open', () => {
    app.timings.opens.push(performance.now() - app.timings.joinAt);
    clearNotice();
    if (s.joined) setStatus('Connected. Finding someone…');
  });
  on('waiting', ({ queuePosition }) => {
    trace(`waiting at position ${queuePosition}`);
    app.state = 'waiting';
    setStatus(`Waiting for someone to talk to… you are number ${queuePosition} in the queue.`);
  });
  on('matched', (m) => {
    trace(`matched: match ${m.matchId} with ${m.partner.name}, initiator ${m.initiator}`);
    app.state = 'matched';
    app.timings.matchedAt = performance.now();
    clearNotice();
    startCall(m);
    app.match = { matchId: m.matchId, partner: m.partner, initiator: m.initiator };
    setStatus(`Matched with ${m.partner.name}, ${m.partner.age}. Connecting the call…`);
    addChatLine('system', '', `You're now talking to ${m.partner.name}, ${m.partner.age}. Say hi!`);
    setChatEnabled(true);
  });
  on('offer', (d) => onOffer(d).catch((err) => console.error('handling the offer failed:', err)));
  on('answer', (d) => onAnswer(d).catch((err) => console.error('handling the answer failed:', err)));
  on('ice', onIce);
  on('chat', ({ text }) => {
    addChatLine('theirs', app.match?.partner.name ?? 'Partner', text);
  });
  on('chat-ack', ({ matchId, seq, rttMs }) => {
    app.timings.chatRttMs.push(rttMs);
    const li = app.sentLines.get(`${matchId}:${seq}`);
    app.sentLines.delete(`${matchId}:${seq}`);
    li?.classList.replace('pending', 'delivered');
  });
  on('chat-failed', ({ matchId, seq }) => {
    const li = app.sentLines.get(`${matchId}:${seq}`);
    app.sentLines.delete(`${matchId}:${seq}`);
    if (li) {
      li.classList.replace('pending', 'failed');
      li.title = 'Not delivered';
    }
  });
  on('partner-disconnected', ({ matchId, reason }) => {
    trace(`match ${matchId} over: ${reason}`);
    const name = app.match?.partner.name ?? 'Your partner';
    endCall();
    app.state = 'waiting';
    if (reason === 'partner-left') {
      addChatLine('system', '', `${name} left.`);
      setStatus(`${name} left. Looking for someone new…`);
    } else {
      addChatLine('system', '', 'The connection dropped; the call ended.');
    }
  });
  on('error', (d) => {
    console.warn('[app] error event:', d.code, d.message);
    if (d.code === 'InvalidProfile') showForm();
    showNotice(errorText(d));
  });
  on('close', (d) => {
    trace('closed:', d);
    if (d.byUser) return;
    endCall();
    showNotice(closeText(d));
    if (d.reconnectInMs === null) {
      app.state = 'closed';
      showForm();
      setStatus('Disconnected.');
    } else {
      app.state = 'connecting';
      setStatus('Reconnecting…');
    }
  });
  on('state', updateControls);
  return s;
}

function updateControls() {
  const s = app.session;
  const connected = !!s && ['idle', 'waiting', 'matched'].includes(s.state);
  ui.next.disabled = !(connected && s.joined);
  ui.leave.disabled = !s?.joined;
}

function showForm() {
  ui.form.hidden = false;
  ui.call.hidden = true;
  ui.join.disabled = false;
}

function showCall() {
  ui.form.hidden = true;
  ui.call.hidden = false;
}

// -- user actions --------------------------------------------------------------

ui.form.addEventListener('submit', async (e) => {
  e.preventDefault();
  // Signaling falls back to a WebSocket where WebTransport is missing or
  // blocked; the camera still needs a secure context.
  if (!window.isSecureContext) {
    showNotice('This page needs to be opened over HTTPS (or on localhost).');
    return;
  }
  const profile = { name: ui.name.value.trim(), age: Number(ui.age.value), gender: ui.gender.value };
  ui.join.disabled = true;
  clearNotice();
  setStatus('Starting your camera…');
  await startCamera();
  showCall();
  ui.chatLog.replaceChildren();
  app.state = 'connecting';
  app.timings.joinAt = performance.now();
  setStatus('Connecting…');
  try {
    session().join(profile);
  } catch (err) {
    showForm();
    showNotice(`Please check your details: ${err.message}`);
    return;
  }
  updateControls();
});

ui.next.addEventListener('click', () => {
  const name = app.match?.partner.name;
  app.session?.stop();
  endCall();
  if (name) addChatLine('system', '', `You left ${name}.`);
  app.state = 'waiting';
  setStatus('Looking for someone new…');
});

ui.leave.addEventListener('click', () => {
  app.session?.leave();
  endCall();
  stopCamera();
  showForm();
  app.state = 'start';
  setStatus('You left. Press Start to chat again.');
  updateControls();
});

ui.chatForm.addEventListener('submit', (e) => {
  e.preventDefault();
  const text = ui.chatInput.value;
  if (!text.trim() || !app.session) return;
  if (utf8Length(text) > MAX_CHAT_LEN) {
    showNotice(`That message is too long (${MAX_CHAT_LEN} bytes at most).`);
    return;
  }
  const matchId = app.session.matchId;
  const seq = app.session.chat(text);
  if (seq === null) return; // the session's error event says why
  ui.chatInput.value = '';
  const li = addChatLine('mine pending', 'You', text);
  app.sentLines.set(`${matchId}:${seq}`, li);
});

ui.unmute.addEventListener('click', () => {
  ui.remoteVideo.muted = false;
  ui.unmute.hidden = true;
  playRemote();
});

// Tell the server at once when the page goes away, rather than after a timeout.
addEventListener('pagehide', () => app.session?.close());
// A page restored from the back/forward cache has a closed session: start afresh.
addEventListener('pageshow', (e) => {
  if (e.persisted) location.reload();
});

trace('ready');
