// The chat protocol's packets (docs/protocol.md): one WebSocket binary
// message is one payload, a type byte and a UTF-8 JSON object.

export const T = Object.freeze({
  LOGIN: 0x01, SAY: 0x02, WHISPER: 0x03, PING: 0x04, QUIT: 0x05, HISTORY: 0x06, PONG: 0x07,
  JOIN: 0x08, PART: 0x09, LIST: 0x0a, TOPIC: 0x0b, ACCOUNT: 0x0c, MARK: 0x0d, MODERATE: 0x0e,
  ADMIN: 0x0f, EDIT: 0x10, DELETE: 0x11, REACT: 0x12, TYPING: 0x13, AWAY: 0x14, OPEN: 0x15,
  NICK: 0x16, FILES: 0x17, SEARCH: 0x18, MEMBERS: 0x19, FOLLOW: 0x1a, RENAMED: 0x97, FILES_TOKEN: 0x98,
  RESULTS: 0x99, MEMBERS_PAGE: 0x9a, COUNT: 0x9b,
  WELCOME: 0x81, MESSAGE: 0x82, PRIVATE: 0x83, JOINED: 0x84, LEFT: 0x85, PENDING: 0x86,
  PONG_REPLY: 0x87, ERROR: 0x88, HISTORY_PAGE: 0x89, BYE: 0x8a, SERVER_PING: 0x8b, ROOM: 0x8c,
  TOPIC_CHANGED: 0x8d, ROOMS: 0x8e, DONE: 0x8f, MARKED: 0x90, BANS: 0x91, SESSIONS: 0x92,
  INVITED: 0x93, CHANGED: 0x94, TYPING_NOTICE: 0x95, STATUS: 0x96,
});

export const PROTOCOL_VERSION = 2;

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

/** One payload: the type byte, then the body as JSON. */
export function encode(type, body) {
  const json = encoder.encode(JSON.stringify(body));
  const payload = new Uint8Array(json.length + 1);
  payload[0] = type;
  payload.set(json, 1);
  return payload;
}

/** {type, body} of one payload; throws on anything that is not one. */
export function decode(data) {
  const bytes = new Uint8Array(data);
  if (bytes.length < 3) throw new Error("a payload too short to be a packet");
  const body = JSON.parse(decoder.decode(bytes.subarray(1)));
  if (body === null || typeof body !== "object" || Array.isArray(body)) {
    throw new Error("a packet body that is not an object");
  }
  return { type: bytes[0], body };
}

/** Room names compare as the server compares them (NFKC, case folded). */
export function roomKey(name) {
  return name.normalize("NFKC").toLowerCase();
}

/** Nicks too. */
export const nickKey = roomKey;
