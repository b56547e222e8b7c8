// The quicmatch web app: a join form, a WebRTC call with the matched partner,
// text chat, Next and Leave. Signaling goes through QuicmatchSession
// (quicmatch.js), over WebTransport or its WebSocket fallback; the call itself
// is peer to peer.
//
// The page tells its state in the DOM, for style.css and for anyone reading
// it: `data-state` on <main> is 'loading' (before this module runs), 'start'
// (the form), 'connecting', 'reconnecting', 'waiting', 'matched' or 'closed'
// (the server ended the session for good; the form again), and `data-call`
// is 'connecting', 'connected' or 'failed' while a call is set up.
//
// Diagnostics: with `?debug` in the URL, `window.quicmatchApp` is the `app`
// object below and log.js keeps the page's log in `window.__log`. Without it,
// neither exists.

import { QuicmatchSession, MAX_CHAT_LEN, utf8Length } from './quicmatch.js';
import { STRINGS } from './strings.js';

// -- strings -------------------------------------------------------------------

/** The text of `key` with its placeholders filled in, as a plain string (for attributes). */
function t(key, vars = {}) {
  return STRINGS[key].replace(/\{(\w+)\}/g, (whole, name) => (name in vars ? String(vars[name]) : whole));
}

/** Sets `el`'s content to the text of `key`, each placeholder's value isolated in a `<bdi dir="auto">`. */
function fill(el, key, vars = {}) {
  const nodes = [];
  let last = 0;
  const template = STRINGS[key];
  for (const m of template.matchAll(/\{(\w+)\}/g)) {
    nodes.push(template.slice(last, m.index));
    if (m[1] in vars) {
      const bdi = document.createElement('bdi');
      bdi.dir = 'auto';
      bdi.dataset.var = m[1];
      bdi.textContent = String(vars[m[1]]);
      nodes.push(bdi);
    } else {
      nodes.push(m[0]);
    }
    last = m.index + m[0].length;
  }
  nodes.push(template.slice(last));
  el.replaceChildren(...nodes.filter((n) => n !== ''));
  return el;
}

/** Fills index.html's marked texts from STRINGS. */
function applyStrings() {
  document.documentElement.lang = STRINGS.lang;
  document.documentElement.dir = STRINGS.dir;
  for (const el of document.querySelectorAll('[data-i18n]')) el.textContent = t(el.dataset.i18n);
  for (const el of document.querySelectorAll('[data-i18n-placeholder]')) el.placeholder = t(el.dataset.i18nPlaceholder);
  for (const el of document.querySelectorAll('[data-i18n-label]')) el.setAttribute('aria-label', t(el.dataset.i18nLabel));
}

// -- the page's parts and state ---------------------------------------------------

const $ = (id) => document.getElementById(id);
const ui = {
  main: document.querySelector('main'),
  status: $('status'),
  notice: $('notice'),
  noticeText: $('notice-text'),
  noticeActions: $('notice-actions'),
  retry: $('retry'),
  withoutCamera: $('without-camera'),
  form: $('join-form'),
  name: $('name'),
  age: $('age'),
  gender: $('gender'),
  join: $('join'),
  callHeading: $('call-heading'),
  remoteVideo: $('remote-video'),
  localVideo: $('local-video'),
  partner: $('partner'),
  unmute: $('unmute'),
  next: $('next'),
  leave: $('leave'),
  chatLog: $('chat-log'),
  chatForm: $('chat-form'),
  chatInput: $('chat-input'),
  chatSend: $('chat-send'),
};

/** How long a matched call may take to connect before the page gives up on it and moves on. */
const CALL_CONNECT_MS = 20000;

const DEBUG = new URLSearchParams(location.search).has('debug');

/** Everything the app knows; `window.quicmatchApp` with `?debug`. */
const app = {
  /** @type {QuicmatchSession|null} */
  session: null,
  /** True from Start until Leave or the end of the session: the person wants to chat. */
  joined: false,
  /** True after the server ended the session for good (until the next Start). */
  closedForGood: false,
  /** @type {RTCPeerConnection|null} */
  pc: null,
  /** The current match: {matchId, partner, initiator}, or null. */
  match: null,
  /** @type {MediaStream|null} */
  localStream: null,
  /** Every camera and microphone track this page has opened (all 'ended' once released). */
  tracks: [],
  /** Join without asking for the camera (chosen after a camera problem). */
  withoutCamera: false,
  /** The last camera error, as `name: message`. */
  cameraError: null,
  /** Whether this browser can run a session here (checked at load). */
  canStart: false,
  /** Focus left the chat box because it was disabled: give it back when the chat is on again. */
  refocusChat: false,
  /** Remote ICE candidates that came before the remote description. */
  pendingIce: [],
  /** Gives up on a call that does not connect in time. */
  callTimer: null,
  /** The notice shown: 'support', 'camera', 'connection' or 'error', or null. */
  notice: null,
  /** Measurements (ms): join → session open, join → call connected, match → call connected, chat round trips. */
  timings: { joinAt: null, matchedAt: null, opens: [], connects: [], chatRttMs: [] },
};
if (DEBUG) window.quicmatchApp = app;

