// The page: views over ChatSession's events. Nothing here speaks the
// protocol; session.js does. User text only ever reaches the page as text
// nodes (textContent), never as HTML.

import { ChatSession } from "./session.js";
import { roomKey, nickKey } from "./protocol.js";
import { loginError, leftText, statusText } from "./words.js";

const $ = (id) => document.getElementById(id);
/** The tab's session (nick, resume token, rooms): sessionStorage, so it
 * lives as long as the tab and is never shared; never a password. */
const TAB_KEY = "chat.tab";
/** The message box's tallest, in pixels: about six lines. */
const GROWN = 150;
const URL_PATTERN = /\bhttps?:\/\/[^\s<>"']+/gi;
const COMMANDS =
  "/msg nick text, /me text, /join room, /part [reason], /topic text, /kick nick [reason], " +
  "/ban nick [reason], /unban nick, /op nick, /deop nick, /invite nick, /quit";

function defaultUrl() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/ws`;
}

function time(ts) {
  return new Date(ts * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
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
    $("message-input").addEventListener("input", () => this.grow());
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
    this.wire(this.session);
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
    on("roomlist", ({ rooms }) => this.renderDirectory(rooms));
    on("done", this.onDone);
    on("bans", this.onBans);
    on("sessions", this.onSessions);
    on("invited", (b) => this.notice(`${b.by} invited you to ${b.room}: /join ${b.room}`));
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
      connected: `connected as ${this.session.nick}`,
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
    if (!resumed && body.motd) this.notice(body.motd);
    $("message-input").maxLength = body.limits?.max_text ?? 4000;
    $("message-input").focus();
    this.saveTab();
  }

  // -- rooms ----------------------------------------------------------------------

  join(name) {
    this.wanted = roomKey(name); // shown once its ROOM comes
    this.session.join(name);
  }

  onRoom(room) {
    if (!this.current || !this.session.rooms.has(this.current) || room.key === this.wanted) {
      this.current = room.key;
      this.wanted = null;
    }
    this.renderRooms();
    if (room.key === this.current) this.show(room.key);
    this.saveTab();
  }

  show(key) {
    this.current = key;
    this.session.show(key);
    const room = this.room();
    if (!room) return;
    room.mentions = 0;
    document.body.classList.remove("show-rooms");
    $("room-title").textContent = room.name;
    $("room-topic").textContent = room.topic;
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
    list.replaceChildren(...room.timeline().map((entry) => this.entry(entry)));
    for (const li of this.localLines.values()) {
      if (li.dataset.room === room.key) list.append(li);
    }
  }

  renderRooms() {
    const items = [...this.session.rooms.values()].filter((r) => r.joined).map((room) => {
      const li = el("li", room.key === this.current ? "current" : "");
      li.dataset.room = room.key;
      li.append(button(room.name, () => this.show(room.key), "room-name"));
      if (room.key !== this.current && room.mentions) {
        const badge = el("span", "unread mention-badge", `@${room.mentions}`);
        badge.title = `${room.mentions} unread message${room.mentions === 1 ? "" : "s"} naming you`;
        li.append(badge);
      } else if (room.unread && room.key !== this.current) {
        li.append(el("span", "unread", String(room.unread)));
      }
      return li;
    });
    $("room-list").replaceChildren(...items);
  }

  /** Whether I may moderate this room: its operator, or a server admin. */
  canModerate(room) {
    return !!room && (this.session.admin || room.isOp(this.session.nick));
  }

  renderMembers(room) {
    if (room.key !== this.current) return;
    const members = [...room.members.values()].sort((a, b) => a.nick.localeCompare(b.nick));
    $("member-list").replaceChildren(
      ...members.map((p) => {
        const li = el("li", p.id === this.session.id ? "me" : "");
        li.dataset.nick = p.nick;
        const name = button((p.op ? "@" : "") + p.nick, () => this.openMember(p), "member-name");
        name.title = p.op ? `${p.nick}, an operator of ${room.name}` : p.nick;
        li.append(name);
        li.addEventListener("contextmenu", (e) => {
          e.preventDefault();
          this.openMember(p);
        });
        return li;
      }),
    );
    document.body.classList.toggle("can-moderate", this.canModerate(room));
    if ($("member-dialog").open && this.member) this.renderMemberDialog();
  }

  renderPending() {
    $("pending-list").replaceChildren(...[...this.session.pending].map((id) => el("li", "", `#${id}`)));
  }

  onTopic(room) {
    if (room.key === this.current) $("room-topic").textContent = room.topic;
    if ($("room-dialog").open) this.renderRoomDialog(room);
  }

  onLeftRoom({ room, left }) {
    const why = left.message ? `: ${left.message}` : "";
    if (left.reason === "kicked" || left.reason === "banned") this.notice(`You were ${left.reason} from ${room.name}${why}`, "error");
    else if (left.reason === "closed") this.notice(`${room.name} was closed${why}`, "error");
    else if (left.reason !== "part") this.notice(`You left ${room.name}: ${left.reason}${why}`);
    if (this.current === room.key) {
      const next = [...this.session.rooms.values()].find((r) => r.joined);
      this.current = next ? next.key : null;
      if (this.current) this.show(this.current);
      else {
        $("transcript").replaceChildren();
        $("member-list").replaceChildren();
        $("room-title").textContent = "";
        $("room-topic").textContent = "";
      }
    }
    this.renderRooms();
    this.saveTab();
  }

  openJoin() {
    $("join-room").value = "";
    $("room-directory").replaceChildren();
    this.session.listRooms();
    $("join-dialog").showModal();
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
    li.append(el("time", "", time(m.ts)), " ");
    if (m.action) {
      li.append(el("span", "text", `${m.from} ${m.text}`));
      return li;
    }
    if (m.text.startsWith("* ")) {
      // /me, and IRC's CTCP ACTION: the gateway carries it as "* text"
      li.classList.add("me-action");
      const text = el("span", "text", `* ${m.from} `);
      text.append(linkify(m.text.slice(2)));
      li.append(text);
    } else {
      const text = el("span", "text");
      text.append(linkify(m.text));
      li.append(el("span", "from", m.from), " ", text);
    }
    if (this.mentions(m)) li.classList.add("mention");
    if (nickKey(m.from) === nickKey(this.session.nick)) li.classList.add("own", "confirmed");
    return li;
  }

  eventLine(e) {
    if (e.kind === "whisper") {
      const li = el("li", "message whisper");
      li.append(el("time", "", time(e.ts)), " ", el("span", "from", e.fromMe ? `→ ${e.to}` : `${e.from} → you`), " ");
      const text = el("span", "text");
      text.append(linkify(e.text));
      li.append(text);
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
    list.insertBefore(li, first ?? null);
    if (atBottom) list.scrollTop = list.scrollHeight;
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
      this.markShown();
    } else if (nickKey(message.from) !== nickKey(this.session.nick)) {
      room.unread += 1;
      if (this.mentions(message)) room.mentions += 1;
      this.renderRooms();
    }
    if (this.mentions(message)) this.announce(room, message);
  }

  onEvent({ room, entry }) {
    if (room.key === this.current) this.appendLine(this.eventLine(entry));
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
    if (this.session && this.current && $("transcript").scrollTop < 40) this.session.loadOlder(this.current);
  }

  onOutgoing({ item }) {
    let li = this.localLines.get(item.ref);
    if (item.state === "confirmed") {
      li?.remove(); // its MESSAGE (or whisper line) is in the transcript now
      this.localLines.delete(item.ref);
      return;
    }
    if (!li) {
      const whisper = item.type === 0x03;
      li = el("li", whisper ? "message own whisper" : "message own");
      li.dataset.ref = item.ref;
      li.dataset.room = item.room ? roomKey(item.room) : this.current ?? "";
      li.append(el("span", "from", whisper ? `→ ${item.body.to}` : this.session.nick), " ", el("span", "text", item.text));
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
    if (["moderate:", "admin:", "account:", "topic:"].some((kind) => ref.startsWith(kind))) {
      if (this.result(b.message, true)) return;
    }
    this.notice(b.message, "error");
  }

  onDone(b) {
    const said = {
      register: `${b.target} is now registered to you.`,
      password: "Your password is changed.",
      delete: `The account ${b.target} is deleted: you go on as a guest.`,
    };
    const text = said[b.op] ?? `done: ${b.op} ${b.target}`;
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
    $("transcript").append(li);
    $("transcript").scrollTop = $("transcript").scrollHeight;
  }

  markShown() {
    if (this.session && this.current && document.visibilityState === "visible") {
      this.session.markRead(this.current);
    }
  }

  // -- typing ------------------------------------------------------------------------

  /** Enter sends; Shift+Enter (and Enter while composing with an IME) is a new line. */
  typing(e) {
    if (e.key !== "Enter" || e.shiftKey || e.isComposing) return;
    e.preventDefault();
    this.submit($("message-input").value);
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
    if (!text.trim() || !this.session) return;
    if (this.command(text) === false) return;
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
      case "/msg":
        if (rest.length < 2) return this.problem("Usage: /msg nick text");
        this.session.whisper(rest[0], rest.slice(1).join(" "));
        return true;
      case "/me":
        if (!room || !arg) return this.problem(room ? "Usage: /me text" : "Join a room first.");
        this.session.me(room.name, arg);
        return true;
      case "/join":
        if (!arg) return this.problem("Usage: /join room");
        this.join(arg);
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
        return moderate(command.slice(1), {});
      case "/help":
        this.notice(`Commands: ${COMMANDS}. Start a message with // to send a leading /.`);
        return true;
      default:
        if (command.startsWith("/") && !command.startsWith("//")) {
          return this.problem(`Unknown command ${command}. Commands: ${COMMANDS}.`);
        }
        if (!room) return this.problem("Join a room first.");
        this.session.say(room.name, text.startsWith("//") ? text.slice(1) : text);
        return true;
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
    $("member-role").textContent = `${op ? "Operator" : "Member"} of ${room?.name ?? "no room"}${me ? " (you)" : ""}`;
    const dialog = $("member-dialog");
    const may = this.canModerate(room);
    for (const b of dialog.querySelectorAll(".op-only")) b.hidden = !may;
    for (const b of dialog.querySelectorAll(".admin-only")) b.hidden = !this.session.admin || me;
    dialog.querySelector('[data-act="op"]').hidden ||= op;
    dialog.querySelector('[data-act="deop"]').hidden ||= !op;
    dialog.querySelector('[data-act="whisper"]').hidden = me;
  }

  memberAction(act) {
    const room = this.room();
    const nick = this.member.nick;
    const reason = $("member-reason").value.trim() || undefined;
    if (act === "whisper") {
      $("member-dialog").close();
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
    $("room-modes-apply").addEventListener("click", () => {
      if (!room()) return;
      this.session.moderate(room(), "mode", {
        topic_lock: $("room-topic-lock").checked,
        invite_only: $("room-invite-only").checked,
      });
    });
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
      : `Only operators change this room's modes, invitations and bans.${room.topicLock ? " Its topic is locked." : ""}`;
    $("room-topic-lock").checked = room.topicLock;
    $("room-invite-only").checked = room.inviteOnly;
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
          li.append(button("Kick", () => this.session.adminRequest("kick", { target: c.nick })));
          li.append(button("Ban", () => this.session.adminRequest("ban", { target: c.nick }), "danger"));
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

  // -- the account dialog ------------------------------------------------------------

  wireAccountDialog() {
    $("account-button").addEventListener("click", () => this.openAccount());
    $("logout-button").addEventListener("click", () => this.logOut());
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
    $("account-register").hidden = s.account;
    $("account-change").hidden = !s.account;
    $("account-delete").hidden = !s.account;
    $("admin-button").hidden = !s.admin;
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
