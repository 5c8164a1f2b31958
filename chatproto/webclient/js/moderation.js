// The page's operator and admin views beyond the dialogs' basics: member
// badges, the room's modes (+i +t +m +s +k +l) read and set, the key
// prompt of a JOIN refused with bad_key, refusals said in words, NOTICEs
// and invitations in the transcript. No protocol here: ChatSession speaks
// it; app.js calls these.

const $ = (id) => document.getElementById(id);

/** The moderation commands the message box knows beyond app.js's own list. */
export const MODERATION_COMMANDS = "/voice nick, /devoice nick, /mode [+-imst] [+k key|-k] [+l n|-l]";

/** What a refused moderation request was, by the ref session.js gave it. */
const VERBS = {
  kick: "kick", ban: "ban", unban: "unban", op: "make an operator", deop: "remove an operator",
  voice: "give voice", devoice: "take voice", invite: "invite", mode: "change the modes", bans: "list the bans",
  sessions: "list the sessions", close: "close the room", ban_address: "ban the address",
  unban_address: "lift the address ban", reset: "reset the password",
};

/** Refusals that deserve more than the server's sentence. */
const HINTS = {
  not_operator: "only the room's operators may do that",
  not_admin: "only the server's admins may do that",
  room_full: "the room is full: try again later, or ask an operator",
  moderated: "the room is moderated: only operators and voiced members talk",
};

/** A member's mark in the list: @ an operator, + voiced (as IRC shows them). */
export function badge(p) {
  return p.op ? "@" : p.voice ? "+" : "";
}

/** A member's tooltip: who they are in the room. */
export function memberTitle(p, room) {
  if (p.op) return `${p.nick}, an operator of ${room.name}`;
  if (p.voice) return `${p.nick}, voiced in ${room.name}`;
  return p.nick;
}

/** A member's role, for the member dialog. */
export function roleText(p, room) {
  if (room?.isOp(p.nick)) return "Operator";
  if (room?.isVoiced(p.nick)) return "Voiced member";
  return "Member";
}

/** The room's modes in words, for the header: "" for none. */
export function modesText(room) {
  if (!room || room.direct) return "";
  const said = [];
  if (room.inviteOnly) said.push("invite only");
  if (room.topicLock) said.push("topic locked");
  if (room.moderated) said.push("moderated");
  if (room.secret) said.push("secret");
  if (room.joinKey) said.push("key");
  if (room.limit) said.push(`limit ${room.limit}`);
  return said.join(" · ");
}

/** What a member who is no operator is told of the room's rules (the key,
 * which members may see, to pass on). */
export function memberNote(room) {
  const said = [];
  if (room.topicLock) said.push(" Its topic is locked.");
  if (room.moderated) said.push(" Only operators and voiced members talk.");
  if (room.joinKey) said.push(` Its key: ${room.joinKey}`);
  return said.join("");
}

/** An admin's request carried out (DONE), in words; null for another op. */
export function doneText({ op, target }) {
  const said = {
    kick: `You kicked ${target} off the server.`,
    ban: `You banned ${target} from the server.`,
    unban: `You lifted the server ban of ${target}.`,
    ban_address: `You banned the address ${target}.`,
    unban_address: `You lifted the ban of the address ${target}.`,
    close: `You closed the room ${target}.`,
    reset: `You reset ${target}'s password.`,
  };
  return said[op] ?? null;
}

/** A refused request in words: what was asked, and why not. Null when
 * the ref is none of moderation's or administration's. */
export function refusalText(body) {
  const [kind, op] = (body.ref ?? "").split(":");
  if (kind !== "moderate" && kind !== "admin") return null;
  const why = HINTS[body.code] ? `${HINTS[body.code]} (${body.message})` : body.message;
  return `Can't ${VERBS[op] ?? op}: ${why}`;
}

/** `/mode +m`, `/mode -i+k sesame`, `/mode +k sesame -s +l 10` (IRC's
 * MODE: flag groups, each +k and +l taking the next word): MODERATE mode's
 * fields, or a string saying what is wrong. */
export function parseMode(args) {
  const usage = "Usage: /mode [+-imst] [+k key|-k] [+l n|-l]";
  const names = { i: "invite_only", m: "moderated", s: "secret", t: "topic_lock" };
  const words = [...args];
  const fields = {};
  while (words.length) {
    const flags = words.shift();
    if (!/^[+-][+-imstkl]*$/.test(flags)) return usage;
    let on = true;
    for (const c of flags) {
      if (c === "+" || c === "-") on = c === "+";
      else if (names[c]) fields[names[c]] = on;
      else if (c === "k") {
        const key = on ? words.shift() : "";
        if (key === undefined) return "Usage: /mode +k key";
        fields.key = key;
      } else {
        const limit = on ? Number(words.shift()) : 0;
        if (!Number.isInteger(limit) || limit < 0 || (on && limit === 0)) return "Usage: /mode +l number";
        fields.limit = limit;
      }
    }
  }
  return Object.keys(fields).length ? fields : usage;
}

/** The room dialog's modes, shown and read back: only what changed is sent,
 * so that a server without the later modes still takes the first two. */
export class ModesForm {
  render(room) {
    $("room-topic-lock").checked = room.topicLock;
    $("room-invite-only").checked = room.inviteOnly;
    $("room-moderated").checked = room.moderated;
    $("room-secret").checked = room.secret;
    if (document.activeElement !== $("room-key")) $("room-key").value = room.joinKey;
    if (document.activeElement !== $("room-limit")) $("room-limit").value = room.limit ? String(room.limit) : "";
  }

  /** The fields of MODERATE mode that differ from the room's; a string
   * when the form holds something the server would refuse. */
  changes(room) {
    const fields = {};
    const flag = (id, name, now) => {
      if ($(id).checked !== now) fields[name] = $(id).checked;
    };
    flag("room-topic-lock", "topic_lock", room.topicLock);
    flag("room-invite-only", "invite_only", room.inviteOnly);
    flag("room-moderated", "moderated", room.moderated);
    flag("room-secret", "secret", room.secret);
    const key = $("room-key").value.trim();
    if (key !== room.joinKey) fields.key = key;
    const text = $("room-limit").value.trim();
    const limit = text === "" ? 0 : Number(text);
    if (!Number.isInteger(limit) || limit < 0) return "The member limit is a whole number (empty for none).";
    if (limit !== room.limit) fields.limit = limit;
    return fields;
  }
}

/** The prompt for a room's key, when a JOIN was refused with bad_key. */
export class KeyPrompt {
  /** `join(room, key)` is called with what the user typed. */
  constructor(join) {
    this.room = null;
    $("key-form").addEventListener("submit", (e) => {
      const key = $("key-input").value;
      if (e.submitter?.value !== "cancel" && key && this.room) join(this.room, key);
      this.room = null;
    });
  }

  /** Ask for the key of `room`; `message` is the server's refusal. */
  ask(room, message) {
    this.room = room;
    $("key-title").textContent = `${room} needs a key`;
    $("key-note").textContent = message;
    $("key-input").value = "";
    if (!$("key-dialog").open) $("key-dialog").showModal();
    $("key-input").focus();
  }
}

/** The room a JOIN's ref names ("join:den"), or null. */
export function joinedRoom(ref) {
  return ref?.startsWith("join:") ? ref.slice(5) : null;
}

/** Whether the MESSAGE is a notice (IRC's NOTICE, a bot's, never answered):
 * its action says so (protocol 15.6), or a notice field. */
export function isNotice(m) {
  return m.action?.op === "notice" || m.notice === true;
}
