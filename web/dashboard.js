// The live dashboard: reads /api/history (the last hour of the server's own
// metrics, a sample every 10 s, the last one taken now) and draws it. Totals
// become per-minute rates, and histogram buckets percentiles, between
// consecutive samples. No library, no build step.

const REFRESH_MS = 10_000;
const COLORS = ['--c1', '--c2', '--c3', '--c4', '--c5', '--c6'];

/** The value of `series` in a sample, or 0. */
const value = (sample, series) => sample.v[series] ?? 0;

/** Every series of `samples` whose name (before `{`) is `name`. */
function seriesNamed(samples, name) {
  const found = new Set();
  for (const s of samples) {
    for (const key of Object.keys(s.v)) {
      if (key === name || key.startsWith(name + '{')) found.add(key);
    }
  }
  return [...found].sort();
}

/** A label's value in a series key: `label(x{code="abuse"}, 'code')` = abuse. */
function label(key, name) {
  const m = key.match(new RegExp(name + '="([^"]*)"'));
  return m ? m[1] : '';
}

/** Shortest span a rate or percentile is taken over, in ms. */
const MIN_SPAN_MS = 5_000;

/**
 * The sample a rate ending at sample i starts from: the one before it, or
 * further back when that one is too close (the last sample is "now", taken
 * moments after the last kept one).
 */
function base(samples, i) {
  let j = i - 1;
  while (j > 0 && samples[i].t - samples[j].t < MIN_SPAN_MS) j -= 1;
  return samples[j];
}

/** Per-minute rate of the total `series` up to sample i. */
function perMinute(samples, i, series) {
  const [a, b] = [base(samples, i), samples[i]];
  const minutes = (b.t - a.t) / 60_000;
  if (minutes <= 0) return 0;
  // A restarted server starts its totals again.
  return Math.max(0, value(b, series) - value(a, series)) / minutes;
}

/**
 * Quantile `q` of the histogram `name` over what was observed between two
 * samples (the bucket counts' difference), interpolated within a bucket as
 * Prometheus's histogram_quantile does; null when nothing was observed.
 */
function quantile(from, to, name, q) {
  const buckets = seriesNamed([to], name + '_bucket')
    .map((key) => ({ le: Number(label(key, 'le')), count: Math.max(0, value(to, key) - value(from, key)) }))
    .filter((b) => !Number.isNaN(b.le))
    .sort((a, b) => a.le - b.le);
  const inf = Math.max(0, value(to, `${name}_bucket{le="+Inf"}`) - value(from, `${name}_bucket{le="+Inf"}`));
  const total = Math.max(inf, buckets.length ? buckets[buckets.length - 1].count : 0);
  if (total === 0) return null;
  const rank = q * total;
  let lower = 0;
  let below = 0;
  for (const b of buckets) {
    if (b.count >= rank) {
      const inBucket = b.count - below;
      return inBucket > 0 ? lower + (b.le - lower) * ((rank - below) / inBucket) : b.le;
    }
    lower = b.le;
    below = b.count;
  }
  return lower; // above the highest finite bucket
}

/** The dashboard's lines, each a [time, value] list, from the samples. */
export function derive(samples) {
  const pooled = samples.some((s) => 'quicmatch_pool_sessions' in s.v);
  const sessionsKey = pooled ? 'quicmatch_pool_sessions' : 'quicmatch_sessions';
  const waitingKey = pooled ? 'quicmatch_pool_waiting' : 'quicmatch_waiting';
  const at = (f) => samples.map((s, i) => [s.t, f(s, i)]);
  const rated = (f) => samples.slice(1).map((s, j) => [s.t, f(j + 1)]);
  const lines = {
    sessions: [{ name: pooled ? 'whole pool' : 'this server', points: at((s) => value(s, sessionsKey)) }],
    queues: ['male', 'female'].map((g) => ({
      name: g === 'male' ? 'men' : 'women',
      points: at((s) => value(s, `${waitingKey}{gender="${g}"}`)),
    })),
    matches: [{ name: 'matches / min', points: rated((i) => perMinute(samples, i, 'quicmatch_matches_total')) }],
    wait: [0.5, 0.99].map((q) => ({
      name: `p${q * 100}`,
      points: rated((i) => quantile(base(samples, i), samples[i], 'quicmatch_match_wait_seconds', q)),
    })),
    relay: [0.5, 0.99].map((q) => ({
      name: `p${q * 100}`,
      points: rated((i) => {
        const v = quantile(base(samples, i), samples[i], 'quicmatch_relay_seconds', q);
        return v === null ? null : v * 1000;
      }),
    })),
    codes: [
      ...seriesNamed(samples, 'quicmatch_errors_total').map((key) => ({
        name: `error ${label(key, 'code')}`,
        points: rated((i) => perMinute(samples, i, key)),
      })),
      ...seriesNamed(samples, 'quicmatch_closes_total')
        .filter((key) => label(key, 'code') !== 'normal')
        .map((key) => ({
          name: `close ${label(key, 'code')}`,
          points: rated((i) => perMinute(samples, i, key)),
        })),
    ],
  };
  return { pooled, lines };
}

function css(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}

