// markdown.js: results as Markdown, the way models write them: the subset
// agents use (paragraphs, headings, lists, block quotes, rules,
// fenced and inline code, emphasis, links), built with dom.js from elements
// and text nodes only, like everything else on the page: whatever the text
// holds, no markup of its own reaches the page, and a link keeps only an
// http(s) address.

import { h } from './dom.js';

/** A line that opens or closes a fenced code block, and its info string. */
const FENCE = /^ {0,3}(`{3,}|~{3,})\s*([^`\s]*)/;
const HEADING = /^ {0,3}(#{1,6})(?:\s+(.*?))?\s*#*\s*$/;
const BULLET = /^ {0,3}[-*+]\s+(.*)$/;
const NUMBERED = /^ {0,3}(\d{1,9})[.)]\s+(.*)$/;
const QUOTE = /^ {0,3}>\s?(.*)$/;
const RULE = /^ {0,3}([-*_])(\s*\1){2,}\s*$/;

/**
 * A `div.md` showing `text` as Markdown. Text that is not Markdown reads as
 * it was written: every line of a paragraph keeps its break.
 */
export function markdown(text) {
  const root = h('div', { class: 'md' });
  const lines = String(text ?? '').replace(/\r\n?/g, '\n').split('\n');
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    if (/^\s*$/.test(line)) {
      i += 1;
      continue;
    }
    const fence = FENCE.exec(line);
    if (fence) {
      // An unclosed fence runs to the end of the text, as in CommonMark.
      const closing = new RegExp(`^ {0,3}${fence[1][0] === '`' ? '`' : '~'}{${fence[1].length},}\\s*$`);
      const body = [];
      i += 1;
      while (i < lines.length && !closing.test(lines[i])) body.push(lines[i++]);
      i += 1;
      const code = h('code', {}, body.join('\n'));
      if (/^[A-Za-z0-9_+-]{1,30}$/.test(fence[2])) code.dataset.lang = fence[2];
      root.append(h('pre', {}, code));
      continue;
    }
    const heading = HEADING.exec(line);
    if (heading) {
      root.append(h(`h${Math.min(heading[1].length + 2, 6)}`, {}, inline(heading[2] ?? '')));
      i += 1;
      continue;
    }
    if (RULE.test(line)) {
      root.append(h('hr', {}));
      i += 1;
      continue;
    }
    if (BULLET.test(line) || NUMBERED.test(line)) {
      const ordered = !BULLET.test(line);
      const pattern = ordered ? NUMBERED : BULLET;
      const first = ordered ? Number(NUMBERED.exec(line)[1]) : 1;
      const list = h(ordered ? 'ol' : 'ul', ordered && first !== 1 ? { start: first } : {});
      let item = null;
      while (i < lines.length && !/^\s*$/.test(lines[i])) {
        const match = pattern.exec(lines[i]);
        if (match) {
          item = h('li', {}, inline(match[ordered ? 2 : 1]));
          list.append(item);
        } else if (/^\s+\S/.test(lines[i]) && item) {
          // An indented line continues the item above it.
          item.append('\n', ...inline(lines[i].trim()));
        } else {
          break;
        }
        i += 1;
      }
      root.append(list);
      continue;
    }
    if (QUOTE.test(line)) {
      const body = [];
      while (i < lines.length && QUOTE.test(lines[i])) body.push(QUOTE.exec(lines[i++])[1]);
      root.append(h('blockquote', {}, inline(body.join('\n'))));
      continue;
    }
    const paragraph = [];
    while (
      i < lines.length && !/^\s*$/.test(lines[i]) && !FENCE.test(lines[i]) && !HEADING.test(lines[i])
      && !BULLET.test(lines[i]) && !NUMBERED.test(lines[i]) && !QUOTE.test(lines[i])
    ) {
      paragraph.push(lines[i++].trim());
    }
    root.append(h('p', {}, inline(paragraph.join('\n'))));
  }
  return root;
}

/** Code spans, links, strong and emphasis, in the order they start. */
const INLINE = new RegExp([
  /(`+)([^`]|[^`][\s\S]*?[^`])\1(?!`)/.source, // 1, 2: code
  /\[([^\]\n]+)\]\(\s*(\S+?)\s*\)/.source, // 3, 4: link
  /\*\*(?=\S)([\s\S]*?\S)\*\*/.source, // 5: strong
  /__(?=\S)([\s\S]*?\S)__(?!\w)/.source, // 6: strong
  /\*(?=[^\s*])([\s\S]*?[^\s*])\*/.source, // 7: emphasis
  /(?<!\w)_(?=[^\s_])([\s\S]*?[^\s_])_(?!\w)/.source, // 8: emphasis
].join('|'));

/** The nodes of one span of inline Markdown. */
function inline(text) {
  const nodes = [];
  let rest = String(text);
  for (let match = INLINE.exec(rest); match; match = INLINE.exec(rest)) {
    if (match.index > 0) nodes.push(rest.slice(0, match.index));
    if (match[1] !== undefined) {
      nodes.push(h('code', {}, match[2].length > 2 && match[2].startsWith(' ') && match[2].endsWith(' ') ? match[2].slice(1, -1) : match[2]));
    } else if (match[3] !== undefined) {
      const href = safeHref(match[4]);
      nodes.push(href
        ? h('a', { href, target: '_blank', rel: 'noopener noreferrer' }, inline(match[3]))
        : match[0]);
    } else if (match[5] !== undefined || match[6] !== undefined) {
      nodes.push(h('strong', {}, inline(match[5] ?? match[6])));
    } else {
      nodes.push(h('em', {}, inline(match[7] ?? match[8])));
    }
    rest = rest.slice(match.index + match[0].length);
  }
  if (rest) nodes.push(rest);
  return nodes;
}

/** The address of a link if it is an absolute http(s) URL, else null:
 * `javascript:`, `data:` and relative addresses stay text. */
export function safeHref(address) {
  try {
    const url = new URL(address);
    return url.protocol === 'http:' || url.protocol === 'https:' ? url.href : null;
  } catch {
    return null;
  }
}
