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
  "locked_out", "banned", "weak_password", "too_many_connections", "too_many_attempts",
]);
export const OLDER_PAGE = 50;
/** Milliseconds to wait for the server's Close after QUIT before closing. */
const QUIT_WAIT = 3000;
export const CATCH_UP_PAGE = 200;
/** Local lines (presence, whispers, outages) kept per room; the oldest go first. */
export const MAX_EVENTS = 500;
/** Messages asked for around a search hit (protocol 21.4). */
export const AROUND_PAGE = 50;
/** Seconds before a files token expires that a new one is asked for: the
 * thumbnails and links of private rooms carry it. */
const TOKEN_MARGIN = 60;
/** Characters of the answered message a reply's quote holds (protocol 19.1). */
const QUOTE_LENGTH = 100;
/** A big room's members the page keeps besides those it lists (ROOM's shown
 * set, JOINED of someone followed, completion answers), the most recent:
 * the server follows at most follow_limit nicks a room for us, so an older
 * one would no longer be kept up to date anyway. */
export const KNOWN_CACHE = 500;
/** Candidates a completion asks the server for in a big room. */
export const COMPLETION_LIMIT = 20;

/** The quote of a message in its present state, as the server makes it. */
export function quoteOf(message) {
  if (message.deleted) return { seq: message.seq, deleted: true };
  return { seq: message.seq, from: message.from, text: Array.from(message.text).slice(0, QUOTE_LENGTH).join("") };
}

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
    // What the history does not keep but the transcript shows: presence,
    // whispers, topic changes, outages; each {after: seq, ts, kind, ...}, shown
    // after the message of that seq.
    this.events = [];
    this.topicLock = false;
    this.inviteOnly = false;
    // The modes of protocol v2's later fields (absent from older servers: off).
    this.moderated = false;
    this.secret = false;
    this.joinKey = ""; // the key JOIN needs (+k), "" for none; members see it
    this.limit = 0; // the most members (+l), 0 for no limit
    this.lostAt = null; // the last seq seen before the connection broke
    this.catchingUp = false;
    this.more = false; // older history exists
    this.loadingOlder = false; // or the seq an older page was asked before
    // Newer history exists than what is loaded: a search hit opened the room
    // further back (protocol 21.4); live messages wait until pages reach them.
    this.newer = false;
    this.loadingNewer = false;
    this.loadingAround = null; // the seq a HISTORY around was asked for
    this.loadingLatest = false;
    this.unread = 0;
    this.mentions = 0; // unread messages naming you (the page counts them)
    this.read = 0;
    this.joined = false;
    this.kind = name.startsWith("@") ? "direct" : "room";
    this.rev = 0; // the highest change (protocol 19.9) this page has seen
    this.changesFrom = null; // asking for changes after this rev (catching up)
    this.typing = new Map(); // nick key -> {nick, timer}: who is typing here now
    // A big room (protocol 22): `members` is a bounded cache, `listed` the
    // members shown, in folded-nick order, a page at a time as the list scrolls.
    this.lazy = false;
    this.count = 0; // its members, from ROOM and COUNT
    this.listed = [];
    this.after = null; // the next page starts after this key
    this.complete = true; // every member listed
    this.fetching = null; // the ref of the page under way
  }

  /** How many members the room has. */
  get memberCount() {
    return this.lazy ? this.count : this.members.size;
  }

  /** A big room listed to its end whose count says otherwise: members who
   * joined since, unfollowed, are not in the list (protocol 22.4). */
  get behind() {
    return this.lazy && this.complete && this.fetching === null && this.listed.length !== this.count;
  }

  /** Nobody listed: a big room's list starts again from its first page. */
  unlist() {
    this.listed = [];
    this.after = null;
    this.complete = false;
  }

  /** Whether a member with this nick key belongs among those listed so far. */
  isListed(key) {
    return this.complete || (this.after !== null && key <= nickKey(this.after));
  }

  /** A member met: kept (a big room keeps the newest KNOWN_CACHE, and me). */
  remember(peer, me) {
    this.members.delete(peer.id);
    this.members.set(peer.id, peer);
    if (!this.lazy) return;
    const mine = this.members.get(me);
    for (const id of this.members.keys()) {
      if (this.members.size <= KNOWN_CACHE) break;
      if (id !== me) this.members.delete(id);
    }
    if (mine && !this.members.has(me)) this.members.set(me, mine);
  }

  /** Every member this page knows of: the cache, then (a big room's) those listed. */
  *peers() {
    yield* this.members.values();
    if (this.lazy) yield* this.listed;
  }

  /** A member put among those listed, in order (a big room's). */
  list(peer) {
    const key = nickKey(peer.nick);
    let lo = 0;
    let hi = this.listed.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (nickKey(this.listed[mid].nick) < key) lo = mid + 1;
      else hi = mid;
    }
    this.listed.splice(lo, 0, peer);
  }

  /** A direct conversation (protocol 19.8): no operators, shown by its people. */
  get direct() {
    return this.kind === "direct";
  }

  /** A direct conversation's participants but `me` (its name is @a+b+...). */
  others(me) {
    if (!this.direct) return [];
    const key = nickKey(me ?? "");
    return this.name.slice(1).split("+").filter((n) => n && nickKey(n) !== key);
  }

  /** The index of the message with this seq in `messages`, or -1. */
  find(seq) {
    const list = this.messages;
    let lo = 0;
    let hi = list.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (list[mid].seq < seq) lo = mid + 1;
      else hi = mid;
    }
    return lo < list.length && list[lo].seq === seq ? lo : -1;
  }

  message(seq) {
    const i = this.find(seq);
    return i < 0 ? null : this.messages[i];
  }

  /** The member whose nick this is, or null. */
  member(nick) {
    const key = nickKey(nick ?? "");
    for (const p of this.peers()) if (nickKey(p.nick) === key) return p;
    return null;
  }

  get lastSeq() {
    return this.messages.length ? this.messages[this.messages.length - 1].seq : 0;
  }

  get firstSeq() {
    return this.messages.length ? this.messages[0].seq : 0;
  }

  /** Messages and local events in the order they happened: an event made
   * when message `after` was the newest comes right after it. */
  timeline() {
    const out = [];
    let e = 0;
    for (const m of this.messages) {
      while (e < this.events.length && this.events[e].after < m.seq) out.push(this.events[e++]);
      out.push(m);
    }
    // Lines after the newest message belong to the present: not below older ones read back.
    if (!this.newer) while (e < this.events.length) out.push(this.events[e++]);
    return out;
  }

  /** Whether `nick` is voiced here (may talk while the room is moderated). */
  isVoiced(nick) {
    return !!this.member(nick)?.voice;
  }

  /** Whether `nick` is an operator of this room (as its member list says). */
  isOp(nick) {
    const key = nickKey(nick ?? "");
    for (const p of this.peers()) if (nickKey(p.nick) === key) return !!p.op;
    return false;
  }
}

