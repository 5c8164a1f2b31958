// A message's basic formatting, as chat users write it: **bold**, *italic*,
// `code`, ``` blocks ```, and "> " quoted lines. Only ever DOM nodes and
// text nodes: user text never becomes HTML.

const INLINE = /`([^`\n]+)`|\*\*(?=\S)([^*\n]*?\S)\*\*|\*(?=[^\s*])([^*\n]*?[^\s*])\*/g;

function node(tag, className, text) {
  const n = document.createElement(tag);
  if (className) n.className = className;
  if (text !== undefined) n.textContent = text;
  return n;
}

/** One run of text without blocks: code, bold and italic spans; the rest
 * goes through `plain` (which makes the links). */
function inline(text, plain) {
  const out = document.createDocumentFragment();
  let at = 0;
  for (const match of text.matchAll(INLINE)) {
    if (match.index > at) out.append(plain(text.slice(at, match.index)));
    if (match[1] !== undefined) out.append(node("code", "", match[1]));
    else {
      const span = node(match[2] !== undefined ? "strong" : "em");
      span.append(plain(match[2] ?? match[3]));
      out.append(span);
    }
    at = match.index + match[0].length;
  }
  if (at < text.length) out.append(plain(text.slice(at)));
  return out;
}

/** Lines outside code blocks: runs of "> " lines become a quote block. */
function lines(text, plain, out) {
  const all = text.split("\n");
  let n = 0;
  while (n < all.length) {
    if (/^>\s?/.test(all[n]) && all[n].length > 1) {
      const quoted = [];
      while (n < all.length && /^>\s?/.test(all[n])) quoted.push(all[n++].replace(/^>\s?/, ""));
      const block = node("blockquote");
      block.append(inline(quoted.join("\n"), plain));
      out.append(block);
      continue;
    }
    if (n > 0 && !(out.lastChild instanceof HTMLElement && out.lastChild.tagName === "BLOCKQUOTE")) out.append("\n");
    out.append(inline(all[n], plain));
    n += 1;
  }
}

/** The formatted text as a fragment; `plain(text)` renders unformatted runs. */
export function formatted(text, plain = (t) => document.createTextNode(t)) {
  const out = document.createDocumentFragment();
  const parts = text.split("```");
  // An odd count of fences: the last one opens nothing, it is text.
  const closed = parts.length % 2 === 1 ? parts.length : parts.length - 1;
  for (let i = 0; i < parts.length; i += 1) {
    if (i % 2 === 1 && i < closed) {
      const pre = node("pre");
      pre.append(node("code", "", parts[i].replace(/^[^\S\n]*\n/, "").replace(/\n$/, "")));
      out.append(pre);
      continue;
    }
    let part = i % 2 === 1 ? "```" + parts[i] : parts[i];
    if (i > 0 && i % 2 === 0) part = part.replace(/^\n/, ""); // the line break after a block
    if (i + 1 < closed) part = part.replace(/\n$/, ""); // the line break before one
    if (part) lines(part, plain, out);
  }
  return out;
}
