// The browser's chat session: no DOM here, only the protocol's state
// machine (as the desktop client's session_machine.py), told to the page
// through events. disconnected -> connecting -> connected, and after a drop
// reconnecting (backoff, LOGIN with the resume token, catch up by seq), or
// given_up when retrying can't help.

import { T, PROTOCOL_VERSION, encode, decode, roomKey, nickKey } from "./protocol.js";

/** BYE reasons after which coming back is right; any other is final. */
const RETRY_BYES = new Set(["server_shutdown", "timeout", "slow_consumer", "login_timeout", "server_full"]);
/** LOGIN errors the user must fix: retrying the same login can't help. */
const FINAL_ERRORS = new Set([
  "bad_nick", "nick_taken", "unsupported_version", "nick_registered", "bad_password",
  "locked_out", "banned", "weak_password", "too_many_connections",
]);
export const OLDER_PAGE = 50;
export const CATCH_UP_PAGE = 200;

/** 1 s doubling to 30 s, plus up to a second of jitter (as the desktop client). */
export function backoff(attempt) {
  return Math.min(30, 2 ** attempt) * 1000 + Math.random() * 1000;
}

export class Room {
  constructor(name) {
    this.name = name;
    this.key = roomKey(name);
    this.topic = "";
    this.members = new Map(); // id -> {id, nick, op}
    this.messages = []; // oldest first; each {seq, ts, from, text, action?}
    this.more = false; // older history exists
    this.loadingOlder = false;
    this.unread = 0;
    this.read = 0;
    this.joined = false;
  }

  get lastSeq() {
    return this.messages.length ? this.messages[this.messages.length - 1].seq : 0;
  }

  get firstSeq() {
    return this.messages.length ? this.messages[0].seq : 0;
  }
}

export class ChatSession extends EventTarget {
  constructor({ url, retry = backoff, socket = (u) => new WebSocket(u) } = {}) {
    super();
    this.url = url;
    this.retry = retry;
    this.socket = socket;
    this.state = "disconnected";
    this.ws = null;
    this.rooms = new Map(); // key -> Room, in the order joined
    this.pending = new Set();
    this.outgoing = new Map(); // ref -> {ref, type, body, room, text, state, error}
    this.refs = 0;
    this.attempt = 0;
    this.timer = null;
    this.token = null;
    this.welcomed = false;
    this.finalReason = null;
    this.nick = "";
    this.defaultRoom = "general";
  }

  // -- what the page calls -------------------------------------------------------

  connect(nick, { password = null, register = false } = {}) {
    this.nick = nick;
    this.password = password;
    this.register = register && !!password;
    this.token = null;
    this.finalReason = null;
    this.attempt = 0;
    this.rooms.clear();
    this._setState("connecting");
    this._open();
  }

  disconnect() {
    this._cancelRetry();
    this.finalReason = "disconnected";
    if (this.ws && this.ws.readyState <= WebSocket.OPEN) {
      this._send(T.QUIT, { reason: "leaving" });
      this.ws.close(1000, "leaving");
    }
    this._setState("disconnected");
  }

  /** SAY in a room; shown at once as "sending", confirmed by its MESSAGE. */
  say(room, text) {
    return this._submit(T.SAY, { text, room }, room, text);
  }

  whisper(to, text) {
    return this._submit(T.WHISPER, { to, text }, null, text);
  }

  /** A refused or unconfirmed message, sent again under a new ref. */
  retrySend(ref) {
    const item = this.outgoing.get(ref);
    if (!item || item.state !== "failed") return null;
    this.outgoing.delete(ref);
    this._emit("outgoing-gone", { ref });
    return this._submit(item.type, { ...item.body }, item.room, item.text);
  }

  join(room) {
    return this._send(T.JOIN, { room, ref: `join:${room}` });
  }

  part(room, reason) {
    return this._send(T.PART, reason ? { room, reason } : { room });
  }

  setTopic(room, topic) {
    return this._send(T.TOPIC, { room, topic });
  }

  listRooms() {
    return this._send(T.LIST, {});
  }

  /** Older messages of a room, before the oldest one shown. */
  loadOlder(key) {
    const room = this.rooms.get(key);
    if (!room || !room.more || room.loadingOlder || !room.messages.length) return false;
    room.loadingOlder = true;
    return this._send(T.HISTORY, {
      room: room.name, before: room.firstSeq, limit: OLDER_PAGE, ref: `older:${room.key}`,
    });
  }

  /** Move the room's read marker to its newest message. */
  markRead(key) {
    const room = this.rooms.get(key);
    if (!room || !room.lastSeq || room.read >= room.lastSeq) return;
    room.read = room.lastSeq;
    room.unread = 0;
    this._send(T.MARK, { room: room.name, seq: room.lastSeq });
  }

  // -- the socket ------------------------------------------------------------------