export class ChatSession extends EventTarget {
  constructor({ url, retry = backoff, socket = (u) => new WebSocket(u), refusal = async () => null } = {}) {
    super();
    this.url = url;
    this.retry = retry;
    this.socket = socket;
    // Why the server refused a connection before its handshake (its 503's
    // reason: server_full, too_many_connections, banned), or null.
    this.refusal = refusal;
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
    this.shown = null; // the key of the room the user looks at: where whispers are kept
    this.account = false;
    this.admin = false;
    this.away = null; // the away message ("" for none) while away, else null
    this.typingSent = new Map(); // room key -> when TYPING true was last sent (ms)
    this.opening = new Map(); // OPEN's ref -> {names, text}: a conversation being opened
    this.joinKeys = new Map(); // room key -> the key (+k) it was joined with or told
    this.files = null; // the newest FILES_TOKEN: {token, url, maxUpload, until (local seconds)}
    this.tokenWaiters = []; // {resolve, reject} of those waiting for a token
    this.tokenTimer = null;
    this.memberAsks = 0;
    this.membersAsked = new Map(); // MEMBERS ref -> {key, prefix}: answers awaited
    this.completions = new Map(); // MEMBERS ref -> the completion's resolve
  }

  /** Seconds between TYPING notices (protocol 19.6). */
  get typingInterval() {
    return this.limits?.typing_interval ?? 3;
  }

  // -- what the page calls -------------------------------------------------------

  /** Log in; with `token` (a resume token kept by the tab) and `rooms`
   * ({name, events} each, what saved() gave), take over the session the
   * tab had, or log in again as that nick and join its rooms if the server
   * no longer holds it; their transcripts keep the events they had. */
  connect(nick, { password = null, register = false, token = null, rooms = [] } = {}) {
    this.nick = nick;
    this.password = password;
    this.register = register && !!password;
    this.token = token;
    this.finalReason = null;
    this.attempt = 0;
    this.rooms.clear();
    for (const saved of rooms) {
      const room = this._room(saved.name);
      room.events = Array.isArray(saved.events) ? saved.events.slice(-MAX_EVENTS) : [];
    }
    this._setState("connecting");
    this._open();
  }

  /** What a reload needs to come back: the nick, the token, each joined
   * room with its local events (never the password). */
  saved() {
    const rooms = [...this.rooms.values()].filter((r) => r.joined);
    return { nick: this.nick, token: this.token, rooms: rooms.map((r) => ({ name: r.name, events: r.events })) };
  }

  disconnect(reason = "leaving") {
    this._cancelRetry();
    clearTimeout(this.tokenTimer);
    this.finalReason = "disconnected";
    const ws = this.ws;
    if (ws && ws.readyState === WebSocket.OPEN) {
      // The server answers QUIT with its Close frame (protocol 16.3); closing
      // from here too would cross it ("Close received after close"). Only a
      // server that never closes is closed on, after a while.
      ws.send(encode(T.QUIT, { reason }));
      setTimeout(() => ws.readyState === WebSocket.OPEN && ws.close(1000, "leaving"), QUIT_WAIT);
    } else if (ws && ws.readyState === WebSocket.CONNECTING) {
      ws.close(1000, "leaving");
    }
    this._setState("disconnected");
  }

  /** SAY in a room (answering message `reply`, a seq, if given, and
   * carrying `files`, uploads' File objects); shown at once as "sending",
   * confirmed by its MESSAGE. */
  say(room, text, reply = null, files = []) {
    this.typingSent.delete(roomKey(room)); // a message says the typing stopped
    const body = { text, room };
    if (reply != null) body.reply = reply;
    if (files.length) body.files = files.map((f) => f.id);
    return this._submit(T.SAY, body, room, text, files);
  }

  // Files (protocol section 20): the bytes go over HTTP with a token.