const trace = (...args) => console.info('[app]', ...args);

// -- status, notices, state ----------------------------------------------------------

function setStatus(key, vars) {
  fill(ui.status, key, vars);
}

/**
 * Shows a notice of `kind` ('support', 'camera', 'connection', 'error'). It
 * stays until something clears that kind; a camera notice offers Retry.
 */
function showNotice(kind, key, vars) {
  app.notice = kind;
  fill(ui.noticeText, key, vars);
  ui.notice.dataset.kind = kind;
  ui.notice.hidden = false;
  ui.noticeActions.hidden = kind !== 'camera';
  ui.withoutCamera.hidden = kind !== 'camera' || key === 'cameraBusy' || key === 'cameraDenied';
  trace(`notice (${kind}):`, ui.noticeText.textContent);
}

/** Clears the notice if it is of one of `kinds`. */
function clearNotice(...kinds) {
  if (!kinds.includes(app.notice)) return;
  app.notice = null;
  ui.notice.hidden = true;
  ui.noticeActions.hidden = true;
  ui.noticeText.replaceChildren();
  delete ui.notice.dataset.kind;
}

/** The page's state (see the top of this file), from the app's and the session's. */
function pageState() {
  if (!app.joined) return app.closedForGood ? 'closed' : 'start';
  switch (app.session?.state) {
    case 'reconnecting': return 'reconnecting';
    case 'waiting': return 'waiting';
    case 'matched': return 'matched';
    default: return 'connecting'; // connecting, or connected and not yet answered
  }
}

/** Puts the state in the DOM and the controls in step with it. */
function render() {
  const state = pageState();
  if (ui.main.dataset.state !== state) {
    trace(`page state: ${ui.main.dataset.state} → ${state}`);
    ui.main.dataset.state = state;
  }
  const s = app.session;
  const connected = !!s && ['idle', 'waiting', 'matched'].includes(s.state);
  ui.next.disabled = !(app.joined && connected);
  ui.leave.disabled = !app.joined;
}

/** What to tell a person about a QuicmatchError. */
function showError(err) {
  const vars = { code: err.code, message: err.message };
  const keys = {
    InvalidProfile: 'errInvalidProfile',
    RateLimited: 'errRateLimited',
    ServerBusy: 'errServerBusy',
    TooLarge: 'errTooLarge',
    DatagramTooLarge: 'errDatagramTooLarge',
    NotMatched: 'errNotMatched',
    NotConnected: 'errNotConnected',
    EmptyChat: 'errEmptyChat',
    Timeout: 'errTimeout',
    Unsupported: 'errUnsupported',
  };
  if (err.code === 'ConnectFailed') showNotice('connection', 'errConnectFailed', vars);
  else showNotice('error', keys[err.code] ?? 'errOther', vars);
}

/** What to tell a person when the connection closed (not by us). */
function showClose({ code, reason, reconnectInMs }) {
  const secs = reconnectInMs === null ? 0 : Math.max(1, Math.round(reconnectInMs / 1000));
  const vars = { reason, secs };
  const key = code === 1 ? 'closeProtocol'
    : code === 2 ? 'closePolicy'
    : code === 3 ? 'closeRestart'
    : code === 4 ? 'closeFull'
    : reconnectInMs === null ? 'closeGone' : 'closeLost';
  showNotice('connection', key, vars);
}

// -- chat log ----------------------------------------------------------------

/** Adds a line; `who` and `text` are shown isolated (`dir="auto"`). */
function addChatLine(kind, who, text) {
  const li = document.createElement('li');
  li.className = `chat-line ${kind}`;
  const name = document.createElement('span');
  name.className = 'who';
  name.dir = 'auto';
  name.textContent = who;
  const body = document.createElement('span');
  body.className = 'text';
  body.dir = 'auto';
  body.textContent = text;
  li.append(name, ' ', body);
  return appendLine(li);
}

