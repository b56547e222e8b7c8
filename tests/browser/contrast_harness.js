// Measures the contrast of every piece of text the product's page shows, in
// its light theme and in its dark one (the declarations of style.css's
// `@media (prefers-color-scheme: dark)` block applied to the root), with the
// notice, the call view and chat lines of every kind on screen.
// Returns {checked, failures: [...], worst: {theme: ratio}}.
() => {
  const failures = [];
  let checked = 0;
  const worst = {};

  // -- colours ---------------------------------------------------------------
  /** [r, g, b, a] in 0..1 from a computed colour (rgb(), rgba(), color(srgb …)). */
  const parse = (text) => {
    let m = text.match(/^rgba?\(([^)]+)\)$/);
    if (m) {
      const p = m[1].split(/[\s,/]+/).filter(Boolean).map(Number);
      return [p[0] / 255, p[1] / 255, p[2] / 255, p.length > 3 ? p[3] : 1];
    }
    m = text.match(/^color\(srgb ([^)]+)\)$/);
    if (m) {
      const p = m[1].split(/[\s/]+/).filter(Boolean).map(Number);
      return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1];
    }
    throw new Error(`cannot read the colour ${text}`);
  };
  const over = (top, below) => {
    const a = top[3];
    return [0, 1, 2].map((i) => top[i] * a + below[i] * (1 - a)).concat(1);
  };
  const luminance = (c) => {
    const lin = (v) => (v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4);
    return 0.2126 * lin(c[0]) + 0.7152 * lin(c[1]) + 0.0722 * lin(c[2]);
  };
  const ratio = (a, b) => {
    const [hi, lo] = [luminance(a), luminance(b)].sort((x, y) => y - x);
    return (hi + 0.05) / (lo + 0.05);
  };
  /** The opaque colour behind `el`: its own and its ancestors' backgrounds, stacked. */
  const background = (el) => {
    const layers = [];
    for (let e = el; e; e = e.parentElement) {
      const c = parse(getComputedStyle(e).backgroundColor);
      if (c[3] > 0) layers.push(c);
      if (c[3] >= 1) break;
    }
    let colour = [1, 1, 1, 1]; // the canvas, if nothing is opaque
    for (const layer of layers.reverse()) colour = over(layer, colour);
    return colour;
  };

  // -- the page, with everything on screen ---------------------------------------
  const main = document.querySelector('main');
  const notice = document.getElementById('notice');
  document.getElementById('notice-text').textContent = 'A notice';
  notice.hidden = false;
  document.getElementById('notice-actions').hidden = false;
  document.getElementById('without-camera').hidden = false;
  document.getElementById('partner').textContent = 'Someone, 30';
  for (const id of ['chat-input', 'chat-send', 'next', 'leave', 'join']) document.getElementById(id).disabled = false;
  const log = document.getElementById('chat-log');
  for (const kind of ['mine pending', 'mine delivered', 'mine failed', 'theirs', 'system']) {
    const li = document.createElement('li');
    li.className = `chat-line ${kind}`;
    li.innerHTML = `<span class="who">Who</span> <span class="text">A line</span> <span class="mark">(mark)</span>`;
    log.append(li);
  }

  const check = (theme, view) => {
    for (const el of document.querySelectorAll('body *')) {
      const own = [...el.childNodes].some((n) => n.nodeType === Node.TEXT_NODE && n.textContent.trim());
      if (!own || el.getClientRects().length === 0 || el.closest('.visually-hidden, title, script, style')) continue;
      const style = getComputedStyle(el);
      if (style.visibility === 'hidden') continue;
      const fg = over(parse(style.color), background(el));
      const r = ratio(fg, background(el));
      checked += 1;
      worst[theme] = Math.min(worst[theme] ?? Infinity, r);
      const what = `${el.tagName.toLowerCase()}${el.id ? `#${el.id}` : ''}${el.className ? `.${String(el.className).replace(/ /g, '.')}` : ''}`;
      if (r < 4.5) failures.push(`${theme}, ${view}: ${what} "${el.textContent.trim().slice(0, 30)}" ${r.toFixed(2)}:1 (${style.color} on ${style.backgroundColor})`);
    }
  };

  const dark = () => {
    const root = document.documentElement;
    root.style.colorScheme = 'dark';
    let found = false;
    for (const sheet of document.styleSheets) {
      for (const rule of sheet.cssRules) {
        if (!(rule instanceof CSSMediaRule) || !rule.conditionText.includes('prefers-color-scheme: dark')) continue;
        for (const inner of rule.cssRules) {
          if (inner.selectorText !== ':root') continue;
          for (const name of inner.style) root.style.setProperty(name, inner.style.getPropertyValue(name));
          found = true;
        }
      }
    }
    if (!found) failures.push('style.css has no dark :root block');
  };

  if (matchMedia('(prefers-color-scheme: dark)').matches) failures.push('the browser is in dark mode: the light theme is not measured');
  for (const theme of ['light', 'dark']) {
    if (theme === 'dark') dark();
    for (const view of ['start', 'matched']) {
      main.dataset.state = view;
      check(theme, view);
    }
  }
  return { checked, failures, worst };
}
