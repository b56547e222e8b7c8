// Checks web/quicmatch.js against tests/golden/vectors.json. This file is one
// function expression: tests/browser.rs evaluates it inside Chromium with the
// module and the parsed vectors; `node` can run it too (see docs/browser.md).
// Returns {checked, failures}; every failure is a line saying what differed.
(function checkGolden(m, golden) {
  const failures = [];
  let checked = 0;

  const fromHex = (hex) => Uint8Array.from(hex.match(/../g) ?? [], (b) => parseInt(b, 16));
  const toHex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
  // {"bigint": "<decimal>"} stands for a u64 above 2^53 - 1.
  const revive = (v) => {
    if (Array.isArray(v)) return v.map(revive);
    if (v && typeof v === 'object') {
      const keys = Object.keys(v);
      if (keys.length === 1 && keys[0] === 'bigint') return BigInt(v.bigint);
      return Object.fromEntries(keys.map((k) => [k, revive(v[k])]));
    }
    return v;
  };
  // Exact comparison: same types (a BigInt never equals a number), same keys.
  const same = (a, b) => {
    if (typeof a !== typeof b) return false;
    if (a === null || b === null || typeof a !== 'object') return a === b;
    if (Array.isArray(a) !== Array.isArray(b)) return false;
    const ka = Object.keys(a).sort();
    const kb = Object.keys(b).sort();
    return ka.length === kb.length && ka.every((k, i) => k === kb[i] && same(a[k], b[k]));
  };
  const show = (v) => JSON.stringify(v, (_k, x) => (typeof x === 'bigint' ? `${x}n` : x));
  const codec = (kind) => ({ encode: m[`encode${kind}`], decode: m[`decode${kind}`] });

  for (const v of golden.valid) {
    checked++;
    const { encode, decode } = codec(v.kind);
    const value = revive(v.value);
    try {
      const hex = toHex(encode(value));
      if (hex !== v.hex) failures.push(`encode ${v.kind} "${v.name}": got ${hex}, want ${v.hex}`);
    } catch (e) {
      failures.push(`encode ${v.kind} "${v.name}" threw ${e}`);
    }
    try {
      const decoded = decode(fromHex(v.hex));
      if (!same(decoded, value)) failures.push(`decode ${v.kind} "${v.name}": got ${show(decoded)}, want ${show(value)}`);
    } catch (e) {
      failures.push(`decode ${v.kind} "${v.name}" threw ${e}`);
    }
    // The same message framed: 4-byte big-endian length, then the bytes.
    if (v.hex.length > 0) {
      const frame = toHex(m.encodeFrame(fromHex(v.hex)));
      const want = (v.hex.length / 2).toString(16).padStart(8, '0') + v.hex;
      if (frame !== want) failures.push(`frame of "${v.name}": got ${frame.slice(0, 16)}…, want ${want.slice(0, 16)}…`);
    }
  }

  for (const v of golden.decode_only) {
    checked++;
    try {
      const decoded = codec(v.kind).decode(fromHex(v.hex));
      if (!same(decoded, revive(v.value))) failures.push(`decode_only ${v.hex}: got ${show(decoded)}`);
    } catch (e) {
      failures.push(`decode_only ${v.kind} ${v.hex} threw ${e}`);
    }
  }

  for (const v of golden.invalid) {
    checked++;
    try {
      const decoded = codec(v.kind).decode(fromHex(v.hex));
      failures.push(`invalid ${v.kind} ${v.hex} (${v.why}) decoded as ${show(decoded)}`);
    } catch (e) {
      if (!(e instanceof m.DecodeError)) failures.push(`invalid ${v.kind} ${v.hex} threw ${e.name}, not DecodeError`);
    }
  }

  for (const header of golden.bad_frame_headers) {
    checked++;
    const reader = new m.FrameReader();
    reader.push(fromHex(header + '00'));
    try {
      reader.next();
      failures.push(`frame header ${header} accepted`);
    } catch (e) {
      if (!(e instanceof m.FrameLengthError)) failures.push(`frame header ${header} threw ${e.name}`);
    }
  }

  // A stream cut anywhere still yields the same frames, in order.
  checked++;
  const frames = golden.valid.slice(0, 5).map((v) => m.encodeFrame(fromHex(v.hex)));
  const stream = Uint8Array.from(frames.flatMap((f) => Array.from(f)));
  const reader = new m.FrameReader();
  const out = [];
  for (let i = 0; i < stream.length; i += 3) {
    reader.push(stream.subarray(i, i + 3));
    for (let p = reader.next(); p; p = reader.next()) out.push(toHex(p));
  }
  const want = golden.valid.slice(0, 5).map((v) => v.hex);
  if (!same(out, want)) failures.push(`frame reader: got ${show(out)}, want ${show(want)}`);

  return { checked, failures };
})