/** Adds a line of the page's own (`key` of STRINGS). */
function addSystemLine(key, vars) {
  const li = document.createElement('li');
  li.className = 'chat-line system';
  fill(li, key, vars);
  return appendLine(li);
}

function appendLine(li) {
  ui.chatLog.append(li);
  ui.chatLog.scrollTop = ui.chatLog.scrollHeight;
  return li;
}

function setChatEnabled(on) {
  const hadFocus = ui.chatInput === document.activeElement || ui.chatSend === document.activeElement;
  ui.chatInput.disabled = !on;
  ui.chatSend.disabled = !on;
  // A disabled control loses focus to the body: keep it in the call, and
  // give it back to the chat box when the chat comes back.
  if (!on && hadFocus) {
    ui.callHeading.focus();
    app.refocusChat = true;
  } else if (on && app.refocusChat) {
    app.refocusChat = false;
    if (document.activeElement === ui.callHeading) ui.chatInput.focus();
  }
}

// -- camera -----------------------------------------------------------------------

/**
 * Opens the camera and microphone; resolves to null, or the key of the
 * notice that says what went wrong.
 */
async function startCamera() {
  if (app.localStream) return null;
  if (!navigator.mediaDevices?.getUserMedia) return window.isSecureContext ? 'cameraNoApi' : 'insecure';
  try {
    const stream = await navigator.mediaDevices.getUserMedia({
      video: { width: { ideal: 640 }, height: { ideal: 480 } },
      audio: true,
    });
    app.localStream = stream;
    app.tracks.push(...stream.getTracks());
    ui.localVideo.srcObject = stream;
    return null;
  } catch (err) {
    console.warn('camera/microphone unavailable:', err);
    app.cameraError = `${err?.name}: ${err?.message}`;
    switch (err?.name) {
      case 'NotAllowedError':
      case 'SecurityError':
        return 'cameraDenied';
      case 'NotFoundError':
      case 'OverconstrainedError':
        return 'cameraMissing';
      case 'NotReadableError':
      case 'AbortError':
        return 'cameraBusy';
      default:
        return 'cameraOther';
    }
  }
}

/** Releases the camera and microphone. */
function stopCamera() {
  for (const track of app.localStream?.getTracks() ?? []) track.stop();
  app.localStream = null;
  ui.localVideo.srcObject = null;
}

// -- call ---------------------------------------------------------------------------

/** Plays the remote video; if the browser refuses sound without a gesture, plays muted and offers a button. */
function playRemote() {
  ui.remoteVideo.play().catch((err) => {
    if (err.name !== 'NotAllowedError') return; // e.g. AbortError when the stream changed
    ui.remoteVideo.muted = true;
    ui.unmute.hidden = false;
    ui.remoteVideo.play().catch((e) => console.warn('remote video will not play:', e));
  });
}

function setCallState(state) {
  if (state === null) delete ui.main.dataset.call;
  else ui.main.dataset.call = state;
}

/** Sets up the RTCPeerConnection of a new match; the initiator makes the offer. */
function startCall({ matchId, initiator, iceServers }) {
  endCall();
  const pc = new RTCPeerConnection({ iceServers });
  app.pc = pc;
  app.pendingIce = [];
  setCallState('connecting');
  // Handlers of a torn-down call must not touch the next one.
  const live = () => app.pc === pc;
  app.callTimer = setTimeout(() => {
    if (live()) callFailed(`not connected within ${CALL_CONNECT_MS / 1000} s`);
  }, CALL_CONNECT_MS);

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
      clearTimeout(app.callTimer);
      const now = performance.now();
      const t = app.timings;
      t.connects.push({ matchId, fromJoinMs: now - t.joinAt, fromMatchMs: now - t.matchedAt });
      setCallState('connected');
      setStatus('statusTalking', { name: app.match.partner.name, age: app.match.partner.age });
    } else if (pc.connectionState === 'failed') {
      callFailed('the connection failed');
    }
  });

  if (initiator) {
    (async () => {
      await pc.setLocalDescription(await pc.createOffer());
      if (live()) app.session.sendOffer(pc.localDescription.sdp);
    })().catch((err) => {
      if (live()) callFailed('creating the offer failed', err);
    });
  }
}

