// The page: views over ChatSession's events. Nothing here speaks the
// protocol; session.js does. User text only ever reaches the page as text
// nodes (textContent), never as HTML.

import { ChatSession } from "./session.js";
import { roomKey, nickKey } from "./protocol.js";
import { loginError, leftText, statusText, typingText, dayText } from "./words.js";
import { formatted } from "./format.js";
import * as moderation from "./moderation.js";
import { Attachments, ImageOverlay, fileViews, pastedName, receiveFiles, retoken } from "./files.js";
import { SearchPanel } from "./search.js";

const $ = (id) => document.getElementById(id);
/** The tab's session (nick, resume token, rooms): sessionStorage, so it
 * lives as long as the tab and is never shared; never a password. */
const TAB_KEY = "chat.tab";
/** The message box's tallest, in pixels: about six lines. */
const GROWN = 150;
const URL_PATTERN = /\bhttps?:\/\/[^\s<>"']+/gi;
const COMMANDS =
  "/msg nick text, /me text, /join room, /part [reason], /list, /topic text, /away [message], /back, /nick newnick, " +
  "/kick nick [reason], /ban nick [reason], /unban nick, /op nick, /deop nick, /invite nick, /quit";
/** Messages of one author closer than this (seconds) share one header. */
const GROUPED = 300;
/** The emoji picker's choice. */
const EMOJI = ["👍", "❤️", "😂", "🎉", "😮", "😢", "👀", "🙏", "✅", "🔥", "👏", "🤔", "😄", "🚀", "👎", "💯"];
/** A touch held this long (ms) opens a message's menu. */
const LONG_PRESS = 500;

function defaultUrl() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/ws`;
}

function time(ts) {
  return new Date(ts * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

function dayOf(ts) {
  return new Date(ts * 1000).toDateString();
}

function same(a, b) {
  return nickKey(a ?? "") === nickKey(b ?? "");
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function button(text, onClick, className = "") {
  const b = el("button", className, text);
  b.type = "button";
  b.addEventListener("click", onClick);
  return b;
}

/** Text with its http(s) URLs as links: text nodes and <a>, never HTML. */

/** A WebSocket refused at the server's door shows the page only a 1006:
 * the same address answers a plain request with the 503 and its reason. */
async function askWhyRefused(wsUrl) {
  try {
    const answer = await fetch(wsUrl.replace(/^ws/, "http"), { cache: "no-store" });
    if (answer.status !== 503) return null;
    const reason = (await answer.text()).trim();
    return /^[a-z_]{1,40}$/.test(reason) ? reason : null;
  } catch {
    return null;
  }
}

export function linkify(text) {
  const out = document.createDocumentFragment();
  let at = 0;
  for (const match of text.matchAll(URL_PATTERN)) {
    // Trailing punctuation ends a sentence, not the URL.
    const url = match[0].replace(/[.,;:!?)\]}]+$/, "");
    if (match.index > at) out.append(text.slice(at, match.index));
    const a = el("a", "link", url);
    a.href = url;
    a.target = "_blank";
    a.rel = "noopener noreferrer";
    out.append(a);
    at = match.index + url.length;
  }
  if (at < text.length) out.append(text.slice(at));
  return out;
}

function readTab() {
  try {
    const tab = JSON.parse(sessionStorage.getItem(TAB_KEY) ?? "null");
    if (!tab || typeof tab.nick !== "string" || typeof tab.token !== "string") return null;
    tab.rooms = (Array.isArray(tab.rooms) ? tab.rooms : []).filter((r) => r && typeof r.name === "string");
    return tab;
  } catch {
    return null;
  }
}

class App {
  constructor() {
    this.session = null;
    this.current = null; // the room shown
    this.localLines = new Map(); // ref -> <li> of a message being sent
    this.member = null; // the member the member dialog is about
    this.completing = null; // the nick completion Tab cycles: {nicks, index, start, caret, value}
    this.moreMembers = null; // watches the end of a big room's member list
    $("server-url").value = localStorage.getItem("chat.url") || defaultUrl();
    $("nick").value = localStorage.getItem("chat.nick") || "";
    $("login-form").addEventListener("submit", (e) => {
      e.preventDefault();
      this.logIn();
    });
    $("register").addEventListener("change", () => ($("confirm-label").hidden = !$("register").checked));
    $("composer").addEventListener("submit", (e) => {
      e.preventDefault();
      this.submit($("message-input").value);
    });
    $("message-input").addEventListener("keydown", (e) => this.typing(e));
    $("message-input").addEventListener("input", () => {
      this.grow();
      this.typed();
    });
    $("compose-cancel").addEventListener("click", () => this.cancelCompose());
    $("away-button").addEventListener("click", () => this.session?.setAway(this.session.away === null ? "" : null));
    this.wireMessages();
    $("join-button").addEventListener("click", () => this.openJoin());
    $("leave-button").addEventListener("click", () => this.current && this.session.part(this.room().name));
    $("join-form").addEventListener("submit", (e) => {
      const name = $("join-room").value.trim();
      if (e.submitter?.value !== "cancel" && name) this.join(name);
    });
    $("transcript").addEventListener("scroll", () => this.scrolled());
    $("notify-button").addEventListener("click", () => this.askToNotify());
    $("toggle-rooms").addEventListener("click", () => document.body.classList.toggle("show-rooms"));
    $("toggle-members").addEventListener("click", () => document.body.classList.toggle("show-members"));
    document.addEventListener("visibilitychange", () => this.markShown());
    this.wireMemberDialog();
    this.wireRoomDialog();
    this.wireAdminDialog();
    this.wireAccountDialog();
    this.wireFiles();
    this.search = new SearchPanel(this);
    this.modesForm = new moderation.ModesForm();
    this.keyPrompt = new moderation.KeyPrompt((room, key) => this.join(room, key));
    const tab = readTab();
    if (tab) this.start(tab.url || defaultUrl(), tab.nick, { token: tab.token, rooms: tab.rooms });
  }

  room() {
    return this.session?.rooms.get(this.current);
  }

  // -- logging in -------------------------------------------------------------------

  logIn() {
    const nick = $("nick").value.trim();
    const password = $("password").value;
    const register = $("register").checked;
    if (register && password.length < 8) {
      $("login-error").textContent = "A password has at least 8 characters.";
      return;
    }
    if (register && password !== $("password-confirm").value) {
      $("login-error").textContent = "The two passwords differ: type the same password twice.";
      return;
    }
    const url = $("server-url").value.trim() || defaultUrl();
    localStorage.setItem("chat.url", url);
    localStorage.setItem("chat.nick", nick);
    // Back after a reload asked for the password: the same nick keeps its lines.
    const rooms = this.restore && nickKey(this.restore.nick) === nickKey(nick) ? this.restore.rooms : [];
    this.restore = null;
    this.start(url, nick, { password: password || null, register, rooms });
  }

  start(url, nick, options) {
    if (this.session) this.session.disconnect();
    this.url = url;
    this.session = new ChatSession({ url, refusal: askWhyRefused });
    this.attachments = new Attachments(this.session, $("attachments"));
    this.wire(this.session);
    this.search.wire(this.session);
    $("login-error").textContent = "";
    $("login-button").disabled = true;
    this.refused = false;
    this.session.connect(nick, options);
  }

  /** Keep what a reload needs to take the session over again (section 4.3)
   * and to show what the history does not keep (whispers, presence). */
  saveTab() {
    const s = this.session;
    if (!s || !s.token || !s.welcomed) return;
    sessionStorage.setItem(TAB_KEY, JSON.stringify({ url: this.url, ...s.saved() }));
  }

  logOut() {
    sessionStorage.removeItem(TAB_KEY);
    this.session?.disconnect("logged out");
    for (const d of document.querySelectorAll("dialog[open]")) d.close();
    this.localLines.clear();
    this.current = null;
    this.attachments?.show(null);
    this.search.close();
    $("transcript").replaceChildren();
    $("chat-view").hidden = true;
    $("login-view").hidden = false;
    $("login-button").disabled = false;
    $("login-error").textContent = "You logged out.";
  }

  wire(s) {
    const on = (name, f) => s.addEventListener(name, (e) => f.call(this, e.detail));
    on("state", this.onState);
    on("welcome", this.onWelcome);
    on("login-failed", (b) => {
      this.refused = true;
      this.loginFailed(b.code, b);
    });
    on("room", ({ room }) => this.onRoom(room));
    on("older", ({ room }) => this.onOlder(room));
    on("message", this.onMessage);
    on("event", this.onEvent);
    on("outgoing", this.onOutgoing);
    on("outgoing-gone", ({ ref }) => this.localLines.get(ref)?.remove());
    on("members", ({ room }) => this.renderMembers(room));
    on("modes", ({ room }) => this.renderRoomDialog(room));
    on("left-room", this.onLeftRoom);
    on("pending", () => this.renderPending());
    on("topic", ({ room }) => this.onTopic(room));
    on("whisper", this.onWhisper);
    on("error", this.onError);
    on("marked", () => this.renderRooms());
    on("roomlist", ({ rooms }) => this.onRoomList(rooms));
    on("changed", this.onChanged);
    on("typing", ({ room }) => this.renderTyping(room));
    on("away", () => this.renderAway());
    on("opened", ({ room }) => this.show(room.key));
    on("open-failed", this.onOpenFailed);
    on("done", this.onDone);
    on("bans", this.onBans);
    on("sessions", this.onSessions);
    on("invited", (b) => this.onInvited(b));
    on("renamed", this.onRenamed);
    on("files-token", () => retoken(s, $("transcript")));
    on("around", ({ room, seq }) => this.onAround(room, seq));
    on("newer", ({ room }) => this.onNewer(room));
  }

  loginFailed(code, { retry_after: retryAfter = null, message = "" } = {}) {
    const tab = readTab();
    const resumed = tab !== null;
    if (resumed) this.restore = { nick: tab.nick, rooms: tab.rooms };
    sessionStorage.removeItem(TAB_KEY); // that session is over; a fresh login follows
    let text = loginError(code, { retryAfter, message });
    if (resumed && code === "nick_registered") text = "Your session ended: enter your password to log in again.";
    $("login-error").textContent = text;
    $("login-button").disabled = false;
    $("chat-view").hidden = true;
    $("login-view").hidden = false;
    if (resumed) $("nick").value = this.session?.nick ?? $("nick").value;
    const passwordWanted = ["nick_registered", "bad_password", "weak_password"].includes(code);
    $(passwordWanted ? "password" : "nick").focus();
  }

  onState({ state, detail }) {
    const words = {
      connecting: "connecting…",
      connected: `connected as ${this.session.nick}${this.session.away === null ? "" : " (away)"}`,
      reconnecting: `connection lost: retrying in ${detail} s`,
      given_up: `disconnected: ${detail}`,
      disconnected: "disconnected",
    };
    $("status").textContent = words[state] ?? state;
    document.body.dataset.state = state;
    if (state !== "given_up") return;
    // A refused LOGIN was said already, with its details (a wait to respect).
    if (!this.session.welcomed) {
      if (!this.refused) this.loginFailed(detail);
    } else this.notice(`Disconnected: ${loginError(detail)}`, "error");
  }

  onWelcome({ body, resumed }) {
    $("login-view").hidden = true;
    $("chat-view").hidden = false;
    $("login-button").disabled = false;
    $("password").value = "";
    $("password-confirm").value = "";
    $("admin-button").hidden = !this.session.admin;
    this.renderAway();
    if (!resumed && body.motd) this.notice(body.motd);
    $("message-input").maxLength = body.limits?.max_text ?? 4000;
    $("message-input").focus();
    this.saveTab();
  }

  // -- rooms ----------------------------------------------------------------------

  join(name, key = "") {
    this.wanted = roomKey(name); // shown once its ROOM comes
    this.session.join(name, key);
  }

  onRoom(room) {
    if (!this.current || !this.session.rooms.has(this.current) || room.key === this.wanted) {
      this.current = room.key;
      this.wanted = null;
    }
    this.renderRooms();
    if (room.key === this.current) this.show(room.key);
    this.saveTab();
    if (this.pendingHit?.key === room.key) {
      const { key, seq } = this.pendingHit;
      this.pendingHit = null;
      this.openAt(key, seq);
    }
  }

  show(key) {
    const before = this.room();
    if (before && before.key !== key) {
      this.session.stoppedTyping(before.name);
      if (this.replyTo || this.editing) this.cancelCompose();
    }
    this.current = key;
    this.session.show(key);
    this.attachments?.show(key);
    const room = this.room();
    if (!room) return;
    $("latest-button").hidden = !room.newer;
    room.mentions = 0;
    document.body.classList.remove("show-rooms");
    document.body.classList.toggle("direct", room.direct);
    $("room-title").textContent = this.roomName(room);
    $("room-topic").textContent = room.direct ? room.topic || "direct conversation" : room.topic;
    this.renderModes(room);
    this.renderTranscript(room);
    const list = $("transcript");
    list.scrollTop = list.scrollHeight;
    this.renderMembers(room);
    this.renderRooms();
    this.markShown();
    if (list.scrollHeight <= list.clientHeight) this.session.loadOlder(key);
  }

  renderTranscript(room) {
    const list = $("transcript");
    const nodes = [];
    let prev = null;
    for (const entry of room.timeline()) {
      const li = this.entry(entry);
      nodes.push(...this.placed(li, prev));
      prev = li;
    }
    list.replaceChildren(...nodes);
    for (const li of this.localLines.values()) {
      if (li.dataset.room === room.key) list.append(li);
    }
    this.renderTyping(room);
  }

  /** A line and what comes before it after `prev` (the line above, or null):
   * a day separator when the day changes; and a message of the same author
   * soon after the one above shares its header (the line is marked continued). */
  placed(li, prev) {
    const ts = Number(li.dataset.ts);
    const before = prev ? Number(prev.dataset.ts) : NaN;
    if (ts && !(before && dayOf(before) === dayOf(ts))) {
      const day = el("li", "day");
      day.dataset.ts = ts;
      day.append(el("span", "", dayText(ts)));
      return [day, li];
    }
    const grouped = (n) => n.classList.contains("message") && !n.classList.contains("whisper") && !n.classList.contains("me-action");
    if (prev && grouped(li) && grouped(prev) && li.dataset.from && same(prev.dataset.from, li.dataset.from) && ts - before < GROUPED) {
      li.classList.add("continued");
    }
    return [li];
  }

  /** How the page names a room: a direct conversation by its other people. */
  roomName(room) {
    if (!room.direct) return room.name;
    const others = room.others(this.session.nick);
    return others.length ? others.join(", ") : this.session.nick;
  }

  renderRooms() {
    const joined = [...this.session.rooms.values()].filter((r) => r.joined);
    const items = joined.map((room) => {
      const li = el("li", room.key === this.current ? "current" : "");
      li.dataset.room = room.key;
      const name = button(this.roomName(room), () => this.show(room.key), "room-name");
      if (room.direct) name.title = `Direct conversation with ${room.others(this.session.nick).join(", ")}`;
      li.append(name);
      if (room.key !== this.current && room.mentions) {
        const badge = el("span", "unread mention-badge", `@${room.mentions}`);
        badge.title = `${room.mentions} unread message${room.mentions === 1 ? "" : "s"} naming you`;
        li.append(badge);
      } else if (room.unread && room.key !== this.current) {
        li.append(el("span", "unread", String(room.unread)));
      }
      return li;
    });
    $("room-list").replaceChildren(...items.filter((li, n) => !joined[n].direct));
    $("direct-list").replaceChildren(...items.filter((li, n) => joined[n].direct));
    $("direct-heading").hidden = !joined.some((r) => r.direct);
  }

  /** Whether I may moderate this room: its operator, or a server admin. */
  canModerate(room) {
    return !!room && (this.session.admin || room.isOp(this.session.nick));
  }

  renderMembers(room) {
    if (room.key !== this.current) return;
    const count = room.memberCount;
    $("member-count").textContent = `${count} ${count === 1 ? "member" : "members"}`;
    // A big room lists what was scrolled to, in folded-nick order (protocol 22).
    const members = room.lazy ? room.listed : [...room.members.values()].sort((a, b) => a.nick.localeCompare(b.nick));
    $("member-list").replaceChildren(
      ...members.map((p) => {
        const li = el("li", p.id === this.session.id ? "me" : "");
        li.dataset.nick = p.nick;
        if (p.op) li.classList.add("op");
        else if (p.voice) li.classList.add("voiced");
        const name = button(moderation.badge(p) + p.nick, () => this.openMember(p), "member-name");
        name.title = moderation.memberTitle(p, room);
        if (p.away != null) {
          li.classList.add("away");
          name.title = `${name.title} is away${p.away ? `: ${p.away}` : ""}`;
        }
        li.append(name);
        li.addEventListener("contextmenu", (e) => {
          e.preventDefault();
          this.openMember(p);
        });
        return li;
      }),
    );
    this.watchMoreMembers(room);
    document.body.classList.toggle("can-moderate", this.canModerate(room));
    if ($("member-dialog").open && this.member) this.renderMemberDialog();
    if ($("room-dialog").open) this.renderRoomDialog(room); // made or unmade an operator
    this.renderModes(room);
  }

  /** A big room's next page once the end of its list scrolls into view. */
  watchMoreMembers(room) {
    this.moreMembers?.disconnect();
    if (room.behind) {
      // Who joined since the list reached its end is not in it (protocol 22.4): say so.
      const missing = room.count - room.listed.length;
      const said = missing > 0 ? `${missing} more not listed` : "The list is out of date";
      const behind = el("li", "member-behind muted", `${said} `);
      behind.append(button("Refresh", () => this.session.relist(room.key)));
      $("member-list").append(behind);
      return;
    }
    if (!room.lazy || room.complete) return;
    const more = el("li", "member-more muted", "…");
    $("member-list").append(more);
    this.moreMembers = new IntersectionObserver((seen) => {
      if (seen.some((e) => e.isIntersecting)) this.session.moreMembers(room.key);
    });
    this.moreMembers.observe(more);
  }

  /** Tab: complete the nick before the caret (the server's members in a big
   * room); Tab again takes the next candidate. Whether there was a word. */
  completeNick() {
    const box = $("message-input");
    const room = this.room();
    const cycle = this.completing;
    if (cycle && box.value === cycle.value && box.selectionStart === cycle.caret) {
      this.putNick(cycle.nicks, (cycle.index + 1) % cycle.nicks.length, cycle.start, cycle.caret);
      return true;
    }
    this.completing = null;
    const caret = box.selectionStart;
    const match = /@?([^\s@]+)$/.exec(box.value.slice(0, caret));
    if (!match || !room) return false;
    const word = match[1];
    const start = caret - word.length;
    const asked = box.value;
    this.session.complete(room.key, word).then((peers) => {
      if (box.value !== asked || box.selectionStart !== caret || !peers.length) return;
      this.putNick(peers.map((p) => p.nick), 0, start, caret);
    });
    return true;
  }

  putNick(nicks, index, start, end) {
    const box = $("message-input");
    const put = nicks[index] + (start === 0 ? ": " : " ");
    box.value = box.value.slice(0, start) + put + box.value.slice(end);
    const caret = start + put.length;
    box.setSelectionRange(caret, caret);
    this.completing = { nicks, index, start, caret, value: box.value };
  }

  renderPending() {
    $("pending-list").replaceChildren(...[...this.session.pending].map((id) => el("li", "", `#${id}`)));
  }

  onTopic(room) {
    if (room.key === this.current) $("room-topic").textContent = room.topic;
    if ($("room-dialog").open) this.renderRoomDialog(room);
  }

  onLeftRoom({ room, left }) {
    if (this.current === room.key) {
      const next = [...this.session.rooms.values()].find((r) => r.joined);
      this.current = next ? next.key : null;
      if (this.current) this.show(this.current);
      else {
        $("transcript").replaceChildren();
        $("member-list").replaceChildren();
        $("room-title").textContent = "";
        $("room-topic").textContent = "";
        $("room-modes").textContent = "";
      }
    }
    this.renderRooms();
    this.saveTab();
    // Said after the switch to another room, whose transcript would hide it.
    const why = left.message ? `: ${left.message}` : "";
    if (left.reason === "kicked" || left.reason === "banned") this.notice(`You were ${left.reason} from ${room.name}${why}`, "error");
    else if (left.reason === "closed") this.notice(`${room.name} was closed${why}`, "error");
    else if (left.reason !== "part") this.notice(`You left ${room.name}: ${left.reason}${why}`);
  }

  openJoin() {
    $("join-room").value = "";
    $("room-directory").replaceChildren();
    this.session.listRooms();
    $("join-dialog").showModal();
  }

  onRoomList(rooms) {
    this.renderDirectory(rooms);
    if (!this.listing) return;
    this.listing = false;
    if (!rooms.length) return this.notice("No rooms.");
    this.notice(`Rooms (${rooms.length}):`);
    for (const r of rooms) this.notice(`${r.room} (${r.members})${r.topic ? `: ${r.topic}` : ""}`);
  }

  onOpenFailed({ code, message, opening }) {
    if (code === "no_such_account" && opening.text && opening.names.length === 1) {
      // A guest has no conversations: a whisper reaches it, as before.
      this.session.whisper(opening.names[0], opening.text);
      return;
    }
    this.notice(`Can't open a conversation with ${opening.names.join(", ")}: ${message}`, "error");
  }

  renderDirectory(rooms) {
    $("room-directory").replaceChildren(
      ...rooms.map((r) => {
        const li = el("li");
        const pick = button(`${r.room} (${r.members})`, () => ($("join-room").value = r.room));
        pick.title = r.topic;
        li.append(pick);
        return li;
      }),
    );
  }

  // -- the transcript ----------------------------------------------------------------

  /** One line of a room's timeline: a message (seq) or a local event. */
  entry(e) {
    return e.seq !== undefined ? this.line(e) : this.eventLine(e);
  }

  line(m) {
    const li = el("li", m.action ? "event record" : "message");
    li.dataset.seq = m.seq;
    li.dataset.ts = m.ts;
    if (m.action) {
      li.append(el("time", "", time(m.ts)), " ");
      li.append(el("span", "text", m.deleted ? "message deleted" : `${m.from} ${m.text}`));
      if (this.canDelete(this.room(), m)) li.append(this.tools(m));
      if (moderation.isNotice(m)) this.markNotice(li, m);
      return li;
    }
    li.dataset.from = m.from;
    const stamp = el("time", "", time(m.ts));
    stamp.dateTime = new Date(m.ts * 1000).toISOString();
    stamp.title = new Date(m.ts * 1000).toLocaleString();
    li.append(stamp);
    const body = el("div", "body");
    const action = !m.deleted && m.text.startsWith("* ");
    if (!action) body.append(el("span", "from", m.from));
    if (m.reply) body.append(this.quote(m.reply));
    if (m.deleted) {
      li.classList.add("deleted");
      body.append(el("span", "text", m.deleted_by ? `message deleted by ${m.deleted_by}` : "message deleted"));
    } else if (action) {
      // /me, and IRC's CTCP ACTION: the gateway carries it as "* text"
      li.classList.add("me-action");
      const text = el("span", "text", `* ${m.from} `);
      text.append(formatted(m.text.slice(2), linkify));
      body.append(text);
    } else {
      const text = el("span", "text");
      text.append(formatted(m.text, linkify));
      body.append(text);
    }
    if (m.files?.length && !m.deleted) body.append(fileViews(this.session, this.room(), m.files));
    if (m.edited && !m.deleted) {
      const edited = el("span", "edited", " (edited)");
      edited.title = `edited ${new Date(m.edited * 1000).toLocaleString()}`;
      body.append(edited);
    }
    li.append(body);
    if (m.reactions?.length && !m.deleted) li.append(this.reactions(m));
    if (!m.deleted) li.append(this.tools(m));
    if (this.mentions(m)) li.classList.add("mention");
    if (same(m.from, this.session.nick)) li.classList.add("own", "confirmed");
    if (moderation.isNotice(m)) this.markNotice(li, m);
    return li;
  }

  /** A reply's quote of the message it answers; a click shows that message. */
  quote(q) {
    const b = el("button", q.deleted ? "quote deleted" : "quote");
    b.type = "button";
    b.dataset.seq = q.seq;
    if (q.deleted) b.append(el("span", "quote-text", "original deleted"));
    else b.append(el("span", "quote-from", q.from ?? ""), " ", el("span", "quote-text", q.text ?? ""));
    b.title = "Show the message this one answers";
    return b;
  }

  /** The reaction chips: emoji and count; the title says who; a click toggles mine. */
  reactions(m) {
    const box = el("div", "reactions");
    for (const r of m.reactions) {
      const mine = r.by.some((n) => same(n, this.session.nick));
      const chip = el("button", mine ? "reaction mine" : "reaction");
      chip.type = "button";
      chip.dataset.emoji = r.emoji;
      chip.append(el("span", "emoji", r.emoji), " ", el("span", "count", String(r.by.length)));
      chip.title = `${r.by.join(", ")} reacted with ${r.emoji}`;
      chip.setAttribute("aria-pressed", String(mine));
      box.append(chip);
    }
    return box;
  }

  /** The actions shown over a message on hover (and in its menu). */
  actions(m) {
    const room = this.room();
    const list = [];
    if (!m.action && !m.deleted) {
      list.push(["reply", "↩", "Reply"], ["react", "☺", "Add a reaction"]);
      if (this.canEdit(m)) list.push(["edit", "✎", "Edit"]);
    }
    if (this.canDelete(room, m)) list.push(["delete", "🗑", "Delete"]);
    return list;
  }

  tools(m) {
    const box = el("div", "tools");
    for (const [act, icon, label] of this.actions(m)) {
      const b = el("button", "", icon);
      b.type = "button";
      b.dataset.act = act;
      b.title = label;
      b.setAttribute("aria-label", label);
      box.append(b);
    }
    return box;
  }

  canEdit(m) {
    if (m.action || m.deleted || !same(m.from, this.session.nick)) return false;
    const window = this.session.limits?.edit_window ?? 0;
    return !(window > 0 && Date.now() / 1000 - m.ts > window);
  }

  /** The author; an operator of the room (not in a direct conversation); an admin. */
  canDelete(room, m) {
    if (m.deleted) return false;
    if (this.session.admin) return true;
    if (m.action) return false;
    if (same(m.from, this.session.nick)) return true;
    return !!room && !room.direct && room.isOp(this.session.nick);
  }

  eventLine(e) {
    if (e.kind === "whisper") {
      const li = el("li", "message whisper");
      li.dataset.ts = e.ts;
      li.append(el("time", "", time(e.ts)), " ", el("span", "from", e.fromMe ? `→ ${e.to}` : `${e.from} → you`), " ");
      const text = el("span", "text");
      text.append(linkify(e.text));
      li.append(text);
      if (e.notice) this.markNotice(li, e);
      return li;
    }
    let text;
    let kind = "event presence";
    if (e.kind === "joined") text = `${e.nick} joined`;
    else if (e.kind === "left") text = leftText(e.nick, e.reason, e.message);
    else if (e.kind === "topic") text = e.topic ? `${e.by} set the topic: ${e.topic}` : `${e.by} cleared the topic`;
    else {
      text = statusText(e);
      kind = `status ${e.kind}`;
    }
    const li = el("li", kind);
    li.dataset.ts = e.ts;
    li.append(el("time", "", time(e.ts)), " ", el("span", "text", text));
    return li;
  }

  mentions(m) {
    const nick = this.session.nick;
    if (!nick || m.action || nickKey(m.from) === nickKey(nick)) return false;
    const escaped = nick.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
    return new RegExp(`(^|\\W)@?${escaped}(\\W|$)`, "iu").test(m.text);
  }

  /** Append a line to the shown transcript, before lines still being sent,
   * keeping the view at the bottom if it was there. */
  appendLine(li) {
    const list = $("transcript");
    const atBottom = list.scrollTop + list.clientHeight >= list.scrollHeight - 4;
    const first = [...this.localLines.values()].find((l) => l.parentNode === list);
    const prev = first ? first.previousElementSibling : list.lastElementChild;
    for (const node of this.placed(li, prev)) list.insertBefore(node, first ?? null);
    if (atBottom) list.scrollTop = list.scrollHeight;
  }

  /** CHANGED (or a catch-up page): the changed messages, and replies quoting them, redrawn in place. */
  onChanged({ room, touched }) {
    for (const m of touched) {
      if (this.editing && this.editing.room === room.key && this.editing.seq === m.seq && m.deleted) this.cancelCompose();
      if (this.replyTo && this.replyTo.room === room.key && this.replyTo.seq === m.seq) {
        if (m.deleted) this.cancelCompose();
        else this.renderComposeBar();
      }
    }
    if (room.key !== this.current) return;
    const list = $("transcript");
    const atBottom = list.scrollTop + list.clientHeight >= list.scrollHeight - 4;
    for (const m of touched) {
      const old = list.querySelector(`li[data-seq="${m.seq}"]`);
      if (!old) continue;
      const li = this.line(m);
      if (old.classList.contains("continued")) li.classList.add("continued");
      old.replaceWith(li);
    }
    if (atBottom) list.scrollTop = list.scrollHeight; // a reaction's chips make a line taller
  }

  onMessage({ room, message }) {
    if (message.ref?.startsWith("moderate:")) this.result(`${message.from} ${message.text}`);
    const op = message.action?.op;
    if ((op === "ban" || op === "unban") && room.key === this.current && $("room-dialog").open) {
      this.session.moderate(room.name, "bans"); // the ban list changed
    }
    if (room.key === this.current) {
      if (message.seq === room.lastSeq) this.appendLine(this.line(message));
      else this.renderTranscript(room); // filled in a gap: redraw in order
      this.renderTyping(room);
      this.markShown();
    } else if (nickKey(message.from) !== nickKey(this.session.nick)) {
      room.unread += 1;
      if (this.mentions(message)) room.mentions += 1;
      this.renderRooms();
    }
    const direct = room.direct && !same(message.from, this.session.nick);
    if (this.mentions(message) || direct) this.announce(room, message);
  }

  onEvent({ room, entry }) {
    if (room.key === this.current && !room.newer) this.appendLine(this.eventLine(entry));
    this.saveTab();
  }

  onOlder(room) {
    if (room.key !== this.current) return;
    const list = $("transcript");
    const fromBottom = list.scrollHeight - list.scrollTop;
    this.renderTranscript(room);
    list.scrollTop = list.scrollHeight - fromBottom;
  }

  scrolled() {
    if (!this.session || !this.current) return;
    const list = $("transcript");
    if (list.scrollTop < 40) this.session.loadOlder(this.current);
    if (list.scrollTop + list.clientHeight > list.scrollHeight - 40) this.session.loadNewer(this.current);
  }

  onOutgoing({ item }) {
    let li = this.localLines.get(item.ref);
    if (item.state === "confirmed") {
      li?.remove(); // its MESSAGE (or whisper line) is in the transcript now
      this.localLines.delete(item.ref);
      return;
    }
    const room = item.room ? this.session.rooms.get(roomKey(item.room)) : null;
    if (!li && room?.newer) this.session.loadLatest(room.key); // said while reading back: to the present
    if (!li) {
      const whisper = item.type === 0x03;
      li = el("li", whisper ? "message own whisper" : "message own");
      li.dataset.ref = item.ref;
      li.dataset.ts = Date.now() / 1000;
      li.dataset.room = item.room ? roomKey(item.room) : this.current ?? "";
      li.append(el("span", "from", whisper ? `→ ${item.body.to}` : this.session.nick), " ", el("span", "text", item.text));
      if (item.files?.length) li.append(" ", el("span", "muted", `(${item.files.map((f) => f.name).join(", ")})`));
      li.append(" ", el("span", "mark"));
      this.localLines.set(item.ref, li);
      if (li.dataset.room === this.current) {
        $("transcript").append(li);
        $("transcript").scrollTop = $("transcript").scrollHeight;
      }
    }
    li.classList.toggle("failed", item.state === "failed");
    li.classList.toggle("sending", item.state === "sending");
    const mark = li.querySelector(".mark");
    mark.replaceChildren();
    if (item.state === "sending") mark.textContent = "sending…";
    else {
      mark.textContent = `not sent: ${item.error} `;
      mark.append(button("Retry", () => this.session.retrySend(item.ref), "retry"));
    }
  }

  onWhisper({ whisper, own, fromMe, room }) {
    if (!room) this.notice(`${whisper.from} → ${whisper.to}: ${whisper.text}`); // in no room: not kept
    if (!own && !fromMe) this.announce(null, { from: whisper.from, text: whisper.text });
  }

  onError(b) {
    const ref = b.ref ?? "";
    if (this.moderationError(b)) return;
    if (["moderate:", "admin:", "account:", "topic:"].some((kind) => ref.startsWith(kind))) {
      if (this.result(b.message, true)) return;
    }
    this.notice(b.message, "error");
  }

  /** RENAMED: ours shows in the status line (and a reload resumes by it). */
  onRenamed({ renamed, own }) {
    if (!own || renamed.old === renamed.nick) return;
    this.renderAway(); // the status line: "connected as <nick>"
    this.saveTab();
    this.notice(`You are now known as ${renamed.nick}.`);
  }

  onDone(b) {
    const said = {
      register: `${b.target} is now registered to you.`,
      password: "Your password is changed.",
      delete: `The account ${b.target} is deleted: you go on as a guest.`,
      away: this.session.away ? `You are away: ${this.session.away}` : "You are away.",
      back: "You are back.",
    };
    const text = said[b.op] ?? moderation.doneText(b) ?? `done: ${b.op} ${b.target}`;
    if (b.op === "register" || b.op === "password" || b.op === "delete") this.renderAccountDialog();
    if (!this.result(text)) this.notice(text);
    if (["kick", "ban", "unban", "ban_address", "unban_address", "close"].includes(b.op)) this.refreshAdmin();
  }

  /** A request's outcome in the dialog that asked, if one is open. */
  result(text, error = false) {
    const dialog = document.querySelector("dialog[open]");
    const out = dialog?.querySelector(".result");
    if (!out) return false;
    out.textContent = text;
    out.classList.toggle("error", error);
    return true;
  }

  notice(text, kind = "notice") {
    const li = el("li", kind, text);
    li.dataset.ts = Date.now() / 1000;
    $("transcript").append(li);
    $("transcript").scrollTop = $("transcript").scrollHeight;
  }

  markShown() {
    if (this.session && this.current && document.visibilityState === "visible") {
      this.session.markRead(this.current);
    }
  }

  // -- typing ------------------------------------------------------------------------

  /** Enter sends; Shift+Enter (and Enter while composing with an IME) is a
   * new line; Escape drops a reply or an edit; Up in an empty box edits my
   * last message. */
  typing(e) {
    if (e.isComposing) return;
    const box = $("message-input");
    if (e.key === "Escape" && (this.replyTo || this.editing)) {
      e.preventDefault();
      this.cancelCompose();
      return;
    }
    if (e.key === "ArrowUp" && box.value === "" && !this.editing) {
      const room = this.room();
      const mine = room ? [...room.messages].reverse().find((m) => this.canEdit(m)) : null;
      if (mine) {
        e.preventDefault();
        this.startEdit(mine);
      }
      return;
    }
    if (e.key === "Tab" && !e.shiftKey && !e.ctrlKey && !e.altKey) {
      if (this.completeNick()) e.preventDefault();
      return;
    }
    if (e.key !== "Enter" || e.shiftKey) return;
    e.preventDefault();
    this.submit(box.value);
  }

  /** The box changed: tell the room I am typing (or stopped, when emptied). */
  typed() {
    const room = this.room();
    if (!room || !this.session) return;
    const text = $("message-input").value;
    if (!text.trim()) this.session.stoppedTyping(room.name);
    else if (!this.editing && !text.startsWith("/")) this.session.typing(room.name);
  }

  renderTyping(room) {
    if (room.key !== this.current) return;
    const nicks = [...room.typing.values()].map((t) => t.nick);
    $("typing").textContent = typingText(nicks);
  }

  // -- replying and editing ------------------------------------------------------------

  startReply(m) {
    if (this.editing) this.cancelCompose(); // the edit's text leaves the box
    this.replyTo = { room: this.current, seq: m.seq, from: m.from, text: m.text };
    this.renderComposeBar();
    $("message-input").focus();
  }

  startEdit(m) {
    this.replyTo = null;
    this.editing = { room: this.current, seq: m.seq };
    const box = $("message-input");
    box.value = m.text;
    this.grow();
    this.renderComposeBar();
    box.focus();
    box.setSelectionRange(box.value.length, box.value.length);
  }

  cancelCompose() {
    if (this.editing) {
      $("message-input").value = "";
      this.grow();
    }
    this.editing = null;
    this.replyTo = null;
    this.renderComposeBar();
  }

  renderComposeBar() {
    const bar = $("compose-bar");
    const what = $("compose-what");
    bar.hidden = !this.replyTo && !this.editing;
    what.replaceChildren();
    if (this.replyTo) {
      const m = this.session.rooms.get(this.replyTo.room)?.message(this.replyTo.seq) ?? this.replyTo;
      what.append("Replying to ", el("strong", "", m.from), ": ", el("span", "muted", Array.from(m.text).slice(0, 80).join("")));
    } else if (this.editing) {
      what.append("Editing your message (Escape cancels)");
    }
    bar.classList.toggle("editing", !!this.editing);
  }

  // -- message actions -----------------------------------------------------------------

  wireMessages() {
    const list = $("transcript");
    list.addEventListener("click", (e) => {
      const target = e.target.closest("button");
      const li = e.target.closest("li[data-seq]");
      if (!target || !li) return;
      const room = this.room();
      const m = room?.message(Number(li.dataset.seq));
      if (!m) return;
      if (target.classList.contains("quote")) this.goTo(Number(target.dataset.seq));
      else if (target.classList.contains("reaction")) {
        this.session.react(room.name, m.seq, target.dataset.emoji, !target.classList.contains("mine"));
      } else if (target.dataset.act) this.messageAction(target.dataset.act, m, target);
    });
    list.addEventListener("contextmenu", (e) => {
      const li = e.target.closest("li[data-seq]");
      if (!li || e.target.closest("a")) return;
      e.preventDefault();
      this.openMessageMenu(li, e.clientX, e.clientY);
    });
    // A long press on a phone: the same menu.
    let press = null;
    let pressed = false; // the menu opened by this press: its release is no tap
    const cancel = () => {
      clearTimeout(press);
      press = null;
    };
    list.addEventListener("touchstart", (e) => {
      const li = e.target.closest("li[data-seq]");
      pressed = false;
      if (!li || e.touches.length !== 1) return;
      const { clientX, clientY } = e.touches[0];
      cancel();
      press = setTimeout(() => {
        pressed = true;
        this.openMessageMenu(li, clientX, clientY);
      }, LONG_PRESS);
    }, { passive: true });
    list.addEventListener("touchend", (e) => {
      cancel();
      if (pressed && e.cancelable) e.preventDefault(); // no click to close the menu just opened
      pressed = false;
    });
    for (const name of ["touchmove", "touchcancel"]) list.addEventListener(name, cancel, { passive: true });
    $("message-menu").addEventListener("click", (e) => {
      const act = e.target.closest("button")?.dataset.act;
      const menu = $("message-menu");
      const m = this.room()?.message(Number(menu.dataset.seq));
      this.closePopups();
      if (act && m) this.messageAction(act, m, null, Number(menu.dataset.x), Number(menu.dataset.y));
    });
    const pick = (emoji) => {
      const room = this.room();
      const m = room?.message(Number($("emoji-picker").dataset.seq));
      this.closePopups();
      if (!emoji || !m) return;
      const mine = m.reactions?.find((r) => r.emoji === emoji)?.by.some((n) => same(n, this.session.nick));
      this.session.react(room.name, m.seq, emoji, !mine);
    };
    $("emoji-picker").addEventListener("click", (e) => {
      const emoji = e.target.closest("button")?.dataset.emoji;
      if (emoji) pick(emoji);
    });
    const other = el("input", "other");
    other.id = "emoji-other";
    other.placeholder = "another emoji or :name:";
    other.maxLength = 34;
    other.setAttribute("aria-label", "Another emoji or :name:");
    other.addEventListener("keydown", (e) => {
      if (e.key !== "Enter") return;
      e.preventDefault();
      pick(other.value.trim());
    });
    $("emoji-picker").replaceChildren(
      ...EMOJI.map((emoji) => {
        const b = el("button", "", emoji);
        b.type = "button";
        b.dataset.emoji = emoji;
        b.title = emoji;
        return b;
      }),
      other,
    );
    document.addEventListener("click", (e) => {
      if (!e.target.closest(".popup, .tools, #message-menu")) this.closePopups();
    });
    document.addEventListener("keydown", (e) => e.key === "Escape" && this.closePopups());
    // A touch screen's hover sticks to the last tap: tools on hover for a mouse only.
    document.addEventListener("pointerdown", (e) => document.body.classList.toggle("touch", e.pointerType === "touch"));
    document.addEventListener("pointermove", (e) => e.pointerType === "mouse" && document.body.classList.remove("touch"));
    $("transcript").addEventListener("scroll", () => this.closePopups());
  }

  messageAction(act, m, anchor, x = null, y = null) {
    const room = this.room();
    if (!room) return;
    if (act === "reply") this.startReply(m);
    else if (act === "edit") this.startEdit(m);
    else if (act === "delete") this.session.remove(room.name, m.seq);
    else if (act === "react") {
      const box = anchor?.getBoundingClientRect();
      this.openPopup($("emoji-picker"), m.seq, box ? box.left : x, box ? box.bottom : y);
    }
  }

  openMessageMenu(li, x, y) {
    const m = this.room()?.message(Number(li.dataset.seq));
    if (!m) return;
    const menu = $("message-menu");
    const labels = { reply: "Reply", react: "React…", edit: "Edit", delete: "Delete" };
    menu.replaceChildren(
      ...this.actions(m).map(([act, icon]) => {
        const b = el("button", "", `${icon} ${labels[act]}`);
        b.type = "button";
        b.dataset.act = act;
        return b;
      }),
    );
    if (!menu.children.length) return;
    menu.dataset.x = x;
    menu.dataset.y = y;
    this.openPopup(menu, m.seq, x, y);
  }

  /** A small box (the message menu, the emoji picker) at x, y, kept in the window. */
  openPopup(box, seq, x, y) {
    this.closePopups();
    const other = box.querySelector("input");
    if (other) other.value = "";
    box.dataset.seq = seq;
    box.hidden = false;
    const width = box.offsetWidth;
    const height = box.offsetHeight;
    box.style.left = `${Math.max(4, Math.min(x, window.innerWidth - width - 4))}px`;
    box.style.top = `${Math.max(4, Math.min(y, window.innerHeight - height - 4))}px`;
    box.querySelector("button")?.focus();
  }

  closePopups() {
    for (const box of document.querySelectorAll(".popup")) box.hidden = true;
  }

  /** Scroll to a message (a quote's original) and flash it, if it is loaded. */
  goTo(seq) {
    const li = $("transcript").querySelector(`li[data-seq="${seq}"]`);
    if (!li) {
      this.notice("The original message is further back: scroll up to load it.");
      return;
    }
    li.scrollIntoView({ block: "center" });
    li.classList.remove("flash");
    void li.offsetWidth; // restart the animation
    li.classList.add("flash");
  }

  renderAway() {
    const away = this.session.away;
    if ($("account-dialog").open) this.renderAccountDialog();
    const b = $("away-button");
    b.textContent = away === null ? "Away" : "Back";
    b.title = away === null ? "Set yourself away (/away message sets a message)" : `You are away${away ? `: ${away}` : ""}; click to be back`;
    b.classList.toggle("active", away !== null);
    document.body.classList.toggle("away", away !== null);
    if (this.session.state === "connected") {
      $("status").textContent = `connected as ${this.session.nick}${away === null ? "" : " (away)"}`;
    }
  }

  /** The box grows with its text, up to a few lines (then it scrolls). */
  grow() {
    const box = $("message-input");
    box.style.height = "auto";
    box.style.height = `${Math.min(box.scrollHeight + 2, GROWN)}px`;
    box.style.overflowY = box.scrollHeight + 2 > GROWN ? "auto" : "hidden"; // no scroll bar until needed
  }

  submit(text) {
    text = text.replace(/^\s*\n|\s+$/g, "");
    if (this.editing) {
      const { room: key, seq } = this.editing;
      const room = this.session.rooms.get(key);
      const m = room?.message(seq);
      if (!text.trim()) return; // an edit can't empty a message: Delete does that
      if (room && m && m.text !== text) this.session.edit(room.name, seq, text);
      this.editing = null;
      $("message-input").value = "";
      this.grow();
      this.renderComposeBar();
      return;
    }
    const room = this.session ? this.room() : null;
    const files = room && !text.startsWith("/") ? this.attachments.ready(room.key) : [];
    if (!text.trim() && !files.length) {
      if (room && this.attachments.busy(room.key)) this.problem("The files are still uploading: send when they are ready.");
      $("message-input").value = ""; // only spaces: nothing to send, nothing to keep
      this.grow();
      return;
    }
    if (!this.session) return;
    const limit = $("message-input").maxLength;
    const length = [...text].length;
    if (limit > 0 && length > limit && !text.startsWith("/")) {
      this.problem(`Not sent: the message is ${length} characters, the limit is ${limit}.`);
      return; // kept in the box, to shorten
    }
    if (files.length) return this.sendFiles(room, text, files);
    if (this.command(text) === false) return;
    $("message-input").value = "";
    this.grow();
  }

  /** The text with the room's uploaded files: every upload finished first. */
  sendFiles(room, text, files) {
    if (this.attachments.busy(room.key)) return this.problem("Wait for the uploads to finish (or cancel them) before sending.");
    const most = this.session.limits?.max_files ?? 10;
    if (files.length > most) return this.problem(`A message carries at most ${most} files: remove ${files.length - most}.`);
    const reply = this.replyTo && this.replyTo.room === room.key ? this.replyTo.seq : null;
    this.session.say(room.name, text.startsWith("//") ? text.slice(1) : text, reply, files);
    this.attachments.sent(room.key);
    if (this.replyTo) this.cancelCompose();
    $("message-input").value = "";
    this.grow();
  }

  /** Run a line typed in the box; false leaves it there (to fix a mistake). */
  command(text) {
    const room = this.room();
    const [command, ...rest] = text.split(" ");
    const arg = rest.join(" ");
    const [target, ...why] = rest;
    const reason = why.join(" ") || undefined;
    const moderate = (op, fields) => {
      if (!room) return this.problem("Join a room first.");
      if (!target) return this.problem(`Usage: ${command} nick`);
      this.session.moderate(room.name, op, { target, ...fields });
    };
    switch (command) {
      case "/msg": {
        if (rest.length < 2) return this.problem("Usage: /msg nick text");
        const said = rest.slice(1).join(" ");
        // An account talks in a direct conversation (kept, on every device); a guest whispers.
        if (!this.session.account || same(rest[0], this.session.nick)) {
          this.session.whisper(rest[0], said);
          return true;
        }
        const open = this.session.directWith([rest[0]]);
        if (open) {
          this.show(open.key);
          this.session.say(open.name, said);
        } else if (!this.session.open([rest[0]], said)) return this.problem("Not connected: try again in a moment.");
        return true;
      }
      case "/list":
        this.listing = true;
        this.session.listRooms();
        return true;
      case "/away":
        this.session.setAway(arg);
        return true;
      case "/back":
        this.session.setAway(null);
        return true;
      case "/nick":
        if (rest.length !== 1 || !arg) return this.problem("Usage: /nick newnick");
        if (this.session.account) return this.problem("An account's nick is its name: log in as another account instead.");
        this.session.changeNick(arg);
        return true;
      case "/me":
        if (!room || !arg) return this.problem(room ? "Usage: /me text" : "Join a room first.");
        this.session.me(room.name, arg);
        return true;
      case "/join":
        if (!arg) return this.problem("Usage: /join room [key]");
        this.join(rest[0], rest[1]);
        return true;
      case "/part":
        if (room) this.session.part(room.name, arg || undefined);
        return true;
      case "/topic":
        if (room) this.session.setTopic(room.name, arg);
        return true;
      case "/quit":
        this.logOut();
        return true;
      case "/kick":
      case "/ban":
        return moderate(command.slice(1), reason ? { reason } : {});
      case "/unban":
      case "/op":
      case "/deop":
      case "/invite":
      case "/voice":
      case "/devoice":
        return moderate(command.slice(1), {});
      case "/mode":
        return this.modeCommand(room, rest);
      case "/help":
        this.notice(`Commands: ${COMMANDS}, ${moderation.MODERATION_COMMANDS}. Start a message with // to send a leading /.`);
        return true;
      default: {
        if (command.startsWith("/") && !command.startsWith("//")) {
          return this.problem(`Unknown command ${command}. Commands: ${COMMANDS}, ${moderation.MODERATION_COMMANDS}.`);
        }
        if (!room) return this.problem("Join a room first.");
        const reply = this.replyTo && this.replyTo.room === room.key ? this.replyTo.seq : null;
        this.session.say(room.name, text.startsWith("//") ? text.slice(1) : text, reply);
        if (this.replyTo) this.cancelCompose();
        return true;
      }
    }
  }

  problem(text) {
    this.notice(text, "error");
    return false;
  }

  // -- the member dialog: a member's context menu ----------------------------------------

  wireMemberDialog() {
    const dialog = $("member-dialog");
    dialog.querySelector(".actions").addEventListener("click", (e) => {
      const act = e.target.closest("button")?.dataset.act;
      if (act) this.memberAction(act);
    });
  }

  openMember(p) {
    this.member = p;
    $("member-reason").value = "";
    $("member-dialog").querySelector(".result").textContent = "";
    this.renderMemberDialog();
    $("member-dialog").showModal();
  }

  renderMemberDialog() {
    const room = this.room();
    const p = this.member;
    const op = room?.isOp(p.nick);
    const me = nickKey(p.nick) === nickKey(this.session.nick);
    $("member-name").textContent = p.nick;
    $("member-role").textContent = `${moderation.roleText(p, room)} of ${room?.name ?? "no room"}${me ? " (you)" : ""}`;
    const dialog = $("member-dialog");
    const may = this.canModerate(room);
    for (const b of dialog.querySelectorAll(".op-only")) b.hidden = !may;
    for (const b of dialog.querySelectorAll(".admin-only")) b.hidden = !this.session.admin || me;
    dialog.querySelector('[data-act="op"]').hidden ||= op;
    dialog.querySelector('[data-act="deop"]').hidden ||= !op;
    const voiced = !!room?.isVoiced(p.nick);
    dialog.querySelector('[data-act="voice"]').hidden ||= voiced;
    dialog.querySelector('[data-act="devoice"]').hidden ||= !voiced;
    for (const act of ["kick", "ban"]) dialog.querySelector(`[data-act="${act}"]`).hidden ||= me; // as the desktop's menu
    const shown = (act) => !dialog.querySelector(`[data-act="${act}"]`).hidden;
    $("member-reason").parentElement.hidden = !shown("kick") && !shown("server-kick"); // a reason for nothing
    const talk = dialog.querySelector('[data-act="whisper"]');
    talk.hidden = me;
    talk.textContent = this.session.account ? "Message" : "Whisper";
  }

  memberAction(act) {
    const room = this.room();
    const nick = this.member.nick;
    const reason = $("member-reason").value.trim() || undefined;
    if (act === "whisper") {
      $("member-dialog").close();
      const open = this.session.account ? this.session.directWith([nick]) : null;
      if (open) {
        this.show(open.key);
        $("message-input").focus();
        return;
      }
      const box = $("message-input");
      box.value = `/msg ${nick} `;
      box.focus();
      return;
    }
    if (act === "server-kick" || act === "server-ban") {
      this.session.adminRequest(act.slice(7), { target: nick, ...(reason ? { reason } : {}) });
      return;
    }
    if (!room) return;
    const withReason = act === "kick" || act === "ban";
    this.session.moderate(room.name, act, { target: nick, ...(withReason && reason ? { reason } : {}) });
  }

  // -- the room dialog: topic, modes, invitations, bans ----------------------------------

  wireRoomDialog() {
    $("room-button").addEventListener("click", () => this.openRoomDialog());
    const room = () => this.room()?.name;
    const nick = () => $("room-nick").value.trim();
    $("room-topic-set").addEventListener("click", () => room() && this.session.setTopic(room(), $("room-topic-input").value));
    $("room-modes-apply").addEventListener("click", () => this.applyModes());
    $("room-invite").addEventListener("click", () => room() && nick() && this.session.moderate(room(), "invite", { target: nick() }));
    $("room-ban").addEventListener("click", () => {
      if (room() && nick()) this.session.moderate(room(), "ban", { target: nick() });
    });
  }

  openRoomDialog() {
    const room = this.room();
    if (!room) return this.notice("Join a room first.", "error");
    $("room-dialog").querySelector(".result").textContent = "";
    $("room-topic-input").value = room.topic;
    $("room-bans").replaceChildren();
    this.renderRoomDialog(room);
    $("room-dialog").showModal();
    if (this.canModerate(room)) this.session.moderate(room.name, "bans");
  }

  renderRoomDialog(room) {
    if (!room || room.key !== this.current) return;
    const may = this.canModerate(room);
    $("room-dialog-title").textContent = room.name;
    $("room-dialog-note").textContent = may
      ? "You are an operator of this room."
      : `Only operators change this room's modes, invitations and bans.${moderation.memberNote(room)}`;
    this.modesForm.render(room);
    this.renderModes(room);
    for (const f of $("room-dialog").querySelectorAll(".op-only")) f.hidden = !may;
  }

  onBans(body) {
    if (body.room === undefined || body.room === null) return this.renderServerBans(body.bans);
    const room = this.room();
    if (!room || roomKey(body.room) !== room.key) return;
    $("room-bans").replaceChildren(
      ...(body.bans.length ? body.bans : [null]).map((b) => {
        if (!b) return el("li", "muted", "nobody");
        const li = el("li", "", `${b.target} (by ${b.by}${b.reason ? `: ${b.reason}` : ""}) `);
        li.append(button("Unban", () => this.session.moderate(room.name, "unban", { target: b.target })));
        return li;
      }),
    );
  }

  // -- the admin dialog --------------------------------------------------------------

  wireAdminDialog() {
    $("admin-button").addEventListener("click", () => this.openAdmin());
    $("admin-refresh").addEventListener("click", () => this.refreshAdmin());
    const target = () => $("admin-target").value.trim();
    const timed = () => {
      const fields = {};
      const minutes = Number($("admin-duration").value);
      if (minutes > 0) fields.duration = minutes * 60;
      const reason = $("admin-reason").value.trim();
      if (reason) fields.reason = reason;
      return fields;
    };
    this.adminFields = timed; // the sessions list's Kick and Ban take them too
    const ask = (op, fields) => this.session.adminRequest(op, fields);
    $("admin-kick").addEventListener("click", () => target() && ask("kick", { target: target(), ...timed() }));
    $("admin-ban").addEventListener("click", () => target() && ask("ban", { target: target(), ...timed() }));
    $("admin-ban-address").addEventListener("click", () => target() && ask("ban_address", { address: target(), ...timed() }));
    $("admin-close").addEventListener("click", () => {
      const room = $("admin-room").value.trim();
      if (room) ask("close", { room });
    });
    $("admin-reset").addEventListener("click", () => {
      const nick = $("admin-reset-nick").value.trim();
      const password = $("admin-reset-password").value;
      if (nick && password) ask("reset", { target: nick, password });
      $("admin-reset-password").value = "";
    });
  }

  openAdmin() {
    $("admin-dialog").querySelector(".result").textContent = "";
    $("admin-dialog").showModal();
    this.refreshAdmin();
  }

  refreshAdmin() {
    if (!$("admin-dialog").open) return;
    this.session.adminRequest("sessions");
    this.session.adminRequest("bans");
  }

  onSessions(body) {
    $("admin-sessions").replaceChildren(
      ...body.connected.map((c) => {
        const li = el("li", "", `${c.nick}${c.account ? " (account)" : ""} ${c.address}, ${c.devices} device${c.devices === 1 ? "" : "s"}, in ${c.rooms.join(", ") || "no room"} `);
        if (nickKey(c.nick) !== nickKey(this.session.nick)) {
          li.append(button("Kick", () => this.session.adminRequest("kick", { target: c.nick, ...this.adminFields() })));
          li.append(button("Ban", () => this.session.adminRequest("ban", { target: c.nick, ...this.adminFields() }), "danger"));
        }
        return li;
      }),
    );
    $("admin-pending").replaceChildren(...body.pending.map((p) => el("li", "muted", `pending #${p.id} ${p.address}`)));
  }

  renderServerBans(bans) {
    const address = (t) => /^[0-9a-f:.]+(\/\d+)?$/i.test(t) && /[:.]/.test(t) && /\d/.test(t);
    $("admin-bans").replaceChildren(
      ...(bans.length ? bans : [null]).map((b) => {
        if (!b) return el("li", "muted", "nobody is banned");
        const until = b.until ? `, until ${new Date(b.until * 1000).toLocaleString()}` : "";
        const li = el("li", "", `${b.target} (by ${b.by}${b.reason ? `: ${b.reason}` : ""}${until}) `);
        const op = address(b.target) ? "unban_address" : "unban";
        const field = op === "unban" ? { target: b.target } : { address: b.target };
        li.append(button("Unban", () => this.session.adminRequest(op, field)));
        return li;
      }),
    );
  }

  // -- operators' and admins' extras (moderation.js): modes, keys, refusals --------------

  /** The header's modes, and the message box's hint when I may not talk here. */
  renderModes(room) {
    if (room.key !== this.current) return;
    $("room-modes").textContent = moderation.modesText(room);
    const silenced = room.moderated && !room.isOp(this.session.nick) && !room.isVoiced(this.session.nick);
    $("message-input").placeholder = silenced ? "Moderated: only operators and voiced members talk here" : "Message";
  }

  /** The room dialog's Apply: only the modes that changed are sent. */
  applyModes() {
    const room = this.room();
    if (!room) return;
    const fields = this.modesForm.changes(room);
    if (typeof fields === "string") return this.result(fields, true);
    if (!Object.keys(fields).length) return this.result("Nothing to change.");
    this.session.moderate(room.name, "mode", fields);
  }

  /** `/mode` alone says the room's modes; `/mode +m-i`, `/mode +k key`, `/mode +l 10` set them. */
  modeCommand(room, args) {
    if (!room) return this.problem("Join a room first.");
    if (!args.length) {
      this.notice(`${room.name}: ${moderation.modesText(room) || "no modes set"}`);
      return true;
    }
    const fields = moderation.parseMode(args);
    if (typeof fields === "string") return this.problem(fields);
    this.session.moderate(room.name, "mode", fields);
    return true;
  }

  /** A refused JOIN, MODERATE or ADMIN said in words (true if it was one):
   * a room's key is asked for; others go to the dialog that asked, if open. */
  moderationError(b) {
    const room = moderation.joinedRoom(b.ref);
    if (room && b.code === "bad_key") {
      this.keyPrompt.ask(room, b.message);
      return true;
    }
    const text = room ? `Can't join ${room}: ${b.message}` : moderation.refusalText(b);
    if (text === null) return false;
    if (room || !this.result(text, true)) this.notice(text, "error");
    return true;
  }

  /** INVITED: said in the transcript with a button that joins. */
  onInvited(b) {
    const li = el("li", "notice invitation", `${b.by} invited you to ${b.room} `);
    li.dataset.ts = Date.now() / 1000;
    li.append(button("Join", () => this.join(b.room), "join-invited"));
    $("transcript").append(li);
    $("transcript").scrollTop = $("transcript").scrollHeight;
    this.announce(null, { from: b.by, text: `invited you to ${b.room}` });
  }

  /** A notice (IRC's NOTICE: a record with action notice, or a whisper
   * with notice: true): shown apart, its author as -nick-. */
  markNotice(li, m) {
    li.classList.add("notice-message");
    const from = li.querySelector(".from");
    if (from && !m.fromMe) from.textContent = from.textContent.replace(m.from, `-${m.from}-`);
    else if (!from && !m.deleted) li.querySelector(".text").textContent = `-${m.from}- ${m.text}`;
    li.title = "A notice: automatic, not to be answered";
  }

  // -- the account dialog ------------------------------------------------------------

  wireAccountDialog() {
    $("account-button").addEventListener("click", () => this.openAccount());
    $("logout-button").addEventListener("click", () => this.logOut());
    $("away-set").addEventListener("click", () => this.session.setAway($("away-message").value.trim()));
    $("away-back").addEventListener("click", () => this.session.setAway(null));
    $("register-button").addEventListener("click", () => {
      const password = $("register-password").value;
      if (password !== $("register-confirm").value) return this.result("The two passwords differ.", true);
      if (password.length < 8) return this.result("A password has at least 8 characters.", true);
      this.session.registerAccount(password);
      $("register-password").value = $("register-confirm").value = "";
    });
    $("change-button").addEventListener("click", () => {
      const next = $("change-new").value;
      if (next !== $("change-confirm").value) return this.result("The two new passwords differ.", true);
      if (next.length < 8) return this.result("A password has at least 8 characters.", true);
      this.session.changePassword($("change-current").value, next);
      for (const id of ["change-current", "change-new", "change-confirm"]) $(id).value = "";
    });
    $("delete-button").addEventListener("click", () => {
      if (!$("delete-sure").checked) return this.result("Tick the box to confirm: deleting can't be undone.", true);
      this.session.deleteAccount($("delete-password").value);
      $("delete-password").value = "";
      $("delete-sure").checked = false;
    });
  }

  openAccount() {
    $("account-dialog").querySelector(".result").textContent = "";
    this.renderAccountDialog();
    $("account-dialog").showModal();
  }

  renderAccountDialog() {
    const s = this.session;
    if (!s) return;
    $("account-state").textContent = s.account
      ? `${s.nick} is your account${s.admin ? ", a server admin" : ""}.`
      : `${s.nick} is a guest nick: register it to keep it.`;
    $("away-back").hidden = s.away === null;
    if (s.away !== null && document.activeElement !== $("away-message")) $("away-message").value = s.away;
    $("account-register").hidden = s.account;
    $("account-change").hidden = !s.account;
    $("account-delete").hidden = !s.account;
    $("admin-button").hidden = !s.admin;
  }

  // -- files: attach, drop, paste; the image overlay ------------------------------------

  wireFiles() {
    receiveFiles({
      input: $("file-input"),
      pane: $("transcript-pane"),
      box: $("message-input"),
      take: (files, pasted) => this.attach(files, pasted),
    });
    const overlay = new ImageOverlay($("image-overlay"));
    $("transcript").addEventListener("click", (e) => {
      const image = e.target.closest("button.file.image");
      if (image) overlay.open(image.dataset.full, image.dataset.name);
    });
    $("latest-button").addEventListener("click", () => this.current && this.session.loadLatest(this.current));
  }

  /** Upload files to the room shown; they go with the next message sent. */
  attach(files, pasted = false) {
    const room = this.room();
    if (!room || !this.session) return this.problem("Join a room first.");
    if (!this.session.limits?.max_upload) return this.problem("This server takes no files.");
    for (const file of files) {
      const name = pasted && /^image\.\w+$/.test(file.name) ? pastedName(file) : file.name;
      this.attachments.add(room.key, room.name, file, name);
    }
    $("message-input").focus();
  }

  // -- search: opening a room at a hit ---------------------------------------------

  /** How a room is called in the search's results. */
  nameOf(name) {
    const room = this.session?.rooms.get(roomKey(name));
    return room ? this.roomName(room) : name;
  }

  /** Open the room at message `seq` (a search hit); a room not joined is joined first. */
  openAt(key, seq) {
    const room = this.session?.rooms.get(key);
    if (!room || !room.joined) {
      if (key.startsWith("@")) return this.notice("Open that conversation first (/msg), then search again.", "error");
      this.pendingHit = { key, seq };
      this.join(key);
      return;
    }
    if (key !== this.current) this.show(key);
    this.session.around(key, seq);
  }

  /** The page around a hit came (or it was loaded): show it, the hit in view. */
  onAround(room, seq) {
    if (room.key !== this.current) return;
    this.renderTranscript(room);
    $("latest-button").hidden = !room.newer;
    const li = $("transcript").querySelector(`li[data-seq="${seq}"]`);
    if (!li) return this.notice("That message is gone (deleted, or no longer kept).");
    for (const old of $("transcript").querySelectorAll("li.hit")) old.classList.remove("hit");
    li.classList.add("hit", "flash");
    li.scrollIntoView({ block: "center" });
  }

  onNewer(room) {
    if (room.key !== this.current) return;
    const list = $("transcript");
    const top = list.scrollTop;
    this.renderTranscript(room);
    list.scrollTop = top;
    $("latest-button").hidden = !room.newer;
  }

  // -- notifications -----------------------------------------------------------------

  askToNotify() {
    if (!("Notification" in window)) return this.notice("This browser has no notifications.", "error");
    Notification.requestPermission().then((p) => this.notice(`Notifications: ${p}.`));
  }

  announce(room, message) {
    if (!("Notification" in window) || Notification.permission !== "granted") return;
    if (document.visibilityState === "visible" && (!room || room.key === this.current)) return;
    new Notification(`${message.from}${room ? ` in ${room.name}` : ""}`, { body: message.text, tag: "chat" });
  }
}

window.chatApp = new App();