  /** A files token valid for a while yet: the one held, or a new one asked
   * with FILES (`fresh`: ask anyway, as after an HTTP 401). */
  fileToken(fresh = false) {
    const now = Date.now() / 1000;
    if (!fresh && this.files && this.files.until - TOKEN_MARGIN > now) return Promise.resolve(this.files);
    return new Promise((resolve, reject) => {
      this.tokenWaiters.push({ resolve, reject });
      if (this.tokenWaiters.length > 1) return; // asked already
      if (!this._send(T.FILES, { ref: "files" })) this._tokenRefused("not connected: try again in a moment");
    });
  }

  /** The token held now for a file's address (private rooms need it), or null. */
  get fileTokenNow() {
    return this.files && this.files.until > Date.now() / 1000 ? this.files.token : null;
  }

  _filesToken(body) {
    const now = Date.now() / 1000;
    // `expires` is the server's clock: a lifetime from here holds however far ours is off.
    const lifetime = Math.min(Math.max(body.expires - now, 2 * TOKEN_MARGIN), 3600);
    this.files = { token: body.token, url: body.url, maxUpload: body.max_upload, until: now + lifetime };
    for (const w of this.tokenWaiters.splice(0)) w.resolve(this.files);
    clearTimeout(this.tokenTimer);
    this.tokenTimer = setTimeout(() => {
      this.tokenTimer = null;
      if (this.state === "connected") this.fileToken(true).catch(() => {});
    }, (lifetime - TOKEN_MARGIN) * 1000);
    this._emit("files-token", {});
  }

  _tokenRefused(message) {
    for (const w of this.tokenWaiters.splice(0)) w.reject(new Error(message));
  }

  // Search (protocol section 21).

  /** SEARCH: `fields` are words and optionally room, from, page; RESULTS or
   * an ERROR come back with the ref returned (null when not connected). */
  search(fields) {
    const ref = `search:${++this.refs}`;
    return this._send(T.SEARCH, { ...fields, ref }) ? ref : null;
  }

  /** Show the room around message `seq`: loaded already, or HISTORY around it. */
  around(key, seq) {
    const room = this.rooms.get(key);
    if (!room) return false;
    if (room.find(seq) >= 0) {
      this._emit("around", { room, seq });
      return true;
    }
    room.loadingAround = seq;
    return this._send(T.HISTORY, { room: room.name, around: seq, limit: AROUND_PAGE });
  }

  /** The next page of newer messages, while a room shows older ones. */
  loadNewer(key) {
    const room = this.rooms.get(key);
    if (!room || !room.newer || room.loadingNewer || room.loadingLatest) return false;
    room.loadingNewer = true;
    return this._send(T.HISTORY, { room: room.name, after: room.lastSeq, limit: OLDER_PAGE });
  }

  /** Back to the room's newest messages (its newest page replaces what is loaded). */
  loadLatest(key) {
    const room = this.rooms.get(key);
    if (!room || !room.newer || room.loadingLatest) return false;
    room.loadingLatest = true;
    return this._send(T.HISTORY, { room: room.name, limit: OLDER_PAGE });
  }

  // Conversations (protocol section 19): each answered by CHANGED (or ERROR)
  // with the ref, which names what it was.

  edit(room, seq, text) {
    return this._send(T.EDIT, { room, seq, text, ref: `edit:${++this.refs}` });
  }

  remove(room, seq) {
    return this._send(T.DELETE, { room, seq, ref: `delete:${++this.refs}` });
  }

  react(room, seq, emoji, on = true) {
    return this._send(T.REACT, { room, seq, emoji, on, ref: `react:${++this.refs}` });
  }

  /** The user types in `room`: TYPING at most once every typing_interval. */
  typing(room) {
    const key = roomKey(room);
    const now = Date.now();
    const last = this.typingSent.get(key);
    if (last !== undefined && now - last < this.typingInterval * 1000) return false;
    if (!this._send(T.TYPING, { room, typing: true })) return false;
    this.typingSent.set(key, now);
    return true;
  }

  /** The user cleared the box (or went elsewhere): TYPING false, if true was said. */
  stoppedTyping(room) {
    const key = roomKey(room);
    if (!this.typingSent.has(key)) return false;
    this.typingSent.delete(key);
    return this._send(T.TYPING, { room, typing: false });
  }

  /** A guest's new nick (15.11): RENAMED answers, everywhere it shows. */
  changeNick(nick) {
    return this._send(T.NICK, { nick, ref: "nick" });
  }

  /** Away with a message ("" for none), or back with null. */
  setAway(message) {
    this.askedAway = message;
    if (message === null) return this._send(T.AWAY, { away: false, ref: "away:back" });
    return this._send(T.AWAY, message ? { away: true, message, ref: "away:away" } : { away: true, ref: "away:away" });
  }

  /** The direct conversation already open with these people, or undefined. */
  directWith(names) {
    const wanted = new Set(names.map(nickKey));
    wanted.delete(nickKey(this.nick ?? ""));
    return [...this.rooms.values()].find((r) => {
      if (!r.direct || !r.joined) return false;
      const others = r.others(this.nick).map(nickKey);
      return others.length === wanted.size && others.every((k) => wanted.has(k));
    });
  }

  /** OPEN the conversation with `names` and, once its ROOM comes, say `text` there. */
  open(names, text = "") {
    const ref = `open:${++this.refs}`;
    this.opening.set(ref, { names, text });
    if (!this._send(T.OPEN, { with: names, ref })) {
      this.opening.delete(ref);
      return null;
    }
    return ref;
  }

