// dom.js: the only way the dashboard builds DOM. Every string becomes a text
// node or an attribute value, never markup, so nothing the server or a model
// wrote can turn into HTML (there is no innerHTML anywhere in the dashboard).

/**
 * Creates an element. `props` sets attributes (`data-*`, `aria-*`, `class`,
 * `hidden`, ...); `on*` functions become event listeners. Children are nodes
 * or strings (as text); null, undefined and false are skipped, arrays are
 * flattened.
 */
export function h(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith('on') && typeof value === 'function') {
      node.addEventListener(name.slice(2).toLowerCase(), value);
    } else if (value === true) {
      node.setAttribute(name, '');
    } else {
      node.setAttribute(name, String(value));
    }
  }
  append(node, children);
  return node;
}

/** Appends children as `h` does. */
export function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** Replaces every child of `node`. */
export function replaceChildren(node, ...children) {
  node.replaceChildren();
  return append(node, children);
}

/** Sets an element's text only when it changed, so screen readers following
 * an aria-live region are not told the same thing twice. */
export function setText(node, text) {
  const value = String(text);
  if (node.textContent !== value) node.textContent = value;
}

/** A CSS class fragment for a name that came from the server: only
 * lowercase letters, digits and dashes survive, anything else is `other`. */
export function classSafe(name) {
  return typeof name === 'string' && /^[a-z0-9-]{1,40}$/.test(name) ? name : 'other';
}
