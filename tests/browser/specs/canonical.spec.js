// canonical: the page's canonical JSON (RFC 8785) and its own SHA-256
// (FIPS 180-4, the fallback for pages without `crypto.subtle`), from
// static/canonical.js, run in the page: known answers of both standards,
// the server's own test vectors (src/jcs.rs), and every message length
// across the padding boundaries against the browser's digest and Node's.

import crypto from 'node:crypto';
import { test, expect } from '../helpers/fixtures.js';

test('canonical JSON and SHA-256 give the standards\' answers', async ({ page }) => {
  await page.goto('/');
  const unicode = ['', 'é', 'ünïcødé 😀 \u2028 "q" \\', 'x'.repeat(55), 'y'.repeat(56), 'z'.repeat(64), '€'.repeat(300)];
  const result = await page.evaluate(async (unicode) => {
    const { canonicalJson, sha256, sha256Hex, hex, argsSha256 } = await import('/static/canonical.js');
    const fallback = (text) => hex(sha256(new TextEncoder().encode(text)));
    const native = async (text) => hex(new Uint8Array(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(text))));
    // Every byte length across the padding boundaries (55, 56, 64, 119,
    // 120, 128, ...), and mixed UTF-8, against the browser's own digest.
    const mismatches = [];
    for (let n = 0; n <= 300; n++) {
      for (const text of ['a'.repeat(n), 'aé😀'.repeat(n)]) {
        if (fallback(text) !== await native(text)) mismatches.push(text.length);
      }
    }
    const numbers = [0, -0, 1, -1, 1e21, 1e20, 123456789012345680000, 0.000001, 1e-7, 4.5, 0.002,
      333333333.3333333, 1.7976931348623157e308, 5e-324, -1.5e-9];
    return {
      secure: isSecureContext,
      vectors: {
        empty: fallback(''),
        abc: fallback('abc'),
        two_blocks: fallback('abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq'),
        long_message: fallback('abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu'),
        million_a: fallback('a'.repeat(1_000_000)),
      },
      unicode: unicode.map(fallback),
      viaHelper: await sha256Hex('abc'),
      mismatches,
      numbers: numbers.map(canonicalJson),
      sorted: canonicalJson({ '\u20ac': 'Euro Sign', '\r': 'Carriage Return', '\ufb33': 'Hebrew Letter Dalet With Dagesh',
        1: 'One', '\ud83d\ude00': 'Emoji: Grinning Face', '\u0080': 'Control', '\u00f6': 'Latin Small Letter O With Diaeresis' }),
      nested: canonicalJson({ b: [], a: {}, c: [{ z: 1, y: [null, false, true] }], d: 'a"b\\c\u0001\n\u007f\u2028é/' }),
      shell: await argsSha256({ timeout_secs: 5, command: 'ls -la' }),
    };
  }, unicode);

  expect(result.secure).toBe(true);
  // FIPS 180-4 examples and the million-a message.
  expect(result.vectors).toEqual({
    empty: 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855',
    abc: 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad',
    two_blocks: '248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1',
    long_message: 'cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1',
    million_a: 'cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0',
  });
  expect(result.unicode).toEqual(unicode.map((text) => crypto.createHash('sha256').update(text, 'utf8').digest('hex')));
  expect(result.viaHelper).toBe(result.vectors.abc);
  expect(result.mismatches).toEqual([]);

  // Numbers as ECMAScript writes them (the cases of src/jcs.rs).
  expect(result.numbers).toEqual(['0', '0', '1', '-1', '1e+21', '100000000000000000000', '123456789012345680000',
    '0.000001', '1e-7', '4.5', '0.002', '333333333.3333333', '1.7976931348623157e+308', '5e-324', '-1.5e-9']);
  // RFC 8785 section 3.2.3: members sorted by UTF-16 code units.
  expect(result.sorted).toBe('{"\\r":"Carriage Return","1":"One","\u0080":"Control",'
    + '"\u00f6":"Latin Small Letter O With Diaeresis","\u20ac":"Euro Sign","\ud83d\ude00":"Emoji: Grinning Face",'
    + '"\ufb33":"Hebrew Letter Dalet With Dagesh"}');
  expect(result.nested).toBe('{"a":{},"b":[],"c":[{"y":[null,false,true],"z":1}],"d":"a\\"b\\\\c\\u0001\\n\u007f\u2028é/"}');
  // The server's own test vector (src/jcs.rs).
  expect(result.shell).toBe('167c9aea9c766fb008cc5ee78afcdca0b7150192e0fd01580396cc2cd3259571');
});
