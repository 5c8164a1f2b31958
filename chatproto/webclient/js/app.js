// The page: views over ChatSession's events. Nothing here speaks the
// protocol; session.js does.

import { ChatSession } from "./session.js";
import { roomKey, nickKey } from "./protocol.js";

const $ = (id) => document.getElementById(id);

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

class App {
  constructor() {
    this.session = null;
    this.current = null; // the room shown
    this.localLines = new Map(); // ref -> <li> of a message being sent
    $("server-url").value = localStorage.getItem("chat.url") || defaultUrl();
    $("nick").value = localStorage.getItem("chat.nick") || "";
    $("login-form").addEventListener("submit", (e) => {
      e.preventDefault();
      this.logIn();
    });
    $("composer").addEventListener("submit", (e) => {
      e.preventDefault();
      this.submit($("message-input").value);
    });
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
  }

  room() {
    return this.session.rooms.get(this.current);
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
    const url = $("server-url").value.trim() || defaultUrl();
    localStorage.setItem("chat.url", url);
    localStorage.setItem("chat.nick", nick);
    if (this.session) this.session.disconnect();
    this.session = new ChatSession({ url });
    this.wire(this.session);
    $("login-error").textContent = "";
    $("login-button").disabled = true;
    this.session.connect(nick, { password: password || null, register });
  }

  wire(s) {
    const on = (name, f) => s.addEventListener(name, (e) => f.call(this, e.detail));
    on("state", this.onState);
    on("welcome", this.onWelcome);
    on("login-failed", (b) => this.loginFailed(`${b.message} (${b.code})`));
    on("room", ({ room }) => this.onRoom(room));
    on("older", ({ room, count }) => this.onOlder(room, count));
    on("message", this.onMessage);
    on("outgoing", this.onOutgoing);
    on("outgoing-gone", ({ ref }) => this.localLines.get(ref)?.remove());
    on("members", ({ room }) => this.renderMembers(room));
    on("left-room", this.onLeftRoom);
    on("pending", () => this.renderPending());
    on("topic", ({ room }) => this.onTopic(room));
    on("whisper", this.onWhisper);
    on("error", (b) => this.notice(`${b.message}`, "error"));
    on("marked", ({ room }) => this.renderRooms(room));
    on("roomlist", ({ rooms }) => this.renderDirectory(rooms));
    on("done", (b) => this.notice(b.op === "register" ? `${b.target} is now registered to you.` : `done: ${b.op}`));
    on("invited", (b) => this.notice(`${b.by} invited you to ${b.room}.`));
  }

  loginFailed(text) {
    $("login-error").textContent = text;
    $("login-button").disabled = false;
    $("chat-view").hidden = true;
    $("login-view").hidden = false;
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
    if (state === "given_up" && !this.session.welcomed) this.loginFailed(`Can't log in: ${detail}`);
  }

  onWelcome({ body, resumed }) {
    $("login-view").hidden = true;
    $("chat-view").hidden = false;
    $("login-button").disabled = false;
    $("password").value = "";
    if (!resumed && body.motd) this.notice(body.motd);
    $("message-input").maxLength = body.limits?.max_text ?? 4000;
    $("message-input").focus();
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
  }

  show(key) {
    this.current = key;
    const room = this.room();
    if (!room) return;
    document.body.classList.remove("show-rooms");
    $("room-title").textContent = room.name;
    $("room-topic").textContent = room.topic;
    const list = $("transcript");
    list.replaceChildren(...room.messages.map((m) => this.line(m)));
    for (const li of this.localLines.values()) {
      if (li.dataset.room === room.key) list.append(li);
    }
    list.scrollTop = list.scrollHeight;
    this.renderMembers(room);
    this.renderRooms();
    this.markShown();
    if (list.scrollHeight <= list.clientHeight) this.session.loadOlder(key);
  }

  renderRooms() {
    const items = [...this.session.rooms.values()].filter((r) => r.joined).map((room) => {
      const li = el("li", room.key === this.current ? "current" : "");
      li.dataset.room = room.key;
      const name = el("button", "room-name", room.name);
      name.type = "button";
      name.addEventListener("click", () => this.show(room.key));
      li.append(name);
      if (room.unread && room.key !== this.current) li.append(el("span", "unread", String(room.unread)));
      return li;
    });
    $("room-list").replaceChildren(...items);
  }

  renderMembers(room) {
    if (room.key !== this.current) return;
    const members = [...room.members.values()].sort((a, b) => a.nick.localeCompare(b.nick));
    $("member-list").replaceChildren(
      ...members.map((p) => el("li", p.id === this.session.id ? "me" : "", (p.op ? "@" : "") + p.nick)),
    );
  }

