// What the protocol's codes and events mean, said for people. No DOM here:
// app.js puts these strings on the page.

/** "3 s", "2 min", "1 h 5 min": a wait the server asked for, rounded up. */
export function duration(seconds) {
  const s = Math.max(1, Math.ceil(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.ceil(s / 60)} min`;
  const h = Math.floor(s / 3600);
  const m = Math.ceil((s % 3600) / 60);
  return m ? `${h} h ${m} min` : `${h} h`;
}

const LOGIN_ERRORS = {
  bad_password: "Wrong nick or password.",
  nick_registered: "This nick is registered: enter its password to log in.",
  nick_taken: "Someone is using this nick right now: pick another one.",
  bad_nick: "A nick is 1 to 32 letters, digits, _, - or . (no spaces).",
  weak_password: "A password has 8 to 1024 characters and is not the nick itself.",
  banned: "This nick is banned from the server.",
  too_many_connections: "Too many connections from your address: close some and try again.",
  too_many_attempts: "Three wrong passwords on this connection: check the password, then log in again.",
  unsupported_version: "This server speaks another version of the protocol.",
  server_full: "The server is full right now: try again in a few minutes.",
  server_shutdown: "The server is shutting down: try again in a minute.",
  login_timeout: "The server waited too long for the login: try again.",
  kicked: "An admin disconnected you from the server.",
  bad_url: "That server address is not a WebSocket address (ws:// or wss://).",
  refused: "The server refused the connection.",
  replaced: "You logged in again somewhere else (this tab was replaced).",
};

/** A refused login, or a connection given up before it, in words. */
export function loginError(code, { retryAfter = null, message = "" } = {}) {
  if (code === "locked_out") {
    const wait = retryAfter != null ? duration(retryAfter) : "a while";
    return `Too many wrong passwords: wait ${wait} before trying again.`;
  }
  if (code === "banned" && retryAfter != null) {
    return `This nick is banned from the server for another ${duration(retryAfter)}.`;
  }
  return LOGIN_ERRORS[code] ?? (message ? `${message} (${code})` : `Can't log in (${code}).`);
}

/** Why someone left a room, as the transcript says it. */
export function leftText(nick, reason, message) {
  const why = message ? `: ${message}` : "";
  switch (reason) {
    case "part": return `${nick} left${why}`;
    case "quit": return `${nick} quit${why}`;
    case "connection_lost": return `${nick} lost the connection`;
    case "timeout": return `${nick} timed out`;
    case "kicked": return `${nick} was kicked${why}`;
    case "banned": return `${nick} was banned${why}`;
    case "closed": return `${nick} left: the room was closed${why}`;
    case "slow_consumer": return `${nick} was disconnected (too slow to read)`;
    default: return `${nick} left (${reason})${why}`;
  }
}

/** A session's status line event (connection lost, reconnected) in words. */
export function statusText(entry) {
  if (entry.kind === "renamed") return `${entry.old} is now known as ${entry.nick}`;
  if (entry.kind === "lost") return `connection lost${entry.reason ? ` (${entry.reason})` : ""}`;
  const n = entry.count;
  return `reconnected (${n} missed message${n === 1 ? "" : "s"} fetched)`;
}

/** Who is typing in a room, in words ("" when nobody is). */
export function typingText(nicks) {
  if (!nicks.length) return "";
  if (nicks.length === 1) return `${nicks[0]} is typing…`;
  if (nicks.length === 2) return `${nicks[0]} and ${nicks[1]} are typing…`;
  if (nicks.length === 3) return `${nicks[0]}, ${nicks[1]} and ${nicks[2]} are typing…`;
  return "Several people are typing…";
}

/** A day separator's label: Today, Yesterday, or the date. */
export function dayText(ts, now = Date.now()) {
  const day = new Date(ts * 1000);
  const today = new Date(now);
  today.setHours(0, 0, 0, 0);
  const start = new Date(day);
  start.setHours(0, 0, 0, 0);
  const days = Math.round((today - start) / 86400000);
  if (days === 0) return "Today";
  if (days === 1) return "Yesterday";
  const options = { weekday: "long", month: "long", day: "numeric" };
  if (day.getFullYear() !== today.getFullYear()) options.year = "numeric";
  return day.toLocaleDateString([], options);
}