  _open() {
    let ws;
    try {
      ws = this.socket(this.url);
    } catch (e) {
      this._emit("error", { code: "bad_url", message: String(e.message || e) });
      this._setState("given_up", "bad_url");
      return;
    }
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    this.welcomed = false;
    ws.onopen = () => {
      const login = { nick: this.nick, proto: PROTOCOL_VERSION };
      if (this.token) login.resume = this.token;
      if (this.password && !this.register) login.password = this.password;
      this._send(T.LOGIN, login, true);
    };
    ws.onmessage = (event) => {
      if (ws !== this.ws) return;
      let packet;
      try {
        packet = decode(event.data);
      } catch (e) {
        this._emit("error", { code: "bad_packet", message: `from the server: ${e.message}` });
        return;
      }
      const handle = HANDLERS[packet.type];
      if (handle) handle.call(this, packet.body);
    };
    ws.onclose = (event) => {
      if (ws === this.ws) this._closed(event);
    };
  }

  _closed(event) {
    this.ws = null;
    for (const item of this.outgoing.values()) {
      if (item.state === "sending" && item.sent) {
        this._fail(item, "not confirmed before the connection broke");
      }
    }
    if (this.state === "disconnected" || this.state === "given_up") return;
    if (this.finalReason) {
      this._setState("given_up", this.finalReason);
      return;
    }
    if (event && event.code === 1008 && !this.welcomed) {
      this._setState("given_up", event.reason || "refused");
      return;
    }
    const delay = this.retry(this.attempt++);
    this._setState("reconnecting", Math.round(delay / 1000));
    this.timer = setTimeout(() => {
      this.timer = null;
      this._setState("connecting");
      this._open();
    }, delay);
  }

  _cancelRetry() {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
  }