  renderPending() {
    $("pending-list").replaceChildren(...[...this.session.pending].map((id) => el("li", "", `#${id}`)));
  }

  onTopic(room) {
    this.system(room, `topic: ${room.topic}`);
    if (room.key === this.current) $("room-topic").textContent = room.topic;
  }

  onLeftRoom({ room, left }) {
    if (left.reason !== "part") this.notice(`You left ${room.name}: ${left.reason}${left.message ? ` (${left.message})` : ""}`);
    if (this.current === room.key) {
      const next = this.session.rooms.keys().next();
      this.current = next.done ? null : next.value;
      if (this.current) this.show(this.current);
      else $("transcript").replaceChildren();
    }
    this.renderRooms();
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
        const pick = el("button", "", `${r.room} (${r.members})`);
        pick.type = "button";
        pick.title = r.topic;
        pick.addEventListener("click", () => ($("join-room").value = r.room));
        li.append(pick);
        return li;
      }),
    );
  }

  // -- the transcript ----------------------------------------------------------------

  line(m) {
    const li = el("li", m.action ? "event" : "message");
    li.dataset.seq = m.seq;
    li.append(el("time", "", time(m.ts)), " ");
    if (m.action) {
      li.append(el("span", "text", `${m.from} ${m.text}`));
      return li;
    }
    li.append(el("span", "from", m.from), " ", el("span", "text", m.text));
    if (this.mentions(m)) li.classList.add("mention");
    if (nickKey(m.from) === nickKey(this.session.nick)) li.classList.add("own", "confirmed");
    return li;
  }

  mentions(m) {
    const nick = this.session.nick;
    if (!nick || nickKey(m.from) === nickKey(nick)) return false;
    const escaped = nick.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
    return new RegExp(`(^|\\W)@?${escaped}(\\W|$)`, "iu").test(m.text);
  }

  onMessage({ room, message }) {
    if (room.key === this.current) {
      const list = $("transcript");
      const atBottom = list.scrollTop + list.clientHeight >= list.scrollHeight - 4;
      const li = this.line(message);
      const first = [...this.localLines.values()].find((l) => l.parentNode === list);
      list.insertBefore(li, first ?? null);
      if (atBottom) list.scrollTop = list.scrollHeight;
      this.markShown();
    } else if (nickKey(message.from) !== nickKey(this.session.nick)) {
      room.unread += 1;
      this.renderRooms();
    }
    if (this.mentions(message)) this.announce(room, message);
  }

  onOlder(room, count) {
    if (room.key !== this.current || !count) return;
    const list = $("transcript");
    const before = list.scrollHeight;
    const older = room.messages.slice(0, count).map((m) => this.line(m));
    list.prepend(...older);
    list.scrollTop += list.scrollHeight - before;
  }

  scrolled() {
    if (this.session && this.current && $("transcript").scrollTop < 40) this.session.loadOlder(this.current);
  }

  onOutgoing({ item }) {
    let li = this.localLines.get(item.ref);
    if (item.state === "confirmed") {
      li?.remove(); // its MESSAGE is in the transcript now, marked confirmed
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
      const retry = el("button", "retry", "Retry");
      retry.type = "button";
      retry.addEventListener("click", () => this.session.retrySend(item.ref));
      mark.append(retry);
    }
  }

  onWhisper({ whisper, own }) {
    if (own) return; // shown where it was typed; the PRIVATE confirmed it
    const li = el("li", "message whisper");
    li.append(el("time", "", time(whisper.ts)), " ", el("span", "from", `${whisper.from} → you`), " ", el("span", "text", whisper.text));
    $("transcript").append(li);
    this.announce(null, { from: whisper.from, text: whisper.text });
  }

  system(room, text) {
    if (room && room.key !== this.current) return;
    this.notice(text);
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

  submit(text) {
    text = text.trim();
    if (!text || !this.session) return;
    const room = this.room();
    const [command, ...rest] = text.split(" ");
    const arg = rest.join(" ");
    if (command === "/msg" && rest.length >= 2) this.session.whisper(rest[0], rest.slice(1).join(" "));
    else if (command === "/join" && arg) this.join(arg);
    else if (command === "/part" && room) this.session.part(room.name, arg || undefined);
    else if (command === "/topic" && room) this.session.setTopic(room.name, arg);
    else if (command === "/quit") this.session.disconnect();
    else if (command.startsWith("/") && !command.startsWith("//")) {
      this.notice(`Unknown command ${command}. Try /msg, /join, /part, /topic, /quit.`, "error");
      return;
    } else if (room) this.session.say(room.name, text.startsWith("//") ? text.slice(1) : text);
    else {
      this.notice("Join a room first.", "error");
      return;
    }
    $("message-input").value = "";
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
