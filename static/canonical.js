// canonical.js: the `args_sha256` of an approval (contract section 9), the
// lowercase hex SHA-256 of the RFC 8785 (JCS) canonical JSON of the
// arguments a human was shown. The server computes the same (`src/jcs.rs`)
// and refuses a decision whose hash is not the one of the call waiting, so
// an approval always names exactly what was on the screen.
//
// `crypto.subtle` exists only in secure contexts (https, localhost); the
// dashboard is also opened over plain http from other machines, so this
// module carries its own SHA-256 (FIPS 180-4) as the fallback. No DOM here.

/**
 * The RFC 8785 canonical JSON text of `value`, a value parsed from JSON: no
 * whitespace; object members sorted by their names as UTF-16 code units
 * (JavaScript's default string order); strings and numbers written exactly
 * as `JSON.stringify` writes them, which is what RFC 8785 prescribes.
 */
export function canonicalJson(value) {
  if (value === null) return 'null';
  switch (typeof value) {
    case 'boolean':
      return value ? 'true' : 'false';
    case 'number':
      // No NaN or infinity in JSON; `JSON.stringify` writes them as null.
      return Number.isFinite(value) ? JSON.stringify(value) : 'null';
    case 'string':
      return JSON.stringify(value);
    case 'object':
      break;
    default:
      throw new TypeError(`canonicalJson: a ${typeof value} is not JSON`);
  }
  if (Array.isArray(value)) {
    return `[${value.map((item) => (skipped(item) ? 'null' : canonicalJson(item))).join(',')}]`;
  }
  const names = Object.keys(value).filter((name) => !skipped(value[name])).sort();
  return `{${names.map((name) => `${JSON.stringify(name)}:${canonicalJson(value[name])}`).join(',')}}`;
}

/** What `JSON.stringify` leaves out of objects (and writes as null in arrays). */
function skipped(value) {
  return value === undefined || typeof value === 'function' || typeof value === 'symbol';
}

/** The lowercase hex SHA-256 of `canonicalJson(args)`: what a decision sends. */
export async function argsSha256(args) {
  return sha256Hex(canonicalJson(args));
}

/** The lowercase hex SHA-256 of `text` encoded as UTF-8: the browser's own
 * digest where it has one, else `sha256` below. */
export async function sha256Hex(text) {
  const bytes = new TextEncoder().encode(text);
  const subtle = globalThis.isSecureContext ? globalThis.crypto?.subtle : undefined;
  if (subtle) {
    try {
      return hex(new Uint8Array(await subtle.digest('SHA-256', bytes)));
    } catch {
      // A browser that lists the API but refuses it: the fallback decides.
    }
  }
  return hex(sha256(bytes));
}

/** Bytes as lowercase hex. */
export function hex(bytes) {
  let out = '';
  for (const byte of bytes) out += byte.toString(16).padStart(2, '0');
  return out;
}

// ----- SHA-256 (FIPS 180-4), for pages without crypto.subtle ---------------

/** `count` primes from 2 on, by trial division (only 64 are needed). */
function firstPrimes(count) {
  const primes = [];
  for (let n = 2; primes.length < count; n++) {
    if (primes.every((p) => p * p > n || n % p !== 0)) primes.push(n);
  }
  return primes;
}

/** The integer part of the `k`-th root of the BigInt `n` (n ≥ 1): Newton's
 * method from above, which only ever decreases to the answer. */
function integerRoot(n, k) {
  const K = BigInt(k);
  let x = 1n << BigInt(Math.ceil(n.toString(2).length / k));
  for (;;) {
    const next = ((K - 1n) * x + n / x ** (K - 1n)) / K;
    if (next >= x) return x;
    x = next;
  }
}

/** The first 32 bits of the fractional part of the `k`-th root of `p`:
 * the integer root of p·2^(32k), reduced mod 2^32. Exact, unlike a float
 * `Math.cbrt`, so the constants below are the standard's to the bit. */
function rootFraction(p, k) {
  return Number(integerRoot(BigInt(p) << BigInt(32 * k), k) & 0xffffffffn);
}

const PRIMES = firstPrimes(64);
/** The initial hash value: square roots of the first 8 primes (FIPS 180-4 5.3.3). */
const INITIAL = Uint32Array.from(PRIMES.slice(0, 8), (p) => rootFraction(p, 2));
/** The round constants: cube roots of the first 64 primes (FIPS 180-4 4.2.2). */
const ROUND = Uint32Array.from(PRIMES, (p) => rootFraction(p, 3));

const rotr = (x, n) => (x >>> n) | (x << (32 - n));

/** The SHA-256 digest (32 bytes) of `bytes`, a Uint8Array. */
export function sha256(bytes) {
  // Padding: a 1 bit, zeros, then the length in bits as 64 bits big-endian,
  // to a whole number of 64-byte blocks.
  const blocks = Math.ceil((bytes.length + 9) / 64);
  const message = new Uint8Array(blocks * 64);
  message.set(bytes);
  message[bytes.length] = 0x80;
  const view = new DataView(message.buffer);
  const bits = bytes.length * 8;
  view.setUint32(message.length - 8, Math.floor(bits / 2 ** 32));
  view.setUint32(message.length - 4, bits >>> 0);

  const state = Uint32Array.from(INITIAL);
  // Typed arrays keep every word reduced mod 2^32 on assignment.
  const w = new Uint32Array(64);
  for (let block = 0; block < message.length; block += 64) {
    for (let t = 0; t < 16; t++) w[t] = view.getUint32(block + 4 * t);
    for (let t = 16; t < 64; t++) {
      const s0 = rotr(w[t - 15], 7) ^ rotr(w[t - 15], 18) ^ (w[t - 15] >>> 3);
      const s1 = rotr(w[t - 2], 17) ^ rotr(w[t - 2], 19) ^ (w[t - 2] >>> 10);
      w[t] = w[t - 16] + s0 + w[t - 7] + s1;
    }
    let [a, b, c, d, e, f, g, h] = state;
    for (let t = 0; t < 64; t++) {
      const sum1 = rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25);
      const choose = (e & f) ^ (~e & g);
      const t1 = (h + sum1 + choose + ROUND[t] + w[t]) >>> 0;
      const sum0 = rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22);
      const majority = (a & b) ^ (a & c) ^ (b & c);
      const t2 = (sum0 + majority) >>> 0;
      h = g;
      g = f;
      f = e;
      e = (d + t1) >>> 0;
      d = c;
      c = b;
      b = a;
      a = (t1 + t2) >>> 0;
    }
    state[0] += a;
    state[1] += b;
    state[2] += c;
    state[3] += d;
    state[4] += e;
    state[5] += f;
    state[6] += g;
    state[7] += h;
  }
  const digest = new Uint8Array(32);
  const out = new DataView(digest.buffer);
  state.forEach((word, i) => out.setUint32(4 * i, word));
  return digest;
}