  _send(type, body, evenBeforeLogin = false) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    if (!this.welcomed && !evenBeforeLogin) return false;
    this.ws.send(encode(type, body));
    return true;
  }

  _submit(type, body, room, text) {
    const ref = `m${++this.refs}`;
    const item = { ref, type, body: { ...body, ref }, room, text, state: "sending", sent: false };
    this.outgoing.set(ref, item);
    item.sent = this._send(type, item.body);
    this._emit("outgoing", { item });
    return ref;
  }

  _fail(item, message) {
    item.state = "failed";
    item.error = message;
    item.sent = false;
    this._emit("outgoing", { item });
  }

  _confirm(item, packet) {
    this.outgoing.delete(item.ref);
    item.state = "confirmed";
    this._emit("outgoing", { item, packet });
  }

  _setState(state, detail = null) {
    this.state = state;
    this._emit("state", { state, detail });
  }

  _emit(name, detail) {
    this.dispatchEvent(new CustomEvent(name, { detail }));
  }

  _room(name) {
    const key = roomKey(name);
    let room = this.rooms.get(key);
    if (!room) {
      room = new Room(name);
      this.rooms.set(key, room);
    }
    return room;
  }

  _roomOf(body) {
    return this.rooms.get(roomKey(body.room ?? this.defaultRoom));
  }

  // -- packets -------------------------------------------------------------------

  _welcome(body) {
    const resumed = this.token !== null && body.id === this.id;
    this.welcomed = true;
    this.attempt = 0;
    this.id = body.id;
    this.nick = body.nick;
    this.token = body.resume;
    this.defaultRoom = body.default_room ?? "general";
    this.account = !!body.account;
    this.admin = !!body.admin;
    this.limits = body.limits ?? {};
    this.pending = new Set(body.pending ?? []);
    this._setState("connected", body.server);
    this._emit("welcome", { body, resumed });
    this._emit("pending", {});
    if (this.register) {
      this.register = false;
      this._send(T.ACCOUNT, { op: "register", password: this.password, ref: "register" });
    }
    const coming = new Set((body.rooms ?? []).map(roomKey));
    const wanted = [...this.rooms.values()].filter((r) => !coming.has(r.key)).map((r) => r.name);
    if (!this.rooms.size && !coming.size) wanted.push(this.defaultRoom);
    for (const name of wanted) this.join(name);
    for (const item of this.outgoing.values()) {
      if (item.state === "sending" && !item.sent) item.sent = this._send(item.type, item.body);
    }
  }

  _roomState(body) {
    const room = this._room(body.room);
    const fresh = !room.joined && !room.messages.length;
    room.name = body.room;
    room.topic = body.topic ?? "";
    room.joined = true;
    room.members = new Map(body.members.map((p) => [p.id, p]));
    room.read = body.read ?? room.read;
    room.unread = body.unread ?? room.unread;
    const history = body.history ?? [];
    if (fresh) {
      room.messages = history.slice();
      room.more = history.length > 0 && history[0].seq > 1;
    } else {
      const last = room.lastSeq;
      const newer = history.filter((m) => m.seq > last);
      if (newer.length && newer[0].seq > last + 1) {
        // A gap: fetch everything after what we have, page by page.
        this._send(T.HISTORY, { room: room.name, after: last, limit: CATCH_UP_PAGE });
      } else {
        for (const m of newer) this._append(room, m);
      }
    }
    this._emit("room", { room, fresh });
  }

  _append(room, message) {
    if (message.seq <= room.lastSeq) return false; // already shown (a catch-up overlap)
    room.messages.push(message);
    if (message.from && nickKey(message.from) === nickKey(this.nick ?? "")) {
      for (const item of this.outgoing.values()) {
        if (item.state === "failed" && item.room && roomKey(item.room) === room.key && item.text === message.text) {
          this._confirm(item, message); // it was stored after all (section 11)
          break;
        }
      }
    }
    return true;
  }

  _message(body) {
    const room = this._roomOf(body);
    if (!room) return;
    const item = body.ref ? this.outgoing.get(body.ref) : null;
    if (!this._append(room, body)) return;
    this._emit("message", { room, message: body, own: !!item });
    if (item) this._confirm(item, body);
  }

  _historyPage(body) {
    const room = this._roomOf(body);
    if (!room) return;
    const messages = body.messages;
    // HISTORY_PAGE echoes no ref: an older page is one that ends before what we have.
    if (room.loadingOlder && (!messages.length || messages[messages.length - 1].seq < room.firstSeq)) {
      room.loadingOlder = false;
      room.messages = messages.concat(room.messages);
      room.more = body.more && messages.length > 0;
      this._emit("older", { room, count: messages.length });
      return;
    }
    for (const m of messages) this._append(room, m);
    if (body.more && messages.length) {
      this._send(T.HISTORY, { room: room.name, after: room.lastSeq, limit: CATCH_UP_PAGE });
    }
    this._emit("room", { room, fresh: false });
  }

  _joined(body) {
    const room = this._roomOf(body);
    if (!room) return;
    room.members.set(body.id, { id: body.id, nick: body.nick });
    this._emit("members", { room, joined: body });
  }

  _left(body) {
    const room = this._roomOf(body);
    if (!room) return;
    if (body.id === this.id) {
      this.rooms.delete(room.key);
      this._emit("left-room", { room, left: body });
      return;
    }
    room.members.delete(body.id);
    this._emit("members", { room, left: body });
  }

  _pendingChanged(body) {
    if (body.state === "gone") this.pending.delete(body.id);
    else this.pending.add(body.id);
    this._emit("pending", {});
  }

  _topic(body) {
    const room = this._roomOf(body);
    if (!room) return;
    room.topic = body.topic;
    this._emit("topic", { room, by: body.by });
  }

  _private(body) {
    const item = body.ref ? this.outgoing.get(body.ref) : null;
    if (item) this._confirm(item, body);
    this._emit("whisper", { whisper: body, own: !!item });
  }

  _error(body) {
    const item = body.ref ? this.outgoing.get(body.ref) : null;
    if (item) {
      this._fail(item, body.message);
      return;
    }
    if (body.ref && body.ref.startsWith("join:")) {
      const room = this.rooms.get(roomKey(body.ref.slice(5)));
      if (room && !room.joined) this.rooms.delete(room.key);
    }
    if (body.ref && body.ref.startsWith("older:")) {
      const room = this.rooms.get(body.ref.slice(6));
      if (room) room.loadingOlder = false;
    }
    if (!this.welcomed && FINAL_ERRORS.has(body.code)) {
      this.finalReason = body.code;
      this._emit("login-failed", body);
      this.ws.close(1000, "login refused");
      return;
    }
    this._emit("error", body);
  }

  _bye(body) {
    if (!RETRY_BYES.has(body.reason)) this.finalReason = body.reason;
    this._emit("error", { code: "bye", message: `the server closed the connection: ${body.reason}` });
  }

  _marked(body) {
    const room = this._roomOf(body);
    if (!room) return;
    room.read = Math.max(room.read, body.seq);
    room.unread = body.unread;
    this._emit("marked", { room });
  }
}

const HANDLERS = {
  [T.WELCOME]: ChatSession.prototype._welcome,
  [T.ROOM]: ChatSession.prototype._roomState,
  [T.MESSAGE]: ChatSession.prototype._message,
  [T.HISTORY_PAGE]: ChatSession.prototype._historyPage,
  [T.JOINED]: ChatSession.prototype._joined,
  [T.LEFT]: ChatSession.prototype._left,
  [T.PENDING]: ChatSession.prototype._pendingChanged,
  [T.TOPIC_CHANGED]: ChatSession.prototype._topic,
  [T.PRIVATE]: ChatSession.prototype._private,
  [T.ERROR]: ChatSession.prototype._error,
  [T.BYE]: ChatSession.prototype._bye,
  [T.MARKED]: ChatSession.prototype._marked,
  [T.SERVER_PING](body) {
    this._send(T.PONG, body.token != null ? { token: body.token } : {});
  },
  [T.ROOMS](body) {
    this._emit("roomlist", { rooms: body.rooms });
  },
  [T.DONE](body) {
    if (body.op === "register") this.account = true;
    this._emit("done", body);
  },
  [T.INVITED](body) {
    this._emit("invited", body);
  },
};