  /** A whisper, kept in the transcript of the room shown when it was sent. */
  whisper(to, text) {
    const ref = this._submit(T.WHISPER, { to, text }, null, text);
    const item = this.outgoing.get(ref);
    if (item) item.shownIn = this.shown;
    return ref;
  }

  /** `/me text`: sent as the IRC gateway sends CTCP ACTION, the text "* text". */
  me(room, text) {
    return this.say(room, `* ${text}`);
  }

  /** The room the user looks at (whispers received now are kept there). */
  show(key) {
    this.shown = key;
  }

  /** A refused or unconfirmed message, sent again under a new ref. */
  retrySend(ref) {
    const item = this.outgoing.get(ref);
    if (!item || item.state !== "failed") return null;
    this.outgoing.delete(ref);
    this._emit("outgoing-gone", { ref });
    const again = this._submit(item.type, { ...item.body }, item.room, item.text, item.files);
    const fresh = this.outgoing.get(again);
    if (fresh) fresh.shownIn = item.shownIn;
    return again;
  }

  // Moderation and accounts (protocol section 15). Each request carries a
  // ref naming what it was, so its ERROR can be told to the dialog that asked.

  /** MODERATE in a room: kick, ban, unban, op, deop, invite, mode, bans. */
  moderate(room, op, fields = {}) {
    return this._send(T.MODERATE, { room, op, ...fields, ref: `moderate:${op}:${++this.refs}` });
  }

  /** ADMIN: sessions, bans, close, kick, ban, unban, ban_address, unban_address, reset. */
  adminRequest(op, fields = {}) {
    return this._send(T.ADMIN, { op, ...fields, ref: `admin:${op}:${++this.refs}` });
  }

  // The password stays in memory (never in storage) so that a reconnect after
  // a server restart can log in again: it follows what the account's is now.

  registerAccount(password) {
    this.asked = password;
    return this._send(T.ACCOUNT, { op: "register", password, ref: "account:register" });
  }

  changePassword(password, newPassword) {
    this.asked = newPassword;
    return this._send(T.ACCOUNT, { op: "password", password, new_password: newPassword, ref: "account:password" });
  }

  deleteAccount(password) {
    return this._send(T.ACCOUNT, { op: "delete", password, ref: "account:delete" });
  }

  /** JOIN, with the room's key (+k) if given; a room joined with a key
   * keeps it, so that joining again after an outage needs no prompt. */
  join(room, key = "") {
    if (key) this.joinKeys.set(roomKey(room), key);
    const known = key || this.joinKeys.get(roomKey(room)) || "";
    return this._send(T.JOIN, known ? { room, key: known, ref: `join:${room}` } : { room, ref: `join:${room}` });
  }

  part(room, reason) {
    return this._send(T.PART, reason ? { room, reason } : { room });
  }

  setTopic(room, topic) {
    return this._send(T.TOPIC, { room, topic, ref: `topic:${++this.refs}` });
  }

  listRooms() {
    return this._send(T.LIST, {});
  }

  /** Older messages of a room, before the oldest one shown. */
  loadOlder(key) {
    const room = this.rooms.get(key);
    if (!room || !room.more || room.loadingOlder || !room.messages.length) return false;
    room.loadingOlder = room.firstSeq; // the page asked for ends before this seq
    return this._send(T.HISTORY, {
      room: room.name, before: room.firstSeq, limit: OLDER_PAGE, ref: `older:${room.key}`,
    });
  }

  /** Move the room's read marker to its newest message. */
  markRead(key) {
    const room = this.rooms.get(key);
    if (!room || room.newer || !room.lastSeq || room.read >= room.lastSeq) return;
    room.read = room.lastSeq;
    room.unread = 0;
    this._send(T.MARK, { room: room.name, seq: room.lastSeq, ref: `mark:${room.key}` });
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
    let opened = false;
    ws.onopen = () => {
      opened = true;
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
      if (ws !== this.ws) return;
      if (opened) {
        this._closed(event);
        return;
      }
      // Refused before the handshake: a browser says only 1006, so ask why.
      this.ws = null;
      this.refusal(this.url).then(
        (reason) => this._closed(reason ? { code: 1008, reason } : event),
        () => this._closed(event),
      );
    };
  }

