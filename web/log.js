// A diagnostics aid, off unless the page's URL has `?debug`: then it keeps the
// last lines the page logged (console output, uncaught errors, app events) in
// `window.__log`, so an automated test, or a person filing a bug, can read
// what happened. A classic script, loaded before the app module, so it also
// catches errors from loading the module itself.
(() => {
  if (!new URLSearchParams(location.search).has('debug')) return;
  const MAX_LINES = 2000;
  const log = (window.__log = []);

  const format = (value) => {
    if (typeof value === 'string') return value;
    if (value instanceof Error) return value.stack || String(value);
    try {
      return JSON.stringify(value, (_key, v) => (typeof v === 'bigint' ? `${v}n` : v));
    } catch {
      return String(value);
    }
  };

  const push = (level, args) => {
    const time = (performance.now() / 1000).toFixed(3);
    log.push(`${time} ${level} ${Array.from(args, format).join(' ')}`);
    if (log.length > MAX_LINES) log.splice(0, log.length - MAX_LINES);
  };

  for (const level of ['debug', 'log', 'info', 'warn', 'error']) {
    const original = console[level].bind(console);
    console[level] = (...args) => {
      push(level, args);
      original(...args);
    };
  }
  addEventListener('error', (e) => push('uncaught', [e.message, `${e.filename}:${e.lineno}`]));
  addEventListener('unhandledrejection', (e) => push('unhandled', [e.reason]));
})();
