// markdown: the Markdown renderer of results (`markdown` in static/markdown.js),
// run in the page on hand-made input: each construct agents use becomes
// the right elements, and hostile input (tags, `javascript:` links, event
// handler attributes, unclosed fences) stays text: no element the renderer
// does not make, no link that is not http(s).

import { test, expect } from '../helpers/fixtures.js';

/** Renders `text` in the page; returns the element tree as nested arrays
 * `[tag, {attributes}, ...children]`, text nodes as strings. */
async function render(page, text) {
  return page.evaluate(async (source) => {
    const { markdown } = await import('/static/markdown.js');
    const tree = (node) => {
      if (node.nodeType === Node.TEXT_NODE) return node.data;
      const attributes = Object.fromEntries([...node.attributes].map((a) => [a.name, a.value]));
      return [node.tagName.toLowerCase(), attributes, ...[...node.childNodes].map(tree)];
    };
    return tree(markdown(source));
  }, text);
}

/** Every tag name in a tree from `render`. */
function tags(tree) {
  if (typeof tree === 'string') return [];
  return [tree[0], ...tree.slice(2).flatMap(tags)];
}

test.beforeEach(async ({ page }) => {
  await page.goto('/');
});

test('paragraphs, headings, lists, code, emphasis and links', async ({ page }) => {
  const tree = await render(page, [
    '# Report',
    '',
    'First line',
    'second line with `ls -la` and **bold** and *em* and _also em_.',
    '',
    '## Steps',
    '- one',
    '- two with [the docs](https://example.com/a?b=1)',
    '',
    '3. third',
    '4. fourth',
    '',
    '```sh',
    'echo "<b>hi</b>"',
    '  indented',
    '```',
    '> quoted',
  ].join('\n'));
  expect(tree).toEqual(['div', { class: 'md' },
    ['h3', {}, 'Report'],
    ['p', {}, 'First line\nsecond line with ', ['code', {}, 'ls -la'], ' and ', ['strong', {}, 'bold'], ' and ', ['em', {}, 'em'], ' and ', ['em', {}, 'also em'], '.'],
    ['h4', {}, 'Steps'],
    ['ul', {}, ['li', {}, 'one'], ['li', {}, 'two with ', ['a', { href: 'https://example.com/a?b=1', target: '_blank', rel: 'noopener noreferrer' }, 'the docs']]],
    ['ol', { start: '3' }, ['li', {}, 'third'], ['li', {}, 'fourth']],
    ['pre', {}, ['code', { 'data-lang': 'sh' }, 'echo "<b>hi</b>"\n  indented']],
    ['blockquote', {}, 'quoted'],
  ]);
});

test('plain text reads as written, snake_case and a lone star included', async ({ page }) => {
  const tree = await render(page, 'run_id and file_name stay\n2 * 3 = 6, a*b');
  expect(tree).toEqual(['div', { class: 'md' }, ['p', {}, 'run_id and file_name stay\n2 * 3 = 6, a*b']]);
  expect(await render(page, '')).toEqual(['div', { class: 'md' }]);
  expect(await render(page, null)).toEqual(['div', { class: 'md' }]);
});

test('hostile input stays text: tags, script, javascript: links, unclosed fences', async ({ page }) => {
  const hostile = [
    '<script>window.__pwned = 1</script>',
    '<img src=x onerror="window.__pwned = 2">',
    '[click me](javascript:window.__pwned=3) and [data](data:text/html,<script>x</script>)',
    '[relative](/api/runs) and [spaced]( javascript:alert(1) )',
    '[nested **bold** <i>tag</i>](https://example.com/"onmouseover="x)',
    '**unclosed bold and `unclosed code',
    '```',
    '<script>window.__pwned = 4</script>',
    '[not a link](https://example.com)',
  ].join('\n');
  const tree = await render(page, hostile);
  const used = new Set(tags(tree));
  for (const tag of used) expect(['div', 'p', 'a', 'strong', 'em', 'code', 'pre']).toContain(tag);
  // Only the http(s) link became a link; its address is the parsed URL,
  // quotes escaped by the URL parser, and it opens without an opener.
  const links = [];
  const collect = (node) => {
    if (typeof node === 'string') return;
    if (node[0] === 'a') links.push(node[1]);
    node.slice(2).forEach(collect);
  };
  collect(tree);
  expect(links).toEqual([{ href: 'https://example.com/%22onmouseover=%22x', target: '_blank', rel: 'noopener noreferrer' }]);
  // The unclosed fence runs to the end, as code: the link inside it is text.
  const pre = tree[tree.length - 1];
  expect(pre).toEqual(['pre', {}, ['code', {}, '<script>window.__pwned = 4</script>\n[not a link](https://example.com)']]);
  // The text is all there, as text.
  const text = await page.evaluate(async (source) => (await import('/static/markdown.js')).markdown(source).textContent, hostile);
  expect(text).toContain('<script>window.__pwned = 1</script>');
  expect(text).toContain('[click me](javascript:window.__pwned=3)');
  // Nothing ran, even with the nodes in the document.
  await page.evaluate(async (source) => {
    document.body.append((await import('/static/markdown.js')).markdown(source));
  }, hostile);
  expect(await page.evaluate(() => window.__pwned)).toBeUndefined();
  expect(await page.locator('body script, body img').count()).toBe(0);
});

test('only absolute http(s) addresses are links', async ({ page }) => {
  const verdicts = await page.evaluate(async () => {
    const { safeHref } = await import('/static/markdown.js');
    return ['https://a.example/x', 'http://a.example', 'HTTPS://A.EXAMPLE/', 'javascript:alert(1)', 'JaVaScRiPt:alert(1)',
      'data:text/html,x', 'vbscript:x', '//evil.example', '/relative', 'mailto:a@b.c', 'java\tscript:alert(1)', '']
      .map((address) => safeHref(address));
  });
  expect(verdicts).toEqual(['https://a.example/x', 'http://a.example/', 'https://a.example/', null, null, null, null, null, null, null, null, null]);
});
