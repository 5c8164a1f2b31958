// Search in the page (protocol section 21): the header's box, the panel of
// results with their snippets and "more", the filters. A result opens its
// room at the message (app.js does, with HISTORY around). Snippets are text
// nodes and <mark> elements, never HTML.

import { roomKey } from "./protocol.js";

const $ = (id) => document.getElementById(id);

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/** The snippet with each mark ([start, length] in code points) as a <mark>. */
export function highlighted(snippet, marks) {
  const chars = Array.from(snippet);
  const out = document.createDocumentFragment();
  let at = 0;
  const spans = [...marks]
    .filter((m) => Array.isArray(m) && m.length === 2 && m[1] > 0)
    .sort((a, b) => a[0] - b[0]);
  for (const [start, length] of spans) {
    if (start < at || start >= chars.length) continue; // overlapping or outside: left plain
    if (start > at) out.append(chars.slice(at, start).join(""));
    out.append(el("mark", "", chars.slice(start, start + length).join("")));
    at = Math.min(chars.length, start + length);
  }
  if (at < chars.length) out.append(chars.slice(at).join(""));
  return out;
}

/** When a hit was said: the time today, else the date and time. */
function when(ts) {
  const date = new Date(ts * 1000);
  const today = new Date().toDateString() === date.toDateString();
  const time = date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  return today ? time : `${date.toLocaleDateString()} ${time}`;
}

/** The search box, its panel and one search at a time (a newer one wins). */
export class SearchPanel {
  /** `app` gives the session, the room shown, room names, and opens hits. */
  constructor(app) {
    this.app = app;
    this.ref = null; // the search whose RESULTS are awaited
    this.fields = null; // the search shown: what "more" asks again
    this.page = null;
    $("search-form").addEventListener("submit", (e) => {
      e.preventDefault();
      this.run();
    });
    $("search-more").addEventListener("click", () => this.more());
    $("search-close").addEventListener("click", () => this.close());
    for (const id of ["search-here", "search-from"]) $(id).addEventListener("change", () => this.fields && this.run());
    document.addEventListener("keydown", (e) => {
      if ((e.ctrlKey || e.metaKey) && !e.altKey && e.key.toLowerCase() === "k") {
        e.preventDefault();
        this.focus();
      } else if (e.key === "Escape" && e.target.closest?.("#search-panel, #search-form") && !$("search-panel").hidden) {
        this.close();
      }
    });
    $("search-results").addEventListener("click", (e) => {
      const hit = e.target.closest("li[data-seq]");
      if (hit) this.app.openAt(hit.dataset.room, Number(hit.dataset.seq));
    });
  }

  /** A new session's events: RESULTS and refused searches. */
  wire(session) {
    session.addEventListener("results", (e) => this.onResults(e.detail));
    session.addEventListener("search-failed", (e) => this.onFailed(e.detail));
  }

  focus() {
    const box = $("search-input");
    box.focus();
    box.select();
  }

  close() {
    $("search-panel").hidden = true;
    this.ref = null;
  }

  /** A new search with the box's words and the filters. */
  run() {
    const words = $("search-input").value.trim();
    if (!words) return this.say("Type the words to look for.", true);
    const fields = { words };
    const room = this.app.room();
    if ($("search-here").checked && room) fields.room = room.name;
    const from = $("search-from").value.trim();
    if (from) fields.from = from;
    this.fields = fields;
    this.page = null;
    $("search-results").replaceChildren();
    this.ask(fields);
  }

  more() {
    if (this.fields && this.page) this.ask({ ...this.fields, page: this.page });
  }

  ask(fields) {
    $("search-panel").hidden = false;
    $("search-more").hidden = true;
    this.ref = this.app.session?.search(fields) ?? null;
    this.say(this.ref ? "Searching…" : "Not connected: try again in a moment.", !this.ref);
  }

  say(text, error = false) {
    $("search-panel").hidden = false;
    const out = $("search-status");
    out.textContent = text;
    out.classList.toggle("error", error);
  }

  onResults(body) {
    if (!body.ref || body.ref !== this.ref) return; // an older search's answer
    this.ref = null;
    this.page = body.more ? body.page ?? null : null;
    const list = $("search-results");
    list.append(...body.hits.map((hit) => this.hitLine(hit)));
    const count = list.children.length;
    this.say(count ? `${count} message${count === 1 ? "" : "s"}${this.page ? " so far" : ""}` : "Nothing found.");
    $("search-more").hidden = !this.page;
  }

  onFailed(body) {
    if (body.ref !== this.ref) return;
    this.ref = null;
    this.say(`Can't search: ${body.message}`, true);
  }

  hitLine(hit) {
    const li = el("li", "hit");
    li.dataset.room = roomKey(hit.room);
    li.dataset.seq = hit.seq;
    const open = el("button", "hit-open");
    open.type = "button";
    open.title = "Open the room at this message";
    const head = el("span", "hit-head");
    head.append(el("span", "hit-room", this.app.nameOf(hit.room)), " ", el("span", "hit-from", hit.from), " ");
    const stamp = el("time", "hit-time", when(hit.ts));
    stamp.dateTime = new Date(hit.ts * 1000).toISOString();
    head.append(stamp);
    const snippet = el("span", "hit-snippet");
    snippet.append(highlighted(hit.snippet, hit.marks ?? []));
    open.append(head, snippet);
    li.append(open);
    return li;
  }
}
