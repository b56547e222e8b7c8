// Every text the quicmatch page shows, in one table: translating the page
// means giving this file's values in another language (keys and
// {placeholders} stay). app.js imports it.

/**
 * Every text the page shows, by key. To translate the page, give every key a
 * value in the other language; keep the keys and the `{placeholders}`
 * (filled in by `fill`/`t`; a placeholder's value is shown isolated, in a
 * `<bdi dir="auto">`, so a name in another script cannot scramble the line).
 * `lang` and `dir` go on <html>. index.html marks its texts with
 * `data-i18n="key"` (text), `data-i18n-placeholder="key"` and
 * `data-i18n-label="key"` (aria-label); app.js fills them in at load.
 */
export const STRINGS = {
  lang: 'en',
  dir: 'ltr',
  title: 'quicmatch: random video chat',
  heading: 'quicmatch',
  nameLabel: 'Name',
  namePlaceholder: 'What should they call you?',
  ageLabel: 'Age',
  genderLabel: 'Gender',
  genderFemale: 'Female',
  genderMale: 'Male',
  start: 'Start',
  hint: 'Your camera and microphone are used for the call. People are matched with someone of the opposite gender; they see your name and age, nothing else.',
  callHeading: 'Video call',
  remoteVideoLabel: "Your partner's video",
  localVideoLabel: 'Your own camera',
  partnerCaption: '{name}, {age}',
  unmute: 'Tap to hear them',
  next: 'Next',
  leave: 'Leave',
  chatLogLabel: 'Chat',
  chatInputLabel: 'Message to your partner',
  chatPlaceholder: 'Say something…',
  send: 'Send',
  retry: 'Retry',
  withoutCamera: 'Join without camera',

  statusIntro: 'Say who you are to start chatting with a stranger.',
  statusCamera: 'Starting your camera…',
  statusCameraFailed: 'Your camera could not be started.',
  statusConnecting: 'Connecting…',
  statusReconnecting: 'Reconnecting…',
  statusConnected: 'Connected. Finding someone…',
  statusWaiting: 'Waiting for someone to talk to… you are number {position} in the queue.',
  statusMatched: 'Matched with {name}, {age}. Connecting the call…',
  statusTalking: 'Talking to {name}, {age}.',
  statusPartnerLeft: '{name} left. Looking for someone new…',
  statusLookingAgain: 'Looking for someone new…',
  statusLeft: 'You left. Press Start to chat again.',
  statusDisconnected: 'Disconnected.',
  statusUnavailable: 'This page cannot start a chat here.',

  chatYou: 'You',
  chatPartner: 'Partner',
  chatMatched: "You're now talking to {name}, {age}. Say hi!",
  chatPartnerLeft: '{name} left.',
  chatYouLeft: 'You left {name}.',
  chatConnectionDropped: 'The connection dropped; the call ended.',
  chatCallFailed: 'The video call with {name} could not be set up.',
  chatNotDelivered: '(not delivered)',
  someone: 'Your partner',

  unsupported: 'This browser cannot connect to the chat: it has neither WebTransport nor WebSocket. Please open the page in a current browser.',
  insecure: 'This page must be opened over HTTPS (or on localhost) to use your camera.',
  cameraDenied: 'Access to your camera and microphone was denied. Allow them for this site in your browser (the camera icon in the address bar, or the site settings), then press Retry.',
  cameraMissing: 'No camera or microphone was found. Connect one, then press Retry, or join without a camera: you will still see and hear your partner.',
  cameraBusy: 'Your camera or microphone is in use by another app, or could not be started. Close the other app, then press Retry.',
  cameraNoApi: 'This browser cannot use a camera here. You can join without one: you will still see and hear your partner.',
  cameraOther: 'Your camera could not be started ({message}). Press Retry, or join without a camera.',

  errInvalidProfile: 'Please check your details: {message}.',
  errRateLimited: 'Slow down a little: some messages were dropped.',
  errServerBusy: 'The server is busy. Please try again in a moment.',
  errTooLarge: 'That was too long to send.',
  errTooLong: 'That message is too long ({max} bytes at most).',
  errDatagramTooLarge: 'That message is too long for this connection; try a shorter one.',
  errNotMatched: "You're not talking to anyone right now.",
  errNotConnected: 'Not connected to the server right now.',
  errEmptyChat: 'Type something first.',
  errConnectFailed: 'Could not reach the server ({message}). Trying again…',
  errTimeout: 'The server did not answer in time. Check your connection and press Start to try again.',
  errUnsupported: 'This browser cannot connect to the chat.',
  errCallFailed: 'The video call could not be set up. Looking for someone else…',
  errOther: 'Something went wrong ({code}: {message}).',

  closeProtocol: 'The server ended the session because of a protocol error ({reason}). Press Start to try again.',
  closePolicy: 'The server ended the session: {reason}. Press Start to try again later.',
  closeRestart: 'The server is restarting. Reconnecting…',
  closeFull: 'The server is full right now. Trying again in {secs} s…',
  closeLost: 'Connection lost ({reason}). Reconnecting in {secs} s…',
  closeGone: 'Disconnected ({reason}).',
};