/** Draws `lines` on canvas `id`, with a legend; returns the points drawn. */
function draw(id, lines) {
  const canvas = document.getElementById(`chart-${id}`);
  const legend = document.getElementById(`legend-${id}`);
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth;
  const height = canvas.clientHeight;
  canvas.width = Math.round(width * ratio);
  canvas.height = Math.round(height * ratio);
  const g = canvas.getContext('2d');
  g.scale(ratio, ratio);
  g.clearRect(0, 0, width, height);
  const all = lines.flatMap((l) => l.points.filter(([, v]) => v !== null));
  const pad = { left: 48, right: 8, top: 8, bottom: 20 };
  const now = Date.now();
  const [t0, t1] = [now - rangeMinutes() * 60_000, now];
  const highest = Math.max(0, ...all.map(([, v]) => v));
  // An empty or all-zero chart still gets a readable 0…1 scale.
  const top = highest > 0 ? highest * 1.1 : 1;
  const x = (t) => pad.left + ((t - t0) / (t1 - t0)) * (width - pad.left - pad.right);
  const y = (v) => height - pad.bottom - (v / top) * (height - pad.top - pad.bottom);
  g.strokeStyle = css('--grid');
  g.fillStyle = css('--muted');
  g.font = '11px system-ui, sans-serif';
  g.lineWidth = 1;
  for (let k = 0; k <= 4; k++) {
    const v = (top / 4) * k;
    g.beginPath();
    g.moveTo(pad.left, y(v));
    g.lineTo(width - pad.right, y(v));
    g.stroke();
    g.fillText(format(v), 4, y(v) + 4);
  }
  const range = rangeMinutes();
  const step = { 5: 1, 15: 5, 60: 15 }[range];
  for (let minutes = range; minutes >= 0; minutes -= step) {
    g.fillText(minutes ? `-${minutes} min` : 'now', x(now - minutes * 60_000) - (minutes ? 18 : 22), height - 4);
  }
  legend.replaceChildren();
  if (lines.length === 0) legend.textContent = 'none in this range';
  let drawn = 0;
  lines.forEach((line, n) => {
    const color = css(COLORS[n % COLORS.length]);
    g.strokeStyle = color;
    g.lineWidth = 2;
    g.beginPath();
    let open = false;
    for (const [t, v] of line.points) {
      if (v === null || t < t0) {
        open = false;
        continue;
      }
      if (open) g.lineTo(x(t), y(v));
      else g.moveTo(x(t), y(v));
      open = true;
      drawn += 1;
    }
    g.stroke();
    const item = document.createElement('span');
    item.style.setProperty('--swatch', color);
    item.textContent = line.name;
    legend.append(item);
  });
  canvas.dataset.points = String(drawn);
  return drawn;
}

/** The time range shown, in minutes: 60, or 15 or 5 from the page's hash (#15m). */
function rangeMinutes() {
  const chosen = Number(location.hash.match(/^#(\d+)m$/)?.[1]);
  return [5, 15, 60].includes(chosen) ? chosen : 60;
}

/** A number, short. */
function format(v) {
  if (v === null || v === undefined || Number.isNaN(v)) return '–';
  if (Math.abs(v) >= 1e6) return `${(v / 1e6).toFixed(1)}M`;
  if (Math.abs(v) >= 1e4) return `${(v / 1e3).toFixed(1)}k`;
  if (Number.isInteger(v)) return String(v);
  if (Math.abs(v) >= 100) return Math.round(v).toString();
  if (Math.abs(v) >= 1) return v.toFixed(1);
  return v.toPrecision(2);
}

/** The latest value of a line that has one. */
const latest = (line) => {
  for (let i = line.points.length - 1; i >= 0; i--) {
    if (line.points[i][1] !== null) return line.points[i][1];
  }
  return null;
};

function showNow({ lines }) {
  const text = (id, t) => { document.getElementById(id).textContent = t; };
  text('now-sessions', format(latest(lines.sessions[0])));
  text('now-waiting', `${format(latest(lines.queues[0]))} / ${format(latest(lines.queues[1]))}`);
  text('now-matches', format(latest(lines.matches[0])));
  const pair = (ls, unit) => `${format(latest(ls[0]))} / ${format(latest(ls[1]))} ${unit}`;
  text('now-wait', pair(lines.wait, 's'));
  text('now-relay', pair(lines.relay, 'ms'));
  const bad = lines.codes
    .filter((l) => l.name.startsWith('error') || l.name === 'close abuse' || l.name === 'close protocol_violation')
    .reduce((sum, l) => sum + (latest(l) ?? 0), 0);
  text('now-errors', format(bad));
}

async function refresh() {
  const status = document.getElementById('status');
  try {
    const response = await fetch('/api/history', { cache: 'no-store' });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const history = await response.json();
    const derived = derive(history.samples);
    const since = Date.now() - rangeMinutes() * 60_000;
    const seen = (line) => line.points.some(([t, v]) => t >= since && v > 0);
    for (const [id, lines] of Object.entries(derived.lines)) {
      // Codes are many and mostly silent: only those seen in the range.
      draw(id, id === 'codes' ? lines.filter(seen) : lines);
    }
    showNow(derived);
    status.classList.remove('bad');
    status.textContent = `${derived.pooled ? 'shared pool' : 'one server'} · updated ${new Date().toLocaleTimeString()}`;
    document.body.dataset.ready = '1';
  } catch (error) {
    status.classList.add('bad');
    status.textContent = `cannot read /api/history: ${error.message}`;
  }
}

refresh();
setInterval(refresh, REFRESH_MS);
window.addEventListener('hashchange', () => refresh());
window.addEventListener('resize', () => refresh());