  _closed(event) {
    this.membersAsked.clear(); // each room's ROOM starts its list again
    for (const resolve of this.completions.values()) resolve([]);
    this.completions.clear();
    for (const room of this.rooms.values()) room.fetching = null;
    this.ws = null;
    this._tokenRefused("the connection broke");
    if (this.welcomed && this.finalReason !== "disconnected") this._lost(event);
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

  /** The connection broke: say so in each room's transcript, once per outage. */
  _lost(event) {
    const reason = this.finalReason ?? (event && event.reason) ?? "";
    this.typingSent.clear();
    for (const room of this.rooms.values()) {
      for (const entry of room.typing.values()) this._notTyping(room, entry.nick); // nobody is heard typing now
      if (!room.joined || room.lostAt !== null) continue;
      room.lostAt = room.lastSeq;
      this._event(room, { kind: "lost", reason });
    }
  }

  /** A local line in a room's transcript, after its newest message. */
  _event(room, fields) {
    const entry = { after: room.lastSeq, ts: Date.now() / 1000, ...fields };
    room.events.push(entry);
    if (room.events.length > MAX_EVENTS) room.events.splice(0, room.events.length - MAX_EVENTS);
    this._emit("event", { room, entry });
    return entry;
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

  _submit(type, body, room, text, files = []) {
    const ref = `m${++this.refs}`;
    const item = { ref, type, body: { ...body, ref }, room, text, files, state: "sending", sent: false };
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
    if (!resumed) this.files = null; // a token dies with its session
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
    for (const name of wanted) {
      // A direct conversation can't be joined: OPEN finds it again (19.8).
      const room = this.rooms.get(roomKey(name));
      if (room && room.direct) this._send(T.OPEN, { with: room.others(this.nick) });
      else this.join(name);
    }
    for (const item of this.outgoing.values()) {
      if (item.state === "sending" && !item.sent) item.sent = this._send(item.type, item.body);
    }
  }

  _roomState(body) {
    const room = this._room(body.room);
    const fresh = !room.joined && !room.messages.length;
    room.name = body.room;
    room.topic = body.topic ?? "";
    room.topicLock = !!body.topic_lock;
    room.inviteOnly = !!body.invite_only;
    this._roomModes(room, { moderated: false, secret: false, key: "", limit: 0, ...body });
    room.joined = true;
    room.kind = body.kind === "direct" ? "direct" : "room";
    room.members = new Map(body.members.map((p) => [p.id, p]));
    room.lazy = !!body.lazy;
    room.count = body.count ?? body.members.length;
    room.listed = [];
    room.after = null;
    room.complete = !room.lazy;
    room.fetching = null;
    room.read = body.read ?? room.read;
    room.unread = body.unread ?? room.unread;
    const mine = room.members.get(this.id);
    if (mine && (mine.away ?? null) !== this.away) {
      this.away = mine.away ?? null; // a resumed session stays away (19.7)
      this._emit("away", {});
    }
    const history = body.history ?? [];
    const rev = body.rev ?? 0;
    if (fresh) {
      room.messages = history.slice();
      room.more = history.length > 0 && history[0].seq > 1;
      room.rev = rev;
    } else {
      const last = room.lastSeq;
      // What we hold of the replayed history: its present state replaces our copy.
      for (const m of history) if (m.seq <= last) this._apply(room, m);
      const newer = room.newer ? [] : history.filter((m) => m.seq > last); // pages bring them
      if (newer.length && newer[0].seq > last + 1) {
        // A gap: fetch everything after what we have, page by page.
        room.catchingUp = this._send(T.HISTORY, { room: room.name, after: last, limit: CATCH_UP_PAGE });
      } else {
        for (const m of newer) this._append(room, m);
      }
      // Changes made while we were away, however old the messages (19.9).
      if (rev > room.rev) this._changesAfter(room, room.rev);
    }
    this._emit("room", { room, fresh });
    if (room.lazy) this.moreMembers(room.key); // the list's first page
    if (!room.catchingUp) this._caughtUp(room);
    const opening = body.ref ? this.opening.get(body.ref) : null;
    if (opening) {
      this.opening.delete(body.ref);
      if (opening.text) this.say(room.name, opening.text);
      this._emit("opened", { room });
    }
  }

  _changesAfter(room, rev) {
    room.changesFrom = rev;
    if (!this._send(T.HISTORY, { room: room.name, changed_after: rev, limit: CATCH_UP_PAGE })) room.changesFrom = null;
  }

  /** A message's present state (CHANGED, a changes page, a replayed one)
   * replaces our copy, and the quotes of replies to it follow. Returns the
   * messages whose display changed. */
  _apply(room, message) {
    if (message.rev != null && message.rev > room.rev) room.rev = message.rev;
    const touched = [];
    const i = room.find(message.seq);
    if (i >= 0) {
      const old = room.messages[i];
      if ((old.rev ?? 0) > (message.rev ?? 0)) return touched; // we have a later state
      room.messages[i] = message;
      touched.push(message);
    }
    const quote = quoteOf(message);
    for (const m of room.messages) {
      if (!m.reply || m.reply.seq !== message.seq || m === message) continue;
      if (m.reply.deleted === quote.deleted && m.reply.text === quote.text && m.reply.from === quote.from) continue;
      m.reply = quote;
      touched.push(m);
    }
    return touched;
  }

  _changed(body) {
    const room = this._roomOf(body);
    if (!room) return;
    const touched = this._apply(room, body.message);
    this._emit("changed", { room, touched, kind: body.kind, by: body.by, message: body.message, own: !!body.ref });
  }

  _typingNotice(body) {
    const room = this._roomOf(body);
    if (!room || nickKey(body.nick) === nickKey(this.nick ?? "")) return; // my other devices
    this._notTyping(room, body.nick, false);
    if (body.typing !== false) {
      // It expires by itself after twice the interval (19.6).
      const timer = setTimeout(() => this._notTyping(room, body.nick), 2 * this.typingInterval * 1000);
      room.typing.set(nickKey(body.nick), { nick: body.nick, timer });
    }
    this._emit("typing", { room });
  }

  _notTyping(room, nick, emit = true) {
    const key = nickKey(nick ?? "");
    const entry = room.typing.get(key);
    if (!entry) return;
    clearTimeout(entry.timer);
    room.typing.delete(key);
    if (emit) this._emit("typing", { room });
  }

  _status(body) {
    const room = this._roomOf(body);
    const away = body.away ?? null;
    if (nickKey(body.nick) === nickKey(this.nick ?? "") && away !== this.away) {
      this.away = away; // set here or on another device
      this._emit("away", {});
    }
    if (!room) return;
    const key = nickKey(body.nick);
    for (const p of room.peers()) {
      if (nickKey(p.nick) !== key) continue;
      if (away === null) delete p.away;
      else p.away = away;
    }
    this._emit("members", { room });
  }

  /** RENAMED: a member (or we) took another nick; each room it is in shows it. */
  _renamed(body) {
    const old = nickKey(body.old);
    const own = old === nickKey(this.nick ?? "");
    if (own) this.nick = body.nick;
    if (body.old === body.nick) return; // our own nick again: nothing changed
    for (const room of this.rooms.values()) {
      const found = [...room.peers()].filter((p) => nickKey(p.nick) === old);
      if (!found.length) continue;
      for (const member of found) member.nick = body.nick;
      this._notTyping(room, body.old);
      this._event(room, { kind: "renamed", old: body.old, nick: body.nick });
      this._emit("members", { room });
    }
    this._emit("renamed", { renamed: body, own });
  }

  /** Back after an outage and nothing missing any more: say how much was fetched. */
  _caughtUp(room) {
    room.catchingUp = false;
    if (room.lostAt === null) return;
    const count = room.messages.filter((m) => m.seq > room.lostAt).length;
    room.lostAt = null;
    this._event(room, { kind: "reconnected", count });
  }

  /** Put a message in its place by seq; false if it is there already (a
   * catch-up page and a live MESSAGE may overlap, in either order). */
  _insert(room, message) {
    const list = room.messages;
    if (room.newer && message.seq > room.lastSeq) return false; // beyond what is loaded: a page brings it
    if (!list.length || message.seq > room.lastSeq) {
      list.push(message);
      return true;
    }
    let lo = 0;
    let hi = list.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (list[mid].seq < message.seq) lo = mid + 1;
      else hi = mid;
    }
    if (lo < list.length && list[lo].seq === message.seq) {
      // The same message again (a page overlapping a live one): the later copy holds its present state.
      if ((message.rev ?? 0) >= (list[lo].rev ?? 0)) list[lo] = message;
      return false;
    }
    if (lo === 0 && room.more) return false; // older than what is loaded: a page brings it
    list.splice(lo, 0, message);
    return true;
  }

  _append(room, message) {
    if (!this._insert(room, message)) return false;
    if (message.from && nickKey(message.from) === nickKey(this.nick ?? "")) {
      for (const item of this.outgoing.values()) {
        const sameFiles = (item.files?.length ?? 0) === (message.files?.length ?? 0);
        if (item.state === "failed" && item.room && roomKey(item.room) === room.key && item.text === message.text && sameFiles) {
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
    this._notTyping(room, body.from); // a message says the typing stopped
    if (!this._append(room, body)) {
      if (item) this._confirm(item, body); // stored, though not shown here now (a room read further back)
      return;
    }
    if (body.action) this._moderated(room, body.action);
    this._emit("message", { room, message: body, own: !!item });
    if (item) this._confirm(item, body);
  }

  /** A moderation record changes what the room shows at once: who is an
   * operator or voiced, its modes (the LEFT of a kick or ban comes on its own). */
  _moderated(room, action) {
    const flag = { op: ["op", true], deop: ["op", false], voice: ["voice", true], devoice: ["voice", false] }[action.op];
    if (flag) {
      const [name, on] = flag;
      const key = nickKey(action.target ?? "");
      for (const p of room.peers()) {
        if (nickKey(p.nick) !== key) continue;
        if (on) p[name] = true;
        else delete p[name];
      }
      this._emit("members", { room });
    } else if (action.op === "mode") {
      if (action.topic_lock != null) room.topicLock = action.topic_lock;
      if (action.invite_only != null) room.inviteOnly = action.invite_only;
      this._roomModes(room, action);
      this._emit("modes", { room });
    }
  }

  /** The later modes (+m, +s, +k, +l) from a ROOM or a mode record: each
   * field given is the mode's new state, an absent one leaves it. */
  _roomModes(room, fields) {
    if (fields.moderated != null) room.moderated = !!fields.moderated;
    if (fields.secret != null) room.secret = !!fields.secret;
    if (typeof fields.key === "string") {
      room.joinKey = fields.key;
      if (fields.key) this.joinKeys.set(room.key, fields.key);
      else this.joinKeys.delete(room.key);
    }
    if (typeof fields.limit === "number") room.limit = fields.limit;
  }

  _historyPage(body) {
    const room = this._roomOf(body);
    if (!room) return;
    const messages = body.messages;
    if (body.rev != null && room.changesFrom !== null) {
      // An answer to changed_after (19.9): each message as a CHANGED.
      let top = room.changesFrom;
      const touched = [];
      for (const m of messages) {
        touched.push(...this._apply(room, m));
        if (m.rev != null && m.rev > top) top = m.rev;
      }
      if (body.more && messages.length) this._changesAfter(room, top);
      else {
        room.changesFrom = null;
        room.rev = Math.max(room.rev, body.rev);
      }
      this._emit("changed", { room, touched, kind: "catch-up" });
      return;
    }
    if (body.newer != null && room.loadingAround !== null) return this._aroundPage(room, body);
    if (room.loadingLatest) return this._latestPage(room, body);
    // HISTORY_PAGE echoes no ref: an older page is one that ends before what we have.
    const older = room.loadingOlder === room.firstSeq; // else a search hit replaced what it was older than
    if (older && (!messages.length || messages[messages.length - 1].seq < room.firstSeq)) {
      room.loadingOlder = false;
      room.messages = messages.concat(room.messages);
      room.more = body.more && messages.length > 0;
      this._emit("older", { room, count: messages.length });
      return;
    }
    if (room.loadingNewer && !room.catchingUp && (!messages.length || messages[0].seq > room.lastSeq)) {
      room.loadingNewer = false;
      room.messages.push(...messages.filter((m) => m.seq > room.lastSeq));
      room.newer = body.more && messages.length > 0;
      this._emit("newer", { room, count: messages.length });
      return;
    }
    if (room.loadingOlder && !room.catchingUp) room.loadingOlder = false; // the older page, now stale
    if (room.newer && !room.catchingUp) {
      // A page asked before a search hit moved the room further back: what
      // it holds is not next to what is loaded now, and asking on from here
      // would fetch what is not kept, again and again.
      return;
    }
    const from = room.catchingUp && messages.length ? messages[messages.length - 1].seq : room.lastSeq;
    for (const m of messages) this._append(room, m);
    if (body.more && messages.length) {
      this._send(T.HISTORY, { room: room.name, after: from, limit: CATCH_UP_PAGE });
    }
    this._emit("room", { room, fresh: false });
    if (room.catchingUp && !(body.more && messages.length)) this._caughtUp(room);
  }

  /** The page around a search hit: it joins what is loaded if they touch,
   * else it replaces it (and newer pages follow as the user scrolls down). */
  _aroundPage(room, body) {
    const seq = room.loadingAround;
    room.loadingAround = null;
    room.loadingNewer = false; // a newer page asked before is no longer next to what is loaded
    const page = body.messages;
    const old = room.messages;
    const last = page.length ? page[page.length - 1].seq : 0;
    if (page.length && old.length && last + 1 >= old[0].seq && page[0].seq <= old[0].seq) {
      room.messages = page.concat(old.filter((m) => m.seq > last));
      room.more = body.more;
    } else if (page.length || !old.length) {
      room.messages = page.slice();
      room.more = body.more && page.length > 0;
      room.newer = !!body.newer;
    } // else: nothing around it (deleted, or not kept): what is shown stays
    this._emit("around", { room, seq });
  }

  /** The newest page, after reading further back: the room is live again. */
  _latestPage(room, body) {
    room.loadingLatest = false;
    room.loadingNewer = false;
    room.messages = body.messages.slice();
    room.more = body.more && body.messages.length > 0;
    room.newer = false;
    this._emit("room", { room, fresh: false });
  }

  _joined(body) {
    const room = this._roomOf(body);
    if (!room) return;
    // An operator back after a reconnect is announced as one (JOINED.op).
    const peer = { id: body.id, nick: body.nick };
    if (body.op) peer.op = true;
    if (body.voice) peer.voice = true;
    if (body.away != null) peer.away = body.away; // JOINED.away (19.7)
    room.remember(peer, this.id);
    if (room.lazy && !room.listed.some((p) => p.id === peer.id)) {
      room.count += 1; // its COUNT may come later; it says the same or corrects this
      if (room.isListed(nickKey(peer.nick))) room.list(peer);
    }
    this._event(room, { kind: "joined", nick: body.nick });
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
    if (room.lazy && room.listed.some((p) => p.id === body.id)) {
      room.listed = room.listed.filter((p) => p.id !== body.id);
      room.count -= 1; // as a JOINED's
    }
    this._event(room, { kind: "left", nick: body.nick, reason: body.reason, message: body.message ?? "" });
    this._emit("members", { room, left: body });
  }

  // -- big rooms (protocol 22) --------------------------------------------------------

  /** MEMBERS: a page of `key`'s members after `after`, or those whose nick
   * starts with `prefix`; returns its ref (the answer's "members-page" event
   * carries it), or null offline. */
  members(key, { after = null, prefix = null, limit = null } = {}) {
    const room = this.rooms.get(key);
    if (!room || !room.joined) return null;
    const ref = `members:${++this.memberAsks}`;
    const body = { room: room.name, ref };
    if (after !== null) body.after = after;
    if (prefix !== null) body.prefix = prefix;
    if (limit !== null) body.limit = limit;
    if (!this._send(T.MEMBERS, body)) return null;
    this.membersAsked.set(ref, { key, prefix });
    return ref;
  }

  /** The next page of a big room's list, unless one is under way or none is left. */
  moreMembers(key) {
    const room = this.rooms.get(key);
    if (!room || !room.lazy || room.complete || room.fetching) return false;
    room.fetching = this.members(key, { after: room.after });
    return room.fetching !== null;
  }

  /** A big room's list again from its first page (the list's Refresh). */
  relist(key) {
    const room = this.rooms.get(key);
    if (!room || !room.lazy || room.fetching) return false;
    const ref = this.members(key);
    if (ref === null) return false; // offline: the list stays as it was
    room.unlist();
    room.fetching = ref;
    this._emit("members", { room });
    return true;
  }

  /** Completion: the members of `key` whose nick starts with `prefix`, as a
   * promise of their peers (a small room's from the list it has). */
  complete(key, prefix) {
    const room = this.rooms.get(key);
    if (!room) return Promise.resolve([]);
    const folded = nickKey(prefix);
    const order = (a, b) => (nickKey(a.nick) < nickKey(b.nick) ? -1 : 1);
    if (!room.lazy) {
      return Promise.resolve([...room.members.values()].filter((p) => nickKey(p.nick).startsWith(folded)).sort(order));
    }
    const ref = this.members(key, { prefix, limit: COMPLETION_LIMIT });
    if (!ref) return Promise.resolve([]);
    return new Promise((resolve) => this.completions.set(ref, resolve));
  }

  _membersPage(body) {
    const asked = this.membersAsked.get(body.ref);
    const room = asked ? this.rooms.get(asked.key) : null;
    this.membersAsked.delete(body.ref);
    if (!room) return;
    if (room.lazy) room.count = body.count;
    const completing = this.completions.get(body.ref);
    if (completing) {
      for (const p of body.members) room.remember(p, this.id);
      this.completions.delete(body.ref);
      completing(body.members);
    }
    if (body.ref === room.fetching) {
      room.fetching = null;
      const last = room.listed.length ? nickKey(room.listed[room.listed.length - 1].nick) : null;
      for (const p of body.members) {
        if (last === null || nickKey(p.nick) > last) room.listed.push(p);
      }
      room.after = body.next ?? null;
      room.complete = body.next == null;
    }
    this._emit("members", { room });
  }

  _count(body) {
    const room = this._roomOf(body);
    if (!room) return;
    room.count = body.members;
    if (!room.lazy && room.kind !== "direct") {
      // Its first COUNT says the room turned big while we were in it
      // (protocol section 22.2): listed again a page at a time, in order.
      room.lazy = true;
      room.unlist();
      room.fetching = null;
      this._emit("members", { room });
      this.moreMembers(room.key);
      return;
    }
    this._emit("members", { room });
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
    this._event(room, { kind: "topic", by: body.by, topic: body.topic });
    this._emit("topic", { room, by: body.by });
  }

  /** A whisper, sent or received, kept in a room's transcript: the one it
   * was typed in, or the one shown when it came. */
  _private(body) {
    const item = body.ref ? this.outgoing.get(body.ref) : null;
    const key = item ? item.shownIn : this.shown;
    const room = this.rooms.get(key) ?? [...this.rooms.values()].find((r) => r.joined);
    const fromMe = nickKey(body.from) === nickKey(this.nick ?? "");
    if (item) this._confirm(item, body);
    const line = { kind: "whisper", ts: body.ts, from: body.from, to: body.to, text: body.text, fromMe };
    if (body.notice) line.notice = true; // IRC's NOTICE, in private
    const entry = room ? this._event(room, line) : null;
    this._emit("whisper", { whisper: body, own: !!item, fromMe, room, entry });
  }

  _error(body) {
    const item = body.ref ? this.outgoing.get(body.ref) : null;
    if (item) {
      this._fail(item, body.message);
      return;
    }
    // A MARK that crossed a kick (the record is read, then the LEFT comes): no news.
    if (body.ref && body.ref.startsWith("mark:") && !this.rooms.get(body.ref.slice(5))?.joined) return;
    if (body.ref && body.ref.startsWith("join:")) {
      const room = this.rooms.get(roomKey(body.ref.slice(5)));
      if (room && !room.joined) this.rooms.delete(room.key);
    }
    if (body.ref && this.opening.has(body.ref)) {
      const opening = this.opening.get(body.ref);
      this.opening.delete(body.ref);
      this._emit("open-failed", { ...body, opening });
      return;
    }
    if (body.ref === "files") {
      this._tokenRefused(body.message);
      return;
    }
    if (body.ref && this.membersAsked.has(body.ref)) {
      const { key } = this.membersAsked.get(body.ref);
      this.membersAsked.delete(body.ref);
      const room = this.rooms.get(key);
      if (room && room.fetching === body.ref) {
        room.fetching = null;
        this._emit("members", { room }); // its list shows "…" again, to be asked once more
      }
      this.completions.get(body.ref)?.([]);
      this.completions.delete(body.ref);
      return;
    }
    if (body.ref && body.ref.startsWith("search:")) {
      this._emit("search-failed", body);
      return;
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
  [T.CHANGED]: ChatSession.prototype._changed,
  [T.TYPING_NOTICE]: ChatSession.prototype._typingNotice,
  [T.STATUS]: ChatSession.prototype._status,
  [T.RENAMED]: ChatSession.prototype._renamed,
  [T.FILES_TOKEN]: ChatSession.prototype._filesToken,
  [T.MEMBERS_PAGE]: ChatSession.prototype._membersPage,
  [T.COUNT]: ChatSession.prototype._count,
  [T.RESULTS](body) {
    this._emit("results", body);
  },
  [T.SERVER_PING](body) {
    this._send(T.PONG, body.token != null ? { token: body.token } : {});
  },
  [T.ROOMS](body) {
    this._emit("roomlist", { rooms: body.rooms });
  },
  [T.DONE](body) {
    if (body.op === "register") this.account = true;
    if ((body.op === "register" || body.op === "password") && this.asked) this.password = this.asked;
    if (body.op === "delete") {
      this.account = this.admin = false;
      this.password = null;
    }
    if (body.op === "away" || body.op === "back") {
      const away = body.op === "away" ? (this.askedAway ?? "") : null;
      if (away !== this.away) {
        this.away = away;
        this._emit("away", {});
      }
    }
    this.asked = null;
    this._emit("done", body);
  },
  [T.BANS](body) {
    this._emit("bans", body);
  },
  [T.SESSIONS](body) {
    this._emit("sessions", body);
  },
  [T.INVITED](body) {
    this._emit("invited", body);
  },
};