/** Tears down the current call (if any). */
function endCall() {
  const pc = app.pc;
  app.pc = null;
  app.pendingIce = [];
  clearTimeout(app.callTimer);
  pc?.close();
  ui.remoteVideo.srcObject = null;
  ui.remoteVideo.muted = false;
  ui.unmute.hidden = true;
  ui.partner.replaceChildren();
  app.match = null;
  setCallState(null);
  setChatEnabled(false);
}

/** The call of the current match could not be set up: say so and move on to someone else. */
function callFailed(why, err) {
  console.warn(`call failed: ${why}`, err ?? '');
  const name = app.match?.partner.name ?? t('someone');
  setCallState('failed');
  addSystemLine('chatCallFailed', { name });
  showNotice('error', 'errCallFailed');
  next();
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

/** Runs an offer/answer handler; if it throws while its call is current, the call has failed. */
function handleDescription(what, handler, detail) {
  const pc = app.pc;
  handler(detail).catch((err) => {
    if (pc && app.pc === pc) callFailed(`handling the ${what} failed`, err);
  });
}

// -- session -------------------------------------------------------------------

function session() {
  if (app.session) return app.session;
  const s = new QuicmatchSession({
    logger: (level, message) => console[level](`[session] ${message}`),
  });
  app.session = s;
  const on = (type, handler) => s.addEventListener(type, (e) => handler(e.detail));

  on('statechange', ({ state, previous }) => {
    trace(`session state: ${previous} → ${state}`);
    if (state === 'reconnecting' && app.joined) setStatus('statusReconnecting');
    render();
  });
  on('transport', ({ transport, reason }) => {
    trace(`signaling over ${transport === 'websocket' ? `a WebSocket (${reason})` : 'WebTransport'}`);
  });
  on('open', () => {
    app.timings.opens.push(performance.now() - app.timings.joinAt);
    clearNotice('connection');
    if (app.joined && s.state !== 'matched') setStatus('statusConnected');
  });
  on('waiting', ({ queuePosition }) => {
    trace(`waiting at position ${queuePosition}`);
    setStatus('statusWaiting', { position: queuePosition });
    render();
  });
  on('matched', (m) => {
    trace(`matched: match ${m.matchId} with ${m.partner.name}, initiator ${m.initiator}`);
    app.timings.matchedAt = performance.now();
    clearNotice('connection', 'error');
    startCall(m);
    app.match = { matchId: m.matchId, partner: m.partner, initiator: m.initiator };
    fill(ui.partner, 'partnerCaption', { name: m.partner.name, age: m.partner.age });
    setStatus('statusMatched', { name: m.partner.name, age: m.partner.age });
    addSystemLine('chatMatched', { name: m.partner.name, age: m.partner.age });
    setChatEnabled(true);
    render();
  });
  on('offer', (d) => handleDescription('offer', onOffer, d));
  on('answer', (d) => handleDescription('answer', onAnswer, d));
  on('ice', onIce);
  on('chat', ({ text }) => {
    addChatLine('theirs', app.match?.partner.name ?? t('chatPartner'), text);
  });
  on('partner-disconnected', ({ matchId, reason }) => {
    trace(`match ${matchId} over: ${reason}`);
    const name = app.match?.partner.name ?? t('someone');
    endCall();
    if (reason === 'partner-left') {
      addSystemLine('chatPartnerLeft', { name });
      setStatus('statusPartnerLeft', { name });
    } else {
      addSystemLine('chatConnectionDropped');
    }
    render();
  });
  on('error', (err) => {
    console.warn('[app] error event:', err.code, err.message);
    if (err.code === 'InvalidProfile') {
      endSession();
      setStatus('statusIntro');
    }
    showError(err);
  });
  on('close', (d) => {
    trace('closed:', d);
    // Someone at the form does not need to hear about the connection.
    if (d.byUser || !app.joined) return;
    endCall();
    if (d.reconnectInMs === null) {
      endSession({ closedForGood: true });
      setStatus('statusDisconnected');
    }
    showClose(d);
    render();
  });
  return s;
}

/** Shows the form (and moves focus into it). */
function showForm() {
  render();
  ui.join.disabled = !app.canStart;
  (ui.join.disabled ? ui.name : ui.name.value ? ui.join : ui.name).focus();
}

/** Ends the person's part in the session (the form again); releases the call and the camera. */
function endSession({ closedForGood = false, wasJoined = app.joined } = {}) {
  app.joined = false;
  app.closedForGood = closedForGood;
  endCall();
  stopCamera();
  if (wasJoined) showForm();
  else render();
}

// -- user actions --------------------------------------------------------------

/** Start (or Retry): open the camera, then join. */
async function start() {
  const profile = { name: ui.name.value.trim(), age: Number(ui.age.value), gender: ui.gender.value };
  ui.join.disabled = true;
  clearNotice('camera', 'error', 'connection');
  if (!app.withoutCamera) {
    setStatus('statusCamera');
    const problem = await startCamera();
    if (problem) {
      setStatus('statusCameraFailed');
      showNotice('camera', problem, { message: app.cameraError ?? '' });
      ui.join.disabled = !app.canStart;
      ui.retry.focus();
      return;
    }
  }
  ui.chatLog.replaceChildren();
  app.joined = true;
  app.closedForGood = false;
  app.timings.joinAt = performance.now();
  setStatus('statusConnecting');
  render();
  ui.callHeading.focus();
  const s = session();
  s.join(profile).then(
    (answer) => trace('join answered:', answer.type),
    (err) => {
      // Left: Leave was pressed first; Closed: the page is going away;
      // ServerClosed: the close event says it.
      if (['Left', 'Closed', 'ServerClosed'].includes(err.code) || s !== app.session) return;
      console.warn('join failed:', err.code, err.message);
      endSession();
      setStatus('statusIntro');
      showError(err);
    },
  );
}

/** Next: end this match and ask for someone new. */
function next() {
  const name = app.match?.partner.name;
  app.session?.stop();
  endCall();
  if (name) addSystemLine('chatYouLeft', { name });
  setStatus('statusLookingAgain');
  render();
}

ui.form.addEventListener('submit', (e) => {
  e.preventDefault();
  app.withoutCamera = false;
  start();
});

ui.retry.addEventListener('click', () => {
  app.withoutCamera = false;
  if (ui.form.reportValidity()) start();
});

ui.withoutCamera.addEventListener('click', () => {
  app.withoutCamera = true;
  if (ui.form.reportValidity()) start();
});

ui.next.addEventListener('click', next);

ui.leave.addEventListener('click', () => {
  // Not joined first, so the session's state changes show the form, not a reconnect.
  app.joined = false;
  app.session?.leave();
  endSession({ wasJoined: true });
  clearNotice('error', 'connection');
  setStatus('statusLeft');
});

ui.chatForm.addEventListener('submit', (e) => {
  e.preventDefault();
  const s = app.session;
  const text = ui.chatInput.value;
  if (!s || !app.match) return;
  if (!text.trim()) {
    showNotice('error', 'errEmptyChat');
    return;
  }
  if (utf8Length(text) > MAX_CHAT_LEN) {
    showNotice('error', 'errTooLong', { max: MAX_CHAT_LEN });
    return;
  }
  ui.chatInput.value = '';
  const li = addChatLine('mine pending', t('chatYou'), text);
  s.chat(text).then(
    ({ rttMs }) => {
      app.timings.chatRttMs.push(rttMs);
      li.classList.replace('pending', 'delivered');
    },
    (err) => {
      console.warn('chat not delivered:', err.code, err.message);
      li.classList.replace('pending', 'failed');
      const mark = document.createElement('span');
      mark.className = 'mark';
      mark.textContent = t('chatNotDelivered');
      li.append(' ', mark);
      if (!['ChatFailed', 'Closed'].includes(err.code)) showError(err);
    },
  );
});

ui.unmute.addEventListener('click', () => {
  ui.remoteVideo.muted = false;
  ui.unmute.hidden = true;
  playRemote();
});

// Tell the server at once when the page goes away, rather than after a
// timeout, and let go of the camera.
addEventListener('pagehide', () => {
  app.session?.close();
  endCall();
  stopCamera();
});
// A page restored from the back/forward cache has a closed session: start afresh.
addEventListener('pageshow', (e) => {
  if (e.persisted) location.reload();
});

// -- at load: texts, and what this browser can do ------------------------------------------

applyStrings();
setStatus('statusIntro');
app.canStart = true;
if (!QuicmatchSession.isSupported()) {
  app.canStart = false;
  showNotice('support', 'unsupported');
} else if (!navigator.mediaDevices?.getUserMedia && !window.isSecureContext) {
  app.canStart = false;
  showNotice('support', 'insecure');
}
if (!app.canStart) setStatus('statusUnavailable');
ui.join.disabled = !app.canStart;
render();
trace('ready');
